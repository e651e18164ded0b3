//! The session core with systemd-resolved: the link's domains, the probe through the stub, the
//! fall-back to the resolver file, and mode resolved where resolved does not run.

use std::time::Duration;

use kwg_contract::keys::PrivateKey;

use super::*;

#[test]
fn with_systemd_resolved_the_tunnel_link_gets_the_cluster_domains_and_the_stub_is_probed() {
    let mut r = Run::new(defaults);
    let gw = PrivateKey::generate();
    let mut actions = Vec::new();
    r.pump(|a| {
        actions.push(format!("{a:?}"));
        matches!(a, Action::Inspect).then(|| {
            let mut f = facts(&gw);
            f.resolved = plan::Resolved::Managed;
            Some(Event::Inspected(Box::new(f)))
        })
    });
    let log = r.take_log();
    let tail: Vec<&str> = log
        .iter()
        .skip_while(|n| *n != "StartForwarder")
        .map(String::as_str)
        .collect();
    assert_eq!(
        tail,
        [
            "StartForwarder",
            "Save",
            "Save",
            "ConfigureResolved",
            "AwaitHandshake",
            "ProbeDns",
            "Ready"
        ]
    );
    let link = actions
        .iter()
        .find(|a| a.starts_with("ConfigureResolved"))
        .unwrap();
    for domain in [
        "\"cluster.local\", routing_only: true",
        "\"emojivoto.svc.cluster.local\", routing_only: false",
        "\"emojivoto\", routing_only: true",
        "ifindex: 7",
    ] {
        assert!(link.contains(domain), "{domain} missing in {link}");
    }
    let probe = actions.iter().find(|a| a.starts_with("ProbeDns")).unwrap();
    assert!(probe.contains("127.0.0.53:53"), "{probe}");
    assert_eq!(
        r.s.state().unwrap().dns.as_ref().unwrap().mode,
        crate::journal::DnsModeUsed::Resolved
    );
    // Leave reverts the link first.
    r.s.handle(Event::Leave, r.now);
    r.pump(|_| None);
    assert_eq!(r.take_log()[0], "undo RevertLink");
}

#[test]
fn dns_mode_resolved_without_resolved_is_refused_before_anything_changes() {
    let mut r = Run::new(|c| c.dns_mode = DnsMode::Resolved);
    r.pump(|_| None);
    assert_eq!(r.take_log(), ["Inspect", "Exit"]);
    let err = r.s.outcome().unwrap_err().to_string();
    assert!(
        err.contains("systemd-resolved does not manage this machine's DNS (no stub)"),
        "{err}"
    );
}

#[test]
fn in_auto_mode_queries_not_reaching_kwg_through_resolved_fall_back_to_the_resolver_file() {
    let mut r = Run::new(defaults);
    let gw = PrivateKey::generate();
    r.pump(|a| match a {
        Action::Inspect => {
            let mut f = facts(&gw);
            f.resolved = plan::Resolved::Managed;
            f.uplink = Some(b"nameserver 192.0.2.53\n".to_vec());
            Some(Some(Event::Inspected(Box::new(f))))
        }
        // The stub never answers the probe.
        Action::ProbeDns { .. } => Some(None),
        _ => None,
    });
    r.take_log();
    assert_eq!(r.s.phase(), Phase::ProbingDns);
    r.advance(Duration::from_millis(1999));
    r.pump(|_| None);
    assert!(r.take_log().is_empty());
    r.advance(Duration::from_millis(1));
    let mut probes = Vec::new();
    r.pump(|a| {
        if let Action::ProbeDns { server, .. } = a {
            probes.push(*server);
        }
        None
    });
    assert_eq!(
        r.take_log(),
        [
            "Cancel",
            "Progress",
            "RevertResolved",
            "Save",
            "Save",
            "WriteResolvConf",
            "AwaitHandshake",
            "ProbeDns",
            "Ready"
        ]
    );
    assert_eq!(probes, ["10.96.0.10:53".parse().unwrap()]);
    let state = r.s.state().unwrap();
    assert_eq!(
        state.dns.as_ref().unwrap().mode,
        crate::journal::DnsModeUsed::ResolvConf
    );
    let undo: Vec<&str> = state.undo.iter().map(undo_name).collect();
    assert_eq!(
        undo,
        [
            "DeletePeer",
            "DeleteInterface(created)",
            "RemoveFirewall",
            "StopForwarder",
            "RestoreResolvConf"
        ]
    );
    assert_eq!(
        state.dns.as_ref().unwrap().upstreams,
        ["192.0.2.53:53".parse().unwrap()]
    );
}

#[test]
fn the_machines_dns_servers_are_trust_facts_even_without_dns() {
    // The driver reads the resolver file (and resolved's uplinks) whatever the DNS mode: a
    // gateway that omits dnsIp, or --dns-mode off, still may not cover them with a route.
    let gw = PrivateKey::generate();
    let mut f = facts(&gw);
    f.uplink = Some(b"nameserver 192.0.2.54\n".to_vec());
    let servers: [std::net::IpAddr; 2] =
        ["192.0.2.53".parse().unwrap(), "192.0.2.54".parse().unwrap()];
    let off = plan::plan(&config(|c| c.dns_mode = DnsMode::Off), &f, "/tmp/b".into()).unwrap();
    assert!(off.dns.is_none());
    assert_eq!(off.machine.dns_servers, servers);
    f.info.dns_ip = None;
    let no_dns_ip = plan::plan(&config(defaults), &f, "/tmp/b".into()).unwrap();
    assert!(no_dns_ip.dns.is_none());
    assert_eq!(no_dns_ip.machine.dns_servers, servers);
}
