//! The LAN of `kwg-sim up` (default `--lan-model nic`) is a wire between NICs: what crosses it
//! are frames of at most the MTU, and a machine's UDP_GRO socket receives them coalesced, as
//! from a NIC whose driver runs GRO.

mod common;

use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg, setsockopt, sockopt};
use std::io::IoSliceMut;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::time::Duration;

/// Bytes of one datagram: what fits a 1500-byte frame with IPv4 and UDP headers, as a tunnel's.
const SEGMENT: usize = 1400;
const SEGMENTS_PER_SEND: usize = 40;
const SENDS: usize = 40;

/// Frames the interface `dev` of `netns` has sent so far.
fn tx_packets(c: &kwg_sim::testing::Cluster, netns: &str, dev: &str) -> u64 {
    let out = c
        .exec_ok(netns, &["ip", "-j", "-s", "link", "show", dev])
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0]["stats64"]["tx"]["packets"].as_u64().unwrap()
}

fn bound_in(c: &kwg_sim::testing::Cluster, netns: &str) -> UdpSocket {
    c.run_in(netns, || {
        UdpSocket::bind("0.0.0.0:0").map_err(kwg_sim::Error::io("binding UDP"))
    })
    .unwrap()
}

#[test]
fn a_pods_gso_send_crosses_the_lan_as_frames_and_reaches_the_laptop_coalesced() {
    let c = common::cluster();
    let pod = c.pod_netns("default", "echo").unwrap();
    let rx = bound_in(&c, &c.netns("laptop"));
    setsockopt(&rx, sockopt::UdpGroSegment, &true).unwrap();
    // Room for every datagram, coalesced or not, so nothing is dropped while the test sends.
    setsockopt(&rx, sockopt::RcvBufForce, &(16 << 20)).unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let to = (c.net().laptop_ip(), rx.local_addr().unwrap().port());
    let tx = bound_in(&c, &pod);
    // The node learns the laptop's MAC before the burst (a neighbour lookup queues few packets).
    tx.send_to(b"hello", to).unwrap();
    assert_eq!(rx.recv(&mut [0; 64]).unwrap(), 5);

    setsockopt(&tx, sockopt::UdpGsoSegment, &(SEGMENT as i32)).unwrap();
    let lan = c.netns("lan");
    let frames_before = tx_packets(&c, &lan, "p-laptop");
    let burst = vec![7u8; SEGMENT * SEGMENTS_PER_SEND];
    for _ in 0..SENDS {
        tx.send_to(&burst, to).unwrap();
    }

    let (mut messages, mut datagrams) = (0usize, 0usize);
    let mut buf = vec![0u8; 65536];
    loop {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let mut cmsg = nix::cmsg_space!(i32);
        let Ok(msg) = recvmsg::<()>(rx.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::empty())
        else {
            break; // the read timeout: everything sent has arrived
        };
        let segment = msg
            .cmsgs()
            .unwrap()
            .find_map(|m| match m {
                ControlMessageOwned::UdpGroSegments(s) => Some(s as usize),
                _ => None,
            })
            .unwrap_or(msg.bytes);
        messages += 1;
        datagrams += msg.bytes.div_ceil(segment);
    }
    let frames = tx_packets(&c, &lan, "p-laptop") - frames_before;
    let sent = SENDS * SEGMENTS_PER_SEND;
    assert!(
        frames >= sent as u64,
        "the LAN carried {frames} frames to the laptop for {sent} datagrams: GSO super-packets crossed whole, as no wire carries them"
    );
    assert_eq!(datagrams, sent, "datagrams received");
    let per_message = datagrams as f64 / messages as f64;
    assert!(
        per_message >= 10.0,
        "the laptop's UDP_GRO socket got {per_message:.1} datagrams per message ({datagrams} in {messages}): its interface did not coalesce them as a NIC's GRO does"
    );
}
