//! The admin HTTP server: `/healthz` and `/readyz` for everyone (the kubelet's probes);
//! `/metrics` and `/peers` only through the tunnel or from the gateway pod itself.
//!
//! A caller is told apart by its connection: from loopback it runs in the gateway pod (an
//! admin with `kubectl exec`, but also any kwg user's `kubectl port-forward`, which the
//! kubelet dials to localhost inside the pod); from a tunnel address to the gateway's tunnel address it is
//! a peer (WireGuard only lets a peer send from its own address, and an answer to a forged
//! tunnel source goes into the tunnel, so a pod cannot complete a TCP handshake as one).
//! A peer sees its own entry in full and only names, addresses and handshake times of others;
//! a loopback caller sees every peer that way (port-forward makes loopback a kwg user), so
//! public endpoints and hostnames are shown to nobody but their own peer.
//! With several replicas, statistics come from the replica holding each session (see
//! [`crate::siblings`]; `/replica/stats` answers only a caller holding the gateway's key).
//! Who is asking and what each caller sees is [`peers`] (pure).

pub mod peers;

use crate::GatewayError;
use crate::cache::Cached;
use crate::core::ActivePeer;
use crate::metrics::{self, Metrics};
use crate::policy::view::Counted;
use crate::shared::Views;
use crate::siblings::{self, ReplicaStat, Siblings};
use axum::Router;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ipnet::Ipv4Net;
use kwg_contract::GatewayPeer;
use kwg_wg::device::{DeviceHandle, PeerStats};
pub use peers::{Caller, Conn, gateway_peers, own_peers};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use tokio::net::TcpListener;

/// What the admin server shows. It writes none of it: the values come from the tasks that own
/// them ([`crate::shared`]), the metrics are counters the tasks increment.
pub struct AdminState {
    pub device: DeviceHandle,
    /// Peers' addresses: callers from here (to the gateway's address in it) are peers.
    pub tunnel_cidr: Ipv4Net,
    pub views: Views,
    /// The sibling replicas whose statistics `/peers` and `/metrics` merge (`None`: none).
    pub siblings: Option<Siblings>,
    pub metrics: Metrics,
    /// The siblings' statistics and this replica's nftables drops, shared by the requests
    /// of a second (a peer looping `/peers` would otherwise list pods and run `nft` each time).
    sibling_stats: Cached<Vec<ReplicaStat>>,
    drops: Cached<Vec<(Ipv4Addr, u64)>>,
    /// The destination this replica's nftables last refused per peer address.
    refused: Cached<Vec<(Ipv4Addr, Ipv4Addr)>>,
}

impl AdminState {
    pub fn new(
        device: DeviceHandle,
        tunnel_cidr: Ipv4Net,
        views: Views,
        siblings: Option<Siblings>,
        metrics: Metrics,
    ) -> Arc<AdminState> {
        Arc::new(AdminState {
            device,
            tunnel_cidr,
            views,
            siblings,
            metrics,
            sibling_stats: Cached::default(),
            drops: Cached::default(),
            refused: Cached::default(),
        })
    }

    pub fn peers(&self) -> Arc<Vec<ActivePeer>> {
        self.views.peers()
    }

    /// This replica's device statistics and those of the siblings that answered.
    pub async fn replica_stats(&self) -> (Vec<PeerStats>, Vec<ReplicaStat>) {
        let local = self.device.peers().await;
        match &self.siblings {
            Some(sib) => {
                let sibs = self.sibling_stats.get(Instant::now(), || sib.stats());
                (local, sibs.await)
            }
            None => (local, Vec::new()),
        }
    }
}

/// The router (also used by tests); serve it with connect info of type [`Conn`].
pub fn router(state: Arc<AdminState>) -> Router {
    let private = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/peers", get(peers_handler))
        .route(OWN_PATH, get(own_peer_handler))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            tunnel_or_local,
        ));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route(siblings::PATH, get(replica_stats))
        .merge(private)
        .with_state(state)
}

/// Binds the admin address (before anything serves: a taken port fails the start). `[::]`
/// takes IPv4 connections too (IPV6_V6ONLY off, whatever `net.ipv6.bindv6only` says: the
/// kubelet probes over IPv4); where the pod has no IPv6 (the address family unsupported or
/// unavailable) it is `0.0.0.0`. The address logged is the one bound.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, GatewayError> {
    // EAFNOSUPPORT (97 on Linux): IPv6 disabled in the kernel; EADDRNOTAVAIL: in the pod.
    let no_ipv6 = |e: &std::io::Error| {
        e.kind() == std::io::ErrorKind::AddrNotAvailable || e.raw_os_error() == Some(97)
    };
    let listener = match listen(addr) {
        Err(e) if addr.ip() == std::net::Ipv6Addr::UNSPECIFIED && no_ipv6(&e) => listen(
            SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, addr.port())),
        ),
        r => r,
    }
    .map_err(|source| GatewayError::Admin { addr, source })?;
    let bound = listener.local_addr().unwrap_or(addr);
    tracing::info!(addr = %bound, "admin HTTP server listening");
    Ok(listener)
}

/// A listening TCP socket on `addr`, as [`TcpListener::bind`] makes it (SO_REUSEADDR), and
/// on `[::]` dual-stack explicitly.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.ip() == std::net::Ipv6Addr::UNSPECIFIED {
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// Serves on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let app = router(state).into_make_service_with_connect_info::<Conn>();
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, "admin HTTP server failed");
    }
}

