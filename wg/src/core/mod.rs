//! The protocol core: peer table, cryptokey routing, handshake routing, timers. No I/O: it takes
//! datagrams, IP packets and the current time, and fills output batches.
//!
//! boringtun's `Tunn` keeps its own session clock (rekey, expiry); everything the core schedules
//! itself (persistent keepalive, rate-limiter resets) runs on the `now` passed in.

mod allowed_ips;
mod batch;
#[doc(hidden)]
pub mod testing;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519;
use ipnet::IpNet;

pub use allowed_ips::AllowedIps;
pub use batch::{NetBatch, TunBatch};

use crate::keys::{PrivateKey, PublicKey};
use crate::peer::{PeerConfig, PeerStats};

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

struct Peer {
    cfg: PeerConfig,
    idx: u32,
    /// `peer = <short key>`, created once: events name it as their parent, so the hot path
    /// neither enters spans nor formats keys.
    span: tracing::Span,
    /// Spoofed-source drops since the last report (logged once per rate-limit period).
    spoofed_unreported: u32,
    /// Created on first use and dropped when its sessions expire: an idle peer costs a few
    /// hundred bytes, one with live sessions about 11 KB (boringtun keeps 8 session slots).
    tunn: Option<Box<Tunn>>,
    /// The last handshake of a dropped `Tunn`, for statistics.
    handshake_at: Option<Instant>,
    rx_bytes: u64,
    tx_bytes: u64,
    last_sent: Option<Instant>,
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
            let rate_limiter = Arc::new(RateLimiter::new(&public, self.handshake_limit));
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

    fn free_index(&self) -> u32 {
        loop {
            // 24 bits: boringtun shifts the index left by 8 for its session counter.
            let idx = rand::random::<u32>() >> 8;
            if !self.peers.contains_key(&idx) {
                return idx;
            }
        }
    }

    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    pub fn peer_config(&self, key: &PublicKey) -> Option<&PeerConfig> {
        self.by_key.get(key).map(|idx| &self.peers[idx].cfg)
    }

    pub fn peer_keys(&self) -> Vec<PublicKey> {
        self.by_key.keys().copied().collect()
    }

    /// Adds a peer or updates it in place: a new endpoint, AllowedIPs or keepalive keep the
    /// session; only a changed preshared key restarts it. `endpoint: None` keeps the current one.
    pub fn upsert_peer(&mut self, cfg: PeerConfig) {
        if Some(cfg.public_key) == self.public_key() {
            tracing::warn!(peer = %cfg.public_key.short(), "ignoring a peer with the interface's own public key");
            return;
        }
        let idx = match self.by_key.get(&cfg.public_key).copied() {
            None => {
                let idx = self.free_index();
                self.by_key.insert(cfg.public_key, idx);
                let span = tracing::info_span!("peer", peer = %cfg.public_key.short());
                tracing::info!(
                    parent: &span,
                    endpoint = cfg.endpoint.map(tracing::field::display),
                    allowed_ips = cfg.allowed_ips.len(),
                    keepalive = cfg.persistent_keepalive,
                    "peer added"
                );
                self.peers.insert(
                    idx,
                    Peer {
                        cfg: PeerConfig::new(cfg.public_key),
                        idx,
                        span,
                        spoofed_unreported: 0,
                        tunn: None,
                        handshake_at: None,
                        rx_bytes: 0,
                        tx_bytes: 0,
                        last_sent: None,
                    },
                );
                idx
            }
            Some(idx) => {
                let peer = &self.peers[&idx];
                tracing::debug!(
                    parent: &peer.span,
                    endpoint = cfg.endpoint.map(tracing::field::display),
                    allowed_ips = cfg.allowed_ips.len(),
                    keepalive = cfg.persistent_keepalive,
                    new_preshared_key = peer.cfg.preshared_key != cfg.preshared_key,
                    "peer updated"
                );
                idx
            }
        };
        let peer = self.peers.get_mut(&idx).expect("indexed peer exists");
        if peer.cfg.preshared_key != cfg.preshared_key {
            peer.tunn = None; // restarts the session with the new key
        }
        let old_ips = std::mem::take(&mut peer.cfg.allowed_ips);
        peer.cfg.preshared_key = cfg.preshared_key;
        peer.cfg.persistent_keepalive = cfg.persistent_keepalive.filter(|k| *k > 0);
        if let Some(ep) = cfg.endpoint {
            peer.cfg.endpoint = Some(canonical(ep));
        }
        for net in old_ips {
            self.routes.remove(net, idx);
        }
        self.set_allowed_ips(idx, cfg.allowed_ips);
    }

    fn set_allowed_ips(&mut self, idx: u32, nets: Vec<IpNet>) {
        let mut mine = Vec::with_capacity(nets.len());
        for net in nets {
            let net = net.trunc();
            if mine.contains(&net) {
                continue;
            }
            if let Some(prev) = self.routes.insert(net, idx)
                && let Some(p) = self.peers.get_mut(&prev)
            {
                p.cfg.allowed_ips.retain(|n| *n != net);
            }
            mine.push(net);
        }
        self.peers
            .get_mut(&idx)
            .expect("indexed peer exists")
            .cfg
            .allowed_ips = mine;
    }

