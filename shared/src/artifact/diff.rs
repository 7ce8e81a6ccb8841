//! Comparing trees by content: a directory against an artifact's layer.
//!
//! Gzip bytes differ between correct encoders, so `flux diff artifact`'s
//! digest comparison reports differences that are not there. We compare the
//! files themselves: path and SHA-256 of the content.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use sha2::{Digest as _, Sha256};

use super::{ArtifactError, EntryKind, WalkOptions, hex, io_at, walk};

/// Regular files by path, each with the hex SHA-256 of its content.
pub type ContentMap = BTreeMap<String, String>;

/// How two trees differ, from the point of view of the local directory.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TreeDiff {
    /// In the directory, not in the artifact.
    pub added: Vec<String>,
    /// In the artifact, not in the directory.
    pub removed: Vec<String>,
    /// In both, with different content.
    pub changed: Vec<String>,
}

impl TreeDiff {
    pub fn between(local: &ContentMap, remote: &ContentMap) -> TreeDiff {
        let mut diff = TreeDiff::default();
        for (path, sum) in local {
            match remote.get(path) {
                None => diff.added.push(path.clone()),
                Some(other) if other != sum => diff.changed.push(path.clone()),
                Some(_) => {}
            }
        }
        diff.removed = remote
            .keys()
            .filter(|p| !local.contains_key(*p))
            .cloned()
            .collect();
        diff
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

fn hash_reader(mut r: impl Read) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// The content of `dir` as an artifact of it would hold it.
pub fn content_of_dir(dir: &Path, options: &WalkOptions) -> Result<ContentMap, ArtifactError> {
    let mut map = ContentMap::new();
    for entry in walk(dir, options)? {
        if let EntryKind::File { source, .. } = &entry.kind {
            let file = File::open(source).map_err(io_at(&entry.path))?;
            let sum = hash_reader(file).map_err(io_at(&entry.path))?;
            map.insert(entry.path, sum);
        }
    }
    Ok(map)
}

/// Bounds on what reading a downloaded layer may cost: a hostile or broken
/// registry can serve a small gzip that inflates without end (a
/// decompression bomb), or a tarball of countless entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerLimits {
    /// The compressed layer, as downloaded (checked against the manifest's
    /// size before the download, and while it runs).
    pub compressed: u64,
    /// Everything the gzip stream inflates to (tar headers included).
    pub decompressed: u64,
    /// One file of the tarball.
    pub entry: u64,
    /// Entries of the tarball (directories and extension headers included).
    pub entries: u64,
    /// A GNU long name or PAX header, read into memory.
    pub header: u64,
}

/// 256 MiB downloaded, 1 GiB inflated, 256 MiB a file, 200,000 entries:
/// far above any tree of manifests (a session packs at most
/// `--max-file-size`, 50 MiB by default, a file).
pub const LAYER_LIMITS: LayerLimits = LayerLimits {
    compressed: 256 * 1024 * 1024,
    decompressed: 1024 * 1024 * 1024,
    entry: 256 * 1024 * 1024,
    entries: 200_000,
    header: 64 * 1024,
};

/// `256 MiB`, `64 KiB`, `1000 bytes`: a limit in words.
pub fn size_in_words(bytes: u64) -> String {
    const KIB: u64 = 1024;
    match bytes {
        b if b >= KIB * KIB * KIB && b % (KIB * KIB * KIB) == 0 => {
            format!("{} GiB", b / KIB.pow(3))
        }
        b if b >= KIB * KIB && b % (KIB * KIB) == 0 => format!("{} MiB", b / KIB.pow(2)),
        b if b >= KIB && b % KIB == 0 => format!("{} KiB", b / KIB),
        b => format!("{b} bytes"),
    }
}

/// A reader that fails once more than `left` bytes would be read, and says
/// so through `over`.
struct Capped<R> {
    inner: R,
    left: u64,
    over: std::rc::Rc<std::cell::Cell<bool>>,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            // One byte more decides between "exactly the cap" and "over it".
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => {
                    self.over.set(true);
                    Err(io::Error::other("the layer inflates past the limit"))
                }
            };
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// The regular files of a gzip'd tarball layer, streamed (never buffered
/// whole), within [`LAYER_LIMITS`].
pub fn content_of_layer(layer: impl Read) -> Result<ContentMap, ArtifactError> {
    content_of_layer_within(layer, &LAYER_LIMITS)
}

/// [`content_of_layer`] within `limits`.
pub fn content_of_layer_within(
    layer: impl Read,
    limits: &LayerLimits,
) -> Result<ContentMap, ArtifactError> {
    let over = std::rc::Rc::new(std::cell::Cell::new(false));
    let inflated = Capped {
        inner: flate2::read::GzDecoder::new(layer),
        left: limits.decompressed,
        over: over.clone(),
    };
    let too_large = |what: String, limit: u64| ArtifactError::LayerTooLarge {
        what,
        limit: size_in_words(limit),
    };
    let bad = |e: io::Error| {
        if over.get() {
            too_large("its content".into(), limits.decompressed)
        } else {
            ArtifactError::BadLayer(e.to_string())
        }
    };
    // Raw entries: GNU long names and PAX headers are read here, each
    // within `limits.header`, not by the tar reader without a bound.
    let mut archive = tar::Archive::new(inflated);
    let mut map = ContentMap::new();
    let (mut long_name, mut pax_path) = (None::<Vec<u8>>, None::<Vec<u8>>);
    let mut count = 0u64;
    for entry in archive.entries().map_err(bad)?.raw(true) {
        let mut entry = entry.map_err(bad)?;
        count += 1;
        if count > limits.entries {
            return Err(ArtifactError::LayerTooLarge {
                what: format!("its number of entries ({count} and more)"),
                limit: format!("{} entries", limits.entries),
            });
        }
        let kind = entry.header().entry_type();
        let size = entry.header().entry_size().map_err(bad)?;
        let extension = kind.is_gnu_longname()
            || kind.is_gnu_longlink()
            || kind.is_pax_local_extensions()
            || kind.is_pax_global_extensions();
        if extension {
            if size > limits.header {
                return Err(too_large(
                    format!("an extended header of {size} bytes"),
                    limits.header,
                ));
            }
            let mut data = Vec::new();
            entry.read_to_end(&mut data).map_err(bad)?;
            if kind.is_gnu_longname() {
                while data.last() == Some(&0) {
                    data.pop();
                }
                long_name = Some(data);
            } else if kind.is_pax_local_extensions() {
                for ext in tar::PaxExtensions::new(&data) {
                    let ext = ext.map_err(bad)?;
                    match ext.key_bytes() {
                        b"path" => pax_path = Some(ext.value_bytes().to_vec()),
                        // Sizes past the header's field: files of 8 GiB and more.
                        b"size" => {
                            return Err(too_large(
                                "a file larger than a tar header can say".into(),
                                limits.entry,
                            ));
                        }
                        _ => {}
                    }
                }
            }
            continue;
        }
        // PAX's path wins over a GNU long name, which wins over the header's.
        let path = pax_path
            .take()
            .or(long_name.take())
            .unwrap_or_else(|| entry.header().path_bytes().into_owned());
        (long_name, pax_path) = (None, None);
        if !kind.is_file() {
            continue;
        }
        let path = String::from_utf8_lossy(&path);
        let name = Path::new(path.as_ref())
            .components()
            .filter(|c| !matches!(c, std::path::Component::CurDir))
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        if size > limits.entry {
            return Err(too_large(format!("{name} ({size} bytes)"), limits.entry));
        }
        let sum = hash_reader(&mut entry).map_err(bad)?;
        map.insert(name, sum);
    }
    Ok(map)
}
