//! Helm chart directories as Helm OCI charts: packaged with Helm's media
//! types under `<name>/`, with a development version that changes with the
//! content (so Helm sees every save as an upgrade).

use std::io::{self, Write};
use std::path::Path;

use sha2::Digest as _;

use crate::artifact::{
    self, ArtifactError, Blob, EntryKind, HashingWriter, ParallelGz, WalkOptions, walk,
};

/// Helm's chart config media type.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.cncf.helm.config.v1+json";
/// Helm's chart content (the packaged chart) media type.
pub const CONTENT_MEDIA_TYPE: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";

/// A chart that cannot be packaged.
#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    #[error("{path}/Chart.yaml: {reason}")]
    Invalid { path: String, reason: String },
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
}

/// What `Chart.yaml` says, as far as packaging needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChartMeta {
    pub name: String,
    pub version: String,
    /// The whole of Chart.yaml, as JSON (the OCI config blob is this, versioned).
    pub json: serde_json::Value,
}

/// A Helm values file, as JSON; the error in words (not the file's name).
pub fn read_values(file: &Path) -> Result<serde_json::Value, String> {
    let text = std::fs::read_to_string(file).map_err(|e| e.to_string())?;
    serde_saphyr::from_str(&text).map_err(|e| {
        format!(
            "not valid YAML: {}",
            e.to_string().lines().next().unwrap_or_default()
        )
    })
}

/// Deep-merges `overlay` into `base` (maps merge, everything else replaces).
pub fn merge_values(base: &mut serde_json::Value, overlay: serde_json::Value) {
    match (base, overlay) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                merge_values(b.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (b, o) => *b = o,
    }
}

/// Whether `dir` is a Helm chart.
pub fn is_chart(dir: &Path) -> bool {
    dir.join("Chart.yaml").is_file()
}

fn valid_semver(v: &str) -> bool {
    let core = v.split(['-', '+']).next().unwrap_or_default();
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Reads and checks `Chart.yaml` (name and a semantic version are required).
pub fn read_chart(dir: &Path) -> Result<ChartMeta, ChartError> {
    let invalid = |reason: String| ChartError::Invalid {
        path: dir.display().to_string(),
        reason,
    };
    let text =
        std::fs::read_to_string(dir.join("Chart.yaml")).map_err(|e| invalid(e.to_string()))?;
    let json: serde_json::Value =
        serde_saphyr::from_str(&text).map_err(|e| invalid(format!("not valid YAML: {e}")))?;
    let name = json["name"].as_str().unwrap_or_default().to_string();
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return Err(invalid(
            "`name` is missing or not a valid chart name (lowercase letters, digits, '-')".into(),
        ));
    }
    let version = match &json["version"] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => String::new(),
    };
    if !valid_semver(&version) {
        return Err(invalid(format!(
            "`version` {version:?} is not a semantic version (e.g. 0.1.0)"
        )));
    }
    missing_dependencies(dir, &json).map_err(invalid)?;
    Ok(ChartMeta {
        name,
        version,
        json,
    })
}

