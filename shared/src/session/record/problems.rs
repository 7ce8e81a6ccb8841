//! The last sync's problems, one per cause, as the session knows them: the
//! record's `problems` annotation (JSON, added later: readers take a missing
//! or unreadable value as none). Each names what it is about — a file and
//! line (a YAML error), an object (`Kind/namespace/name`, from Flux's or the
//! rollout's words) and, when the API server named one, the field — so an
//! editor can put it on the line that produced it (see [`crate::lsp`]).
//!
//! Built here from what a failed sync says ([`from_failure`], [`yaml_error`]),
//! pure and unit-tested; written by [`super::writer`].

/// The most problems kept per sync.
pub const MAX_PROBLEMS: usize = 20;
/// The longest message kept per problem (characters).
pub const MAX_MESSAGE: usize = 1000;

/// One cause of a failed sync (JSON, camelCase keys; fields are only ever added).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    /// The phase that failed (`validate`, `build`, `push`, `fetch`, `apply`).
    pub phase: String,
    /// `Kind/namespace/name` (or `Kind/name`) as the cluster named it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// The file, relative to the session's packaged root, `/`-separated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// 1-based line and column in `file`, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
    /// The field the API server named (`spec.replicas`, `data[a b]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The container a pod problem is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// A short cause: `YAML`, `Invalid`, `Immutable`, `Forbidden`,
    /// `BuildFailed`, `CrashLoopBackOff`, `ImagePull`, `Unschedulable`,
    /// `Unready`, `Failed`.
    pub reason: String,
    /// In words (at most [`MAX_MESSAGE`] characters).
    pub message: String,
}

impl Problem {
    /// Whether nothing had reached the cluster when it happened: a later
    /// sync that finds the content unchanged has passed those checks.
    pub fn before_push(&self) -> bool {
        matches!(self.phase.as_str(), "validate" | "build" | "push")
    }
}

/// The annotation's value.
pub fn to_annotation(problems: &[Problem]) -> String {
    serde_json::to_string(problems).unwrap_or_else(|_| "[]".into())
}

/// Reads the annotation (none when missing or unreadable: older sessions
/// did not write it).
pub fn from_annotation(value: Option<&str>) -> Vec<Problem> {
    value
        .and_then(|v| serde_json::from_str(v).ok())
        .unwrap_or_default()
}

fn clip(s: &str) -> String {
    s.trim().chars().take(MAX_MESSAGE).collect()
}

/// A YAML syntax error at its file (relative to the root), 1-based line
/// and column (0: unknown).
pub fn yaml_error(file: &str, line: usize, column: usize, message: &str) -> Problem {
    Problem {
        phase: "validate".into(),
        object: None,
        file: Some(file.to_string()),
        line: u32::try_from(line).ok().filter(|l| *l > 0),
        column: u32::try_from(column).ok().filter(|c| *c > 0),
        field: None,
        container: None,
        reason: "YAML".into(),
        message: clip(message),
    }
}

/// Whether `w` reads as `Kind/name` or `Kind/namespace/name`.
fn object_word(w: &str) -> Option<String> {
    let w = w.trim_matches(|c: char| matches!(c, '"' | '\'' | '(' | ')' | ',' | ';' | ':' | '.'));
    let parts: Vec<&str> = w.split('/').collect();
    if !(2..=3).contains(&parts.len()) {
        return None;
    }
    let kind = parts[0];
    let kind_ok = kind.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && kind.chars().any(|c| c.is_ascii_lowercase())
        && kind.chars().all(|c| c.is_ascii_alphanumeric());
    let names_ok = parts[1..].iter().all(|p| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
    });
    (kind_ok && names_ok).then(|| w.to_string())
}

/// The first object a line names.
fn object_in(line: &str) -> Option<String> {
    line.split_whitespace().find_map(object_word)
}

/// The field an API server error names (`spec.replicas: Invalid value: …`,
/// `unknown field "spec.foo"`).
fn field_in(line: &str) -> Option<String> {
    const MARKS: &[&str] = &[
        ": Invalid value",
        ": Required value",
        ": Unsupported value",
        ": Forbidden",
        ": Duplicate value",
        ": Too long",
        ": Too many",
        ": Not found",
    ];
    for mark in MARKS {
        if let Some(i) = line.find(mark) {
            let head = &line[..i];
            // The field starts after the previous ": " (or the object's words).
            let start = head.rfind(": ").map_or(0, |j| j + 2);
            let field = head[start..].trim();
            if !field.is_empty() && !field.contains(' ') || field.contains('[') {
                return Some(field.trim_start_matches('.').to_string());
            }
        }
    }
    let rest = line.split("unknown field \"").nth(1)?;
    let field = rest.split('"').next()?;
    (!field.is_empty()).then(|| field.trim_start_matches('.').to_string())
}

fn container_in(line: &str) -> Option<String> {
    let mut words = line.split_whitespace();
    while let Some(w) = words.next() {
        if w == "container" {
            return words
                .next()
                .map(|c| c.trim_end_matches([':', ',']).to_string());
        }
    }
    None
}

/// The cause in one word (see [`Problem::reason`]).
fn reason_in(line: &str) -> &'static str {
    let l = line.to_ascii_lowercase();
    if l.contains("crashloopbackoff") {
        "CrashLoopBackOff"
    } else if l.contains("cannot pull its image")
        || l.contains("imagepullbackoff")
        || l.contains("errimagepull")
    {
        "ImagePull"
    } else if l.contains("cannot be scheduled") || l.contains("unschedulable") {
        "Unschedulable"
    } else if l.contains("readiness probe") || l.contains("running but not ready") {
        "Unready"
    } else if l.contains("field is immutable") {
        "Immutable"
    } else if l.contains("kustomize build failed") {
        "BuildFailed"
    } else if l.contains("(forbidden)")
        || l.contains("denied request")
        || l.contains("is forbidden")
        || l.contains("sandbox")
    {
        "Forbidden"
    } else if l.contains("(invalid)") || l.contains("is invalid") || l.contains("invalid value") {
        "Invalid"
    } else {
        "Failed"
    }
}

