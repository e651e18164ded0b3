//! The cluster DNS server: answers from the Kubernetes API like CoreDNS's kubernetes plugin
//! and forwards every other name to the upstream (LAN) resolver.
//!
//! Needs get/list/watch on `services` and `discovery.k8s.io` `endpointslices`, cluster-wide.

pub mod answer;
pub mod index;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use futures::{StreamExt, stream};
use hickory_proto::rr::{Name, RecordType};
use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use kube::{
    Api,
    runtime::{WatchStreamExt, watcher},
};
use tokio::{
    net::{TcpListener, UdpSocket},
    sync::watch,
};
use tracing::{info, warn};

use self::index::Index;
use super::{Error, Resolution, ZoneApex, server, zone_name};

/// How long to hold queries back while the first lists arrive, like CoreDNS's startup wait;
/// after that the server answers from whatever it has.
const INITIAL_SYNC_WAIT: Duration = Duration::from_secs(5);

pub struct ClusterDnsConfig {
    /// The cluster domain, e.g. `cluster.local`.
    pub domain: String,
    /// Where names outside the cluster domain go, e.g. the LAN resolver `192.0.2.53:53`.
    pub upstream: SocketAddr,
}

/// Answers from the Kubernetes API like CoreDNS's kubernetes plugin; follows changes. Runs
/// until the sockets fail (watch errors are logged and retried with backoff).
pub async fn serve(
    client: kube::Client,
    udp: UdpSocket,
    tcp: TcpListener,
    cfg: ClusterDnsConfig,
) -> Result<(), Error> {
    let apex = ZoneApex::new(zone_name("cluster domain", &cfg.domain)?, answer::TTL);
    let (tx, mut rx) = watch::channel(Arc::new(Index::default()));
    let zone = ClusterZone {
        apex,
        index: rx.clone(),
    };
    let watching = follow(client, tx);
    tokio::pin!(watching);
    let synced = tokio::time::timeout(INITIAL_SYNC_WAIT, rx.wait_for(|index| index.synced()));
    tokio::select! {
        never = &mut watching => match never {},
        waited = synced => if waited.is_err() {
            warn!("cluster DNS starts before the Services and EndpointSlices are listed; check that the API is reachable and the client may list them");
        },
    }
    info!(domain = %cfg.domain, upstream = %cfg.upstream, "cluster DNS serving");
    tokio::select! {
        never = watching => match never {},
        done = server::run(zone, Some(cfg.upstream), udp, tcp) => done,
    }
}

/// The zone as the server sees it: the latest published index.
struct ClusterZone {
    apex: ZoneApex,
    index: watch::Receiver<Arc<Index>>,
}

impl server::Zone for ClusterZone {
    fn resolve(&self, name: &Name, qtype: RecordType) -> Resolution {
        let index = Arc::clone(&self.index.borrow());
        answer::resolve(&index, &self.apex, name, qtype)
    }
}

enum Change {
    Service(Box<watcher::Event<Service>>),
    Slice(Box<watcher::Event<EndpointSlice>>),
}

/// Owns the index: applies every watch event and publishes a snapshot. Never returns.
async fn follow(client: kube::Client, tx: watch::Sender<Arc<Index>>) -> std::convert::Infallible {
    let services = watcher(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .map(|event| event.map(|e| Change::Service(Box::new(e))));
    let slices = watcher(
        Api::<EndpointSlice>::all(client),
        watcher::Config::default(),
    )
    .default_backoff()
    .map(|event| event.map(|e| Change::Slice(Box::new(e))));
    let mut changes = std::pin::pin!(stream::select(services, slices));
    let mut index = Index::default();
    loop {
        let changed = match changes.next().await {
            Some(Ok(Change::Service(event))) => index.apply_service_event(*event),
            Some(Ok(Change::Slice(event))) => index.apply_slice_event(*event),
            Some(Err(error)) => {
                warn!(%error, "cluster DNS watch failed; retrying (the client needs get/list/watch on services and endpointslices)");
                continue;
            }
            // Watchers with backoff never end; if they did, keep serving what we have.
            None => std::future::pending().await,
        };
        // Publish a snapshot for the server (one clone per change; a relist publishes once).
        if changed {
            tx.send_replace(Arc::new(index.clone()));
        }
    }
}

#[cfg(test)]
mod tests;
