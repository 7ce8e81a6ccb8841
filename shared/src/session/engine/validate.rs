//! Local checks before anything is pushed: every YAML file must parse.
//! Also indexes which file defines which object, so the controller's
//! messages can name the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::artifact::{EntryKind, WalkOptions, walk};

/// A YAML syntax error, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct YamlError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

#[derive(serde::Deserialize)]
struct Head {
    kind: Option<String>,
    metadata: Option<HeadMeta>,
    sops: Option<SopsMeta>,
}

/// The `sops:` metadata of an encrypted file: whose keys open it.
#[derive(serde::Deserialize, Default)]
struct SopsMeta {
    mac: Option<String>,
    #[serde(default)]
    age: Option<Vec<SopsKey>>,
    #[serde(default)]
    pgp: Option<Vec<SopsKey>>,
    #[serde(default)]
    kms: Option<Vec<SopsKey>>,
    #[serde(default)]
    gcp_kms: Option<Vec<SopsKey>>,
    #[serde(default)]
    azure_kv: Option<Vec<SopsKey>>,
    #[serde(default)]
    hc_vault: Option<Vec<SopsKey>>,
}

#[derive(serde::Deserialize, Default)]
struct SopsKey {
    recipient: Option<String>,
    fp: Option<String>,
    arn: Option<String>,
    resource_id: Option<String>,
    vault_url: Option<String>,
    vault_address: Option<String>,
}

impl SopsMeta {
    /// The keys it is encrypted for, in words.
    fn keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        let mut add =
            |what: &str, list: &Option<Vec<SopsKey>>, id: fn(&SopsKey) -> Option<&String>| {
                for k in list.iter().flatten() {
                    if let Some(id) = id(k) {
                        keys.push(format!("{what} {id}"));
                    }
                }
            };
        add("age recipient", &self.age, |k| k.recipient.as_ref());
        add("PGP key", &self.pgp, |k| k.fp.as_ref());
        add("AWS KMS key", &self.kms, |k| k.arn.as_ref());
        add("GCP KMS key", &self.gcp_kms, |k| k.resource_id.as_ref());
        add("Azure Key Vault", &self.azure_kv, |k| k.vault_url.as_ref());
        add("Vault", &self.hc_vault, |k| k.vault_address.as_ref());
        keys
    }
}

/// A SOPS-encrypted manifest and the keys that open it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encrypted {
    /// Relative to the packaged root.
    pub file: String,
    pub keys: Vec<String>,
}

fn encrypted_list(files: &[Encrypted]) -> String {
    files
        .iter()
        .map(|f| {
            if f.keys.is_empty() {
                format!("  {}", f.file)
            } else {
                format!("  {} (for {})", f.file, f.keys.join(", "))
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[derive(serde::Deserialize)]
struct HeadMeta {
    name: Option<String>,
    namespace: Option<String>,
}

/// `Kind/name` → the file (relative to the root) that defines it.
pub type ObjectIndex = BTreeMap<String, String>;

/// Why a directory cannot be synced, found before anything is pushed.
#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    #[error("invalid YAML, nothing was pushed:\n{}", list(.0))]
    Yaml(Vec<YamlError>),
    #[error(
        "some objects name no namespace while others do; Flux has no default namespace for \
         them (it would fail with \"namespace not specified\"), and --target-namespace would \
         move every object. Add `namespace:` to these, or pass --target-namespace NAMESPACE to \
         put everything there; nothing was pushed:\n  {}",
        .0.join("\n  ")
    )]
    MixedNamespaces(Vec<String>),
    #[error(
        "{} has no Kubernetes manifests (no .yaml/.yml file and no kustomization); nothing was pushed",
        .0.display()
    )]
    Empty(PathBuf),
    #[error(
        "{from} references {written} ({}), which is outside the packaged root {}; Flux only sees \
         what is packaged. Pass --root-dir {} (a directory holding both); nothing was pushed",
        .path.display(), .root.display(), .suggestion.display()
    )]
    OutsideRoot {
        from: String,
        written: String,
        path: PathBuf,
        root: PathBuf,
        suggestion: PathBuf,
    },
    #[error("{from} references {written}, which does not exist; nothing was pushed")]
    MissingReference { from: String, written: String },
    #[error(
        "{from} references {written}, which the artifact leaves out ({dropped}: {rule}); the \
         render needs it: {advice}; nothing was pushed"
    )]
    IgnoredReference {
        from: String,
        written: String,
        /// What the rule drops: the path or a directory above it.
        dropped: String,
        rule: String,
        advice: String,
    },
    #[error("{0}; nothing was pushed")]
    Kustomization(#[from] crate::kustomize::KustomizeError),
    #[error(
        "SOPS-encrypted manifests, and no key to decrypt them: pass --decryption-key-file with \
         the age key they are encrypted for (e.g. ~/.config/sops/age/keys.txt), so Flux can \
         decrypt them; nothing was pushed:\n{}",
        encrypted_list(.0)
    )]
    NoDecryptionKey(Vec<Encrypted>),
    #[error(
        "{file}: {object} would leave the sandbox: {why}. A sandbox's payload acts only with the \
         sandbox's rights; nothing was pushed"
    )]
    LeavesSandbox {
        file: String,
        object: String,
        why: String,
    },
}

