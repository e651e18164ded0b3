//! `Config` → [`build`] → [`Gateway::run`]: the build sets up what serving needs (API client,
//! key, a closed firewall, the WireGuard device, the listening sockets) and fails with a clear
//! error before anything serves; the run starts every long-running task, each in a tracing span
//! of its own (`peers`, `discovery`, `reach`, `election`, `tcp`, `udp_receive`, `admin`), and
//! stops them on one drain signal.
//!
//! The drain (SIGTERM): `/readyz` turns false and the Lease is handed over at once; the tunnel
//! keeps serving for `--drain` (while endpoints and load balancers stop sending here), then
//! every task stops and what the gateway added is removed, each step with a deadline.

use crate::admin::{self, AdminState};
use crate::alloc::Allocator;
use crate::core::Core;
use crate::discovery_watch::{self, InfoBase};
use crate::peers::PeerLoop;
use crate::siblings::{ReplicaKey, Siblings};
use crate::{Config, GatewayError, kube_io, net, nft};
use kwg_wg::device::Device;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// A gateway set up and not serving yet.
pub struct Gateway {
    cfg: Config,
    client: kube::Client,
    alloc: Allocator,
    info: InfoBase,
    replica_key: ReplicaKey,
    device: Device,
    tcp: TcpListener,
    admin: TcpListener,
}

/// Sets the gateway up: connects to the API, reads (or creates) the key, loads a closed
/// firewall, starts the device and binds its sockets.
pub async fn build(mut cfg: Config) -> Result<Gateway, GatewayError> {
    let client = kube::Client::try_default()
        .await
        .map_err(GatewayError::kube(
            "connect to the API (in-cluster config or KUBECONFIG)",
        ))?;
    // The tunnel CIDR: the flag, else the one kept with the key (a new install's random one).
    let new_cidr = cfg
        .tunnel_cidr_flag
        .unwrap_or_else(|| crate::config::random_tunnel_cidr(rand::random()));
    let cluster: Vec<ipnet::IpNet> = cfg
        .service_cidr
        .iter()
        .chain(&cfg.pod_cidr)
        .copied()
        .collect();
    let check = |cidr, from: &str, fix: &str| {
        crate::config::check_tunnel_cidr(cidr, from, fix, &cluster).map_err(GatewayError::Config)
    };
    let flag_fix = "start the gateway with a --tunnel-cidr of /8 to /30 inside 10.0.0.0/8, \
                    172.16.0.0/12, 192.168.0.0/16 or 100.64.0.0/10 that overlaps no Service or \
                    pod range";
    if let Some(flag) = cfg.tunnel_cidr_flag {
        check(flag, "--tunnel-cidr (KWG_TUNNEL_CIDR)", flag_fix)?;
    }
    let (key, kept) =
        kube_io::ensure_private_key(&client, &cfg.gateway_namespace, new_cidr).await?;
    cfg.tunnel_cidr = match (cfg.tunnel_cidr_flag, kept) {
        (Some(flag), _) => flag,
        (None, Some(kept)) => {
            let from = format!(
                "the {} field of Secret {}/{}",
                kube_io::TUNNEL_CIDR_FIELD,
                cfg.gateway_namespace,
                kwg_contract::GATEWAY_KEY_SECRET
            );
            check(kept, &from, &format!("correct that field, or {flag_fix}"))?;
            kept
        }
        (None, None) => {
            let legacy = crate::config::legacy_tunnel_cidr();
            check(
                legacy,
                "the default (a key Secret without tunnelCidr)",
                flag_fix,
            )?;
            legacy
        }
    };
    let alloc = Allocator::new(cfg.tunnel_cidr)?;
    let gateway_ip = alloc.gateway_ip();
    let public_key = key.public_key();
    let replica_key = ReplicaKey::derive(&key);
    // Until discovery knows the cluster's CIDRs, the firewall lets peers reach only the
    // gateway's admin port (and the admin's extras): never an open window with forwarding on.
    // With reach by RBAC the reach table exists, empty (nothing reachable), before that.
    if cfg.reach == crate::config::Reach::Rbac {
        net::nft_apply(&nft::render_reach(&cfg.interface, &cfg.allow_cidr))?;
    } else {
        tracing::warn!("--reach=all: every peer reaches every pod and Service, whoever its owner");
    }
    let closed = discovery_watch::policy(&cfg, gateway_ip, &Default::default());
    net::nft_apply(&nft::render(&closed))?;
    net::enable_forwarding()?;
    let device = net::start_device(&cfg, key, gateway_ip).await?;
    let tcp = crate::tcp::bind(cfg.listen_port)?;
    let admin = admin::bind(cfg.admin_addr).await?;
    tracing::info!(interface = %cfg.interface, %gateway_ip, port = cfg.listen_port, key = %public_key.short(), "tunnel up");
    Ok(Gateway {
        cfg,
        client,
        alloc,
        info: InfoBase {
            public_key,
            gateway_ip,
        },
        replica_key,
        device,
        tcp,
        admin,
    })
}

