//! The session core's errors at the edge: a step of the driver that failed goes into the
//! session as `kwg_session::Error::Step` (what the session must know of it: rejected
//! credentials, a peer Secret left behind; the sentence `kwg status` shows), and comes back
//! out of [`kwg_session::machine::Session::outcome`] as the CLI's own error, exit code and all.

use kwg_session::error::StepKind;

use crate::error::Error;

impl From<Error> for kwg_session::Error {
    fn from(e: Error) -> kwg_session::Error {
        let kind = match &e {
            Error::Session(_) => StepKind::Other,
            Error::Unauthorized { .. } => StepKind::CredentialsRejected,
            Error::PeerLeftBehind(l) => StepKind::PeerLeftBehind(l.clone()),
            _ => StepKind::Other,
        };
        match e {
            // A decision of the session the driver passed on: the session's own error.
            Error::Session(s) => s,
            e => kwg_session::Error::step(kind, summary(&e), e),
        }
    }
}

/// The CLI's error for how a session ended: the driver's own error of a failed step, else the
/// session's decision.
pub fn from_session(e: kwg_session::Error) -> Error {
    match e.into_step::<Error>() {
        Ok(e) => e,
        Err(e) => Error::Session(e),
    }
}

/// The sentence `kwg status` shows for a failed renewal: the innermost cause of an unreachable
/// API server (`connection refused`), not the whole chain of the HTTP stack.
fn summary(e: &Error) -> String {
    match e {
        Error::ApiUnreachable { server, reason } => format!(
            "API server {server} unreachable: {}",
            reason.rsplit(": ").next().unwrap_or(reason)
        ),
        e => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::ExitCode;

    #[test]
    fn a_failed_step_crosses_the_session_and_comes_back_as_the_clis_own_error() {
        let e: kwg_session::Error = Error::ApiUnreachable {
            server: "https://192.0.2.1:6443".into(),
            reason: "client error (Connect): tcp connect error: Connection refused (os error 111)"
                .into(),
        }
        .into();
        // What kwg status shows: the innermost cause, not the HTTP stack's chain.
        assert_eq!(
            e.summary(),
            "API server https://192.0.2.1:6443 unreachable: Connection refused (os error 111)"
        );
        let back = from_session(e);
        assert!(matches!(back, Error::ApiUnreachable { .. }), "{back:?}");
        assert_eq!(ExitCode::from(&back), ExitCode::ApiUnreachable);
        // Rejected credentials are what the session counts as such.
        let rejected: kwg_session::Error = Error::Unauthorized {
            server: "https://192.0.2.1:6443".into(),
            user: "ci".into(),
        }
        .into();
        assert!(
            matches!(&rejected, kwg_session::Error::Step(s) if s.kind == StepKind::CredentialsRejected)
        );
        // A decision of the session passed on by the driver stays the session's.
        let udp: kwg_session::Error = Error::Session(kwg_session::Error::GatewayUdp {
            endpoints: "192.0.2.1:31820".into(),
            secs: 3,
        })
        .into();
        assert!(matches!(udp, kwg_session::Error::GatewayUdp { .. }));
        assert_eq!(
            ExitCode::from(&from_session(udp)),
            ExitCode::GatewayUnreachable
        );
    }
}
