use super::*;

fn opts(isolation: Isolation) -> CreateOptions {
    CreateOptions {
        isolation,
        owner: "dev@laptop".into(),
        ..Default::default()
    }
}

const KUBECONFIG: &str = "apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters:\n- name: k\n  cluster: {server: 'https://127.0.0.1:1'}\nusers:\n- name: u\n  user: {token: t}\ncontexts:\n- name: c\n  context: {cluster: k, user: u}\n";

#[test]
fn names_must_be_dns_labels() {
    for ok in ["dev", "a", "team-1", &"x".repeat(63)] {
        assert!(validate_name(ok).is_ok(), "{ok}");
    }
    for bad in ["", "Dev", "-a", "a-", "a_b", "a.b", &"x".repeat(64)] {
        let e = validate_name(bad).unwrap_err().to_string();
        assert!(e.contains("DNS-1123"), "{bad}: {e}");
    }
    assert!(plan("Bad", &opts(Isolation::Namespace)).is_err());
}

#[test]
fn namespace_sandbox_binds_admin_in_its_namespace_only() {
    let p = plan("dev", &opts(Isolation::Namespace)).unwrap();
    let ns_labels = p.namespace.metadata.labels.clone().unwrap();
    assert_eq!(ns_labels[labels::MANAGED_BY], labels::MANAGER);
    assert_eq!(ns_labels[labels::COMPONENT], "sandbox");
    assert_eq!(ns_labels[labels::SANDBOX], "dev");
    assert_eq!(ns_labels[labels::ISOLATION], "namespace");
    assert_eq!(
        p.namespace.metadata.annotations.clone().unwrap()[labels::OWNER],
        "dev@laptop"
    );
    assert!(is_sandbox(&p.namespace));

    let rb = p.role_binding.unwrap();
    assert_eq!(rb.metadata.namespace.as_deref(), Some("dev"));
    assert_eq!(
        (rb.role_ref.kind.as_str(), rb.role_ref.name.as_str()),
        ("ClusterRole", "admin")
    );
    let subject = &rb.subjects.unwrap()[0];
    assert_eq!(
        (subject.kind.as_str(), subject.name.as_str()),
        ("ServiceAccount", SERVICE_ACCOUNT)
    );
    assert_eq!(subject.namespace.as_deref(), Some("dev"));

    let np = p.network_policy.unwrap().spec.unwrap();
    assert_eq!(np.policy_types.unwrap(), ["Ingress"]);
    let from = &np.ingress.unwrap()[0].from.clone().unwrap()[0];
    assert!(
        from.namespace_selector.is_none(),
        "peers from this namespace only"
    );
    assert!(from.pod_selector.is_some());
    assert!(p.quota.is_none() && p.limit_range.is_none());

    // Every object carries the suite's labels and the owner.
    for m in [&p.service_account.unwrap().metadata, &rb.metadata] {
        assert!(labels::is_managed(m.labels.as_ref()));
        assert_eq!(m.annotations.as_ref().unwrap()[labels::OWNER], "dev@laptop");
    }
}

#[test]
fn ttl_becomes_an_expiry_annotation() {
    let mut o = opts(Isolation::Namespace);
    o.ttl = Some(Duration::from_secs(3600));
    let p = plan("dev", &o).unwrap();
    let expires = p.namespace.metadata.annotations.unwrap()[labels::EXPIRES_AT].clone();
    let t = DateTime::parse_from_rfc3339(&expires)
        .unwrap()
        .with_timezone(&Utc);
    let delta = (t - Utc::now()).num_seconds();
    assert!((3590..=3600).contains(&delta), "{delta}");
}

