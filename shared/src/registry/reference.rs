//! Artifact references (`oci://HOST/REPOSITORY[:TAG][@DIGEST]`) and the one
//! place a registry address (`HOST[:PORT]`) is taken out of a reference, a
//! `--registry` location or a URL: [`registry_address`].

use std::fmt;
use std::str::FromStr;

use super::RegistryError;

/// `oci://HOST/REPOSITORY[:TAG][@DIGEST]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactRef {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl FromStr for ArtifactRef {
    type Err = RegistryError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let bad = |reason| RegistryError::BadReference {
            input: input.to_string(),
            reason,
        };
        let rest = input
            .strip_prefix("oci://")
            .ok_or_else(|| bad("it must start with oci://"))?;
        let (rest, digest) = match rest.split_once('@') {
            Some((r, d)) => {
                let hex = d
                    .strip_prefix("sha256:")
                    .ok_or_else(|| bad("the digest must be sha256:<64 hex digits>"))?;
                if hex.len() != 64
                    || !hex
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                {
                    return Err(bad("the digest must be sha256:<64 hex digits>"));
                }
                (r, Some(d.to_string()))
            }
            None => (rest, None),
        };
        let (registry, path) = split_address(rest);
        let path = path.ok_or_else(|| bad("a repository path is missing after the host"))?;
        if registry.is_empty() {
            return Err(bad("the registry host is empty"));
        }
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag.to_string())),
            _ => (path, None),
        };
        let repo_ok = !repository.is_empty()
            && repository.split('/').all(|part| {
                !part.is_empty()
                    && part.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)
                    })
                    && part.as_bytes()[0].is_ascii_alphanumeric()
            });
        if !repo_ok {
            return Err(bad(
                "the repository must be lowercase letters, digits, '.', '_', '-' and '/', each \
                 part starting with a letter or digit",
            ));
        }
        if let Some(tag) = &tag {
            let tag_ok = !tag.is_empty()
                && tag.len() <= 128
                && tag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                && tag.as_bytes()[0] != b'.'
                && tag.as_bytes()[0] != b'-';
            if !tag_ok {
                return Err(bad(
                    "the tag must be letters, digits, '.', '_' or '-' (at most 128)",
                ));
            }
        }
        Ok(ArtifactRef {
            registry: registry.to_string(),
            repository: repository.to_string(),
            tag,
            digest,
        })
    }
}

impl fmt::Display for ArtifactRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "oci://{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl ArtifactRef {
    /// `oci://HOST/REPOSITORY`, as `OCIRepository.spec.url` wants it.
    pub fn repository_url(&self) -> String {
        format!("oci://{}/{}", self.registry, self.repository)
    }

    /// The tag, `latest` when none was given.
    pub fn tag_or_latest(&self) -> &str {
        self.tag.as_deref().unwrap_or("latest")
    }

    /// Where the registry's API is: Docker Hub's artifacts are named
    /// `docker.io/…`, and its API answers at `registry-1.docker.io`.
    pub(super) fn api_host(&self) -> &str {
        match self.registry.as_str() {
            "docker.io" | "index.docker.io" => "registry-1.docker.io",
            other => other,
        }
    }

    /// The manifest's name in the API: the digest when there is one, else
    /// the tag.
    pub(super) fn manifest_name(&self) -> &str {
        self.digest
            .as_deref()
            .unwrap_or_else(|| self.tag_or_latest())
    }
}

/// Splits `HOST[:PORT][/REST]` at its first `/`: the registry address, and
/// what follows it, if anything does (an IPv6 literal keeps its brackets).
fn split_address(location: &str) -> (&str, Option<&str>) {
    match location.split_once('/') {
        Some((address, rest)) => (address, Some(rest)),
        None => (location, None),
    }
}

/// The registry address, `HOST[:PORT]`, of a location: an artifact reference
/// (`oci://HOST[:PORT]/REPOSITORY[:TAG][@DIGEST]`), a `--registry` location
/// (`HOST[:PORT][/PREFIX]`, with or without `oci://`) or a URL of any scheme
/// (`https://HOST[:PORT]/…`). IPv6 literals keep their brackets
/// (`[::1]:5000`); tags and digests are never taken for a port.
pub fn registry_address(location: &str) -> &str {
    let rest = match location.split_once("://") {
        Some((scheme, rest)) if !scheme.contains('/') => rest,
        _ => location,
    };
    split_address(rest).0
}