fn list(errors: &[YamlError]) -> String {
    errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

impl ValidateError {
    /// The file to name next to the error.
    pub fn file(&self) -> Option<String> {
        match self {
            ValidateError::Yaml(e) => e.first().map(|e| e.file.clone()),
            ValidateError::NoDecryptionKey(files) => files.first().map(|f| f.file.clone()),
            ValidateError::LeavesSandbox { file, .. } => Some(file.clone()),
            ValidateError::OutsideRoot { from, .. }
            | ValidateError::MissingReference { from, .. }
            | ValidateError::IgnoredReference { from, .. } => Some(from.clone()),
            _ => None,
        }
    }
}

/// Everything checked locally before a session pushes `dir` (inside
/// `root`): every YAML file parses, the directory holds manifests, and its
/// kustomization (followed transitively) only references paths inside the
/// packaged root. In a namespace sandbox (`confined_to` its namespace), no
/// Flux object in the payload may reach outside it (see
/// [`crate::sandbox::boundary`]).
pub fn validate_dir(
    root: &Path,
    dir: &Path,
    options: &WalkOptions,
    decrypts: bool,
    confined_to: Option<&str>,
) -> Result<ObjectIndex, ValidateError> {
    let (index, encrypted) = scan(root, options).map_err(ValidateError::Yaml)?;
    if !decrypts && !encrypted.is_empty() {
        return Err(ValidateError::NoDecryptionKey(encrypted));
    }
    if let Some(namespace) = confined_to {
        check_confined(root, dir, namespace)?;
    }
    let rel = |p: &Path| {
        p.strip_prefix(root)
            .unwrap_or(p)
            .to_string_lossy()
            .replace('\\', "/")
    };
    let has_kustomization = crate::kustomize::file_in(dir).is_some();
    if !has_kustomization {
        let prefix = rel(dir);
        let inside = |f: &String| prefix.is_empty() || f.starts_with(&format!("{prefix}/"));
        if !index.values().any(inside) && !has_yaml(dir) {
            return Err(ValidateError::Empty(dir.to_path_buf()));
        }
        return Ok(index);
    }
    let root_n = crate::kustomize::normalize(root);
    for r in crate::kustomize::references(dir)? {
        if !r.path.starts_with(&root_n) {
            return Err(ValidateError::OutsideRoot {
                from: rel(&r.from),
                written: r.written,
                suggestion: crate::kustomize::common_ancestor(&root_n, &r.path),
                path: r.path,
                root: root.to_path_buf(),
            });
        }
    }
    Ok(index)
}

/// A manifest (or a kustomization's `namespace:`) naming a namespace that
/// the Kustomization's `targetNamespace` replaces: the object lands in the
/// target, not where the file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relocated {
    /// Relative to the packaged root, `/`-separated.
    pub file: String,
    /// `Kind/name`, or `None` when a kustomization sets the namespace.
    pub object: Option<String>,
    /// The namespace the file names.
    pub named: String,
}

impl Relocated {
    /// In plain words, with where the object goes instead and why.
    pub fn message(&self, target: &str, why: &str) -> String {
        match &self.object {
            Some(o) => format!(
                "{}: {o} names namespace {:?}, but {why} applies everything into {target:?}: it \
                 is created there, not in {:?}",
                self.file, self.named, self.named
            ),
            None => format!(
                "{}: sets namespace {:?}, but {why} applies everything into {target:?}: its \
                 objects are created there",
                self.file, self.named
            ),
        }
    }
}

