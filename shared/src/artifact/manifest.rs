//! What an artifact carries besides its layer: the OCI manifest (serialised
//! deterministically, so the same content gives the same digest), its
//! annotations, the empty config blob Flux expects, and the provenance
//! (`source`, `revision`) read from Git.

use std::path::Path;

use super::{Blob, CONFIG_MEDIA_TYPE, CONTENT_MEDIA_TYPE, MANIFEST_MEDIA_TYPE};
use crate::git::GitInfo;

/// Manifest annotation: where the content came from.
pub const ANNOTATION_SOURCE: &str = "org.opencontainers.image.source";
/// Manifest annotation: which revision of it.
pub const ANNOTATION_REVISION: &str = "org.opencontainers.image.revision";
/// Manifest annotation: when the artifact was made.
pub const ANNOTATION_CREATED: &str = "org.opencontainers.image.created";
/// `created` with `--reproducible`: the epoch, as Flux pins it.
pub const REPRODUCIBLE_CREATED: &str = "1970-01-01T00:00:00Z";

/// The config blob: source-controller does not read it; an empty JSON object.
pub const CONFIG_BLOB: &[u8] = b"{}";

/// The `source` and `revision` annotations for `dir`.
pub fn provenance(dir: &Path, layer_digest: &str) -> (String, String) {
    let abs = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let short = layer_digest
        .trim_start_matches("sha256:")
        .get(..12)
        .unwrap_or("");
    match GitInfo::for_dir(&abs) {
        Some(git) => {
            let source = git
                .remote
                .clone()
                .unwrap_or_else(|| format!("file://{}", git.toplevel.display()));
            let name = git.branch.clone().unwrap_or_else(|| "HEAD".into());
            let revision = match (&git.commit, git.dirty) {
                (Some(commit), false) => format!("{name}@sha1:{commit}"),
                // Never looks clean: the content digest says what it really is.
                (Some(commit), true) => format!("{name}@sha1:{commit}-dirty.{short}"),
                (None, _) => format!(
                    "{name}@sha256:{}",
                    layer_digest.trim_start_matches("sha256:")
                ),
            };
            (source, revision)
        }
        None => (
            format!("file://{}", abs.display()),
            format!(
                "local@sha256:{}",
                layer_digest.trim_start_matches("sha256:")
            ),
        ),
    }
}

/// The manifest of a Flux artifact, serialised deterministically.
pub fn manifest_json(config: &Blob, layer: &Blob, annotations: &[(&str, &str)]) -> Vec<u8> {
    oci_manifest(
        CONFIG_MEDIA_TYPE,
        config,
        CONTENT_MEDIA_TYPE,
        layer,
        annotations,
    )
}

/// A one-layer OCI image manifest, serialised deterministically (sorted keys).
pub fn oci_manifest(
    config_media_type: &str,
    config: &Blob,
    layer_media_type: &str,
    layer: &Blob,
    annotations: &[(&str, &str)],
) -> Vec<u8> {
    let annotations: serde_json::Map<String, serde_json::Value> = annotations
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
        .collect();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": config_media_type, "digest": config.digest, "size": config.size},
        "layers": [{"mediaType": layer_media_type, "digest": layer.digest, "size": layer.size}],
        "annotations": annotations,
    });
    // A JSON value prints without fail (its keys are strings).
    manifest.to_string().into_bytes()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::artifact::sha256_digest;

    /// A Flux artifact's manifest as the build writes it: its config and
    /// layer (10 bytes), and its bytes.
    pub(crate) fn sample() -> (Blob, Blob, Vec<u8>) {
        let config = Blob {
            digest: sha256_digest(CONFIG_BLOB),
            size: 2,
        };
        let layer = Blob {
            digest: format!("sha256:{}", "b".repeat(64)),
            size: 10,
        };
        let ann = [
            (ANNOTATION_CREATED, REPRODUCIBLE_CREATED),
            (ANNOTATION_SOURCE, "file:///x"),
        ];
        let bytes = manifest_json(&config, &layer, &ann);
        (config, layer, bytes)
    }

    #[test]
    fn manifest_is_flux_shaped_and_deterministic() {
        let (config, layer, one) = sample();
        let ann = [
            (ANNOTATION_CREATED, REPRODUCIBLE_CREATED),
            (ANNOTATION_SOURCE, "file:///x"),
        ];
        assert_eq!(one, manifest_json(&config, &layer, &ann));
        let v: serde_json::Value = serde_json::from_slice(&one).unwrap();
        assert_eq!(v["mediaType"], MANIFEST_MEDIA_TYPE);
        assert_eq!(v["config"]["mediaType"], CONFIG_MEDIA_TYPE);
        assert_eq!(v["layers"][0]["mediaType"], CONTENT_MEDIA_TYPE);
        assert_eq!(v["annotations"][ANNOTATION_SOURCE], "file:///x");
    }

    #[test]
    fn provenance_outside_git_is_a_file_url_and_content_revision() {
        let dir = tempfile::tempdir().unwrap();
        let (source, revision) = provenance(dir.path(), &format!("sha256:{}", "c".repeat(64)));
        assert!(source.starts_with("file:///"), "{source}");
        assert_eq!(revision, format!("local@sha256:{}", "c".repeat(64)));
    }
}
