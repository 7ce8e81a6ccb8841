//! The artifact engine against the real `flux` CLI, the real registry and
//! the real source-controller.

// A test that cannot reach its peer, or finds the world other than it
// expects, fails loudly: panics are these tests' verdicts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Duration;

use gitops::artifact::{WalkOptions, content_of_dir};
use gitops::flux::{OCIRepository, OCIRepositoryRef, OCIRepositorySpec, condition};
use gitops_e2e::{
    Harness, configmap, create_namespace, delete_namespace, eventually, output, plugin, run,
    unique, write_tree,
};
use kube::Api;
use kube::api::PostParams;

/// Writes the tree every test packs: a kustomization, its manifest, nested
/// values and a script.
fn write_app_tree(dir: &Path) {
    write_tree(
        dir,
        &[
            ("kustomization.yaml", "resources:\n- deploy/app.yaml\n"),
            ("deploy/app.yaml", &configmap("app", &[("k", "v")])),
            ("deploy/nested/deep/values.yaml", "replicas: 2\n"),
            ("scripts/run.sh", "#!/bin/sh\necho hi\n"),
        ],
    );
}

fn push_json(harness: &Harness, dir: &Path, reference: &str, extra: &[&str]) -> serde_json::Value {
    let stdout = run(plugin("kubectl-gitops_run")
        .args(["push", "-o", "json"])
        .arg(dir)
        .arg(reference)
        .args(extra)
        .env("HOME", &harness.dir));
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("push -o json printed {stdout:?}: {e}"))
}

fn same_tree(a: &Path, b: &Path) {
    let options = WalkOptions::default();
    assert_eq!(
        content_of_dir(a, &options).unwrap(),
        content_of_dir(b, &options).unwrap()
    );
}

#[test]
fn flux_pulls_our_artifact_into_an_identical_tree() {
    let harness = Harness::get();
    let src = tempfile::tempdir().unwrap();
    write_app_tree(src.path());
    let reference = format!("oci://{}/e2e/{}:v1", harness.registry, unique("ours"));
    let pushed = push_json(&harness, src.path(), &reference, &[]);

    let out = tempfile::tempdir().unwrap();
    run(harness
        .flux()
        .args(["pull", "artifact", &reference, "--output"])
        .arg(out.path()));
    same_tree(src.path(), out.path());

    // The digest we printed is the one the registry serves for the tag.
    let by_digest = pushed["digest_url"].as_str().unwrap();
    let out2 = tempfile::tempdir().unwrap();
    run(harness
        .flux()
        .args(["pull", "artifact", by_digest, "--output"])
        .arg(out2.path()));
    same_tree(src.path(), out2.path());
}

#[test]
fn an_artifact_pushed_by_flux_diffs_equal_to_its_source() {
    let harness = Harness::get();
    let src = tempfile::tempdir().unwrap();
    write_app_tree(src.path());
    let reference = format!("oci://{}/e2e/{}:latest", harness.registry, unique("flux"));
    run(harness.flux().args([
        "push",
        "artifact",
        &reference,
        &format!("--path={}", src.path().display()),
        "--source=file:///e2e",
        "--revision=main@sha1:0000000000000000000000000000000000000000",
    ]));

    let diff = |dir: &Path| {
        output(
            plugin("kubectl-gitops_run")
                .arg("diff")
                .arg(dir)
                .arg(&reference),
        )
    };
    let same = diff(src.path());
    assert_eq!(same.code, Some(0), "{same:?}");
    assert!(same.stdout.is_empty(), "{same:?}");

    std::fs::write(src.path().join("deploy/app.yaml"), "changed: true\n").unwrap();
    std::fs::write(src.path().join("new.yaml"), "new: true\n").unwrap();
    std::fs::remove_file(src.path().join("scripts/run.sh")).unwrap();
    let changed = diff(src.path());
    assert_eq!(changed.code, Some(1), "{changed:?}");
    assert_eq!(
        changed.stdout,
        "+ new.yaml\n- scripts/run.sh\n~ deploy/app.yaml\n"
    );

    let missing = output(
        plugin("kubectl-gitops_run")
            .arg("diff")
            .arg(src.path())
            .arg(format!(
                "oci://{}/e2e/never-pushed:latest",
                harness.registry
            )),
    );
    assert_eq!(missing.code, Some(2), "{missing:?}");
    assert!(
        missing.stderr.contains("was not found in the registry"),
        "{missing:?}"
    );
}

