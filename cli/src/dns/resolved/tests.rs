use super::*;
use ipnet::IpNet;

fn none() -> std::collections::BTreeSet<String> {
    std::collections::BTreeSet::new()
}

fn names(d: &LinkDomains) -> Vec<String> {
    d.domains.iter().map(ToString::to_string).collect()
}

#[test]
fn the_link_routes_the_cluster_domain_and_each_namespace_and_searches_the_connected_one() {
    let d = link_domains(
        "cluster.local.",
        "emojivoto",
        ["default", "kube-system"],
        &[],
        &none(),
    )
    .unwrap();
    assert_eq!(
        names(&d),
        [
            "~cluster.local",
            "emojivoto.svc.cluster.local",
            "~default",
            "~emojivoto",
            "~kube-system",
        ]
    );
    assert!(d.skipped.is_empty());
}

#[test]
fn namespaces_that_would_capture_other_names_are_skipped() {
    // `~com` or `~de` (a public suffix) would send every `.com` or `.de` name to the cluster.
    let excl = vec![".corp".to_string()];
    let spaces = [
        "com", "local", "corp", "Bad_Name", "-x", "arpa", "web2", "de", "dev",
    ];
    let d = link_domains("cluster.local", "emojivoto", spaces, &excl, &none()).unwrap();
    let routed = ["~cluster.local", "emojivoto.svc.cluster.local"];
    assert_eq!(names(&d), [&routed[..], &["~emojivoto", "~web2"]].concat());
    let skipped: Vec<&str> = d.skipped.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        skipped,
        [
            "-x", "arpa", "bad_name", "com", "corp", "de", "dev", "local"
        ]
    );
    assert!(
        d.skipped
            .contains(&("com".to_string(), "an excluded suffix"))
    );
    assert!(d.skipped.contains(&(
        "de".to_string(),
        "a public suffix not named in --namespace or --mapped-namespaces"
    )));
    // A public suffix named in --mapped-namespaces: the user's choice.
    let named = ["dev".to_string()].into();
    let d = link_domains("cluster.local", "emojivoto", ["dev"], &[], &named).unwrap();
    assert_eq!(names(&d), [&routed[..], &["~dev", "~emojivoto"]].concat());
}

#[test]
fn a_bad_cluster_domain_or_namespace_is_an_error_naming_the_flag() {
    let e = link_domains("", "dev", [], &[], &none())
        .unwrap_err()
        .to_string();
    assert!(e.contains("--cluster-domain"), "{e}");
    let e = link_domains("clu ster.local", "dev", [], &[], &none())
        .unwrap_err()
        .to_string();
    assert!(e.contains("--cluster-domain"), "{e}");
    let e = link_domains("cluster.local", "a.b", [], &[], &none())
        .unwrap_err()
        .to_string();
    assert!(e.contains("pass -n"), "{e}");
}

#[test]
fn resolv_conf_is_the_stub_by_link_or_by_its_first_nameserver() {
    let stub = Path::new("../run/systemd/resolve/stub-resolv.conf");
    assert_eq!(ResolvConf::classify(Some(stub), ""), ResolvConf::Stub);
    let text = "# This is /run/systemd/resolve/stub-resolv.conf\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n";
    assert_eq!(ResolvConf::classify(None, text), ResolvConf::Stub);
    // resolved's uplink file lists the real servers: queries bypass resolved's routing.
    let uplink = Path::new("/run/systemd/resolve/resolv.conf");
    assert_eq!(
        ResolvConf::classify(Some(uplink), "nameserver 192.0.2.53\n"),
        ResolvConf::Other {
            first_nameserver: Some("192.0.2.53".parse().unwrap())
        }
    );
    assert_eq!(
        ResolvConf::classify(None, "search corp.example\n"),
        ResolvConf::Other {
            first_nameserver: None
        }
    );
}

