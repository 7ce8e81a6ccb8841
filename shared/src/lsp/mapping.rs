//! Where a session's problem is in the files: from what the cluster named
//! (an object `Kind/namespace/name`, a field such as `spec.replicas`, a
//! container) to a file, a line and a column, through kustomize overlays —
//! the patch that sets the field when that is where it came from, else the
//! base document that defines the object. Pure functions of the files on
//! disk (unit-tested on small trees); a YAML error keeps the place the
//! session recorded.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::kustomize;
use crate::session::record::problems::Problem;

/// One YAML document of a file: its lines (`start..end`, 0-based) and what
/// it defines.
#[derive(Debug, Clone, PartialEq)]
pub struct Doc {
    pub start: usize,
    pub end: usize,
    pub kind: Option<String>,
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub value: Value,
}

/// A place in a file: 0-based line and column, and where the line's text ends.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Place {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub end_column: usize,
}

fn is_separator(line: &str) -> bool {
    line.strip_prefix("---")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '#']))
}

/// The documents of a YAML file, in order (empty ones left out).
pub fn documents(text: &str) -> Vec<Doc> {
    let lines: Vec<&str> = text.lines().collect();
    let mut docs = Vec::new();
    let mut start = 0;
    let mut push = |start: usize, end: usize| {
        let body = lines[start..end].join("\n");
        let has_content = lines[start..end].iter().any(|l| {
            let t = l.trim();
            !t.is_empty() && !t.starts_with('#')
        });
        if !has_content {
            return;
        }
        let value: Value = serde_saphyr::from_str(&body).unwrap_or(Value::Null);
        let s = |v: &Value| v.as_str().map(str::to_string);
        docs.push(Doc {
            start,
            end,
            kind: s(&value["kind"]),
            name: s(&value["metadata"]["name"]),
            namespace: s(&value["metadata"]["namespace"]),
            value,
        });
    };
    for (i, l) in lines.iter().enumerate() {
        if is_separator(l) {
            push(start, i);
            start = i + 1;
        }
    }
    push(start, lines.len());
    docs
}

/// The document holding 0-based `line`.
pub fn doc_at(text: &str, line: usize) -> Option<Doc> {
    documents(text)
        .into_iter()
        .find(|d| (d.start..d.end.max(d.start + 1)).contains(&line))
}

/// A segment of a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    /// `[0]`: the n-th list item.
    Index(usize),
    /// `[app]`: the list item named so, or a map key (`data[a b]`).
    Named(String),
}

fn segments(field: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    let mut rest = field.trim_start_matches('.');
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('[') {
            let (inside, after) = r.split_once(']').unwrap_or((r, ""));
            out.push(match inside.parse::<usize>() {
                Ok(n) => Seg::Index(n),
                Err(_) => Seg::Named(inside.trim_matches(['"', '\'']).to_string()),
            });
            rest = after.trim_start_matches('.');
        } else {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            out.push(Seg::Key(rest[..end].to_string()));
            rest = rest[end..].trim_start_matches('.');
        }
    }
    out
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

fn content(line: &str) -> bool {
    let t = line.trim();
    !t.is_empty() && !t.starts_with('#')
}

/// Where a line's key starts (after list dashes).
fn key_col(line: &str) -> usize {
    let mut col = indent(line);
    let mut rest = &line[col..];
    while let Some(r) = rest.strip_prefix("- ") {
        let skipped = r.len() - r.trim_start_matches(' ').len();
        col += 2 + skipped;
        rest = &r[skipped..];
    }
    col
}

/// The key a line sets, if it sets one (`key:` or `"key":`).
fn key_of(line: &str) -> Option<&str> {
    let rest = &line[key_col(line)..];
    let (k, _) = rest.split_once(':')?;
    let k = k.trim().trim_matches(['"', '\'']);
    (!k.is_empty()).then_some(k)
}

fn value_of(line: &str) -> &str {
    line[key_col(line)..]
        .split_once(':')
        .map_or("", |(_, v)| v.trim().trim_matches(['"', '\'']))
}

/// The lines below line `k` that belong to it: more indented (a list
/// may sit at a key's own indent); for a list item, up to the next item.
fn children(lines: &[&str], k: usize, end: usize) -> (usize, usize) {
    let d = indent(lines[k]);
    let is_item = lines[k][d..].starts_with("- ");
    let c = key_col(lines[k]);
    let mut j = k + 1;
    while j < end {
        let l = lines[j];
        if content(l) {
            let i = indent(l);
            let stop = if is_item {
                i <= d
            } else {
                i < c || (i == c && !l[i..].starts_with("- "))
            };
            if stop {
                break;
            }
        }
        j += 1;
    }
    (k + 1, j)
}

