//! Reading kubeconfig files as kubectl does: `KUBECONFIG` (a path list,
//! merged, the first to set a value wins) or `~/.kube/config`; several
//! YAML documents in a file are merged too; a file's relative paths
//! (certificates, keys, token files, exec commands with a directory) are
//! taken from the file's directory; a UTF-16 or UTF-8 byte-order mark is
//! honoured.
//!
//! The result is kube's [`Kubeconfig`], read through the suite's one YAML
//! reader ([`crate::yaml`]), so the binaries carry no second YAML parser
//! instantiated for kube's types.

use std::path::{Path, PathBuf};

use kube::config::Kubeconfig;

/// Why a kubeconfig could not be read.
#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    #[error("failed to read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not valid YAML: {0}")]
    Yaml(String),
    #[error("not a kubeconfig: {0}")]
    Shape(#[source] serde_json::Error),
    #[error(transparent)]
    Merge(#[from] kube::config::KubeconfigError),
    #[error("no home directory to find ~/.kube/config in")]
    NoHome,
}

/// The kubeconfig `KUBECONFIG` names (its files merged), else
/// `~/.kube/config`.
pub fn read() -> Result<Kubeconfig, KubeconfigError> {
    if let Some(list) = std::env::var_os("KUBECONFIG") {
        let paths: Vec<PathBuf> = std::env::split_paths(&list)
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        if !paths.is_empty() {
            return paths
                .iter()
                .try_fold(Kubeconfig::default(), |merged, path| {
                    Ok(merged.merge(read_from(path)?)?)
                });
        }
    }
    let home = std::env::home_dir().ok_or(KubeconfigError::NoHome)?;
    read_from(&home.join(".kube").join("config"))
}

/// The kubeconfig at `path`, its relative paths made absolute.
pub fn read_from(path: &Path) -> Result<Kubeconfig, KubeconfigError> {
    let read_error = |source| KubeconfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    let text = decode(std::fs::read(path).map_err(read_error)?).map_err(read_error)?;
    let dir = path.parent();
    documents(&text)?
        .into_iter()
        .map(|mut config| {
            if let Some(dir) = dir {
                absolute_paths(&mut config, dir);
            }
            config
        })
        .try_fold(
            Kubeconfig::default(),
            |merged, next| Ok(merged.merge(next)?),
        )
}

/// A kubeconfig from YAML text (its documents merged).
pub fn from_yaml(text: &str) -> Result<Kubeconfig, KubeconfigError> {
    documents(text)?
        .into_iter()
        .try_fold(
            Kubeconfig::default(),
            |merged, next| Ok(merged.merge(next)?),
        )
}

fn documents(text: &str) -> Result<Vec<Kubeconfig>, KubeconfigError> {
    crate::yaml::from_slice_multiple(text.as_bytes()).map_err(|e| match e {
        crate::yaml::YamlError::Syntax(e) => KubeconfigError::Yaml(e.to_string()),
        crate::yaml::YamlError::Shape(e) => KubeconfigError::Shape(e),
    })
}

/// The file's text: UTF-8, or UTF-16 with its byte-order mark (what
/// PowerShell's `>` writes).
fn decode(bytes: Vec<u8>) -> std::io::Result<String> {
    let invalid = |what: &str| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("invalid {what}"))
    };
    let utf16 = |body: &[u8], from: fn([u8; 2]) -> u16| {
        let units: Vec<u16> = body
            .chunks(2)
            .map(|c| from([c[0], *c.get(1).unwrap_or(&0)]))
            .collect();
        String::from_utf16(&units).map_err(|_| invalid("UTF-16"))
    };
    match bytes.as_slice() {
        [0xFF, 0xFE, body @ ..] => utf16(body, u16::from_le_bytes),
        [0xFE, 0xFF, body @ ..] => utf16(body, u16::from_be_bytes),
        [0xEF, 0xBB, 0xBF, body @ ..] => {
            String::from_utf8(body.to_vec()).map_err(|_| invalid("UTF-8"))
        }
        _ => String::from_utf8(bytes).map_err(|_| invalid("UTF-8")),
    }
}

