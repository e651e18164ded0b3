//! A TSO read split on one side, encrypted, decrypted on the other straight into a TUN batch
//! behind a virtio-net header: the same super-packet comes out, spoofed packets dropped.

use super::*;
use crate::io::offload::tests::{pkt, split_all};
use crate::io::offload::{VNET_HDR_LEN, split};

#[test]
fn a_tso_read_crosses_the_tunnel_as_one_super_packet() {
    let mut p = Pair::new();
    assert_eq!(
        p.a_sends(&ipv4([10, 0, 0, 1], [10, 0, 0, 2], b"hi")).len(),
        1
    );
    let mut segment = pkt(false, 1400 * 30 + 9);
    segment.seq = 7;
    let read = segment.gso(1400);
    let mut net = NetBatch::new(64);
    let mut spoofed = pkt(false, 1400);
    spoofed.seq = 1400 * 3 + 7;
    let mut spoofed = spoofed.build();
    spoofed[15] = 9; // from 10.0.0.9: outside a's AllowedIPs on b
    crate::io::offload::tests::fix_ipv4_checksum(&mut spoofed);
    let mut i = 0;
    split(&mut read.clone(), |s| {
        p.a.handle_tun(s, p.now, &mut net);
        i += 1;
        if i == 3 {
            p.a.handle_tun(&spoofed, p.now, &mut net);
        }
    })
    .unwrap();
    let mut tun = TunBatch::new(VNET_HDR_LEN);
    for (_, d) in net.datagrams() {
        p.b.handle_udp(src_of(true), d, p.now, &mut NetBatch::new(1), &mut tun);
    }
    assert_eq!(p.b.drops.spoofed_source, 1);
    let frames: Vec<Vec<u8>> = tun.frames().map(<[u8]>::to_vec).collect();
    assert_eq!(frames, vec![read.clone()]);
    assert_eq!(split_all(&mut frames[0].clone()).len(), 31);
}
