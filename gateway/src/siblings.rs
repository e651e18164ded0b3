//! Several replicas, one view: each replica holds the sessions of the peers whose packets the
//! Service sends it, so `/peers` and `/metrics` ask the sibling replicas for their device
//! statistics and take each peer's handshake time and traffic from the replica that holds its
//! session (the latest handshake).
//!
//! A replica serves its statistics on `GET /replica/stats` of the admin port only to callers
//! that prove they hold the gateway's private key, with a proof made for this replica and
//! accepted once ([`proof`]). Without it the path answers 403 like `/metrics` and `/peers`.
//!
//! Drops by reach by RBAC are counted by each replica's own nftables: a peer's own `/peers`
//! entry (and so `kwg status`) shows the sum over the replicas that answer ([`total_drops`]),
//! while `/metrics` exports only this replica's counter (Prometheus scrapes every replica and
//! sums; a merged counter there would be counted once per replica).

mod proof;

pub use proof::{HEADER, Nonce, ProofRefused, Proven, ReplicaKey, SKEW, Seen};

use crate::core::ActivePeer;
use kwg_contract::GATEWAY_POD_SELECTOR;
use kwg_contract::keys::PublicKey;
use kwg_wg::device::PeerStats;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The admin path a replica serves its own device statistics on.
pub const PATH: &str = "/replica/stats";
/// How long a sibling may take to answer before its statistics are left out.
pub const TIMEOUT: Duration = Duration::from_millis(700);

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
    /// This replica's pod name (left out; what siblings' proofs must name).
    pub me: String,
    pub port: u16,
    pub key: ReplicaKey,
    /// The siblings' proofs this replica accepted lately.
    pub seen: Arc<Mutex<Seen>>,
}

impl Siblings {
    /// This replica (its pod name from [`crate::leader::identity`]), started now: it accepts
    /// no proof made before.
    pub fn new(client: kube::Client, namespace: String, port: u16, key: ReplicaKey) -> Siblings {
        Siblings {
            client,
            namespace,
            me: crate::leader::identity(),
            port,
            key,
            seen: Arc::new(Mutex::new(Seen::new(SystemTime::now()))),
        }
    }

    /// Whether `header` proves a sibling asking this replica for [`PATH`] at `now`; a proof
    /// is accepted once.
    pub fn admit(&self, header: &str, now: SystemTime) -> Result<(), ProofRefused> {
        let proven = self.key.verify(header, &self.me, PATH, now)?;
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.admit(proven, now)
    }

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
        let now = SystemTime::now();
        let asks = pods.iter().filter_map(|p| {
            let ip = p.status.as_ref()?.pod_ip.as_ref()?.parse().ok()?;
            let name = p.metadata.name.as_deref().filter(|n| *n != self.me)?;
            let a = SocketAddr::new(ip, self.port);
            // Made for this sibling only: it accepts no proof naming another pod.
            let proof = self.key.proof(name, PATH, Nonce::random(), now);
            Some(async move {
                let r = tokio::time::timeout(TIMEOUT, get(a, &proof)).await;
                let r = r.ok().flatten();
                if r.is_none() {
                    tracing::debug!(sibling = %a, "a sibling replica did not answer with its stats");
                }
                r.unwrap_or_default()
            })
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
mod tests;
