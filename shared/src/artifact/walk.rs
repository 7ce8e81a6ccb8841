//! Walking a directory the way an artifact sees it: lexical order, ignore
//! rules applied, symlinks resolved inside the root and refused outside it.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use ignore::Match;
use ignore::gitignore::{Gitignore, GitignoreBuilder};

use super::gitmodes::GitModes;
use super::{ArtifactError, io_at};

/// What `flux build|push artifact` excludes by default. Our `--ignore`
/// patterns are added to these, never a replacement for them.
pub const DEFAULT_EXCLUDES: &[&str] = &[
    ".git/",
    ".gitignore",
    ".gitmodules",
    ".gitattributes",
    "*.jpg",
    "*.jpeg",
    "*.gif",
    "*.png",
    "*.wmv",
    "*.flv",
    "*.tar.gz",
    "*.zip",
];

/// Left out of every artifact on top of [`DEFAULT_EXCLUDES`]: Emacs's lock
/// files (`.#app.yaml`, a symlink to `user@host.pid` that dangles while a
/// buffer has unsaved changes, or a small file where links are not
/// available). They are never manifests, and kustomize-controller would
/// fail on one as a resource. Flux skips symlinks, so its artifacts never
/// hold the usual form either. A `.sourceignore` or `--ignore` `!` rule
/// brings such a file back.
pub const LOCK_FILE_EXCLUDES: &[&str] = &[".#*"];

/// The per-directory ignore file, in gitignore syntax (as source-controller reads it).
pub const SOURCEIGNORE: &str = ".sourceignore";

/// Default limit on the size of one file in an artifact.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 50 * 1024 * 1024;

/// How to select the files of an artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalkOptions {
    /// Extra gitignore patterns, added to [`DEFAULT_EXCLUDES`].
    pub ignore: Vec<String>,
    /// Largest accepted file, in bytes.
    pub max_file_size: u64,
    /// Apply Git's ignore rules too when the root is in a Git work tree
    /// (`.gitignore` at every level, `.git/info/exclude`, the user's
    /// `core.excludesFile`); files the index tracks are never dropped by them.
    /// Sessions set it; `build`/`push` keep Flux's semantics.
    pub git_ignore: bool,
    /// Only these paths (relative to the root, `/`-separated) and what is
    /// below them; the directories leading to them are kept, their other
    /// entries are not. `None`: the whole root.
    pub only: Option<Vec<String>>,
    /// Paths (relative to the root, `/`-separated) that a kustomization
    /// references by name: Git's ignore rules never drop them (nor the
    /// directories leading to them), as they never drop tracked files; the
    /// render needs them. `.sourceignore`, `--ignore` and Flux's default
    /// exclusions still apply.
    pub keep: Vec<String>,
}

impl Default for WalkOptions {
    fn default() -> Self {
        WalkOptions {
            ignore: Vec::new(),
            max_file_size: DEFAULT_MAX_FILE_SIZE,
            git_ignore: false,
            only: None,
            keep: Vec::new(),
        }
    }
}

/// Where a path (relative, `/`-separated) stands against [`WalkOptions::only`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Packaged, with everything below it.
    Inside,
    /// A directory on the way to a packaged path: kept, its other entries not.
    Above,
    Outside,
}

/// Where `path` stands against `only`.
pub fn scope(only: Option<&[String]>, path: &str) -> Scope {
    let Some(only) = only else {
        return Scope::Inside;
    };
    let mut above = false;
    for o in only {
        let o = o.trim_matches('/');
        if o.is_empty() || path == o || path.starts_with(&format!("{o}/")) {
            return Scope::Inside;
        }
        if path.is_empty() || o.starts_with(&format!("{path}/")) {
            above = true;
        }
    }
    if above { Scope::Above } else { Scope::Outside }
}

