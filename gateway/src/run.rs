//! Ties the pieces together: key, device, discovery, admin server and the peer loop.

use crate::admin::{self, AdminState};
use crate::alloc::Allocator;
use crate::core::{self, Core, DeviceOp, Plan, Problem};
use crate::discovery_watch::{self, InfoBase};
use crate::peer_object::{self, PeerObject};
use crate::{Config, GatewayError, kube_io, net, nft};
use futures::{FutureExt, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use kube::runtime::watcher::{self, Event};
use kwg_contract::PeerName;
use kwg_contract::keys::PublicKey;
use kwg_wg::device::{DeviceHandle, PeerConfig};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Concurrent API writes (annotations, deletions, Events).
const WRITE_CONCURRENCY: usize = 32;
/// Secrets per page of a (re-)list: bounds the memory a list of large Secrets takes before
/// they are reduced to [`PeerObject`]s (the API server caps an object at about 1.5 MiB).
const LIST_PAGE: u32 = 50;

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
    let state = AdminState::new(device.handle(), cfg.tunnel_cidr.trunc());
    if !rbac {
        state.set_reach(admin::ReachView::open());
    }
    let _ = state.siblings.set(crate::siblings::Siblings::new(
        client.clone(),
        cfg.gateway_namespace.clone(),
        cfg.admin_addr.port(),
        replica_key,
    ));
    let admin = admin::serve(
        cfg.admin_addr,
        state.clone(),
        token.clone().cancelled_owned(),
    )
    .await?;
    // SIGTERM: /readyz turns false and the Lease is handed over at once; the tunnel keeps
    // serving for --drain (while endpoints and load balancers stop sending here), then stops.
    tokio::spawn({
        let (token, leading, state, drain) =
            (token.clone(), leading.clone(), state.clone(), cfg.drain);
        async move {
            shutdown.await;
            tracing::info!(drain = ?drain, "shutting down: not ready, draining");
            state
                .draining
                .store(true, std::sync::atomic::Ordering::Relaxed);
            leading.cancel();
            tokio::time::sleep(drain).await;
            token.cancel();
        }
    });
    tokio::spawn(crate::tcp::serve(
        tcp,
        device.handle(),
        cfg.tcp_pending_per_source as usize,
        state.metrics.clone(),
        token.clone(),
    ));
    tokio::spawn(crate::udp_watch::run(state.clone(), token.clone()));
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
        state.clone(),
        leader_rx.clone(),
        token.clone(),
    ));
    let reach = rbac.then(|| {
        tokio::spawn(crate::reach_watch::run(
            client.clone(),
            cfg.clone(),
            state.clone(),
            token.clone(),
        ))
    });
    let core = Core::new(alloc)
        .with_peers_per_owner(cfg.max_peers_per_owner)
        .with_max_lease(cfg.max_lease);
    let result = PeerLoop::new(client, &cfg, core, device.handle(), state)
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

/// Owns the peer state: watches Secrets into a reflector store, reconciles, applies plans.
struct PeerLoop {
    api: Api<Secret>,
    recorder: Recorder,
    namespace: String,
    max_secret_bytes: usize,
    core: Core,
    device: DeviceHandle,
    state: Arc<AdminState>,
    /// Every peer Secret; a re-list replaces it whole at `InitDone` (a full resync).
    store: Store<PeerObject>,
    writer: Option<Writer<PeerObject>>,
    synced: bool,
    /// This replica leads: it writes annotations, Events and deletions.
    leading: bool,
    /// The last write sent per Secret, so a write is not repeated before its watch event.
    sent: HashMap<String, String>,
    names: HashMap<PublicKey, PeerName>,
    writes: Arc<Semaphore>,
    failed_tx: mpsc::UnboundedSender<String>,
    failed_rx: mpsc::UnboundedReceiver<String>,
}

impl PeerLoop {
    fn new(
        client: kube::Client,
        cfg: &Config,
        core: Core,
        device: DeviceHandle,
        state: Arc<AdminState>,
    ) -> PeerLoop {
        let (failed_tx, failed_rx) = mpsc::unbounded_channel();
        let writer = Writer::default();
        PeerLoop {
            api: Api::namespaced(client.clone(), &cfg.kwg_namespace),
            recorder: kube_io::recorder(&client),
            namespace: cfg.kwg_namespace.clone(),
            max_secret_bytes: cfg.max_secret_bytes,
            core,
            device,
            state,
            store: writer.as_reader(),
            writer: Some(writer),
            synced: false,
            leading: false,
            sent: HashMap::new(),
            names: HashMap::new(),
            writes: Arc::new(Semaphore::new(WRITE_CONCURRENCY)),
            failed_tx,
            failed_rx,
        }
    }

