//! The protocol core: peer table, cryptokey routing, handshake routing, timers. No I/O: it takes
//! datagrams, IP packets and the current time, and fills output batches.
//!
//! boringtun's `Tunn` keeps its own session clock (rekey, expiry); everything the core schedules
//! itself (persistent keepalive, rate-limiter resets) runs on the `now` passed in.

mod allowed_ips;
mod batch;
mod config;
mod initiation;
mod peer;
mod replay;
#[doc(hidden)]
pub mod testing;
mod tun_batch;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519;

pub use allowed_ips::AllowedIps;
pub use batch::NetBatch;
pub use initiation::{Opened, Tai64N, open_initiation};
pub use tun_batch::{TUN_BATCH, TunBatch};

use peer::{Peer, ensure_tunn};

use crate::peer::{PeerConfig, PeerStats};
use kwg_contract::keys::{PrivateKey, PublicKey};

/// Message type of a handshake initiation (the WireGuard paper, section 5.4.2).
const HANDSHAKE_INIT: u8 = 1;
/// Message type of a cookie reply (the WireGuard paper, section 5.4.7).
const COOKIE_REPLY: u8 = 3;

/// Handshakes per second across all peers before cookie replies are demanded (the WireGuard
/// paper, section 5.3, leaves the threshold to the implementation).
pub const DEFAULT_HANDSHAKE_LIMIT: u64 = 1000;
/// WireGuard message overhead: 16 bytes of header and 16 of Poly1305 tag.
pub const DATA_OVERHEAD: usize = 32;
/// Size of a handshake initiation, the largest control message.
const HANDSHAKE_INIT_LEN: usize = 148;
/// How often the shared rate limiter's counter is reset (boringtun's own choice: 1 s).
const RATE_LIMIT_PERIOD: Duration = Duration::from_secs(1);

struct StaticKeys {
    private: PrivateKey,
    secret: x25519::StaticSecret,
    public: x25519::PublicKey,
    rate_limiter: Arc<RateLimiter>,
}

/// Counters of packets the core refused, for logs and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Drops {
    /// Decrypted packets whose source address is outside the sender's AllowedIPs.
    pub spoofed_source: u64,
    /// Packets from the TUN with no peer whose AllowedIPs contain the destination.
    pub no_route: u64,
    /// Packets for a peer with no known endpoint.
    pub no_endpoint: u64,
    /// Datagrams that failed to parse, authenticate or match a peer.
    pub invalid: u64,
    /// Cookie replies sent because handshakes exceeded the rate limit.
    pub cookies_sent: u64,
    /// Handshake initiations not newer than the last one accepted from their sender: replays.
    pub replayed_initiations: u64,
}

/// The WireGuard state of one interface.
pub struct Core {
    keys: Option<StaticKeys>,
    handshake_limit: u64,
    peers: HashMap<u32, Peer>,
    by_key: HashMap<PublicKey, u32>,
    routes: AllowedIps,
    scratch: Vec<u8>,
    last_rate_reset: Option<Instant>,
    /// `drops.cookies_sent` at the last report.
    cookies_reported: u64,
    /// Handshakes completed on this core, for [`Core::handshake_serial`].
    handshakes: u64,
    /// Virtual subnets (`crate::translate`): `None`, the default, costs one branch per batch.
    translation: Option<std::sync::Arc<crate::translate::Translator>>,
    pub drops: Drops,
}

impl Core {
    pub fn new(private_key: Option<PrivateKey>) -> Core {
        Core::with_handshake_limit(private_key, DEFAULT_HANDSHAKE_LIMIT)
    }

    pub fn with_handshake_limit(private_key: Option<PrivateKey>, limit: u64) -> Core {
        let mut core = Core {
            keys: None,
            handshake_limit: limit,
            peers: HashMap::new(),
            by_key: HashMap::new(),
            routes: AllowedIps::default(),
            scratch: vec![0; 65536 + DATA_OVERHEAD],
            last_rate_reset: None,
            cookies_reported: 0,
            handshakes: 0,
            translation: None,
            drops: Drops::default(),
        };
        core.set_private_key(private_key);
        core
    }

    pub fn public_key(&self) -> Option<PublicKey> {
        self.keys
            .as_ref()
            .map(|k| PublicKey::from_bytes(k.public.to_bytes()))
    }

    pub fn private_key(&self) -> Option<&PrivateKey> {
        self.keys.as_ref().map(|k| &k.private)
    }