/// Every dependency in `Chart.yaml` must be vendored in `charts/` (as
/// `NAME-VERSION.tgz` or a `NAME/` directory): helm-controller installs the
/// chart as pushed and never fetches dependencies. Conditions do not help:
/// Helm refuses a chart whose dependencies are missing.
fn missing_dependencies(dir: &Path, chart: &serde_json::Value) -> Result<(), String> {
    let Some(deps) = chart["dependencies"].as_array() else {
        return Ok(());
    };
    let vendored: Vec<String> = std::fs::read_dir(dir.join("charts"))
        .map(|r| {
            r.filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let missing: Vec<String> = deps
        .iter()
        .filter_map(|d| {
            let name = d["name"].as_str()?;
            let found = vendored.iter().any(|f| {
                f == name
                    || f.strip_prefix(name)
                        .and_then(|rest| rest.strip_prefix('-'))
                        .is_some_and(|v| {
                            v.ends_with(".tgz") && v.starts_with(|c: char| c.is_ascii_digit())
                        })
            });
            (!found).then(|| {
                let version = d["version"].as_str().unwrap_or("any version");
                match d["repository"].as_str().filter(|r| !r.is_empty()) {
                    Some(repo) => format!("{name} {version} (from {repo})"),
                    None => format!("{name} {version}"),
                }
            })
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "depends on {}, missing from charts/; run `helm dependency build {}` first (nothing was pushed)",
        missing.join(", "),
        dir.display()
    ))
}

/// `1.2.3` → `1.2.3-dev.g<hash>`; `1.2.3-rc.1+b` → `1.2.3-rc.1.dev.g<hash>+b`.
pub fn dev_version(version: &str, content_hex: &str) -> String {
    let (core, build) = match version.split_once('+') {
        Some((c, b)) => (c, Some(b)),
        None => (version, None),
    };
    let hash = &content_hex[..content_hex.len().min(12)];
    let dev = if core.contains('-') {
        format!("{core}.dev.g{hash}")
    } else {
        format!("{core}-dev.g{hash}")
    };
    match build {
        Some(b) => format!("{dev}+{b}"),
        None => dev,
    }
}

/// Replaces the top-level `version:` of Chart.yaml, keeping everything else.
pub fn rewrite_version(chart_yaml: &str, version: &str) -> String {
    let mut done = false;
    let mut out: String = chart_yaml
        .lines()
        .map(|line| {
            if !done && line.starts_with("version:") {
                done = true;
                format!("version: {version}")
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    if chart_yaml.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// A packaged chart.
#[derive(Debug)]
pub struct PackagedChart {
    pub meta: ChartMeta,
    /// The development version packaged (also the OCI tag, with `+` as `_`).
    pub version: String,
    pub layer: Blob,
    pub config: Vec<u8>,
}

/// Packages the chart in `dir` into `out` (the `.tgz` layer).
pub fn package<W: Write>(
    dir: &Path,
    options: &WalkOptions,
    out: W,
) -> Result<(W, PackagedChart), ChartError> {
    let meta = read_chart(dir)?;
    let entries = walk(dir, options)?;
    // The development version is a digest of names and contents.
    let content = artifact::content_of_dir(dir, options)?;
    let mut hasher = sha2::Sha256::new();
    for (path, sum) in &content {
        hasher.update(format!("{path}\0{sum}\n").as_bytes());
    }
    let version = dev_version(&meta.version, &artifact::hex(&hasher.finalize()));
    let io_err = |e: io::Error| {
        ChartError::Artifact(ArtifactError::Io {
            path: dir.to_path_buf(),
            source: e,
        })
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let gz = ParallelGz::new(HashingWriter::new(out), threads).map_err(io_err)?;
    let mut tar = tar::Builder::new(gz);
    for entry in &entries {
        let EntryKind::File {
            source, executable, ..
        } = &entry.kind
        else {
            continue;
        };
        let data = std::fs::read(source).map_err(io_err)?;
        let data = if entry.path == "Chart.yaml" {
            rewrite_version(&String::from_utf8_lossy(&data), &version).into_bytes()
        } else {
            data
        };
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(if *executable { 0o755 } else { 0o644 });
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_size(data.len() as u64);
        tar.append_data(
            &mut header,
            format!("{}/{}", meta.name, entry.path),
            &data[..],
        )
        .map_err(io_err)?;
    }
    let gz = tar.into_inner().map_err(io_err)?;
    let (out, layer) = gz.finish().map_err(io_err)?.finish();
    let mut config = meta.json.clone();
    config["version"] = serde_json::Value::String(version.clone());
    // A JSON value prints without fail (its keys are strings).
    let config = config.to_string().into_bytes();
    Ok((
        out,
        PackagedChart {
            meta,
            version,
            layer,
            config,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn chart(dir: &Path, version: &str) {
        std::fs::create_dir_all(dir.join("templates")).unwrap();
        std::fs::write(
            dir.join("Chart.yaml"),
            format!("apiVersion: v2\nname: demo\nversion: {version}\n"),
        )
        .unwrap();
        std::fs::write(dir.join("values.yaml"), "greeting: hi\n").unwrap();
        std::fs::write(
            dir.join("templates/cm.yaml"),
            "kind: ConfigMap\ndata: {g: {{ .Values.greeting }}}\n",
        )
        .unwrap();
    }

    #[test]
    fn dev_versions_are_semver_and_follow_the_content() {
        assert_eq!(
            dev_version("0.1.0", "abcdef0123456789"),
            "0.1.0-dev.gabcdef012345"
        );
        assert_eq!(dev_version("1.0.0-rc.1", "00ff"), "1.0.0-rc.1.dev.g00ff");
        assert_eq!(dev_version("1.0.0+meta", "00ff"), "1.0.0-dev.g00ff+meta");
        assert_eq!(
            rewrite_version("apiVersion: v2\nversion: 0.1.0\nname: x\n", "9.9.9"),
            "apiVersion: v2\nversion: 9.9.9\nname: x\n"
        );
    }

    #[test]
    fn chart_yaml_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        chart(dir.path(), "0.1.0");
        assert_eq!(read_chart(dir.path()).unwrap().name, "demo");
        std::fs::write(
            dir.path().join("Chart.yaml"),
            "apiVersion: v2\nname: demo\nversion: latest\n",
        )
        .unwrap();
        assert!(
            read_chart(dir.path())
                .unwrap_err()
                .to_string()
                .contains("not a semantic version")
        );
        std::fs::write(
            dir.path().join("Chart.yaml"),
            "apiVersion: v2\nversion: 0.1.0\n",
        )
        .unwrap();
        assert!(
            read_chart(dir.path())
                .unwrap_err()
                .to_string()
                .contains("`name` is missing")
        );
    }

    #[test]
    fn packages_under_the_chart_name_with_the_dev_version() {
        let dir = tempfile::tempdir().unwrap();
        chart(dir.path(), "0.1.0");
        let (bytes, packaged) = package(dir.path(), &WalkOptions::default(), Vec::new()).unwrap();
        assert!(
            packaged.version.starts_with("0.1.0-dev.g"),
            "{}",
            packaged.version
        );
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
        let mut names = Vec::new();
        for e in archive.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().display().to_string();
            if name == "demo/Chart.yaml" {
                let mut s = String::new();
                e.read_to_string(&mut s).unwrap();
                assert!(s.contains(&format!("version: {}", packaged.version)), "{s}");
            }
            names.push(name);
        }
        assert_eq!(
            names,
            [
                "demo/Chart.yaml",
                "demo/templates/cm.yaml",
                "demo/values.yaml"
            ]
        );
        let config: serde_json::Value = serde_json::from_slice(&packaged.config).unwrap();
        assert_eq!(config["version"], packaged.version.as_str());
        // Same content, same version; a change, a new one.
        let (_, again) = package(dir.path(), &WalkOptions::default(), Vec::new()).unwrap();
        assert_eq!(again.version, packaged.version);
        std::fs::write(dir.path().join("values.yaml"), "greeting: hello\n").unwrap();
        let (_, changed) = package(dir.path(), &WalkOptions::default(), Vec::new()).unwrap();
        assert_ne!(changed.version, packaged.version);
    }

    #[test]
    fn dependencies_must_be_vendored_in_charts() {
        let dir = tempfile::tempdir().unwrap();
        chart(dir.path(), "0.1.0");
        let with_deps = "apiVersion: v2\nname: demo\nversion: 0.1.0\ndependencies:\n\
                         - name: redis\n  version: 17.x\n  repository: https://charts.example.com\n\
                         - name: common\n  version: 2.0.0\n";
        std::fs::write(dir.path().join("Chart.yaml"), with_deps).unwrap();
        let err = read_chart(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("redis 17.x (from https://charts.example.com), common 2.0.0")
                && err.contains("helm dependency build"),
            "{err}"
        );
        std::fs::create_dir_all(dir.path().join("charts/common")).unwrap();
        std::fs::write(dir.path().join("charts/redis-17.3.1.tgz"), "x").unwrap();
        assert!(read_chart(dir.path()).is_ok());
    }
}
