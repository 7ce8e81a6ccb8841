//! The mapping from what the cluster named to file:line, on small trees:
//! plain directories, several documents a file, overlays with strategic
//! merge and JSON 6902 patches, name prefixes, YAML errors.

use super::*;
use crate::session::record::problems::{self, Problem};
use crate::testutil::write_tree;

const DEPLOY: &str = "\
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  a: b
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 1
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: sidecar
        image: busybox
      - name: app
        image: nginx:1.27
        readinessProbe:
          httpGet:
            port: 80
";

fn at(p: &Option<Place>) -> Option<(String, usize, usize)> {
    p.as_ref().map(|p| {
        (
            p.file.file_name().unwrap().to_string_lossy().to_string(),
            p.line,
            p.column,
        )
    })
}

#[test]
fn documents_are_split_with_their_lines_and_names() {
    let docs = documents(DEPLOY);
    assert_eq!(docs.len(), 2);
    assert_eq!((docs[0].start, docs[0].end), (0, 6));
    assert_eq!(docs[1].start, 7);
    assert_eq!(docs[1].kind.as_deref(), Some("Deployment"));
    assert_eq!(docs[1].name.as_deref(), Some("web"));
    assert_eq!(doc_at(DEPLOY, 12).unwrap().name.as_deref(), Some("web"));
    assert_eq!(doc_at(DEPLOY, 3).unwrap().name.as_deref(), Some("settings"));
    assert!(documents("---\n# only a comment\n---\n").is_empty());
}

#[test]
fn fields_are_found_by_path_index_and_container_name() {
    let doc = &documents(DEPLOY)[1];
    let line = |f: &str| field_place(DEPLOY, doc, f);
    assert_eq!(line("spec.replicas"), Some((12, 2, true)));
    assert_eq!(line("spec.selector"), Some((13, 2, true)));
    assert_eq!(
        line("spec.template.spec.containers[1].image"),
        Some((25, 8, true))
    );
    assert_eq!(
        line("spec.template.spec.containers[app]"),
        Some((24, 8, true))
    );
    assert_eq!(
        line("spec.template.spec.containers[sidecar].image"),
        Some((23, 8, true))
    );
    assert_eq!(
        line("spec.template.spec.containers[app].readinessProbe"),
        Some((26, 8, true))
    );
    // The deepest part found, and not the whole path.
    assert_eq!(line("spec.strategy.type"), Some((11, 0, false)));
    // A key of a sibling is not a child.
    assert_eq!(
        line("spec.template.spec.containers[app].replicas"),
        Some((24, 8, false))
    );
    let cm = &documents(DEPLOY)[0];
    assert_eq!(field_place(DEPLOY, cm, "data[a]"), Some((5, 2, true)));
}

fn problem(object: &str, message: &str) -> Problem {
    problems::from_failure("apply", message, None)
        .into_iter()
        .next()
        .map(|mut p| {
            p.object = Some(object.into());
            p
        })
        .unwrap()
}

#[test]
fn a_rejected_field_goes_to_its_line_in_a_plain_directory() {
    let t = tempfile::tempdir().unwrap();
    write_tree(t.path(), &[("app/deploy.yaml", DEPLOY)]);
    let dir = t.path().join("app");
    let p = problem(
        "Deployment/dev/web",
        "Deployment/dev/web dry-run failed (Invalid): Deployment.apps \"web\" is invalid: \
         spec.replicas: Invalid value: -1: must be greater than or equal to 0",
    );
    assert_eq!(
        at(&locate(t.path(), &dir, &p)),
        Some(("deploy.yaml".into(), 12, 2))
    );
    // The pod's problems: the container, its image, its probe.
    let crash = problem(
        "Deployment/dev/web",
        "Deployment/dev/web: pod web-1 container app: CrashLoopBackOff (exit 1), restarted 2 time(s)",
    );
    assert_eq!(at(&locate(t.path(), &dir, &crash)).unwrap().1, 24);
    let pull = problem(
        "Deployment/dev/web",
        "Deployment/dev/web: pod web-1 container sidecar cannot pull its image \"busybox\": ErrImagePull",
    );
    assert_eq!(at(&locate(t.path(), &dir, &pull)).unwrap().1, 23);
    // A pod running but not ready names no container (the session's words
    // for the kubelet's probe): the one container with a readiness probe.
    let unready = problem(
        "Deployment/dev/web",
        "applied, but the workloads did not become healthy within Flux's health check timeout \
         (30s): Deployment/dev/web: pod web-1 is running but not ready (readiness probe failing: \
         HTTP probe failed with statuscode: 503)",
    );
    assert_eq!(unready.reason, "Unready");
    assert_eq!(
        at(&locate(t.path(), &dir, &unready)),
        Some(("deploy.yaml".into(), 26, 8))
    );
    // No field: the document's name.
    let other = problem(
        "ConfigMap/dev/settings",
        "ConfigMap/dev/settings: something",
    );
    assert_eq!(at(&locate(t.path(), &dir, &other)).unwrap().1, 3);
    // Not defined here: nowhere.
    let gone = problem("Secret/dev/nope", "Secret/dev/nope: something");
    assert_eq!(locate(t.path(), &dir, &gone), None);
}

