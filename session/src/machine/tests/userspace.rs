//! Userspace mode in the session core: one StartUserspace step instead of the TUN, network,
//! firewall and DNS steps; the probe asks the cluster DNS itself (through the stack); leave
//! stops the proxy and deletes the peer.

use super::*;

#[test]
fn userspace_mode_changes_nothing_on_the_machine_and_probes_the_cluster_dns() {
    let mut r = Run::new(|c| {
        c.userspace = true;
        c.proxy_listen = "127.0.0.1:0".parse().unwrap();
    });
    let proxy: std::net::SocketAddr = "127.0.0.1:41080".parse().unwrap();
    let mut setup = None;
    let mut probed = None;
    let mut facts_given = false;
    let gateway = r.gateway.clone();
    r.pump(|a| match a {
        // The interface name is taken and a machine route overlaps: neither matters here.
        Action::Inspect if !facts_given => {
            facts_given = true;
            let mut f = facts(&gateway);
            f.interface_exists = true;
            f.machine_routes = vec![crate::routes::Route {
                destination: "10.96.0.0/12".parse().unwrap(),
                gateway: None,
                interface: Some("eth0".into()),
                table: crate::routes::MAIN_TABLE,
            }];
            Some(Some(Event::Inspected(Box::new(f))))
        }
        Action::StartUserspace(s) => {
            setup = Some((**s).clone());
            Some(Some(Event::UserspaceStarted(proxy)))
        }
        Action::ProbeDns { server, .. } => {
            probed = Some(*server);
            None
        }
        _ => None,
    });
    assert_eq!(r.s.phase(), Phase::Serving);
    let log = r.take_log();
    for tun_step in [
        "CreateDevice",
        "ConfigureNetwork",
        "InstallFirewall",
        "StartForwarder",
        "WriteResolvConf",
        "ConfigureResolved",
    ] {
        assert!(!log.iter().any(|l| l == tun_step), "{tun_step} in {log:?}");
    }
    for step in ["StartUserspace", "AwaitHandshake", "ProbeDns", "Ready"] {
        assert!(log.iter().any(|l| l == step), "no {step} in {log:?}");
    }
    let setup = setup.unwrap();
    assert_eq!(
        setup.address,
        "100.77.0.2".parse::<std::net::Ipv4Addr>().unwrap()
    );
    assert!(setup.subnets.contains(&"10.96.0.0/12".parse().unwrap()));
    let dns = setup.dns.expect("split DNS for the proxy");
    assert_eq!(dns.cluster, "10.96.0.10:53".parse().unwrap());
    assert_eq!(probed, Some("10.96.0.10:53".parse().unwrap()));
    let saved = r.saved.clone().unwrap();
    assert_eq!(saved.proxy, Some(proxy));
    let undo: Vec<&str> = saved.undo.iter().map(undo_name).collect();
    assert_eq!(undo, ["DeletePeer", "StopProxy"]);
    assert_eq!(saved.dns, None, "no resolver was pointed anywhere");

    r.s.handle(Event::Leave, r.now);
    r.pump(|_| None);
    let log = r.take_log();
    assert_eq!(
        log.iter()
            .filter(|l| l.starts_with("undo"))
            .collect::<Vec<_>>(),
        ["undo StopProxy", "undo DeletePeer"]
    );
    assert!(r.s.outcome().is_ok());
}
