//! What `status` and `peers` print: aligned text like `tailscale status`, or JSON.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use kwg_contract::{LeaseStatus, Status};

/// The sentence `kwg status` prints when nothing is joined (exit code 1).
pub const NOT_JOINED: &str = "kwg is not joined to a cluster: run `kwg join --namespace <ns>`.";

/// The line above each session's status when several are joined: `Context a (alias a,
/// primary: short names go here)`.
pub fn session_heading(label: &str, alias: Option<&str>, primary: bool) -> String {
    let alias = alias.map_or(String::new(), |a| {
        format!("alias {a}, names <svc>.<ns>.svc.{a}")
    });
    let role = if primary {
        "primary: short names go here"
    } else {
        "secondary"
    };
    let sep = if alias.is_empty() { "" } else { "; " };
    sanitize_lines(&format!("Context {label} ({alias}{sep}{role})"))
}

/// `2m3s ago`, `never`.
pub fn ago(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    match t {
        None => "never".into(),
        Some(t) => {
            let secs = (now - t).num_seconds().max(0) as u64;
            format!(
                "{} ago",
                humantime::format_duration(std::time::Duration::from_secs(secs))
            )
        }
    }
}

/// `1.5 KiB` style sizes.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn list(v: &[String]) -> String {
    format!("[{}]", v.join(" "))
}

/// The text of `kwg status`.
pub fn status_text(s: &Status, now: DateTime<Utc>) -> String {
    let mut o = String::new();
    let state = crate::health::state_text(s);
    let none = || "-".to_string();
    // Most of these values come from the cluster or the daemon: never printed raw.
    let mut row = |k: &str, v: String| {
        let _ = writeln!(o, "{k:<16}: {}", sanitize(&v));
    };
    row("Status", state);
    row(
        "Daemon",
        s.daemon_pid
            .map(|p| format!("pid {p}"))
            .unwrap_or_else(none),
    );
    row("Kubernetes", s.server.clone());
    row(
        "Context",
        s.context.clone().unwrap_or_else(|| "(current)".into()),
    );
    row("User", s.user.clone());
    row("Namespace", s.namespace.clone());
    row(
        "Mapped ns",
        s.mapped_namespaces
            .as_ref()
            .map(|m| m.join(","))
            .unwrap_or_else(|| "all".into()),
    );
    row("Peer", s.peer.clone());
    let on = match s.proxy {
        Some(p) => format!("in userspace mode (no interface): SOCKS5/HTTP proxy on {p}"),
        None => format!("on {}", s.interface),
    };
    // A dual-stack join: both families' addresses.
    let six = s.tunnel_ip6.as_ref().map(|ip| format!(", {ip}"));
    row(
        "Tunnel IP",
        format!(
            "{}{} {on}",
            s.tunnel_ip.clone().unwrap_or_else(none),
            six.unwrap_or_default()
        ),
    );
    row(
        "Gateway",
        format!(
            "{} key {}",
            s.gateway_endpoint.clone().unwrap_or_else(none),
            s.gateway_key.clone().unwrap_or_else(none)
        ),
    );
    if let Some(t) = &s.transport {
        row("Path", crate::transport::text(t, now));
    }
    row("Reachable ns", crate::reach::text(s.reach.as_ref()));
    if let Some(r) = crate::reach::refused_text(s.reach.as_ref()) {
        row("Last refused", r);
    }
    row("Last handshake", ago(s.last_handshake, now));
    row(
        "Transfer",
        format!("rx {}, tx {}", bytes(s.rx_bytes), bytes(s.tx_bytes)),
    );
    if let Some(l) = &s.lease {
        row("Lease", lease_text(l, now));
    }
    if let Some(r) = &s.refused_info {
        row(
            "Refused",
            format!(
                "a gateway info change {}, keeping the last good configuration: {}",
                ago(Some(r.at), now),
                r.reason
            ),
        );
    }
    match &s.dns {
        None if s.proxy.is_some() => row(
            "DNS",
            "split DNS inside the proxy (the machine's resolver is unchanged)".into(),
        ),
        None => row("DNS", "off".into()),
        Some(d) => {
            let _ = writeln!(o, "DNS:");
            let mut sub = |k: &str, v: String| {
                let _ = writeln!(o, "  {k:<16}: {}", sanitize(&v));
            };
            sub("Mode", d.mode.clone());
            sub("Remote IP", d.remote_ip.clone().unwrap_or_else(none));
            sub("Forwarder", d.forwarder.to_string());
            sub(
                "Upstreams",
                list(
                    &d.upstreams
                        .iter()
                        .map(|u| u.to_string())
                        .collect::<Vec<_>>(),
                ),
            );
            sub("Exclude suffixes", list(&d.exclude_suffixes));
            sub("Include suffixes", list(&d.include_suffixes));
            sub("Timeout", format!("{}s", d.timeout_secs));
        }
    }
    let _ = writeln!(o, "Subnets: ({} subnets)", s.subnets.len());
    for r in &s.subnets {
        let _ = writeln!(o, "  - {} ({})", r.subnet, r.source);
    }
    o.push_str(&mapping_lines(&s.subnets));
    o.push_str(&crate::health::lines_text(s));
    o
}

