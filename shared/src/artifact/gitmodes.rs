//! The executable bit as Git records it.
//!
//! A file's executable bit is part of an artifact (mode 0755 or 0644), and the
//! same tree must give the same digest on every machine. The file system
//! cannot tell: Windows has no executable bit, and a `chmod` on Linux may not
//! be committed. Git's index can, on every OS: a tracked file is executable
//! when the index records it as `100755` (what `git add` and `git update-index
//! --chmod=+x` set; Git for Windows keeps it with `core.fileMode=false`).
//!
//! So when the directory is in a Git work tree, the index decides for the files
//! it tracks; files it does not track (and directories outside any work tree)
//! fall back to the file system's bit, which Windows never sets.
//!
//! The index is read directly (versions 2 to 4, SHA-1 or SHA-256 object
//! names); a split index falls back to `git ls-files --stage`. Parsed indexes
//! are kept per process while the file is unchanged, so a session that
//! rebuilds on every save reads it once.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// The executable bits of the files a work tree's index tracks.
#[derive(Debug, Clone)]
pub struct GitModes {
    /// The work tree's top level, canonical (as the walk's paths are).
    toplevel: PathBuf,
    /// Its Git directory (`.git`, or where a `.git` file points).
    git_dir: PathBuf,
    index: Arc<Index>,
}

/// What an index tracks.
#[derive(Debug, Default)]
struct Index {
    /// Tracked path (`/`-separated, relative to the top level) -> executable.
    modes: HashMap<String, bool>,
    /// Every directory holding a tracked file, at any depth.
    dirs: HashSet<String>,
}

impl Index {
    fn new(modes: HashMap<String, bool>) -> Index {
        let mut dirs = HashSet::new();
        for path in modes.keys() {
            let mut at = path.as_str();
            while let Some((parent, _)) = at.rsplit_once('/') {
                if !dirs.insert(parent.to_string()) {
                    break;
                }
                at = parent;
            }
        }
        Index { modes, dirs }
    }
}

impl GitModes {
    /// The index of the work tree holding `dir` (a canonical path), or `None`
    /// when `dir` is in no work tree or its index cannot be read.
    pub fn for_dir(dir: &Path) -> Option<GitModes> {
        let (toplevel, git_dir) = discover(dir)?;
        let index = load(&toplevel, &git_dir)?;
        Some(GitModes {
            toplevel,
            git_dir,
            index,
        })
    }

    /// The work tree's top level (canonical).
    pub fn toplevel(&self) -> &Path {
        &self.toplevel
    }

    /// The repository's Git directory.
    pub fn git_dir(&self) -> &Path {
        &self.git_dir
    }

    /// `path` (canonical, under the top level) as the index names it.
    fn key(&self, path: &Path) -> Option<String> {
        let relative = path.strip_prefix(&self.toplevel).ok()?;
        let mut key = String::new();
        for part in relative.components() {
            let Component::Normal(name) = part else {
                return None;
            };
            if !key.is_empty() {
                key.push('/');
            }
            key.push_str(name.to_str()?);
        }
        Some(key)
    }

    /// Whether Git records `path` (canonical, under the top level) as
    /// executable; `None` when the index does not track it.
    pub fn executable(&self, path: &Path) -> Option<bool> {
        self.index.modes.get(&self.key(path)?).copied()
    }

    /// Whether the index tracks the file at `path`, or (for a directory)
    /// any file below it: what no `.gitignore` rule can drop.
    pub fn tracks(&self, path: &Path, is_dir: bool) -> bool {
        let Some(key) = self.key(path) else {
            return false;
        };
        if is_dir {
            key.is_empty() || self.index.dirs.contains(&key)
        } else {
            self.index.modes.contains_key(&key)
        }
    }
}

/// Finds the work tree holding `dir`: its top level and its Git directory.
/// `.git` is a directory, or a file saying `gitdir: PATH` (worktrees,
/// submodules).
fn discover(dir: &Path) -> Option<(PathBuf, PathBuf)> {
    for top in dir.ancestors() {
        let dot_git = top.join(".git");
        let Ok(meta) = fs::metadata(&dot_git) else {
            continue;
        };
        if meta.is_dir() {
            if dot_git.join("HEAD").is_file() {
                return Some((top.to_path_buf(), dot_git));
            }
            continue;
        }
        let text = fs::read_to_string(&dot_git).ok()?;
        let target = text.lines().next()?.strip_prefix("gitdir:")?.trim();
        let git_dir = top.join(target);
        return git_dir
            .join("HEAD")
            .is_file()
            .then(|| (top.to_path_buf(), git_dir));
    }
    None
}

type Cached = (PathBuf, u64, Option<SystemTime>, Arc<Index>);

/// The last index parsed, reused while its size and mtime are unchanged.
static CACHE: Mutex<Option<Cached>> = Mutex::new(None);