    /// Changes the interface's key; every session restarts (as in the kernel). A peer whose
    /// public key equals the new interface key is removed.
    pub fn set_private_key(&mut self, key: Option<PrivateKey>) {
        if self.keys.as_ref().map(|k| &k.private) == key.as_ref() {
            return;
        }
        self.keys = key.map(|private| {
            let secret = private.to_secret();
            let public = x25519::PublicKey::from(&secret);
            // Every handshake message passes the limiter twice: in `handle_udp` (before the
            // initiation is opened) and again in `Tunn::decapsulate`.
            let rate_limiter = Arc::new(RateLimiter::new(
                &public,
                self.handshake_limit.saturating_mul(2),
            ));
            StaticKeys {
                private,
                secret,
                public,
                rate_limiter,
            }
        });
        if let Some(own) = self.public_key() {
            self.remove_peer(&own);
        }
        for p in self.peers.values_mut() {
            p.tunn = None;
        }
    }

    /// Sets the virtual subnets: packets read from the TUN are translated (mapped → real
    /// destination) by the device's TUN task before [`Core::handle_tun`], packets decrypted
    /// here (real → mapped source) before they go into the TUN batch. `None` or an empty
    /// translator: no translation.
    pub fn set_translation(&mut self, t: Option<crate::translate::Translator>) {
        self.translation = t.filter(|t| !t.is_empty()).map(std::sync::Arc::new);
    }

    /// The virtual subnets set, if any.
    pub fn translation(&self) -> Option<std::sync::Arc<crate::translate::Translator>> {
        self.translation.clone()
    }

    /// An IP packet read from the TUN device: encrypt it for the peer that owns its destination.
    pub fn handle_tun(&mut self, packet: &[u8], now: Instant, net: &mut NetBatch) {
        let Some(dst) = Tunn::dst_address(packet) else {
            self.drops.invalid += 1;
            return;
        };
        let Some(peer) = self.routes.lookup(dst).and_then(|i| self.peers.get_mut(&i)) else {
            self.drops.no_route += 1;
            return;
        };
        if !peer.send(self.keys.as_ref(), packet, now, net) {
            self.drops.no_endpoint += 1;
        }
    }

    /// Sends the peer a handshake initiation to `dst` instead of its endpoint: a probe of
    /// another path. The peer answers to where the initiation came from, and moves its side
    /// there; a pinned endpoint here stays, the answer shows in [`Core::heard_other`]. False
    /// for an unknown peer.
    pub fn initiate_to(
        &mut self,
        key: &PublicKey,
        dst: SocketAddr,
        now: Instant,
        net: &mut NetBatch,
    ) -> bool {
        let Some(peer) = self.by_key.get(key).and_then(|i| self.peers.get_mut(i)) else {
            return false;
        };
        peer.initiate_to(canonical(dst), self.keys.as_ref(), now, net)
    }

    /// Turns replay on or off for a peer (see [`replay`]): a client's gateway peer. Turning
    /// it on again keeps what is kept.
    pub fn set_replay(&mut self, key: &PublicKey, on: bool) {
        if let Some(peer) = self.by_key.get(key).and_then(|i| self.peers.get_mut(i)) {
            match (on, &peer.replay) {
                (true, Some(_)) => {}
                (true, None) => peer.replay = Some(Box::default()),
                (false, _) => peer.replay = None,
            }
        }
    }

    /// [`Core::initiate_to`], and once this handshake completes, the packets sent to the peer
    /// since `since` (nothing came back since) go out again under the new session.
    pub fn initiate_replaying(
        &mut self,
        key: &PublicKey,
        dst: SocketAddr,
        since: Instant,
        now: Instant,
        net: &mut NetBatch,
    ) -> bool {
        if let Some(r) = self
            .by_key
            .get(key)
            .and_then(|i| self.peers.get_mut(i))
            .and_then(|p| p.replay.as_mut())
        {
            r.arm(since);
        }
        self.initiate_to(key, dst, now, net)
    }

    /// Pins (or unpins) a peer's endpoint: pinned, authenticated packets from elsewhere no
    /// longer move it (a client choosing its path among UDP and streams).
    pub fn pin_endpoint(&mut self, key: &PublicKey, pinned: bool) {
        if let Some(peer) = self.by_key.get(key).and_then(|i| self.peers.get_mut(i)) {
            peer.pinned = pinned;
            peer.heard_other = None;
        }
    }

