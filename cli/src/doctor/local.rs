//! Verdicts about this machine: routes and other VPNs, UDP to the gateway, DNS, the daemon
//! (no I/O).

use std::net::IpAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use kwg_contract::Status;
use kwg_host::netlink::RouteEntry;

use super::check::Check;
use crate::exit::ExitCode;

/// The kernel's table of local and broadcast addresses.
const LOCAL_TABLE: u32 = 255;

/// Interface name prefixes of other VPNs: Tailscale, WireGuard (wg-quick, NetBird's wt0 is
/// `wt`), OpenVPN and others' TUN/TAP (utun on macOS), ZeroTier.
const VPN_PREFIXES: [&str; 7] = ["tailscale", "wg", "wt", "tun", "utun", "tap", "zt"];

/// Whether `name` looks like another VPN's interface.
pub fn is_vpn(name: &str) -> bool {
    VPN_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The cluster's subnets against the machine's routes (every table but local, not the
/// tunnel's own) and the other VPN interfaces.
pub fn routes(
    cluster: &[(IpNet, &str)],
    existing: &[RouteEntry],
    own_interface: &str,
    interfaces: &[String],
) -> Check {
    const NAME: &str = "routes";
    let vpns: Vec<&str> = interfaces
        .iter()
        .map(String::as_str)
        .filter(|i| *i != own_interface && is_vpn(i))
        .collect();
    let mut conflicts = Vec::new();
    let mut subnets = Vec::new();
    for (subnet, what) in cluster {
        for e in existing.iter().filter(|e| {
            e.table != LOCAL_TABLE
                && e.destination.prefix_len() > 0
                && e.interface.as_deref() != Some(own_interface)
                && (e.destination.contains(subnet) || subnet.contains(&e.destination))
        }) {
            let vpn = e
                .interface
                .as_deref()
                .filter(|i| is_vpn(i))
                .map(|i| format!(" (another VPN: {i})"))
                .unwrap_or_default();
            conflicts.push(format!("{subnet} ({what}) overlaps the route {e}{vpn}"));
            subnets.push(subnet.to_string());
        }
    }
    let vpn_note = match vpns.is_empty() {
        true => String::new(),
        false => format!("; other VPN interfaces: {}", vpns.join(", ")),
    };
    if conflicts.is_empty() {
        let list: Vec<String> = cluster.iter().map(|(s, _)| s.to_string()).collect();
        return Check::pass(
            NAME,
            format!(
                "{} overlap no route of this machine{vpn_note}",
                list.join(", ")
            ),
        );
    }
    subnets.dedup();
    let first = &subnets[0];
    // Virtual subnets: a Service or pod CIDR is mapped at join, not refused.
    let mappable = |what: &str| matches!(what, "service CIDR" | "pod CIDR");
    if cluster
        .iter()
        .filter(|(s, _)| subnets.contains(&s.to_string()))
        .all(|(_, what)| mappable(what))
    {
        return Check::warn(
            NAME,
            format!("{}{vpn_note}", conflicts.join("; ")),
            format!(
                "kwg join maps {} onto a free range of the same size from --map-pool (default {}): addresses are translated on this machine; --map {first}=CIDR chooses the range, --allow-conflicting-subnets {first} routes it over the existing route, --never-proxy {first} leaves it to that route",
                subnets.join(", "),
                kwg_session::mapping::DEFAULT_POOL
            ),
        );
    }
    Check::fail(
        NAME,
        ExitCode::LocalConflict,
        format!("{}{vpn_note}", conflicts.join("; ")),
        format!(
            "kwg join --allow-conflicting-subnets {first} to route it through kwg anyway, or --never-proxy {first} to leave it to the existing route (or remove that route / disconnect the other VPN)"
        ),
    )
}

/// A handshake initiation sent to one endpoint while not joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Initiation {
    /// ICMP port unreachable: nothing listens there.
    Refused(String),
    /// Silence: what a gateway does with an unregistered key, and what a firewall that drops
    /// does too.
    NoReply,
    /// A cookie reply (the gateway is under load): UDP reaches it.
    Answered,
    SendFailed(String),
}

/// What was tried to tell whether UDP reaches the gateway.
#[derive(Debug, Clone)]
pub enum UdpProbe {
    /// Joined: a TCP connection to the gateway's admin port through the tunnel.
    Tunnel {
        endpoint: String,
        answered: bool,
        last_handshake: Option<DateTime<Utc>>,
        /// The path WireGuard takes when not UDP (`tcp`, `api-server`), and why UDP failed.
        fallback: Option<(String, String)>,
    },
    /// Not joined: one initiation per endpoint.
    Initiations(Vec<(String, Initiation)>),
}

pub fn udp(probe: &UdpProbe, now: DateTime<Utc>, waited: Duration) -> Check {
    const NAME: &str = "udp";
    let blocked = |endpoint: &str| {
        format!(
            "allow outgoing UDP to {endpoint} (local firewall, corporate network, or the cluster's LoadBalancer/NodePort must carry UDP)"
        )
    };
    match probe {
        UdpProbe::Tunnel {
            endpoint,
            answered: true,
            last_handshake,
            fallback: Some((path, why)),
        } => Check::warn(
            NAME,
            format!(
                "the gateway answers through the tunnel over {path} ({endpoint}, last handshake {}), not UDP: {why}",
                crate::output::ago(*last_handshake, now)
            ),
            "allow outgoing UDP to the gateway's endpoint for the faster path (kwg retries it by itself)",
        ),
        UdpProbe::Tunnel {
            endpoint,
            answered: true,
            last_handshake,
            fallback: None,
        } => Check::pass(
            NAME,
            format!(
                "the gateway answers through the tunnel (UDP to {endpoint}, last handshake {})",
                crate::output::ago(*last_handshake, now)
            ),
        ),
        UdpProbe::Tunnel {
            endpoint,
            answered: false,
            last_handshake,
            ..
        } => Check::fail(
            NAME,
            ExitCode::GatewayUnreachable,
            format!(
                "no answer from the gateway through the tunnel within {} s (UDP to {endpoint}, last handshake {})",
                waited.as_secs(),
                crate::output::ago(*last_handshake, now)
            ),
            blocked(endpoint),
        ),
        UdpProbe::Initiations(results) => {
            if let Some((endpoint, Initiation::Refused(why))) = results
                .iter()
                .find(|(_, r)| matches!(r, Initiation::Refused(_)))
            {
                return Check::fail(
                    NAME,
                    ExitCode::GatewayUnreachable,
                    format!("{endpoint} refuses UDP ({why}): nothing listens there"),
                    "check the gateway Service's NodePort/LoadBalancer (kubectl -n <gateway namespace> get service kwg-gateway), or a firewall rejecting UDP",
                );
            }
            if let Some((endpoint, Initiation::SendFailed(why))) = results
                .iter()
                .find(|(_, r)| matches!(r, Initiation::SendFailed(_)))
            {
                return Check::fail(
                    NAME,
                    ExitCode::GatewayUnreachable,
                    format!("cannot send UDP to {endpoint}: {why}"),
                    blocked(endpoint),
                );
            }
            let names: Vec<&str> = results.iter().map(|(e, _)| e.as_str()).collect();
            if results.iter().any(|(_, r)| *r == Initiation::Answered) {
                return Check::pass(
                    NAME,
                    format!("the gateway answers UDP at {}", names.join(", ")),
                );
            }
            Check::skip(
                NAME,
                format!(
                    "not tested: not joined (the gateway stays silent to unregistered keys, so silence from {} proves nothing; kwg join tests it)",
                    names.join(", ")
                ),
            )
        }
    }
}

/// What the DNS check found.
#[derive(Debug, Clone)]
pub enum DnsProbe {
    NotJoined {
        nameservers: Vec<String>,
    },
    Off,
    /// Userspace mode: names resolve through the proxy, the machine's DNS is unchanged.
    Userspace {
        proxy: String,
    },
    /// Joined: a cluster name looked up through the system resolver (getaddrinfo).
    Joined {
        mode: String,
        forwarder: String,
        name: String,
        answer: Result<Vec<IpAddr>, String>,
        service_cidrs: Vec<IpNet>,
        /// resolv-conf mode: whether /etc/resolv.conf still names kwg's forwarder (`None`:
        /// not checked).
        points_at_kwg: Option<bool>,
    },
}

pub fn dns(probe: &DnsProbe, interface: &str) -> Check {
    const NAME: &str = "dns";
    let (mode, forwarder, name, answer, cidrs, points_at_kwg) = match probe {
        DnsProbe::Off => return Check::skip(NAME, "DNS mode off: cluster names are not resolved"),
        DnsProbe::Userspace { proxy } => {
            return Check::skip(
                NAME,
                format!(
                    "userspace mode: cluster names resolve through the proxy {proxy} (socks5h), the machine's DNS is unchanged"
                ),
            );
        }
        DnsProbe::NotJoined { nameservers } => {
            return Check::skip(
                NAME,
                format!(
                    "not joined; the machine's resolvers: {}",
                    match nameservers.is_empty() {
                        true => "none in /etc/resolv.conf".to_string(),
                        false => nameservers.join(" "),
                    }
                ),
            );
        }
        DnsProbe::Joined {
            mode,
            forwarder,
            name,
            answer,
            service_cidrs,
            points_at_kwg,
        } => (mode, forwarder, name, answer, service_cidrs, *points_at_kwg),
    };
    let fix = match mode.as_str() {
        "resolved" => format!(
            "`resolvectl status {interface}` should list {forwarder} and the cluster's ~domains; run kwg leave, then kwg join (or join with --dns-mode resolv-conf)"
        ),
        _ => format!(
            "/etc/resolv.conf should name kwg's forwarder {forwarder} (something rewrote it? NetworkManager, dhclient): run kwg leave, then kwg join"
        ),
    };
    match answer {
        Ok(ips) if ips.iter().any(|ip| cidrs.iter().any(|c| c.contains(ip))) => Check::pass(
            NAME,
            format!(
                "mode {mode}: {name} resolves to {} through the system resolver (answered by kwg)",
                ips[0]
            ),
        ),
        Ok(ips) => Check::fail(
            NAME,
            ExitCode::DnsVerification,
            format!(
                "mode {mode}: {name} resolves to {:?}, outside the cluster's service CIDRs: another resolver answered, not kwg",
                ips
            ),
            fix,
        ),
        // The resolver asks kwg: the answer was lost behind it, in the tunnel.
        Err(e) if points_at_kwg == Some(true) => Check::fail(
            NAME,
            ExitCode::DnsVerification,
            format!(
                "mode {mode}: {name} does not resolve ({e}); /etc/resolv.conf names kwg's forwarder {forwarder}, which got no answer from the cluster DNS through the tunnel"
            ),
            "see the udp, gateway and daemon checks (kwg status names what is wrong with the tunnel)",
        ),
        Err(e) => Check::fail(
            NAME,
            ExitCode::DnsVerification,
            format!("mode {mode}: {name} does not resolve through the system resolver: {e}"),
            fix,
        ),
    }
}

/// The daemon as the lock and its socket tell.
#[derive(Debug, Clone)]
pub enum DaemonProbe {
    NotJoined,
    /// The state directory cannot be read (root only): whether kwg is joined is unknown.
    Unreadable(String),
    /// A state file but no daemon: it was killed (or the machine rebooted).
    Dead,
    Running(Box<Status>),
    NoAnswer(String),
}

pub fn daemon(probe: &DaemonProbe, now: DateTime<Utc>) -> Check {
    const NAME: &str = "daemon";
    let rejoin = "run kwg leave, then kwg join";
    let s = match probe {
        DaemonProbe::NotJoined => return Check::skip(NAME, "not joined (kwg join starts it)"),
        DaemonProbe::Unreadable(dir) => {
            return Check::warn(
                NAME,
                format!(
                    "cannot read the state directory {dir}: whether kwg is joined is unknown, and so are the tunnel, DNS and lease"
                ),
                "run kwg doctor as root (sudo), like kwg join",
            );
        }
        DaemonProbe::Dead => {
            return Check::fail(
                NAME,
                ExitCode::Failure,
                "not running, but what kwg join changed is still in place (killed, or the machine restarted)",
                rejoin,
            );
        }
        DaemonProbe::NoAnswer(e) => {
            return Check::fail(
                NAME,
                ExitCode::Failure,
                format!("runs but does not answer: {e}"),
                "if it was stopped (SIGSTOP, a debugger), continue it with kill -CONT; otherwise run kwg leave, then kwg join",
            );
        }
        DaemonProbe::Running(s) => s,
    };
    let who = format!(
        "pid {}, {} as {} on {}",
        s.daemon_pid.map_or("-".into(), |p| p.to_string()),
        s.peer,
        s.tunnel_ip.as_deref().unwrap_or("-"),
        s.interface
    );
    if s.state == Some(kwg_contract::ConnectionState::Degraded) {
        let what: Vec<&str> = s.health.iter().map(|h| h.message.as_str()).collect();
        let fix: Vec<&str> = s.health.iter().map(|h| h.fix.as_str()).collect();
        return Check::fail(
            NAME,
            ExitCode::Failure,
            format!("{who}; Degraded: {}", what.join("; ")),
            fix.join("; "),
        );
    }
    let Some(lease) = &s.lease else {
        return Check::pass(NAME, who);
    };
    let text = crate::output::lease_text(lease, now);
    match &lease.failing_since {
        None => Check::pass(NAME, format!("{who}; {text}")),
        Some(_) => Check::warn(
            NAME,
            format!("{who}; {text}"),
            "the tunnel keeps working meanwhile; see the api check, and if the lease ends the daemon registers again once the API server answers",
        ),
    }
}

#[cfg(test)]
mod tests;
