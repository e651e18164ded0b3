//! Two kwg-wg cores back to back in memory, on boringtun's mock clock: a session is rekeyed after
//! REKEY_AFTER_TIME without losing data, is no longer used after REJECT_AFTER_TIME, and an idle
//! peer's session expires after REJECT_AFTER_TIME × 3 (the WireGuard paper, sections 6.1–6.2), and
//! an initiation captured before that expiry and replayed after it is refused.
//!
//! mock_instant 0.3 keeps its clock per thread and every test runs on its own thread, so the
//! tests do not disturb each other. The cores' own `now` advances by the same amounts.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use kwg_wg::core::testing::{capture, ipv4, receive};
use kwg_wg::core::{Core, NetBatch};
use kwg_contract::keys::{PrivateKey, PublicKey};
use kwg_wg::peer::PeerConfig;
use mock_instant::MockClock;

const REKEY_AFTER_TIME: Duration = Duration::from_secs(120);
const REJECT_AFTER_TIME: Duration = Duration::from_secs(180);
const SECOND: Duration = Duration::from_secs(1);

const A_ADDR: &str = "192.0.2.1:51820";
const B_ADDR: &str = "192.0.2.2:51820";

/// WireGuard message types (first byte of every datagram).
const INITIATION: u8 = 1;
const DATA: u8 = 4;

/// The lines of `logs` saying a session expired.
fn expiries(logs: Vec<String>) -> Vec<String> {
    logs.into_iter()
        .filter(|l| l.contains("session expired"))
        .collect()
}

/// One datagram seen on the wire between the cores.
#[derive(Debug, Clone, Copy)]
struct Seen {
    from_a: bool,
    at: Duration,
    kind: u8,
    /// For data messages: the receiver's session index.
    receiver: u32,
}

struct Link {
    a: Core,
    b: Core,
    a_key: PublicKey,
    b_key: PublicKey,
    /// The cores' clock; boringtun's mock clock advances with it.
    now: Instant,
    elapsed: Duration,
    wire: Vec<Seen>,
    /// Every datagram sent, as an attacker on the path records them: (from A, bytes).
    captured: Vec<(bool, Vec<u8>)>,
}

fn peer(key: PublicKey, endpoint: Option<&str>, ip: &str) -> PeerConfig {
    PeerConfig {
        endpoint: endpoint.map(|e| e.parse().unwrap()),
        allowed_ips: vec![ip.parse().unwrap()],
        ..PeerConfig::new(key)
    }
}

fn addr(a: bool) -> SocketAddr {
    (if a { A_ADDR } else { B_ADDR }).parse().unwrap()
}

/// A fixed wall clock for statistics, so handshake ages are exact.
fn wall() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000)
}

impl Link {
    /// A knows B's endpoint; B learns A's from the handshake.
    fn new() -> Link {
        let (ka, kb) = (PrivateKey::generate(), PrivateKey::generate());
        let (a_key, b_key) = (ka.public_key(), kb.public_key());
        let mut a = Core::new(Some(ka));
        let mut b = Core::new(Some(kb));
        a.upsert_peer(peer(b_key, Some(B_ADDR), "10.0.0.2/32"));
        b.upsert_peer(peer(a_key, None, "10.0.0.1/32"));
        Link {
            a,
            b,
            a_key,
            b_key,
            now: Instant::now(),
            elapsed: Duration::ZERO,
            wire: Vec::new(),
            captured: Vec::new(),
        }
    }

