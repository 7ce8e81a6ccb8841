//! Registry flags: `--creds USER:PASSWORD` (or its environment variable)
//! and `--insecure-registry`, into [`gitops::registry::RegistryOptions`].
//!
//! The flags themselves are declared where they appear (the session's and
//! `push`/`diff`'s help word them for their command); the variable's name
//! and what the values become are the same everywhere.

use gitops::registry::{Credentials, RegistryError, RegistryOptions};

/// The environment variable `--creds` falls back to (its value is never shown).
pub const CREDS_ENV: &str = "GITOPS_REGISTRY_CREDS";

/// `--creds` (`USER:PASSWORD`, else the Docker config and its credential
/// helpers) and `--insecure-registry`, as the library's options.
pub fn options(creds: Option<&str>, insecure: bool) -> Result<RegistryOptions, RegistryError> {
    Ok(RegistryOptions {
        creds: creds.map(str::parse::<Credentials>).transpose()?,
        insecure,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creds_are_user_colon_password_or_absent() {
        let o = options(Some("bob:s3cret:x"), true).unwrap();
        assert_eq!(o.creds.map(|c| c.username), Some("bob".into()));
        assert!(o.insecure);
        let o = options(None, false).unwrap();
        assert!(o.creds.is_none() && !o.insecure);
        for bad in ["s3cret", ":s3cret", "bob:"] {
            let e = options(Some(bad), false).unwrap_err();
            assert!(matches!(e, RegistryError::BadCreds), "{e}");
            assert!(!e.to_string().contains("s3cret"), "{e}");
        }
    }
}
