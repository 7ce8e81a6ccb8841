//! What a `kustomization.yaml` references on disk: resources, components,
//! bases, CRDs, patches, generator files, transformer/generator/validator
//! configurations, replacements, `configurations` and the OpenAPI schema,
//! given as local paths. Used to check,
//! before anything is pushed, that an overlay only reaches files the
//! artifact holds.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

/// The file names kustomize accepts, in its order of preference.
pub const FILE_NAMES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// The kustomization file of a directory, if it has one.
pub fn file_in(dir: &Path) -> Option<PathBuf> {
    FILE_NAMES.iter().map(|n| dir.join(n)).find(|p| p.is_file())
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Kustomization {
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    bases: Vec<String>,
    #[serde(default)]
    components: Vec<String>,
    #[serde(default)]
    crds: Vec<String>,
    #[serde(default)]
    patches_strategic_merge: Vec<serde_json::Value>,
    #[serde(default)]
    patches: Vec<serde_json::Value>,
    #[serde(default, rename = "patchesJson6902")]
    patches_json6902: Vec<serde_json::Value>,
    #[serde(default)]
    config_map_generator: Vec<Generator>,
    #[serde(default)]
    secret_generator: Vec<Generator>,
    /// Files (or directories with a kustomization) of transformer,
    /// generator and validator configurations; inline ones are YAML text.
    #[serde(default)]
    transformers: Vec<serde_json::Value>,
    #[serde(default)]
    generators: Vec<serde_json::Value>,
    #[serde(default)]
    validators: Vec<serde_json::Value>,
    /// `- path: file` or inline `source`/`targets`.
    #[serde(default)]
    replacements: Vec<serde_json::Value>,
    /// Transformer configuration files (name references, var references).
    #[serde(default)]
    configurations: Vec<String>,
    /// `path:` to an OpenAPI schema file, or `version:`.
    #[serde(default)]
    openapi: Option<serde_json::Value>,
}

#[derive(Deserialize, Default)]
struct Generator {
    #[serde(default)]
    files: Vec<String>,
    #[serde(default)]
    envs: Vec<String>,
    #[serde(default)]
    env: Option<String>,
}

/// One local path a kustomization refers to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Reference {
    /// The kustomization file that names it.
    pub from: PathBuf,
    /// As written.
    pub written: String,
    /// Resolved (lexically, from the kustomization's directory).
    pub path: PathBuf,
}

/// A kustomization file that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct KustomizeError {
    pub file: PathBuf,
    pub message: String,
}

/// Whether a reference is remote (a URL, a Git repository) rather than a path.
pub fn is_remote(r: &str) -> bool {
    r.contains("://")
        || r.starts_with("git@")
        || r.starts_with("github.com/")
        || r.starts_with("gitlab.com/")
        || r.starts_with("bitbucket.org/")
}

/// `a/b/../c` → `a/c`, without touching the file system.
pub fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                if out.file_name().is_some() {
                    // `a/b/..` → `a`
                    out.pop();
                } else if !out.has_root() {
                    // Above a relative start: `../..` stays `../..`
                    // (popping would drop the first `..`).
                    out.push("..");
                }
                // The root's parent is the root: `/..` → `/`.
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

fn local_paths(k: &Kustomization) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    out.extend(k.resources.iter().cloned());
    out.extend(k.bases.iter().cloned());
    out.extend(k.components.iter().cloned());
    out.extend(k.crds.iter().cloned());
    out.extend(k.configurations.iter().cloned());
    // Strategic-merge patches and plugin configurations may be inline YAML;
    // a path is one line.
    for p in k
        .patches_strategic_merge
        .iter()
        .chain(&k.transformers)
        .chain(&k.generators)
        .chain(&k.validators)
    {
        if let Some(s) = p.as_str().filter(|s| !s.contains('\n')) {
            out.push(s.to_string());
        }
    }
    for p in k
        .patches
        .iter()
        .chain(&k.patches_json6902)
        .chain(&k.replacements)
        .chain(&k.openapi)
    {
        if let Some(s) = p.get("path").and_then(|v| v.as_str()) {
            out.push(s.to_string());
        }
    }
    for g in k.config_map_generator.iter().chain(&k.secret_generator) {
        // `files` entries may be `key=path`.
        for f in &g.files {
            out.push(f.split_once('=').map_or(f.as_str(), |(_, p)| p).to_string());
        }
        out.extend(g.envs.iter().cloned());
        out.extend(g.env.iter().cloned());
    }
    out.retain(|r| !r.trim().is_empty());
    out
}