/// Virtual subnets (issue 27): each cluster range this machine reaches through a mapped one.
fn mapping_lines(subnets: &[kwg_contract::PlannedRoute]) -> String {
    let mapped: Vec<_> = subnets
        .iter()
        .filter_map(|r| r.cluster.map(|c| (c, r)))
        .collect();
    if mapped.is_empty() {
        return String::new();
    }
    let mut o = format!("Mapped: ({} cluster ranges)\n", mapped.len());
    for (cluster, r) in mapped {
        let why = if r.forced {
            "mapped by --map"
        } else {
            "overlaps this machine's routes"
        };
        let _ = writeln!(o, "  - {cluster} ({}) as {}, {why}", r.source, r.subnet);
    }
    o
}

/// `1m5s` of whole seconds between two instants (0s when `later` is not later).
pub fn span(earlier: DateTime<Utc>, later: DateTime<Utc>) -> String {
    let secs = (later - earlier).num_seconds().max(0) as u64;
    humantime::format_duration(std::time::Duration::from_secs(secs)).to_string()
}

/// The lease line of `kwg status` (and `kwg doctor`): renewed and when it ends, or since when
/// renewal fails, why, and when it is retried.
pub fn lease_text(l: &LeaseStatus, now: DateTime<Utc>) -> String {
    let ends = match l.expires {
        Some(e) if e > now => format!("lease ends in {}", span(now, e)),
        Some(e) => format!("lease ended {} ago", span(e, now)),
        None => "lease end unknown".into(),
    };
    let retry = l
        .next_attempt
        .map(|t| format!(", retrying in {}", span(now, t)))
        .unwrap_or_default();
    let error = l.error.as_deref().unwrap_or("unknown error");
    if l.reregistering {
        return format!("registering again (the peer Secret was gone){retry}");
    }
    match l.failing_since {
        Some(since) => format!(
            "renewal failing since {} ({error}){retry}; {ends}",
            span(since, now)
        ),
        None => format!("renewed {}, {ends}", ago(l.renewed, now)),
    }
}

/// One row of `kwg peers`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerRow {
    pub name: String,
    pub this_machine: bool,
    pub tunnel_ip: Option<String>,
    pub owner: String,
    pub hostname: String,
    pub namespaces: Vec<String>,
    pub public_key: String,
    pub endpoint: Option<String>,
    pub last_handshake: Option<DateTime<Utc>>,
    pub rx_bytes: Option<u64>,
    pub tx_bytes: Option<u64>,
    pub lease_expires: DateTime<Utc>,
    /// Set when the gateway rejected the Secret (`kwg.io/error`).
    pub error: Option<String>,
}

/// Aligned columns; the row of this machine is marked with `*`.
pub fn peers_text(rows: &[PeerRow], wide: bool, now: DateTime<Utc>) -> String {
    let mut header = vec![
        "",
        "NAME",
        "TUNNEL-IP",
        "OWNER",
        "NAMESPACES",
        "LAST-HANDSHAKE",
        "RX",
        "TX",
        "LEASE-EXPIRES",
    ];
    if wide {
        header.extend(["HOSTNAME", "ENDPOINT", "PUBLIC-KEY", "ERROR"]);
    }
    let mut table: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for r in rows {
        let stat = |v: Option<u64>| v.map(bytes).unwrap_or_else(|| "-".into());
        let lease = r.lease_expires - now;
        let lease = if lease.num_seconds() <= 0 {
            "expired".into()
        } else {
            format!(
                "in {}",
                humantime::format_duration(std::time::Duration::from_secs(
                    lease.num_seconds() as u64
                ))
            )
        };
        let mut row = vec![
            if r.this_machine {
                "*".into()
            } else {
                String::new()
            },
            r.name.clone(),
            r.tunnel_ip.clone().unwrap_or_else(|| "pending".into()),
            r.owner.clone(),
            // No mapped namespaces: the peer asked for every namespace, as `status` says.
            if r.namespaces.is_empty() {
                "all".into()
            } else {
                r.namespaces.join(",")
            },
            if r.last_handshake.is_none() && r.rx_bytes.is_none() {
                "-".into()
            } else {
                ago(r.last_handshake, now)
            },
            stat(r.rx_bytes),
            stat(r.tx_bytes),
            lease,
        ];
        if wide {
            row.extend([
                r.hostname.clone(),
                r.endpoint.clone().unwrap_or_else(|| "-".into()),
                r.public_key.clone(),
                r.error.clone().unwrap_or_else(|| "-".into()),
            ]);
        }
        // Owner, hostname, namespaces and the gateway's error come from Secrets anyone with
        // create rights wrote: never printed raw.
        table.push(row.iter().map(|c| sanitize(c)).collect());
    }
    align(&table)
}

fn align(table: &[Vec<String>]) -> String {
    let cols = table.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            table
                .iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in table {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, cell)| format!("{cell:<w$}", w = widths[i]))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