/// Git's ignore rules of a root inside a work tree, as `git check-ignore`
/// decides: the deepest `.gitignore` first, then `.git/info/exclude`, then
/// the user's `core.excludesFile`; a file the index tracks (or a directory
/// holding one) is never ignored by them.
#[derive(Clone)]
struct GitRules {
    index: GitModes,
    /// `.gitignore` of each directory from the top level down to the root's
    /// parent (outermost first); the walk adds those at and below the root.
    above: Vec<Gitignore>,
    /// `.git/info/exclude`, then `core.excludesFile`.
    excludes: Vec<Gitignore>,
}

/// A path's fate under all the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Keep,
    /// Git ignores it, but the index tracks it (or something below it):
    /// kept, and below it only what the index tracks.
    KeepTracked,
    Drop,
}

fn matcher(root: &Path, file: &Path) -> Result<Option<Gitignore>, ArtifactError> {
    if !file.is_file() {
        return Ok(None);
    }
    let mut builder = GitignoreBuilder::new(root);
    if let Some(e) = builder.add(file) {
        return Err(ArtifactError::IgnoreFile {
            path: file.to_path_buf(),
            reason: e.to_string(),
        });
    }
    builder
        .build()
        .map(Some)
        .map_err(|e| ArtifactError::IgnoreFile {
            path: file.to_path_buf(),
            reason: e.to_string(),
        })
}

impl GitRules {
    fn new(root: &Path) -> Result<Option<GitRules>, ArtifactError> {
        let Some(index) = GitModes::for_dir(root) else {
            return Ok(None);
        };
        let top = index.toplevel().to_path_buf();
        let mut above = Vec::new();
        if let Ok(rel) = root.strip_prefix(&top) {
            let mut dir = top.clone();
            let parts: Vec<_> = rel.components().collect();
            for part in parts {
                above.extend(matcher(&dir, &dir.join(".gitignore"))?);
                dir.push(part);
            }
        }
        let mut excludes = Vec::new();
        excludes.extend(matcher(&top, &index.git_dir().join("info/exclude"))?);
        if let Some(global) = ignore::gitignore::gitconfig_excludes_path() {
            // A global excludes file that cannot be read is Git's problem too; skip it.
            excludes.extend(matcher(&top, &global).ok().flatten());
        }
        Ok(Some(GitRules {
            index,
            above,
            excludes,
        }))
    }

    /// Whether Git's rules (with `stack`, the `.gitignore` matchers between
    /// the root and `path`, outermost first) ignore `path`.
    fn ignores(&self, stack: &[Gitignore], path: &Path, is_dir: bool) -> bool {
        for rules in stack
            .iter()
            .rev()
            .chain(self.above.iter().rev())
            .chain(&self.excludes)
        {
            match rules.matched(path, is_dir) {
                Match::Ignore(_) => return true,
                Match::Whitelist(_) => return false,
                Match::None => {}
            }
        }
        false
    }
}

/// Why a path is left out of an artifact: the first directory (or the path
/// itself) that a rule drops, and the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoredBy {
    /// What the rule drops: the path or a directory above it (relative).
    pub path: String,
    /// The rule in words: `` `.env` in deploy/.gitignore ``.
    pub rule: String,
    pub by: IgnoredKind,
}

/// Where the rule that leaves a path out comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IgnoredKind {
    /// A `.sourceignore` file.
    SourceIgnore,
    /// An `--ignore` pattern.
    Flag,
    /// One of [`DEFAULT_EXCLUDES`].
    Default,
    /// Git's ignore rules (sessions only).
    Git,
}

/// One entry of an artifact, in archive order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path inside the artifact, `/`-separated, relative; `.` for the root.
    pub path: String,
    pub kind: EntryKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File {
        /// The file to read: the entry itself, or what its symlink resolves to.
        source: PathBuf,
        size: u64,
        executable: bool,
    },
}

/// The ignore rules of a tree: the root's (defaults and `--ignore`) plus one
/// matcher per `.sourceignore` found, innermost deciding first, as in Git;
/// with [`WalkOptions::git_ignore`], Git's own rules too, and with
/// [`WalkOptions::only`], nothing outside those paths.
#[derive(Clone)]
pub struct IgnoreRules {
    root: PathBuf,
    base: Gitignore,
    git: Option<GitRules>,
    only: Option<Vec<String>>,
    keep: Vec<String>,
}

