//! Keeps discovery current: watchers on Nodes, ServiceCIDRs and the two Services
//! (`kube-system/kube-dns`, the gateway's own) feed one trigger. Each burst of changes re-runs
//! [`discovery::assemble`] on the watched objects and, only when the result differs, reloads
//! the firewall and republishes the gateway info. A slow resync (`--discovery-interval`)
//! re-asks the dry-run probe (nothing to watch there) and rewrites the info ConfigMap.

use crate::discovery::{self, Discovered, Objects};
use crate::kube_io::{listed, watch};
use crate::{Config, GatewayError, kube_io, net, nft};
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Node, NodeSpec, NodeStatus, Service};
use k8s_openapi::api::networking::v1::ServiceCIDR;
use kube::api::{Api, ListParams};
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use kwg_contract::keys::PublicKey;
use kwg_contract::{GatewayInfo, TunnelIp, UdpReceive};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How soon a failed step (API, nftables) is retried.
const RETRY: Duration = Duration::from_secs(1);

/// The parts of the gateway info that do not come from discovery.
#[derive(Clone, Copy)]
pub struct InfoBase {
    pub public_key: PublicKey,
    pub gateway_ip: TunnelIp,
}

/// What one discovery result changes, given what is in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Changes {
    /// The firewall policy differs from the loaded one.
    pub firewall: bool,
    /// The info differs from the published one and has endpoints peers can use.
    pub info: bool,
}

/// Compares a new policy and info with what is loaded and published.
pub fn changes(
    applied: Option<&nft::Policy>,
    published: Option<&GatewayInfo>,
    policy: &nft::Policy,
    info: &GatewayInfo,
) -> Changes {
    Changes {
        firewall: applied != Some(policy),
        info: published != Some(info) && !info.endpoints.is_empty(),
    }
}

/// Watches the cluster and keeps the firewall and the gateway info current until `token`.
pub async fn run(
    client: kube::Client,
    cfg: Config,
    base: InfoBase,
    (mut udp_receive, tunnel_ready): (
        tokio::sync::watch::Receiver<Option<UdpReceive>>,
        tokio::sync::watch::Sender<bool>,
    ),
    mut leader: tokio::sync::watch::Receiver<bool>,
    token: CancellationToken,
) {
    let (sources, mut kicks) = Sources::watch(&client, &cfg).await;
    let mut applied: Option<nft::Policy> = None;
    let mut published: Option<GatewayInfo> = None;
    let mut last: Option<Discovered> = None;
    let mut probed: Option<Vec<IpNet>> = None;
    let mut failed = false;
    let mut next_resync = Instant::now() + cfg.discovery_interval;
    let mut resync = false;
    loop {
        let wake = if failed {
            Instant::now() + RETRY
        } else {
            next_resync
        };
        tokio::select! {
            _ = token.cancelled() => return,
            // The UDP receive verdict is part of the info.
            Ok(()) = udp_receive.changed() => {}
            Ok(()) = leader.changed() => {
                // A new leader publishes what it found (the old one may have been older).
                published = None;
            }
            kick = kicks.next() => {
                if kick.is_none() {
                    return;
                }
                while let Some(Some(())) = kicks.next().now_or_never() {}
            }
            _ = tokio::time::sleep_until(wake) => {
                if Instant::now() >= next_resync {
                    tracing::debug!("discovery resync");
                    next_resync = Instant::now() + cfg.discovery_interval;
                    probed = None;
                    resync = true;
                }
            }
        }
        if !sources.ready() {
            continue;
        }
        let mut objs = sources.snapshot();
        if objs.service_cidrs.is_empty() {
            if probed.is_none() {
                probed =
                    Some(discovery::probe_service_cidrs(&client).await).filter(|v| !v.is_empty());
            }
            objs.probed_service_cidrs = probed.clone().unwrap_or_default();
        }
        let found = match discovery::assemble(&cfg, &objs) {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(error = %e, "cluster discovery failed; retrying");
                failed = true;
                continue;
            }
        };
        if last.as_ref() != Some(&found) {
            tracing::debug!(?found, "discovered");
            if found.endpoints.is_empty() {
                tracing::info!(service = %cfg.service_name, "no endpoints yet (Service missing or without NodePort/LoadBalancer): not publishing gateway info");
            }
            last = Some(found.clone());
        }
        let policy = policy(&cfg, base.gateway_ip, &found);
        let mut info = gateway_info(&cfg, base, &found);
        info.udp_receive = udp_receive.borrow_and_update().clone();
        let todo = changes(applied.as_ref(), published.as_ref(), &policy, &info);
        failed = false;
        if todo.firewall {
            match net::nft_apply(&nft::render(&policy)) {
                Ok(()) => {
                    tracing::info!(service_cidrs = ?found.service_cidrs, pod_cidrs = ?found.pod_cidrs, allowed_extra = ?cfg.allow_cidr, "firewall loaded");
                    tunnel_ready.send_replace(true);
                    applied = Some(policy);
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot load the firewall");
                    failed = true;
                }
            }
        }
        // A resync rewrites the info too, repairing an edited or deleted ConfigMap.
        let rewrite = std::mem::take(&mut resync) && published.as_ref() == Some(&info);
        // The info is the leader's to publish (every replica computes the same one).
        if (todo.info || rewrite) && *leader.borrow() {
            match kube_io::publish_info(&client, &cfg.kwg_namespace, &info).await {
                Ok(()) if todo.info => {
                    tracing::info!(endpoints = ?info.endpoints.iter().map(ToString::to_string).collect::<Vec<_>>(), ipv6 = info.ipv6.is_some(), ipv6_only = info.ipv6_only(), "gateway info published");
                    published = Some(info);
                }
                Ok(()) => tracing::debug!("gateway info rewritten"),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot publish gateway info");
                    failed = true;
                }
            }
        }
    }
}