#[tokio::test]
async fn detect_says_why_resolved_is_not_used_without_touching_the_bus() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("resolv.conf");
    std::fs::write(&path, "nameserver 10.0.0.2\n").unwrap();
    // A bus address that cannot work proves the bus is not asked.
    let found = detect_with(&path, Some("unix:path=/nonexistent/bus")).await;
    match found.unwrap() {
        Detection::NotManaged { reason } => {
            assert!(
                reason.contains("not systemd-resolved's stub (10.0.0.2)"),
                "{reason}"
            )
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_stub_resolv_conf_without_a_bus_names_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("resolv.conf");
    std::fs::write(&path, "nameserver 127.0.0.53\n").unwrap();
    let bus = format!("unix:path={}", dir.path().join("no-bus").display());
    let e = detect_with(&path, Some(&bus))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot reach the D-Bus system bus"), "{e}");
    assert!(e.contains("--dns-mode resolv-conf"), "{e}");
}

#[test]
fn port_53_uses_set_link_dns_and_another_port_set_link_dns_ex() {
    let plain = DnsCall::for_server("127.77.0.53:53".parse().unwrap());
    assert_eq!(
        plain,
        DnsCall::Plain(vec![(libc::AF_INET, vec![127, 77, 0, 53])])
    );
    let ex = DnsCall::for_server("[fd00::53]:5353".parse().unwrap());
    let mut v6 = vec![0u8; 16];
    v6[0] = 0xfd;
    v6[15] = 0x53;
    assert_eq!(
        ex,
        DnsCall::Ex(vec![(libc::AF_INET6, v6, 5353, String::new())])
    );
}

#[test]
fn dbus_errors_become_errors_naming_the_fix() {
    let busy = classify_call_error(
        "SetLinkDNS",
        7,
        "org.freedesktop.resolve1.LinkBusy",
        "Link kwg0 is managed.".into(),
    );
    assert!(busy.to_string().contains("Unmanaged=yes"), "{busy}");
    let denied = classify_call_error(
        "SetLinkDNS",
        7,
        "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired",
        String::new(),
    );
    assert!(denied.to_string().contains("as root"), "{denied}");
    let gone = classify_call_error(
        "SetLinkDomains",
        7,
        "org.freedesktop.resolve1.NoSuchLink",
        String::new(),
    );
    assert!(matches!(gone, ResolvedError::NoSuchLink { ifindex: 7, .. }));
    let down = classify_call_error(
        "RevertLink",
        7,
        "org.freedesktop.DBus.Error.ServiceUnknown",
        String::new(),
    );
    assert!(matches!(down, ResolvedError::NotRunning));
    let other = classify_call_error("SetLinkDNS", 7, "org.example.Odd", "odd".into());
    assert!(
        other.to_string().contains("org.example.Odd: odd"),
        "{other}"
    );
}

#[test]
fn interface_index_zero_is_rejected() {
    assert!(link_index(0).is_err());
    assert!(link_index(u32::MAX).is_err());
    assert_eq!(link_index(3).unwrap(), 3);
}

#[test]
fn reverse_zones_of_the_cluster_cidrs_round_to_octet_and_nibble_boundaries() {
    let nets: Vec<IpNet> = [
        "10.96.0.0/12",
        "10.244.0.0/16",
        "10.244.1.0/24",
        "fd00:10:96::/62",
        "0.0.0.0/0",
    ]
    .iter()
    .map(|n| n.parse().unwrap())
    .collect();
    let got: Vec<String> = reverse_domains(&nets)
        .iter()
        .map(ToString::to_string)
        .collect();
    let mut want: Vec<String> = (96..=111)
        .map(|o| format!("~{o}.10.in-addr.arpa"))
        .collect();
    want.push("~1.244.10.in-addr.arpa".into());
    want.push("~244.10.in-addr.arpa".into());
    // fd00:0010:0096:0000::/62 -> the 16th nibble is 0..=3.
    for n in 0..4 {
        want.push(format!("~{n}.0.0.0.6.9.0.0.0.1.0.0.0.0.d.f.ip6.arpa"));
    }
    want.sort();
    let mut got_sorted = got.clone();
    got_sorted.sort();
    assert_eq!(got_sorted, want);
}
