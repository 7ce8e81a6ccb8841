//! Sandboxes: isolated places for a session's payload, removed completely
//! afterwards.
//!
//! A sandbox is a namespace labelled as one (its name is the sandbox's
//! name). What it isolates depends on its kind:
//! - `namespace`: a ServiceAccount bound to the built-in `admin` ClusterRole
//!   in that namespace only; sessions' Kustomizations impersonate it with
//!   `targetNamespace` set, and the [`boundary`] policy keeps it from
//!   reaching further through Flux's own kinds, so a payload cannot touch
//!   anything else. Pod Security `baseline` is enforced (no privileged or
//!   host-path pods). Optional ResourceQuota/LimitRange; a NetworkPolicy
//!   denying ingress from other namespaces.
//! - `kubeconfig`: bring your own cluster. The kubeconfig is stored in a
//!   Secret and sessions apply into that cluster (`spec.kubeConfig`).
//! - `vcluster`: the vcluster Helm chart installed through Flux; sessions
//!   apply into the virtual cluster through its kubeconfig Secret.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    LimitRange, LimitRangeItem, LimitRangeSpec, Namespace, ResourceQuota, ResourceQuotaSpec,
    Secret, ServiceAccount,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicySpec,
};
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, ObjectMeta, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;

use crate::flux::{self, Kustomization};
use crate::labels;

pub mod boundary;

/// The ServiceAccount sessions impersonate in a namespace sandbox.
pub const SERVICE_ACCOUNT: &str = "gitops-sandbox";
/// The Secret holding a `kubeconfig` sandbox's kubeconfig, and its key.
pub const KUBECONFIG_SECRET: &str = "gitops-sandbox-kubeconfig";
pub const KUBECONFIG_KEY: &str = "value";
/// The vcluster chart repository (loft.sh's).
pub const VCLUSTER_CHART_REPO: &str = "https://charts.loft.sh";

/// Where a vcluster sandbox's chart comes from, and its values.
#[derive(Debug, Clone, PartialEq)]
pub struct VclusterChart {
    /// A Helm repository: `https://…` (with an `index.yaml`) or `oci://…`.
    pub repo: String,
    /// A chart version or semver range (e.g. `0.21.x`); `None`: the newest.
    pub version: Option<String>,
    /// Chart values (the sandbox's own `exportKubeConfig.server` wins).
    pub values: serde_json::Value,
}

impl Default for VclusterChart {
    fn default() -> Self {
        VclusterChart {
            repo: VCLUSTER_CHART_REPO.into(),
            version: None,
            values: serde_json::Value::Object(Default::default()),
        }
    }
}
/// Annotation: the Secret (`name/key`) sessions use to reach the target cluster.
pub const KUBECONFIG_SECRET_ANNOTATION: &str = "gitops.kubectl.dev/kubeconfig-secret";

/// Why a sandbox operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "invalid sandbox name {0:?}: use at most 63 lowercase letters, digits and '-', \
         starting and ending with a letter or digit (DNS-1123 label)"
    )]
    InvalidName(String),
    #[error("sandbox {0} already exists")]
    AlreadyExists(String),
    #[error("namespace {0} already exists and is not a sandbox; choose another name")]
    NamespaceTaken(String),
    #[error("namespace {0} is not a sandbox (it lacks the suite's labels); refusing to delete it")]
    NotASandbox(String),
    #[error(
        "vcluster sandboxes need Flux's helm-controller, but this cluster does not serve \
         HelmRelease (helm.toolkit.fluxcd.io/v2); install it with `flux install` (it is one of \
         the default components) or choose --isolation namespace"
    )]
    NoHelmController,
    #[error("--target-kubeconfig is required with --isolation kubeconfig")]
    KubeconfigMissing,
    #[error("--target-kubeconfig {path}: {reason}")]
    BadKubeconfig { path: String, reason: String },
    #[error("invalid --quota {0:?}: use cpu=…,memory=…,pods=… (e.g. cpu=2,memory=4Gi,pods=20)")]
    BadQuota(String),
    #[error("creating sandbox {name} failed ({source}); what was created has been removed")]
    RolledBack {
        name: String,
        #[source]
        source: Box<SandboxError>,
    },
    #[error("namespace {0} disappeared while the sandbox was being created")]
    Vanished(String),
    #[error("--ttl {0} is out of range: use a positive duration such as 8h or 30d")]
    BadTtl(String),
    #[error("sandbox {name}: {source}; {hint}")]
    Wait {
        name: String,
        #[source]
        source: crate::kubeapi::WaitError,
        hint: String,
    },
    #[error("{}", boundary_message(.0))]
    Boundary(#[from] boundary::BoundaryError),
    #[error("{0}")]
    Kube(#[from] kube::Error),
}

fn boundary_message(e: &boundary::BoundaryError) -> String {
    match e.advice() {
        "" => e.to_string(),
        advice => format!("{e}; {advice}"),
    }
}

/// Annotation on a namespace sandbox created with `--unconfined`: the
/// boundary was not in force, and the user chose to go on.
pub const UNCONFINED_ANNOTATION: &str = "gitops.kubectl.dev/unconfined";
/// The Pod Security level a namespace sandbox enforces.
pub const POD_SECURITY_ENFORCE: &str = "pod-security.kubernetes.io/enforce";

/// What a sandbox isolates with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    Namespace,
    Vcluster,
    Kubeconfig,
}

