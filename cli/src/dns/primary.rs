//! Which session answers the short names (issue 27): the primary, the first joined. When it
//! leaves (or its daemon dies), the live session joined first after it takes over, so short
//! names and `<svc>.<ns>` keep one cluster, never two and not none: its forwarder answers
//! them from then on, its record (`session.json`) says `primary` (`kwg status`: "Short names:
//! <alias>"), and in resolved mode its link gets the cluster domain, the namespaces and the
//! search domain ([`crate::dns::follow`] sets them). In resolv-conf mode the resolver file is
//! left as it is: the taking-over forwarder sits above the machine's resolvers already and
//! answers single labels and `<svc>.<ns>` itself, with the connected namespace.
//!
//! [`successor`] decides without I/O; [`take_over`] reads the sessions and writes the record.

use std::path::Path;

use crate::state::{Session, SessionInfo, StateDir};

/// The session that answers the short names: the primary whose daemon runs; else the session
/// joined first among those whose daemon runs with a forwarder (`sessions` as
/// [`crate::state::sessions`] lists them, the first joined first; one joined with `--dns off`
/// answers no names); `None` when there is none.
pub fn successor(sessions: &[Session]) -> Option<&Session> {
    let live = || sessions.iter().filter(|s| s.running.is_some());
    let dns = |s: &&Session| s.state.as_ref().is_none_or(|st| st.dns.is_some());
    live().find(|s| s.primary()).or_else(|| live().find(dns))
}

/// The state directory holding every session of `dir`'s: `dir` itself for the first, the one
/// above `sessions/` for the later ones (`<base>/sessions/<alias>`).
pub fn base_of(dir: &StateDir) -> StateDir {
    let parent = dir.0.parent();
    match parent {
        Some(p) if p.file_name() == Some("sessions".as_ref()) => {
            StateDir(p.parent().unwrap_or(Path::new("/")).to_path_buf())
        }
        _ => dir.clone(),
    }
}

/// Whether the session in `own` is to answer the short names now (it did not before): the
/// primary left and `own` is its successor. Then its record says so from now on.
pub fn take_over(own: &StateDir) -> bool {
    let all = match crate::state::sessions(&base_of(own)) {
        Ok(all) => all,
        Err(e) => {
            tracing::debug!(error = %e, "cannot list the sessions");
            return false;
        }
    };
    let Some(next) = successor(&all).filter(|s| s.dir.0 == own.0 && !s.primary()) else {
        return false;
    };
    let Some(info) = next.info.clone() else {
        return false;
    };
    let alias = info.alias.clone();
    let record = SessionInfo {
        primary: true,
        ..info
    };
    if let Err(e) = record.save(own) {
        tracing::warn!(error = %e, "cannot record that this session answers the short names");
        return false;
    }
    tracing::info!(%alias, "the primary session left: this one answers the short names now");
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(dir: &str, primary: bool, running: bool) -> Session {
        Session::example(dir.into(), dir, primary, running)
    }

    #[test]
    fn the_first_live_session_takes_over_when_the_primary_is_gone() {
        let (a, b, c) = ("/s", "/s/sessions/b", "/s/sessions/c");
        // The primary runs: it keeps the short names.
        let all = [
            session(a, true, true),
            session(b, false, true),
            session(c, false, true),
        ];
        assert_eq!(successor(&all).unwrap().dir.0, Path::new(a));
        // It left (its journal may remain for `kwg leave`): the next joined, never two.
        let all = [
            session(a, true, false),
            session(b, false, true),
            session(c, false, true),
        ];
        assert_eq!(successor(&all).unwrap().dir.0, Path::new(b));
        // b took over and c joined later: b stays.
        let all = [session(b, true, true), session(c, false, true)];
        assert_eq!(successor(&all).unwrap().dir.0, Path::new(b));
        assert!(successor(&[session(a, true, false)]).is_none());
        // One joined with --dns off answers no names: the next one takes them.
        let mut off = session(b, false, true);
        off.state = Some(crate::state::tests::sample());
        let all = [session(a, true, false), off, session(c, false, true)];
        assert_eq!(successor(&all).unwrap().dir.0, Path::new(c));
        assert_eq!(base_of(&StateDir(b.into())).0, Path::new(a));
        assert_eq!(base_of(&StateDir(a.into())).0, Path::new(a));
    }
}
