//! The peer loop, the heart of the gateway: watches the peer Secrets into a reflector store,
//! reconciles them against the WireGuard device with [`crate::core`], configures the device,
//! and (leader only) writes the tunnel-IP and error annotations, the Events and the deletions
//! of expired peers. Which writes go, and when a failed one goes again, is [`writes`] (pure).

pub mod writes;

use crate::core::{self, ActivePeer, Core, DeviceOp, Plan, Problem};
use crate::metrics::Metrics;
use crate::peer_object::{self, PeerObject};
use crate::{Config, GatewayError, kube_io};
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
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;
use writes::{Known, Report, Write, WriteId, WriteOp, Writes};

/// Concurrent API writes (annotations, deletions, Events).
const WRITE_CONCURRENCY: usize = 32;
/// Secrets per page of a (re-)list: bounds the memory a list of large Secrets takes before
/// they are reduced to [`PeerObject`]s (the API server caps an object at about 1.5 MiB).
const LIST_PAGE: u32 = 50;

/// Owns the peer state: watches Secrets into a reflector store, reconciles, applies plans.
pub struct PeerLoop {
    api: Api<Secret>,
    recorder: Recorder,
    namespace: String,
    max_secret_bytes: usize,
    /// The IPv6 tunnel prefix: each peer's AllowedIPs hold its IPv6 tunnel address too.
    tunnel_cidr6: ipnet::Ipv6Net,
    core: Core,
    device: DeviceHandle,
    /// Publishes the active peers (this loop owns them).
    peers: watch::Sender<Arc<Vec<ActivePeer>>>,
    /// Publishes that every peer Secret was listed once.
    listed: watch::Sender<bool>,
    metrics: Metrics,
    /// Every peer Secret; a re-list replaces it whole at `InitDone` (a full resync).
    store: Store<PeerObject>,
    writer: Option<Writer<PeerObject>>,
    synced: bool,
    /// What the leader sent to which Secret.
    writes: Writes,
    names: HashMap<PublicKey, PeerName>,
    permits: Arc<Semaphore>,
    failed_tx: mpsc::UnboundedSender<WriteId>,
    failed_rx: mpsc::UnboundedReceiver<WriteId>,
}

impl PeerLoop {
    pub fn new(
        client: kube::Client,
        cfg: &Config,
        core: Core,
        device: DeviceHandle,
        (peers, listed): (watch::Sender<Arc<Vec<ActivePeer>>>, watch::Sender<bool>),
        metrics: Metrics,
    ) -> PeerLoop {
        let (failed_tx, failed_rx) = mpsc::unbounded_channel();
        let writer = Writer::default();
        PeerLoop {
            api: Api::namespaced(client.clone(), &cfg.kwg_namespace),
            recorder: kube_io::recorder(&client),
            namespace: cfg.kwg_namespace.clone(),
            max_secret_bytes: cfg.max_secret_bytes,
            tunnel_cidr6: cfg.tunnel_cidr6,
            core,
            device,
            peers,
            listed,
            metrics,
            store: writer.as_reader(),
            writer: Some(writer),
            synced: false,
            writes: Writes::new(),
            names: HashMap::new(),
            permits: Arc::new(Semaphore::new(WRITE_CONCURRENCY)),
            failed_tx,
            failed_rx,
        }
    }

