//! The gateway: its real pure core reconciling the Secrets into peers of a real WireGuard core,
//! and a pod behind it that answers every packet sent to it (a ping).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Instant, SystemTime};

use chrono::{DateTime, Utc};
use ipnet::{IpNet, Ipv4Net};
use kwg_contract::keys::{PrivateKey, PublicKey};

use crate::api::Api;
use crate::net::Net;
use crate::sut::{
    Allocator, DeviceOp, GatewayCore, NetBatch, PeerConfig, PeerSecret, Tai64N, TunBatch, WgCore,
};

/// The pod every laptop pings.
pub const POD: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 5);

pub struct Gateway {
    pub key: PrivateKey,
    tunnel_cidr: Ipv4Net,
    pub core: GatewayCore,
    pub wg: WgCore,
    /// The UDP (and TCP) port the node forwards to this gateway.
    pub port: u16,
    /// The API version the last reconcile saw.
    seen: u64,
    next_expiry: Option<DateTime<Utc>>,
    /// Pings the pod answered.
    pub echoed: u64,
    /// Packets that reached the pod, by inner source address.
    pub reached: BTreeMap<Ipv4Addr, u64>,
    /// With feature `timers`: each peer's latest initiation timestamp, and when it came.
    stamps: BTreeMap<PublicKey, (Tai64N, Instant)>,
}

impl Gateway {
    pub fn new(key: PrivateKey, tunnel_cidr: Ipv4Net, port: u16) -> Gateway {
        Gateway {
            core: GatewayCore::new(Allocator::new(tunnel_cidr).expect("a tunnel CIDR")),
            wg: WgCore::new(Some(key.clone())),
            key,
            tunnel_cidr,
            port,
            seen: 0,
            next_expiry: None,
            echoed: 0,
            reached: BTreeMap::new(),
            stamps: BTreeMap::new(),
        }
    }

    /// The pod restarts: every bit of memory is lost (the key is kept in its Secret).
    pub fn restart(&mut self) {
        let (key, cidr, port) = (self.key.clone(), self.tunnel_cidr, self.port);
        *self = Gateway::new(key, cidr, port);
    }

    /// A new key (the operator rotated it): every session restarts.
    pub fn set_key(&mut self, key: PrivateKey) {
        self.wg.set_private_key(Some(key.clone()));
        self.key = key;
    }

    pub fn public_key(&self) -> PublicKey {
        self.key.public_key()
    }

    /// Reconciles when a watch would have delivered a change, or a lease ends.
    pub fn maybe_reconcile(&mut self, api: &mut Api, wall: SystemTime) {
        let due = self
            .next_expiry
            .is_some_and(|e| DateTime::<Utc>::from(wall) >= e);
        if api.version != self.seen || due {
            self.reconcile(api, wall);
        }
    }

    /// One reconcile of the real core, its plan applied to the API and the device.
    pub fn reconcile(&mut self, api: &mut Api, wall: SystemTime) {
        let secrets: Vec<PeerSecret> = api
            .secrets
            .iter()
            .map(|(name, s)| {
                let mut p = PeerSecret::parse(name, &s.data, &s.annotations);
                p.uid = s.uid.clone();
                p.created = Some(s.created);
                p
            })
            .collect();
        let running: BTreeMap<PublicKey, Vec<IpNet>> = self
            .wg
            .peer_keys()
            .into_iter()
            .map(|k| {
                let ips = self.wg.peer_config(&k).map(|c| c.allowed_ips.clone());
                (k, ips.unwrap_or_default())
            })
            .collect();
        let plan = self.core.reconcile(&secrets, &running, wall);
        for op in &plan.device {
            match op {
                DeviceOp::Upsert { key, ip, .. } => {
                    let mut pc = PeerConfig::new(*key);
                    pc.allowed_ips = vec![IpNet::V4(Ipv4Net::from(ip.addr()))];
                    self.wg.upsert_peer(pc);
                }
                DeviceOp::Remove { key } => {
                    self.wg.remove_peer(key);
                }
            }
        }
        for (name, ip) in &plan.annotate {
            api.annotate(name, ip.addr());
        }
        for m in plan.malformed.iter().filter(|m| m.write_annotation) {
            api.annotate_error(&m.secret_name, &m.reason);
        }
        for name in &plan.expired {
            api.delete(name, "gateway");
        }
        self.next_expiry = plan.next_expiry;
        self.seen = api.version;
    }