impl Isolation {
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Namespace => "namespace",
            Isolation::Vcluster => "vcluster",
            Isolation::Kubeconfig => "kubeconfig",
        }
    }

    fn parse(s: &str) -> Option<Isolation> {
        [
            Isolation::Namespace,
            Isolation::Vcluster,
            Isolation::Kubeconfig,
        ]
        .into_iter()
        .find(|i| i.as_str() == s)
    }
}

/// Resource limits of a namespace sandbox (`cpu=2,memory=4Gi,pods=20`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Quota {
    pub hard: BTreeMap<String, String>,
}

impl std::str::FromStr for Quota {
    type Err = SandboxError;

    fn from_str(s: &str) -> Result<Quota, SandboxError> {
        let bad = || SandboxError::BadQuota(s.to_string());
        let mut hard = BTreeMap::new();
        for part in s.split(',').filter(|p| !p.trim().is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(bad)?;
            let (k, v) = (k.trim(), v.trim());
            let valid_value = !v.is_empty()
                && v.chars().next().is_some_and(|c| c.is_ascii_digit())
                && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '.');
            if !matches!(k, "cpu" | "memory" | "pods") || !valid_value {
                return Err(bad());
            }
            hard.insert(k.to_string(), v.to_string());
        }
        if hard.is_empty() {
            return Err(bad());
        }
        Ok(Quota { hard })
    }
}

/// How to create a sandbox.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    pub isolation: Isolation,
    pub ttl: Option<Duration>,
    pub quota: Option<Quota>,
    /// The kubeconfig (file contents) of a `kubeconfig` sandbox.
    pub target_kubeconfig: Option<(String, Vec<u8>)>,
    /// Wait until the sandbox is ready (vcluster: the release is installed).
    pub wait: bool,
    pub timeout: Duration,
    /// `user@host`; recorded as the owner.
    pub owner: String,
    /// Extra labels (e.g. the session that made an ephemeral sandbox).
    pub labels: BTreeMap<String, String>,
    /// `vcluster` sandboxes: the chart.
    pub vcluster: VclusterChart,
    /// Create a namespace sandbox even where the [`boundary`] is not in
    /// force (it is then no security boundary, and says so).
    pub unconfined: bool,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions {
            isolation: Isolation::Namespace,
            ttl: None,
            quota: None,
            target_kubeconfig: None,
            wait: false,
            timeout: Duration::from_secs(300),
            owner: labels::owner(),
            labels: BTreeMap::new(),
            vcluster: VclusterChart::default(),
            unconfined: false,
        }
    }
}

/// A sandbox, as read back from the cluster.
#[derive(Debug, Clone, Serialize)]
pub struct Sandbox {
    pub name: String,
    pub isolation: Isolation,
    pub namespace: String,
    pub owner: Option<String>,
    pub created: Option<DateTime<Utc>>,
    pub expires: Option<DateTime<Utc>>,
    pub ready: bool,
    /// Set while the namespace is being deleted.
    pub terminating: bool,
    /// Sessions (their Leases) using it.
    pub sessions: usize,
    pub quota: Option<String>,
    /// How sessions reach the place they apply into.
    pub target: Target,
    /// A namespace sandbox created with `--unconfined`: no security boundary.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unconfined: bool,
}

/// Where and as whom a session in this sandbox applies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Target {
    /// The namespace holding the session's Flux objects.
    pub namespace: String,
    /// Kustomization `serviceAccountName` (namespace sandboxes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// Kustomization `kubeConfig.secretRef` (name, key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubeconfig_secret: Option<(String, String)>,
    /// Kustomization `targetNamespace`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_namespace: Option<String>,
    /// A vcluster sandbox: the virtual cluster (its name), whose pods run
    /// in `namespace` of this cluster as copies vcluster makes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vcluster: Option<String>,
}

/// The fields a Flux applier (Kustomization or HelmRelease) takes from a
/// [`Target`]: the one place a target is turned into Flux fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FluxTarget {
    pub service_account_name: Option<String>,
    pub target_namespace: Option<String>,
    pub kube_config: Option<flux::KubeConfigReference>,
}

impl Target {
    /// A namespace sandbox's target (also before it exists).
    pub fn namespace_sandbox(name: &str) -> Target {
        Target {
            namespace: name.to_string(),
            service_account: Some(SERVICE_ACCOUNT.into()),
            kubeconfig_secret: None,
            target_namespace: Some(name.to_string()),
            vcluster: None,
        }
    }

    /// Impersonation and target namespace for a namespace sandbox, the
    /// kubeconfig Secret otherwise.
    pub fn flux_fields(&self) -> FluxTarget {
        FluxTarget {
            service_account_name: self.service_account.clone(),
            target_namespace: self.target_namespace.clone(),
            kube_config: self.kubeconfig_secret.as_ref().map(|(name, key)| {
                flux::KubeConfigReference {
                    secret_ref: flux::SecretKeyReference {
                        name: name.clone(),
                        key: Some(key.clone()),
                    },
                }
            }),
        }
    }