/// The ignore matchers of one directory: its `.sourceignore` and (with Git's
/// rules) its `.gitignore`.
#[derive(Default)]
struct DirRules {
    source: Option<Gitignore>,
    git: Option<Gitignore>,
}

impl IgnoreRules {
    /// Rules for a tree rooted at `root` (an absolute, canonical path).
    pub fn new(root: &Path, extra: &[String]) -> Result<IgnoreRules, ArtifactError> {
        let mut builder = GitignoreBuilder::new(root);
        for pattern in DEFAULT_EXCLUDES.iter().chain(LOCK_FILE_EXCLUDES) {
            builder
                .add_line(None, pattern)
                .map_err(|e| ArtifactError::IgnorePattern(pattern.to_string(), e.to_string()))?;
        }
        for pattern in extra {
            builder
                .add_line(None, pattern)
                .map_err(|e| ArtifactError::IgnorePattern(pattern.clone(), e.to_string()))?;
        }
        let base = builder
            .build()
            .map_err(|e| ArtifactError::IgnorePattern(extra.join(" "), e.to_string()))?;
        Ok(IgnoreRules {
            root: root.to_path_buf(),
            base,
            git: None,
            only: None,
            keep: Vec::new(),
        })
    }

    /// Rules for a tree rooted at `root` (absolute, canonical) walked with `options`.
    pub fn for_walk(root: &Path, options: &WalkOptions) -> Result<IgnoreRules, ArtifactError> {
        let mut rules = IgnoreRules::new(root, &options.ignore)?;
        if options.git_ignore {
            rules.git = GitRules::new(root)?;
        }
        rules.only = options.only.clone();
        rules.keep = options
            .keep
            .iter()
            .map(|k| k.trim_matches('/').to_string())
            .filter(|k| !k.is_empty())
            .collect();
        Ok(rules)
    }

    /// The same rules without [`WalkOptions::keep`].
    pub fn without_keep(&self) -> IgnoreRules {
        IgnoreRules {
            keep: Vec::new(),
            ..self.clone()
        }
    }

    /// Whether Git's rules take part (the root is in a work tree and they were asked for).
    pub fn uses_git(&self) -> bool {
        self.git.is_some()
    }

    /// Both matchers of a directory.
    fn both(&self, real: &Path, logical: &Path) -> Result<DirRules, ArtifactError> {
        Ok(DirRules {
            source: Self::dir_rules(real, logical)?,
            git: match self.git {
                Some(_) => {
                    // Read where it is, match where it appears.
                    let file = real.join(".gitignore");
                    if file.is_file() {
                        matcher(logical, &file)?
                    } else {
                        None
                    }
                }
                None => None,
            },
        })
    }

    /// The fate of `path` (logical, under the root; `rel` its `/`-separated
    /// relative form) given the matchers of its ancestors and whether an
    /// ancestor is Git-ignored (kept only for what the index tracks).
    fn verdict(
        &self,
        stack: &[Gitignore],
        git_stack: &[Gitignore],
        in_ignored: bool,
        path: &Path,
        rel: &str,
        is_dir: bool,
    ) -> Verdict {
        match scope(self.only.as_deref(), rel) {
            Scope::Outside => return Verdict::Drop,
            Scope::Above if !is_dir => return Verdict::Drop,
            _ => {}
        }
        if self.is_ignored(stack, path, is_dir) {
            return Verdict::Drop;
        }
        let Some(git) = &self.git else {
            return Verdict::Keep;
        };
        if !(in_ignored || git.ignores(git_stack, path, is_dir)) {
            return Verdict::Keep;
        }
        if self.keep.iter().any(|k| k == rel) {
            // Referenced by name: kept, with what is below it.
            return Verdict::Keep;
        }
        let leads_to_kept = is_dir && self.keep.iter().any(|k| k.starts_with(&format!("{rel}/")));
        if leads_to_kept || git.index.tracks(path, is_dir) {
            Verdict::KeepTracked
        } else {
            Verdict::Drop
        }
    }

