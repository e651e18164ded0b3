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

/// The resolver file after one session leaves (issue 27), or `None` to leave it as it is
/// (someone else's). Sessions stack: each later one renders over the file it found (its
/// `backup`), putting its forwarder first, so each forwarder passes on what is not its own to
/// the one below. The leaving session's forwarder is `own`, its search list `own_search`;
/// `live` says whether another session's forwarder still answers at an address.
/// - The file is empty (a crash mid-write): the backup.
/// - Not kwg's: untouched.
/// - This session on top: its backup, unless the backup is another session's rendering whose
///   forwarder is gone: it left while this one was on top (its `nameserver` line is no longer
///   in the file: whoever holds that address now is not that session), or `live` says no;
///   then the file without this session's lines.
/// - Another session on top: the file without this session's lines (its forwarder and the
///   search domains it added), the rest untouched, so the other session keeps working.
/// - Either way, when the session below (the backup's) was killed (`live` says no), its
///   `nameserver` line goes too.
pub fn after_leave(
    current: &str,
    backup: &str,
    own: IpAddr,
    own_search: &[String],
    live: impl Fn(IpAddr) -> bool,
) -> Option<String> {
    if current.is_empty() {
        return Some(backup.to_string());
    }
    if !is_ours(current) {
        return None;
    }
    let on_top = nameservers(current).first() == Some(&own);
    let in_file = nameservers(current);
    let backup_gone = is_ours(backup)
        && nameservers(backup)
            .first()
            .is_some_and(|ip| !in_file.contains(ip) || !live(*ip));
    if on_top && !backup_gone {
        return Some(backup.to_string());
    }
    let found = search_of(backup);
    let added: Vec<&String> = own_search.iter().filter(|s| !found.contains(s)).collect();
    let mut out = without(current, own, &added, &live);
    // The session below, killed (its forwarder no longer answers): its `nameserver` line goes
    // too, or every lookup would try a dead server first.
    let below = is_ours(backup)
        .then(|| nameservers(backup).first().copied())
        .flatten();
    if let Some(dead) = below.filter(|ip| *ip != own && !live(*ip)) {
        out = without(&out, dead, &[], &live);
    }
    Some(out)
}

/// The `search` words of a resolver file (the last `search`/`domain` line, as glibc).
fn search_of(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if let Some("search" | "domain") = words.next() {
            found = words.map(str::to_string).collect();
        }
    }
    found
}

/// `text` without the `nameserver` line of `forwarder` and the search words `search`; kwg's
/// marker stays while the first server left is a live forwarder of another session.
fn without(
    text: &str,
    forwarder: IpAddr,
    search: &[&String],
    live: &impl Fn(IpAddr) -> bool,
) -> String {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") if words.next().and_then(|w| w.parse().ok()) == Some(forwarder) => {}
            Some(kind @ ("search" | "domain")) => {
                let kept: Vec<&str> = words.filter(|w| !search.iter().any(|s| s == w)).collect();
                if !kept.is_empty() {
                    out.push(format!("{kind} {}", kept.join(" ")));
                }
            }
            _ => out.push(line.to_string()),
        }
    }
    let first = nameservers(&out.join("\n")).first().copied();
    if !first.is_some_and(live) {
        out.retain(|l| l != MARKER);
    }
    let mut s = out.join("\n");
    s.push('\n');
    s
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

    #[test]
    fn a_session_leaving_from_under_another_takes_only_its_own_lines() {
        let (a, b): (IpAddr, IpAddr) = (
            "127.77.0.53".parse().unwrap(),
            "127.77.0.54".parse().unwrap(),
        );
        let a_search: Vec<String> = vec![
            "emojivoto.svc.cluster.local".into(),
            "svc.cluster.local".into(),
        ];
        let b_search: Vec<String> = vec!["corp.example".into()];
        let first = render(ORIGINAL, a, &a_search);
        let second = render(&first, b, &b_search);
        let alive = |l: &[IpAddr]| {
            let l = l.to_vec();
            move |ip: IpAddr| l.contains(&ip)
        };
        // Last in, first out: each puts back what it found.
        assert_eq!(
            after_leave(&second, &first, b, &b_search, alive(&[a])),
            Some(first.clone())
        );
        assert_eq!(
            after_leave(&first, ORIGINAL, a, &a_search, alive(&[])),
            Some(ORIGINAL.to_string())
        );
        // The first leaves while the second is on top: only its server and search go.
        let left = after_leave(&second, ORIGINAL, a, &a_search, alive(&[b])).unwrap();
        assert_eq!(nameservers(&left), vec![b, "192.0.2.53".parse().unwrap()]);
        assert!(
            left.contains("search corp.example\n") && is_ours(&left),
            "{left}"
        );
        // Then the second: its backup's forwarder is gone, so the machine's file is what is left.
        let end = after_leave(&left, &first, b, &b_search, alive(&[])).unwrap();
        assert!(!is_ours(&end), "{end}");
        assert_eq!(
            nameservers(&end),
            vec!["192.0.2.53".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(search_of(&end), vec!["corp.example".to_string()]);
        assert!(
            end.contains("options edns0") && end.contains("# lan"),
            "{end}"
        );
        // The same, but another program took the first one's address in between (a probe
        // of it answers): its line left the file with it, so the backup is not put back.
        let end = after_leave(&left, &first, b, &b_search, alive(&[a])).unwrap();
        assert_eq!(
            nameservers(&end),
            vec!["192.0.2.53".parse::<IpAddr>().unwrap()]
        );
        assert!(!is_ours(&end), "{end}");
        // The first one killed (its daemon gone), then the second leaves: the dead forwarder's
        // line goes with it, the machine's server first again.
        let end = after_leave(&second, &first, b, &b_search, alive(&[])).unwrap();
        assert_eq!(
            nameservers(&end),
            vec!["192.0.2.53".parse::<IpAddr>().unwrap()],
            "{end}"
        );
        assert!(!is_ours(&end), "{end}");
        // Someone else's file is left alone; an empty one gets the backup.
        assert_eq!(
            after_leave(ORIGINAL, &first, a, &a_search, alive(&[])),
            None
        );
        assert_eq!(
            after_leave("", &first, b, &b_search, alive(&[a])),
            Some(first)
        );
    }
}
