//! Several replicas, one view: each replica holds the sessions of the peers whose packets the
//! Service sends it, so `/peers` and `/metrics` ask the sibling replicas for their device
//! statistics and take each peer's handshake time and traffic from the replica that holds its
//! session (the latest handshake).
//!
//! A replica serves its statistics on `GET /replica/stats` of the admin port only to callers
//! that prove they hold the gateway's private key (every replica does; nothing else in the
//! cluster can read it): the header [`HEADER`] is `<unix seconds>.<MAC>`, the MAC a keyed
//! BLAKE2s of the time and path under a key derived from the private key, accepted for
//! [`SKEW`] either way. Without it the path answers 403 like `/metrics` and `/peers`.
//!
//! Drops by reach by RBAC are counted by each replica's own nftables: a peer's own `/peers`
//! entry (and so `kwg status`) shows the sum over the replicas that answer ([`total_drops`]),
//! while `/metrics` exports only this replica's counter (Prometheus scrapes every replica and
//! sums; a merged counter there would be counted once per replica).

use crate::core::ActivePeer;
use blake2::Blake2sMac256;
use blake2::digest::{FixedOutput, KeyInit, Mac, Update};
use kwg_wg::contract::GATEWAY_POD_SELECTOR;
use kwg_wg::device::PeerStats;
use kwg_wg::keys::{PrivateKey, PublicKey};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The admin path a replica serves its own device statistics on.
pub const PATH: &str = "/replica/stats";
/// The request header carrying the proof.
pub const HEADER: &str = "x-kwg-replica";
/// How far a proof's time may be from the receiver's clock.
pub const SKEW: Duration = Duration::from_secs(30);
/// How long a sibling may take to answer before its statistics are left out.
pub const TIMEOUT: Duration = Duration::from_millis(700);
/// Domain separation of the derived key (never used for anything else).
const LABEL: &[u8] = b"kwg replica stats v1";

/// The key replicas prove themselves with, derived from the shared private key.
#[derive(Clone)]
pub struct ReplicaKey([u8; 32]);

impl std::fmt::Debug for ReplicaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReplicaKey(redacted)")
    }
}

impl ReplicaKey {
    pub fn derive(private: &PrivateKey) -> ReplicaKey {
        let mut mac =
            <Blake2sMac256 as KeyInit>::new_from_slice(private.as_bytes()).expect("32-byte key");
        Mac::update(&mut mac, LABEL);
        ReplicaKey(mac.finalize_fixed().into())
    }

    fn mac(&self, secs: u64, path: &str) -> Blake2sMac256 {
        let mut mac = <Blake2sMac256 as KeyInit>::new_from_slice(&self.0).expect("32-byte key");
        Update::update(&mut mac, format!("{secs} {path}").as_bytes());
        mac
    }

    /// The header value proving the caller at `now`.
    pub fn proof(&self, path: &str, now: SystemTime) -> String {
        let secs = unix(now);
        let tag: [u8; 32] = self.mac(secs, path).finalize_fixed().into();
        let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        format!("{secs}.{hex}")
    }

