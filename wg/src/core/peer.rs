//! One peer's state: its configuration, its boringtun `Tunn` (made on first use, dropped when
//! its sessions expire), counters, and the timestamp of the last initiation it was accepted for.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::{Tunn, TunnResult};

use super::initiation::Tai64N;
use super::{DATA_OVERHEAD, HANDSHAKE_INIT, HANDSHAKE_INIT_LEN, NetBatch, StaticKeys};
use crate::peer::{PeerConfig, PeerStats};

pub(super) struct Peer {
    pub(super) cfg: PeerConfig,
    pub(super) idx: u32,
    /// `peer = <short key>`, created once: events name it as their parent, so the hot path
    /// neither enters spans nor formats keys.
    pub(super) span: tracing::Span,
    /// Spoofed-source drops since the last report (logged once per rate-limit period).
    pub(super) spoofed_unreported: u32,
    /// Created on first use and dropped when its sessions expire: an idle peer costs a few
    /// hundred bytes, one with live sessions about 11 KB (boringtun keeps 8 session slots).
    pub(super) tunn: Option<Box<Tunn>>,
    /// The last handshake of a dropped `Tunn`, for statistics.
    handshake_at: Option<Instant>,
    /// The timestamp of the last initiation whose handshake completed. It outlives the `Tunn`
    /// (which keeps its own copy only while it lives), so a replayed initiation is refused even
    /// after the sessions expired.
    pub(super) last_initiation: Option<Tai64N>,
    pub(super) rx_bytes: u64,
    pub(super) tx_bytes: u64,
    /// Packets from the TUN that boringtun kept for want of a session (they go out once a
    /// handshake completes): sending the byte counters cannot show.
    pub(super) held: u64,
    pub(super) last_sent: Option<Instant>,
    /// The endpoint is chosen by the owner (a client choosing its path), not learned from
    /// where packets come from.
    pub(super) pinned: bool,
    /// With a pinned endpoint: the last authenticated packet from another address (another
    /// path works), and when.
    pub(super) heard_other: Option<(SocketAddr, Instant)>,
    /// Copies of sent packets, to send again after a handshake that replaces a dead session
    /// (off unless the owner turns it on).
    pub(super) replay: Option<Box<super::replay::Replay>>,
    /// The core's serial number of the last handshake completed with the peer (either role;
    /// 0: none since added): tells a new handshake from the same one seen again, which
    /// `last_handshake`'s wall time cannot (it differs on every read).
    pub(super) handshake_serial: u64,
}

impl Peer {
    pub(super) fn new(cfg: PeerConfig, idx: u32, span: tracing::Span) -> Peer {
        Peer {
            cfg,
            idx,
            span,
            spoofed_unreported: 0,
            tunn: None,
            handshake_at: None,
            last_initiation: None,
            rx_bytes: 0,
            tx_bytes: 0,
            held: 0,
            last_sent: None,
            pinned: false,
            heard_other: None,
            replay: None,
            handshake_serial: 0,
        }
    }

    pub(super) fn tunn(&mut self, keys: &StaticKeys) -> &mut Tunn {
        ensure_tunn(&mut self.tunn, &self.cfg, self.idx, keys)
    }

    /// Time since the last completed handshake. boringtun forgets it once its sessions
    /// expire (180 s idle); like the kernel and wireguard-go, `wg show` keeps reporting it, from
    /// the time `tick` last recorded.
    fn handshake_age(&self, now: Instant) -> Option<Duration> {
        self.tunn
            .as_ref()
            .and_then(|t| t.time_since_last_handshake())
            .or_else(|| self.handshake_at.map(|t| now.saturating_duration_since(t)))
    }

    pub(super) fn stats(&self, now: Instant, wall: SystemTime) -> PeerStats {
        let last_handshake = self
            .handshake_age(now)
            .and_then(|age| wall.checked_sub(age));
        PeerStats {
            public_key: self.cfg.public_key,
            endpoint: self.cfg.endpoint,
            allowed_ips: self.cfg.allowed_ips.clone(),
            last_handshake,
            rx_bytes: self.rx_bytes,
            tx_bytes: self.tx_bytes,
            persistent_keepalive: self.cfg.persistent_keepalive,
        }
    }