    /// Delivers `first` (sent by A if `from_a`) and every reply until quiet; returns the IP
    /// packets A's and B's TUN received.
    fn deliver(&mut self, from_a: bool, first: NetBatch) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        let (mut tun_a, mut tun_b) = (Vec::new(), Vec::new());
        let mut pending: Vec<(bool, Vec<u8>)> = first
            .datagrams()
            .map(|(_, d)| (from_a, d.to_vec()))
            .collect();
        pending.reverse();
        let mut rounds = 0;
        while let Some((sender_is_a, dgram)) = pending.pop() {
            rounds += 1;
            assert!(rounds < 100, "ping-pong does not settle");
            let receiver = u32::from_le_bytes(dgram[4..8].try_into().unwrap());
            self.captured.push((sender_is_a, dgram.clone()));
            self.wire.push(Seen {
                from_a: sender_is_a,
                at: self.elapsed,
                kind: dgram[0],
                receiver,
            });
            let (rx, tuns) = if sender_is_a {
                (&mut self.b, &mut tun_b)
            } else {
                (&mut self.a, &mut tun_a)
            };
            let (replies, packets) = receive(rx, addr(sender_is_a), &dgram, self.now);
            tuns.extend(packets);
            for d in replies {
                pending.insert(0, (!sender_is_a, d));
            }
        }
        (tun_a, tun_b)
    }

    /// Advances both clocks by `d`, then runs both cores' timers and delivers what they send.
    fn advance(&mut self, d: Duration) {
        MockClock::advance(d);
        self.now += d;
        self.elapsed += d;
        for from_a in [true, false] {
            let mut net = NetBatch::new(64);
            let core = if from_a { &mut self.a } else { &mut self.b };
            core.tick(self.now, &mut net);
            let (tun_a, tun_b) = self.deliver(from_a, net);
            assert!(tun_a.is_empty() && tun_b.is_empty(), "timers carry no data");
        }
    }

    /// Advances second by second (timers run every second) up to `total` since the start.
    fn advance_to(&mut self, total: Duration) {
        while self.elapsed < total {
            self.advance(SECOND);
        }
    }

    /// A sends `payload` to B (or B to A); returns what arrived at the other TUN.
    fn send(&mut self, from_a: bool, payload: &[u8]) -> (Vec<u8>, Vec<Vec<u8>>) {
        let packet = if from_a {
            ipv4([10, 0, 0, 1], [10, 0, 0, 2], payload)
        } else {
            ipv4([10, 0, 0, 2], [10, 0, 0, 1], payload)
        };
        let mut net = NetBatch::new(64);
        let core = if from_a { &mut self.a } else { &mut self.b };
        core.handle_tun(&packet, self.now, &mut net);
        let (tun_a, tun_b) = self.deliver(from_a, net);
        (packet, if from_a { tun_b } else { tun_a })
    }

    /// Sends one packet each way and asserts both arrive, exactly once.
    fn exchange(&mut self, n: u64) {
        for from_a in [true, false] {
            let (sent, arrived) = self.send(from_a, format!("packet {n}").as_bytes());
            assert_eq!(arrived, vec![sent], "packet {n} (from A: {from_a}) lost");
        }
    }

    fn initiations_by_a(&self) -> Vec<Duration> {
        self.wire
            .iter()
            .filter(|s| s.from_a && s.kind == INITIATION)
            .map(|s| s.at)
            .collect()
    }

    /// The receiver session indices of the data messages A (or B) sent since `since`.
    fn data_indices(&self, from_a: bool, since: Duration) -> Vec<u32> {
        let mut out: Vec<u32> = Vec::new();
        for s in &self.wire {
            if s.from_a == from_a && s.kind == DATA && s.at >= since && !out.contains(&s.receiver) {
                out.push(s.receiver);
            }
        }
        out
    }

    /// How long ago each side last completed a handshake, as their statistics report it.
    fn handshake_ages(&self) -> (Option<Duration>, Option<Duration>) {
        let age = |core: &Core, key: &PublicKey| {
            let stats = core
                .peer_stats(key, self.now, wall())
                .expect("peer configured");
            stats
                .last_handshake
                .map(|t| wall().duration_since(t).unwrap())
        };
        (age(&self.a, &self.b_key), age(&self.b, &self.a_key))
    }
}

#[test]
fn traffic_rekeys_after_rekey_after_time_without_loss() {
    let mut l = Link::new();
    l.exchange(0);
    assert_eq!(l.initiations_by_a(), vec![Duration::ZERO]);
    let first_a = l.data_indices(true, Duration::ZERO);
    let first_b = l.data_indices(false, Duration::ZERO);
    assert_eq!((first_a.len(), first_b.len()), (1, 1));

    let end = REKEY_AFTER_TIME + Duration::from_secs(30);
    for n in 1..=end.as_secs() {
        l.advance(SECOND);
        l.exchange(n);
    }

    // A (the initiator) starts exactly one new handshake, once the session is
    // REKEY_AFTER_TIME old, and both directions then use the new session.
    let inits = l.initiations_by_a();
    assert_eq!(inits.len(), 2, "one rekey in {end:?}: {inits:?}");
    assert!(
        inits[1] >= REKEY_AFTER_TIME && inits[1] <= REKEY_AFTER_TIME + 2 * SECOND,
        "rekey at {:?}",
        inits[1]
    );
    let late = inits[1] + SECOND;
    let (new_a, new_b) = (l.data_indices(true, late), l.data_indices(false, late));
    assert_eq!(new_a.len(), 1, "A sends under one session after the rekey");
    assert_eq!(new_b.len(), 1, "B sends under one session after the rekey");
    assert_ne!(new_a, first_a, "A's data still goes to B's first session");
    assert_ne!(new_b, first_b, "B's data still goes to A's first session");

    // Both sides report the new handshake (boringtun's timers have a granularity of one tick).
    let since_rekey = end - inits[1];
    let (age_a, age_b) = l.handshake_ages();
    for age in [age_a, age_b] {
        let age = age.expect("a handshake is reported");
        assert!(age >= since_rekey && age <= since_rekey + SECOND, "{age:?}");
    }
}