    async fn run(
        mut self,
        token: CancellationToken,
        mut leader: watch::Receiver<bool>,
    ) -> Result<(), GatewayError> {
        self.set_leading(*leader.borrow_and_update());
        let wc = watcher::Config::default()
            .labels(kwg_contract::PEER_SELECTOR)
            .page_size(LIST_PAGE);
        let max = self.max_secret_bytes;
        let events = watcher::watcher(self.api.clone(), wc)
            .default_backoff()
            .map_ok(move |ev| peer_object::convert(ev, max));
        let writer = self.writer.take().expect("run once");
        let stream = reflector::reflector(writer, events);
        futures::pin_mut!(stream);
        let mut next_expiry: Option<SystemTime> = None;
        loop {
            let wake = next_expiry
                .map(|t| t.duration_since(SystemTime::now()).unwrap_or_default())
                .unwrap_or(Duration::from_secs(3600));
            tokio::select! {
                _ = token.cancelled() => return Ok(()),
                ev = stream.next() => {
                    let Some(ev) = ev else { return Ok(()) };
                    self.handle(ev);
                    while let Some(Some(ev)) = stream.next().now_or_never() {
                        self.handle(ev);
                    }
                }
                Some(name) = self.failed_rx.recv() => { self.sent.remove(&name); }
                Ok(()) = leader.changed() => {
                    let leading = *leader.borrow_and_update();
                    self.set_leading(leading);
                }
                _ = tokio::time::sleep(wake) => {}
            }
            if self.synced {
                next_expiry = self.reconcile().await;
            }
        }
    }

    fn set_leading(&mut self, leading: bool) {
        self.leading = leading;
        self.core.set_assigning(leading);
        self.sent.clear();
    }

    /// Notes what an event changed; the reflector has already applied it to the store.
    fn handle(&mut self, ev: Result<Event<PeerObject>, watcher::Error>) {
        match ev {
            Ok(Event::Init | Event::InitApply(_)) => {}
            Ok(Event::InitDone) => {
                tracing::info!(secrets = self.store.len(), "peer Secrets listed");
                self.sent.clear();
                self.synced = true;
                self.state.watcher_ready.store(true, Ordering::Relaxed);
            }
            Ok(Event::Apply(o) | Event::Delete(o)) => {
                self.sent.remove(&o.secret.secret_name);
            }
            Err(e) => tracing::warn!(error = %e, "watching peer Secrets failed; retrying"),
        }
    }

    fn object(&self, name: &str) -> Option<Arc<PeerObject>> {
        self.store
            .get(&ObjectRef::new(name).within(&self.namespace))
    }

    async fn reconcile(&mut self) -> Option<SystemTime> {
        let started = Instant::now();
        let running = self
            .device
            .peers()
            .await
            .into_iter()
            .map(|p| (p.public_key, p.allowed_ips))
            .collect();
        let objects = self.store.state();
        let secrets = objects.iter().map(|o| &o.secret);
        let plan = self.core.reconcile(secrets, &running, SystemTime::now());
        self.apply_device(&plan).await;
        if self.leading {
            self.apply_writes(&plan);
        }
        let next = plan.next_expiry.map(SystemTime::from);
        let rejected = objects.len() - plan.active.len() - plan.expired.len();
        self.state.set_peers(plan.active);
        let m = &self.state.metrics;
        m.malformed.set(i64::try_from(rejected).unwrap_or(i64::MAX));
        let reports = plan.malformed.iter().filter(|m| m.first_report);
        m.malformed_reports.inc_by(reports.clone().count() as u64);
        let oversized = reports.filter(|r| r.problem == Problem::TooLarge).count();
        m.oversized_reports.inc_by(oversized as u64);
        m.reconcile.observe(started.elapsed().as_secs_f64());
        next
    }