/// `task` spawned in a span named `name`.
fn spawn<F>(name: &'static str, task: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(task.instrument(tracing::info_span!("task", name)))
}

impl Gateway {
    /// Serves until `drain` is cancelled (see the module's documentation) or the peer watch
    /// ends; then stops every task and removes what the gateway added.
    pub async fn run(self, drain: CancellationToken) -> Result<(), GatewayError> {
        let Gateway {
            cfg,
            client,
            alloc,
            info,
            replica_key,
            device,
            tcp,
            admin,
        } = self;
        // `drain` hands the Lease over at once; `stop` ends serving --drain later.
        let stop = CancellationToken::new();
        let (owners, views) = crate::shared::channels();
        let metrics = crate::metrics::Metrics::default();
        let siblings = Siblings::new(
            client.clone(),
            cfg.gateway_namespace.clone(),
            cfg.admin_addr.port(),
            replica_key,
        );
        let state = AdminState::new(
            device.handle(),
            cfg.tunnel_cidr.trunc(),
            views.clone(),
            Some(siblings),
            metrics.clone(),
        );
        let rbac = cfg.reach == crate::config::Reach::Rbac;
        if !rbac {
            let open = crate::policy::view::ReachView::open();
            owners.reach.send_replace(Arc::new(open));
        }
        let admin = spawn(
            "admin",
            admin::serve(admin, state, stop.clone().cancelled_owned()),
        );
        spawn("drain", {
            let (drain, stop, draining, wait) =
                (drain.clone(), stop.clone(), owners.draining, cfg.drain);
            async move {
                tokio::select! {
                    _ = drain.cancelled() => {}
                    _ = stop.cancelled() => return,
                }
                tracing::info!(drain = ?wait, "shutting down: not ready, draining");
                draining.send_replace(true);
                tokio::time::sleep(wait).await;
                stop.cancel();
            }
        });
        let pending = cfg.tcp_pending_per_source as usize;
        let (handle, m) = (device.handle(), metrics.clone());
        spawn(
            "tcp",
            crate::tcp::serve(tcp, handle, pending, m, stop.clone()),
        );
        spawn(
            "udp_receive",
            crate::udp_watch::run(device.handle(), owners.udp_receive, stop.clone()),
        );
        let (leader_tx, leader_rx) = watch::channel(false);
        let elector = crate::election::Elector::new(crate::leader::identity(), Default::default());
        let election = spawn(
            "election",
            crate::leader::run(
                client.clone(),
                cfg.gateway_namespace.clone(),
                elector,
                leader_tx,
                drain.clone(),
            ),
        );
        let discovery = spawn(
            "discovery",
            discovery_watch::run(
                client.clone(),
                cfg.clone(),
                info,
                (views.udp_receive.clone(), owners.tunnel_ready),
                leader_rx.clone(),
                stop.clone(),
            ),
        );
        let reach = rbac.then(|| {
            spawn(
                "reach",
                crate::reach_watch::run(
                    client.clone(),
                    cfg.clone(),
                    (views.peers.clone(), owners.reach),
                    stop.clone(),
                ),
            )
        });
        let core = Core::new(alloc)
            .with_peers_per_owner(cfg.max_peers_per_owner)
            .with_max_lease(cfg.max_lease);
        let published = (owners.peers, owners.watcher_ready);
        let peers = PeerLoop::new(client, &cfg, core, device.handle(), published, metrics);
        let result = peers
            .run(stop.clone(), leader_rx)
            .instrument(tracing::info_span!("task", name = "peers"))
            .await;
        stop.cancel();
        drain.cancel();
        // Bounded teardown: every step gets a deadline, so the pod stops within its grace period.
        let step = Duration::from_secs(2);
        if tokio::time::timeout(step, election).await.is_err() {
            tracing::warn!("the leader Lease was not released in time");
        }
        if tokio::time::timeout(step, discovery).await.is_err() {
            tracing::warn!("discovery did not stop in time");
        }
        if let Some(reach) = reach
            && tokio::time::timeout(step, reach).await.is_err()
        {
            tracing::warn!("reach by RBAC did not stop in time");
        }
        // The device goes before the firewall, so no peer is ever forwarded unfiltered.
        tracing::debug!("stopping the WireGuard device");
        let stopped = tokio::time::timeout(step, device.shutdown()).await;
        if let Err(e) = net::nft_teardown() {
            tracing::warn!(error = %e, "cannot remove the nftables table");
        }
        match stopped {
            Ok(r) => r?,
            Err(_) => tracing::warn!("the WireGuard device did not stop in time; exiting anyway"),
        }
        tracing::debug!("stopping the admin server");
        if tokio::time::timeout(step, admin).await.is_err() {
            tracing::warn!("admin HTTP connections still open; exiting anyway");
        }
        tracing::info!("stopped");
        result
    }
}
