//! The `kwg-wg` binary configured with `wg`, against wireguard-go (Debian) and itself.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use kwg_contract::keys::{PrivateKey, write_private_key_file};

const KWG: &str = env!("CARGO_BIN_EXE_kwg-wg");

/// A userspace WireGuard process in a namespace, configured through `wg`.
struct Wg {
    ifname: String,
    key: PrivateKey,
    key_file: tempfile::TempPath,
    proc: ChildGuard,
}

impl Wg {
    fn kwg(ns: &Netns) -> Wg {
        let ifname = unique("k");
        let proc = spawn_in(ns, &[KWG, "--foreground", &ifname], &[("KWG_LOG", "warn")]);
        Wg::configure_key(ifname, proc)
    }

    fn wireguard_go(ns: &Netns) -> Wg {
        let ifname = unique("g");
        let proc = spawn_in(
            ns,
            &["wireguard-go", &ifname],
            &[("WG_PROCESS_FOREGROUND", "1")],
        );
        Wg::configure_key(ifname, proc)
    }

    fn configure_key(ifname: String, proc: ChildGuard) -> Wg {
        assert!(
            wait_for(Duration::from_secs(10), || uapi_socket(&ifname).exists()),
            "{ifname}: no UAPI socket"
        );
        let key = PrivateKey::generate();
        let key_file = tempfile::NamedTempFile::new().unwrap().into_temp_path();
        write_private_key_file(&key_file, &key).unwrap();
        Wg {
            ifname,
            key,
            key_file,
            proc,
        }
    }

    fn set(&self, ns: &Netns, args: &[&str]) {
        let mut v = vec!["wg", "set", &self.ifname];
        v.extend_from_slice(args);
        ns.exec(&v);
    }

    /// Private key, port, one peer.
    fn setup(
        &self,
        ns: &Netns,
        port: &str,
        peer: &Wg,
        endpoint: Option<&str>,
        allowed: &str,
        cidr: &str,
    ) {
        let key_path = self.key_file.to_str().unwrap().to_owned();
        let pubkey = peer.key.public_key().to_string();
        let mut args = vec![
            "private-key",
            &key_path,
            "listen-port",
            port,
            "peer",
            &pubkey,
        ];
        if let Some(e) = endpoint {
            args.extend_from_slice(&["endpoint", e]);
        }
        args.extend_from_slice(&["allowed-ips", allowed]);
        self.set(ns, &args);
        ns.addr_up(&self.ifname, cidr);
    }

    fn show(&self, ns: &Netns) -> String {
        ns.exec(&["wg", "show", &self.ifname])
    }
}

/// a: kwg (10.71.0.1), b: wireguard-go (10.71.0.2); `kwg_initiates` picks who knows the
/// other's endpoint.
fn kwg_and_wireguard_go(kwg_initiates: bool) -> (Link, Wg, Wg) {
    let link = Link::new();
    let k = Wg::kwg(&link.a);
    let g = Wg::wireguard_go(&link.b);
    let (ek, eg) = if kwg_initiates {
        (Some("192.168.77.2:51821"), None)
    } else {
        (None, Some("192.168.77.1:51820"))
    };
    k.setup(&link.a, "51820", &g, ek, "10.71.0.2/32", "10.71.0.1/24");
    g.setup(&link.b, "51821", &k, eg, "10.71.0.1/32", "10.71.0.2/24");
    (link, k, g)
}

#[test]
fn kwg_initiates_to_wireguard_go() {
    let (link, k, _g) = kwg_and_wireguard_go(true);
    assert!(
        link.a.probe_until(&link.b, "10.71.0.2:7000", 5),
        "kwg → wireguard-go"
    );
    assert!(tcp_transfer(
        &link.a,
        &link.b,
        "10.71.0.2:5001".parse().unwrap(),
        4 << 20
    ));
    assert!(tcp_transfer(
        &link.b,
        &link.a,
        "10.71.0.1:5002".parse().unwrap(),
        4 << 20
    ));
    let show = k.show(&link.a);
    assert!(
        show.contains(&format!("peer: {}", _g.key.public_key())),
        "{show}"
    );
    assert!(show.contains("latest handshake:"), "{show}");
    assert!(show.contains("endpoint: 192.168.77.2:51821"), "{show}");
}

#[test]
fn wireguard_go_initiates_to_kwg() {
    let (link, k, g) = kwg_and_wireguard_go(false);
    assert!(
        link.b.probe_until(&link.a, "10.71.0.1:7000", 5),
        "wireguard-go → kwg"
    );
    assert!(tcp_transfer(
        &link.b,
        &link.a,
        "10.71.0.1:5001".parse().unwrap(),
        4 << 20
    ));
    // kwg learned wireguard-go's endpoint from the handshake and reports it to `wg`.
    let dump = link.a.exec(&["wg", "show", &k.ifname, "endpoints"]);
    assert!(dump.contains("192.168.77.2:51821"), "{dump}");
    let conf = link.a.exec(&["wg", "showconf", &k.ifname]);
    assert!(
        conf.contains(&format!("PublicKey = {}", g.key.public_key())),
        "{conf}"
    );
    assert!(conf.contains("AllowedIPs = 10.71.0.2/32"), "{conf}");
}

#[test]
fn allowed_ips_update_through_uapi_needs_no_new_handshake() {
    let (link, k, g) = kwg_and_wireguard_go(true);
    assert!(link.a.probe_until(&link.b, "10.71.0.2:7000", 5));
    let handshakes = |ns: &Netns| ns.exec(&["wg", "show", &k.ifname, "latest-handshakes"]);
    let before = handshakes(&link.a);
    // wireguard-go gets a second address that kwg does not yet allow.
    link.b
        .ip(&["addr", "add", "10.71.0.9/24", "dev", &g.ifname]);
    assert!(
        !link.b.probe(&link.a, Some("10.71.0.9"), "10.71.0.1:7001"),
        "kwg accepted a source outside the peer's AllowedIPs"
    );
    let peer = g.key.public_key().to_string();
    k.set(
        &link.a,
        &["peer", &peer, "allowed-ips", "10.71.0.2/32,10.71.0.9/32"],
    );
    assert!(
        link.b.probe(&link.a, Some("10.71.0.9"), "10.71.0.1:7002"),
        "the new AllowedIP is not in effect"
    );
    assert_eq!(
        handshakes(&link.a),
        before,
        "the update caused a new handshake"
    );
}

#[test]
fn sigterm_removes_the_socket() {
    let ns = Netns::new();
    let mut k = Wg::kwg(&ns);
    assert!(k.proc.terminate(), "kwg-wg ignored SIGTERM");
    assert!(!Path::new(&uapi_socket(&k.ifname)).exists());
}
