//! The verdicts on objects recorded from a real Flux (kustomize-, helm- and
//! source-controller of Flux 2.9 on the suite's local control plane, during
//! one manifests session and one chart session; `managedFields` left out).
//! Each file is one moment of a sync, named by what it shows.

use super::*;

/// The revisions pushed in the recorded manifests session, in order.
const FIRST: &str =
    "latest@sha256:0471b6f55d5eaa5d0da19171a833d39f134070cdee5709af0e8ddfa1cdca8557";
const UNREADY: &str =
    "latest@sha256:29a31f3beb7beb05da6c7bb85a8b50df8e4441c67055eece583bca2c05e6bb3c";
const BROKEN_BUILD: &str =
    "latest@sha256:19d10e2fd60f01f25ee0420e62c1b579a6c9e1c40c7db1b1e5c1aa48055470c9";
const INVALID: &str =
    "latest@sha256:3937abe9c567c03b77e4b53d2f745fcd43036d8d22812af46ad026975fb74419";
const FIXED: &str =
    "latest@sha256:6bed9e86778bf61b68793dc7292f3c3c5d2f0e6d58095d98ba7c1efe99452f5a";

/// The chart versions of the recorded chart session, in order.
const INSTALLED: &str = "0.1.0-dev.g4b77a174edc6";
const BROKEN_TEMPLATE: &str = "0.1.0-dev.g6d0be1f81038";
const UPGRADED: &str = "0.1.0-dev.g1969eb318c1e";

fn ks(json: &str) -> Kustomization {
    serde_json::from_str(json).unwrap()
}

fn hr(json: &str) -> HelmRelease {
    serde_json::from_str(json).unwrap()
}

fn repo(json: &str) -> OCIRepository {
    serde_json::from_str(json).unwrap()
}

fn failed(step: Step) -> (String, bool) {
    match step {
        Step::Failed { message, applied } => (message, applied),
        other => panic!("not a failure: {other:?}"),
    }
}

#[test]
fn the_source_is_fetched_only_once_its_artifact_is_the_pushed_revision() {
    let building = repo(include_str!("repo-building.json"));
    assert_eq!(source(Some(&building), UNREADY), Step::Wait);
    // Ready names the new digest before the artifact in the status does.
    let behind = repo(include_str!("repo-stored-status-behind.json"));
    assert_eq!(source(Some(&behind), UNREADY), Step::Wait);
    let fetched = repo(include_str!("repo-fetched.json"));
    assert_eq!(source(Some(&fetched), UNREADY), Step::Ready);
    // What it holds is not what was pushed since.
    assert_eq!(source(Some(&fetched), BROKEN_BUILD), Step::Wait);
    assert_eq!(source(None, UNREADY), Step::Wait);
}

#[test]
fn a_failed_fetch_of_the_revision_is_a_failure_with_flux_s_words() {
    // The recorded "building" moment, its Ready turned False as
    // source-controller sets it when the pull fails (edited: a pull
    // failure was not recorded).
    let mut failing = repo(include_str!("repo-building.json"));
    let status = failing.status.as_mut().unwrap();
    let ready = status
        .conditions
        .iter_mut()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    ready.status = "False".into();
    ready.reason = "OCIArtifactPullFailed".into();
    ready.message = format!("failed to pull artifact 'latest' for revision {UNREADY}: boom");
    let (message, applied) = failed(source(Some(&failing), UNREADY));
    assert!(message.starts_with("failed to pull artifact"), "{message}");
    assert!(!applied);
    // Still progressing is not a failure.
    let ready = failing
        .status
        .as_mut()
        .unwrap()
        .conditions
        .iter_mut()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    ready.reason = "Progressing".into();
    assert_eq!(source(Some(&failing), UNREADY), Step::Wait);
}

#[test]
fn a_kustomization_still_building_the_revision_is_waited_for() {
    let building = ks(include_str!("ks-building.json"));
    assert_eq!(kustomization(Some(&building), UNREADY), Step::Wait);
    assert!(!kustomization_applied(Some(&building), UNREADY));
    assert_eq!(kustomization(None, UNREADY), Step::Wait);
}

#[test]
fn a_kustomization_checking_the_revision_s_health_has_applied_it() {
    let checking = ks(include_str!("ks-health-checking.json"));
    assert_eq!(kustomization(Some(&checking), UNREADY), Step::Applied);
    assert!(kustomization_applied(Some(&checking), UNREADY));
    // Not a sign for the revision before it.
    assert_eq!(kustomization(Some(&checking), FIRST), Step::Wait);
    // Healthy, but Ready not yet decided.
    let healthy = ks(include_str!("ks-healthy-not-yet-ready.json"));
    assert_eq!(kustomization(Some(&healthy), FIXED), Step::Applied);
}