/// The list items directly in `from..to`: their first lines.
fn items(lines: &[&str], from: usize, to: usize) -> Vec<usize> {
    let Some(first) = (from..to).find(|&i| content(lines[i])) else {
        return Vec::new();
    };
    let dash = indent(lines[first]);
    (from..to)
        .filter(|&i| indent(lines[i]) == dash && lines[i][dash..].starts_with("- "))
        .collect()
}

/// The line of a key directly in `from..to` (including a list item's first key on its dash line).
fn find_key(lines: &[&str], from: usize, to: usize, key: &str) -> Option<usize> {
    let first = (from..to).find(|&i| content(lines[i]))?;
    let level = key_col(lines[first]);
    (from..to)
        .find(|&i| content(lines[i]) && key_col(lines[i]) == level && key_of(lines[i]) == Some(key))
}

/// The line and column of `field` in the document `doc` of `text`, and
/// whether the whole path was found (else the deepest part that was).
pub fn field_place(text: &str, doc: &Doc, field: &str) -> Option<(usize, usize, bool)> {
    let lines: Vec<&str> = text.lines().collect();
    let end = doc.end.min(lines.len());
    let (mut from, mut to) = (doc.start, end);
    let mut found: Option<usize> = None;
    for seg in segments(field) {
        let hit = match &seg {
            Seg::Key(k) => find_key(&lines, from, to, k),
            Seg::Index(n) => items(&lines, from, to).get(*n).copied(),
            Seg::Named(name) => items(&lines, from, to)
                .into_iter()
                .find(|&i| {
                    let (f, t) = children(&lines, i, to);
                    key_of(lines[i]) == Some("name") && value_of(lines[i]) == name
                        || find_key(&lines, f, t, "name")
                            .is_some_and(|n| value_of(lines[n]) == name)
                })
                .or_else(|| find_key(&lines, from, to, name)),
        };
        let Some(line) = hit else {
            return found.map(|l| (l, key_col(lines[l]), false));
        };
        found = Some(line);
        let (f, t) = children(&lines, line, to);
        // A list item's keys begin on its own line.
        let item = matches!(seg, Seg::Index(_) | Seg::Named(_))
            && lines[line][indent(lines[line])..].starts_with("- ");
        (from, to) = if item { (line, t) } else { (f, t) };
    }
    found.map(|l| (l, key_col(lines[l]), true))
}

fn place(file: &Path, text: &str, line: usize, column: usize) -> Place {
    let end_column = text
        .lines()
        .nth(line)
        .map_or(column, |l| l.trim_end().len().max(column + 1));
    Place {
        file: file.to_path_buf(),
        line,
        column,
        end_column,
    }
}

/// `(kind, namespace, name)` of `Kind/namespace/name` or `Kind/name`.
pub fn split_object(object: &str) -> Option<(&str, Option<&str>, &str)> {
    let parts: Vec<&str> = object.split('/').collect();
    match parts[..] {
        [kind, ns, name] => Some((kind, Some(ns), name)),
        [kind, name] => Some((kind, None, name)),
        _ => None,
    }
}

/// Whether a manifest's name is the live object's (kustomize may have added
/// a prefix or a suffix).
fn same_name(doc_name: &str, live: &str) -> bool {
    doc_name == live
        || (live.len() > doc_name.len() && (live.starts_with(doc_name) || live.ends_with(doc_name)))
}

const WORKLOAD_POD_SPEC: &[(&str, &str)] = &[
    ("Deployment", "spec.template.spec"),
    ("StatefulSet", "spec.template.spec"),
    ("DaemonSet", "spec.template.spec"),
    ("ReplicaSet", "spec.template.spec"),
    ("Job", "spec.template.spec"),
    ("CronJob", "spec.jobTemplate.spec.template.spec"),
    ("Pod", "spec"),
];

/// The field a problem is about: the API server's, or for a pod's problem
/// the container (its image when it cannot be pulled, its probe when it
/// fails).
pub fn field_of(p: &Problem, kind: &str) -> Option<String> {
    if let Some(f) = &p.field {
        return Some(f.clone());
    }
    let (_, spec) = WORKLOAD_POD_SPEC.iter().find(|(k, _)| *k == kind)?;
    let container = p
        .container
        .as_ref()
        .map(|c| format!("{spec}.containers[{c}]"));
    match p.reason.as_str() {
        "ImagePull" => container.map(|c| format!("{c}.image")),
        "Unready" => container
            .map(|c| format!("{c}.readinessProbe"))
            .or_else(|| Some(format!("{spec}.containers"))),
        "CrashLoopBackOff" => container,
        _ => None,
    }
}

