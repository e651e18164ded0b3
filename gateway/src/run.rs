//! Ties the pieces together: key, device, discovery, admin server and the peer loop
//! ([`crate::peers`]).

use crate::admin::{self, AdminState};
use crate::alloc::Allocator;
use crate::core::Core;
use crate::discovery_watch::{self, InfoBase};
use crate::peers::PeerLoop;
use crate::{Config, GatewayError, kube_io, net, nft};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Runs the gateway until `shutdown` completes, then removes what it added.
pub async fn run(
    cfg: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), GatewayError> {
    let client = kube::Client::try_default()
        .await
        .map_err(GatewayError::kube(
            "connect to the API (in-cluster config or KUBECONFIG)",
        ))?;
    let alloc = Allocator::new(cfg.tunnel_cidr)?;
    let gateway_ip = alloc.gateway_ip();
    let key = kube_io::ensure_private_key(&client, &cfg.gateway_namespace).await?;
    let public_key = key.public_key();
    let replica_key = crate::siblings::ReplicaKey::derive(&key);
    // Until discovery knows the cluster's CIDRs, the firewall lets peers reach only the
    // gateway's admin port (and the admin's extras): never an open window with forwarding on.
    // With reach by RBAC the reach table exists, empty (nothing reachable), before that.
    let rbac = cfg.reach == crate::config::Reach::Rbac;
    if rbac {
        net::nft_apply(&nft::render_reach(&cfg.interface, &cfg.allow_cidr))?;
    } else {
        tracing::warn!("--reach=all: every peer reaches every pod and Service, whoever its owner");
    }
    let closed = discovery_watch::policy(&cfg, gateway_ip, &Default::default());
    net::nft_apply(&nft::render(&closed))?;
    net::enable_forwarding()?;
    let device = net::start_device(&cfg, key, gateway_ip).await?;
    let tcp = crate::tcp::bind(cfg.listen_port)?;
    tracing::info!(interface = %cfg.interface, %gateway_ip, port = cfg.listen_port, key = %public_key.short(), "tunnel up");

    let token = CancellationToken::new();
    let leading = CancellationToken::new();
    let (owners, views) = crate::shared::channels();
    let metrics = crate::metrics::Metrics::default();
    let siblings = crate::siblings::Siblings::new(
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
    if !rbac {
        let open = crate::policy::view::ReachView::open();
        owners.reach.send_replace(std::sync::Arc::new(open));
    }
    let admin = admin::serve(
        cfg.admin_addr,
        state.clone(),
        token.clone().cancelled_owned(),
    )
    .await?;
    // SIGTERM: /readyz turns false and the Lease is handed over at once; the tunnel keeps
    // serving for --drain (while endpoints and load balancers stop sending here), then stops.
    tokio::spawn({
        let (token, leading, draining, drain) =
            (token.clone(), leading.clone(), owners.draining, cfg.drain);
        async move {
            shutdown.await;
            tracing::info!(drain = ?drain, "shutting down: not ready, draining");
            draining.send_replace(true);
            leading.cancel();
            tokio::time::sleep(drain).await;
            token.cancel();
        }
    });
    tokio::spawn(crate::tcp::serve(
        tcp,
        device.handle(),
        cfg.tcp_pending_per_source as usize,
        metrics.clone(),
        token.clone(),
    ));
    tokio::spawn(crate::udp_watch::run(
        device.handle(),
        owners.udp_receive,
        token.clone(),
    ));
    let (leader_tx, leader_rx) = watch::channel(false);
    let election = tokio::spawn(crate::leader::run(
        client.clone(),
        cfg.gateway_namespace.clone(),
        crate::election::Elector::new(crate::leader::identity(), Default::default()),
        leader_tx,
        leading.clone(),
    ));
    let info = InfoBase {
        public_key,
        gateway_ip,
    };
    let discovery = tokio::spawn(discovery_watch::run(
        client.clone(),
        cfg.clone(),
        info,
        (views.udp_receive.clone(), owners.tunnel_ready),
        leader_rx.clone(),
        token.clone(),
    ));
    let reach = rbac.then(|| {
        tokio::spawn(crate::reach_watch::run(
            client.clone(),
            cfg.clone(),
            (views.peers.clone(), owners.reach),
            token.clone(),
        ))
    });
    let core = Core::new(alloc)
        .with_peers_per_owner(cfg.max_peers_per_owner)
        .with_max_lease(cfg.max_lease);
    let published = (owners.peers, owners.watcher_ready);
    let result = PeerLoop::new(client, &cfg, core, device.handle(), published, metrics)
        .run(token.clone(), leader_rx)
        .await;
    token.cancel();
    leading.cancel();
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