    /// A datagram for the gateway: WireGuard, then the pod answers what reached it.
    pub fn receive(&mut self, from: SocketAddr, bytes: &[u8], now: Instant, net: &mut Net) {
        let out = self.handle(from, bytes, now);
        self.send(out, net);
    }

    /// [`Gateway::receive`], the answers returned instead of sent.
    pub fn handle(&mut self, from: SocketAddr, bytes: &[u8], now: Instant) -> NetBatch {
        if crate::clock::TIMERS {
            self.new_stamper(bytes, now);
        }
        let mut out = NetBatch::new(1);
        let mut tun = TunBatch::new(0);
        self.wg.handle_udp(from, bytes, now, &mut out, &mut tun);
        let packets: Vec<Vec<u8>> = tun.packets().map(<[u8]>::to_vec).collect();
        for p in packets {
            let (src, dst) = (addr(&p, 12), addr(&p, 16));
            if dst != POD {
                continue;
            }
            *self.reached.entry(src).or_default() += 1;
            let mut reply = p.clone();
            reply[12..16].copy_from_slice(&dst.octets());
            reply[16..20].copy_from_slice(&src.octets());
            self.echoed += 1;
            self.wg.handle_tun(&reply, now, &mut out);
        }
        out
    }

    /// The fake clock's flaw, mended (feature `timers`): boringtun stamps an initiation with
    /// the real wall clock read when its `Tunn` was made plus the fake time since, so a laptop's
    /// new `Tunn` (a new gateway key, a peer re-added to restart its handshake) stamps earlier
    /// than its old one did once fake time ran ahead of real time, and the gateway refuses it
    /// as a replay (kwg-wg and boringtun both keep the last timestamp) until real time catches
    /// up: minutes. On a real machine both clocks move together. The fake network delivers
    /// everything within its tick and replays nothing, so an initiation not newer than one of
    /// an earlier tick comes from a new `Tunn`: the gateway forgets the peer's old timestamp
    /// (the peer is added again; the laptop's old sessions went with its old `Tunn`).
    fn new_stamper(&mut self, bytes: &[u8], now: Instant) {
        let (secret, public) = (self.key.to_secret(), self.key.public_key().to_x25519());
        let Some(opened) = crate::sut::open_initiation(&secret, &public, bytes) else {
            return;
        };
        let (Some(stamp), Some(cfg)) = (opened.timestamp, self.wg.peer_config(&opened.peer)) else {
            return;
        };
        let behind = self
            .stamps
            .get(&opened.peer)
            .is_some_and(|(last, at)| stamp <= *last && *at < now);
        if behind {
            let cfg = cfg.clone();
            self.wg.remove_peer(&opened.peer);
            self.wg.upsert_peer(cfg);
        }
        let last = self.stamps.entry(opened.peer).or_insert((stamp, now));
        if behind || stamp > last.0 {
            *last = (stamp, now);
        }
    }

    pub fn tick(&mut self, now: Instant, net: &mut Net) {
        let mut out = NetBatch::new(1);
        self.wg.tick(now, &mut out);
        self.send(out, net);
    }

    fn send(&self, out: NetBatch, net: &mut Net) {
        for (dst, d) in out.datagrams() {
            net.from_gateway(self.port, dst, d.to_vec());
        }
    }

    /// The tunnel address the device routes to `key`, if it runs that peer.
    pub fn peer_ip(&self, key: &PublicKey) -> Option<IpAddr> {
        let cfg = self.wg.peer_config(key)?;
        cfg.allowed_ips.first().map(|n| n.addr())
    }
}

/// The IPv4 address at `at` of an IP packet.
pub fn addr(p: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(p[at], p[at + 1], p[at + 2], p[at + 3])
}
