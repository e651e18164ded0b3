//! Two kwg devices in network namespaces carrying WireGuard over a TCP stream, and roaming
//! between the stream and UDP on authenticated packets.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use kwg_wg::device::DeviceHandle;
use kwg_wg::io::stream::is_stream_endpoint;

fn endpoint_of(d: &NsDevice, key: &kwg_contract::keys::PublicKey) -> Option<SocketAddr> {
    d.block_on(d.handle.peer_endpoint(key))
}

/// Accepts TCP on `b`'s 192.168.77.2:51820 and attaches every connection to `b`'s device as
/// the gateway does (closed when not answered within `UNANSWERED`).
fn serve_tcp(ns: &Netns, d: &NsDevice) {
    let listener = ns.run(|| std::net::TcpListener::bind("192.168.77.2:51820").unwrap());
    listener.set_nonblocking(true).unwrap();
    let handle: DeviceHandle = d.handle.clone();
    d.block_on(async move {
        let l = tokio::net::TcpListener::from_std(listener).unwrap();
        tokio::spawn(async move {
            while let Ok((s, from)) = l.accept().await {
                kwg_wg::io::stream::set_stream_options(&s).unwrap();
                handle.accept_stream(s, format!("tcp {from}")).unwrap();
            }
        });
    });
}

#[test]
fn datagrams_over_tcp_then_back_to_udp_without_losing_the_session() {
    let Pair { link, a, b } = pair();
    let (pa, pb) = (a.handle.public_key(), b.handle.public_key());
    serve_tcp(&link.b, &b);
    // UDP from a to b is dropped: only the stream can carry the tunnel.
    link.a.exec(&["nft", "add table inet t; add chain inet t o { type filter hook output priority 0; }; add rule inet t o udp dport 51820 drop"]);
    assert!(
        !link.a.probe_until(&link.b, "10.70.0.2:7000", 2),
        "UDP is blocked: no tunnel yet"
    );

    let tcp = link
        .a
        .run(|| std::net::TcpStream::connect("192.168.77.2:51820").unwrap());
    tcp.set_nonblocking(true).unwrap();
    let h = a.handle.clone();
    let ep = a.block_on(async move {
        let s = tokio::net::TcpStream::from_std(tcp).unwrap();
        kwg_wg::io::stream::set_stream_options(&s).unwrap();
        let ep = h.attach_stream(s, "tcp to b").unwrap();
        h.pin_endpoint(&pb, ep).await.unwrap();
        ep
    });
    assert!(is_stream_endpoint(&ep));
    assert!(
        link.a.probe_until(&link.b, "10.70.0.2:7000", 5),
        "UDP inside the tunnel, over TCP"
    );
    assert!(tcp_transfer(
        &link.a,
        &link.b,
        "10.70.0.2:5001".parse().unwrap(),
        4 << 20
    ));
    let on_b = endpoint_of(&b, &pa).expect("b learned a's endpoint");
    assert!(
        is_stream_endpoint(&on_b),
        "b answers over the stream: {on_b}"
    );
    let handshakes = a.block_on(a.handle.peers())[0].last_handshake;

    // UDP unblocked: a handshake over UDP is answered over UDP (a stays pinned on the
    // stream meanwhile), then a moves its pin to UDP and b follows on a's next packet.
    link.a.exec(&["nft", "delete table inet t"]);
    let udp: SocketAddr = "192.168.77.2:51820".parse().unwrap();
    assert!(a.block_on(a.handle.probe(&pb, udp)).unwrap());
    assert!(
        wait_for(Duration::from_secs(5), || a
            .handle
            .heard_other(&pb)
            .is_some_and(|(from, _)| from == udp)),
        "the UDP probe was answered over UDP"
    );
    assert_eq!(
        endpoint_of(&a, &pb),
        Some(ep),
        "pinned: a's endpoint did not move by itself"
    );
    a.block_on(a.handle.pin_endpoint(&pb, udp)).unwrap();
    assert!(link.a.probe_until(&link.b, "10.70.0.2:7000", 3));
    assert_eq!(
        endpoint_of(&b, &pa).map(|e| e.ip().to_string()),
        Some("192.168.77.1".into())
    );
    assert!(a.block_on(a.handle.peers())[0].last_handshake >= handshakes);
    a.handle.close_stream(&ep);
    assert!(!a.handle.stream_open(&ep));
    assert!(
        link.a.probe_until(&link.b, "10.70.0.2:7000", 3),
        "still up over UDP"
    );
}

