//! What went wrong talking to a registry: [`RegistryError`], and the
//! classification of the OCI client's errors into it (which are transient
//! and retried, which name a cause a user can act on).

use oci_client::errors::{OciDistributionError, OciErrorCode};

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

/// Whether an error is worth retrying: connection refused or timed out, a
/// server error, too many requests.
pub(super) fn is_transient(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::RequestError(r) => {
            r.is_connect()
                || r.is_timeout()
                || r.status()
                    .is_some_and(|s| s.is_server_error() || s.as_u16() == 429)
        }
        OciDistributionError::ServerError { code, .. } => *code >= 500 || *code == 429,
        OciDistributionError::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .any(|e| matches!(e.code, OciErrorCode::Toomanyrequests)),
        OciDistributionError::IoError(_) => true,
        _ => false,
    }
}

/// The error in words a user can act on, for `reference`.
pub(super) fn classify(reference: &ArtifactRef, err: OciDistributionError) -> RegistryError {
    let registry = reference.registry.clone();
    let hint = if is_loopback(&registry) {
        ""
    } else {
        " (if it serves plain HTTP, pass --insecure-registry)"
    };
    match err {
        OciDistributionError::RequestError(r) if r.is_connect() || r.is_timeout() => {
            RegistryError::Unreachable {
                registry,
                detail: root_cause(&r),
                hint,
            }
        }
        OciDistributionError::RequestError(r) => match r.status().map(|s| s.as_u16()) {
            Some(401) => RegistryError::Unauthorized { registry },
            Some(403) => RegistryError::Forbidden {
                registry,
                repository: reference.repository.clone(),
            },
            Some(404) => RegistryError::NotFound {
                reference: reference.to_string(),
            },
            Some(code) if code >= 500 => RegistryError::Server {
                registry,
                code,
                message: root_cause(&r),
            },
            _ => RegistryError::Unreachable {
                registry,
                detail: root_cause(&r),
                hint,
            },
        },
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => {
            RegistryError::Unauthorized { registry }
        }
        OciDistributionError::ImageManifestNotFoundError(_) => RegistryError::NotFound {
            reference: reference.to_string(),
        },
        OciDistributionError::ServerError { code, message, .. } => match code {
            401 => RegistryError::Unauthorized { registry },
            403 => RegistryError::Forbidden {
                registry,
                repository: reference.repository.clone(),
            },
            404 => RegistryError::NotFound {
                reference: reference.to_string(),
            },
            _ => server_error(registry, code, message),
        },
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            let message = envelope
                .errors
                .iter()
                .map(|e| e.message.clone())
                .collect::<Vec<_>>()
                .join("; ");
            if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Unauthorized))
            {
                RegistryError::Unauthorized { registry }
            } else if codes.iter().any(|c| matches!(c, OciErrorCode::Denied)) {
                RegistryError::Forbidden {
                    registry,
                    repository: reference.repository.clone(),
                }
            } else if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                )
            }) {
                RegistryError::NotFound {
                    reference: reference.to_string(),
                }
            } else {
                server_error(registry, 0, message)
            }
        }
        other => RegistryError::Other {
            registry,
            message: other.to_string(),
        },
    }
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

/// The innermost cause of an error, which is where the useful words are.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
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