fn read(file: &Path) -> Result<Kustomization, KustomizeError> {
    let text = std::fs::read(file).map_err(|e| KustomizeError {
        file: file.to_path_buf(),
        message: e.to_string(),
    })?;
    crate::yaml::from_slice(&text).map_err(|e| KustomizeError {
        file: file.to_path_buf(),
        message: format!(
            "not a valid kustomization: {}",
            e.to_string().lines().next().unwrap_or_default()
        ),
    })
}

/// What a sync of a directory applies, as far as namespaces go: the
/// manifest files it renders, and the kustomizations that set `namespace:`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Manifest files, with whether a kustomization above them sets the
    /// namespace (then their own `metadata.namespace` does not count).
    pub files: Vec<(PathBuf, bool)>,
    /// Kustomization files that set `namespace:`, with the value.
    pub namespaces: Vec<(PathBuf, String)>,
}

/// The manifest files a sync of `dir` renders: with a kustomization, its
/// `resources`, `bases` and `components` followed transitively; without
/// one, every YAML file below `dir` (what Flux generates a kustomization
/// of). Remote references are left out.
pub fn applied(dir: &Path) -> Result<Applied, KustomizeError> {
    let mut out = Applied::default();
    let mut seen = BTreeSet::new();
    let mut todo = vec![(normalize(dir), false)];
    while let Some((d, overridden)) = todo.pop() {
        if !seen.insert(d.clone()) {
            continue;
        }
        let Some(file) = file_in(&d) else {
            let mut files: Vec<PathBuf> = walkdir::WalkDir::new(&d)
                .into_iter()
                .filter_map(Result::ok)
                .filter(|e| {
                    e.file_type().is_file()
                        && e.path()
                            .extension()
                            .is_some_and(|x| x == "yaml" || x == "yml")
                        && !FILE_NAMES.iter().any(|n| e.file_name() == *n)
                })
                .map(|e| e.into_path())
                .collect();
            files.sort();
            out.files.extend(files.into_iter().map(|f| (f, overridden)));
            continue;
        };
        let k = read(&file)?;
        let sets = k.namespace.as_deref().is_some_and(|n| !n.trim().is_empty());
        if let Some(ns) = k.namespace.clone().filter(|_| sets) {
            out.namespaces.push((file.clone(), ns));
        }
        let overridden = overridden || sets;
        for written in k.resources.iter().chain(&k.bases).chain(&k.components) {
            if written.trim().is_empty() || is_remote(written) {
                continue;
            }
            let path = normalize(&d.join(written));
            if path.is_dir() {
                todo.push((path, overridden));
            } else {
                out.files.push((path, overridden));
            }
        }
    }
    Ok(out)
}

/// What the kustomizations of a directory reference, followed transitively.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Scan {
    /// Local paths (files and directories).
    pub local: Vec<Reference>,
    /// Remote references (URLs, Git repositories): (kustomization file, as written).
    pub remote: Vec<(PathBuf, String)>,
    /// Every kustomization file read.
    pub files: Vec<PathBuf>,
}

/// Every path the kustomization of `dir` references, followed transitively
/// through referenced directories that have one.
pub fn scan(dir: &Path) -> Result<Scan, KustomizeError> {
    let mut local = BTreeSet::new();
    let mut remote = BTreeSet::new();
    let mut files = BTreeSet::new();
    let mut seen = BTreeSet::new();
    let mut todo = vec![normalize(dir)];
    while let Some(d) = todo.pop() {
        if !seen.insert(d.clone()) {
            continue;
        }
        let Some(file) = file_in(&d) else {
            continue;
        };
        let k = read(&file)?;
        files.insert(file.clone());
        for written in local_paths(&k) {
            if is_remote(&written) {
                remote.insert((file.clone(), written));
                continue;
            }
            let path = normalize(&d.join(&written));
            if path.is_dir() {
                todo.push(path.clone());
            }
            local.insert(Reference {
                from: file.clone(),
                written,
                path,
            });
        }
    }
    Ok(Scan {
        local: local.into_iter().collect(),
        remote: remote.into_iter().collect(),
        files: files.into_iter().collect(),
    })
}

/// Every local path the kustomization of `dir` references, followed
/// transitively through referenced directories that have one.
pub fn references(dir: &Path) -> Result<Vec<Reference>, KustomizeError> {
    scan(dir).map(|s| s.local)
}

/// The deepest directory holding both paths.
pub fn common_ancestor(a: &Path, b: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for (x, y) in a.components().zip(b.components()) {
        if x != y {
            break;
        }
        out.push(x.as_os_str());
    }
    out
}