    /// The rule that leaves a path (relative to the root) out of the
    /// artifact, in words (`` `.env` in .gitignore ``), if one does; `git`
    /// tells whether it is one of Git's rules (which [`WalkOptions::keep`]
    /// overrides). Paths outside [`WalkOptions::only`] are not asked about.
    pub fn rule_for(&self, relative: &Path, is_dir: bool) -> Option<IgnoredBy> {
        self.first_dropped(
            relative,
            is_dir,
            |stack, git_stack, logical, rel, is_dir| {
                self.explain(stack, git_stack, logical, rel, is_dir)
            },
        )
    }

    /// Which rule drops `path` (known dropped).
    fn explain(
        &self,
        stack: &[Gitignore],
        git_stack: &[Gitignore],
        path: &Path,
        rel: &str,
        is_dir: bool,
    ) -> IgnoredBy {
        let at = |glob: &ignore::gitignore::Glob, what: &str, by: IgnoredKind| IgnoredBy {
            path: rel.to_string(),
            rule: match glob.from() {
                Some(file) => format!(
                    "`{}` in {}",
                    glob.original(),
                    file.strip_prefix(&self.root)
                        .unwrap_or(file)
                        .to_string_lossy()
                        .replace('\\', "/")
                ),
                None => format!("`{}` {what}", glob.original()),
            },
            by,
        };
        for rules in stack.iter().rev() {
            match rules.matched(path, is_dir) {
                Match::Ignore(glob) => {
                    return at(glob, "in .sourceignore", IgnoredKind::SourceIgnore);
                }
                Match::Whitelist(_) => break,
                Match::None => {}
            }
        }
        if let Match::Ignore(glob) = self.base.matched(path, is_dir) {
            return if DEFAULT_EXCLUDES.contains(&glob.original()) {
                at(
                    glob,
                    "(one of Flux's default exclusions)",
                    IgnoredKind::Default,
                )
            } else if LOCK_FILE_EXCLUDES.contains(&glob.original()) {
                at(glob, "(an editor's lock file)", IgnoredKind::Default)
            } else {
                at(glob, "(--ignore)", IgnoredKind::Flag)
            };
        }
        if let Some(git) = &self.git {
            for rules in git_stack
                .iter()
                .rev()
                .chain(git.above.iter().rev())
                .chain(&git.excludes)
            {
                match rules.matched(path, is_dir) {
                    Match::Ignore(glob) => {
                        return at(glob, "(Git's ignore rules)", IgnoredKind::Git);
                    }
                    Match::Whitelist(_) => break,
                    Match::None => {}
                }
            }
            return IgnoredBy {
                path: rel.to_string(),
                rule: "Git's ignore rules".into(),
                by: IgnoredKind::Git,
            };
        }
        IgnoredBy {
            path: rel.to_string(),
            rule: "the ignore rules".into(),
            by: IgnoredKind::SourceIgnore,
        }
    }

    /// The matcher of a directory's `.sourceignore`, if it has one.
    /// `real` is where the file is read from, `logical` where the directory
    /// appears in the tree (they differ under a symlinked directory).
    fn dir_rules(real: &Path, logical: &Path) -> Result<Option<Gitignore>, ArtifactError> {
        let file = real.join(SOURCEIGNORE);
        if !file.is_file() {
            return Ok(None);
        }
        let mut builder = GitignoreBuilder::new(logical);
        if let Some(e) = builder.add(&file) {
            return Err(ArtifactError::IgnoreFile {
                path: file,
                reason: e.to_string(),
            });
        }
        builder
            .build()
            .map(Some)
            .map_err(|e| ArtifactError::IgnoreFile {
                path: file,
                reason: e.to_string(),
            })
    }

    /// Whether `path` (logical, under the root) is ignored, given the
    /// `.sourceignore` matchers of its ancestors, outermost first.
    fn is_ignored(&self, stack: &[Gitignore], path: &Path, is_dir: bool) -> bool {
        for rules in stack.iter().rev() {
            match rules.matched(path, is_dir) {
                Match::Ignore(_) => return true,
                Match::Whitelist(_) => return false,
                Match::None => {}
            }
        }
        matches!(self.base.matched(path, is_dir), Match::Ignore(_))
    }

