//! Ties the pieces together: key, device, discovery, admin server and the peer loop.

use crate::admin::{self, AdminState};
use crate::alloc::Allocator;
use crate::core::{self, Core, DeviceOp, PeerSecret, Plan};
use crate::discovery_watch::{self, InfoBase};
use crate::{Config, GatewayError, kube_io, net, nft};
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kwg_wg::contract::{self, PeerName};
use kwg_wg::device::{DeviceHandle, PeerConfig};
use kwg_wg::keys::PublicKey;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

/// Concurrent API writes (annotations, deletions, Events).
const WRITE_CONCURRENCY: usize = 32;

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
    let key = kube_io::ensure_private_key(&client, &cfg.key_namespace).await?;
    let public_key = key.public_key();
    // Until discovery knows the cluster's CIDRs, the firewall lets peers reach only the
    // gateway's admin port (and the admin's extras): never an open window with forwarding on.
    let closed = discovery_watch::policy(&cfg, gateway_ip, &Default::default());
    net::nft_apply(&nft::render(&closed))?;
    net::enable_forwarding()?;
    let device = net::start_device(&cfg, key, gateway_ip).await?;
    tracing::info!(interface = %cfg.interface, %gateway_ip, port = cfg.listen_port, key = %public_key.short(), "tunnel up");

    let token = CancellationToken::new();
    let state = AdminState::new(device.handle());
    let admin = admin::serve(
        cfg.admin_addr,
        state.clone(),
        token.clone().cancelled_owned(),
    )
    .await?;
    tokio::spawn({
        let token = token.clone();
        async move {
            shutdown.await;
            tracing::info!("shutting down");
            token.cancel();
        }
    });
    let info = InfoBase {
        public_key,
        gateway_ip,
    };
    let discovery = tokio::spawn(discovery_watch::run(
        client.clone(),
        cfg.clone(),
        info,
        state.clone(),
        token.clone(),
    ));
    let result = PeerLoop::new(client, &cfg, Core::new(alloc), device.handle(), state)
        .run(token.clone())
        .await;
    token.cancel();
    // Bounded teardown: every step gets a deadline, so the pod stops within its grace period.
    let step = Duration::from_secs(2);
    if tokio::time::timeout(step, discovery).await.is_err() {
        tracing::warn!("discovery did not stop in time");
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

/// Object metadata the writes need.
#[derive(Debug, Clone, Default)]
struct Meta {
    uid: Option<String>,
    resource_version: Option<String>,
}

/// Owns the peer state: watches Secrets, reconciles, applies plans.
struct PeerLoop {
    client: kube::Client,
    api: Api<Secret>,
    namespace: String,
    core: Core,
    device: DeviceHandle,
    state: Arc<AdminState>,
    store: BTreeMap<String, PeerSecret>,
    meta: HashMap<String, Meta>,
    /// Secrets of a re-list in progress (a full resync replaces the store at `InitDone`).
    relist: Option<(BTreeMap<String, PeerSecret>, HashMap<String, Meta>)>,
    synced: bool,
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
        PeerLoop {
            api: Api::namespaced(client.clone(), &cfg.kwg_namespace),
            client,
            namespace: cfg.kwg_namespace.clone(),
            core,
            device,
            state,
            store: BTreeMap::new(),
            meta: HashMap::new(),
            relist: None,
            synced: false,
            sent: HashMap::new(),
            names: HashMap::new(),
            writes: Arc::new(Semaphore::new(WRITE_CONCURRENCY)),
            failed_tx,
            failed_rx,
        }
    }

    async fn run(mut self, token: CancellationToken) -> Result<(), GatewayError> {
        let wc = watcher::Config::default().labels(contract::PEER_SELECTOR);
        let stream = watcher::watcher(self.api.clone(), wc).default_backoff();
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
                _ = tokio::time::sleep(wake) => {}
            }
            if self.synced {
                next_expiry = self.reconcile().await;
            }
        }
    }

    fn handle(&mut self, ev: Result<Event<Secret>, watcher::Error>) {
        match ev {
            Ok(Event::Init) => self.relist = Some(Default::default()),
            Ok(Event::InitApply(s)) => {
                if let Some((store, meta)) = self.relist.as_mut() {
                    insert(store, meta, &s);
                }
            }
            Ok(Event::InitDone) => {
                if let Some((store, meta)) = self.relist.take() {
                    tracing::info!(secrets = store.len(), "peer Secrets listed");
                    self.store = store;
                    self.meta = meta;
                    self.sent.clear();
                }
                self.synced = true;
                self.state.watcher_ready.store(true, Ordering::Relaxed);
            }
            Ok(Event::Apply(s)) => {
                if let Some(name) = insert(&mut self.store, &mut self.meta, &s) {
                    self.sent.remove(&name);
                }
            }
            Ok(Event::Delete(s)) => {
                let name = s.metadata.name.unwrap_or_default();
                self.store.remove(&name);
                self.meta.remove(&name);
                self.sent.remove(&name);
            }
            Err(e) => tracing::warn!(error = %e, "watching peer Secrets failed; retrying"),
        }
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
        let plan = self
            .core
            .reconcile(&self.store, &running, SystemTime::now());
        self.apply_device(&plan).await;
        self.apply_writes(&plan);
        let next = plan.next_expiry.map(SystemTime::from);
        let malformed = self.store.len() - plan.active.len() - plan.expired.len();
        self.state.set_peers(plan.active);
        let mut c = self.state.counters();
        c.malformed = malformed;
        c.malformed_total += plan.malformed.iter().filter(|m| m.first_report).count() as u64;
        c.reconcile.observe(started.elapsed());
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
        let mut c = self.state.counters();
        c.peers_added_total += added;
        c.peers_removed_total += removed;
    }

    fn apply_writes(&mut self, plan: &Plan) {
        for (name, ip) in &plan.annotate {
            let patch = core::tunnel_ip_patch(*ip);
            let _ = self.write(name, format!("ip:{ip}"), move |api, _, n| async move {
                kube_io::patch_secret(&api, &n, &patch).await
            });
        }
        for m in &plan.malformed {
            if m.first_report {
                tracing::warn!(secret = %m.secret_name, reason = %m.reason, "malformed peer Secret skipped");
                let (client, ns, uid) = (
                    self.client.clone(),
                    self.namespace.clone(),
                    self.meta.get(&m.secret_name).and_then(|x| x.uid.clone()),
                );
                let (secret, reason) = (m.secret_name.clone(), m.reason.clone());
                let sem = self.writes.clone();
                tokio::spawn(async move {
                    let _permit = sem.acquire_owned().await;
                    if let Err(e) =
                        kube_io::malformed_event(&client, &ns, &secret, uid, &reason).await
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
            let rv = self.meta.get(name).and_then(|m| m.resource_version.clone());
            let sent = self.write(
                name,
                format!("delete:{rv:?}"),
                move |api, rv, n| async move { kube_io::delete_expired(&api, &n, rv).await },
            );
            if sent {
                tracing::info!(secret = %name, "lease expired: deleting the peer Secret");
                self.state.counters().expired_total += 1;
            }
        }
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
        let rv = self.meta.get(name).and_then(|m| m.resource_version.clone());
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

/// Parses a Secret into the store; returns its name.
fn insert(
    store: &mut BTreeMap<String, PeerSecret>,
    meta: &mut HashMap<String, Meta>,
    s: &Secret,
) -> Option<String> {
    let name = s.metadata.name.clone()?;
    let data: BTreeMap<String, Vec<u8>> = s
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    let annotations = s.metadata.annotations.clone().unwrap_or_default();
    store.insert(name.clone(), PeerSecret::parse(&name, &data, &annotations));
    meta.insert(
        name.clone(),
        Meta {
            uid: s.metadata.uid.clone(),
            resource_version: s.metadata.resource_version.clone(),
        },
    );
    Some(name)
}
