use super::*;

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