/// Handshakes at 0 s, exchanges one packet each way, then stays idle for `idle`; returns what
/// A's next packet looks like on the wire and checks it arrives.
fn first_message_after_idle(idle: Duration) -> u8 {
    let mut l = Link::new();
    l.exchange(0);
    l.advance_to(idle);
    let before = l.wire.len();
    let (sent, arrived) = l.send(true, b"after idle");
    assert_eq!(
        arrived,
        vec![sent],
        "the packet after {idle:?} idle is lost"
    );
    l.wire[before].kind
}

#[test]
fn session_is_used_until_reject_after_time_and_not_after() {
    let kind = first_message_after_idle(REJECT_AFTER_TIME - SECOND);
    assert_eq!(kind, DATA, "a 179 s old session still carries data");
    let kind = first_message_after_idle(REJECT_AFTER_TIME + SECOND);
    assert_eq!(kind, INITIATION, "a 181 s old session must not carry data");
}

#[test]
fn idle_session_expires_after_three_reject_after_times() {
    let expiry = REJECT_AFTER_TIME * 3;
    // Peers log inside spans made when they are added: add them with the subscriber in place.
    let mut link = None;
    capture(|| link = Some(Link::new()));
    let mut l = link.unwrap();
    l.exchange(0);
    let early = expiries(capture(|| l.advance_to(expiry - SECOND)));
    assert!(early.is_empty(), "expired before {expiry:?}: {early:?}");
    // Both sides drop their keys and say so, naming the peer.
    let expired = expiries(capture(|| l.advance_to(expiry + SECOND)));
    assert_eq!(expired.len(), 2, "{expired:?}");
    for key in [l.a_key, l.b_key] {
        assert!(
            expired.iter().any(|e| e.contains(&key.short())),
            "{expired:?}"
        );
    }

    // An idle tunnel stays quiet: no rekey and nothing at all once keepalives are answered.
    assert_eq!(
        l.initiations_by_a(),
        vec![Duration::ZERO],
        "idle tunnel rekeyed"
    );
    let chatter: Vec<Seen> = l
        .wire
        .iter()
        .filter(|s| s.at > Duration::from_secs(30))
        .copied()
        .collect();
    assert!(chatter.is_empty(), "idle tunnel still talks: {chatter:?}");
    // With the sessions gone, the last handshake is still reported (as the kernel and
    // wireguard-go do in `wg show`): it happened at the start, `elapsed` ago.
    let (age_a, age_b) = l.handshake_ages();
    for age in [age_a, age_b] {
        let age = age.expect("last handshake forgotten after expiry");
        assert!(
            age.abs_diff(l.elapsed) <= SECOND,
            "{age:?} vs {:?}",
            l.elapsed
        );
    }

    // The next packet waits for a fresh handshake, then arrives.
    let before = l.wire.len();
    let (sent, arrived) = l.send(true, b"after expiry");
    assert_eq!(arrived, vec![sent]);
    assert_eq!(l.wire[before].kind, INITIATION);
    assert_eq!(l.initiations_by_a(), vec![Duration::ZERO, l.elapsed]);
    assert_eq!(
        l.handshake_ages(),
        (Some(Duration::ZERO), Some(Duration::ZERO))
    );
}

#[test]
fn initiation_replayed_after_expiry_is_refused() {
    let mut l = Link::new();
    l.exchange(0);
    let (_, init) = l
        .captured
        .iter()
        .find(|(from_a, d)| *from_a && d[0] == INITIATION)
        .cloned()
        .expect("A initiated");
    // B forgets its sessions (and boringtun's `Tunn` with them) after 3 × REJECT_AFTER_TIME.
    let expired = expiries(capture(|| l.advance_to(REJECT_AFTER_TIME * 3 + SECOND)));
    assert_eq!(expired.len(), 2, "{expired:?}");

    // An attacker replays A's old initiation from its own address: B neither answers nor
    // moves A's endpoint to it.
    let attacker: SocketAddr = "198.51.100.66:666".parse().unwrap();
    let (replies, tun) = receive(&mut l.b, attacker, &init, l.now);
    assert!(
        replies.is_empty() && tun.is_empty(),
        "replay answered: {replies:?}"
    );
    assert_eq!(l.b.drops.replayed_initiations, 1);
    let endpoint = l.b.peer_config(&l.a_key).unwrap().endpoint;
    assert_eq!(endpoint, Some(addr(true)), "endpoint moved by a replay");

    // A's next packet still reaches B, over a fresh handshake, both ways.
    l.exchange(1);
    assert_eq!(l.initiations_by_a(), vec![Duration::ZERO, l.elapsed]);
}
