//! Whether a joined machine is `Connected` or `Degraded`, and why: the one place where what
//! the daemon (or `kwg status`) observed becomes health lines, each with its fix, like
//! `tailscale status`'s health warnings. Pure: the facts and the time are passed in.
//!
//! A new problem (a rejected credential, a refused gateway-info update…) is one more rule in
//! [`assess`], reading a field of [`Status`] or of [`Observed`], and one more [`HealthKind`].

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use kwg_contract::{ConnectionState, HealthIssue, HealthKind, Status};

use crate::output::{ago, span};

/// WireGuard's REJECT_AFTER_TIME (the WireGuard paper, section 6.1): a session older than
/// this carries no data any more. A live tunnel rekeys every REKEY_AFTER_TIME (120 s) while
/// it carries traffic, and `kwg status` sends some through it before reading the handshake,
/// so an older last handshake means the gateway does not answer a new one.
pub const HANDSHAKE_FRESH: chrono::TimeDelta = chrono::TimeDelta::seconds(180);

/// What was found out besides the daemon's [`Status`] (by the daemon when asked for its
/// status, or by `kwg status` when the daemon does not answer).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Observed {
    /// `Some(why)`: the daemon holds its lock but did not answer (nothing it knows is fresh).
    pub daemon_silent: Option<String>,
    /// A request to the gateway's admin address through the tunnel.
    pub gateway: Probe,
    /// This machine's peer Secret, read from the API server.
    pub peer_secret: SecretProbe,
    /// Routes of the plan that are not on the tunnel interface.
    pub missing_routes: Vec<IpNet>,
    /// Why the machine's resolver does not send cluster names to kwg (`None`: it does, or
    /// it was not checked).
    pub dns: Option<String>,
    /// A normal user's join: kwg-helper's connection closed (the helper exited or was killed),
    /// with what became of the interface.
    pub helper_gone: Option<String>,
}

/// A check that may not have been made.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Probe {
    #[default]
    NotAsked,
    Answered,
    Failed(String),
}

/// The peer Secret as the API server shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SecretProbe {
    /// Not asked, or the API server did not say (its own problem shows in the lease line).
    #[default]
    Unknown,
    Present {
        lease_expires: Option<DateTime<Utc>>,
    },
    /// 404: deleted by an admin, or collected by the gateway when its lease ended.
    Missing { namespace: String, name: String },
}