    async fn apply_device(&mut self, plan: &Plan) {
        let (mut added, mut removed) = (0, 0);
        for op in &plan.device {
            match op {
                DeviceOp::Upsert { name, key, ip, new } => {
                    let _span =
                        tracing::info_span!("peer", peer = %name, key = %key.short()).entered();
                    let mut pc = PeerConfig::new(*key);
                    pc.allowed_ips = vec![ipnet::IpNet::V4(ipnet::Ipv4Net::from(ip.addr()))];
                    match self.device.upsert_peer(pc).await {
                        Ok(()) if *new => {
                            tracing::info!(tunnel_ip = %ip, "peer added");
                            added += 1;
                        }
                        Ok(()) => tracing::info!(tunnel_ip = %ip, "peer updated"),
                        Err(e) => tracing::error!(error = %e, "cannot configure peer"),
                    }
                    self.names.insert(*key, name.clone());
                }
                DeviceOp::Remove { key } => {
                    let name = self
                        .names
                        .remove(key)
                        .map(|n| n.to_string())
                        .unwrap_or_else(|| "?".into());
                    let _span =
                        tracing::info_span!("peer", peer = %name, key = %key.short()).entered();
                    match self.device.remove_peer(key).await {
                        Ok(()) => {
                            tracing::info!("peer removed");
                            removed += 1;
                        }
                        Err(e) => tracing::error!(error = %e, "cannot remove peer"),
                    }
                }
            }
        }
        self.state.metrics.peers_added.inc_by(added);
        self.state.metrics.peers_removed.inc_by(removed);
    }

    fn apply_writes(&mut self, plan: &Plan) {
        for (name, ip) in &plan.annotate {
            let patch = core::tunnel_ip_patch(*ip);
            // At the version read: a Secret changed meanwhile (by a client, or a replica that
            // led a moment ago) gets 409 and is decided again from its watch event.
            let _ = self.write(name, format!("ip:{ip}"), move |api, rv, n| async move {
                kube_io::patch_secret_at(&api, &n, rv, patch).await
            });
        }
        for m in &plan.malformed {
            if m.first_report {
                tracing::warn!(secret = %m.secret_name, reason = %m.reason, "peer Secret not served");
                let (recorder, ns, uid) = (
                    self.recorder.clone(),
                    self.namespace.clone(),
                    self.object(&m.secret_name)
                        .and_then(|o| Some(o.secret.uid.clone()).filter(|u| !u.is_empty())),
                );
                let (secret, problem, reason) =
                    (m.secret_name.clone(), m.problem, m.reason.clone());
                let sem = self.writes.clone();
                tokio::spawn(async move {
                    let _permit = sem.acquire_owned().await;
                    if let Err(e) =
                        kube_io::problem_event(&recorder, &ns, &secret, uid, problem, &reason).await
                    {
                        tracing::warn!(%secret, error = %e, "cannot record an Event");
                    }
                });
            }
            if m.write_annotation {
                let patch = core::error_patch(&m.reason);
                let _ = self.write(
                    &m.secret_name,
                    format!("err:{}", m.reason),
                    move |api, _, n| async move { kube_io::patch_secret(&api, &n, &patch).await },
                );
            }
        }
        for name in &plan.expired {
            let rv = self.resource_version(name);
            let sent = self.write(
                name,
                format!("delete:{rv:?}"),
                move |api, rv, n| async move { kube_io::delete_expired(&api, &n, rv).await },
            );
            if sent {
                tracing::info!(secret = %name, "lease expired: deleting the peer Secret");
                self.state.metrics.leases_expired.inc();
            }
        }
    }

    fn resource_version(&self, name: &str) -> Option<String> {
        self.object(name).and_then(|o| o.resource_version.clone())
    }

    /// Sends one write in the background unless the same write is already under way;
    /// whether it sent it.
    fn write<F, Fut>(&mut self, name: &str, signature: String, op: F) -> bool
    where
        F: FnOnce(Api<Secret>, Option<String>, String) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), GatewayError>> + Send,
    {
        if self.sent.get(name) == Some(&signature) {
            return false;
        }
        self.sent.insert(name.to_owned(), signature);
        let (api, sem, failed, n) = (
            self.api.clone(),
            self.writes.clone(),
            self.failed_tx.clone(),
            name.to_owned(),
        );
        let rv = self.resource_version(name);
        tokio::spawn(async move {
            let _permit = sem.acquire_owned().await;
            if let Err(e) = op(api, rv, n.clone()).await {
                tracing::warn!(secret = %n, error = %e, "write failed; will retry");
                let _ = failed.send(n);
            }
        });
        true
    }
}
