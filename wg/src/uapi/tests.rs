use super::*;
use proptest::prelude::*;

fn hex(k: &PublicKey) -> String {
    k.to_hex()
}

#[test]
fn set_then_get_roundtrip() {
    let own = PrivateKey::generate();
    let peer = PrivateKey::generate().public_key();
    let mut core = Core::new(None);
    let body = format!(
        "private_key={}\nlisten_port=51820\nreplace_peers=true\npublic_key={}\npreshared_key={}\nendpoint=[2001:db8::1]:51820\npersistent_keepalive_interval=25\nreplace_allowed_ips=true\nallowed_ip=10.0.0.2/32\nallowed_ip=fd00::/64\nprotocol_version=1\n",
        hex32(own.as_bytes()),
        hex(&peer),
        hex32(&[7; 32]),
    );
    let Request::Set(req) = parse_request(&format!("set=1\n{body}\n")).unwrap() else {
        panic!("not a set");
    };
    assert_eq!(req.listen_port, Some(51820));
    apply_to_core(&req, &mut core);
    assert_eq!(core.public_key(), Some(own.public_key()));
    let text = format_get(
        &core,
        &InterfaceInfo {
            listen_port: 51820,
            fwmark: 0,
        },
        Instant::now(),
        SystemTime::now(),
    );
    assert!(
        text.contains(&format!("public_key={}\n", hex(&peer))),
        "{text}"
    );
    assert!(text.contains("endpoint=[2001:db8::1]:51820\n"));
    assert!(text.contains("allowed_ip=10.0.0.2/32\nallowed_ip=fd00::/64\n"));
    assert!(text.contains("persistent_keepalive_interval=25\n"));
    assert!(text.contains("last_handshake_time_sec=0\n"));
    assert!(text.ends_with("errno=0\n\n"));

    // update_only on an unknown peer does nothing; on a known one it adds an AllowedIP.
    let other = PrivateKey::generate().public_key();
    let req = parse_set(&format!(
        "public_key={}\nupdate_only=true\nallowed_ip=10.9.0.0/16\npublic_key={}\nupdate_only=true\nallowed_ip=10.0.0.3/32\n",
        hex(&other),
        hex(&peer)
    ))
    .unwrap();
    apply_to_core(&req, &mut core);
    assert!(core.peer_config(&other).is_none());
    assert_eq!(core.peer_config(&peer).unwrap().allowed_ips.len(), 3);

    let req = parse_set(&format!("public_key={}\nremove=true\n", hex(&peer))).unwrap();
    apply_to_core(&req, &mut core);
    assert_eq!(core.peer_count(), 0);
}

#[test]
fn bad_input_is_einval() {
    for body in [
        "listen_port=x",
        "bogus=1",
        "private_key=zz",
        "public_key=00\n",
        "noequals",
    ] {
        assert_eq!(parse_set(body).unwrap_err().errno, EINVAL, "{body}");
    }
    assert_eq!(parse_request("hello=1\n\n").unwrap_err().errno, EPROTO);
}

proptest! {
    #[test]
    fn garbage_uapi_never_panics(text in "\\PC{0,300}") {
        let _ = parse_request(&text);
        if let Ok(Request::Set(req)) = parse_request(&format!("set=1\n{text}")) {
            apply_to_core(&req, &mut Core::new(Some(PrivateKey::generate())));
        }
    }

    #[test]
    fn structured_garbage_never_panics(lines in proptest::collection::vec(
        (prop::sample::select(vec!["private_key", "listen_port", "public_key", "endpoint", "allowed_ip",
          "remove", "replace_peers", "persistent_keepalive_interval", "preshared_key", "fwmark"]),
         "[0-9a-f:./\\[\\]]{0,70}"), 0..12)) {
        let body: String = lines.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        if let Ok(req) = parse_set(&body) {
            apply_to_core(&req, &mut Core::new(Some(PrivateKey::generate())));
        }
    }
}
