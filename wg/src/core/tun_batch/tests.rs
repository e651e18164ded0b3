use super::*;
use crate::io::offload::VNET_HDR_LEN;
use crate::io::offload::tests::{pkt, split_all};

/// What boringtun does with `dst`: the plaintext, then 16 bytes of tag and padding.
fn decrypt(t: &mut TunBatch, p: &[u8]) {
    let dst = t.dst(p.len() + DATA_OVERHEAD);
    assert!(dst.len() >= p.len() + 16, "room for the tag");
    dst[..p.len()].copy_from_slice(p);
    dst[p.len()..p.len() + 16].fill(0xee);
}

fn receive(t: &mut TunBatch, p: &[u8]) {
    decrypt(t, p);
    t.commit(p.len());
}

fn frames(t: &mut TunBatch) -> Vec<Vec<u8>> {
    t.frames().map(<[u8]>::to_vec).collect()
}

fn tso_segments(v6: bool, seq: u32, payload: usize) -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut p = pkt(v6, payload);
    p.seq = seq;
    let read = p.gso(1400);
    let segs = split_all(&mut read.clone());
    (read, segs)
}

#[test]
fn segments_decrypted_in_place_make_the_super_packet_the_sender_read() {
    for v6 in [false, true] {
        let (read, segs) = tso_segments(v6, 0, 1400 * 20 + 77);
        let mut t = TunBatch::new(VNET_HDR_LEN);
        for s in &segs {
            receive(&mut t, s);
        }
        assert_eq!(t.counts(), (1, 21));
        assert_eq!(frames(&mut t), vec![read.clone()]);
        // Without the header room (userspace, or no offloads): one packet each.
        let mut plain = TunBatch::new(0);
        for s in &segs {
            receive(&mut plain, s);
        }
        assert_eq!(
            plain.packets().map(<[u8]>::to_vec).collect::<Vec<_>>(),
            segs
        );
    }
}

#[test]
fn a_packet_not_kept_leaves_the_super_packet_as_it_was() {
    let (read, segs) = tso_segments(false, 0, 1400 * 6);
    let mut t = TunBatch::new(VNET_HDR_LEN);
    for (i, s) in segs.iter().enumerate() {
        receive(&mut t, s);
        // A datagram whose packet is dropped (spoofed source, a handshake): decrypted over
        // the super-packet's tail, never committed.
        decrypt(&mut t, &pkt(true, 900 + i).build());
    }
    assert_eq!(frames(&mut t), vec![read]);
}

#[test]
fn other_packets_move_to_their_own_frame_intact() {
    let (read_a, a) = tso_segments(false, 0, 1400 * 4);
    let (read_b, b) = tso_segments(true, 0, 1400 * 2);
    let mut ack = pkt(false, 0); // a pure ACK, shorter than the flow's headers
    ack.seq = 5;
    let ack = ack.build();
    let mut t = TunBatch::new(VNET_HDR_LEN);
    for s in [&a[0], &a[1], &b[0], &b[1], &ack, &a[2], &a[3]] {
        receive(&mut t, s);
    }
    let out = frames(&mut t);
    let (first, rest) = (&a[..2], &a[2..]);
    let alone = |p: &[u8]| [&[0; VNET_HDR_LEN][..], p].concat();
    assert_eq!(out.len(), 4);
    assert_eq!(out[1], read_b);
    assert_eq!(out[2], alone(&ack));
    // The flow's first two segments and last two: each pair one super-packet.
    for (o, segs) in [(&out[0], first), (&out[3], rest)] {
        let mut again = split_all(&mut o.clone());
        // The IPv4 ids restart from each super-packet's first.
        for (x, s) in again.iter_mut().zip(segs) {
            x[4..6].copy_from_slice(&s[4..6]);
            x[10..12].copy_from_slice(&s[10..12]);
        }
        assert_eq!(again, segs);
    }
    assert_eq!(t.counts(), (4, 7));
    assert!(read_a.len() > out[0].len());
}

#[test]
fn a_super_packet_never_exceeds_the_ip_length_limit() {
    let (_, segs) = tso_segments(false, 0, 1400 * 100);
    let mut t = TunBatch::new(VNET_HDR_LEN);
    for s in &segs {
        receive(&mut t, s);
    }
    let out = frames(&mut t);
    assert_eq!(out.len(), 3);
    assert!(out.iter().all(|f| f.len() - VNET_HDR_LEN <= MAX_IP_LEN));
    let again: Vec<_> = out
        .into_iter()
        .flat_map(|mut f| split_all(&mut f))
        .collect();
    assert_eq!(again.len(), 100);
    let payload = |v: &[Vec<u8>]| v.iter().flat_map(|s| s[52..].to_vec()).collect::<Vec<_>>();
    assert_eq!(payload(&again), payload(&segs));
}

#[test]
fn full_after_a_batch_of_writes_and_clear_starts_over() {
    let mut t = TunBatch::new(VNET_HDR_LEN);
    for i in 0..TUN_BATCH {
        assert!(!t.is_full());
        let mut p = pkt(false, 100);
        p.flags |= 0x08; // PSH: nothing coalesces
        p.seq = i as u32;
        receive(&mut t, &p.build());
    }
    assert!(t.is_full());
    t.clear();
    assert!(t.is_empty());
    assert_eq!(frames(&mut t).len(), 0);
}