fn load(toplevel: &Path, git_dir: &Path) -> Option<Arc<Index>> {
    let index = git_dir.join("index");
    let meta = match fs::metadata(&index) {
        Ok(meta) => meta,
        // A repository before its first `git add` tracks nothing.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Some(Arc::new(Index::default()));
        }
        Err(_) => return None,
    };
    let (len, mtime) = (meta.len(), meta.modified().ok());
    if let Ok(cache) = CACHE.lock()
        && let Some((path, l, m, modes)) = cache.as_ref()
        && *path == index
        && *l == len
        && *m == mtime
        && mtime.is_some()
    {
        return Some(modes.clone());
    }
    let bytes = fs::read(&index).ok()?;
    let modes = parse_index(&bytes, hash_len(git_dir))
        .or_else(|| ls_files(toplevel))
        .map(|modes| Arc::new(Index::new(modes)))?;
    if let Ok(mut cache) = CACHE.lock() {
        *cache = Some((index, len, mtime, modes.clone()));
    }
    Some(modes)
}

/// 32 for a SHA-256 repository (`extensions.objectFormat = sha256`), else 20.
fn hash_len(git_dir: &Path) -> usize {
    // A worktree's Git directory points at the repository's in `commondir`.
    let common = fs::read_to_string(git_dir.join("commondir"))
        .map(|c| git_dir.join(c.trim()))
        .unwrap_or_else(|_| git_dir.to_path_buf());
    // No readable config: Git itself then reads the repository as SHA-1.
    let config = fs::read_to_string(common.join("config")).unwrap_or_default();
    let sha256 = config.lines().any(|line| {
        let line: String = line
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .to_ascii_lowercase();
        line == "objectformat=sha256"
    });
    if sha256 { 32 } else { 20 }
}

/// Parses a Git index (format versions 2, 3 and 4). `None` when it is not
/// one this parser reads completely (unknown version, split index,
/// truncated).
pub(crate) fn parse_index(bytes: &[u8], hash_len: usize) -> Option<HashMap<String, bool>> {
    let mut r = Reader { bytes, at: 0 };
    if r.take(4)? != b"DIRC" {
        return None;
    }
    let version = r.u32()?;
    if !(2..=4).contains(&version) {
        return None;
    }
    let count = r.u32()?;
    let mut modes = HashMap::with_capacity(count.min(1 << 20) as usize);
    let mut previous: Vec<u8> = Vec::new();
    for _ in 0..count {
        let start = r.at;
        r.take(24)?; // ctime, mtime, dev, ino
        let mode = r.u32()?;
        r.take(12 + hash_len)?; // uid, gid, size, object name
        let flags = r.u16()?;
        let stage = (flags >> 12) & 0b11;
        if version >= 3 && flags & 0x4000 != 0 {
            r.u16()?; // extended flags (skip-worktree, intent-to-add)
        }
        let path = if version == 4 {
            // The path is the previous one less N trailing bytes, plus a suffix.
            let strip = r.varint()?;
            let keep = previous.len().checked_sub(usize::try_from(strip).ok()?)?;
            previous.truncate(keep);
            previous.extend_from_slice(r.until_nul()?);
            previous.clone()
        } else {
            let name = r.until_nul()?.to_vec();
            // 1 to 8 NULs pad the entry to a multiple of 8 bytes.
            let len = r.at - start;
            r.take((8 - len % 8) % 8)?;
            name
        };
        // 0o100644 / 0o100755 regular files; links, submodules and sparse
        // directories have no executable bit of their own.
        if mode >> 12 != 0o10 {
            continue;
        }
        let Ok(path) = String::from_utf8(path) else {
            continue;
        };
        // Stage 0, or for a conflict the first stage recorded.
        if stage == 0 || !modes.contains_key(&path) {
            modes.insert(path, mode & 0o111 != 0);
        }
    }
    // Extensions: a split index keeps most entries in another file.
    while r.bytes.len() - r.at > hash_len {
        let signature = r.take(4)?;
        if signature == b"link" {
            return None;
        }
        let size = usize::try_from(r.u32()?).ok()?;
        r.take(size)?;
    }
    Some(modes)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let out = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(out)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }

    /// Bytes up to a NUL, which is consumed.
    fn until_nul(&mut self) -> Option<&'a [u8]> {
        let rest = self.bytes.get(self.at..)?;
        let n = rest.iter().position(|&b| b == 0)?;
        self.at += n + 1;
        Some(&rest[..n])
    }

    /// Git's offset encoding: big-endian 7-bit groups, each continuation adding one.
    fn varint(&mut self) -> Option<u64> {
        let mut byte = self.take(1)?[0];
        let mut value = u64::from(byte & 0x7f);
        while byte & 0x80 != 0 {
            byte = self.take(1)?[0];
            value = value
                .checked_add(1)?
                .checked_mul(128)?
                .checked_add(u64::from(byte & 0x7f))?;
        }
        Some(value)
    }
}

