//! Flux OCI artifacts: a directory packaged as the gzip'd tarball layer that
//! source-controller extracts, byte-for-byte reproducible.
//!
//! The tarball follows Flux's layout (lexical walk, root `.` and directory
//! entries, relative `/`-separated names, zeroed owners and times) and goes
//! further: modes are normalised (0644 files, 0755 executables and
//! directories), so the digest depends only on names and contents. Which
//! files are executable is Git's word when the directory is in a work tree
//! (the index's `100755`), so Windows, which has no executable bit, and a
//! Linux checkout give the same digest; see [`GitModes`].
//!
//! What the artifact carries besides its layer (the manifest, its
//! annotations and provenance) is in `manifest`; sending it is the
//! registry client's ([`crate::registry::Registry`]).

mod diff;
mod gitmodes;
pub(crate) mod manifest;
mod pgzip;
mod walk;

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

pub use diff::{
    ContentMap, LAYER_LIMITS, LayerLimits, TreeDiff, content_of_dir, content_of_layer,
    content_of_layer_within, size_in_words,
};
pub use gitmodes::GitModes;
pub use manifest::{
    ANNOTATION_CREATED, ANNOTATION_REVISION, ANNOTATION_SOURCE, CONFIG_BLOB, REPRODUCIBLE_CREATED,
    manifest_json, oci_manifest, provenance,
};
pub use pgzip::ParallelGz;
pub use walk::{
    DEFAULT_EXCLUDES, DEFAULT_MAX_FILE_SIZE, Entry, EntryKind, IgnoreRules, IgnoredBy, IgnoredKind,
    LOCK_FILE_EXCLUDES, SOURCEIGNORE, Scope, WalkOptions, canonical_root, dirs, refuse_too_broad,
    scope, walk,
};

/// Media type of the artifact's manifest.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of the Flux artifact config blob.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.cncf.flux.config.v1+json";
/// Media type of the Flux content layer (a gzip'd tarball).
pub const CONTENT_MEDIA_TYPE: &str = "application/vnd.cncf.flux.content.v1.tar+gzip";

/// Why a directory could not be packaged. Each names the path at fault.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("{0}: no such directory")]
    NoSuchDir(PathBuf),
    #[error("{0}: not a directory")]
    NotADir(PathBuf),
    #[error(
        "{0}: nothing to package once the ignore rules are applied (see .sourceignore and --ignore)"
    )]
    Empty(PathBuf),
    #[error(
        "{path}: {size} bytes is over the {limit}-byte limit per file (raise it with --max-file-size, or ignore the file)"
    )]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error("{}: file name is not valid UTF-8; rename it or ignore it", .0.display())]
    NonUtf8Name(PathBuf),
    #[error(
        "{}: file name contains a control character (a newline, tab or similar), which Flux and \
         kustomize do not handle; rename it or ignore it (--ignore)",
        .0.display().to_string().escape_debug()
    )]
    ControlCharName(PathBuf),
    #[error(
        "refusing to package {} ({what}): point the command at the directory of your manifests, \
         e.g. ./deploy",
        .path.display()
    )]
    TooBroad { path: PathBuf, what: &'static str },
    #[error(
        "{path}: symlink points outside the directory (to {target}); only links inside it are \
         followed: remove it, or leave it out with .sourceignore or --ignore"
    )]
    SymlinkEscapes { path: PathBuf, target: PathBuf },
    #[error(
        "{0}: dangling symlink (its target does not exist): remove it, or leave it out with \
         .sourceignore or --ignore"
    )]
    DanglingSymlink(PathBuf),
    #[error("{0}: symlink loop")]
    SymlinkLoop(PathBuf),
    #[error("{0}: changed while it was being packaged; try again")]
    Changed(PathBuf),
    #[error("invalid ignore pattern {0:?}: {1}")]
    IgnorePattern(String, String),
    #[error("{}: {reason}", .path.display())]
    IgnoreFile { path: PathBuf, reason: String },
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid size {0:?}: use a number of bytes or a unit (e.g. 512KiB, 20MiB, 1GiB)")]
    Size(String),
    #[error("the artifact is not a valid gzip'd tarball: {0}")]
    BadLayer(String),
    #[error(
        "the artifact's layer is too large to read: {what} is over the limit of {limit} \
         (a guard against decompression bombs); is it the artifact you meant?"
    )]
    LayerTooLarge { what: String, limit: String },
}

/// Maps an I/O error to [`ArtifactError::Io`] naming `path`.
pub(crate) fn io_at(path: impl AsRef<Path>) -> impl FnOnce(io::Error) -> ArtifactError {
    let path = path.as_ref().to_path_buf();
    move |source| ArtifactError::Io { path, source }
}

impl std::fmt::Display for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.path)
    }
}

/// A content digest and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// `sha256:<hex>`.
    pub digest: String,
    pub size: u64,
}

/// Lowercase hex of a SHA-256 output.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0xf) as usize] as char);
    }
    s
}

/// `sha256:<hex>` of a byte string.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(data)))
}