/// The host part of `HOST[:PORT]` (brackets removed from IPv6 literals).
pub(super) fn host_of(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    registry.rsplit_once(':').map_or(registry, |(h, _)| h)
}

/// Whether a registry address is on this machine, where plain HTTP is safe
/// without `--insecure-registry`: `localhost`, 127.0.0.0/8 and `::1`, the
/// hosts Docker itself talks plain HTTP to. Not `*.localhost`: such a name
/// is resolved like any other (`/etc/hosts`, a DNS search domain) and may
/// lead off the machine, so it takes TLS or the flag, as with Docker.
pub fn is_loopback(registry: &str) -> bool {
    let host = host_of(registry);
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod props {
    //! Artifact references and registry hosts come from flags, the
    //! environment and ConfigMaps: any text.
    use super::*;
    use proptest::prelude::*;

    fn reference() -> impl Strategy<Value = ArtifactRef> {
        (
            "[a-z0-9.-]{1,20}(:[0-9]{1,5})?|\\[[0-9a-f:]{2,20}\\]:[0-9]{1,5}",
            "[a-z0-9][a-z0-9._-]{0,9}(/[a-z0-9][a-z0-9._-]{0,9}){0,3}",
            proptest::option::of("[A-Za-z0-9_][A-Za-z0-9._-]{0,127}"),
            proptest::option::of("[0-9a-f]{64}"),
        )
            .prop_map(|(registry, repository, tag, digest)| ArtifactRef {
                registry,
                repository,
                tag,
                digest: digest.map(|d| format!("sha256:{d}")),
            })
    }

    proptest! {
        #![proptest_config(crate::proptests::config(512))]

        #[test]
        fn any_text_parses_or_is_refused_without_panicking(s in any::<String>()) {
            let _ = s.parse::<ArtifactRef>();
            let _ = format!("oci://{s}").parse::<ArtifactRef>();
            let _ = is_loopback(&s);
            let _ = host_of(&s);
            let _ = registry_address(&s);
        }

        #[test]
        fn reference_like_text_parses_or_is_refused(s in "oci://[a-z0-9:\\[\\].@/_-]{0,30}(:[a-zA-Z0-9._-]{0,10})?(@sha256:[0-9a-fA-F]{0,66})?") {
            if let Ok(r) = s.parse::<ArtifactRef>() {
                // What parses prints back to itself.
                prop_assert_eq!(r.to_string(), s.clone());
                let _ = (r.api_host(), r.manifest_name());
                let _ = is_loopback(&r.registry);
            }
        }

        #[test]
        fn a_printed_reference_reads_back(r in reference()) {
            let text = r.to_string();
            let back: ArtifactRef = text.parse().map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
            prop_assert_eq!(&back, &r);
            // Whatever the port, tag or digest, the address is the registry's.
            prop_assert_eq!(registry_address(&text), r.registry.as_str());
        }

        #[test]
        fn only_loopback_hosts_are_loopback(a in 0u8.., b in 0u8.., c in 0u8.., d in 0u8.., port in proptest::option::of(any::<u16>()), name in "[a-z0-9-]{1,12}") {
            let with_port = |h: String| match port { Some(p) => format!("{h}:{p}"), None => h };
            prop_assert_eq!(is_loopback(&with_port(format!("{a}.{b}.{c}.{d}"))), a == 127);
            let (sub, parent) = (format!("{name}.localhost"), format!("localhost.{name}"));
            prop_assert!(!is_loopback(&with_port(sub)));
            prop_assert!(!is_loopback(&with_port(parent)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_references() {
        let r: ArtifactRef = "oci://127.0.0.1:5000/team/app:v1".parse().unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "team/app");
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(r.repository_url(), "oci://127.0.0.1:5000/team/app");
        assert_eq!(r.to_string(), "oci://127.0.0.1:5000/team/app:v1");

        let r: ArtifactRef = "oci://localhost:5000/app".parse().unwrap();
        assert_eq!(r.tag_or_latest(), "latest");
        let d = format!("sha256:{}", "a".repeat(64));
        let r: ArtifactRef = format!("oci://ghcr.io/o/app@{d}").parse().unwrap();
        assert_eq!(r.digest.as_deref(), Some(d.as_str()));
    }

    #[test]
    fn rejects_bad_references_with_the_reason() {
        for (input, reason) in [
            ("127.0.0.1:5000/app", "oci://"),
            ("oci://127.0.0.1:5000", "repository path is missing"),
            ("oci://host/App", "lowercase"),
            ("oci://host/app:", "tag"),
            ("oci://host/app:-x", "tag"),
            ("oci://host/app@sha256:abc", "64 hex"),
            ("oci:///app", "host is empty"),
        ] {
            let e = input.parse::<ArtifactRef>().unwrap_err().to_string();
            assert!(
                e.contains(reason) && e.contains("expected oci://HOST/REPOSITORY[:TAG]"),
                "{input}: {e}"
            );
        }
    }

    #[test]
    fn loopback_detection() {
        for r in [
            "localhost:5000",
            "LOCALHOST",
            "127.0.0.1:36010",
            "127.8.9.10",
            "[::1]:5000",
        ] {
            assert!(is_loopback(r), "{r}");
        }
        for r in [
            "ghcr.io",
            "10.0.0.5:5000",
            "registry.example.com:443",
            // Docker talks TLS to these; so do we, without --insecure-registry.
            "kind-registry.localhost",
            "kind-registry.localhost:5000",
            "localhost.example.com",
            "127.0.0.1.nip.io",
            "[::ffff:10.0.0.1]:5000",
            "0.0.0.0:5000",
        ] {
            assert!(!is_loopback(r), "{r}");
        }
    }

    #[test]
    fn the_registry_address_of_references_locations_and_urls() {
        let digest = format!("sha256:{}", "a".repeat(64));
        for (location, address) in [
            // Ports, and tags that are not ports.
            ("oci://127.0.0.1:5000/team/app:v1", "127.0.0.1:5000"),
            ("127.0.0.1:5000/team/app:v1", "127.0.0.1:5000"),
            ("oci://ghcr.io/o/app:v1", "ghcr.io"),
            // No tag, and no path at all.
            ("oci://localhost:5000/app", "localhost:5000"),
            ("localhost:5000", "localhost:5000"),
            ("localhost", "localhost"),
            ("oci://localhost", "localhost"),
            // A `--registry` prefix.
            ("registry:5000/gitops-run/team", "registry:5000"),
            // Digests (a `:` in them is not a port).
            (&format!("oci://ghcr.io/o/app@{digest}"), "ghcr.io"),
            (
                &format!("oci://localhost:5000/app:v1@{digest}"),
                "localhost:5000",
            ),
            // IPv6 literals keep their brackets (their `:` are not ports).
            ("oci://[::1]:5000/app:v1", "[::1]:5000"),
            ("[fe80::1]/prefix", "[fe80::1]"),
            ("[::1]", "[::1]"),
            // URLs of other schemes, as an API server's.
            ("https://127.0.0.1:6443", "127.0.0.1:6443"),
            ("https://[::1]:6443/api", "[::1]:6443"),
            // A `://` past the first `/` is no scheme.
            ("registry:5000/x://y", "registry:5000"),
            ("", ""),
        ] {
            assert_eq!(registry_address(location), address, "{location}");
        }
        // The reference parser takes the same address.
        for location in [
            "oci://127.0.0.1:5000/team/app:v1",
            "oci://[::1]:5000/app:v1",
            &format!("oci://localhost:5000/app:v1@{digest}"),
        ] {
            let r: ArtifactRef = location.parse().unwrap();
            assert_eq!(r.registry, registry_address(location), "{location}");
        }
    }

    #[test]
    fn the_host_of_an_address_leaves_out_the_port_and_brackets() {
        for (address, host) in [
            ("localhost:5000", "localhost"),
            ("localhost", "localhost"),
            ("127.0.0.1:36010", "127.0.0.1"),
            ("[::1]:5000", "::1"),
            ("[::1]", "::1"),
            ("ghcr.io", "ghcr.io"),
        ] {
            assert_eq!(host_of(address), host, "{address}");
        }
    }
}