    /// Runs until `token` is cancelled or the watch ends.
    pub async fn run(
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
            let mut wake = next_expiry
                .map(|t| t.duration_since(SystemTime::now()).unwrap_or_default())
                .unwrap_or(Duration::from_secs(3600));
            if let Some(at) = self.writes.poll_timeout() {
                wake = wake.min(at.saturating_duration_since(Instant::now()));
            }
            tokio::select! {
                _ = token.cancelled() => return Ok(()),
                ev = stream.next() => {
                    let Some(ev) = ev else { return Ok(()) };
                    self.handle(ev);
                    while let Some(Some(ev)) = stream.next().now_or_never() {
                        self.handle(ev);
                    }
                }
                Some(id) = self.failed_rx.recv() => self.writes.failed(id, Instant::now()),
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
        self.core.set_assigning(leading);
        self.writes.set_leading(leading);
    }

    /// Notes what an event changed; the reflector has already applied it to the store.
    fn handle(&mut self, ev: Result<Event<PeerObject>, watcher::Error>) {
        match ev {
            Ok(Event::Init | Event::InitApply(_)) => {}
            Ok(Event::InitDone) => {
                tracing::info!(secrets = self.store.len(), "peer Secrets listed");
                self.writes.resynced();
                self.synced = true;
                self.listed.send_replace(true);
            }
            Ok(Event::Apply(o) | Event::Delete(o)) => self.writes.observed(&o.secret.secret_name),
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
        let objects = self.store.state();
        let secrets = objects.iter().map(|o| &o.secret);
        let plan = self.core.reconcile(secrets, &running, SystemTime::now());
        self.apply_device(&plan).await;
        self.send(&plan);
        let next = plan.next_expiry.map(SystemTime::from);
        let rejected = objects.len() - plan.active.len() - plan.expired.len();
        self.peers.send_replace(Arc::new(plan.active));
        let m = &self.metrics;
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
                    let ip6 = kwg_contract::tunnel_ip6_of(self.tunnel_cidr6, *ip);
                    pc.allowed_ips = vec![
                        ipnet::IpNet::V4(ipnet::Ipv4Net::from(ip.addr())),
                        ipnet::IpNet::V6(ipnet::Ipv6Net::from(ip6)),
                    ];
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
        self.metrics.peers_added.inc_by(added);
        self.metrics.peers_removed.inc_by(removed);
    }

    /// Sends in the background what [`Writes`] decides for `plan` (nothing while following).
    fn send(&mut self, plan: &Plan) {
        let (store, ns) = (&self.store, &self.namespace);
        let known = |name: &str| {
            store.get(&ObjectRef::new(name).within(ns)).map(|o| Known {
                resource_version: o.resource_version.clone(),
                uid: o.secret.uid.clone(),
            })
        };
        let sends = self.writes.decide(plan, known, Instant::now());
        for r in sends.reports {
            self.report(r);
        }
        for w in sends.writes {
            if w.op == WriteOp::Delete {
                tracing::info!(secret = %w.secret, "lease expired: deleting the peer Secret");
                self.metrics.leases_expired.inc();
            }
            self.write(w);
        }
    }

    fn report(&self, r: Report) {
        tracing::warn!(secret = %r.secret, reason = %r.reason, "peer Secret not served");
        let (recorder, ns, sem) = (
            self.recorder.clone(),
            self.namespace.clone(),
            self.permits.clone(),
        );
        tokio::spawn(async move {
            let _permit = sem.acquire_owned().await;
            if let Err(e) =
                kube_io::problem_event(&recorder, &ns, &r.secret, r.uid, r.problem, &r.reason).await
            {
                tracing::warn!(secret = %r.secret, error = %e, "cannot record an Event");
            }
        });
    }

    /// Sends one write in the background; a failure comes back to [`Writes::failed`].
    fn write(&self, w: Write) {
        let (api, sem, failed) = (
            self.api.clone(),
            self.permits.clone(),
            self.failed_tx.clone(),
        );
        tokio::spawn(async move {
            let _permit = sem.acquire_owned().await;
            let (name, rv) = (&w.secret, w.resource_version);
            let done = match w.op {
                WriteOp::Annotate { ip } => {
                    kube_io::patch_secret_at(&api, name, rv, core::tunnel_ip_patch(ip)).await
                }
                WriteOp::MarkError { reason } => {
                    kube_io::patch_secret(&api, name, &core::error_patch(&reason)).await
                }
                WriteOp::Delete => kube_io::delete_expired(&api, name, rv).await,
            };
            if let Err(e) = done {
                tracing::warn!(secret = %name, error = %e, "write failed; will retry");
                let _ = failed.send(w.id);
            }
        });
    }
}