#[test]
fn quotas_parse_and_add_default_requests() {
    let q: Quota = "cpu=2,memory=4Gi,pods=20".parse().unwrap();
    assert_eq!(q.hard.len(), 3);
    for bad in ["", "cpu", "gpu=1", "cpu=", "cpu=-1", "memory=4Gi;rm"] {
        assert!(bad.parse::<Quota>().is_err(), "{bad}");
    }
    let mut o = opts(Isolation::Namespace);
    o.quota = Some(q);
    let p = plan("dev", &o).unwrap();
    let hard = p.quota.unwrap().spec.unwrap().hard.unwrap();
    assert_eq!(hard["memory"].0, "4Gi");
    assert!(p.limit_range.is_some());
    let o2 = CreateOptions {
        quota: Some("pods=5".parse().unwrap()),
        ..opts(Isolation::Namespace)
    };
    assert!(plan("dev", &o2).unwrap().limit_range.is_none());
}

#[test]
fn kubeconfig_sandbox_stores_a_valid_kubeconfig() {
    let mut o = opts(Isolation::Kubeconfig);
    assert!(matches!(
        plan("ext", &o),
        Err(SandboxError::KubeconfigMissing)
    ));
    o.target_kubeconfig = Some(("k.yaml".into(), b"not: [a kubeconfig".to_vec()));
    assert!(
        plan("ext", &o)
            .unwrap_err()
            .to_string()
            .contains("k.yaml: not a kubeconfig")
    );
    o.target_kubeconfig = Some((
        "k.yaml".into(),
        KUBECONFIG.replace("current-context: c\n", "").into_bytes(),
    ));
    assert!(
        plan("ext", &o)
            .unwrap_err()
            .to_string()
            .contains("no current-context")
    );
    o.target_kubeconfig = Some(("k.yaml".into(), KUBECONFIG.as_bytes().to_vec()));
    let p = plan("ext", &o).unwrap();
    let secret = p.kubeconfig_secret.unwrap();
    assert_eq!(secret.metadata.name.as_deref(), Some(KUBECONFIG_SECRET));
    assert_eq!(
        secret.data.unwrap()[KUBECONFIG_KEY].0,
        KUBECONFIG.as_bytes()
    );
    assert!(p.service_account.is_none() && p.role_binding.is_none());
    let ns = Namespace {
        status: Some(k8s_openapi::api::core::v1::NamespaceStatus {
            phase: Some("Active".into()),
            ..Default::default()
        }),
        ..p.namespace
    };
    let sandbox = from_namespace(&ns, 2).unwrap();
    assert_eq!(sandbox.isolation, Isolation::Kubeconfig);
    assert_eq!(sandbox.sessions, 2);
    assert!(sandbox.ready);
    assert_eq!(
        sandbox.target.kubeconfig_secret,
        Some((KUBECONFIG_SECRET.to_string(), KUBECONFIG_KEY.to_string()))
    );
}

#[test]
fn vcluster_sandbox_installs_the_chart_through_flux() {
    let p = plan("vc1", &opts(Isolation::Vcluster)).unwrap();
    let repo = p.helm_repository.unwrap();
    assert_eq!(repo.types.as_ref().unwrap().kind, "HelmRepository");
    assert_eq!(repo.data["spec"]["url"], VCLUSTER_CHART_REPO);
    let release = p.helm_release.unwrap();
    let types = release.types.as_ref().unwrap();
    assert_eq!(
        (types.api_version.as_str(), types.kind.as_str()),
        ("helm.toolkit.fluxcd.io/v2", "HelmRelease")
    );
    let spec = &release.data["spec"];
    assert_eq!(spec["chart"]["spec"]["chart"], "vcluster");
    assert_eq!(spec["chart"]["spec"]["sourceRef"]["name"], "loft");
    assert_eq!(
        spec["values"]["exportKubeConfig"]["server"],
        "https://vc1.vc1:443"
    );
    assert!(labels::is_managed(release.metadata.labels.as_ref()));
    let sandbox = from_namespace(&p.namespace, 0).unwrap();
    assert_eq!(
        sandbox.target.kubeconfig_secret,
        Some(("vc-vc1".to_string(), "config".to_string()))
    );
    assert_eq!(sandbox.target.service_account, None);
}