    /// Whether a path relative to the root is ignored, taking every
    /// ignore file between the root and it into account. Used by the file
    /// watcher, which sees single paths rather than a walk.
    pub fn ignores(&self, relative: &Path, is_dir: bool) -> bool {
        self.first_dropped(relative, is_dir, |_, _, _, _, _| ())
            .is_some()
    }

    /// Walks the ignore files from the root down to `relative` and calls
    /// `dropped` with the stacks in force where the first component that a
    /// rule drops is met (`None`: nothing drops it).
    fn first_dropped<T>(
        &self,
        relative: &Path,
        is_dir: bool,
        dropped: impl FnOnce(&[Gitignore], &[Gitignore], &Path, &str, bool) -> T,
    ) -> Option<T> {
        let (mut stack, mut git_stack) = (Vec::new(), Vec::new());
        let mut dir = self.root.clone();
        let parts: Vec<_> = relative.components().collect();
        let push = |stack: &mut Vec<Gitignore>, git_stack: &mut Vec<Gitignore>, dir: &Path| {
            if let Ok(r) = self.both(dir, dir) {
                stack.extend(r.source);
                git_stack.extend(r.git);
            }
        };
        push(&mut stack, &mut git_stack, &dir);
        let mut in_ignored = false;
        let mut rel = String::new();
        for (i, part) in parts.iter().enumerate() {
            let logical = self.root.join(parts[..=i].iter().collect::<PathBuf>());
            let last = i + 1 == parts.len();
            if !rel.is_empty() {
                rel.push('/');
            }
            rel.push_str(&part.as_os_str().to_string_lossy());
            let is_dir = if last { is_dir } else { true };
            match self.verdict(&stack, &git_stack, in_ignored, &logical, &rel, is_dir) {
                Verdict::Drop => {
                    return Some(dropped(&stack, &git_stack, &logical, &rel, is_dir));
                }
                Verdict::KeepTracked => in_ignored = true,
                Verdict::Keep => {}
            }
            dir.push(part);
            if !last {
                push(&mut stack, &mut git_stack, &dir);
            }
        }
        None
    }
}

/// Lists the entries of the artifact for `root`, in archive order.
pub fn walk(root: &Path, options: &WalkOptions) -> Result<Vec<Entry>, ArtifactError> {
    let root = canonical_root(root)?;
    let entries = walk_with(&root, options, false)?;
    if !entries
        .iter()
        .any(|e| matches!(e.kind, EntryKind::File { .. }))
    {
        return Err(ArtifactError::Empty(root));
    }
    Ok(entries)
}

/// The directories of the artifact for `root` (canonical), as paths on disk:
/// what a watcher of it watches. Files are not looked at.
pub fn dirs(root: &Path, options: &WalkOptions) -> Result<Vec<PathBuf>, ArtifactError> {
    Ok(walk_with(root, options, true)?
        .into_iter()
        .map(|e| {
            if e.path == "." {
                root.to_path_buf()
            } else {
                root.join(&e.path)
            }
        })
        .collect())
}

fn walk_with(
    root: &Path,
    options: &WalkOptions,
    dirs_only: bool,
) -> Result<Vec<Entry>, ArtifactError> {
    let rules = IgnoreRules::for_walk(root, options)?;
    let git = GitModes::for_dir(root);
    let mut walker = Walker {
        root,
        rules: &rules,
        git: git.as_ref(),
        options,
        entries: vec![Entry {
            path: ".".into(),
            kind: EntryKind::Dir,
        }],
        stack: Vec::new(),
        git_stack: Vec::new(),
        active: HashSet::new(),
        dirs_only,
    };
    walker.dir(root, root, "", false)?;
    Ok(walker.entries)
}