#[tokio::test]
async fn source_controller_reports_the_digest_we_printed() {
    let harness = Harness::get();
    let cluster = harness.cluster().await;
    let ns = unique("e2e-artifact");
    create_namespace(&cluster.client, &ns).await;
    let src = tempfile::tempdir().unwrap();
    write_app_tree(src.path());
    let repo_name = unique("app");
    let reference = format!("oci://{}/e2e/{repo_name}:dev", harness.registry);
    let pushed = push_json(&harness, src.path(), &reference, &["--reproducible"]);
    let expected = format!("dev@{}", pushed["digest"].as_str().unwrap());
    assert_eq!(pushed["flux_revision"], expected.as_str());

    let repos: Api<OCIRepository> = Api::namespaced(cluster.client.clone(), &ns);
    let repo = OCIRepository::new(
        "app",
        OCIRepositorySpec {
            url: format!("oci://{}/e2e/{repo_name}", harness.registry),
            reference: Some(OCIRepositoryRef {
                tag: Some("dev".into()),
                ..Default::default()
            }),
            interval: "10m".into(),
            ..Default::default()
        },
    );
    repos.create(&PostParams::default(), &repo).await.unwrap();
    let status = eventually(
        "the OCIRepository to be Ready",
        Duration::from_secs(60),
        || async {
            let repo = repos.get("app").await.map_err(|e| e.to_string())?;
            let status = repo.status.unwrap_or_default();
            match condition(&status.conditions, "Ready") {
                Some(c) if c.status == "True" && status.artifact.is_some() => Ok(status),
                other => Err(format!("{other:?}, artifact {:?}", status.artifact)),
            }
        },
    )
    .await;
    let artifact = status.artifact.unwrap();
    assert_eq!(artifact.revision, expected);
    let metadata = artifact.metadata.unwrap();
    assert_eq!(
        metadata["org.opencontainers.image.created"],
        "1970-01-01T00:00:00Z"
    );
    assert!(metadata["org.opencontainers.image.source"].starts_with("file:///"));
    delete_namespace(&cluster.client, &ns).await;
}

#[test]
fn reproducible_pushes_of_an_unchanged_tree_upload_nothing_the_second_time() {
    let harness = Harness::get();
    let src = tempfile::tempdir().unwrap();
    write_app_tree(src.path());
    let reference = format!("oci://{}/e2e/{}:v1", harness.registry, unique("twice"));
    // Same content and the same provenance: the same manifest.
    let pin = ["--reproducible", "--source", "file:///e2e"];
    let first = push_json(&harness, src.path(), &reference, &pin);
    assert_eq!(first["uploaded"].as_array().unwrap().len(), 2, "{first}");
    // A fresh copy of the same content, with other mtimes: same digests, no uploads.
    let copy = tempfile::tempdir().unwrap();
    write_app_tree(copy.path());
    let second = push_json(&harness, copy.path(), &reference, &pin);
    assert_eq!(second["uploaded"], serde_json::json!([]), "{second}");
    assert_eq!(second["digest"], first["digest"]);
    assert_eq!(second["layer"], first["layer"]);
}