/// What `git ls-files --stage` says, for indexes the parser leaves alone.
fn ls_files(toplevel: &Path) -> Option<HashMap<String, bool>> {
    let out = Command::new("git")
        .arg("-C")
        .arg(toplevel)
        .args(["ls-files", "--stage", "-z"])
        .env("GIT_OPTIONAL_LOCKS", "0")
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let mut modes = HashMap::new();
    for record in out.stdout.split(|&b| b == 0).filter(|r| !r.is_empty()) {
        // "<mode> <object> <stage>\t<path>"
        let text = std::str::from_utf8(record).ok()?;
        let (meta, path) = text.split_once('\t')?;
        let mode = meta.split(' ').next()?;
        if mode.starts_with("100") {
            modes.insert(path.to_string(), mode == "100755");
        }
    }
    Some(modes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An index entry as Git writes it, for versions 2 and 3.
    fn entry(mode: u32, path: &str, hash_len: usize) -> Vec<u8> {
        let mut e = vec![0u8; 24];
        e.extend(mode.to_be_bytes());
        e.extend(vec![0u8; 12 + hash_len]);
        e.extend((path.len().min(0xfff) as u16).to_be_bytes());
        e.extend(path.as_bytes());
        let pad = 8 - e.len() % 8;
        e.extend(vec![0u8; pad]);
        e
    }

    fn index(version: u32, entries: &[Vec<u8>], hash_len: usize) -> Vec<u8> {
        let mut i = b"DIRC".to_vec();
        i.extend(version.to_be_bytes());
        i.extend((entries.len() as u32).to_be_bytes());
        for e in entries {
            i.extend(e);
        }
        i.extend(vec![0u8; hash_len]);
        i
    }

    #[test]
    fn reads_modes_from_version_2_indexes_sha1_and_sha256() {
        for hash_len in [20, 32] {
            let bytes = index(
                2,
                &[
                    entry(0o100644, "a.yaml", hash_len),
                    entry(0o100755, "bin/run.sh", hash_len),
                    entry(0o120000, "link", hash_len),
                    entry(0o160000, "sub", hash_len),
                    entry(0o100755, "ü/ñ x.sh", hash_len),
                ],
                hash_len,
            );
            let modes = parse_index(&bytes, hash_len).unwrap();
            assert_eq!(modes.len(), 3);
            assert!(!modes["a.yaml"]);
            assert!(modes["bin/run.sh"]);
            assert!(modes["ü/ñ x.sh"]);
        }
    }

    #[test]
    fn truncated_or_foreign_indexes_are_refused() {
        let bytes = index(2, &[entry(0o100755, "run.sh", 20)], 20);
        assert!(parse_index(&bytes[..bytes.len() - 30], 20).is_none());
        assert!(parse_index(b"NOPE", 20).is_none());
        let mut v9 = bytes.clone();
        v9[7] = 9;
        assert!(parse_index(&v9, 20).is_none());
    }

    use crate::git::tests::run as git;

    /// Real indexes written by Git in every format version, compared with
    /// `git ls-files --stage`.
    #[test]
    fn agrees_with_git_on_real_indexes_of_every_version() {
        let repo = tempfile::tempdir().unwrap();
        let root = repo.path();
        git(root, &["init", "-q"]);
        let long = format!("{0}/{0}/{0}/deep.yaml", "d".repeat(100));
        let mut names = vec![
            "a.yaml".to_string(),
            "run.sh".to_string(),
            "sub/dir/tool".to_string(),
            "sub/dir/tool2".to_string(),
            "ñandú/über.yaml".to_string(),
            long,
        ];
        names.sort();
        for name in &names {
            let path = root.join(name);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, "x").unwrap();
        }
        git(root, &["add", "."]);
        git(
            root,
            &["update-index", "--chmod=+x", "run.sh", "sub/dir/tool"],
        );
        let expected = ls_files(root).unwrap();
        assert_eq!(expected.len(), names.len());
        assert!(expected["run.sh"] && expected["sub/dir/tool"]);
        assert!(!expected["a.yaml"]);
        for version in ["2", "3", "4"] {
            git(root, &["update-index", "--index-version", version]);
            let bytes = fs::read(root.join(".git/index")).unwrap();
            assert_eq!(
                parse_index(&bytes, 20).as_ref(),
                Some(&expected),
                "index version {version}"
            );
        }
        // An intent-to-add entry sets the extended flag (version 3).
        fs::write(root.join("later.sh"), "x").unwrap();
        git(root, &["add", "-N", "later.sh"]);
        let bytes = fs::read(root.join(".git/index")).unwrap();
        assert!(parse_index(&bytes, 20).unwrap().contains_key("later.sh"));
    }
}
