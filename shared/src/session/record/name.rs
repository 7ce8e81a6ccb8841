//! A session's name: derived from the synced directory and its owner, and
//! checked, since it names the Lease, the session's Flux objects and (in a
//! sandbox) the namespace, and goes into label selectors.

use std::path::Path;

use sha2::Digest as _;

use super::RecordError;
use crate::artifact;
use crate::sandbox;

/// Derives a session name from a directory: `run-<dir>-<hash>`, unique per
/// user and directory, stable across restarts.
pub fn derive_name(dir: &Path, owner: &str) -> String {
    let base: String = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_else(|| "root".into())
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let base = base.trim_matches('-');
    let base: String = base
        .chars()
        .take(40)
        .collect::<String>()
        .trim_end_matches('-')
        .to_string();
    let base = if base.is_empty() {
        "dir".to_string()
    } else {
        base
    };
    let hash = sha2::Sha256::digest(format!("{owner}:{}", dir.display()).as_bytes());
    format!("run-{base}-{}", &artifact::hex(&hash)[..6])
}

/// Checks a session name (it names a namespace in sandboxed mode and goes
/// into label selectors).
pub fn validate_name(name: &str) -> Result<(), RecordError> {
    sandbox::validate_name(name).map_err(|_| RecordError::InvalidName(name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_names_are_dns_labels_unique_per_user_and_dir() {
        let a = derive_name(Path::new("/home/ann/src/My_App"), "ann@laptop");
        assert!(a.starts_with("run-my-app-"), "{a}");
        assert!(validate_name(&a).is_ok());
        assert_eq!(
            a,
            derive_name(Path::new("/home/ann/src/My_App"), "ann@laptop")
        );
        assert_ne!(
            a,
            derive_name(Path::new("/home/ann/src/My_App"), "bob@laptop")
        );
        assert_ne!(
            a,
            derive_name(Path::new("/home/ann/other/My_App"), "ann@laptop")
        );
        let long = derive_name(Path::new(&format!("/x/{}", "a".repeat(100))), "u@h");
        assert!(long.len() <= 63 && validate_name(&long).is_ok(), "{long}");
        assert!(validate_name(&derive_name(Path::new("/"), "u@h")).is_ok());
    }

    #[test]
    fn names_that_would_change_a_label_selector_are_refused() {
        for bad in ["a,b=c", "a b", "A", "x=y", "", "-a"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }
}