/// Checks that `root` exists and is a directory, and returns it canonical.
/// Refuses a directory (canonical) that is the filesystem's root or the
/// user's home directory: packaging or watching it all is never meant.
pub fn refuse_too_broad(dir: &Path) -> Result<(), ArtifactError> {
    if dir.parent().is_none() {
        return Err(ArtifactError::TooBroad {
            path: dir.to_path_buf(),
            what: "the root of the filesystem",
        });
    }
    let home = ["HOME", "USERPROFILE"]
        .iter()
        .filter_map(std::env::var_os)
        .filter(|h| !h.is_empty())
        .filter_map(|h| fs::canonicalize(h).ok());
    for h in home {
        if h == dir {
            return Err(ArtifactError::TooBroad {
                path: dir.to_path_buf(),
                what: "your home directory",
            });
        }
    }
    Ok(())
}

pub fn canonical_root(root: &Path) -> Result<PathBuf, ArtifactError> {
    let meta = fs::metadata(root).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => ArtifactError::NoSuchDir(root.to_path_buf()),
        _ => io_at(root)(e),
    })?;
    if !meta.is_dir() {
        return Err(ArtifactError::NotADir(root.to_path_buf()));
    }
    fs::canonicalize(root).map_err(io_at(root))
}

struct Walker<'a> {
    root: &'a Path,
    rules: &'a IgnoreRules,
    /// Git's executable bits, when the root is in a work tree.
    git: Option<&'a GitModes>,
    options: &'a WalkOptions,
    entries: Vec<Entry>,
    /// `.sourceignore` matchers of the directories being walked.
    stack: Vec<Gitignore>,
    /// Their `.gitignore` matchers (with Git's rules).
    git_stack: Vec<Gitignore>,
    /// Canonical directories being walked, to catch symlink loops.
    active: HashSet<PathBuf>,
    /// Directories only (for a watcher): files, and links that do not
    /// resolve, are passed over.
    dirs_only: bool,
}

