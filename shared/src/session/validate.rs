//! Local checks before anything is pushed: every YAML file must parse.
//! Also indexes which file defines which object, so the controller's
//! messages can name the file.

use std::collections::BTreeMap;
use std::path::Path;

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
}

#[derive(serde::Deserialize)]
struct HeadMeta {
    name: Option<String>,
}

/// `Kind/name` → the file (relative to the root) that defines it.
pub type ObjectIndex = BTreeMap<String, String>;

/// Parses every `.yaml`/`.yml` file the artifact would hold.
pub fn validate(root: &Path, options: &WalkOptions) -> Result<ObjectIndex, Vec<YamlError>> {
    let entries = match walk(root, options) {
        Ok(e) => e,
        // Packaging errors are reported by the build that follows.
        Err(_) => return Ok(ObjectIndex::new()),
    };
    let mut errors = Vec::new();
    let mut index = ObjectIndex::new();
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
                if let Ok(heads) = serde_saphyr::from_slice_multiple::<Head>(&bytes) {
                    for head in heads {
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
                let message = first
                    .trim_start_matches("error: ")
                    .split_once(": ")
                    .filter(|(head, _)| head.starts_with("line "))
                    .map_or(first, |(_, rest)| rest)
                    .to_string();
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
        Ok(index)
    } else {
        Err(errors)
    }
}

/// The file an object named in a controller message (`Kind/ns/name` or
/// `Kind/name`) came from, if known.
pub fn file_for(index: &ObjectIndex, message: &str) -> Option<String> {
    index.iter().find_map(|(key, file)| {
        let (kind, name) = key.split_once('/')?;
        let namespaced = message
            .split(|c: char| c.is_whitespace() || c == '"' || c == '\'')
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
    }
}