/// The readiness probe of a workload's document when one container has
/// one: a pod "running but not ready" names no container, and the probe is
/// the only line that can make it so.
fn probed_container(doc: &Doc, kind: &str) -> Option<String> {
    let (_, spec) = WORKLOAD_POD_SPEC.iter().find(|(k, _)| *k == kind)?;
    let pointer = format!("/{}/containers", spec.replace('.', "/"));
    let probed: Vec<&str> = doc
        .value
        .pointer(&pointer)?
        .as_array()?
        .iter()
        .filter(|c| !c["readinessProbe"].is_null())
        .filter_map(|c| c["name"].as_str())
        .collect();
    match probed[..] {
        [one] => Some(format!("{spec}.containers[{one}].readinessProbe")),
        _ => None,
    }
}

/// A file and its text (`None` when unreadable).
fn read(file: &Path) -> Option<String> {
    std::fs::read_to_string(file).ok()
}

/// The patches of the kustomizations of `dir` (followed transitively) that
/// may change `kind/name`: `(patch file, target named in the kustomization)`.
fn patches_of(dir: &Path) -> Vec<(PathBuf, Option<(String, String)>)> {
    let Ok(scan) = kustomize::scan(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for k in &scan.files {
        let Some(text) = read(k) else { continue };
        let Ok(v) = serde_saphyr::from_str::<Value>(&text) else {
            continue;
        };
        let base = k.parent().unwrap_or(dir);
        let target = |e: &Value| {
            let t = &e["target"];
            t["kind"].as_str().map(|kind| {
                (
                    kind.to_string(),
                    t["name"].as_str().unwrap_or_default().to_string(),
                )
            })
        };
        for e in v["patches"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(v["patchesJson6902"].as_array().into_iter().flatten())
        {
            if let Some(p) = e["path"].as_str() {
                out.push((kustomize::normalize(&base.join(p)), target(e)));
            }
        }
        for e in v["patchesStrategicMerge"].as_array().into_iter().flatten() {
            if let Some(p) = e.as_str().filter(|p| !p.contains('\n')) {
                out.push((kustomize::normalize(&base.join(p)), None));
            }
        }
    }
    out
}

/// A JSON 6902 path (`/spec/replicas`) as a field (`spec.replicas`).
fn pointer_field(path: &str) -> String {
    path.trim_start_matches('/')
        .split('/')
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect::<Vec<_>>()
        .join(".")
}

/// A field with its indices as dotted segments (`a[0].b` → `a.0.b`).
fn dotted(field: &str) -> String {
    field
        .replace('[', ".")
        .replace(']', "")
        .trim_matches('.')
        .to_string()
}

/// Where a patch file changes `field` of `kind/name`.
fn in_patch(
    file: &Path,
    target: Option<&(String, String)>,
    kind: &str,
    name: &str,
    field: &str,
) -> Option<Place> {
    let text = read(file)?;
    let docs = documents(&text);
    // JSON 6902: a list of operations, the target named in the kustomization.
    if let Some((tk, tn)) = target
        && tk == kind
        && (tn.is_empty() || same_name(tn, name))
        && let Some(ops) = docs.first().and_then(|d| d.value.as_array())
    {
        let want = dotted(field);
        for op in ops {
            let Some(path) = op["path"].as_str() else {
                continue;
            };
            let have = dotted(&pointer_field(path));
            if want == have
                || want.starts_with(&format!("{have}."))
                || have.starts_with(&format!("{want}."))
            {
                let line = text.lines().position(|l| l.contains(path))?;
                let col = text.lines().nth(line).map_or(0, key_col);
                return Some(place(file, &text, line, col));
            }
        }
        return None;
    }
    // Strategic merge: a partial document of the object.
    for doc in &docs {
        let kind_ok = doc.kind.as_deref() == Some(kind)
            || target.is_some_and(|(tk, _)| tk == kind) && doc.kind.is_none();
        let name_ok = doc.name.as_deref().is_some_and(|n| same_name(n, name))
            || target.is_some_and(|(_, tn)| same_name(tn, name));
        if kind_ok
            && name_ok
            && let Some((line, col, true)) = field_place(&text, doc, field)
        {
            return Some(place(file, &text, line, col));
        }
    }
    None
}

/// The base document defining `kind/name` among what `dir` applies (`hint`
/// first: the file the session attributed the problem to).
fn base_doc(
    dir: &Path,
    hint: Option<&Path>,
    kind: &str,
    name: &str,
) -> Option<(PathBuf, String, Doc)> {
    let mut files: Vec<PathBuf> = hint.map(Path::to_path_buf).into_iter().collect();
    if let Ok(applied) = kustomize::applied(dir) {
        files.extend(applied.files.into_iter().map(|(f, _)| f));
    }
    let mut loose = None;
    for f in files {
        let Some(text) = read(&f) else { continue };
        for doc in documents(&text) {
            if doc.kind.as_deref() != Some(kind) {
                continue;
            }
            match doc.name.as_deref() {
                Some(n) if n == name => return Some((f, text, doc)),
                Some(n) if loose.is_none() && same_name(n, name) => {
                    loose = Some((f.clone(), text.clone(), doc.clone()));
                }
                _ => {}
            }
        }
    }
    loose
}

/// A line of a document to put a problem on when no field is named: its
/// `metadata.name`, else its first line.
fn doc_line(text: &str, doc: &Doc) -> (usize, usize) {
    match field_place(text, doc, "metadata.name") {
        Some((l, c, true)) => (l, c),
        _ => (doc.start, 0),
    }
}

/// The kustomization line whose reference a build failure names (a
/// missing file), else the patch whose object it names, else the top of
/// the directory's kustomization.
fn build_failure_place(dir: &Path, message: &str) -> Option<Place> {
    let kustomizations = kustomize::scan(dir).map(|s| s.files).unwrap_or_default();
    for f in &kustomizations {
        let Some(text) = read(f) else { continue };
        for (i, l) in text.lines().enumerate() {
            let t = l.trim().trim_start_matches("- ").trim();
            if t.starts_with("apiVersion:") || t.starts_with("kind:") || t.starts_with('#') {
                continue;
            }
            let v = t
                .split_once(": ")
                .map_or(t, |(_, v)| v)
                .trim()
                .trim_matches(['"', '\'']);
            if v.len() > 2 && !v.ends_with(':') && message.contains(v) {
                return Some(place(f, &text, i, key_col(l)));
            }
        }
    }
    for (f, _) in patches_of(dir) {
        let Some(text) = read(&f) else { continue };
        for doc in documents(&text) {
            if let Some(n) = &doc.name
                && (message.contains(&format!("/{n}.")) || message.contains(&format!("\"{n}\"")))
            {
                let (line, col) = doc_line(&text, &doc);
                return Some(place(&f, &text, line, col));
            }
        }
    }
    let k = kustomize::file_in(dir)?;
    let text = read(&k)?;
    Some(place(&k, &text, 0, 0))
}

/// Where `p`, a problem of the session syncing `dir` (packaged from
/// `root`), belongs; `None` when nothing in the files names it (a push
/// that failed, say).
pub fn locate(root: &Path, dir: &Path, p: &Problem) -> Option<Place> {
    // A relative path inside the root, nothing else.
    let hint = p
        .file
        .as_ref()
        .map(Path::new)
        .filter(|f| {
            f.components()
                .all(|c| matches!(c, std::path::Component::Normal(_)))
        })
        .map(|f| root.join(f));
    if let (Some(file), Some(line)) = (&hint, p.line) {
        let text = read(file).unwrap_or_default();
        let line = usize::try_from(line.saturating_sub(1)).unwrap_or(0);
        let column = p
            .column
            .and_then(|c| usize::try_from(c.saturating_sub(1)).ok())
            .unwrap_or(0);
        let mut at = place(file, &text, line, column);
        if at.end_column <= column {
            at.end_column = column + 1;
        }
        return Some(at);
    }
    if let Some((kind, _, name)) = p.object.as_deref().and_then(split_object) {
        let base = base_doc(dir, hint.as_deref(), kind, name);
        let field = match (&base, p.container.is_none() && p.reason == "Unready") {
            (Some((_, _, doc)), true) => probed_container(doc, kind).or_else(|| field_of(p, kind)),
            _ => field_of(p, kind),
        };
        if let Some(field) = &field {
            for (patch, target) in patches_of(dir) {
                if let Some(at) = in_patch(&patch, target.as_ref(), kind, name, field) {
                    return Some(at);
                }
            }
        }
        if let Some((file, text, doc)) = base {
            let (line, col) = match field.as_deref().and_then(|f| field_place(&text, &doc, f)) {
                Some((l, c, _)) => (l, c),
                None => doc_line(&text, &doc),
            };
            return Some(place(&file, &text, line, col));
        }
    }
    if p.reason == "BuildFailed" {
        return build_failure_place(dir, &p.message);
    }
    let file = hint?;
    let text = read(&file)?;
    Some(place(&file, &text, 0, 0))
}

#[cfg(test)]
mod tests;
