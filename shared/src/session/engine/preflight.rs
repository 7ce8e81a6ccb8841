//! Before a session starts: is this context safe to run on, and which
//! registry do we push to?

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Client};

use crate::registry::{is_loopback, registry_address};
use crate::session::EngineError;

/// Context name prefixes of local clusters.
const LOCAL_CONTEXT_PREFIXES: &[&str] = &[
    "kind-",
    "k3d-",
    "minikube",
    "docker-desktop",
    "docker-for-desktop",
    "rancher-desktop",
    "orbstack",
    "colima",
];

/// Refuses a context that does not look local, unless the user named it.
pub fn check_local_context(
    context: Option<&str>,
    server: &str,
    allowed: &[String],
) -> Result<(), EngineError> {
    let name = context.unwrap_or("(in-cluster)");
    if allowed.iter().any(|a| a == name) {
        return Ok(());
    }
    if LOCAL_CONTEXT_PREFIXES.iter().any(|p| name.starts_with(p)) {
        return Ok(());
    }
    if is_loopback(registry_address(server)) {
        return Ok(());
    }
    Err(EngineError::NotLocal {
        context: name.to_string(),
        server: server.to_string(),
    })
}

/// Where the session pushes, and where Flux pulls from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryChoice {
    /// `host[:port][/prefix]` this machine pushes to.
    pub push: String,
    /// `host[:port][/prefix]` Flux pulls from (differs for in-cluster registries).
    pub pull: String,
    /// How it was chosen, for the user.
    pub origin: &'static str,
    /// Flux must use plain HTTP to pull (a local registry not on loopback).
    pub insecure: bool,
}

/// The KEP-1755 ConfigMap's content.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct LocalRegistryHosting {
    host: Option<String>,
    host_from_cluster_network: Option<String>,
    host_from_container_runtime: Option<String>,
}

fn strip_oci(s: &str) -> String {
    s.trim()
        .trim_start_matches("oci://")
        .trim_end_matches('/')
        .to_string()
}

/// `--registry` > `GITOPS_RUN_REGISTRY` > `kube-public/local-registry-hosting` > error.
pub async fn choose_registry(
    client: &Client,
    flag: Option<&str>,
    env: Option<&str>,
    insecure_flag: bool,
) -> Result<RegistryChoice, EngineError> {
    let explicit = |value: &str, origin| {
        let host = strip_oci(value);
        RegistryChoice {
            insecure: insecure_flag && !is_loopback(registry_address(&host)),
            push: host.clone(),
            pull: host,
            origin,
        }
    };
    if let Some(r) = flag.filter(|r| !r.trim().is_empty()) {
        return Ok(explicit(r, "--registry"));
    }
    if let Some(r) = env.filter(|r| !r.trim().is_empty()) {
        return Ok(explicit(r, "GITOPS_RUN_REGISTRY"));
    }
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-public");
    let cm = configmaps.get_opt("local-registry-hosting").await?;
    if let Some(choice) = cm.as_ref().and_then(from_configmap) {
        return Ok(RegistryChoice {
            insecure: insecure_flag || !is_loopback(registry_address(&choice.pull)),
            ..choice
        });
    }
    Err(EngineError::NoRegistry)
}

fn from_configmap(cm: &ConfigMap) -> Option<RegistryChoice> {
    let text = cm.data.as_ref()?.get("localRegistryHosting.v1")?;
    let hosting: LocalRegistryHosting = crate::yaml::from_slice(text.as_bytes()).ok()?;
    let push = strip_oci(hosting.host.as_deref()?);
    let pull = hosting
        .host_from_cluster_network
        .or(hosting.host_from_container_runtime)
        .map(|h| strip_oci(&h))
        .unwrap_or_else(|| push.clone());
    Some(RegistryChoice {
        push,
        pull,
        origin: "kube-public/local-registry-hosting",
        insecure: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn local_contexts_pass_and_remote_ones_need_naming() {
        for (ctx, server) in [
            ("kind-dev", "https://10.1.2.3:6443"),
            ("k3d-x", "https://0.0.0.0:6443"),
            ("minikube", "https://192.168.49.2:8443"),
            ("docker-desktop", "https://kubernetes.docker.internal:6443"),
            ("prod-looking-but-loopback", "https://127.0.0.1:6443"),
            ("anything", "https://localhost:6443"),
        ] {
            assert!(check_local_context(Some(ctx), server, &[]).is_ok(), "{ctx}");
        }
        let err = check_local_context(Some("prod"), "https://prod.example.com", &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("prod") && err.contains("--allow-k8s-context prod"),
            "{err}"
        );
        assert!(
            check_local_context(Some("prod"), "https://prod.example.com", &["prod".into()]).is_ok()
        );
    }

    #[test]
    fn configmap_gives_push_and_pull_addresses() {
        let cm = ConfigMap {
            data: Some(BTreeMap::from([(
                "localRegistryHosting.v1".to_string(),
                "host: \"localhost:5001\"\nhostFromClusterNetwork: \"kind-registry:5000\"\nhelp: x\n".to_string(),
            )])),
            ..Default::default()
        };
        let c = from_configmap(&cm).unwrap();
        assert_eq!(
            (c.push.as_str(), c.pull.as_str()),
            ("localhost:5001", "kind-registry:5000")
        );
        let none = ConfigMap::default();
        assert!(from_configmap(&none).is_none());
    }
}