#[test]
fn through_an_overlay_the_patch_that_sets_the_field_else_the_base() {
    let t = tempfile::tempdir().unwrap();
    write_tree(
        t.path(),
        &[
            ("base/deploy.yaml", DEPLOY),
            ("base/kustomization.yaml", "resources:\n- deploy.yaml\n"),
            (
                "dev/kustomization.yaml",
                "namePrefix: dev-\nresources:\n- ../base\npatches:\n- path: replicas.yaml\n\
                 - path: image.json.yaml\n  target:\n    kind: Deployment\n    name: web\n",
            ),
            (
                "dev/replicas.yaml",
                "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: -1\n",
            ),
            (
                "dev/image.json.yaml",
                "- op: replace\n  path: /spec/template/spec/containers/1/image\n  value: nope\n",
            ),
        ],
    );
    let dir = t.path().join("dev");
    let replicas = problem(
        "Deployment/dev/dev-web",
        "Deployment/dev/dev-web dry-run failed (Invalid): spec.replicas: Invalid value: -1: must be",
    );
    assert_eq!(
        at(&locate(t.path(), &dir, &replicas)),
        Some(("replicas.yaml".into(), 5, 2))
    );
    let image = problem(
        "Deployment/dev/dev-web",
        "Deployment/dev/dev-web dry-run failed (Invalid): spec.template.spec.containers[1].image: \
         Required value",
    );
    assert_eq!(
        at(&locate(t.path(), &dir, &image)),
        Some(("image.json.yaml".into(), 1, 2))
    );
    // A field no patch sets: the base document.
    let selector = problem(
        "Deployment/dev/dev-web",
        "Deployment/dev/dev-web dry-run failed (Invalid): spec.selector: Invalid value: {}: \
         field is immutable",
    );
    assert_eq!(selector.reason, "Immutable");
    assert_eq!(
        at(&locate(t.path(), &dir, &selector)),
        Some(("deploy.yaml".into(), 13, 2))
    );
}

#[test]
fn yaml_errors_keep_their_place_and_build_failures_find_the_kustomization_line() {
    let t = tempfile::tempdir().unwrap();
    write_tree(
        t.path(),
        &[
            ("app/bad.yaml", "a: b\n  c: d\n"),
            (
                "app/kustomization.yaml",
                "resources:\n- bad.yaml\n- missing.yaml\n",
            ),
        ],
    );
    let dir = t.path().join("app");
    let y = problems::yaml_error("app/bad.yaml", 2, 4, "mapping values are not allowed");
    let p = locate(t.path(), &dir, &y).unwrap();
    assert_eq!((p.line, p.column, p.end_column), (1, 3, 6));
    let b = problems::from_failure(
        "apply",
        "the manifests could not be built (kustomize build failed): accumulating resources: \
         accumulation err='accumulating resources from 'missing.yaml': open missing.yaml: no such file'",
        None,
    );
    assert_eq!(b[0].reason, "BuildFailed");
    assert_eq!(
        at(&locate(t.path(), &dir, &b[0])),
        Some(("kustomization.yaml".into(), 2, 2))
    );
}
