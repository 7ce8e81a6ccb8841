//! What went wrong talking to a registry: [`RegistryError`], and the
//! classification of the OCI client's errors into it (which are transient
//! and retried, which name a cause a user can act on).

use super::http::Failure;
use super::{ArtifactRef, is_loopback};
use crate::artifact::ArtifactError;

/// What went wrong talking to a registry, in words a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(
        "invalid artifact reference {input:?}: {reason} (expected oci://HOST/REPOSITORY[:TAG])"
    )]
    BadReference { input: String, reason: &'static str },
    #[error("--creds must be USER:PASSWORD (or log in with `docker login HOST`)")]
    BadCreds,
    #[error("cannot reach the registry {registry}: {detail}; is it running at that address?{hint}")]
    Unreachable {
        registry: String,
        detail: String,
        hint: &'static str,
    },
    #[error(
        "the registry {registry} requires credentials (401 Unauthorized); log in with \
         `docker login {registry}` or pass --creds USER:PASSWORD"
    )]
    CredentialsRequired { registry: String },
    #[error(
        "the registry {registry} refused the credentials given (401 Unauthorized); check them, \
         or log in again with `docker login {registry}`"
    )]
    Unauthorized { registry: String },
    #[error(
        "the registry {registry} denied access to {repository} (403 Forbidden); the account \
         may lack push rights to that repository"
    )]
    Forbidden {
        registry: String,
        repository: String,
    },
    #[error("the registry {registry} is out of storage space; free space on it and push again")]
    StorageFull { registry: String },
    #[error(
        "the registry {registry} failed ({code}): {message}; it may be overloaded or misconfigured, try again later"
    )]
    Server {
        registry: String,
        code: u16,
        message: String,
    },
    #[error("{reference} was not found in the registry")]
    NotFound { reference: String },
    #[error("{reference} is not a Flux artifact: {reason}")]
    NotFlux { reference: String, reason: String },
    #[error("registry {registry}: {message}")]
    Other { registry: String, message: String },
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error("temporary file: {0}")]
    Temp(#[source] std::io::Error),
    #[error(
        "{reference}: its layer is too large to download ({what} than {limit}, a guard against \
         a broken or hostile registry); is it the artifact you meant?"
    )]
    BlobTooLarge {
        reference: String,
        what: String,
        limit: String,
    },
}

/// Whether a failure is worth retrying: no answer (refused, timed out), a
/// server error, too many requests, a stream cut mid-way.
pub(super) fn is_transient(failure: &Failure) -> bool {
    match failure {
        Failure::Unreachable(_) | Failure::Io(_) => true,
        Failure::Status { code, body } => {
            *code >= 500 || *code == 429 || error_codes(body).iter().any(|c| c == "TOOMANYREQUESTS")
        }
        Failure::Protocol(_) => false,
    }
}

/// The failure in words a user can act on, for `reference`.
pub(super) fn classify(reference: &ArtifactRef, failure: Failure) -> RegistryError {
    let registry = reference.registry.clone();
    let hint = if is_loopback(&registry) {
        ""
    } else {
        " (if it serves plain HTTP, pass --insecure-registry)"
    };
    let not_found = || RegistryError::NotFound {
        reference: reference.to_string(),
    };
    let forbidden = |registry| RegistryError::Forbidden {
        registry,
        repository: reference.repository.clone(),
    };
    match failure {
        Failure::Unreachable(detail) => RegistryError::Unreachable {
            registry,
            detail,
            hint,
        },
        Failure::Status { code: 401, .. } => RegistryError::Unauthorized { registry },
        Failure::Status { code: 403, .. } => forbidden(registry),
        Failure::Status { code: 404, .. } => not_found(),
        Failure::Status { code, body } => {
            let codes = error_codes(&body);
            let has = |c: &str| codes.iter().any(|x| x == c);
            if has("UNAUTHORIZED") {
                RegistryError::Unauthorized { registry }
            } else if has("DENIED") {
                forbidden(registry)
            } else if has("MANIFEST_UNKNOWN") || has("NAME_UNKNOWN") || has("NOT_FOUND") {
                not_found()
            } else {
                server_error(registry, code, body)
            }
        }
        Failure::Io(e) => RegistryError::Other {
            registry,
            message: e.to_string(),
        },
        Failure::Protocol(message) => RegistryError::Other { registry, message },
    }
}

/// The `code`s of an OCI distribution error body
/// (`{"errors":[{"code","message","detail"}]}`).
fn error_codes(body: &str) -> Vec<String> {
    let Some(start) = body.find('{') else {
        return Vec::new();
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(body[start..].trim()) else {
        return Vec::new();
    };
    v["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .filter_map(|e| e["code"].as_str().map(str::to_ascii_uppercase))
                .collect()
        })
        .unwrap_or_default()
}

fn server_error(registry: String, code: u16, message: String) -> RegistryError {
    let lower = message.to_lowercase().replace(' ', "");
    // In words, or as the Go errno the filesystem driver of the CNCF
    // distribution registry reports ("Err":28 is ENOSPC, 122 EDQUOT).
    if lower.contains("nospaceleft")
        || lower.contains("diskfull")
        || lower.contains("quota")
        || lower.contains("\"err\":28}")
        || lower.contains("\"err\":122}")
    {
        return RegistryError::StorageFull { registry };
    }
    let message = registry_errors(&message).unwrap_or(message);
    if code >= 500 {
        RegistryError::Server {
            registry,
            code,
            message,
        }
    } else {
        RegistryError::Other { registry, message }
    }
}

/// The `code: message` pairs of an OCI distribution error body
/// (`{"errors":[{"code","message","detail"}]}`), without the detail.
fn registry_errors(body: &str) -> Option<String> {
    let start = body.find('{')?;
    let v: serde_json::Value = serde_json::from_str(body[start..].trim()).ok()?;
    let list: Vec<String> = v["errors"]
        .as_array()?
        .iter()
        .map(|e| {
            format!(
                "{}: {}",
                e["code"].as_str().unwrap_or("UNKNOWN"),
                e["message"].as_str().unwrap_or("no message")
            )
        })
        .collect();
    (!list.is_empty()).then(|| list.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_distribution_registrys_errno_for_a_full_disk_is_storage_full() {
        // What Debian's docker-registry answers when its disk is full.
        let body = r#"{"errors":[{"code":"UNKNOWN","message":"unknown error","detail":{"DriverName":"filesystem","Enclosed":{"Op":"write","Path":"/var/lib/docker-registry/docker/registry/v2/repositories/app/_uploads/x/startedat","Err":28}}}]}"#;
        let err = server_error("r".into(), 500, body.into());
        assert!(matches!(err, RegistryError::StorageFull { .. }), "{err}");
        // Other server errors: the registry's own words, not its JSON.
        let other =
            r#"{"errors":[{"code":"UNKNOWN","message":"unknown error","detail":{"Err":5}}]}"#;
        let err = server_error("r".into(), 500, other.into()).to_string();
        assert!(
            err.contains("UNKNOWN: unknown error") && !err.contains("detail"),
            "{err}"
        );
    }
}