/// The objects a manifest file holds: each document's kind and metadata
/// (best effort: a file that cannot be read or parsed holds none here; the
/// other checks report it).
fn objects_in(file: &Path) -> Vec<(String, HeadMeta)> {
    let Ok(bytes) = std::fs::read(file) else {
        return Vec::new();
    };
    let Ok(heads) = crate::yaml::from_slice_multiple::<Head>(&bytes) else {
        return Vec::new();
    };
    heads
        .into_iter()
        .filter_map(|h| Some((h.kind?, h.metadata?)))
        .collect()
}

/// What a sync of `dir` (inside `root`) would put in another namespace
/// than the file says, because Flux's `targetNamespace` is `target`.
/// Best effort: files that cannot be read or parsed are left to the other
/// checks.
pub fn relocated(root: &Path, dir: &Path, target: &str) -> Vec<Relocated> {
    let Ok(applied) = crate::kustomize::applied(dir) else {
        return Vec::new();
    };
    let rel = |p: &Path| {
        p.strip_prefix(crate::kustomize::normalize(root))
            .unwrap_or(p)
            .to_string_lossy()
            .replace('\\', "/")
    };
    let mut out: Vec<Relocated> = applied
        .namespaces
        .iter()
        .filter(|(_, ns)| ns != target)
        .map(|(file, ns)| Relocated {
            file: rel(file),
            object: None,
            named: ns.clone(),
        })
        .collect();
    for (file, overridden) in &applied.files {
        if *overridden {
            continue;
        }
        for (kind, meta) in objects_in(file) {
            if let (Some(name), Some(ns)) = (meta.name, meta.namespace)
                && !ns.is_empty()
                && ns != target
            {
                out.push(Relocated {
                    file: rel(file),
                    object: Some(format!("{kind}/{name}")),
                    named: ns,
                });
            }
        }
    }
    out
}

/// Kinds that live outside namespaces (the built-in ones, and the common
/// cluster-wide kinds of popular add-ons): they need no namespace.
const CLUSTER_SCOPED: &[&str] = &[
    "Namespace",
    "Node",
    "PersistentVolume",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "StorageClass",
    "CSIDriver",
    "CSINode",
    "VolumeAttachment",
    "PriorityClass",
    "RuntimeClass",
    "IngressClass",
    "APIService",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "MutatingAdmissionPolicy",
    "MutatingAdmissionPolicyBinding",
    "FlowSchema",
    "PriorityLevelConfiguration",
    "GatewayClass",
    "ClusterIssuer",
    "ClusterPolicy",
];

/// Where the objects of `dir` (inside `root`) that name no namespace go in
/// cluster mode without `--target-namespace`, as `kubectl apply` would
/// place them: `Some(context)` when no object of the tree names a
/// namespace (Flux's `targetNamespace` then puts exactly those in the
/// context's namespace); `None` when every namespaced object has one.
/// Refused when some name one and others do not: Flux has no default
/// namespace for the others, and a `targetNamespace` would move all.
pub fn default_namespace(
    root: &Path,
    dir: &Path,
    context: &str,
) -> Result<Option<String>, ValidateError> {
    let Ok(applied) = crate::kustomize::applied(dir) else {
        return Ok(None);
    };
    let rel = |p: &Path| {
        p.strip_prefix(crate::kustomize::normalize(root))
            .unwrap_or(p)
            .to_string_lossy()
            .replace('\\', "/")
    };
    let mut named = !applied.namespaces.is_empty();
    let mut unnamed: Vec<String> = Vec::new();
    for (file, overridden) in &applied.files {
        if *overridden {
            named = true;
            continue;
        }
        for (kind, meta) in objects_in(file) {
            if CLUSTER_SCOPED.contains(&kind.as_str()) {
                continue;
            }
            match meta.namespace.filter(|n| !n.is_empty()) {
                Some(_) => named = true,
                None => unnamed.push(format!(
                    "{}: {kind}/{}",
                    rel(file),
                    meta.name.unwrap_or_default()
                )),
            }
        }
    }
    match (unnamed.is_empty(), named) {
        (true, _) => Ok(None),
        (false, false) => Ok(Some(context.to_string())),
        (false, true) => Err(ValidateError::MixedNamespaces(unnamed)),
    }
}