mod arbitrary {
    use super::*;
    use crate::io::offload::{VnetHdr, split};
    use proptest::prelude::*;

    /// A valid segment of one of two flows, then bytes flipped at random places.
    fn mangled() -> impl Strategy<Value = Vec<u8>> {
        let base = (any::<bool>(), 0..3u32, 0..1500usize, any::<bool>());
        let flips = prop::collection::vec((0..80usize, any::<u8>()), 0..3);
        (base, flips).prop_map(|((v6, seq, payload, psh), flips)| {
            let mut p = pkt(v6, payload);
            (p.seq, p.flags) = (seq * 1400, if psh { 0x18 } else { 0x10 });
            let mut b = p.build();
            for (at, x) in flips {
                if let Some(byte) = b.get_mut(at) {
                    *byte ^= x;
                }
            }
            b
        })
    }

    proptest! {
        #[test]
        fn any_packets_coalesce_into_frames_that_split_back(
            pkts in prop::collection::vec(mangled(), 0..40),
            kept in prop::collection::vec(any::<bool>(), 40),
        ) {
            let mut t = TunBatch::new(VNET_HDR_LEN);
            let mut sent = 0;
            // Each TCP connection's packets, in order: (connection, sequence number, length).
            let order = |p: &[u8]| {
                conn_key(p).map(|k| {
                    let t = if k.v6 { 40 } else { usize::from(p[0] & 15) * 4 };
                    (k, p.get(t + 4..t + 8).map(<[u8]>::to_vec), p.len())
                })
            };
            let mut want = Vec::new();
            for (p, keep) in pkts.iter().zip(kept) {
                decrypt(&mut t, p);
                if keep {
                    t.commit(p.len());
                    sent += p.len();
                    want.extend(order(p));
                }
            }
            let mut back = 0;
            let mut got = Vec::new();
            for f in t.frames() {
                prop_assert!(f.len() - VNET_HDR_LEN <= MAX_IP_LEN);
                let n = split(&mut f.to_vec(), |s| {
                    back += s.len();
                    got.extend(order(s));
                });
                prop_assert!(n.is_ok(), "{n:?}");
            }
            prop_assert_eq!(back, sent, "every byte kept comes back out");
            // Connections may interleave differently; each one's packets keep their order.
            let keys: std::collections::HashSet<_> = want.iter().map(|w| w.0).collect();
            for k in keys {
                let of = |v: &[(ConnKey, Option<Vec<u8>>, usize)]| {
                    v.iter().filter(|w| w.0 == k).map(|w| (w.1.clone(), w.2)).collect::<Vec<_>>()
                };
                prop_assert_eq!(of(&got), of(&want));
            }
        }

        #[test]
        fn any_tun_read_splits_without_panicking(
            hdr in (0..3u8, prop::sample::select(vec![0u8, 1, 3, 4, 5, 0x81]), any::<u16>(),
                    0..2000u16, 0..80u16, prop::sample::select(vec![6u16, 16, 90])),
            body in mangled(),
        ) {
            let (flags, gso_type, hdr_len, gso_size, csum_start, csum_offset) = hdr;
            let mut read = vec![0; VNET_HDR_LEN];
            VnetHdr { flags, gso_type, hdr_len, gso_size, csum_start, csum_offset }
                .encode(&mut read);
            read.extend_from_slice(&body);
            let mut total = 0;
            if let Ok(n) = split(&mut read, |s| total += s.len()) {
                prop_assert!(n >= 1 && total >= body.len());
            }
        }
    }
}

#[test]
fn interleaved_connections_each_make_their_super_packet() {
    // Two peers' uploads arriving in turns (16 laptops at once: each segment would otherwise
    // end the other connection's super-packet).
    let (read_a, a) = tso_segments(false, 0, 1400 * 5);
    let (read_b, b) = tso_segments(true, 0, 1400 * 5);
    let mut t = TunBatch::new(VNET_HDR_LEN);
    for (x, y) in a.iter().zip(&b) {
        receive(&mut t, x);
        receive(&mut t, y);
    }
    assert_eq!(t.counts(), (2, 10));
    assert_eq!(frames(&mut t), vec![read_a, read_b]);
}

#[test]
fn a_connections_segments_never_pass_its_other_packets() {
    // a0 a1 | b0 | a pure ACK of a's connection | a2 a3: a2 may not join a0 a1 ahead of the
    // ACK, so the connection's packets keep their order.
    let (_, a) = tso_segments(false, 0, 1400 * 4);
    let (read_b, b) = tso_segments(true, 0, 1400 * 2);
    let mut ack = pkt(false, 0);
    ack.seq = 5;
    let ack = ack.build();
    let mut t = TunBatch::new(VNET_HDR_LEN);
    for s in [&a[0], &a[1], &b[0], &ack, &a[2], &b[1], &a[3]] {
        receive(&mut t, s);
    }
    let out = frames(&mut t);
    assert_eq!(t.counts(), (4, 7));
    assert_eq!(out[1], read_b);
    assert_eq!(out[2], [&[0; VNET_HDR_LEN][..], &ack].concat());
    assert_eq!(split_all(&mut out[3].clone()).len(), 2);
}
