//! The peer Secret's lease: when it ends is decided here only.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// The end of a lease of `ttl` written at `wall`: the driver's wall clock when it writes the
/// Secret (registration and every renewal), and the inspect's clock for the end the journal
/// expects before the registration answered.
pub fn lease_end(wall: DateTime<Utc>, ttl: Duration) -> DateTime<Utc> {
    wall + ttl
}

/// Why a lease renewal failed.
#[derive(Debug)]
pub enum LeaseFailure<E> {
    /// 409: the Secret changed meanwhile; retry at once.
    Conflict,
    /// 404: the Secret is gone (expired while the machine slept, or deleted): register again.
    NotFound,
    /// A Secret of that name with another uid: ours was deleted and the name taken since
    /// (another machine of the same owner registered it). Left alone: register again.
    Replaced,
    /// Anything else (403, API unreachable): keep the tunnel, retry with back-off.
    Other(E),
}

impl<E> LeaseFailure<E> {
    /// The same failure with `f` of the error in `Other` (the driver's error into the
    /// session's).
    pub fn map_other<F>(self, f: impl FnOnce(E) -> F) -> LeaseFailure<F> {
        match self {
            LeaseFailure::Conflict => LeaseFailure::Conflict,
            LeaseFailure::NotFound => LeaseFailure::NotFound,
            LeaseFailure::Replaced => LeaseFailure::Replaced,
            LeaseFailure::Other(e) => LeaseFailure::Other(f(e)),
        }
    }
}

/// The kind of a failed renewal from the API's status code and message. A patch naming the
/// journalled uid is refused when the Secret of that name is another object: Kubernetes
/// validates `metadata.uid` as immutable (422 `metadata.uid: Invalid value: ...: field is
/// immutable`); a failed uid precondition says `Precondition failed: UID in precondition`
/// (409). Either means the Secret is not this machine's. `error` is the failure otherwise.
pub fn renewal_failure<E>(code: Option<u16>, message: &str, error: E) -> LeaseFailure<E> {
    let uid = |needle: &str| message.contains(needle);
    match code {
        Some(422) if uid("metadata.uid") => LeaseFailure::Replaced,
        Some(409) if uid("UID in precondition") => LeaseFailure::Replaced,
        Some(409) => LeaseFailure::Conflict,
        Some(404) => LeaseFailure::NotFound,
        _ => LeaseFailure::Other(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_ends_ttl_after_it_is_written() {
        let wall: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let end = lease_end(wall, Duration::from_secs(90));
        assert_eq!(end.to_rfc3339(), "2026-01-01T00:01:30+00:00");
    }

    #[test]
    fn a_renewal_refused_for_another_uid_is_not_ours_and_registers_again() {
        let kind = |code, message: &str| format!("{:?}", renewal_failure(Some(code), message, ()));
        // The real API server's sentences (metadata.uid is immutable; a uid precondition).
        let immutable = r#"Secret "kwg-peer-box" is invalid: metadata.uid: Invalid value: "3f1c": field is immutable"#;
        assert_eq!(kind(422, immutable), "Replaced");
        let precondition = r#"Operation cannot be fulfilled on secrets "kwg-peer-box": Precondition failed: UID in precondition: 3f1c, UID in object meta: 9a2b"#;
        assert_eq!(kind(409, precondition), "Replaced");
        let modified = r#"Operation cannot be fulfilled on secrets "kwg-peer-box": the object has been modified; please apply your changes to the latest version and try again"#;
        assert_eq!(kind(409, modified), "Conflict");
        assert_eq!(kind(404, r#"secrets "kwg-peer-box" not found"#), "NotFound");
        assert!(kind(422, "data: Invalid value").starts_with("Other"));
    }
}
