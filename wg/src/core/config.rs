//! The peer table of the core: adding, changing and removing peers (live, sessions of the
//! others untouched), and their statistics.

use std::time::{Instant, SystemTime};

use ipnet::IpNet;

use super::*;

impl Core {
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
                self.peers
                    .insert(idx, Peer::new(PeerConfig::new(cfg.public_key), idx, span));
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
}