/// A writer that hashes and counts what passes through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            size: 0,
        }
    }

    pub fn finish(self) -> (W, Blob) {
        let blob = Blob {
            digest: format!("sha256:{}", hex(&self.hasher.finalize())),
            size: self.size,
        };
        (self.inner, blob)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(data)?;
        self.hasher.update(&data[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Compression workers to use: one per core.
fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Writes the layer for `entries` (from [`walk`]) to `out`; returns its digest.
pub fn write_layer<W: Write>(entries: &[Entry], out: W) -> Result<(W, Blob), ArtifactError> {
    let io_err = |e| io_at("(artifact)")(e);
    let gz = ParallelGz::new(HashingWriter::new(out), threads()).map_err(io_err)?;
    let mut tar = tar::Builder::new(gz);
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header
            .set_username("")
            .and_then(|()| header.set_groupname(""))
            .map_err(io_err)?;
        match &entry.kind {
            EntryKind::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                tar.append_data(&mut header, &entry.path, io::empty())
                    .map_err(io_err)?;
            }
            EntryKind::File {
                source,
                size,
                executable,
            } => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(if *executable { 0o755 } else { 0o644 });
                header.set_size(*size);
                let file = File::open(source).map_err(io_at(&entry.path))?;
                let mut reader = ExactReader {
                    inner: file,
                    left: *size,
                    path: &entry.path,
                };
                tar.append_data(&mut header, &entry.path, &mut reader)
                    .map_err(|e| match e.kind() {
                        io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData => {
                            ArtifactError::Changed(PathBuf::from(&entry.path))
                        }
                        _ => io_at(&entry.path)(e),
                    })?;
            }
        }
    }
    let gz = tar.into_inner().map_err(io_err)?;
    let hashing = gz.finish().map_err(io_err)?;
    Ok(hashing.finish())
}

/// Reads exactly the size recorded in the header: a file that shrank or
/// grew while being packaged is an error, never a corrupt archive.
struct ExactReader<'a> {
    inner: File,
    left: u64,
    path: &'a str,
}

impl Read for ExactReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            // One more byte means the file grew.
            let n = self.inner.read(&mut [0u8; 1])?;
            return if n == 0 {
                Ok(0)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    self.path.to_string(),
                ))
            };
        }
        let want = out.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut out[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                self.path.to_string(),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// What `build` produced.
#[derive(Debug, Clone)]
pub struct Built {
    pub layer: Blob,
    /// Files and directories packaged.
    pub entries: usize,
    /// Files packaged.
    pub files: usize,
}

/// How many of `entries` are files.
fn files(entries: &[Entry]) -> usize {
    entries
        .iter()
        .filter(|e| matches!(e.kind, EntryKind::File { .. }))
        .count()
}

/// Packages `dir` into `output` atomically: the file appears complete or
/// not at all (a failed build leaves nothing behind). `-` writes to stdout.
pub fn build_to_file(
    dir: &Path,
    options: &WalkOptions,
    output: &Path,
) -> Result<Built, ArtifactError> {
    let entries = walk(dir, options)?;
    if output == Path::new("-") {
        let (_, layer) = write_layer(&entries, io::stdout().lock())?;
        return Ok(Built {
            layer,
            entries: entries.len(),
            files: files(&entries),
        });
    }
    let parent = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".gitops-artifact-")
        .tempfile_in(&parent)
        .map_err(io_at(&parent))?;
    let (file, layer) = write_layer(&entries, io::BufWriter::with_capacity(256 * 1024, tmp))?;
    let tmp = file
        .into_inner()
        .map_err(|e| io_at(output)(e.into_error()))?;
    tmp.as_file().sync_all().map_err(io_at(output))?;
    tmp.persist(output).map_err(|e| io_at(output)(e.error))?;
    Ok(Built {
        layer,
        entries: entries.len(),
        files: files(&entries),
    })
}

/// Packages `dir` into an anonymous temporary file (for pushing); returns it
/// rewound, with the layer's digest.
pub fn build_to_temp(dir: &Path, options: &WalkOptions) -> Result<(File, Built), ArtifactError> {
    let entries = walk(dir, options)?;
    let tmp = tempfile::tempfile().map_err(io_at(std::env::temp_dir()))?;
    let (writer, layer) = write_layer(&entries, io::BufWriter::with_capacity(256 * 1024, tmp))?;
    let mut file = writer
        .into_inner()
        .map_err(|e| io_at(std::env::temp_dir())(e.into_error()))?;
    io::Seek::rewind(&mut file).map_err(io_at(std::env::temp_dir()))?;
    Ok((
        file,
        Built {
            layer,
            entries: entries.len(),
            files: files(&entries),
        },
    ))
}

/// As [`build_to_temp`], off the async runtime's threads (a push's build).
pub async fn build(dir: &Path, options: &WalkOptions) -> Result<(File, Built), ArtifactError> {
    let (dir, options) = (dir.to_path_buf(), options.clone());
    let at = dir.clone();
    tokio::task::spawn_blocking(move || build_to_temp(&dir, &options))
        .await
        .map_err(|e| io_at(at)(io::Error::other(e)))?
}

/// Parses a size: bytes, or with a unit (`KiB`, `MiB`, `GiB`, `KB`, `MB`, `GB`, `K`, `M`, `G`).
pub fn parse_size(input: &str) -> Result<u64, ArtifactError> {
    let s = input.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| ArtifactError::Size(input.to_string()))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "Ki" | "KiB" => 1 << 10,
        "M" | "Mi" | "MiB" => 1 << 20,
        "G" | "Gi" | "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(ArtifactError::Size(input.to_string())),
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| ArtifactError::Size(input.to_string()))
}

#[cfg(test)]
mod tests;
