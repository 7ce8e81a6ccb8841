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

/// The regular files of a gzip'd tarball layer, streamed (never buffered whole).
pub fn content_of_layer(layer: impl Read) -> Result<ContentMap, ArtifactError> {
    let bad = |e: io::Error| ArtifactError::BadLayer(e.to_string());
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(layer));
    let mut map = ContentMap::new();
    for entry in archive.entries().map_err(bad)? {
        let entry = entry.map_err(bad)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().map_err(bad)?;
        let name = path
            .components()
            .filter(|c| !matches!(c, std::path::Component::CurDir))
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        let sum = hash_reader(entry).map_err(bad)?;
        map.insert(name, sum);
    }
    Ok(map)
}
