//! Git remote URLs reduced to what names the repository, so that a work
//! tree's `origin` and a `GitRepository`'s `spec.url` compare equal however
//! each spells it: `https://github.com/org/app.git`,
//! `ssh://git@github.com/org/app`, `git@github.com:org/app.git` and
//! `https://user:token@GitHub.com:443/org/app/` are all `github.com/org/app`.
//!
//! The scheme, user and credentials, port, a trailing `/` and `.git` are
//! dropped and the host is lowercased; the path keeps its case (some
//! servers are case-sensitive). A port is dropped whatever it is: one
//! server commonly serves SSH on one port and HTTPS on another.

/// The repository a remote URL names (`host/path`), or `None` for a local
/// path or something that is not a URL.
pub fn normalize(url: &str) -> Option<String> {
    let url = url.trim();
    let (host_part, path) = if let Some((scheme, rest)) = url.split_once("://") {
        if scheme.eq_ignore_ascii_case("file") || scheme.is_empty() {
            return None;
        }
        rest.split_once('/').unwrap_or((rest, ""))
    } else {
        // scp-like `[user@]host:path` (not a Windows drive `C:\…`, not a
        // local path with a colon after a slash).
        let (host, path) = url.split_once(':')?;
        if host.is_empty() || host.contains('/') || host.len() == 1 {
            return None;
        }
        (host, path)
    };
    let host = host_part.rsplit_once('@').map_or(host_part, |(_, h)| h);
    let host = match host.strip_prefix('[') {
        // An IPv6 literal: `[::1]:22`.
        Some(v6) => v6.split_once(']').map(|(h, _)| h)?,
        None => host.split_once(':').map_or(host, |(h, _)| h),
    };
    if host.is_empty() {
        return None;
    }
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let path = path.trim_matches('/');
    let path = path
        .strip_suffix(".git")
        .unwrap_or(path)
        .trim_end_matches('/');
    if path.is_empty() {
        return None;
    }
    Some(format!("{}/{path}", host.to_ascii_lowercase()))
}

/// Whether two remote URLs name the same repository.
pub fn same_repository(a: &str, b: &str) -> bool {
    match (normalize(a), normalize(b)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_one_repository_is_the_same() {
        for url in [
            "https://github.com/org/app.git",
            "https://github.com/org/app",
            "https://github.com/org/app/",
            "https://github.com/org/app.git/",
            "http://github.com/org/app",
            "https://user:token@GitHub.com:443/org/app.git",
            "ssh://git@github.com/org/app.git",
            "ssh://git@github.com:22/org/app",
            "git@github.com:org/app.git",
            "git@github.com:/org/app.git",
            "github.com:org/app",
            "git://github.com/org/app.git",
            "https://github.com/org/app.git?ref=main",
        ] {
            assert_eq!(
                normalize(url).as_deref(),
                Some("github.com/org/app"),
                "{url}"
            );
        }
        assert_eq!(
            normalize("http://127.0.0.1:26030/fleet.git").as_deref(),
            Some("127.0.0.1/fleet")
        );
        assert_eq!(
            normalize("ssh://git@[::1]:2222/team/app").as_deref(),
            Some("::1/team/app")
        );
        assert_eq!(
            normalize("https://gitlab.example.com/group/sub/app.git").as_deref(),
            Some("gitlab.example.com/group/sub/app")
        );
    }

    #[test]
    fn other_repositories_and_local_paths_differ() {
        assert!(!same_repository(
            "https://github.com/org/app",
            "https://github.com/org/app-config"
        ));
        assert!(!same_repository(
            "https://github.com/org/app",
            "https://gitlab.com/org/app"
        ));
        // The path keeps its case.
        assert!(!same_repository(
            "https://example.com/Org/App",
            "https://example.com/org/app"
        ));
        for local in [
            "/srv/git/app.git",
            "../app",
            "file:///srv/git/app.git",
            "C:\\src\\app",
            "C:/src/app",
            "",
            "https://github.com/",
        ] {
            assert_eq!(normalize(local), None, "{local}");
        }
    }
}