#[test]
fn a_health_check_timeout_is_a_failure_of_an_applied_revision() {
    let timed_out = ks(include_str!("ks-health-check-failed.json"));
    let (message, applied) = failed(kustomization(Some(&timed_out), UNREADY));
    assert!(applied, "the failed revision is what runs now");
    assert!(
        message.starts_with(
            "applied, but the workloads did not become healthy in time: health check failed after"
        ),
        "{message}"
    );
    assert!(message.contains("Deployment/rec-eng/web"), "{message}");
    // The watch had its say: no grace after a failure.
    assert_eq!(
        grace(&kustomization(Some(&timed_out), UNREADY), None),
        Duration::ZERO
    );
}

#[test]
fn a_cancelled_health_check_is_the_previous_revision_s_and_not_a_verdict() {
    let cancelled = ks(include_str!("ks-health-check-canceled.json"));
    // Cancelled by the next push: no verdict on the revision it checked.
    assert!(!kustomization(Some(&cancelled), UNREADY).is_done());
    // Nor on the new one, not yet attempted.
    assert_eq!(kustomization(Some(&cancelled), BROKEN_BUILD), Step::Wait);
}

#[test]
fn a_build_failure_and_a_rejected_object_are_failures_of_unapplied_revisions() {
    let build = ks(include_str!("ks-build-failed.json"));
    let (message, applied) = failed(kustomization(Some(&build), BROKEN_BUILD));
    assert!(!applied);
    assert!(
        message.starts_with("the manifests could not be built (kustomize build failed): "),
        "{message}"
    );
    assert!(message.contains("Deployment.v1.apps/nope"), "{message}");
    let invalid = ks(include_str!("ks-dry-run-failed.json"));
    let (message, applied) = failed(kustomization(Some(&invalid), INVALID));
    assert!(!applied);
    assert!(
        message.starts_with("the API server rejected an object (validation failed): "),
        "{message}"
    );
    assert!(
        message.contains("ConfigMap/rec-eng/bad dry-run failed"),
        "{message}"
    );
}

#[test]
fn a_ready_kustomization_is_ready_for_its_revision_only() {
    let ready = ks(include_str!("ks-ready.json"));
    assert_eq!(kustomization(Some(&ready), FIXED), Step::Ready);
    assert!(kustomization_applied(Some(&ready), FIXED));
    // An older revision pushed again is not what it applied.
    assert_eq!(kustomization(Some(&ready), FIRST), Step::Wait);
    assert!(!kustomization_applied(Some(&ready), FIRST));
}

#[test]
fn the_watch_gets_a_moment_after_flux_s_ready_unless_flux_alone_judges() {
    let ready = kustomization(Some(&ks(include_str!("ks-ready.json"))), FIXED);
    assert_eq!(grace(&ready, None), Duration::from_millis(1500));
    assert_eq!(
        grace(&ready, Some(Judge::Watch)),
        Duration::from_millis(1500)
    );
    assert_eq!(grace(&ready, Some(Judge::Flux)), Duration::ZERO);
}

#[test]
fn a_release_is_waited_for_until_its_version_is_decided() {
    let installing = hr(include_str!("hr-installing.json"));
    assert_eq!(release(Some(&installing), INSTALLED), Step::Wait);
    // Upgrading: still the installed version's status.
    let previous = hr(include_str!("hr-upgrading-previous.json"));
    assert_eq!(release(Some(&previous), BROKEN_TEMPLATE), Step::Wait);
    // (Its Ready is undecided while the upgrade runs.)
    assert_eq!(release(Some(&previous), INSTALLED), Step::Wait);
    let upgrading = hr(include_str!("hr-upgrading.json"));
    assert_eq!(release(Some(&upgrading), BROKEN_TEMPLATE), Step::Wait);
    assert_eq!(release(None, INSTALLED), Step::Wait);
}

#[test]
fn a_failed_upgrade_is_a_failure_in_words_and_leaves_the_previous_release() {
    let failed_upgrade = hr(include_str!("hr-upgrade-failed.json"));
    let (message, applied) = failed(release(Some(&failed_upgrade), BROKEN_TEMPLATE));
    assert!(!applied);
    assert!(
        message.starts_with("a template does not render: Helm upgrade failed"),
        "{message}"
    );
    let upgraded = hr(include_str!("hr-upgraded.json"));
    assert_eq!(release(Some(&upgraded), UPGRADED), Step::Ready);
    assert_eq!(release(Some(&upgraded), BROKEN_TEMPLATE), Step::Wait);
}

#[test]
fn the_words_of_a_rollout_failure_and_of_a_timeout_with_its_reason() {
    assert_eq!(
        rollout_failure("Deployment/d/web: pod web-1 crashes"),
        "the rollout cannot succeed: Deployment/d/web: pod web-1 crashes"
    );
    // kustomize-controller waits at least 30 s.
    assert_eq!(
        unhealthy_in_time("pod web-1 is not ready", Duration::from_secs(5)),
        "applied, but the workloads did not become healthy within Flux's health check timeout \
         (30s): pod web-1 is not ready"
    );
}