#[cfg(test)]
mod props {
    //! Kustomizations come from the directory being synced: anything its
    //! author (or a generator, or a merge conflict) wrote.
    use super::*;
    use proptest::prelude::*;

    /// A path component as a kustomization may write it.
    fn part() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("..".to_string()),
            Just(".".to_string()),
            Just("base".to_string()),
            "[a-z]{1,3}",
        ]
    }

    /// What a `resources:` entry may say.
    fn written() -> impl Strategy<Value = String> {
        prop_oneof![
            proptest::collection::vec(part(), 0..6).prop_map(|p| p.join("/")),
            proptest::collection::vec(part(), 0..4).prop_map(|p| format!("/{}", p.join("/"))),
            Just("https://github.com/org/repo//deploy?ref=main".to_string()),
            Just("key=base/app.yaml".to_string()),
            Just(String::new()),
            Just(" ".to_string()),
            any::<String>(),
        ]
    }

    /// A kustomization file's text: structured, or anything at all.
    fn kustomization() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => (
                proptest::collection::vec(written(), 0..5),
                proptest::collection::vec(written(), 0..3),
                proptest::option::of("[a-z\\[\\]{}:\n -]{0,12}"),
            )
                .prop_map(|(resources, files, namespace)| {
                    let list = |v: &[String]| {
                        v.iter()
                            .map(|s| serde_json::to_string(s).unwrap_or_default())
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                    let mut text = format!(
                        "resources: [{}]\nconfigMapGenerator:\n- name: c\n  files: [{}]\npatches:\n- path: {}\n",
                        list(&resources),
                        list(&files),
                        serde_json::to_string(files.first().map_or("p.yaml", String::as_str))
                            .unwrap_or_default(),
                    );
                    if let Some(ns) = namespace {
                        text.push_str(&format!("namespace: {ns}\n"));
                    }
                    text
                }),
            1 => any::<String>(),
            1 => "(resources|bases|components|patches|namespace): ?[\\[\\]{}a-z./:, -]{0,30}\n?",
        ]
    }

    /// Lexical normalisation, written out the long way.
    fn model(p: &str) -> String {
        let absolute = p.starts_with('/');
        let mut out: Vec<&str> = Vec::new();
        for c in p.split('/') {
            match c {
                "" | "." => {}
                ".." if out.last().is_some_and(|l| *l != "..") => {
                    out.pop();
                }
                ".." if absolute => {}
                c => out.push(c),
            }
        }
        let joined = out.join("/");
        if absolute {
            format!("/{joined}")
        } else {
            joined
        }
    }

    proptest! {
        #![proptest_config(crate::proptests::config(512))]

        #[test]
        fn normalize_is_lexical_resolution(parts in proptest::collection::vec(part(), 0..8), absolute in any::<bool>()) {
            let p = format!("{}{}", if absolute { "/" } else { "" }, parts.join("/"));
            let n = normalize(Path::new(&p));
            prop_assert_eq!(n.to_string_lossy().into_owned(), model(&p), "{}", p);
            prop_assert_eq!(normalize(&n), n.clone());
        }

        #[test]
        fn any_reference_text_is_classified(s in any::<String>(), t in any::<String>()) {
            let _ = is_remote(&s);
            let (a, b) = (normalize(Path::new(&s)), normalize(Path::new(&t)));
            let common = common_ancestor(&a, &b);
            prop_assert!(a.starts_with(&common) && b.starts_with(&common));
        }
    }

    proptest! {
        // Each case writes files: fewer of them.
        #![proptest_config(crate::proptests::config(96))]

        #[test]
        fn any_kustomization_is_read_or_refused_without_panicking(
            top in kustomization(),
            base in kustomization(),
        ) {
            let t = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
            let root = t.path();
            let w = |p: &str, s: &str| crate::testutil::write_tree(root, &[(p, s)]);
            w("deploy/kustomization.yaml", &top);
            w("deploy/base/kustomization.yaml", &base);
            w("deploy/base/app.yaml", "kind: ConfigMap\n");
            w("deploy/p.yaml", "kind: ConfigMap\n");
            let dir = root.join("deploy");
            if let Ok(scan) = scan(&dir) {
                for r in &scan.local {
                    // Resolved paths are lexically normal: no `.`, no `..` inside.
                    prop_assert_eq!(normalize(&r.path), r.path.clone());
                }
            }
            let _ = references(&dir);
            // As a sync does: only once every reference is inside the root
            // (a directory without a kustomization is walked whole).
            if scan(&dir).is_ok_and(|s| s.local.iter().all(|r| r.path.starts_with(normalize(root)))) {
                let _ = applied(&dir);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by `props::normalize_is_lexical_resolution`: `../..` lost its
    /// first `..` (a pop of `..` itself), and `/..` kept one.
    #[test]
    fn normalize_keeps_every_parent_above_a_relative_start() {
        let n = |p: &str| normalize(Path::new(p)).to_string_lossy().into_owned();
        assert_eq!(n("../.."), "../..");
        assert_eq!(n("a/../../.."), "../..");
        assert_eq!(n("../a/../b"), "../b");
        assert_eq!(n("/.."), "/");
        assert_eq!(n("/a/../../b"), "/b");
        assert_eq!(n("/src/app/./deploy/../base"), "/src/app/base");
    }

    /// What `dir`'s kustomizations reference, relative to `root`.
    fn referenced(root: &Path, dir: &str) -> Vec<String> {
        references(&root.join(dir))
            .unwrap()
            .iter()
            .map(|r| {
                r.path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/")
            })
            .collect()
    }

    #[test]
    fn overlays_reference_bases_components_patches_and_generator_files() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        let w = |p: &str, s: &str| crate::testutil::write_tree(root, &[(p, s)]);
        w(
            "overlays/dev/kustomization.yaml",
            "resources:\n- ../../base\n- https://example.com/x.yaml\n- github.com/org/repo//dir\ncomponents:\n- ../../components/mon\npatches:\n- path: patch.yaml\n- patch: |-\n    inline\nconfigMapGenerator:\n- name: c\n  files:\n  - app.conf=../../config/app.conf\n  envs:\n  - dev.env\n",
        );
        w("base/kustomization.yaml", "resources:\n- deploy.yaml\n");
        w("base/deploy.yaml", "kind: ConfigMap\n");
        w("components/mon/kustomization.yaml", "kind: Component\n");
        let paths = referenced(root, "overlays/dev");
        for want in [
            "base",
            "base/deploy.yaml",
            "components/mon",
            "overlays/dev/patch.yaml",
            "config/app.conf",
            "overlays/dev/dev.env",
        ] {
            assert!(paths.contains(&want.to_string()), "{want} in {paths:?}");
        }
        assert!(!paths.iter().any(|p| p.contains("example.com")));
    }

    #[test]
    fn paths_normalize_lexically() {
        assert_eq!(
            normalize(Path::new("/a/b/../c/./d")),
            PathBuf::from("/a/c/d")
        );
        assert_eq!(
            common_ancestor(Path::new("/x/app/deploy"), Path::new("/x/base")),
            PathBuf::from("/x")
        );
    }

    #[test]
    fn plugin_configurations_replacements_configurations_and_openapi_are_followed() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        let w = |p: &str, s: &str| crate::testutil::write_tree(root, &[(p, s)]);
        w(
            "app/kustomization.yaml",
            "resources:\n- cm.yaml\ncrds:\n- ../crds/widget.yaml\ntransformers:\n- ../shared/labels.yaml\n- ../plugins/prefix\n- |-\n  apiVersion: builtin\n  kind: NamespaceTransformer\n  metadata:\n    name: inline\n  namespace: x\ngenerators:\n- ../shared/gen.yaml\nvalidators:\n- ../shared/check.yaml\nreplacements:\n- path: ../shared/replace.yaml\n- source:\n    kind: ConfigMap\n    name: cm\n  targets: []\nconfigurations:\n- ../shared/namereference.yaml\nopenapi:\n  path: ../shared/schema.json\n",
        );
        w(
            "plugins/prefix/kustomization.yaml",
            "resources:\n- prefix.yaml\n",
        );
        let paths = referenced(root, "app");
        for want in [
            "app/cm.yaml",
            "crds/widget.yaml",
            "shared/labels.yaml",
            "plugins/prefix",
            "plugins/prefix/prefix.yaml",
            "shared/gen.yaml",
            "shared/check.yaml",
            "shared/replace.yaml",
            "shared/namereference.yaml",
            "shared/schema.json",
        ] {
            assert!(paths.contains(&want.to_string()), "{want} in {paths:?}");
        }
        // Inline configurations are not paths.
        assert_eq!(paths.len(), 10, "{paths:?}");
        // `openapi: {version: ...}` names no file.
        w("other/kustomization.yaml", "openapi:\n  version: v1.20.4\n");
        assert_eq!(references(&root.join("other")).unwrap(), vec![]);
    }
}