    /// Whether `header` proves a replica at `now` (constant-time comparison).
    pub fn verify(&self, header: &str, path: &str, now: SystemTime) -> bool {
        let Some((secs, hex)) = header.split_once('.') else {
            return false;
        };
        let (Ok(secs), Some(tag)) = (secs.parse::<u64>(), unhex(hex)) else {
            return false;
        };
        if unix(now).abs_diff(secs) > SKEW.as_secs() {
            return false;
        }
        self.mac(secs, path).verify_slice(&tag).is_ok()
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// One peer's statistics as replicas exchange them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaStat {
    pub public_key: String,
    pub endpoint: Option<SocketAddr>,
    /// Unix time in milliseconds.
    pub last_handshake_ms: Option<u64>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Packets from the peer reach by RBAC dropped on the answering replica (absent, so 0,
    /// from a replica older than this field).
    #[serde(default)]
    pub dropped_packets: u64,
}

impl From<&PeerStats> for ReplicaStat {
    fn from(s: &PeerStats) -> ReplicaStat {
        ReplicaStat {
            public_key: s.public_key.to_string(),
            endpoint: s.endpoint,
            last_handshake_ms: s
                .last_handshake
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_millis() as u64),
            rx_bytes: s.rx_bytes,
            tx_bytes: s.tx_bytes,
            dropped_packets: 0,
        }
    }
}

/// What this replica tells its siblings: its device statistics with the drops its nftables
/// counted per peer address (`drops`), matched to keys through the active `peers`.
pub fn own_stats(
    local: &[PeerStats],
    peers: &[ActivePeer],
    drops: &[(Ipv4Addr, u64)],
) -> Vec<ReplicaStat> {
    let ip: HashMap<PublicKey, Ipv4Addr> = peers
        .iter()
        .map(|p| (p.spec.public_key, p.ip.addr()))
        .collect();
    local
        .iter()
        .map(|l| ReplicaStat {
            dropped_packets: ip
                .get(&l.public_key)
                .and_then(|a| drops.iter().find(|d| d.0 == *a))
                .map_or(0, |d| d.1),
            ..ReplicaStat::from(l)
        })
        .collect()
}

/// Each active peer's drops summed over this replica (`local`, per address) and the
/// siblings that answered (per key; a key no active peer has is left out). A sibling that
/// does not answer leaves its drops out until it does; a replica that goes away takes its
/// count with it (the sum is what the peer's packets met on the replicas serving now).
pub fn total_drops(
    peers: &[ActivePeer],
    local: &[(Ipv4Addr, u64)],
    siblings: &[ReplicaStat],
) -> Vec<(Ipv4Addr, u64)> {
    let mut sum: HashMap<Ipv4Addr, u64> = local.iter().copied().collect();
    let ip: HashMap<String, Ipv4Addr> = peers
        .iter()
        .map(|p| (p.spec.public_key.to_string(), p.ip.addr()))
        .collect();
    for s in siblings.iter().filter(|s| s.dropped_packets > 0) {
        if let Some(a) = ip.get(&s.public_key) {
            let n = sum.entry(*a).or_default();
            *n = n.saturating_add(s.dropped_packets);
        }
    }
    let mut out: Vec<_> = sum.into_iter().collect();
    out.sort_unstable();
    out
}

/// Each peer's statistics from the replica holding its session: the one with the latest
/// handshake (this replica's own entry when none has one). Peers only siblings know are
/// left out (this replica does not serve them).
pub fn merge(local: &[PeerStats], siblings: &[ReplicaStat]) -> Vec<PeerStats> {
    let mut best: HashMap<PublicKey, &ReplicaStat> = HashMap::new();
    for s in siblings {
        let Ok(key) = s.public_key.parse::<PublicKey>() else {
            continue;
        };
        let newer = best
            .get(&key)
            .is_none_or(|b| s.last_handshake_ms > b.last_handshake_ms);
        if newer && s.last_handshake_ms.is_some() {
            best.insert(key, s);
        }
    }
    local
        .iter()
        .map(|l| {
            let mine = ReplicaStat::from(l).last_handshake_ms;
            match best.get(&l.public_key) {
                Some(s) if s.last_handshake_ms > mine => PeerStats {
                    endpoint: s.endpoint,
                    last_handshake: s
                        .last_handshake_ms
                        .map(|ms| UNIX_EPOCH + Duration::from_millis(ms)),
                    rx_bytes: s.rx_bytes,
                    tx_bytes: s.tx_bytes,
                    ..l.clone()
                },
                _ => l.clone(),
            }
        })
        .collect()
}

/// Where to find the sibling replicas and how to prove this one to them.
#[derive(Clone)]
pub struct Siblings {
    pub client: kube::Client,
    pub namespace: String,
    /// This replica's pod name (left out).
    pub me: String,
    pub port: u16,
    pub key: ReplicaKey,
}

impl Siblings {
    /// The statistics of every sibling that answers within [`TIMEOUT`] (a draining one
    /// too: it still holds sessions).
    pub async fn stats(&self) -> Vec<ReplicaStat> {
        use k8s_openapi::api::core::v1::Pod;
        let api = kube::Api::<Pod>::namespaced(self.client.clone(), &self.namespace);
        let lp = kube::api::ListParams::default().labels(GATEWAY_POD_SELECTOR);
        let pods = match tokio::time::timeout(TIMEOUT, api.list(&lp)).await {
            Ok(Ok(l)) => l.items,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot list the sibling replicas");
                return Vec::new();
            }
            Err(_) => return Vec::new(),
        };
        let addrs = pods.iter().filter_map(|p| {
            let ip = p.status.as_ref()?.pod_ip.as_ref()?.parse().ok()?;
            (p.metadata.name.as_deref() != Some(self.me.as_str()))
                .then(|| SocketAddr::new(ip, self.port))
        });
        let proof = self.key.proof(PATH, SystemTime::now());
        let asks = addrs.map(|a| {
            let proof = proof.clone();
            async move {
                let r = tokio::time::timeout(TIMEOUT, get(a, &proof)).await;
                let r = r.ok().flatten();
                if r.is_none() {
                    tracing::debug!(sibling = %a, "a sibling replica did not answer with its stats");
                }
                r.unwrap_or_default()
            }
        });
        futures::future::join_all(asks).await.concat()
    }
}

/// `GET` [`PATH`] with the proof, over plain HTTP/1.0 (one request per connection).
async fn get(addr: SocketAddr, proof: &str) -> Option<Vec<ReplicaStat>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let req = format!("GET {PATH} HTTP/1.0\r\nHost: {addr}\r\n{HEADER}: {proof}\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    s.take(64 << 20).read_to_end(&mut buf).await.ok()?;
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let status = buf.split(|b| *b == b'\n').next()?;
    if !status.windows(5).any(|w| w == b" 200 ") {
        return None;
    }
    serde_json::from_slice(&buf[split + 4..]).ok()
}

#[cfg(test)]
#[path = "siblings_tests.rs"]
mod tests;
