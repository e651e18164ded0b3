//! The receive task's batching: real cores (16 laptops and a gateway), datagrams handed over in
//! receive rounds as the socket's queue holds them, the TUN writes recorded.

use std::cell::RefCell;
use std::collections::VecDeque;

use super::*;
use crate::core::testing::receive;
use crate::io::offload::VNET_HDR_LEN;
use crate::io::offload::tests::{fix_ipv4_checksum, pkt, split_all};
use crate::peer::PeerConfig;
use kwg_contract::keys::PrivateKey;

const GATEWAY: &str = "192.0.2.1:51820";
/// Datagrams per receive round (recvmmsg's batch).
const ROUND: usize = quinn_udp::BATCH_SIZE;

/// One receive round's datagrams and their sources.
type Round = Vec<(SocketAddr, Vec<u8>)>;

/// A socket whose queue holds rounds; `recv` on an empty queue is a test error.
struct Rounds(RefCell<VecDeque<Round>>);

impl Receive for Rounds {
    async fn recv(&self, bufs: &mut RecvBufs) -> io::Result<usize> {
        let round = self.0.borrow_mut().pop_front();
        Ok(bufs.fill(&round.expect("recv on an empty queue would wait forever")))
    }

    fn try_recv(&self, bufs: &mut RecvBufs) -> io::Result<usize> {
        let round = self.0.borrow_mut().pop_front();
        round
            .map(|r| bufs.fill(&r))
            .ok_or_else(|| io::ErrorKind::WouldBlock.into())
    }
}

/// The TUN: each send's frames (one syscall each).
#[derive(Default)]
struct Writes(RefCell<Vec<Vec<Vec<u8>>>>);

impl WriteTun for Writes {
    async fn send(&self, batch: &mut TunBatch) -> io::Result<()> {
        let frames = batch.frames().map(<[u8]>::to_vec).collect();
        self.0.borrow_mut().push(frames);
        Ok(())
    }
}

fn laptop_addr(i: u8) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 10 + i], 51820))
}

/// A TCP segment of laptop `i`'s upload (10.0.1.i:40000 → 10.0.0.2:5201), the `k`th of 1400
/// bytes.
fn segment(i: u8, k: u32) -> Vec<u8> {
    let mut p = pkt(false, 1400);
    p.seq = 1000 + k * 1400;
    let mut p = p.build();
    p[12..16].copy_from_slice(&[10, 0, 1, i]);
    fix_ipv4_checksum(&mut p);
    p
}

/// A gateway core with `n` laptops' cores, each with a session, and `per_peer` segments of each
/// laptop's upload encrypted, interleaved as the gateway's socket queues them when they all
/// send at once: one segment of each laptop in turn.
fn uploads(n: u8, per_peer: u32) -> (Core, Round) {
    let now = Instant::now();
    let gw_key = PrivateKey::generate();
    let mut gw = Core::new(Some(gw_key.clone()));
    let mut laptops = Vec::new();
    for i in 1..=n {
        let key = PrivateKey::generate();
        gw.upsert_peer(PeerConfig {
            allowed_ips: vec![format!("10.0.1.{i}/32").parse().unwrap()],
            ..PeerConfig::new(key.public_key())
        });
        let mut laptop = Core::new(Some(key));
        laptop.upsert_peer(PeerConfig {
            endpoint: Some(GATEWAY.parse().unwrap()),
            allowed_ips: vec!["10.0.0.0/24".parse().unwrap()],
            ..PeerConfig::new(gw_key.public_key())
        });
        // The handshake (the first packet waits for it in the laptop's queue).
        let mut net = NetBatch::new(1);
        laptop.handle_tun(&segment(i, 0), now, &mut net);
        let mut pending: Vec<(bool, Vec<u8>)> =
            net.datagrams().map(|(_, d)| (true, d.to_vec())).collect();
        while let Some((to_gw, d)) = pending.pop() {
            let (replies, _) = match to_gw {
                true => receive(&mut gw, laptop_addr(i), &d, now),
                false => receive(&mut laptop, GATEWAY.parse().unwrap(), &d, now),
            };
            pending.extend(replies.into_iter().map(|r| (!to_gw, r)));
        }
        laptops.push(laptop);
    }
    let mut queue = Vec::new();
    for k in 1..=per_peer {
        for (i, laptop) in (1..=n).zip(&mut laptops) {
            let mut net = NetBatch::new(1);
            laptop.handle_tun(&segment(i, k), now, &mut net);
            queue.extend(net.datagrams().map(|(_, d)| (laptop_addr(i), d.to_vec())));
        }
    }
    assert_eq!(queue.len(), usize::from(n) * per_peer as usize);
    (gw, queue)
}

fn rounds(queue: &[(SocketAddr, Vec<u8>)]) -> Rounds {
    Rounds(RefCell::new(
        queue.chunks(ROUND).map(<[_]>::to_vec).collect(),
    ))
}