    /// Points a Kustomization at this target.
    pub fn configure(&self, spec: &mut flux::KustomizationSpec) {
        let f = self.flux_fields();
        spec.service_account_name = f.service_account_name;
        spec.target_namespace = f.target_namespace;
        spec.kube_config = f.kube_config;
    }
}

impl Sandbox {
    /// Whether its TTL has passed at `now`.
    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        self.expires.is_some_and(|e| e <= now)
    }
}

/// Checks a name is a DNS-1123 label.
pub fn validate_name(name: &str) -> Result<(), SandboxError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(SandboxError::InvalidName(name.to_string()))
    }
}

fn meta(name: &str, namespace: Option<&str>, sandbox: &str, opts: &CreateOptions) -> ObjectMeta {
    let mut l = labels::managed("sandbox");
    l.insert(labels::SANDBOX.into(), sandbox.into());
    l.insert(labels::ISOLATION.into(), opts.isolation.as_str().into());
    l.extend(opts.labels.clone());
    let mut annotations = BTreeMap::from([
        (labels::OWNER.to_string(), opts.owner.clone()),
        (
            labels::CREATED_BY.to_string(),
            format!("kubectl-gitops {}", crate::VERSION),
        ),
    ]);
    if let Some(expires) = opts
        .ttl
        .and_then(|ttl| crate::duration::checked_after(Utc::now(), ttl))
    {
        annotations.insert(
            labels::EXPIRES_AT.to_string(),
            expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        );
    }
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: namespace.map(str::to_string),
        labels: Some(l),
        annotations: Some(annotations),
        ..Default::default()
    }
}

/// The objects of a sandbox, before any is created (pure, for review and tests).
#[derive(Debug, Clone)]
pub struct Plan {
    pub namespace: Namespace,
    pub service_account: Option<ServiceAccount>,
    pub role_binding: Option<RoleBinding>,
    pub quota: Option<ResourceQuota>,
    pub limit_range: Option<LimitRange>,
    pub network_policy: Option<NetworkPolicy>,
    pub kubeconfig_secret: Option<Secret>,
    pub helm_repository: Option<DynamicObject>,
    pub helm_release: Option<DynamicObject>,
}