    /// For a pinned peer: the last address other than its endpoint that an authenticated
    /// packet came from, and when.
    pub fn heard_other(&self, key: &PublicKey) -> Option<(SocketAddr, Instant)> {
        let peer = self.by_key.get(key).and_then(|i| self.peers.get(i))?;
        peer.heard_other
    }

    /// The serial number of the last handshake completed with the peer: 0 when none since it
    /// was added, and a number no other handshake on this core had, so a changed number is a
    /// new handshake (also after the peer was removed and added again). `None`: unknown peer.
    pub fn handshake_serial(&self, key: &PublicKey) -> Option<u64> {
        let peer = self.by_key.get(key).and_then(|i| self.peers.get(i))?;
        Some(peer.handshake_serial)
    }

    /// How many packets from the TUN waited for a handshake since the peer was added: without
    /// a session boringtun keeps them (and sends them once a handshake completes), so the byte
    /// counters move only with its initiations, seconds apart. `None`: unknown peer.
    pub fn held_packets(&self, key: &PublicKey) -> Option<u64> {
        let peer = self.by_key.get(key).and_then(|i| self.peers.get(i))?;
        Some(peer.held)
    }

    /// The peers' current endpoints (what the device must keep a stream open for).
    pub fn endpoints(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.peers.values().filter_map(|p| p.cfg.endpoint)
    }

