//! The cluster's mode in the terms users know: **Run** (live sessions and
//! where), **GitOps** (namespaces whose workloads Flux applies from Git/OCI
//! sources), **Snowflake** (objects in user namespaces that no Flux
//! Kustomization or HelmRelease manages).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DynamicObject, ListParams, ObjectMeta};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;

use super::view::{self, Heartbeat};
use crate::flux::{self, Kustomization};
use crate::labels;

/// Namespaces that belong to the platform, not to users.
pub const SYSTEM_NAMESPACES: &[&str] = &[
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "flux-system",
];

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RunEntry {
    pub session: String,
    pub namespace: String,
    pub user: String,
    pub status: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct GitOpsEntry {
    pub namespace: String,
    /// The Flux objects applying into it (`Kustomization/ns/name`, `HelmRelease/ns/name`).
    pub managed_by: Vec<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SnowflakeEntry {
    pub namespace: String,
    /// Count per kind.
    pub kinds: BTreeMap<String, usize>,
    /// `Kind/name` of each object.
    pub objects: Vec<String>,
}

/// One app Flux deploys (a Kustomization or HelmRelease the suite did not
/// make) and its mode: GitOps (Flux applies it from its source), Run (a
/// session runs in its place: `--take-over`), Snowflake (suspended outside
/// the suite: what it applied stays as it is, applied by no one).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AppEntry {
    /// `Kustomization/flux-system/podinfo`.
    pub app: String,
    pub mode: ClusterMode,
    /// Run: the session in its place (`namespace/name`), who runs it and
    /// whether it is live.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub taken_over_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live: Option<bool>,
}

/// The whole picture.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ClusterStatus {
    /// Each app Flux deploys, and its mode.
    pub apps: Vec<AppEntry>,
    pub run: Vec<RunEntry>,
    pub gitops: Vec<GitOpsEntry>,
    pub snowflake: Vec<SnowflakeEntry>,
}

/// Whether an object was put there by something other than a person: Flux,
/// the suite, a controller (owner references), or Kubernetes itself.
pub fn is_managed_object(kind: &str, meta: &ObjectMeta) -> bool {
    let l = meta.labels.clone().unwrap_or_default();
    let flux = l.contains_key("kustomize.toolkit.fluxcd.io/name")
        || l.contains_key("helm.toolkit.fluxcd.io/name");
    // Helm's release records (Secrets `sh.helm.release.v1.*`, labelled
    // `owner: helm`): written by Helm (helm-controller), not by hand.
    let helm_storage = kind == "Secret" && l.get("owner").map(String::as_str) == Some("helm");
    let owned = meta
        .owner_references
        .as_ref()
        .is_some_and(|o| !o.is_empty());
    let name = meta.name.as_deref().unwrap_or_default();
    let builtin = matches!(
        (kind, name),
        ("ConfigMap", "kube-root-ca.crt") | ("ServiceAccount", "default")
    ) || (kind == "Service"
        && name == "kubernetes"
        && meta.namespace.as_deref() == Some("default"));
    flux || helm_storage || owned || builtin || labels::is_managed(Some(&l))
}

/// Lists every object of kind `K` by its metadata alone (the API server's
/// `PartialObjectMetadata`: neither a ConfigMap's data nor a Secret's value
/// crosses the wire) and files those no GitOps tool manages by namespace.
async fn scan<K>(
    client: &Client,
    out: &mut BTreeMap<String, SnowflakeEntry>,
    skip: &BTreeSet<String>,
) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let kind = K::kind(&()).to_string();
    let api: Api<K> = Api::all(client.clone());
    let mut params = ListParams::default();
    if kind == "Secret" {
        // Tokens are minted for service accounts, not applied by hand.
        params = params.fields("type!=kubernetes.io/service-account-token");
    }
    for obj in api.list_metadata(&params).await? {
        let ns = obj.namespace().unwrap_or_default();
        if ns.is_empty() || skip.contains(&ns) || is_managed_object(&kind, obj.meta()) {
            continue;
        }
        let entry = out.entry(ns.clone()).or_insert_with(|| SnowflakeEntry {
            namespace: ns,
            kinds: BTreeMap::new(),
            objects: Vec::new(),
        });
        *entry.kinds.entry(kind.clone()).or_insert(0) += 1;
        entry.objects.push(format!("{kind}/{}", obj.name_any()));
    }
    Ok(())
}