impl Walker<'_> {
    /// Walks `real` (a canonical directory) that appears at `logical` (a path
    /// under the root) with archive prefix `prefix`.
    /// `in_ignored`: the directory is Git-ignored but holds tracked files.
    fn dir(
        &mut self,
        real: &Path,
        logical: &Path,
        prefix: &str,
        in_ignored: bool,
    ) -> Result<(), ArtifactError> {
        self.active.insert(real.to_path_buf());
        let rules = self.rules.both(real, logical)?;
        let pushed = rules.source.is_some();
        let git_pushed = rules.git.is_some();
        self.stack.extend(rules.source);
        self.git_stack.extend(rules.git);
        let mut names = Vec::new();
        let read = fs::read_dir(real).map_err(io_at(logical))?;
        for item in read {
            let item = item.map_err(io_at(logical))?;
            let name = item.file_name();
            let Some(name) = name.to_str() else {
                return Err(ArtifactError::NonUtf8Name(logical.join(&name)));
            };
            names.push(name.to_string());
        }
        // Byte-wise lexical order, the order Go's filepath.Walk uses.
        names.sort_unstable();
        for name in names {
            self.entry(real, logical, prefix, &name, in_ignored)?;
        }
        if pushed {
            self.stack.pop();
        }
        if git_pushed {
            self.git_stack.pop();
        }
        self.active.remove(real);
        Ok(())
    }

    fn entry(
        &mut self,
        real_dir: &Path,
        logical_dir: &Path,
        prefix: &str,
        name: &str,
        in_ignored: bool,
    ) -> Result<(), ArtifactError> {
        let real = real_dir.join(name);
        let logical = logical_dir.join(name);
        let path = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}/{name}")
        };
        // Outside the packaged paths: not even looked at (it may be huge).
        if scope(self.options.only.as_deref(), &path) == Scope::Outside {
            return Ok(());
        }
        let meta = fs::symlink_metadata(&real).map_err(io_at(&logical))?;
        let (target, meta) = if meta.file_type().is_symlink() {
            // The ignore rules decide first: a link they drop whatever it
            // leads to (`result` in .sourceignore, an editor's lock file) is
            // never followed, so a dangling or escaping one harms nothing.
            let verdict = |is_dir| {
                self.rules.verdict(
                    &self.stack,
                    &self.git_stack,
                    in_ignored,
                    &logical,
                    &path,
                    is_dir,
                )
            };
            let as_file = verdict(false);
            if as_file == Verdict::Drop && verdict(true) == Verdict::Drop {
                return Ok(());
            }
            let resolved = self
                .resolve_link(&real, &logical)
                .and_then(|t| fs::metadata(&t).map(|m| (t, m)).map_err(io_at(&logical)));
            match resolved {
                Ok(found) => found,
                Err(_) if self.dirs_only => return Ok(()),
                Err(e) => {
                    // A rule for directories only (`result/`) drops a link to
                    // a directory outside the root; a link that leads nowhere
                    // is not a directory.
                    let is_dir = matches!(&e, ArtifactError::SymlinkEscapes { target, .. } if target.is_dir());
                    if (if is_dir { verdict(true) } else { as_file }) == Verdict::Drop {
                        return Ok(());
                    }
                    return Err(e);
                }
            }
        } else {
            (real, meta)
        };
        if self.dirs_only && !meta.is_dir() {
            return Ok(());
        }
        let verdict = self.rules.verdict(
            &self.stack,
            &self.git_stack,
            in_ignored,
            &logical,
            &path,
            meta.is_dir(),
        );
        if verdict == Verdict::Drop {
            return Ok(());
        }
        if !self.dirs_only && name.chars().any(char::is_control) {
            return Err(ArtifactError::ControlCharName(logical));
        }
        if meta.is_dir() {
            if self.active.contains(&target) {
                return Err(ArtifactError::SymlinkLoop(logical));
            }
            self.entries.push(Entry {
                path: path.clone(),
                kind: EntryKind::Dir,
            });
            return self.dir(&target, &logical, &path, verdict == Verdict::KeepTracked);
        }
        if !meta.is_file() {
            // Sockets, FIFOs and devices have no place in an artifact (Flux skips them too).
            tracing::debug!(path = %logical.display(), "special file left out of the artifact");
            return Ok(());
        }
        if meta.len() > self.options.max_file_size {
            return Err(ArtifactError::TooLarge {
                path: logical,
                size: meta.len(),
                limit: self.options.max_file_size,
            });
        }
        // Git's view wins for the files it tracks, so a tree gives the same
        // digest on every OS (see `gitmodes`).
        let executable = self
            .git
            .and_then(|git| git.executable(&target))
            .unwrap_or_else(|| is_executable(&meta));
        self.entries.push(Entry {
            path,
            kind: EntryKind::File {
                source: target,
                size: meta.len(),
                executable,
            },
        });
        Ok(())
    }

    /// Resolves a symlink; it must lead to an existing path inside the root.
    fn resolve_link(&self, real: &Path, logical: &Path) -> Result<PathBuf, ArtifactError> {
        match fs::canonicalize(real) {
            Ok(target) if target.starts_with(self.root) => Ok(target),
            Ok(target) => Err(ArtifactError::SymlinkEscapes {
                path: logical.to_path_buf(),
                target,
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(ArtifactError::DanglingSymlink(logical.to_path_buf()))
            }
            // The link resolves to itself through other links.
            Err(e) if is_loop(&e) => Err(ArtifactError::SymlinkLoop(logical.to_path_buf())),
            Err(e) => Err(io_at(logical)(e)),
        }
    }
}

#[cfg(unix)]
fn is_loop(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ELOOP)
}

#[cfg(windows)]
fn is_loop(e: &io::Error) -> bool {
    // ERROR_CANT_RESOLVE_FILENAME: too many reparse points.
    e.raw_os_error() == Some(1921)
}

#[cfg(not(any(unix, windows)))]
fn is_loop(_: &io::Error) -> bool {
    false
}

/// The file system's executable bit, for files Git does not track (or
/// outside any work tree). Windows has none: never executable there.
#[cfg(unix)]
fn is_executable(meta: &fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn is_executable(_: &fs::Metadata) -> bool {
    false
}