    pub fn remove_peer(&mut self, key: &PublicKey) -> bool {
        let Some(idx) = self.by_key.remove(key) else {
            return false;
        };
        if let Some(peer) = self.peers.remove(&idx) {
            tracing::info!(parent: &peer.span, "peer removed");
            for net in peer.cfg.allowed_ips {
                self.routes.remove(net, idx);
            }
        }
        true
    }

    pub fn remove_all_peers(&mut self) {
        for key in self.peer_keys() {
            self.remove_peer(&key);
        }
    }

    /// Statistics of every peer at `now`; `wall` (the wall-clock time at `now`) turns handshake
    /// ages into times.
    pub fn peers(&self, now: Instant, wall: SystemTime) -> Vec<PeerStats> {
        let mut out: Vec<PeerStats> = self.peers.values().map(|p| p.stats(now, wall)).collect();
        out.sort_by_key(|s| s.public_key);
        out
    }

    pub fn peer_stats(&self, key: &PublicKey, now: Instant, wall: SystemTime) -> Option<PeerStats> {
        self.by_key
            .get(key)
            .map(|idx| self.peers[idx].stats(now, wall))
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

    /// A datagram received on the UDP socket from `from`.
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
        let idx = match parsed {
            Packet::HandshakeInit(ref p) => parse_handshake_anon(&keys.secret, &keys.public, p)
                .ok()
                .and_then(|h| {
                    self.by_key
                        .get(&PublicKey::from_bytes(h.peer_static_public))
                        .copied()
                }),
            Packet::HandshakeResponse(ref p) => Some(p.receiver_idx >> 8),
            Packet::PacketCookieReply(ref p) => Some(p.receiver_idx >> 8),
            Packet::PacketData(ref p) => Some(p.receiver_idx >> 8),
        };
        let Some((idx, peer)) = idx.and_then(|i| self.peers.get_mut(&i).map(|p| (i, p))) else {
            self.drops.invalid += 1;
            return;
        };
        let role = match parsed {
            Packet::HandshakeInit(_) => Some("responder"),
            Packet::HandshakeResponse(_) => Some("initiator"),
            _ => None,
        };
        // Handshakes only (never data): boringtun's own handshake events land in the peer span.
        let _in_span = role.map(|_| peer.span.enter());
        let tunn = ensure_tunn(&mut peer.tunn, &peer.cfg, idx, keys);
        let mut authenticated = true;
        match tunn.decapsulate(Some(from.ip()), datagram, &mut self.scratch) {
            TunnResult::Done => {}
            TunnResult::Err(_) => authenticated = false,
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
            }
            TunnResult::WriteToTunnelV4(p, src) => {
                let n = p.len();
                if self.routes.lookup(IpAddr::V4(src)) == Some(idx) {
                    tun.push(&self.scratch[..n]);
                } else {
                    self.drops.spoofed_source += 1;
                    peer.spoofed_unreported += 1;
                }
            }
            TunnResult::WriteToTunnelV6(p, src) => {
                let n = p.len();
                if self.routes.lookup(IpAddr::V6(src)) == Some(idx) {
                    tun.push(&self.scratch[..n]);
                } else {
                    self.drops.spoofed_source += 1;
                    peer.spoofed_unreported += 1;
                }
            }
        }
        if authenticated {
            if let Some(role) = role {
                tracing::info!(parent: &peer.span, %role, endpoint = %from, "handshake completed");
            }
            peer.rx_bytes += datagram.len() as u64;
            if peer.cfg.endpoint != Some(from) {
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
        } else {
            self.drops.invalid += 1;
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

impl Peer {
    fn tunn(&mut self, keys: &StaticKeys) -> &mut Tunn {
        ensure_tunn(&mut self.tunn, &self.cfg, self.idx, keys)
    }
}

fn ensure_tunn<'a>(
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

impl Peer {
    /// Time since the last completed handshake. boringtun forgets it once its sessions
    /// expire (180 s idle); like the kernel and wireguard-go, `wg show` keeps reporting it, from
    /// the time `tick` last recorded.
    fn handshake_age(&self, now: Instant) -> Option<Duration> {
        self.tunn
            .as_ref()
            .and_then(|t| t.time_since_last_handshake())
            .or_else(|| self.handshake_at.map(|t| now.saturating_duration_since(t)))
    }

    fn stats(&self, now: Instant, wall: SystemTime) -> PeerStats {
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
    fn send(
        &mut self,
        keys: Option<&StaticKeys>,
        packet: &[u8],
        now: Instant,
        net: &mut NetBatch,
    ) -> bool {
        let (Some(endpoint), Some(keys)) = (self.cfg.endpoint, keys) else {
            return false;
        };
        let tunn = self.tunn(keys);
        let max = (packet.len() + DATA_OVERHEAD).max(HANDSHAKE_INIT_LEN);
        let sent = net.push_with(endpoint, max, |buf| match tunn.encapsulate(packet, buf) {
            TunnResult::WriteToNetwork(p) => Some(p.len()),
            _ => None,
        });
        if let Some(n) = sent {
            self.tx_bytes += n as u64;
            self.last_sent = Some(now);
        }
        true
    }

    fn tick(
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

/// IPv4-mapped IPv6 addresses (from the dual-stack socket) as plain IPv4.
pub fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

#[cfg(test)]
mod tests;