/// Caches of the watched objects.
struct Sources {
    nodes: Store<Node>,
    /// `None` where the API has no ServiceCIDR kind (or may not list it).
    service_cidrs: Option<Store<ServiceCIDR>>,
    dns: Store<Service>,
    gateway: Store<Service>,
}

impl Sources {
    /// Starts the watchers; the stream yields once per change of any of them.
    async fn watch(client: &kube::Client, cfg: &Config) -> (Sources, BoxStream<'static, ()>) {
        let (nodes, n) = watch(Api::all(client.clone()), None, "Nodes", trim_node);
        let (dns, d) = watch(
            Api::namespaced(client.clone(), "kube-system"),
            Some("kube-dns"),
            "Service kube-system/kube-dns",
            trim_service,
        );
        let (gateway, g) = watch(
            Api::namespaced(client.clone(), &cfg.gateway_namespace),
            Some(&cfg.service_name),
            "the gateway Service",
            trim_service,
        );
        let mut streams = vec![n, d, g];
        let service_cidrs = service_cidr_api(client).await.map(|api| {
            let (store, s) = watch(api, None, "ServiceCIDRs", |o: &mut ServiceCIDR| {
                o.metadata.managed_fields = None
            });
            streams.push(s);
            store
        });
        let sources = Sources {
            nodes,
            service_cidrs,
            dns,
            gateway,
        };
        (sources, futures::stream::select_all(streams).boxed())
    }

    /// Whether the required caches hold a first full list. ServiceCIDRs are optional: until
    /// they are listed, the dry-run probe stands in.
    fn ready(&self) -> bool {
        listed(&self.nodes) && listed(&self.dns) && listed(&self.gateway)
    }

    fn snapshot(&self) -> Objects {
        Objects {
            nodes: by_name(&self.nodes),
            service_cidrs: self.service_cidrs.as_ref().map(by_name).unwrap_or_default(),
            probed_service_cidrs: Vec::new(),
            dns: self.dns.state().into_iter().next(),
            gateway: self.gateway.state().into_iter().next(),
        }
    }
}

/// A cache's objects in name order (a cache has none), so results compare stably.
fn by_name<K: Resource + Clone>(store: &Store<K>) -> Vec<Arc<K>>
where
    K::DynamicType: Eq + Hash + Clone,
{
    let mut all = store.state();
    all.sort_by_key(|o| o.name_any());
    all
}

/// ServiceCIDR objects' API, unless the cluster lacks the kind (before Kubernetes 1.33) or
/// the gateway may not list it; then the dry-run probe tells the service range.
async fn service_cidr_api(client: &kube::Client) -> Option<Api<ServiceCIDR>> {
    let api = Api::<ServiceCIDR>::all(client.clone());
    match api.list_metadata(&ListParams::default().limit(1)).await {
        Ok(_) => Some(api),
        Err(kube::Error::Api(s)) if s.is_not_found() => {
            tracing::info!(
                "the API has no ServiceCIDR objects: the service range comes from a dry-run Service"
            );
            None
        }
        Err(e) => {
            let e = GatewayError::kube("list ServiceCIDR objects")(e);
            tracing::warn!(error = %e, "the service range comes from a dry-run Service");
            None
        }
    }
}