#[test]
fn namespace_target_impersonates_and_confines() {
    let p = plan("dev", &opts(Isolation::Namespace)).unwrap();
    let sandbox = from_namespace(&p.namespace, 0).unwrap();
    assert_eq!(
        sandbox.target,
        Target {
            namespace: "dev".into(),
            service_account: Some(SERVICE_ACCOUNT.into()),
            kubeconfig_secret: None,
            target_namespace: Some("dev".into()),
            vcluster: None,
        }
    );
    assert!(
        !sandbox.ready,
        "a namespace without an Active phase is not ready"
    );
}

#[test]
fn foreign_namespaces_are_not_sandboxes() {
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some("default".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    assert!(!is_sandbox(&ns));
    assert!(from_namespace(&ns, 0).is_none());
}

#[test]
fn vcluster_chart_source_version_and_values_are_the_users_but_the_server_is_ours() {
    let (repo, release) = vcluster_objects("dev", &opts(Isolation::Vcluster));
    assert_eq!(repo.data["spec"]["url"], VCLUSTER_CHART_REPO);
    assert!(repo.data["spec"].get("type").is_none());
    assert!(
        release.data["spec"]["chart"]["spec"]
            .get("version")
            .is_none()
    );

    let mut o = opts(Isolation::Vcluster);
    o.vcluster = VclusterChart {
        repo: "oci://mirror.example.com/charts".into(),
        version: Some("0.21.x".into()),
        values: serde_json::json!({
            "controlPlane": {"statefulSet": {"persistence": {"volumeClaim": {"enabled": false}}}},
            "exportKubeConfig": {"server": "https://elsewhere:1", "context": "mine"}
        }),
    };
    let (repo, release) = vcluster_objects("dev", &o);
    assert_eq!(repo.data["spec"]["url"], "oci://mirror.example.com/charts");
    assert_eq!(repo.data["spec"]["type"], "oci");
    let spec = &release.data["spec"];
    assert_eq!(spec["chart"]["spec"]["version"], "0.21.x");
    assert_eq!(
        spec["values"]["controlPlane"]["statefulSet"]["persistence"]["volumeClaim"]["enabled"],
        false
    );
    // What sessions need to reach the virtual cluster is not the user's to change.
    assert_eq!(
        spec["values"]["exportKubeConfig"]["server"],
        "https://dev.dev:443"
    );
    assert_eq!(spec["values"]["exportKubeConfig"]["context"], "mine");
}

#[test]
fn the_virtual_clusters_service_range_is_the_hosts_unless_the_user_sets_one() {
    let mut values =
        serde_json::json!({"controlPlane": {"advanced": {"defaultImageRegistry": "r"}}});
    default_service_cidr(&mut values, "10.0.0.0/24");
    assert_eq!(values["serviceCIDR"], "10.0.0.0/24");
    assert_eq!(
        values["controlPlane"]["advanced"]["defaultImageRegistry"],
        "r"
    );
    let mut o = opts(Isolation::Vcluster);
    o.vcluster.values = values;
    let (_, release) = vcluster_objects("dev", &o);
    assert_eq!(release.data["spec"]["values"]["serviceCIDR"], "10.0.0.0/24");

    let mut theirs = serde_json::json!({"serviceCIDR": "10.96.0.0/12"});
    default_service_cidr(&mut theirs, "10.0.0.0/24");
    assert_eq!(
        theirs["serviceCIDR"], "10.96.0.0/12",
        "the user's own range wins"
    );
    let mut none = serde_json::Value::Null;
    default_service_cidr(&mut none, "10.0.0.0/24,fd00::/108");
    assert_eq!(
        none,
        serde_json::json!({"serviceCIDR": "10.0.0.0/24,fd00::/108"})
    );
}

#[test]
fn the_sandboxs_own_release_is_told_from_a_sessions() {
    let o = opts(Isolation::Vcluster);
    let (_, release) = vcluster_objects("dev", &o);
    assert!(is_sandbox_release(&release, "dev"));
    assert!(!is_sandbox_release(&release, "other"));
    let mut session_chart = release.clone();
    session_chart.metadata.name = Some("dev".into());
    session_chart
        .metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert(labels::COMPONENT.into(), "session".into());
    assert!(
        !is_sandbox_release(&session_chart, "dev"),
        "a session's chart release named like the sandbox is uninstalled first"
    );
}