/// The cluster's mode, in the terms users know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ClusterMode {
    /// A live session is syncing.
    Run,
    /// Flux applies from Git/OCI sources and no session runs.
    GitOps,
    /// Neither: only objects applied by hand.
    Snowflake,
}

impl ClusterStatus {
    /// Run when a session is live, else GitOps when Flux applies anything,
    /// else Snowflake.
    pub fn mode(&self) -> ClusterMode {
        mode_of(self.run.len(), self.gitops.len())
    }

    /// The text `kubectl gitops-sessions status` prints.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(out, "Cluster mode: {:?}", self.mode());
        let _ = writeln!(out, "\nRun: {} live session(s)", self.run.len());
        for r in &self.run {
            let _ = writeln!(
                out,
                "  {} in {} ({}, {})",
                r.session, r.namespace, r.user, r.status
            );
        }
        let _ = writeln!(
            out,
            "\nGitOps: {} namespace(s) applied by Flux",
            self.gitops.len()
        );
        for g in &self.gitops {
            let _ = writeln!(out, "  {} (by {})", g.namespace, g.managed_by.join(", "));
        }
        let _ = writeln!(out, "\nApps: {} deployed by Flux", self.apps.len());
        for a in &self.apps {
            let why = match (&a.taken_over_by, a.mode) {
                (Some(by), _) => format!(
                    " (taken over by session {by} of {}, {})",
                    a.owner.as_deref().unwrap_or("someone"),
                    if a.live == Some(true) {
                        "live".to_string()
                    } else {
                        format!(
                            "NOT live: `kubectl gitops-sessions delete {}` hands it back",
                            by.split_once('/')
                                .map(|(ns, n)| format!("{n} -n {ns}"))
                                .unwrap_or_else(|| by.clone())
                        )
                    }
                ),
                (None, ClusterMode::Snowflake) => {
                    " (suspended outside kubectl-gitops: Flux does not apply it)".into()
                }
                _ => String::new(),
            };
            let _ = writeln!(out, "  {} {}{why}", a.app, a.mode.as_str());
        }
        let total: usize = self.snowflake.iter().map(|s| s.objects.len()).sum();
        let _ = writeln!(
            out,
            "\nSnowflake: {total} object(s) applied by hand, in {} namespace(s)",
            self.snowflake.len()
        );
        for s in &self.snowflake {
            let kinds = s
                .kinds
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ");
            let _ = writeln!(out, "  {}: {kinds}", s.namespace);
        }
        out
    }
}

/// Where Flux applies from sources other than sessions: namespace → the
/// Flux objects applying into it (`Kustomization/ns/name`,
/// `HelmRelease/ns/name`). `releases`: (namespace, name, target namespace).
pub fn gitops_namespaces(
    kustomizations: &[Kustomization],
    releases: &[(String, String, String)],
) -> BTreeMap<String, BTreeSet<String>> {
    let mut gitops: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for ks in kustomizations {
        let session = ks
            .labels()
            .get(labels::COMPONENT)
            .is_some_and(|c| c == "session");
        if session {
            continue;
        }
        let me = format!(
            "Kustomization/{}/{}",
            ks.namespace().unwrap_or_default(),
            ks.name_any()
        );
        let mut namespaces: BTreeSet<String> = ks
            .status
            .as_ref()
            .and_then(|s| s.inventory.as_ref())
            .map(|i| i.entries.as_slice())
            .unwrap_or_default()
            .iter()
            .filter_map(|e| e.id.split('_').next().map(str::to_string))
            .filter(|ns| !ns.is_empty())
            .collect();
        if let Some(t) = &ks.spec.target_namespace {
            namespaces.insert(t.clone());
        }
        for ns in namespaces {
            gitops.entry(ns).or_default().insert(me.clone());
        }
    }
    for (ns, name, target) in releases {
        gitops
            .entry(target.clone())
            .or_default()
            .insert(format!("HelmRelease/{ns}/{name}"));
    }
    gitops
}