    /// A datagram received on the UDP socket from `from`. The peer's endpoint moves to `from`
    /// only after a packet that authenticated: a completed handshake or a data message that
    /// decrypted. Cookie replies (sent or received), rejected handshakes and replays never move it.
    pub fn handle_udp(
        &mut self,
        from: SocketAddr,
        datagram: &[u8],
        now: Instant,
        net: &mut NetBatch,
        tun: &mut TunBatch,
    ) {
        let from = canonical(from);
        let Some(keys) = &self.keys else {
            self.drops.invalid += 1;
            return;
        };
        let parsed =
            match keys
                .rate_limiter
                .verify_packet(Some(from.ip()), datagram, &mut self.scratch)
            {
                Ok(p) => p,
                Err(TunnResult::WriteToNetwork(cookie)) => {
                    net.push(from, cookie);
                    self.drops.cookies_sent += 1;
                    return;
                }
                Err(_) => {
                    self.drops.invalid += 1;
                    return;
                }
            };
        let mut initiation = None;
        let idx = match parsed {
            Packet::HandshakeInit(_) => open_initiation(&keys.secret, &keys.public, datagram)
                .and_then(|o| {
                    initiation = Some(o.timestamp);
                    self.by_key.get(&o.peer).copied()
                }),
            Packet::HandshakeResponse(ref p) => Some(p.receiver_idx >> 8),
            Packet::PacketCookieReply(ref p) => Some(p.receiver_idx >> 8),
            Packet::PacketData(ref p) => Some(p.receiver_idx >> 8),
        };
        let Some((idx, peer)) = idx.and_then(|i| self.peers.get_mut(&i).map(|p| (i, p))) else {
            self.drops.invalid += 1;
            return;
        };
        let (role, is_data) = match parsed {
            Packet::HandshakeInit(_) => (Some("responder"), false),
            Packet::HandshakeResponse(_) => (Some("initiator"), false),
            Packet::PacketCookieReply(_) => (None, false),
            Packet::PacketData(_) => (None, true),
        };
        let timestamp = match initiation {
            None => None,
            // The timestamp does not authenticate: not from the holder of the peer's key.
            Some(None) => {
                self.drops.invalid += 1;
                return;
            }
            Some(Some(t)) if peer.last_initiation.is_some_and(|last| t <= last) => {
                self.drops.replayed_initiations += 1;
                tracing::debug!(parent: &peer.span, %from, "replayed handshake initiation dropped");
                return;
            }
            Some(Some(t)) => Some(t),
        };
        // Handshakes only (never data): boringtun's own handshake events land in the peer span.
        let _in_span = role.map(|_| peer.span.enter());
        let tunn = ensure_tunn(&mut peer.tunn, &peer.cfg, idx, keys);
        // Decrypted straight into the TUN batch; kept there only once its source passed.
        let dst = tun.dst(datagram.len());
        let authenticated = match tunn.decapsulate(Some(from.ip()), datagram, dst) {
            // A keepalive decrypted; or a cookie reply to us accepted, which proves nothing
            // about where the peer is.
            TunnResult::Done => is_data,
            TunnResult::Err(_) => {
                self.drops.invalid += 1;
                false
            }
            // Under handshake load the handshake was not even looked at: the sender must
            // come back with the cookie first.
            TunnResult::WriteToNetwork(reply) if reply.first() == Some(&COOKIE_REPLY) => {
                net.push(from, reply);
                self.drops.cookies_sent += 1;
                false
            }
            TunnResult::WriteToNetwork(reply) => {
                net.push(from, reply);
                peer.tx_bytes += reply.len() as u64;
                // Flush packets queued while the handshake was in progress.
                while let TunnResult::WriteToNetwork(p) =
                    tunn.decapsulate(None, &[], &mut self.scratch)
                {
                    net.push(from, p);
                    peer.tx_bytes += p.len() as u64;
                }
                peer.last_sent = Some(now);
                if timestamp.is_some() {
                    peer.last_initiation = timestamp;
                }
                true
            }
            TunnResult::WriteToTunnelV4(p, src) => {
                let n = p.len();
                if self.routes.lookup(IpAddr::V4(src)) == Some(idx) {
                    if let Some(t) = &self.translation {
                        t.inbound(p);
                    }
                    tun.commit(n);
                } else {
                    self.drops.spoofed_source += 1;
                    peer.spoofed_unreported += 1;
                }
                true
            }
            TunnResult::WriteToTunnelV6(p, src) => {
                let n = p.len();
                if self.routes.lookup(IpAddr::V6(src)) == Some(idx) {
                    tun.commit(n);
                } else {
                    self.drops.spoofed_source += 1;
                    peer.spoofed_unreported += 1;
                }
                true
            }
        };
        if !authenticated {
            return;
        }
        if let Some(role) = role {
            tracing::info!(parent: &peer.span, %role, endpoint = %from, "handshake completed");
            self.handshakes += 1;
            peer.handshake_serial = self.handshakes;
        }
        peer.rx_bytes += datagram.len() as u64;
        if peer.cfg.endpoint != Some(from) && peer.pinned {
            peer.heard_other = Some((from, now));
        } else if peer.cfg.endpoint != Some(from) {
            match peer.cfg.endpoint {
                Some(old) => {
                    tracing::info!(parent: &peer.span, %old, new = %from, "endpoint roamed")
                }
                None => {
                    tracing::info!(parent: &peer.span, endpoint = %from, "endpoint learned")
                }
            }
            peer.cfg.endpoint = Some(from);
        }
        drop(_in_span);
        if role == Some("initiator") {
            let again = peer
                .replay
                .as_mut()
                .map(|r| r.take(now))
                .unwrap_or_default();
            if !again.is_empty() {
                tracing::info!(parent: &peer.span, packets = again.len(), "sent again under the new session");
            }
            for p in again {
                peer.send(self.keys.as_ref(), &p, now, net);
            }
        }
    }

    /// Runs the timers: handshake retries, rekeys, keepalives. Call every 100–250 ms.
    /// Once per rate-limit period it also logs the drops counted since the last report.
    pub fn tick(&mut self, now: Instant, net: &mut NetBatch) {
        let period_over = self
            .last_rate_reset
            .is_none_or(|t| now.duration_since(t) >= RATE_LIMIT_PERIOD);
        if period_over {
            if let Some(keys) = &self.keys {
                keys.rate_limiter.reset_count();
            }
            self.last_rate_reset = Some(now);
            let cookies = self.drops.cookies_sent - self.cookies_reported;
            if cookies > 0 {
                tracing::info!(count = cookies, "cookie replies sent under handshake load");
                self.cookies_reported = self.drops.cookies_sent;
            }
        }
        for peer in self.peers.values_mut() {
            if period_over && peer.spoofed_unreported > 0 {
                tracing::info!(
                    parent: &peer.span,
                    count = peer.spoofed_unreported,
                    "dropped packets whose inner source is outside the peer's AllowedIPs"
                );
                peer.spoofed_unreported = 0;
            }
            peer.tick(self.keys.as_ref(), now, net, &mut self.scratch);
        }
    }
}

/// IPv4-mapped IPv6 addresses (from the dual-stack socket) as plain IPv4.
pub fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

#[cfg(test)]
mod tests;
