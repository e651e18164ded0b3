//! The admin HTTP server: `/healthz`, `/readyz`, `/metrics`, `/peers`.

use crate::GatewayError;
use crate::core::ActivePeer;
use crate::metrics::{self, Counters};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use kwg_wg::contract::GatewayPeer;
use kwg_wg::device::{DeviceHandle, PeerStats};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

/// What the admin server shows; written by the reconcile loop, read by handlers.
pub struct AdminState {
    pub device: DeviceHandle,
    /// Device, address and nftables are set up.
    pub tunnel_ready: AtomicBool,
    /// The watcher has listed every peer Secret once.
    pub watcher_ready: AtomicBool,
    pub peers: RwLock<Arc<Vec<ActivePeer>>>,
    pub counters: Mutex<Counters>,
}

impl AdminState {
    pub fn new(device: DeviceHandle) -> Arc<AdminState> {
        Arc::new(AdminState {
            device,
            tunnel_ready: AtomicBool::new(false),
            watcher_ready: AtomicBool::new(false),
            peers: RwLock::new(Arc::new(Vec::new())),
            counters: Mutex::new(Counters::default()),
        })
    }

    pub fn ready(&self) -> bool {
        self.tunnel_ready.load(Ordering::Relaxed) && self.watcher_ready.load(Ordering::Relaxed)
    }

    pub fn set_peers(&self, peers: Vec<ActivePeer>) {
        *self.peers.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(peers);
    }

    fn peers(&self) -> Arc<Vec<ActivePeer>> {
        self.peers.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn counters(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.counters.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The router (also used by tests).
pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_handler))
        .route("/peers", get(peers_handler))
        .with_state(state)
}

/// Binds the address and serves until `shutdown` completes.
pub async fn serve(
    addr: SocketAddr,
    state: Arc<AdminState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<tokio::task::JoinHandle<()>, GatewayError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| GatewayError::Admin { addr, source })?;
    tracing::info!(%addr, "admin HTTP server listening");
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router(state))
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "admin HTTP server failed");
        }
    }))
}

async fn readyz(State(s): State<Arc<AdminState>>) -> Response {
    let tunnel = s.tunnel_ready.load(Ordering::Relaxed);
    let watcher = s.watcher_ready.load(Ordering::Relaxed);
    let body = format!("tunnel: {}\nwatcher: {}\n", word(tunnel), word(watcher));
    let code = if tunnel && watcher {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, body).into_response()
}

fn word(ok: bool) -> &'static str {
    if ok { "running" } else { "not running" }
}

async fn metrics_handler(State(s): State<Arc<AdminState>>) -> Response {
    let stats = s.device.peers().await;
    let counters = s.counters().clone();
    let text = metrics::render(&counters, &s.peers(), &stats, SystemTime::now());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn peers_handler(State(s): State<Arc<AdminState>>) -> Response {
    let stats = s.device.peers().await;
    axum::Json(gateway_peers(&s.peers(), &stats)).into_response()
}

/// Joins the active peers with the device's statistics (the `/peers` JSON).
pub fn gateway_peers(peers: &[ActivePeer], stats: &[PeerStats]) -> Vec<GatewayPeer> {
    let by_key: HashMap<_, _> = stats.iter().map(|s| (s.public_key, s)).collect();
    peers
        .iter()
        .map(|p| {
            let st = by_key.get(&p.spec.public_key);
            GatewayPeer {
                name: p.spec.name.clone(),
                public_key: p.spec.public_key,
                tunnel_ip: Some(p.ip),
                owner: p.spec.owner.clone(),
                hostname: p.spec.hostname.clone(),
                namespaces: p.spec.namespaces.clone(),
                lease_expires: p.spec.lease_expires,
                endpoint: st.and_then(|s| s.endpoint),
                last_handshake: st.and_then(|s| s.last_handshake).map(Into::into),
                rx_bytes: st.map_or(0, |s| s.rx_bytes),
                tx_bytes: st.map_or(0, |s| s.tx_bytes),
            }
        })
        .collect()
}