#[test]
fn a_junk_stream_is_dropped_and_the_device_keeps_serving() {
    let Pair { link, a: _a, b } = pair();
    serve_tcp(&link.b, &b);
    // A 64 KiB frame of garbage, then the connection closes: the stream ends, nothing else.
    let ok = link.a.run(|| {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect("192.168.77.2:51820").unwrap();
        let mut junk = vec![0xff, 0xff];
        junk.extend(std::iter::repeat_n(0x01u8, 0xffff));
        s.write_all(&junk).is_ok()
    });
    assert!(ok);
    assert!(
        wait_for(Duration::from_secs(3), || b.handle.streams() == 0),
        "the junk stream ended"
    );
    assert!(
        link.a.probe_until(&link.b, "10.70.0.2:7000", 5),
        "the tunnel over UDP works"
    );
}

/// Connects `a` to `b`'s listener over TCP and moves `a`'s endpoint for `b` onto it.
fn stream_to_b(link: &Link, a: &NsDevice, pb: kwg_contract::keys::PublicKey) -> SocketAddr {
    let tcp = link
        .a
        .run(|| std::net::TcpStream::connect("192.168.77.2:51820").unwrap());
    tcp.set_nonblocking(true).unwrap();
    let h = a.handle.clone();
    a.block_on(async move {
        let s = tokio::net::TcpStream::from_std(tcp).unwrap();
        let ep = h.attach_stream(s, "tcp to b").unwrap();
        h.pin_endpoint(&pb, ep).await.unwrap();
        ep
    })
}

#[test]
fn an_accepted_connection_that_never_authenticates_is_closed_and_a_peers_stays() {
    let Pair { link, a, b } = pair();
    let pb = b.handle.public_key();
    serve_tcp(&link.b, &b);
    // A connection that sends nothing a known peer would (here: nothing at all) ...
    let silent = link
        .a
        .run(|| std::net::TcpStream::connect("192.168.77.2:51820").unwrap());
    // ... and a's own stream, over which a handshakes ...
    let first = stream_to_b(&link, &a, pb);
    assert!(link.a.probe_until(&link.b, "10.70.0.2:7000", 5), "over TCP");
    // ... then a newer one: b follows a onto it, and no peer uses the first anymore.
    let second = stream_to_b(&link, &a, pb);
    assert!(
        link.a.probe_until(&link.b, "10.70.0.2:7000", 5),
        "over the second stream"
    );
    assert!(wait_for(Duration::from_secs(3), || b.handle.streams() == 3));
    let wait = kwg_wg::device::UNANSWERED.max(kwg_wg::device::ORPHANED) + Duration::from_secs(3);
    let gone = wait_for(wait, || b.handle.streams() == 1);
    assert!(
        gone,
        "the silent connection and the one a left were closed: {} open",
        b.handle.streams()
    );
    silent
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut byte = [0u8; 1];
    assert_eq!(
        std::io::Read::read(&mut &silent, &mut byte).ok(),
        Some(0),
        "closed by the device"
    );
    assert!(
        wait_for(Duration::from_secs(2), || !a.handle.stream_open(&first)),
        "b closed the stream a left"
    );
    assert!(a.handle.stream_open(&second));
    assert!(
        link.a.probe_until(&link.b, "10.70.0.2:7000", 3),
        "a's current stream stays"
    );
}
