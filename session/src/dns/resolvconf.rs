//! `/etc/resolv.conf`, pure: read the original resolvers, render the joined version (the CLI
//! writes it in place: `kwg::dns::resolvconf::write_in_place`).

use std::net::{IpAddr, SocketAddr};

/// The marker kwg puts on the lines it adds.
pub const MARKER: &str = "# added by kwg join; `kwg leave` restores the original";

/// glibc reads at most 3 `nameserver` lines (MAXNS in resolv.h).
const MAXNS: usize = 3;

/// The `nameserver` addresses of a resolv.conf, in order.
pub fn nameservers(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
                .and_then(|w| w.split('%').next()?.parse().ok())
        })
        .collect()
}

/// The original resolvers as socket addresses (port 53), without `exclude` (our forwarder).
pub fn upstreams(text: &str, exclude: IpAddr) -> Vec<SocketAddr> {
    nameservers(text)
        .into_iter()
        .filter(|ip| *ip != exclude)
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// The joined resolv.conf: the forwarder first, then up to two original resolvers as a
/// fallback should the forwarder die, the cluster search domains before the original ones,
/// every other line kept.
pub fn render(original: &str, forwarder: IpAddr, search_first: &[String]) -> String {
    let mut out = String::new();
    out.push_str(MARKER);
    out.push('\n');
    let mut search: Vec<String> = search_first.to_vec();
    let mut servers = vec![forwarder];
    let mut rest = String::new();
    for line in original.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("search") | Some("domain") => {
                for w in words {
                    if !search.iter().any(|s| s == w) {
                        search.push(w.to_string());
                    }
                }
            }
            Some("nameserver") => {
                if let Some(ip) = words.next().and_then(|w| w.parse().ok())
                    && !servers.contains(&ip)
                {
                    servers.push(ip);
                }
            }
            _ if line == MARKER => {}
            _ => {
                rest.push_str(line);
                rest.push('\n');
            }
        }
    }
    for s in servers.iter().take(MAXNS) {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    out.push_str(&rest);
    out
}

/// Whether `text` is a resolv.conf kwg rendered.
pub fn is_ours(text: &str) -> bool {
    text.lines().next() == Some(MARKER)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGINAL: &str = "# lan\nsearch corp.example\nnameserver 192.0.2.53\noptions edns0\n";

    #[test]
    fn renders_forwarder_first_keeps_the_rest() {
        let fwd: IpAddr = "127.77.0.53".parse().unwrap();
        let search = vec![
            "emojivoto.svc.cluster.local".into(),
            "svc.cluster.local".into(),
        ];
        let out = render(ORIGINAL, fwd, &search);
        assert_eq!(
            out,
            format!(
                "{MARKER}\nnameserver 127.77.0.53\nnameserver 192.0.2.53\n\
                 search emojivoto.svc.cluster.local svc.cluster.local corp.example\n\
                 # lan\noptions edns0\n"
            )
        );
        assert!(is_ours(&out));
        assert!(!is_ours(ORIGINAL));
        assert_eq!(upstreams(&out, fwd), vec!["192.0.2.53:53".parse().unwrap()]);
        // Rendering twice (a second join over a stale file) does not pile up lines.
        assert_eq!(render(&out, fwd, &search), out);
    }

    #[test]
    fn parses_nameservers() {
        let t =
            "nameserver 10.0.0.1\nnameserver fe80::1%eth0\n  # nameserver 1.1.1.1\nnameserver x\n";
        assert_eq!(
            nameservers(t),
            vec![
                "10.0.0.1".parse::<IpAddr>().unwrap(),
                "fe80::1".parse().unwrap()
            ]
        );
    }
}
