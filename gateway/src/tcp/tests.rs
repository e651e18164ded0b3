//! The listener with real sockets and two userspace devices (no TUN, no root): a gateway and
//! a laptop that is one of its peers.

use super::*;
use kwg_contract::keys::PrivateKey;
use kwg_wg::device::{Device, PeerConfig};
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// A connection to `to` from the loopback address `from`.
async fn connect(from: &str, to: SocketAddr) -> TcpStream {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::new(from.parse().unwrap(), 0)).unwrap();
    s.connect(to).await.unwrap()
}

/// Whether the gateway closed `s` within `within` (rather than keeping it open).
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut b = [0u8; 16];
    let r = tokio::time::timeout(within, s.read(&mut b)).await;
    matches!(r, Ok(Ok(0) | Err(_)))
}

async fn userspace(name: &str, key: &PrivateKey, peer: &PrivateKey, peer_ip: &str) -> Device {
    let (d, _channel) = Device::start_userspace(name.into(), key.clone(), 0)
        .await
        .unwrap();
    let p = PeerConfig {
        allowed_ips: vec![peer_ip.parse().unwrap()],
        ..PeerConfig::new(peer.public_key())
    };
    d.handle().upsert_peer(p).await.unwrap();
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_slot_and_its_connected_peers_do_not_count() {
    let (gw_key, laptop_key) = (PrivateKey::generate(), PrivateKey::generate());
    let gw = userspace("gw", &gw_key, &laptop_key, "100.77.0.2/32").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics = Metrics::default();
    let token = CancellationToken::new();
    tokio::spawn(serve(
        listener,
        gw.handle(),
        2,
        metrics.clone(),
        token.clone(),
    ));
    let (open, refused) = (Duration::from_millis(300), Duration::from_secs(3));

    // 127.0.0.2 opens connections that never send a handshake: two are held, the third is
    // closed at once and counted; another address still gets in.
    let mut junk = vec![
        connect("127.0.0.2", addr).await,
        connect("127.0.0.2", addr).await,
    ];
    let mut third = connect("127.0.0.2", addr).await;
    assert!(closed_within(&mut third, refused).await, "refused");
    assert_eq!(metrics.tcp_refused_source.get(), 1);
    for s in &mut junk {
        assert!(!closed_within(s, open).await, "the first two are held");
    }
    let mut other = connect("127.0.0.4", addr).await;
    assert!(!closed_within(&mut other, open).await, "another source");
    // One of them closes: its slot comes back.
    drop(junk.pop());
    tokio::time::sleep(open).await;
    let mut again = connect("127.0.0.2", addr).await;
    assert!(!closed_within(&mut again, open).await, "a slot came back");

    // A known peer connecting from 127.0.0.3 handshakes over its stream: once answered it no
    // longer counts, so two more unauthenticated connections from there are held.
    let laptop = userspace("laptop", &laptop_key, &gw_key, "100.77.0.1/32").await;
    let (l, gw_pub) = (laptop.handle(), gw_key.public_key());
    let ep = l
        .attach_stream(connect("127.0.0.3", addr).await, "tcp to gw")
        .unwrap();
    l.pin_endpoint(&gw_pub, ep).await.unwrap();
    assert!(l.probe(&gw_pub, ep).await.unwrap());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while l.peers().await[0].last_handshake.is_none() {
        assert!(tokio::time::Instant::now() < deadline, "no handshake");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut more = vec![
        connect("127.0.0.3", addr).await,
        connect("127.0.0.3", addr).await,
    ];
    for s in &mut more {
        assert!(
            !closed_within(s, open).await,
            "the peer's stream is not counted"
        );
    }
    let mut third = connect("127.0.0.3", addr).await;
    assert!(closed_within(&mut third, refused).await, "refused");
    assert_eq!(metrics.tcp_refused_source.get(), 2);
    assert_eq!(metrics.tcp_refused_full.get(), 0);
    assert!(l.stream_open(&ep), "the peer's stream still runs");
    token.cancel();
}
