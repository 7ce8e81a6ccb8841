//! Helm chart directories in a session: packaged as a Helm OCI chart and
//! released by the real helm-controller.

// A test that cannot reach its peer, or finds the world other than it
// expects, fails loudly: panics are these tests' verdicts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use gitops_e2e::{
    Footprint, Harness, RunningSession, eventually, output, plugin, unique, wait_namespace_gone,
    write_tree,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Client};

const WAIT: Duration = Duration::from_secs(90);
const TEMPLATE: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\ndata:\n  greeting: {{ .Values.greeting | quote }}\n";

fn chart(dir: &std::path::Path, greeting: &str) {
    write_tree(
        dir,
        &[
            (
                "Chart.yaml",
                "apiVersion: v2\nname: hello\nversion: 0.1.0\n",
            ),
            ("values.yaml", &format!("greeting: {greeting}\n")),
            ("templates/cm.yaml", TEMPLATE),
            ("templates/deployment.yaml", DEPLOYMENT),
        ],
    );
}

/// A Deployment in the chart: the release is Ready once it is rolled out.
const DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ .Release.Name }}-web\nspec:\n  replicas: {{ .Values.replicas | default 1 }}\n  selector:\n    matchLabels:\n      app: {{ .Release.Name }}-web\n  template:\n    metadata:\n      labels:\n        app: {{ .Release.Name }}-web\n    spec:\n      containers:\n      - name: web\n        image: example/web:1\n";

/// (ready, available) replicas of the chart's Deployment.
async fn rolled_out(client: &Client, ns: &str, release: &str) -> (i32, i32) {
    let d = Api::<Deployment>::namespaced(client.clone(), ns)
        .get(&format!("{release}-web"))
        .await
        .unwrap();
    let s = d.status.unwrap_or_default();
    (
        s.ready_replicas.unwrap_or(0),
        s.available_replicas.unwrap_or(0),
    )
}

async fn greeting(client: &Client, ns: &str, release: &str) -> Option<String> {
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt(&format!("{release}-cm"))
        .await
        .ok()
        .flatten()
        .and_then(|c| c.data)
        .and_then(|d| d.get("greeting").cloned())
}

#[tokio::test]
async fn a_chart_session_upgrades_on_save_survives_template_errors_and_uninstalls() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let dir = tempfile::tempdir().unwrap();
    chart(dir.path(), "hello");
    let name = unique("chart");
    let mut s = RunningSession::start(&harness, dir.path(), &["--name", &name]);
    let first = s.next_sync().unwrap();
    assert!(first.contains("(chart 0.1.0-dev.g"), "{first}");
    assert_eq!(
        greeting(&client, &name, &name).await.as_deref(),
        Some("hello")
    );
    // Ready means rolled out: helm-controller waited for the Deployment.
    assert_eq!(rolled_out(&client, &name, &name).await, (1, 1));

    // The session shows up with its HelmRelease's status. The status is
    // Flux's Ready condition, which may flip to Progressing for a moment when
    // the controllers run one more reconcile of the same revision: it must
    // settle at Ready.
    eventually(
        "the session listed as Ready",
        Duration::from_secs(30),
        || {
            let listed = output(
                plugin("kubectl-gitops_sessions")
                    .args(harness.kube_args())
                    .args(["-A", "-o", "json"]),
            );
            let result = (|| {
                if listed.code != Some(0) {
                    return Err(format!("{listed:?}"));
                }
                let json: serde_json::Value =
                    serde_json::from_str(&listed.stdout).map_err(|e| e.to_string())?;
                let me = json
                    .as_array()
                    .and_then(|a| a.iter().find(|v| v["name"] == name.as_str()).cloned())
                    .ok_or_else(|| format!("not listed: {json}"))?;
                if me["status"]["state"] == "Ready" {
                    Ok(())
                } else {
                    Err(format!("{me}"))
                }
            })();
            async move { result }
        },
    )
    .await;

    // Edit values.yaml: the release is upgraded.
    std::fs::write(
        dir.path().join("values.yaml"),
        "greeting: bonjour\nreplicas: 2\n",
    )
    .unwrap();
    s.next_sync().unwrap();
    assert_eq!(
        greeting(&client, &name, &name).await.as_deref(),
        Some("bonjour")
    );
    assert_eq!(rolled_out(&client, &name, &name).await, (2, 2));

    // A template error: the controller's words, and the previous release stays.
    std::fs::write(
        dir.path().join("templates/cm.yaml"),
        TEMPLATE.replace("| quote", "| nosuchfunc"),
    )
    .unwrap();
    let err = s.next_sync().unwrap_err();
    assert!(
        err.contains("a template does not render") && err.contains("nosuchfunc"),
        "{err}"
    );
    assert_eq!(
        greeting(&client, &name, &name).await.as_deref(),
        Some("bonjour")
    );

    // Ctrl+C: the release is uninstalled before the rest goes.
    let footprint = Footprint::capture(&client, &name).await;
    assert!(
        footprint.has("HelmRelease", Some(&name), &name)
            && footprint.has("ConfigMap", Some(&name), &format!("{name}-cm")),
        "{footprint:#?}"
    );
    assert!(
        footprint
            .objects
            .iter()
            .any(|o| o.kind == "Secret" && o.name.starts_with("sh.helm.release.v1.")),
        "Helm's release records: {footprint:#?}"
    );
    s.signal("INT");
    assert_eq!(s.wait_exit(WAIT), Some(0));
    let cleaned = s
        .seen
        .iter()
        .find(|e| e["event"] == "cleaned")
        .expect("cleaned");
    assert!(
        cleaned["removed"]
            .to_string()
            .contains("release uninstalled"),
        "{cleaned}"
    );
    wait_namespace_gone(&client, &name).await;
    footprint.assert_gone(&client).await;
}

#[tokio::test]
async fn values_files_override_the_chart_and_a_bad_chart_yaml_is_refused() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let dir = tempfile::tempdir().unwrap();
    chart(dir.path(), "from-chart");
    let extra = tempfile::tempdir().unwrap();
    write_tree(
        extra.path(),
        &[
            ("a.yaml", "greeting: from-a\n"),
            ("b.yaml", "greeting: from-b\n"),
        ],
    );
    let name = unique("chart-values");
    let out = output(
        plugin("kubectl-gitops_run")
            .args(harness.kube_args())
            .args(["--once", "--keep", "--name", &name, "--values"])
            .arg(extra.path().join("a.yaml"))
            .arg("--values")
            .arg(extra.path().join("b.yaml"))
            .current_dir(dir.path()),
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(
        greeting(&client, &name, &name).await.as_deref(),
        Some("from-b"),
        "later files win"
    );
    gitops::session::cleanup(
        &client,
        &name,
        &name,
        Some(&name),
        &gitops::labels::owner(),
        WAIT,
    )
    .await
    .unwrap();

    std::fs::write(
        dir.path().join("Chart.yaml"),
        "apiVersion: v2\nname: hello\nversion: latest\n",
    )
    .unwrap();
    let bad = output(
        plugin("kubectl-gitops_run")
            .args(harness.kube_args())
            .args(["--once", "--name", &unique("chart-bad")])
            .current_dir(dir.path()),
    );
    assert_eq!(bad.code, Some(1), "{bad:?}");
    assert!(
        bad.stderr.contains("not a semantic version") && bad.stderr.contains("nothing was pushed"),
        "{bad:?}"
    );
}