fn has_yaml(dir: &Path) -> bool {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .any(|e| {
            e.file_type().is_file()
                && e.path()
                    .extension()
                    .is_some_and(|x| x == "yaml" || x == "yml")
        })
}

/// Parses every `.yaml`/`.yml` file the artifact would hold.
pub fn validate(root: &Path, options: &WalkOptions) -> Result<ObjectIndex, Vec<YamlError>> {
    scan(root, options).map(|(index, _)| index)
}

/// The first Flux object among the manifests a sync of `dir` applies that
/// would reach outside a sandbox in `namespace`, as an error naming its
/// file. Local and best effort (what an overlay generates or patches is
/// for the cluster's policy to refuse); unreadable files are left to the
/// other checks.
fn check_confined(root: &Path, dir: &Path, namespace: &str) -> Result<(), ValidateError> {
    let Ok(applied) = crate::kustomize::applied(dir) else {
        return Ok(());
    };
    let root = crate::kustomize::normalize(root);
    for (file, _) in &applied.files {
        let Ok(bytes) = std::fs::read(file) else {
            continue;
        };
        let Ok(docs) = serde_saphyr::from_slice_multiple::<serde_json::Value>(&bytes) else {
            continue;
        };
        for doc in docs {
            if let Some(why) = crate::sandbox::boundary::check(&doc, namespace) {
                let kind = doc["kind"].as_str().unwrap_or("object");
                let name = doc["metadata"]["name"].as_str().unwrap_or("(unnamed)");
                return Err(ValidateError::LeavesSandbox {
                    file: file
                        .strip_prefix(&root)
                        .unwrap_or(file)
                        .to_string_lossy()
                        .replace('\\', "/"),
                    object: format!("{kind}/{name}"),
                    why,
                });
            }
        }
    }
    Ok(())
}

/// [`validate`], also listing the SOPS-encrypted manifests.
fn scan(
    root: &Path,
    options: &WalkOptions,
) -> Result<(ObjectIndex, Vec<Encrypted>), Vec<YamlError>> {
    let entries = match walk(root, options) {
        Ok(e) => e,
        // Packaging errors are reported by the build that follows.
        Err(_) => return Ok((ObjectIndex::new(), Vec::new())),
    };
    let mut errors = Vec::new();
    let mut index = ObjectIndex::new();
    let mut encrypted = Vec::new();
    for entry in entries {
        let EntryKind::File { source, .. } = &entry.kind else {
            continue;
        };
        if !(entry.path.ends_with(".yaml") || entry.path.ends_with(".yml")) {
            continue;
        }
        let Ok(bytes) = std::fs::read(source) else {
            continue;
        };
        match serde_saphyr::from_slice_multiple::<serde::de::IgnoredAny>(&bytes) {
            Ok(_) => {
                if let Ok(heads) = crate::yaml::from_slice_multiple::<Head>(&bytes) {
                    for head in heads {
                        if let Some(sops) = head.sops.as_ref().filter(|s| s.mac.is_some())
                            && !encrypted.iter().any(|e: &Encrypted| e.file == entry.path)
                        {
                            encrypted.push(Encrypted {
                                file: entry.path.clone(),
                                keys: sops.keys(),
                            });
                        }
                        if let (Some(kind), Some(name)) =
                            (head.kind, head.metadata.and_then(|m| m.name))
                        {
                            index
                                .entry(format!("{kind}/{name}"))
                                .or_insert_with(|| entry.path.clone());
                        }
                    }
                }
            }
            Err(e) => {
                let (line, column) = e
                    .location()
                    .map_or((0, 0), |l| (l.line() as usize, l.column() as usize));
                let message = e.to_string();
                let first = message.lines().next().unwrap_or_default();
                // The location is ours to print; drop the parser's own prefix.
                let message = plain_parser_message(
                    first
                        .trim_start_matches("error: ")
                        .split_once(": ")
                        .filter(|(head, _)| head.starts_with("line "))
                        .map_or(first, |(_, rest)| rest),
                );
                errors.push(YamlError {
                    file: entry.path.clone(),
                    line,
                    column,
                    message,
                });
            }
        }
    }
    if errors.is_empty() {
        Ok((index, encrypted))
    } else {
        Err(errors)
    }
}