/// A kubeconfig's file references are relative to its own directory (as
/// client-go resolves them); an exec command only when it names a
/// directory (`./bin/auth`), not a bare command looked up on `PATH`.
fn absolute_paths(config: &mut Kubeconfig, dir: &Path) {
    let absolute = |file: &mut Option<String>| {
        if let Some(f) = file.as_deref()
            && Path::new(f).is_relative()
            && let Some(joined) = dir.join(f).to_str()
        {
            *file = Some(joined.to_string());
        }
    };
    for cluster in config
        .clusters
        .iter_mut()
        .filter_map(|c| c.cluster.as_mut())
    {
        absolute(&mut cluster.certificate_authority);
    }
    for auth in config
        .auth_infos
        .iter_mut()
        .filter_map(|a| a.auth_info.as_mut())
    {
        absolute(&mut auth.client_certificate);
        absolute(&mut auth.client_key);
        absolute(&mut auth.token_file);
        if let Some(exec) = auth.exec.as_mut()
            && exec
                .command
                .as_deref()
                .is_some_and(|c| c.contains(std::path::MAIN_SEPARATOR))
        {
            absolute(&mut exec.command);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
apiVersion: v1
kind: Config
current-context: dev
clusters:
- name: dev
  cluster:
    server: https://127.0.0.1:6443
    certificate-authority: pki/ca.crt
    insecure-skip-tls-verify: false
- name: abs
  cluster:
    server: https://10.0.0.1
    certificate-authority: /etc/ca.crt
contexts:
- name: dev
  context:
    cluster: dev
    user: ann
    namespace: team-a
users:
- name: ann
  user:
    client-certificate: ann.crt
    client-key: keys/ann.key
    token-file: token
    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: ./bin/login
      args: ["--id", 42]
      interactiveMode: Never
- name: bob
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: aws
"#;

    #[test]
    fn a_file_reads_as_kube_reads_it_with_its_paths_made_absolute() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        std::fs::write(&path, CONFIG).unwrap();
        let ours = read_from(&path).unwrap();
        let theirs = Kubeconfig::read_from(&path).unwrap();
        // The same kubeconfig as kube's own reader makes of it.
        assert_eq!(
            serde_json::to_value(&ours).unwrap(),
            serde_json::to_value(&theirs).unwrap()
        );
        let ca = ours.clusters[0]
            .cluster
            .as_ref()
            .unwrap()
            .certificate_authority
            .clone();
        assert_eq!(ca.unwrap(), dir.path().join("pki/ca.crt").to_str().unwrap());
        let user = ours.auth_infos[0].auth_info.as_ref().unwrap();
        assert!(Path::new(user.client_key.as_deref().unwrap()).is_absolute());
        let exec = user.exec.as_ref().unwrap();
        assert!(Path::new(exec.command.as_deref().unwrap()).is_absolute());
        // The number in args is read as the string kubectl would pass.
        assert_eq!(exec.args.as_ref().unwrap()[1], "42");
        let bare = ours.auth_infos[1]
            .auth_info
            .as_ref()
            .unwrap()
            .exec
            .as_ref()
            .unwrap();
        assert_eq!(bare.command.as_deref(), Some("aws"));
    }

    #[test]
    fn documents_merge_and_boms_are_honoured() {
        let two = "current-context: a\n---\ncurrent-context: b\nclusters:\n- name: c\n  cluster:\n    server: https://x\n";
        let merged = from_yaml(two).unwrap();
        assert_eq!(merged.current_context.as_deref(), Some("a"));
        assert_eq!(merged.clusters.len(), 1);
        assert!(from_yaml("").unwrap().clusters.is_empty());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("utf16");
        let mut bytes = vec![0xFF, 0xFE];
        bytes.extend(
            "current-context: w\n"
                .encode_utf16()
                .flat_map(u16::to_le_bytes),
        );
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(
            read_from(&path).unwrap().current_context.as_deref(),
            Some("w")
        );
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let err = from_yaml("clusters: [").unwrap_err();
        assert!(matches!(err, KubeconfigError::Yaml(_)), "{err}");
        let err = from_yaml("clusters: 3").unwrap_err();
        assert!(err.to_string().starts_with("not a kubeconfig"), "{err}");
        let err = read_from(Path::new("/does/not/exist")).unwrap_err();
        assert!(
            err.to_string().contains("failed to read /does/not/exist"),
            "{err}"
        );
    }
}
