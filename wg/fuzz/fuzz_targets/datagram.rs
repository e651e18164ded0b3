//! Arbitrary UDP datagrams and TUN packets into a core with one peer: must never panic.
#![no_main]

use std::sync::OnceLock;
use std::time::Instant;

use kwg_wg::core::{Core, NetBatch, TunBatch};
use kwg_contract::keys::PrivateKey;
use kwg_wg::peer::PeerConfig;
use libfuzzer_sys::fuzz_target;

static KEYS: OnceLock<(PrivateKey, PrivateKey)> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let (own, peer) = KEYS.get_or_init(|| (PrivateKey::generate(), PrivateKey::generate()));
    let mut core = Core::new(Some(own.clone()));
    let mut cfg = PeerConfig::new(peer.public_key());
    cfg.endpoint = Some("192.0.2.1:51820".parse().unwrap());
    cfg.allowed_ips = vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()];
    core.upsert_peer(cfg);
    let now = Instant::now();
    let mut net = NetBatch::new(64);
    let mut tun = TunBatch::new(10);
    core.handle_udp(
        "192.0.2.1:51820".parse().unwrap(),
        data,
        now,
        &mut net,
        &mut tun,
    );
    core.handle_tun(data, now, &mut net);
    core.tick(now, &mut net);
});