/// Plans the objects of sandbox `name`.
pub fn plan(name: &str, opts: &CreateOptions) -> Result<Plan, SandboxError> {
    validate_name(name)?;
    if let Some(ttl) = opts.ttl
        && (ttl.is_zero() || crate::duration::checked_after(Utc::now(), ttl).is_none())
    {
        return Err(SandboxError::BadTtl(crate::duration::human(ttl)));
    }
    let mut ns_meta = meta(name, None, name, opts);
    let mut plan = Plan {
        namespace: Namespace::default(),
        service_account: None,
        role_binding: None,
        quota: None,
        limit_range: None,
        network_policy: None,
        kubeconfig_secret: None,
        helm_repository: None,
        helm_release: None,
    };
    match opts.isolation {
        Isolation::Namespace => {
            // No privileged, host-namespace or host-path pods: those would
            // leave the namespace through the node.
            ns_meta
                .labels
                .get_or_insert_with(BTreeMap::new)
                .insert(POD_SECURITY_ENFORCE.into(), "baseline".into());
            plan.service_account = Some(ServiceAccount {
                metadata: meta(SERVICE_ACCOUNT, Some(name), name, opts),
                ..Default::default()
            });
            plan.role_binding = Some(RoleBinding {
                metadata: meta(&format!("{SERVICE_ACCOUNT}-admin"), Some(name), name, opts),
                role_ref: RoleRef {
                    api_group: Some("rbac.authorization.k8s.io".into()),
                    kind: "ClusterRole".into(),
                    name: "admin".into(),
                },
                subjects: Some(vec![Subject {
                    kind: "ServiceAccount".into(),
                    name: SERVICE_ACCOUNT.into(),
                    namespace: Some(name.into()),
                    ..Default::default()
                }]),
            });
            plan.network_policy = Some(NetworkPolicy {
                metadata: meta(
                    &format!("{SERVICE_ACCOUNT}-deny-other-namespaces"),
                    Some(name),
                    name,
                    opts,
                ),
                spec: Some(NetworkPolicySpec {
                    pod_selector: Some(LabelSelector::default()),
                    policy_types: Some(vec!["Ingress".into()]),
                    // Only pods of this namespace may connect.
                    ingress: Some(vec![NetworkPolicyIngressRule {
                        from: Some(vec![NetworkPolicyPeer {
                            pod_selector: Some(LabelSelector::default()),
                            ..Default::default()
                        }]),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
            });
            if let Some(quota) = &opts.quota {
                plan.quota = Some(ResourceQuota {
                    metadata: meta(SERVICE_ACCOUNT, Some(name), name, opts),
                    spec: Some(ResourceQuotaSpec {
                        hard: Some(
                            quota
                                .hard
                                .iter()
                                .map(|(k, v)| (k.clone(), Quantity(v.clone())))
                                .collect(),
                        ),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
                // With a cpu/memory quota, pods must declare requests; give them defaults.
                if quota.hard.contains_key("cpu") || quota.hard.contains_key("memory") {
                    let q = |pairs: &[(&str, &str)]| {
                        Some(
                            pairs
                                .iter()
                                .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                                .collect(),
                        )
                    };
                    plan.limit_range = Some(LimitRange {
                        metadata: meta(SERVICE_ACCOUNT, Some(name), name, opts),
                        spec: Some(LimitRangeSpec {
                            limits: vec![LimitRangeItem {
                                type_: "Container".into(),
                                default_request: q(&[("cpu", "50m"), ("memory", "64Mi")]),
                                default: q(&[("cpu", "500m"), ("memory", "512Mi")]),
                                ..Default::default()
                            }],
                        }),
                    });
                }
                ns_meta
                    .annotations
                    .get_or_insert_with(BTreeMap::new)
                    .insert(
                        QUOTA_ANNOTATION.into(),
                        quota
                            .hard
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(","),
                    );
            }
        }
        Isolation::Kubeconfig => {
            let (path, content) = opts
                .target_kubeconfig
                .as_ref()
                .ok_or(SandboxError::KubeconfigMissing)?;
            validate_kubeconfig(path, content)?;
            let mut secret_meta = meta(KUBECONFIG_SECRET, Some(name), name, opts);
            secret_meta.annotations.get_or_insert_with(BTreeMap::new);
            plan.kubeconfig_secret = Some(Secret {
                metadata: secret_meta,
                type_: Some("Opaque".into()),
                data: Some(BTreeMap::from([(
                    KUBECONFIG_KEY.to_string(),
                    k8s_openapi::ByteString(content.clone()),
                )])),
                ..Default::default()
            });
            ns_meta
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(
                    KUBECONFIG_SECRET_ANNOTATION.into(),
                    format!("{KUBECONFIG_SECRET}/{KUBECONFIG_KEY}"),
                );
        }
        Isolation::Vcluster => {
            let (repo, release) = vcluster_objects(name, opts);
            plan.helm_repository = Some(repo);
            plan.helm_release = Some(release);
            ns_meta
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(
                    KUBECONFIG_SECRET_ANNOTATION.into(),
                    format!("vc-{name}/config"),
                );
        }
    }
    plan.namespace = Namespace {
        metadata: ns_meta,
        ..Default::default()
    };
    Ok(plan)
}

/// Annotation on the namespace: the quota it was created with.
pub const QUOTA_ANNOTATION: &str = "gitops.kubectl.dev/quota";

fn validate_kubeconfig(path: &str, content: &[u8]) -> Result<(), SandboxError> {
    let bad = |reason: String| SandboxError::BadKubeconfig {
        path: path.to_string(),
        reason,
    };
    let text = std::str::from_utf8(content).map_err(|_| bad("not UTF-8 text".into()))?;
    let config =
        crate::kubeconfig::from_yaml(text).map_err(|e| bad(format!("not a kubeconfig ({e})")))?;
    let Some(current) = config.current_context.as_deref().filter(|c| !c.is_empty()) else {
        return Err(bad(
            "it has no current-context; set one with `kubectl config use-context`".into(),
        ));
    };
    if !config.contexts.iter().any(|c| c.name == current) {
        return Err(bad(format!(
            "its current-context {current:?} is not defined in it"
        )));
    }
    Ok(())
}

/// The HelmRepository and HelmRelease that install vcluster `name` in its namespace.
pub fn vcluster_objects(name: &str, opts: &CreateOptions) -> (DynamicObject, DynamicObject) {
    let chart = &opts.vcluster;
    let repo_meta = meta("loft", Some(name), name, opts);
    let mut repo = DynamicObject::new("loft", &flux::helm_repository_resource()).within(name);
    repo.metadata = repo_meta;
    let mut repo_spec = serde_json::json!({"url": chart.repo, "interval": "24h"});
    if chart.repo.starts_with("oci://") {
        repo_spec["type"] = "oci".into();
    }
    repo.data = serde_json::json!({ "spec": repo_spec });
    let mut values = chart.values.clone();
    if !values.is_object() {
        values = serde_json::Value::Object(Default::default());
    }
    // Sessions' Kustomizations reach the virtual cluster through the
    // in-cluster service, not the default localhost:8443.
    crate::helm::merge_values(
        &mut values,
        serde_json::json!({"exportKubeConfig": {"server": format!("https://{name}.{name}:443")}}),
    );
    let mut chart_spec = serde_json::json!({
        "chart": "vcluster",
        "sourceRef": {"kind": "HelmRepository", "name": "loft"},
        "interval": "24h"
    });
    if let Some(v) = &chart.version {
        chart_spec["version"] = v.clone().into();
    }
    let mut release = DynamicObject::new(name, &flux::helm_release_resource()).within(name);
    release.metadata = meta(name, Some(name), name, opts);
    release.data = serde_json::json!({
        "spec": {
            "interval": "10m",
            "releaseName": name,
            "chart": {"spec": chart_spec},
            "install": {"remediation": {"retries": 3}},
            "values": values
        }
    });
    (repo, release)
}

async fn create_obj<K>(api: &Api<K>, obj: &K) -> Result<(), kube::Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + Serialize + std::fmt::Debug,
{
    api.create(&PostParams::default(), obj).await.map(|_| ())
}

/// The chart value vcluster takes the virtual cluster's Service range from.
pub const VCLUSTER_SERVICE_CIDR: &str = "serviceCIDR";

/// Sets the virtual cluster's Service range to the host's `cidrs` unless
/// the user's values set one. vcluster mirrors each virtual Service's
/// ClusterIP from its copy on the host, so the ranges must match; vcluster
/// 0.21 finds the host's range from the error an impossible ClusterIP
/// draws, whose wording changed with Kubernetes 1.33's ServiceCIDR
/// allocator: it then falls back to 10.96.0.0/12, and on a host with
/// another range no pod is ever synced ("waiting for DNS service IP").
pub fn default_service_cidr(values: &mut serde_json::Value, cidrs: &str) {
    if !values.is_object() {
        *values = serde_json::Value::Object(Default::default());
    }
    if let Some(map) = values.as_object_mut() {
        map.entry(VCLUSTER_SERVICE_CIDR)
            .or_insert_with(|| cidrs.to_string().into());
    }
}

/// The host's Service ranges (`cidr[,cidr]`), from its default ServiceCIDR
/// object (`networking.k8s.io/v1`, Kubernetes 1.33+); `None` where it is
/// not served or may not be read (vcluster then detects the range itself,
/// which works before 1.33).
async fn host_service_cidrs(client: &Client) -> Option<String> {
    let resource = kube::api::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk("networking.k8s.io", "v1", "ServiceCIDR"),
        "servicecidrs",
    );
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    let cidr = api.get_opt("kubernetes").await.ok()??;
    let cidrs: Vec<&str> = cidr.data["spec"]["cidrs"]
        .as_array()?
        .iter()
        .filter_map(|c| c.as_str())
        .collect();
    (!cidrs.is_empty()).then(|| cidrs.join(","))
}

/// Creates sandbox `name`. A create that fails half-way removes what it made.
pub async fn create(
    client: &Client,
    name: &str,
    opts: &CreateOptions,
) -> Result<Sandbox, SandboxError> {
    let mut opts = opts.clone();
    if opts.isolation == Isolation::Vcluster
        && opts.vcluster.values.get(VCLUSTER_SERVICE_CIDR).is_none()
        && let Some(cidrs) = host_service_cidrs(client).await
    {
        default_service_cidr(&mut opts.vcluster.values, &cidrs);
    }
    let opts = &opts;
    let plan = plan(name, opts)?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    if let Some(existing) = namespaces.get_opt(name).await? {
        return Err(if is_sandbox(&existing) {
            SandboxError::AlreadyExists(name.to_string())
        } else {
            SandboxError::NamespaceTaken(name.to_string())
        });
    }
    if opts.isolation == Isolation::Namespace {
        match boundary::ensure(client).await {
            Ok(_) => {}
            Err(boundary::BoundaryError::Unsupported) if opts.unconfined => {}
            Err(e) => return Err(e.into()),
        }
    }
    if opts.isolation == Isolation::Vcluster
        && !(flux::serves(client, "helm.toolkit.fluxcd.io/v2", "HelmRelease").await?
            && flux::serves(client, "source.toolkit.fluxcd.io/v1", "HelmRepository").await?)
    {
        return Err(SandboxError::NoHelmController);
    }
    match namespaces
        .create(&PostParams::default(), &plan.namespace)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {
            return Err(SandboxError::AlreadyExists(name.to_string()));
        }
        Err(e) => return Err(e.into()),
    }
    if let Err(e) = populate(client, name, &plan, opts).await {
        // The namespace holds everything else: deleting it removes it all.
        let _ = namespaces.delete(name, &DeleteParams::background()).await;
        return Err(SandboxError::RolledBack {
            name: name.to_string(),
            source: Box::new(e),
        });
    }
    get(client, name)
        .await?
        .ok_or_else(|| SandboxError::Vanished(name.to_string()))
}

async fn populate(
    client: &Client,
    name: &str,
    plan: &Plan,
    opts: &CreateOptions,
) -> Result<(), SandboxError> {
    if opts.isolation == Isolation::Namespace {
        // Observed, not assumed: the API server refuses a probe here only
        // when the policy is active and bound to this namespace.
        match boundary::probe(client, name, Duration::from_secs(10)).await {
            Ok(()) => {}
            Err(_) if opts.unconfined => {
                let namespaces: Api<Namespace> = Api::all(client.clone());
                let patch = serde_json::json!({"metadata": {"annotations": {UNCONFINED_ANNOTATION: "true"}}});
                namespaces
                    .patch(
                        name,
                        &kube::api::PatchParams::default(),
                        &kube::api::Patch::Merge(&patch),
                    )
                    .await?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(sa) = &plan.service_account {
        create_obj(&Api::namespaced(client.clone(), name), sa).await?;
    }
    if let Some(rb) = &plan.role_binding {
        create_obj(&Api::namespaced(client.clone(), name), rb).await?;
    }
    if let Some(q) = &plan.quota {
        create_obj(&Api::namespaced(client.clone(), name), q).await?;
    }
    if let Some(lr) = &plan.limit_range {
        create_obj(&Api::namespaced(client.clone(), name), lr).await?;
    }
    if let Some(np) = &plan.network_policy {
        create_obj(&Api::namespaced(client.clone(), name), np).await?;
    }
    if let Some(secret) = &plan.kubeconfig_secret {
        create_obj(&Api::namespaced(client.clone(), name), secret).await?;
    }
    if let (Some(repo), Some(release)) = (&plan.helm_repository, &plan.helm_release) {
        let repos: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), name, &flux::helm_repository_resource());
        repos.create(&PostParams::default(), repo).await?;
        let releases: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), name, &flux::helm_release_resource());
        releases.create(&PostParams::default(), release).await?;
        if opts.wait {
            wait_vcluster(client, name, opts.timeout).await?;
        }
    }
    Ok(())
}

async fn wait_vcluster(client: &Client, name: &str, timeout: Duration) -> Result<(), SandboxError> {
    let releases: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), name, &flux::helm_release_resource());
    let secrets: Api<Secret> = Api::namespaced(client.clone(), name);
    let started = tokio::time::Instant::now();
    let wait_err = |source| SandboxError::Wait {
        name: name.to_string(),
        source,
        hint: "is helm-controller running, and can the cluster pull the vcluster chart?".into(),
    };
    let ready = |o: Option<&DynamicObject>| {
        o.and_then(|r| {
            serde_json::from_value::<Vec<flux::Condition>>(r.data["status"]["conditions"].clone())
                .ok()
        })
        .is_some_and(|c| flux::condition(&c, "Ready").is_some_and(|c| c.status == "True"))
    };
    crate::kubeapi::await_object(
        &releases,
        name,
        timeout,
        "the vcluster release to be Ready",
        ready,
    )
    .await
    .map_err(wait_err)?;
    let left = timeout.saturating_sub(started.elapsed());
    let secret = format!("vc-{name}");
    crate::kubeapi::await_object(
        &secrets,
        &secret,
        left,
        format!("vcluster to write its kubeconfig Secret {secret}"),
        |o: Option<&Secret>| o.is_some(),
    )
    .await
    .map_err(wait_err)?;
    Ok(())
}

/// Whether a HelmRelease is the one that installs sandbox `sandbox` itself
/// (its vcluster), not one a session made in it.
pub fn is_sandbox_release(release: &DynamicObject, sandbox: &str) -> bool {
    let l = release.labels();
    release.name_any() == sandbox
        && labels::is_managed(Some(l))
        && l.get(labels::COMPONENT).is_some_and(|c| c == "sandbox")
        && l.get(labels::SANDBOX).is_some_and(|s| s == sandbox)
}

/// Whether a namespace is one of our sandboxes.
pub fn is_sandbox(ns: &Namespace) -> bool {
    let l = ns.metadata.labels.as_ref();
    labels::is_managed(l)
        && l.and_then(|l| l.get(labels::COMPONENT))
            .is_some_and(|c| c == "sandbox")
}

/// A sandbox from its namespace (`None` when the namespace is not one) and
/// the number of sessions using it.
pub fn from_namespace(ns: &Namespace, sessions: usize) -> Option<Sandbox> {
    if !is_sandbox(ns) {
        return None;
    }
    let name = ns.name_any();
    let l = ns.labels();
    let a = ns.annotations();
    let isolation = l
        .get(labels::ISOLATION)
        .and_then(|i| Isolation::parse(i))
        .unwrap_or(Isolation::Namespace);
    let terminating = ns.metadata.deletion_timestamp.is_some();
    let active = ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Active");
    let kubeconfig_secret = a
        .get(KUBECONFIG_SECRET_ANNOTATION)
        .and_then(|v| v.split_once('/'))
        .map(|(n, k)| (n.to_string(), k.to_string()));
    let target = match isolation {
        Isolation::Namespace => Target::namespace_sandbox(&name),
        Isolation::Kubeconfig | Isolation::Vcluster => Target {
            namespace: name.clone(),
            service_account: None,
            kubeconfig_secret,
            target_namespace: None,
            vcluster: (isolation == Isolation::Vcluster).then(|| name.clone()),
        },
    };
    Some(Sandbox {
        isolation,
        namespace: name.clone(),
        owner: a.get(labels::OWNER).cloned(),
        created: ns
            .metadata
            .creation_timestamp
            .as_ref()
            .and_then(|t| DateTime::from_timestamp(t.0.as_second(), 0)),
        expires: crate::duration::parse_time(a.get(labels::EXPIRES_AT).map(String::as_str)),
        ready: active && !terminating,
        terminating,
        sessions,
        quota: a.get(QUOTA_ANNOTATION).cloned(),
        unconfined: a.get(UNCONFINED_ANNOTATION).is_some_and(|v| v == "true"),
        target,
        name,
    })
}

/// Sessions per sandbox, from the sessions' Leases (one list call; in
/// `namespace` only when given, so using one sandbox needs no cluster-wide
/// rights).
async fn session_counts(
    client: &Client,
    namespace: Option<&str>,
) -> Result<BTreeMap<String, usize>, kube::Error> {
    let leases: Api<Lease> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let list = leases
        .list(&ListParams::default().labels(&labels::component_selector("session")))
        .await?;
    let mut counts = BTreeMap::new();
    for lease in list {
        if let Some(sandbox) = lease.labels().get(labels::SANDBOX) {
            *counts.entry(sandbox.clone()).or_insert(0) += 1;
        }
    }
    Ok(counts)
}

/// Sandbox `name`, if it exists: one GET of its namespace and one list of
/// the Leases in it.
pub async fn get(client: &Client, name: &str) -> Result<Option<Sandbox>, SandboxError> {
    validate_name(name)?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let Some(ns) = namespaces.get_opt(name).await? else {
        return Ok(None);
    };
    if !is_sandbox(&ns) {
        return Ok(None);
    }
    let counts = session_counts(client, Some(name)).await?;
    Ok(from_namespace(&ns, counts.get(name).copied().unwrap_or(0)))
}

/// The namespace object of sandbox `name`, if it exists and is one.
pub async fn namespace(client: &Client, name: &str) -> Result<Option<Namespace>, kube::Error> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    Ok(namespaces.get_opt(name).await?.filter(is_sandbox))
}

/// Every sandbox (of `owner` only, when given), sorted by name.
pub async fn list(client: &Client, owner: Option<&str>) -> Result<Vec<Sandbox>, SandboxError> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let selector = ListParams::default().labels(&labels::component_selector("sandbox"));
    let (list, counts) =
        tokio::try_join!(namespaces.list(&selector), session_counts(client, None))?;
    let mut sandboxes: Vec<Sandbox> = list
        .iter()
        .filter_map(|ns| from_namespace(ns, counts.get(&ns.name_any()).copied().unwrap_or(0)))
        .filter(|s| owner.is_none_or(|o| s.owner.as_deref() == Some(o)))
        .collect();
    sandboxes.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(sandboxes)
}

/// How to delete.
#[derive(Debug, Clone)]
pub struct DeleteOptions {
    /// Block until the namespace is gone.
    pub wait: bool,
    /// Limit for each wait (Flux's garbage collection, the namespace).
    pub timeout: Duration,
}

impl Default for DeleteOptions {
    fn default() -> Self {
        DeleteOptions {
            wait: false,
            timeout: Duration::from_secs(120),
        }
    }
}

/// What a delete did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Deleted {
    /// Nothing to do: no such sandbox.
    NotFound,
    /// Removed, in this order.
    Removed(Vec<String>),
}

/// Deletes sandbox `name` in the safe order: Flux appliers first (their
/// garbage collection awaited, while the kubeconfig Secret they need still
/// exists), then the rest, then the namespace.
pub async fn delete(
    client: &Client,
    name: &str,
    opts: &DeleteOptions,
) -> Result<Deleted, SandboxError> {
    validate_name(name)?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let Some(ns) = namespaces.get_opt(name).await? else {
        return Ok(Deleted::NotFound);
    };
    if !is_sandbox(&ns) {
        return Err(SandboxError::NotASandbox(name.to_string()));
    }
    let mut removed = Vec::new();

    // 1. Appliers: Kustomizations and HelmReleases, their garbage
    // collection awaited (it needs the kubeconfig Secret deleted below).
    let hint = "is kustomize-controller (or helm-controller) running? The sandbox was left in \
                place; run the delete again once it is";
    let wait_err = |e: crate::kubeapi::DeleteWaitError| match e {
        crate::kubeapi::DeleteWaitError::Kube(e) => SandboxError::Kube(e),
        crate::kubeapi::DeleteWaitError::Wait(source) => SandboxError::Wait {
            name: name.to_string(),
            source,
            hint: hint.to_string(),
        },
    };
    let started = tokio::time::Instant::now();
    let left = || opts.timeout.saturating_sub(started.elapsed());
    let kustomizations: Api<Kustomization> = Api::namespaced(client.clone(), name);
    let ks_names: Vec<String> = kustomizations
        .list(&ListParams::default())
        .await?
        .iter()
        .map(|k| k.name_any())
        .collect();
    let helm = flux::serves(client, "helm.toolkit.fluxcd.io/v2", "HelmRelease").await?;
    let releases: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), name, &flux::helm_release_resource());
    let hrs: Vec<DynamicObject> = if helm {
        releases.list(&ListParams::default()).await?.items
    } else {
        Vec::new()
    };
    // The sandbox's own release (a vcluster) goes last: the sessions'
    // appliers garbage-collect through the virtual cluster it runs, so
    // they must be gone before it is uninstalled (else their finalizers
    // wait for ever for a cluster that no longer exists).
    let (own, others): (Vec<&DynamicObject>, Vec<&DynamicObject>) =
        hrs.iter().partition(|h| is_sandbox_release(h, name));
    let names = |hs: Vec<&DynamicObject>| hs.iter().map(|h| h.name_any()).collect::<Vec<_>>();
    let (own, hr_names) = (names(own), names(others));
    // Delete them all first, then wait: their garbage collections run in parallel.
    for n in &ks_names {
        crate::kubeapi::delete(&kustomizations, n).await?;
    }
    for n in &hr_names {
        crate::kubeapi::delete(&releases, n).await?;
    }
    for n in &ks_names {
        crate::kubeapi::delete_and_await(
            &kustomizations,
            n,
            left(),
            format!("Flux's garbage collection of kustomization/{n}"),
        )
        .await
        .map_err(wait_err)?;
        removed.push(format!("kustomization/{n}"));
    }
    for n in hr_names.iter().chain(&own) {
        crate::kubeapi::delete_and_await(
            &releases,
            n,
            left(),
            format!("helm-controller to uninstall helmrelease/{n}"),
        )
        .await
        .map_err(wait_err)?;
        removed.push(format!("helmrelease/{n}"));
    }

    // 2. The suite's other objects in it, the kubeconfig Secret among them.
    let selector = ListParams::default().labels(&labels::managed_selector());
    macro_rules! delete_labelled {
        ($kind:ty, $label:expr) => {{
            let api: Api<$kind> = Api::namespaced(client.clone(), name);
            // Names only: metadata, not whole objects (nor Secrets' values).
            for obj in api.list_metadata(&selector).await? {
                crate::kubeapi::delete(&api, &obj.name_any()).await?;
                removed.push(format!("{}/{}", $label, obj.name_any()));
            }
        }};
    }
    delete_labelled!(Secret, "secret");
    delete_labelled!(RoleBinding, "rolebinding");
    delete_labelled!(ServiceAccount, "serviceaccount");
    delete_labelled!(NetworkPolicy, "networkpolicy");
    delete_labelled!(ResourceQuota, "resourcequota");
    delete_labelled!(LimitRange, "limitrange");

    // 3. The namespace.
    if opts.wait {
        crate::kubeapi::delete_and_await(
            &namespaces,
            name,
            opts.timeout,
            "the namespace's deletion",
        )
        .await
        .map_err(|e| match e {
            crate::kubeapi::DeleteWaitError::Kube(e) => SandboxError::Kube(e),
            crate::kubeapi::DeleteWaitError::Wait(source) => SandboxError::Wait {
                name: name.to_string(),
                source,
                hint: "is kube-controller-manager running? The namespace is marked for \
                           deletion and will go when it does"
                    .into(),
            },
        })?;
    } else {
        crate::kubeapi::delete(&namespaces, name).await?;
    }
    removed.push(format!("namespace/{name}"));
    Ok(Deleted::Removed(removed))
}