/// The refusal a caller outside the tunnel and the pod gets.
pub const REFUSED: &str = "forbidden: /metrics and /peers answer only through the kwg tunnel (http://<gatewayIp>:8080 after `kwg join`) or inside the gateway pod (kubectl exec ... curl http://127.0.0.1:8080/metrics)\n";

async fn tunnel_or_local(
    State(s): State<Arc<AdminState>>,
    ConnectInfo(conn): ConnectInfo<Conn>,
    req: Request,
    next: Next,
) -> Response {
    match Caller::of(conn, s.tunnel_cidr) {
        Caller::Other => {
            tracing::debug!(remote = %conn.remote, path = %req.uri().path(), "admin request refused");
            (StatusCode::FORBIDDEN, REFUSED).into_response()
        }
        _ => next.run(req).await,
    }
}

/// This replica's own statistics, only for a sibling replica that proves it holds the key,
/// once per proof made for this replica (not even from loopback: a kwg user's port-forward
/// to the pod arrives there).
async fn replica_stats(State(s): State<Arc<AdminState>>, headers: HeaderMap) -> Response {
    let proof = headers.get(siblings::HEADER).and_then(|v| v.to_str().ok());
    let proven = match (&s.siblings, proof) {
        (Some(sib), Some(p)) => sib.admit(p, SystemTime::now()),
        _ => Err(siblings::ProofRefused::Malformed),
    };
    if let Err(why) = proven {
        tracing::debug!(reason = %why, "replica stats refused");
        return (StatusCode::FORBIDDEN, REFUSED).into_response();
    }
    let local = s.device.peers().await;
    let drops = s.nft_drops().await;
    axum::Json(siblings::own_stats(&local, &s.peers(), &drops)).into_response()
}

impl AdminState {
    /// The drops this replica's nftables counted per peer address (as of the last second).
    async fn nft_drops(&self) -> Vec<(Ipv4Addr, u64)> {
        let run = || async {
            tokio::task::spawn_blocking(crate::net::nft_drops)
                .await
                .unwrap_or_default()
        };
        self.drops.get(Instant::now(), run).await
    }
}

async fn readyz(State(s): State<Arc<AdminState>>) -> Response {
    let (tunnel, watcher, draining) = s.views.readiness();
    let mut body = format!("tunnel: {}\nwatcher: {}\n", word(tunnel), word(watcher));
    if draining {
        body.push_str("shutting down: draining\n");
    }
    let code = if s.views.ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, body).into_response()
}

fn word(ok: bool) -> &'static str {
    if ok { "running" } else { "not running" }
}

/// Handshakes and traffic from the replica holding each session; drops only this replica's
/// (every replica exports its own counter: summed over replicas it would be counted twice).
async fn metrics_handler(State(s): State<Arc<AdminState>>) -> Response {
    let (local, sibs) = s.replica_stats().await;
    let stats = siblings::merge(&local, &sibs);
    let drops = s.nft_drops().await;
    let udp = metrics::UdpReceiveStats {
        io: s.device.io_stats(),
        verdict: s.views.udp_receive(),
    };
    let text = metrics::render(
        &s.metrics,
        &s.peers(),
        &stats,
        &drops,
        &udp,
        SystemTime::now(),
    );
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response()
}

async fn peers_handler(
    State(s): State<Arc<AdminState>>,
    ConnectInfo(conn): ConnectInfo<Conn>,
) -> Response {
    let caller = Caller::of(conn, s.tunnel_cidr);
    axum::Json(s.entries(&s.peers(), caller).await).into_response()
}

/// `/peers/self`: the asking peer's own entry alone, so that a joined laptop following its
/// reach every few seconds carries one entry, not every peer's (O(peers²) bytes a second
/// across a thousand laptops).
pub const OWN_PATH: &str = "/peers/self";

/// The answer of [`OWN_PATH`] to a caller that is not a peer through the tunnel.
pub const NOT_A_PEER: &str = "not found: /peers/self answers only a peer through the kwg tunnel, by the tunnel address it asks from (GET /peers lists every peer)\n";

/// The peer is told by the connection's source address in the tunnel (WireGuard lets a peer
/// send only from its own address), never by anything the request names.
async fn own_peer_handler(
    State(s): State<Arc<AdminState>>,
    ConnectInfo(conn): ConnectInfo<Conn>,
) -> Response {
    let caller = Caller::of(conn, s.tunnel_cidr);
    let Some(own) = own_peers(&s.peers(), caller) else {
        return (StatusCode::NOT_FOUND, NOT_A_PEER).into_response();
    };
    match s.entries(&own, caller).await.pop() {
        Some(entry) => axum::Json(entry).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            format!(
                "not found: no active peer has the tunnel address {}\n",
                conn.remote.ip()
            ),
        )
            .into_response(),
    }
}

impl AdminState {
    /// The `/peers` entries of `peers` as `caller` may see them.
    async fn entries(&self, peers: &[ActivePeer], caller: Caller) -> Vec<GatewayPeer> {
        let s = self;
        let (local, sibs) = s.replica_stats().await;
        let stats = siblings::merge(&local, &sibs);
        // A peer's drops on every replica that answered: its packets may have met any of them.
        let drops = siblings::total_drops(peers, &s.nft_drops().await, &sibs);
        let refused = s
            .refused
            .get(Instant::now(), || async {
                tokio::task::spawn_blocking(crate::net::nft_last_refused)
                    .await
                    .unwrap_or_default()
            })
            .await;
        let counted = Counted {
            drops: &drops,
            refused: &refused,
        };
        gateway_peers(peers, &stats, (&s.views.reach(), counted), caller)
    }
}

#[cfg(test)]
mod tests;