#[tokio::test]
async fn sixteen_peers_segments_over_several_receive_rounds_make_one_super_packet_each() {
    // 16 laptops × 8 segments: 4 rounds of 32 datagrams, 2 segments of each laptop per round.
    let (gw, queue) = uploads(16, 8);
    let udp = rounds(&queue);
    let (core, tun_out) = (Mutex::new(gw), Writes::default());
    let mut tun = TunBatch::new(VNET_HDR_LEN);
    let (mut bufs, mut net) = (RecvBufs::default(), NetBatch::new(1));
    assert!(receive_to_tun(&core, &udp, &mut bufs, &mut net, &mut tun, &tun_out).await);
    let writes = tun_out.0.into_inner();
    // One batch of writes, one super-packet per laptop's connection holding its 8 segments in
    // order (written after each round: 4 batches of 16 frames of 2 segments).
    assert_eq!(writes.len(), 1, "TUN write batches");
    assert_eq!(writes[0].len(), 16, "frames (one per connection)");
    for (i, frame) in (1..=16u8).zip(&writes[0]) {
        let segments = split_all(&mut frame.clone());
        let seqs: Vec<u32> = segments
            .iter()
            .map(|s| u32::from_be_bytes(s[24..28].try_into().unwrap()))
            .collect();
        assert_eq!(seqs, (1..=8).map(|k| 1000 + k * 1400).collect::<Vec<_>>());
        assert!(segments.iter().all(|s| s[12..16] == [10, 0, 1, i]));
    }
    assert!(udp.0.borrow().is_empty());
}

#[tokio::test]
async fn rounds_beyond_the_limit_go_into_the_next_write_and_nothing_is_waited_for() {
    // 2 laptops × 16 × (ROUNDS_PER_WRITE + 2) segments: ROUNDS_PER_WRITE + 2 full rounds.
    let per_peer = (ROUND / 2 * (ROUNDS_PER_WRITE + 2)) as u32;
    let (gw, queue) = uploads(2, per_peer);
    let udp = rounds(&queue);
    let (core, tun_out) = (Mutex::new(gw), Writes::default());
    let mut tun = TunBatch::new(VNET_HDR_LEN);
    let (mut bufs, mut net) = (RecvBufs::default(), NetBatch::new(1));
    let segments_in = |writes: &[Vec<Vec<u8>>]| -> usize {
        let frames = writes.iter().flatten();
        frames.map(|f| split_all(&mut f.clone()).len()).sum()
    };
    assert!(receive_to_tun(&core, &udp, &mut bufs, &mut net, &mut tun, &tun_out).await);
    assert_eq!(udp.0.borrow().len(), 2, "rounds left queued");
    assert_eq!(segments_in(&tun_out.0.borrow()), ROUND * ROUNDS_PER_WRITE);
    // The next call takes the rest; with the queue empty it writes at once (no wait).
    assert!(receive_to_tun(&core, &udp, &mut bufs, &mut net, &mut tun, &tun_out).await);
    assert!(udp.0.borrow().is_empty());
    assert_eq!(segments_in(&tun_out.0.borrow()), queue.len());
}

/// A socket whose queue holds rounds UDP GRO coalesced (one sender's datagrams, many per entry).
struct GroRounds(RefCell<VecDeque<(SocketAddr, Vec<Vec<u8>>)>>);

impl Receive for GroRounds {
    async fn recv(&self, bufs: &mut RecvBufs) -> io::Result<usize> {
        self.try_recv(bufs)
    }

    fn try_recv(&self, bufs: &mut RecvBufs) -> io::Result<usize> {
        let round = self.0.borrow_mut().pop_front();
        round
            .map(|(from, r)| bufs.fill_gro(from, &r))
            .ok_or_else(|| io::ErrorKind::WouldBlock.into())
    }
}

#[tokio::test]
async fn a_round_gro_coalesced_is_written_without_waiting_for_the_next() {
    // One laptop's upload, 2 rounds of 540 datagrams each (more than DATAGRAMS_PER_WRITE, 512).
    let per_round = 540;
    let (gw, queue) = uploads(1, 2 * per_round as u32);
    let round = |r: usize| {
        let datagrams = &queue[r * per_round..(r + 1) * per_round];
        (
            datagrams[0].0,
            datagrams.iter().map(|(_, d)| d.clone()).collect(),
        )
    };
    let udp = GroRounds(RefCell::new([round(0), round(1)].into()));
    let (core, tun_out) = (Mutex::new(gw), Writes::default());
    let mut tun = TunBatch::new(VNET_HDR_LEN);
    let (mut bufs, mut net) = (RecvBufs::default(), NetBatch::new(1));
    assert!(receive_to_tun(&core, &udp, &mut bufs, &mut net, &mut tun, &tun_out).await);
    // The first round alone reached the limit: written, the second left queued.
    assert_eq!(udp.0.borrow().len(), 1, "rounds left queued");
    let segments: usize = tun_out
        .0
        .borrow()
        .iter()
        .flatten()
        .map(|f| split_all(&mut f.clone()).len())
        .sum();
    assert_eq!(segments, per_round);
}
