//! `kwg-wg` with `KWG_WG_STATS=FILE`: segments per syscall on each edge, written on SIGUSR1 and
//! at exit, as `scripts/bench-tunnel.sh` reads them.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use common::*;
use kwg_contract::keys::{PrivateKey, write_private_key_file};

const KWG: &str = env!("CARGO_BIN_EXE_kwg-wg");

/// `edge -> (calls, segments)` from a stats file.
fn read_stats(path: &Path) -> HashMap<String, (u64, u64)> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .map(|l| {
            let mut w = l.split_whitespace();
            let edge = w.next().unwrap().to_owned();
            let mut num = |key: &str| -> u64 {
                let f = w.next().unwrap();
                f.strip_prefix(key).unwrap().parse().unwrap()
            };
            let calls = num("calls=");
            let segments = num("segments=");
            (edge, (calls, segments))
        })
        .collect()
}

#[test]
fn counters_are_written_on_sigusr1_and_at_exit() {
    let link = Link::new();
    let dir = tempfile::tempdir().unwrap();
    let (ka, kb) = (PrivateKey::generate(), PrivateKey::generate());
    let (ia, ib) = (unique("sa"), unique("sb"));
    let (sa, sb) = (dir.path().join("a.stats"), dir.path().join("b.stats"));
    let (fa, fb) = (sa.to_str().unwrap(), sb.to_str().unwrap());
    let a = spawn_in(
        &link.a,
        &[KWG, "--foreground", &ia],
        &[("KWG_WG_STATS", fa)],
    );
    let mut b = spawn_in(
        &link.b,
        &[KWG, "--foreground", &ib],
        &[("KWG_WG_STATS", fb)],
    );
    assert!(wait_for(Duration::from_secs(5), || {
        uapi_socket(&ia).exists() && uapi_socket(&ib).exists()
    }));
    for (ns, ifname, key, peer, endpoint, allowed, addr) in [
        (
            &link.a,
            &ia,
            &ka,
            &kb,
            Some("192.168.77.2:51820"),
            "10.92.0.2/32",
            "10.92.0.1/24",
        ),
        (&link.b, &ib, &kb, &ka, None, "10.92.0.1/32", "10.92.0.2/24"),
    ] {
        let kf = dir.path().join(format!("{ifname}.key"));
        write_private_key_file(&kf, key).unwrap();
        let pk = peer.public_key().to_string();
        let mut set = vec!["wg", "set", ifname, "private-key", kf.to_str().unwrap()];
        set.extend(["listen-port", "51820", "peer", &pk, "allowed-ips", allowed]);
        if let Some(e) = endpoint {
            set.extend(["endpoint", e]);
        }
        ns.exec(&set);
        ns.addr_up(ifname, addr);
    }
    // 8 MiB of TCP from a to b: over 6,000 segments at MSS 1368.
    assert!(tcp_transfer(
        &link.a,
        &link.b,
        "10.92.0.2:7003".parse().unwrap(),
        8 << 20
    ));

    let pid = nix::unistd::Pid::from_raw(a.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGUSR1).unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || sa.exists()),
        "no stats file after SIGUSR1"
    );
    let s = read_stats(&sa);
    let (reads, read_segments) = s["tun_read"];
    assert!(read_segments > 6000, "{s:?}");
    // TSO: a TUN read carries many segments of the TCP stream.
    assert!(read_segments > 4 * reads, "{s:?}");
    assert!(s["udp_send"].1 > 6000, "{s:?}");
    assert!(s["udp_send"].0 < s["udp_send"].1, "no GSO: {s:?}");
    assert!(s["tun_write"].1 > 0 && s["udp_recv"].1 > 0, "{s:?}");

    // b writes its file when it stops.
    assert!(!sb.exists());
    assert!(b.terminate());
    let s = read_stats(&sb);
    assert!(s["udp_recv"].1 > 6000, "{s:?}");
    assert!(s["tun_write"].1 > 6000, "{s:?}");
    assert!(
        s["tun_write"].0 < s["tun_write"].1,
        "no TUN write coalescing: {s:?}"
    );
}