    /// Encrypts `packet` (empty: a keepalive) to the peer's endpoint; false without an endpoint.
    pub(super) fn send(
        &mut self,
        keys: Option<&StaticKeys>,
        packet: &[u8],
        now: Instant,
        net: &mut NetBatch,
    ) -> bool {
        let (Some(endpoint), Some(keys)) = (self.cfg.endpoint, keys) else {
            return false;
        };
        if let Some(r) = self.replay.as_mut() {
            r.record(packet, now);
        }
        let tunn = self.tunn(keys);
        let max = (packet.len() + DATA_OVERHEAD).max(HANDSHAKE_INIT_LEN);
        let mut held = false;
        let sent = net.push_with(endpoint, max, |buf| match tunn.encapsulate(packet, buf) {
            TunnResult::WriteToNetwork(p) => {
                // No session: the packet was queued and this is the handshake it waits for.
                held = p.first() == Some(&HANDSHAKE_INIT);
                Some(p.len())
            }
            // Queued behind a handshake already under way (or refused).
            _ => {
                held = true;
                None
            }
        });
        if held && !packet.is_empty() {
            self.held += 1;
        }
        self.record_sent(sent, now);
        true
    }

    /// A new handshake initiation to `endpoint` (whatever the peer's endpoint is); false
    /// without keys.
    pub(super) fn initiate_to(
        &mut self,
        endpoint: SocketAddr,
        keys: Option<&StaticKeys>,
        now: Instant,
        net: &mut NetBatch,
    ) -> bool {
        let Some(keys) = keys else {
            return false;
        };
        let tunn = self.tunn(keys);
        let sent = net.push_with(endpoint, HANDSHAKE_INIT_LEN, |buf| {
            match tunn.format_handshake_initiation(buf, true) {
                TunnResult::WriteToNetwork(p) => Some(p.len()),
                _ => None,
            }
        });
        self.record_sent(sent, now);
        true
    }

    fn record_sent(&mut self, sent: Option<usize>, now: Instant) {
        if let Some(n) = sent {
            self.tx_bytes += n as u64;
            self.last_sent = Some(now);
        }
    }

    pub(super) fn tick(
        &mut self,
        keys: Option<&StaticKeys>,
        now: Instant,
        net: &mut NetBatch,
        scratch: &mut [u8],
    ) {
        let span = &self.span;
        if let Some(tunn) = self.tunn.as_mut() {
            if let Some(age) = tunn.time_since_last_handshake() {
                self.handshake_at = now.checked_sub(age);
            }
            match tunn.update_timers(scratch) {
                TunnResult::WriteToNetwork(p) => {
                    if let Some(ep) = self.cfg.endpoint {
                        net.push(ep, p);
                        self.tx_bytes += p.len() as u64;
                        self.last_sent = Some(now);
                    }
                }
                TunnResult::Err(WireGuardError::ConnectionExpired) if tunn.is_expired() => {
                    // Sessions are gone for good: free them until the peer talks again.
                    tracing::info!(parent: span, "session expired");
                    self.tunn = None;
                }
                _ => {}
            }
        }
        if let Some(ka) = self.cfg.persistent_keepalive
            && self
                .last_sent
                .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(ka.into()))
        {
            self.send(keys, &[], now, net);
        }
    }
}

/// The peer's `Tunn` (its fields borrowed apart from the rest of the peer), made now if none.
pub(super) fn ensure_tunn<'a>(
    tunn: &'a mut Option<Box<Tunn>>,
    cfg: &PeerConfig,
    idx: u32,
    keys: &StaticKeys,
) -> &'a mut Tunn {
    tunn.get_or_insert_with(|| {
        Box::new(Tunn::new(
            keys.secret.clone(),
            cfg.public_key.to_x25519(),
            cfg.preshared_key.as_ref().map(|k| *k.as_bytes()),
            None,
            idx,
            Some(keys.rate_limiter.clone()),
        ))
    })
}