pub use kwg_session::text::{sanitize, sanitize_lines};

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-01-01T00:01:00Z".parse().unwrap()
    }

    #[test]
    fn a_mapping_says_whether_it_overlaps_or_was_chosen_by_map() {
        use kwg_contract::{PlannedRoute, RouteSource};
        let pool = PlannedRoute {
            subnet: "10.224.0.0/12".parse().unwrap(),
            source: RouteSource::Service,
            cluster: Some("10.96.0.0/12".parse().unwrap()),
            forced: false,
        };
        let by_flag = PlannedRoute {
            subnet: "192.168.0.0/16".parse().unwrap(),
            source: RouteSource::Pod,
            cluster: Some("10.244.0.0/16".parse().unwrap()),
            forced: true,
        };
        assert_eq!(
            mapping_lines(&[pool, by_flag]),
            "Mapped: (2 cluster ranges)\n  \
             - 10.96.0.0/12 (service CIDR) as 10.224.0.0/12, overlaps this machine's routes\n  \
             - 10.244.0.0/16 (pod CIDR) as 192.168.0.0/16, mapped by --map\n"
        );
        assert_eq!(
            mapping_lines(&[PlannedRoute::new(pool.subnet, pool.source)]),
            ""
        );
    }

    #[test]
    fn status_lists_everything_a_user_checks() {
        let s = Status::example();
        let t = status_text(&s, now());
        for line in [
            "Status          : Connected",
            "Daemon          : pid 4242",
            "Context         : (current)",
            "Namespace       : emojivoto",
            "Tunnel IP       : 100.77.0.2 on kwg0",
            "Gateway         : 192.0.2.1:31820 key p0DgqXpMPbxjtgkBYpjGFK6fJVGdjwi3mv3ZCw5qQV0=",
            "Last handshake  : 3s ago",
            "Transfer        : rx 2.0 KiB, tx 10 B",
            "  Remote IP       : 10.96.0.10",
            "  Exclude suffixes: [.com .io]",
            "  Include suffixes: []",
            "  Timeout         : 4s",
            "Subnets: (2 subnets)",
            "  - 10.96.0.0/12 (service CIDR)",
            "  - 172.30.0.0/16 (--also-proxy)",
        ] {
            assert!(t.lines().any(|l| l == line), "missing {line:?} in\n{t}");
        }
    }

    fn row(name: &str, me: bool) -> PeerRow {
        PeerRow {
            name: name.into(),
            this_machine: me,
            tunnel_ip: Some("100.77.0.2".into()),
            owner: "developer".into(),
            hostname: "h".into(),
            namespaces: vec!["emojivoto".into()],
            public_key: "k".into(),
            endpoint: None,
            last_handshake: None,
            rx_bytes: None,
            tx_bytes: None,
            lease_expires: "2026-01-01T01:01:00Z".parse().unwrap(),
            error: None,
        }
    }

    #[test]
    fn peers_align_and_mark_this_machine() {
        let t = peers_text(
            &[row("laptop", true), row("ci-runner-long", false)],
            false,
            now(),
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "   NAME            TUNNEL-IP   OWNER      NAMESPACES  LAST-HANDSHAKE  RX  TX  LEASE-EXPIRES"
        );
        assert_eq!(
            lines[1],
            "*  laptop          100.77.0.2  developer  emojivoto   -               -   -   in 1h"
        );
        assert!(lines[2].starts_with("   ci-runner-long  "));
        // A peer without mapped namespaces asked for all of them, as `kwg status` says.
        let mut all = row("ci", false);
        all.namespaces.clear();
        let t = peers_text(&[all], false, now());
        assert!(t.lines().nth(1).unwrap().contains("  all  "), "{t}");
    }

    #[test]
    fn peers_and_status_never_print_terminal_escapes() {
        let row = PeerRow {
            tunnel_ip: None,
            owner: "mallory\u{7}".into(),
            hostname: "h\u{1b}[2J\u{1b}]0;pwned\u{7}ost".into(),
            namespaces: vec!["emoji\u{9b}31mvoto".into(), "\u{202e}gnp.exe".into()],
            error: Some("refused\r\nkwg: all good".into()),
            ..row("evil", false)
        };
        let t = peers_text(std::slice::from_ref(&row), true, now());
        assert!(
            !t.chars()
                .any(|c| c != '\n' && kwg_session::text::is_hostile(c)),
            "escape printed: {t:?}"
        );
        let line = t.lines().nth(1).unwrap();
        assert!(line.contains("  mallory  "), "{line}");
        assert!(line.contains("  h[2J]0;pwnedost  "), "{line}");
        assert!(line.contains("  emoji31mvoto,gnp.exe  "), "{line}");
        assert!(line.ends_with("  refusedkwg: all good"), "{line}");
        assert_eq!(t.lines().count(), 2);
        let mut s = Status::example();
        s.namespace = "emojivoto\u{1b}[2J".into();
        s.server = "https://x\u{1b}]8;;http://evil\u{7}".into();
        let t = status_text(&s, now());
        assert!(
            t.lines().any(|l| l == "Namespace       : emojivoto[2J"),
            "{t}"
        );
        assert!(!t.contains('\u{1b}') && !t.contains('\u{7}'), "{t:?}");
    }
}