/// The verdict on `s` with what was observed, at `now`.
pub fn assess(s: &Status, o: &Observed, now: DateTime<Utc>) -> (ConnectionState, Vec<HealthIssue>) {
    let mut out = Vec::new();
    let mut line =
        |kind, message: String, fix: String| out.push(HealthIssue { kind, message, fix });
    if !s.connected && o.daemon_silent.is_none() {
        return (ConnectionState::NotRunning, Vec::new());
    }
    let pid = s.daemon_pid.map_or("-".to_string(), |p| p.to_string());
    if let Some(why) = &o.daemon_silent {
        line(
            HealthKind::DaemonUnresponsive,
            format!(
                "the daemon (pid {pid}) runs but does not answer ({why}): the tunnel, DNS and lease are not being looked after"
            ),
            format!(
                "if it was stopped (SIGSTOP, a debugger), continue it: kill -CONT {pid}; otherwise run kwg leave, then kwg join"
            ),
        );
    } else if (s.tunnel_ip.is_none() && s.proxy.is_none()) || s.lease.is_none() {
        // No lease yet: the daemon is still joining (it has a tunnel IP from the moment the
        // gateway assigned one, and waits for the handshake and the DNS probe after that).
        return (ConnectionState::Joining, Vec::new());
    }
    let gateway_fix = "see the Path line and run kwg doctor (the gateway's pods, UDP to its endpoint); the daemon handshakes again by itself once the gateway answers".to_string();
    let handshake = ago(s.last_handshake, now);
    // Without its peer Secret the gateway drops this peer: its silence is no problem of its own.
    let peer_gone = matches!(o.peer_secret, SecretProbe::Missing { .. })
        || s.lease.as_ref().is_some_and(|l| l.reregistering);
    if o.daemon_silent.is_none() && !peer_gone {
        match (&o.gateway, s.last_handshake) {
            // It answered through the tunnel: a session works, however old the handshake
            // read before (a fresh one was made if needed).
            (Probe::Answered, _) => {}
            (Probe::Failed(why), _) => line(
                HealthKind::GatewaySilent,
                format!(
                    "the gateway does not answer through the tunnel ({why}); last handshake {handshake}"
                ),
                gateway_fix,
            ),
            (_, None) => line(
                HealthKind::NoHandshake,
                "no WireGuard handshake with the gateway yet".into(),
                gateway_fix,
            ),
            (_, Some(t)) if now - t > HANDSHAKE_FRESH => line(
                HealthKind::HandshakeStale,
                format!(
                    "last handshake {handshake}: WireGuard drops a session after 180 s and the gateway has not answered a new handshake"
                ),
                gateway_fix,
            ),
            _ => {}
        }
    }
    let lease = s.lease.as_ref();
    let renewal = lease
        .and_then(|l| l.next_attempt)
        .map_or(String::new(), |t| {
            if t > now {
                format!(" (next attempt in {})", span(now, t))
            } else {
                " (now)".to_string()
            }
        });
    if let SecretProbe::Missing { namespace, name } = &o.peer_secret {
        line(
            HealthKind::PeerDeleted,
            format!(
                "the peer Secret {namespace}/{name} was deleted (by an admin, or by the gateway when the lease ended): the gateway no longer serves this machine"
            ),
            format!(
                "the daemon registers again at its next renewal{renewal}; or run kwg leave, then kwg join (if an admin removed this machine on purpose, ask them first)"
            ),
        );
    } else if lease.is_some_and(|l| l.reregistering) {
        line(
            HealthKind::PeerDeleted,
            "the peer Secret was gone at the last renewal (deleted, or the lease ended): registering again".into(),
            format!("wait for the new registration{renewal}; if it does not come back, run kwg doctor"),
        );
    }
    let secret_expiry = match &o.peer_secret {
        SecretProbe::Present { lease_expires } => *lease_expires,
        _ => None,
    };
    let expires = lease.and_then(|l| l.expires).or(secret_expiry);
    let why = lease
        .and_then(|l| l.error.as_deref())
        .map(|e| format!(": {e}"))
        .unwrap_or_default();
    match expires {
        Some(e) if e <= now && !matches!(o.peer_secret, SecretProbe::Missing { .. }) => line(
            HealthKind::LeaseExpired,
            format!("the lease ended {} ago without renewal{why}: the gateway removes this peer", span(e, now)),
            "the daemon renews as soon as the API server accepts it; if it rejects the credentials, log in again; or run kwg leave, then kwg join".into(),
        ),
        // Renewals failing while the lease holds: the tunnel works; the Lease row says why
        // and when the next attempt is (a rule for rejected credentials belongs here).
        _ => {}
    }
    // The daemon's sentence for a 401 (`kwg_session::machine::credentials_rejected`).
    if let Some(e) = lease
        .and_then(|l| l.error.as_deref())
        .filter(|e| e.starts_with("credentials rejected since"))
    {
        let ends = expires.map_or(String::new(), |e| {
            format!(" (the lease ends in {})", span(now, e))
        });
        line(
            HealthKind::CredentialsRejected,
            format!(
                "the API server rejects the daemon's credentials: the lease cannot be renewed{ends}"
            ),
            e.split_once(": ").map_or(e, |(_, fix)| fix).to_string(),
        );
    }
    if let Some(r) = &s.refused_info {
        line(
            HealthKind::GatewayInfoRefused,
            format!("a change of the gateway info {} was refused, the last good configuration stays: {}", ago(Some(r.at), now), r.reason),
            "if the cluster really changed, join again with the flag the refusal names; otherwise tell the cluster admin".into(),
        );
    }
    if !o.missing_routes.is_empty() {
        let list: Vec<String> = o.missing_routes.iter().map(|r| r.to_string()).collect();
        line(
            HealthKind::RoutesMissing,
            format!("routes missing from {}: {}", s.interface, list.join(", ")),
            "something removed them (NetworkManager, another VPN, ip route flush): run kwg leave, then kwg join".into(),
        );
    }
    if let Some(why) = &o.dns {
        let fix = match s.dns.as_ref().map(|d| d.mode.as_str()) {
            Some("resolved") => format!("`resolvectl status {}` should list kwg's forwarder; run kwg leave, then kwg join (or join with --dns-mode resolv-conf)", s.interface),
            _ => "something rewrote /etc/resolv.conf (NetworkManager, dhclient): run kwg leave, then kwg join".to_string(),
        };
        line(HealthKind::DnsMissing, why.clone(), fix);
    }
    if let Some(why) = &o.helper_gone {
        line(
            HealthKind::HelperGone,
            why.clone(),
            "start kwg-helper again (sudo systemctl start kwg-helper.socket, or sudo kwg-helper serve): it reverts this session from its journal; then run kwg leave and kwg join".into(),
        );
    }
    let state = match out.is_empty() {
        true => ConnectionState::Connected,
        false => ConnectionState::Degraded,
    };
    (state, out)
}

/// Fills `state` and `health` of `s`.
pub fn apply(s: &mut Status, o: &Observed, now: DateTime<Utc>) {
    let (state, health) = assess(s, o, now);
    s.state = Some(state);
    s.health = health;
}

/// `kwg status`'s exit code: 0 connected, 1 no daemon, [`crate::exit::STATUS_DEGRADED`] for
/// degraded or joining (docs/ci.md).
pub fn exit_code(s: &Status) -> i32 {
    match s.state {
        Some(ConnectionState::Connected) => 0,
        Some(ConnectionState::NotRunning) => 1,
        Some(ConnectionState::Degraded | ConnectionState::Joining) => crate::exit::STATUS_DEGRADED,
        // An older daemon: it only says whether it runs.
        None => i32::from(!s.connected),
    }
}

/// The `Status` value of `kwg status`'s text (a status of an older daemon says only whether
/// it runs).
pub fn state_text(s: &Status) -> String {
    match s.state {
        Some(st) => st.to_string(),
        None if s.connected => "Connected".into(),
        None => "Daemon not running (run kwg leave, then kwg join)".into(),
    }
}

/// The health lines of `kwg status`'s text, each problem then its fix (empty when none).
pub fn lines_text(s: &Status) -> String {
    let mut o = String::new();
    if s.health.is_empty() {
        return o;
    }
    o.push_str("Health:\n");
    for h in &s.health {
        o.push_str(&format!(
            "  - {}\n    fix: {}\n",
            crate::output::sanitize(&h.message),
            crate::output::sanitize(&h.fix)
        ));
    }
    o
}

#[cfg(test)]
mod tests;