/// Deletes every sandbox whose TTL has passed, unless a live session uses
/// it; returns their names. The sessions' Leases in the expired sandboxes
/// are judged together by [`crate::session::record::liveness`] (one lease period at
/// most), so a skewed clock never makes gc take a live session's sandbox.
pub async fn gc(client: &Client, opts: &DeleteOptions) -> Result<Vec<String>, SandboxError> {
    let now = Utc::now();
    let expired: Vec<Sandbox> = list(client, None)
        .await?
        .into_iter()
        .filter(|s| s.expired(now) && !s.terminating)
        .collect();
    if expired.is_empty() {
        return Ok(Vec::new());
    }
    let in_use = sandboxes_in_use(client, &expired).await?;
    let mut deleted = Vec::new();
    for sandbox in expired {
        if in_use.contains(&sandbox.name) {
            tracing::info!(
                "sandbox {} expired but a live session uses it; left in place",
                sandbox.name
            );
            continue;
        }
        delete(client, &sandbox.name, opts).await?;
        deleted.push(sandbox.name);
    }
    Ok(deleted)
}

/// Which of `sandboxes` a live session uses: a Lease in the sandbox's
/// namespace, labelled with it, judged live.
async fn sandboxes_in_use(
    client: &Client,
    sandboxes: &[Sandbox],
) -> Result<std::collections::BTreeSet<String>, SandboxError> {
    let mut leases = Vec::new();
    for sandbox in sandboxes {
        let api: Api<Lease> = Api::namespaced(client.clone(), &sandbox.namespace);
        let selector = format!(
            "{},{}={}",
            labels::component_selector("session"),
            labels::SANDBOX,
            sandbox.name
        );
        leases.extend(api.list(&ListParams::default().labels(&selector)).await?);
    }
    let judged = crate::session::record::liveness::judge(client, leases, &labels::owner()).await;
    Ok(judged
        .into_iter()
        .filter(|j| j.verdict == crate::session::record::liveness::Verdict::Live)
        .filter_map(|j| j.lease.labels().get(labels::SANDBOX).cloned())
        .collect())
}

#[cfg(test)]
mod tests;