#[test]
fn credentials_are_used_and_never_printed() {
    let harness = Harness::get();
    let src = tempfile::tempdir().unwrap();
    write_app_tree(src.path());
    let reference = format!("oci://{}/e2e/{}:v1", harness.auth_registry, unique("auth"));
    let (_, password) = harness.auth_creds.split_once(':').unwrap();
    let push = |creds: Option<&str>| {
        let mut cmd = plugin("kubectl-gitops_run");
        cmd.args(["push", "-v"])
            .arg(src.path())
            .arg(&reference)
            .env("HOME", &harness.dir);
        if let Some(c) = creds {
            cmd.args(["--creds", c]);
        }
        output(&mut cmd)
    };
    let anonymous = push(None);
    assert_eq!(anonymous.code, Some(1), "{anonymous:?}");
    assert!(
        anonymous.stderr.contains("requires credentials")
            && anonymous.stderr.contains("docker login"),
        "{anonymous:?}"
    );
    let wrong = push(Some("gitops:not-the-password"));
    assert!(
        wrong.stderr.contains("refused the credentials"),
        "{wrong:?}"
    );
    assert!(!wrong.stderr.contains("not-the-password"), "{wrong:?}");
    let ok = push(Some(&harness.auth_creds));
    assert_eq!(ok.code, Some(0), "{ok:?}");
    assert!(
        !ok.stdout.contains(password) && !ok.stderr.contains(password),
        "{ok:?}"
    );

    // The Docker config is read too (HOME points at a config we write).
    let home = tempfile::tempdir().unwrap();
    let auth = base64(&harness.auth_creds);
    write_tree(
        home.path(),
        &[(
            ".docker/config.json",
            &format!(
                r#"{{"auths": {{"{}": {{"auth": "{auth}"}}}}}}"#,
                harness.auth_registry
            ),
        )],
    );
    let from_config = output(
        plugin("kubectl-gitops_run")
            .args(["push", "-vv"])
            .arg(src.path())
            .arg(&reference)
            .env("HOME", home.path()),
    );
    assert_eq!(from_config.code, Some(0), "{from_config:?}");
    assert!(
        !from_config.stderr.contains(password) && !from_config.stderr.contains(&auth),
        "{from_config:?}"
    );
}

#[test]
fn an_unreachable_registry_is_reported_in_plain_words() {
    let src = tempfile::tempdir().unwrap();
    write_app_tree(src.path());
    // A port nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let out = output(
        plugin("kubectl-gitops_run")
            .arg("push")
            .arg(src.path())
            .arg(format!("oci://127.0.0.1:{port}/e2e/app:v1")),
    );
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr
            .contains(&format!("cannot reach the registry 127.0.0.1:{port}")),
        "{out:?}"
    );
}

#[test]
fn build_cli_writes_the_layer_and_refuses_bad_input() {
    let src = tempfile::tempdir().unwrap();
    write_app_tree(src.path());
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("layer.tgz");
    let built = output(
        plugin("kubectl-gitops_run")
            .arg("build")
            .arg(src.path())
            .arg("-o")
            .arg(&file),
    );
    assert_eq!(built.code, Some(0), "{built:?}");
    let digest = built.stdout.trim();
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(digest, gitops::artifact::sha256_digest(&bytes));

    let missing = output(
        plugin("kubectl-gitops_run")
            .args(["build", "/no/such/dir", "-o"])
            .arg(out.path().join("x.tgz")),
    );
    assert_eq!(missing.code, Some(1), "{missing:?}");
    assert_eq!(missing.stderr, "error: /no/such/dir: no such directory\n");
    let too_big = output(
        plugin("kubectl-gitops_run")
            .arg("build")
            .arg(src.path())
            .args(["--max-file-size", "10", "-o"])
            .arg(out.path().join("y.tgz")),
    );
    assert_eq!(too_big.code, Some(1), "{too_big:?}");
    assert!(
        too_big.stderr.contains("over the 10-byte limit"),
        "{too_big:?}"
    );
    let names: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["layer.tgz"], "a failed build leaves no file behind");
}

fn base64(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = (chunk[0] as u32) << 16
            | (*chunk.get(1).unwrap_or(&0) as u32) << 8
            | *chunk.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