/// The parser's message without hints meant for programmers using it
/// (e.g. "set DuplicateKeyPolicy in Options").
fn plain_parser_message(message: &str) -> String {
    let mut m = message.to_string();
    for sep in ["; set ", " (set ", ", set "] {
        if let Some(i) = m.find(sep)
            && m[i..].contains("Options")
        {
            m.truncate(i);
        }
    }
    m.trim_end_matches(['.', ' ']).to_string()
}

/// The file an object named in a controller message (`Kind/ns/name` or
/// `Kind/name`) came from, if known.
pub fn file_for(index: &ObjectIndex, message: &str) -> Option<String> {
    index.iter().find_map(|(key, file)| {
        let (kind, name) = key.split_once('/')?;
        let namespaced = message
            .split(|c: char| c.is_whitespace() || c == '"' || c == '\'')
            .map(|w| w.trim_end_matches([':', ',', ';', '.', ')']))
            .any(|w| w.starts_with(&format!("{kind}/")) && w.ends_with(&format!("/{name}")));
        (namespaced
            || message.contains(&format!("{kind}/{name} "))
            || message.contains(&format!("\"{name}\"")))
        .then(|| file.clone())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_without_a_namespace_go_where_kubectl_would_put_them_or_are_refused_when_mixed() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        let cm = |name: &str, ns: Option<&str>| {
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n{}",
                ns.map(|n| format!("  namespace: {n}\n"))
                    .unwrap_or_default()
            )
        };
        // None names one (a cluster-scoped object needs none): the context's.
        std::fs::write(d.join("a.yaml"), cm("a", None)).unwrap();
        std::fs::write(
            d.join("ns.yaml"),
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\n",
        )
        .unwrap();
        assert_eq!(
            default_namespace(d, d, "team").unwrap().as_deref(),
            Some("team")
        );
        // Every one names its own: nothing to choose.
        std::fs::write(d.join("a.yaml"), cm("a", Some("dev"))).unwrap();
        assert_eq!(default_namespace(d, d, "team").unwrap(), None);
        // Mixed: refused, naming the object and its file.
        std::fs::write(d.join("b.yaml"), cm("b", None)).unwrap();
        let e = default_namespace(d, d, "team").unwrap_err();
        assert!(e.to_string().contains("b.yaml: ConfigMap/b"), "{e}");
        assert!(e.to_string().contains("--target-namespace"), "{e}");
        // A kustomization that sets the namespace places them all.
        std::fs::write(
            d.join("kustomization.yaml"),
            "namespace: dev\nresources: [a.yaml, b.yaml]\n",
        )
        .unwrap();
        assert_eq!(default_namespace(d, d, "team").unwrap(), None);
    }

    #[test]
    fn syntax_errors_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("good.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\nkind: Service\nmetadata: {name: b}\n").unwrap();
        std::fs::write(
            dir.path().join("bad.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [unclosed\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not: [yaml").unwrap();
        let errors = validate(dir.path(), &WalkOptions::default()).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].file, "bad.yaml");
        assert!(errors[0].line >= 4, "{:?}", errors[0]);
        assert!(
            errors[0].to_string().starts_with("bad.yaml:"),
            "{}",
            errors[0]
        );

        std::fs::remove_file(dir.path().join("bad.yaml")).unwrap();
        let index = validate(dir.path(), &WalkOptions::default()).unwrap();
        assert_eq!(index["ConfigMap/a"], "good.yaml");
        assert_eq!(index["Service/b"], "good.yaml");
        assert_eq!(
            file_for(&index, "ConfigMap/dev/a dry-run failed: invalid").as_deref(),
            Some("good.yaml")
        );
        assert_eq!(file_for(&index, "unrelated"), None);
        assert_eq!(
            file_for(&index, "the rollout cannot succeed: ConfigMap/dev/a: pod x").as_deref(),
            Some("good.yaml")
        );
    }

    #[test]
    fn objects_naming_another_namespace_than_the_target_are_found() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        let w = |p: &str, s: &str| crate::testutil::write_tree(root, &[(p, s)]);
        // No kustomization: every YAML file below the directory counts.
        w(
            "plain/cm.yaml",
            "kind: ConfigMap\nmetadata: {name: a, namespace: prod}\n---\nkind: ConfigMap\nmetadata: {name: b}\n---\nkind: ConfigMap\nmetadata: {name: c, namespace: sbx}\n",
        );
        let found = relocated(root, &root.join("plain"), "sbx");
        assert_eq!(
            found,
            vec![Relocated {
                file: "plain/cm.yaml".into(),
                object: Some("ConfigMap/a".into()),
                named: "prod".into()
            }]
        );
        let text = found[0].message("sbx", "the sandbox");
        assert!(
            text.starts_with("plain/cm.yaml: ConfigMap/a names namespace \"prod\""),
            "{text}"
        );
        assert!(text.contains("into \"sbx\""), "{text}");

        // An overlay: only what it renders; its namespace: wins over the files'.
        w("base/kustomization.yaml", "resources:\n- deploy.yaml\n");
        w(
            "base/deploy.yaml",
            "kind: Deployment\nmetadata: {name: web, namespace: staging}\n",
        );
        w(
            "base/unused.yaml",
            "kind: ConfigMap\nmetadata: {name: u, namespace: x}\n",
        );
        w("dev/kustomization.yaml", "resources:\n- ../base\n");
        let found = relocated(root, &root.join("dev"), "sbx");
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].object.as_deref(), Some("Deployment/web"));
        assert_eq!(found[0].file, "base/deploy.yaml");
        w(
            "dev/kustomization.yaml",
            "namespace: team-a\nresources:\n- ../base\n",
        );
        let found = relocated(root, &root.join("dev"), "sbx");
        assert_eq!(
            found,
            vec![Relocated {
                file: "dev/kustomization.yaml".into(),
                object: None,
                named: "team-a".into()
            }]
        );
        assert!(relocated(root, &root.join("dev"), "team-a").is_empty());
    }

    #[test]
    fn duplicate_keys_are_reported_without_parser_hints() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("dup.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nkind: Secret\nmetadata:\n  name: a\n",
        )
        .unwrap();
        let errors = validate(dir.path(), &WalkOptions::default()).unwrap_err();
        let text = errors[0].to_string();
        assert!(text.starts_with("dup.yaml:3:"), "{text}");
        assert!(
            !text.contains("Options") && !text.contains("Policy"),
            "{text}"
        );
        assert!(text.contains("kind"), "{text}");
    }

    #[test]
    fn empty_dirs_and_overlays_reaching_outside_the_root_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("app");
        std::fs::create_dir_all(root.join("deploy")).unwrap();
        std::fs::create_dir_all(t.path().join("base")).unwrap();
        std::fs::write(root.join("README.md"), "hi").unwrap();
        let err = validate_dir(
            &root,
            &root.join("deploy"),
            &WalkOptions::default(),
            false,
            None,
        )
        .unwrap_err();
        assert!(matches!(err, ValidateError::Empty(_)), "{err}");

        std::fs::write(
            root.join("deploy/kustomization.yaml"),
            "resources:\n- ../../base\n",
        )
        .unwrap();
        let err = validate_dir(
            &root,
            &root.join("deploy"),
            &WalkOptions::default(),
            false,
            None,
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("deploy/kustomization.yaml references ../../base"),
            "{text}"
        );
        assert!(
            text.contains(&format!("--root-dir {}", t.path().display())),
            "{text}"
        );
        assert_eq!(err.file().as_deref(), Some("deploy/kustomization.yaml"));

        std::fs::write(
            root.join("deploy/kustomization.yaml"),
            "resources:\n- cm.yaml\n",
        )
        .unwrap();
        std::fs::write(
            root.join("deploy/cm.yaml"),
            "kind: ConfigMap\nmetadata: {name: a}\n",
        )
        .unwrap();
        assert!(
            validate_dir(
                &root,
                &root.join("deploy"),
                &WalkOptions::default(),
                false,
                None
            )
            .is_ok()
        );
    }

    #[test]
    fn sops_files_without_a_key_are_named_with_their_recipients() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("s.yaml"),
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata:\n  k: ENC[AES256_GCM,data:x]\n\
             sops:\n  age:\n  - recipient: age1abc\n    enc: x\n  mac: ENC[x]\n  version: 3.8.1\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("cm.yaml"),
            "kind: ConfigMap\nmetadata: {name: c}\n",
        )
        .unwrap();
        let err =
            validate_dir(dir.path(), dir.path(), &WalkOptions::default(), false, None).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("s.yaml (for age recipient age1abc)")
                && text.contains("--decryption-key-file"),
            "{text}"
        );
        assert_eq!(err.file().as_deref(), Some("s.yaml"));
        assert!(validate_dir(dir.path(), dir.path(), &WalkOptions::default(), true, None).is_ok());
    }
}