/// Each app's mode (pure): `kustomizations` and `releases` (a
/// HelmRelease's metadata and whether it is suspended) as listed, `live`:
/// the sessions (`namespace/name`) whose heartbeat is live. The suite's
/// own appliers are sessions, not apps.
pub fn app_modes(
    kustomizations: &[Kustomization],
    releases: &[(ObjectMeta, bool)],
    live: &BTreeSet<String>,
) -> Vec<AppEntry> {
    use crate::takeover::{AppKind, TakenOver};
    let apps = kustomizations
        .iter()
        .map(|ks| {
            (
                AppKind::Kustomization,
                &ks.metadata,
                ks.spec.suspend == Some(true),
            )
        })
        .chain(releases.iter().map(|(m, s)| (AppKind::HelmRelease, m, *s)));
    let mut out: Vec<AppEntry> = apps
        .filter(|(_, meta, _)| !labels::is_managed(meta.labels.as_ref()))
        .map(|(kind, meta, suspended)| {
            let app = format!(
                "{}/{}/{}",
                kind.as_str(),
                meta.namespace.as_deref().unwrap_or_default(),
                meta.name.as_deref().unwrap_or_default()
            );
            match TakenOver::of(kind, meta) {
                Some(t) => AppEntry {
                    app,
                    mode: ClusterMode::Run,
                    live: Some(live.contains(&t.holder)),
                    taken_over_by: Some(t.holder),
                    owner: Some(t.owner).filter(|o| !o.is_empty()),
                },
                None => AppEntry {
                    app,
                    mode: if suspended {
                        ClusterMode::Snowflake
                    } else {
                        ClusterMode::GitOps
                    },
                    taken_over_by: None,
                    owner: None,
                    live: None,
                },
            }
        })
        .collect();
    out.sort_by(|a, b| a.app.cmp(&b.app));
    out
}

/// The mode from its two deciding facts (see [`ClusterStatus::mode`]).
pub fn mode_of(live_sessions: usize, gitops_namespaces: usize) -> ClusterMode {
    if live_sessions > 0 {
        ClusterMode::Run
    } else if gitops_namespaces > 0 {
        ClusterMode::GitOps
    } else {
        ClusterMode::Snowflake
    }
}

impl ClusterMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ClusterMode::Run => "Run",
            ClusterMode::GitOps => "GitOps",
            ClusterMode::Snowflake => "Snowflake",
        }
    }
}