/// The problems of a failed sync, from its message (the controller's words
/// may name several objects, one a line: one problem each) and the file the
/// session attributed it to. A message that names no object is one problem.
pub fn from_failure(phase: &str, message: &str, file: Option<&str>) -> Vec<Problem> {
    let mut out: Vec<Problem> = Vec::new();
    let lines: Vec<&str> = message.lines().filter(|l| !l.trim().is_empty()).collect();
    let named: Vec<(&str, String)> = lines
        .iter()
        .filter_map(|l| object_in(l).map(|o| (*l, o)))
        .collect();
    if named.is_empty() {
        out.push(Problem {
            phase: phase.into(),
            object: None,
            file: file.map(str::to_string),
            line: None,
            column: None,
            field: lines.iter().find_map(|l| field_in(l)),
            container: None,
            reason: reason_in(message).into(),
            message: clip(message),
        });
        return out;
    }
    // The first line's words before the object explain it ("the API server
    // rejected an object: …"): kept on the first problem only.
    for (line, object) in named {
        let p = Problem {
            phase: phase.into(),
            file: (out.is_empty() && file.is_some())
                .then(|| file.map(str::to_string))
                .flatten(),
            line: None,
            column: None,
            field: field_in(line),
            container: container_in(line),
            reason: reason_in(line).into(),
            message: clip(line),
            object: Some(object),
        };
        let dup = out
            .iter()
            .any(|q| q.object == p.object && q.field == p.field && q.reason == p.reason);
        if !dup && out.len() < MAX_PROBLEMS {
            out.push(p);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dry_run_rejection_names_its_object_field_and_reason() {
        let m = "the API server rejected an object (validation failed): ConfigMap/rec-eng/bad \
                 dry-run failed (Invalid): ConfigMap \"bad\" is invalid: data[a b]: Invalid value: \
                 \"a b\": a valid config key must consist of alphanumeric characters\n";
        let p = from_failure("apply", m, Some("cm.yaml"));
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].object.as_deref(), Some("ConfigMap/rec-eng/bad"));
        assert_eq!(p[0].field.as_deref(), Some("data[a b]"));
        assert_eq!(p[0].reason, "Invalid");
        assert_eq!(p[0].file.as_deref(), Some("cm.yaml"));
    }

    #[test]
    fn immutable_fields_and_several_objects_give_one_problem_each() {
        let m = "ReconciliationFailed: Deployment/dev/web dry-run failed (Invalid): Deployment.apps \
                 \"web\" is invalid: spec.selector: Invalid value: {}: field is immutable\n\
                 Service/dev/web dry-run failed (Invalid): Service \"web\" is invalid: \
                 spec.ports[0].port: Invalid value: 0: must be between 1 and 65535\n\
                 Service/dev/web dry-run failed (Invalid): Service \"web\" is invalid: \
                 spec.ports[0].port: Invalid value: 0: must be between 1 and 65535";
        let p = from_failure("apply", m, None);
        assert_eq!(p.len(), 2, "{p:#?}");
        assert_eq!(p[0].reason, "Immutable");
        assert_eq!(p[0].field.as_deref(), Some("spec.selector"));
        assert_eq!(p[1].object.as_deref(), Some("Service/dev/web"));
        assert_eq!(p[1].field.as_deref(), Some("spec.ports[0].port"));
    }

    #[test]
    fn rollout_failures_keep_the_pods_reason_and_container() {
        let m = "the rollout cannot succeed: Deployment/dev/web: pod web-5d9c-abcde container app: \
                 CrashLoopBackOff (exit 3), restarted 2 time(s)";
        let p = from_failure("apply", m, Some("deploy.yaml"));
        assert_eq!(p[0].object.as_deref(), Some("Deployment/dev/web"));
        assert_eq!(p[0].reason, "CrashLoopBackOff");
        assert_eq!(p[0].container.as_deref(), Some("app"));
        assert!(p[0].message.contains("exit 3"));
        let m = "Deployment/dev/web: pod web-1 container app cannot pull its image \"nope:1\": ErrImagePull";
        assert_eq!(from_failure("apply", m, None)[0].reason, "ImagePull");
        let m = "Deployment/dev/web: pod web-1 cannot be scheduled: 0/1 nodes are available";
        assert_eq!(from_failure("apply", m, None)[0].reason, "Unschedulable");
    }

    #[test]
    fn messages_without_an_object_are_one_problem_and_words_are_not_objects() {
        let m =
            "registry localhost:5000 is unreachable: connection refused (oci://localhost:5000/x)";
        let p = from_failure("push", m, None);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].object, None);
        assert_eq!(object_word("and/or"), None);
        assert_eq!(object_word("HTTP/1.1"), None);
        assert_eq!(object_word("Namespace/dev"), Some("Namespace/dev".into()));
    }

    #[test]
    fn yaml_errors_keep_their_place_and_the_codec_reads_old_records_as_none() {
        let p = vec![yaml_error(
            "a/b.yaml",
            3,
            7,
            "mapping values are not allowed here",
        )];
        assert_eq!((p[0].line, p[0].column), (Some(3), Some(7)));
        assert_eq!(from_annotation(Some(&to_annotation(&p))), p);
        assert!(from_annotation(None).is_empty());
        assert!(from_annotation(Some("not json")).is_empty());
    }
}