/// Keeps what discovery reads of a Node (pod CIDRs, addresses), so a big cluster's Nodes
/// cost little memory.
fn trim_node(n: &mut Node) {
    n.metadata.managed_fields = None;
    n.metadata.annotations = None;
    n.metadata.labels = None;
    n.spec = n.spec.take().map(|s| NodeSpec {
        pod_cidr: s.pod_cidr,
        pod_cidrs: s.pod_cidrs,
        ..Default::default()
    });
    n.status = n.status.take().map(|s| NodeStatus {
        addresses: s.addresses,
        ..Default::default()
    });
}

fn trim_service(s: &mut Service) {
    s.metadata.managed_fields = None;
}

/// The firewall for what discovery found (with nothing found: only the admin's extras).
pub(crate) fn policy(cfg: &Config, gateway_ip: TunnelIp, d: &Discovered) -> nft::Policy {
    nft::Policy {
        interface: cfg.interface.clone(),
        tunnel_cidr: cfg.tunnel_cidr.trunc(),
        gateway_ip: gateway_ip.addr(),
        admin_port: cfg.admin_addr.port(),
        allowed: d
            .service_cidrs
            .iter()
            .chain(&d.pod_cidrs)
            .chain(&cfg.allow_cidr)
            .copied()
            .collect(),
        allow_peer_to_peer: cfg.allow_peer_to_peer,
        reach_rbac: cfg.reach == crate::config::Reach::Rbac,
        ipv6: carries_ipv6(d).then(|| {
            let tunnel6 = cfg.tunnel_cidr6;
            (tunnel6, kwg_contract::tunnel_ip6_of(tunnel6, gateway_ip))
        }),
    }
}

/// Whether the tunnel carries IPv6: the cluster has IPv6 Service or pod CIDRs.
pub(crate) fn carries_ipv6(d: &Discovered) -> bool {
    d.service_cidrs
        .iter()
        .chain(&d.pod_cidrs)
        .any(|n| matches!(n, ipnet::IpNet::V6(_)))
}

/// The IPv6 document (`ipv6.json`) when the tunnel carries IPv6.
pub(crate) fn gateway_info6(cfg: &Config, d: &Discovered) -> Option<kwg_contract::GatewayInfo6> {
    let v6 = |nets: &[ipnet::IpNet]| -> Vec<ipnet::Ipv6Net> {
        nets.iter()
            .filter_map(|n| match n {
                ipnet::IpNet::V6(n) => Some(n.trunc()),
                ipnet::IpNet::V4(_) => None,
            })
            .collect()
    };
    carries_ipv6(d).then(|| kwg_contract::GatewayInfo6 {
        tunnel_cidr: cfg.tunnel_cidr6,
        service_cidrs: v6(&d.service_cidrs),
        pod_cidrs: v6(&d.pod_cidrs),
        dns_ip: d.dns_ip6,
    })
}

/// The IPv4 prefixes of `nets`: what `info.json` announces, since its tunnel's IPv4 side carries
/// them (the IPv6 ones are in `ipv6.json`; an IPv6-only cluster's `info.json` lists none).
/// A dual-stack cluster's IPv6 ranges would otherwise be routed into every laptop's tunnel and go
/// nowhere (docs/contract.md, what is carried per family).
fn ipv4_only(nets: &[ipnet::IpNet]) -> Vec<ipnet::IpNet> {
    nets.iter()
        .filter(|n| matches!(n, ipnet::IpNet::V4(_)))
        .copied()
        .collect()
}

fn gateway_info(cfg: &Config, base: InfoBase, d: &Discovered) -> GatewayInfo {
    GatewayInfo {
        version: kwg_contract::PROTOCOL_VERSION,
        public_key: base.public_key,
        endpoints: d.endpoints.clone(),
        tunnel_cidr: cfg.tunnel_cidr.trunc(),
        gateway_ip: base.gateway_ip,
        service_cidrs: ipv4_only(&d.service_cidrs),
        pod_cidrs: ipv4_only(&d.pod_cidrs),
        dns_ip: d.dns_ip.filter(std::net::IpAddr::is_ipv4),
        cluster_domain: cfg.cluster_domain.clone(),
        admin_port: cfg.admin_addr.port(),
        gateway_version: Some(env!("CARGO_PKG_VERSION").into()),
        udp_receive: None,
        ipv6: gateway_info6(cfg, d),
    }
}

#[cfg(test)]
mod tests;