/// Reads the cluster and classifies it.
pub async fn cluster_status(client: &Client) -> Result<ClusterStatus, kube::Error> {
    let sessions = view::list(client, &view::Filter::default()).await?;
    let live: BTreeSet<String> = sessions
        .iter()
        .filter(|s| s.heartbeat == Heartbeat::Live)
        .map(|s| format!("{}/{}", s.namespace, s.name))
        .collect();
    let run = sessions
        .iter()
        .filter(|s| s.heartbeat == Heartbeat::Live)
        .map(|s| RunEntry {
            session: s.name.clone(),
            namespace: s.namespace.clone(),
            user: format!("{}@{}", s.user, s.host),
            status: s.status.summary(),
        })
        .collect();

    let kss: Api<Kustomization> = Api::all(client.clone());
    let kss = kss.list(&ListParams::default()).await?.items;
    let mut releases = Vec::new();
    let mut release_apps = Vec::new();
    if flux::serves(client, "helm.toolkit.fluxcd.io/v2", "HelmRelease").await? {
        let hrs: Api<DynamicObject> = Api::all_with(client.clone(), &flux::helm_release_resource());
        for hr in hrs.list(&ListParams::default()).await? {
            let ns = hr.namespace().unwrap_or_default();
            let target = hr.data["spec"]["targetNamespace"]
                .as_str()
                .map(str::to_string)
                .unwrap_or(ns.clone());
            let suspended = hr.data["spec"]["suspend"].as_bool() == Some(true);
            release_apps.push((hr.metadata.clone(), suspended));
            releases.push((ns, hr.name_any(), target));
        }
    }
    let gitops = gitops_namespaces(&kss, &releases);
    let apps = app_modes(&kss, &release_apps, &live);

    let skip: BTreeSet<String> = SYSTEM_NAMESPACES.iter().map(|s| s.to_string()).collect();
    let mut snow = BTreeMap::new();
    scan::<ConfigMap>(client, &mut snow, &skip).await?;
    scan::<Secret>(client, &mut snow, &skip).await?;
    scan::<Service>(client, &mut snow, &skip).await?;
    scan::<ServiceAccount>(client, &mut snow, &skip).await?;
    scan::<Deployment>(client, &mut snow, &skip).await?;
    scan::<StatefulSet>(client, &mut snow, &skip).await?;
    scan::<DaemonSet>(client, &mut snow, &skip).await?;
    scan::<Job>(client, &mut snow, &skip).await?;
    scan::<CronJob>(client, &mut snow, &skip).await?;
    scan::<Ingress>(client, &mut snow, &skip).await?;
    scan::<NetworkPolicy>(client, &mut snow, &skip).await?;
    scan::<Role>(client, &mut snow, &skip).await?;
    scan::<RoleBinding>(client, &mut snow, &skip).await?;
    scan::<PersistentVolumeClaim>(client, &mut snow, &skip).await?;
    let mut snowflake: Vec<SnowflakeEntry> = snow.into_values().collect();
    for s in &mut snowflake {
        s.objects.sort();
    }

    Ok(ClusterStatus {
        apps,
        run,
        gitops: gitops
            .into_iter()
            .map(|(namespace, by)| GitOpsEntry {
                namespace,
                managed_by: by.into_iter().collect(),
            })
            .collect(),
        snowflake,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn meta(ns: &str, name: &str, labels: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn the_mode_and_its_text() {
        let mut st = ClusterStatus {
            apps: vec![],
            run: vec![],
            gitops: vec![],
            snowflake: vec![SnowflakeEntry {
                namespace: "apps".into(),
                kinds: BTreeMap::from([("ConfigMap".into(), 2)]),
                objects: vec!["ConfigMap/a".into(), "ConfigMap/b".into()],
            }],
        };
        assert_eq!(st.mode(), ClusterMode::Snowflake);
        st.gitops.push(GitOpsEntry {
            namespace: "prod".into(),
            managed_by: vec!["Kustomization/flux-system/apps".into()],
        });
        assert_eq!(st.mode(), ClusterMode::GitOps);
        st.run.push(RunEntry {
            session: "run-app-abc123".into(),
            namespace: "run-app-abc123".into(),
            user: "ann@laptop".into(),
            status: "Ready".into(),
        });
        assert_eq!(st.mode(), ClusterMode::Run);
        insta::assert_snapshot!(st.render());
    }

    fn app(ns: &str, name: &str, suspend: bool, annotations: &[(&str, &str)]) -> Kustomization {
        let mut ks: Kustomization = serde_json::from_value(serde_json::json!({
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
            "metadata": {"namespace": ns, "name": name},
            "spec": {"interval": "1m", "prune": true, "suspend": suspend,
                     "sourceRef": {"kind": "GitRepository", "name": "flux-system"}},
        }))
        .unwrap();
        ks.metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        ks
    }

    #[test]
    fn each_app_is_in_gitops_run_or_snowflake_mode() {
        use crate::takeover::keys;
        let held = |by: &'static str| {
            [
                (keys::TAKEN_OVER_BY, by),
                (keys::TAKEN_OVER_OWNER, "ann@laptop"),
            ]
        };
        let kss = vec![
            app(
                "flux-system",
                "podinfo",
                true,
                &held("flux-system/run-podinfo-1a2b3c"),
            ),
            app(
                "flux-system",
                "redis",
                true,
                &held("flux-system/run-redis-4d5e6f"),
            ),
            app("flux-system", "web", false, &[]),
            app("flux-system", "frozen", true, &[]),
            {
                let mut own = app("flux-system", "run-podinfo-1a2b3c", false, &[]);
                own.metadata.labels = Some(labels::managed("session"));
                own
            },
        ];
        let live = BTreeSet::from(["flux-system/run-podinfo-1a2b3c".to_string()]);
        let apps = app_modes(
            &kss,
            &[(
                ObjectMeta {
                    namespace: Some("flux-system".into()),
                    name: Some("hello".into()),
                    ..Default::default()
                },
                false,
            )],
            &live,
        );
        let modes: Vec<(&str, &str, Option<bool>)> = apps
            .iter()
            .map(|a| (a.app.as_str(), a.mode.as_str(), a.live))
            .collect();
        assert_eq!(
            modes,
            [
                ("HelmRelease/flux-system/hello", "GitOps", None),
                ("Kustomization/flux-system/frozen", "Snowflake", None),
                ("Kustomization/flux-system/podinfo", "Run", Some(true)),
                ("Kustomization/flux-system/redis", "Run", Some(false)),
                ("Kustomization/flux-system/web", "GitOps", None),
            ]
        );
        let st = ClusterStatus {
            apps,
            run: vec![],
            gitops: vec![],
            snowflake: vec![],
        };
        let text = st.render();
        assert!(text.contains("Kustomization/flux-system/podinfo Run (taken over by session flux-system/run-podinfo-1a2b3c of ann@laptop, live)"), "{text}");
        assert!(
            text.contains(
                "`kubectl gitops-sessions delete run-redis-4d5e6f -n flux-system` hands it back"
            ),
            "{text}"
        );
        assert!(
            text.contains("Kustomization/flux-system/frozen Snowflake (suspended outside"),
            "{text}"
        );
    }

    #[test]
    fn helms_release_records_are_not_snowflakes() {
        assert!(is_managed_object(
            "Secret",
            &meta(
                "apps",
                "sh.helm.release.v1.hello.v1",
                &[("owner", "helm"), ("name", "hello")]
            )
        ));
        assert!(!is_managed_object(
            "ConfigMap",
            &meta("apps", "settings", &[("owner", "helm")])
        ));
    }

    #[test]
    fn hand_applied_objects_are_snowflakes_and_the_rest_is_not() {
        assert!(!is_managed_object(
            "ConfigMap",
            &meta("apps", "by-hand", &[])
        ));
        assert!(is_managed_object(
            "ConfigMap",
            &meta("apps", "x", &[("kustomize.toolkit.fluxcd.io/name", "apps")])
        ));
        assert!(is_managed_object(
            "ConfigMap",
            &meta("apps", "x", &[("helm.toolkit.fluxcd.io/name", "r")])
        ));
        assert!(is_managed_object(
            "Lease",
            &meta("apps", "x", &[(labels::MANAGED_BY, labels::MANAGER)])
        ));
        assert!(is_managed_object(
            "ConfigMap",
            &meta("apps", "kube-root-ca.crt", &[])
        ));
        assert!(is_managed_object(
            "Service",
            &meta("default", "kubernetes", &[])
        ));
        assert!(!is_managed_object(
            "Service",
            &meta("apps", "kubernetes", &[])
        ));
        let mut owned = meta("apps", "rs", &[]);
        owned.owner_references = Some(vec![OwnerReference {
            name: "d".into(),
            ..Default::default()
        }]);
        assert!(is_managed_object("Job", &owned));
    }
}
