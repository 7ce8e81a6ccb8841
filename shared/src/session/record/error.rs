//! What the record refuses: a session name that cannot be one.

/// What the record refuses.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("invalid session name {0:?}: use lowercase letters, digits and '-' (at most 63)")]
    InvalidName(String),
}
