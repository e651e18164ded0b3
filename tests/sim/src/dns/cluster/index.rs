//! The cluster DNS's view of the API: Services and EndpointSlices reduced to what DNS needs,
//! updated from watcher events (pure: no I/O, tested with plain objects).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use k8s_openapi::api::{core::v1::Service as K8sService, discovery::v1::EndpointSlice};
use kube::runtime::watcher::Event;

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A Service's identity: namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    pub namespace: String,
    pub name: String,
}

/// What a Service resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceKind {
    /// Its ClusterIPs (empty until one is allocated).
    ClusterIp(Vec<IpAddr>),
    /// `clusterIP: None`: the addresses of its ready endpoints.
    Headless,
    /// A CNAME to this name.
    ExternalName(String),
}

/// A port as DNS sees it (SRV records); names and protocols are lowercase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub name: String,
    pub protocol: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceEntry {
    pub kind: ServiceKind,
    pub ports: Vec<Port>,
}

/// One endpoint of an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub addresses: Vec<IpAddr>,
    pub hostname: Option<String>,
    pub ready: bool,
}

impl Endpoint {
    /// The DNS label of this endpoint under a headless Service: its hostname, else its first
    /// address with dashes (`10-244-0-5`), as CoreDNS names them.
    pub fn label(&self) -> Option<String> {
        match (&self.hostname, self.addresses.first()) {
            (Some(host), _) => Some(host.to_ascii_lowercase()),
            (None, Some(IpAddr::V4(ip))) => Some(ip.to_string().replace('.', "-")),
            (None, Some(IpAddr::V6(ip))) => Some(ip.to_string().replace(':', "-")),
            (None, None) => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct SliceEntry {
    service: ServiceKey,
    ports: Vec<Port>,
    endpoints: Vec<Endpoint>,
}

/// One kind of watched object, kept by key.
#[derive(Debug, Clone)]
struct Table<K, V> {
    live: BTreeMap<K, V>,
    /// Objects listed since the last `Init` event, swapped in at `InitDone` (a re-list is a
    /// full resync: whatever it did not list is gone).
    relist: Option<BTreeMap<K, V>>,
    synced: bool,
}

impl<K, V> Default for Table<K, V> {
    fn default() -> Self {
        Self {
            live: BTreeMap::new(),
            relist: None,
            synced: false,
        }
    }
}

impl<K: Ord, V> Table<K, V> {
    /// Applies a watcher event; `entry` reduces an object (`None`: not for DNS), `key` names it.
    /// Returns whether the live data may have changed (not while a re-list is still arriving).
    fn apply<O>(
        &mut self,
        event: Event<O>,
        entry: impl Fn(&O) -> Option<(K, V)>,
        key: impl Fn(&O) -> Option<K>,
    ) -> bool {
        let visible = !matches!(event, Event::Init | Event::InitApply(_));
        match event {
            Event::Init => self.relist = Some(BTreeMap::new()),
            Event::InitApply(obj) => {
                if let (Some(relist), Some((k, v))) = (self.relist.as_mut(), entry(&obj)) {
                    relist.insert(k, v);
                }
            }
            Event::InitDone => {
                if let Some(relist) = self.relist.take() {
                    self.live = relist;
                }
                self.synced = true;
            }
            // An object that stopped being for DNS (e.g. a slice that lost its service label)
            // is removed like a deleted one.
            Event::Apply(obj) => match entry(&obj) {
                Some((k, v)) => {
                    self.live.insert(k, v);
                }
                None => {
                    key(&obj).map(|k| self.live.remove(&k));
                }
            },
            Event::Delete(obj) => {
                key(&obj).map(|k| self.live.remove(&k));
            }
        }
        visible
    }
}

/// Services and EndpointSlices of the whole cluster, keyed for DNS lookups.
#[derive(Debug, Clone, Default)]
pub struct Index {
    services: Table<ServiceKey, ServiceEntry>,
    /// Keyed by (namespace, slice name).
    slices: Table<(String, String), SliceEntry>,
    /// Bumped on every change; the SOA serial.
    serial: u32,
}

impl Index {
    /// Both watchers have delivered their initial list.
    pub fn synced(&self) -> bool {
        self.services.synced && self.slices.synced
    }

    pub fn serial(&self) -> u32 {
        self.serial
    }

    /// Applies a Service watch event; returns whether answers may have changed.
    pub fn apply_service_event(&mut self, event: Event<K8sService>) -> bool {
        self.serial = self.serial.wrapping_add(1);
        self.services.apply(event, service_entry, service_key)
    }

    /// Applies an EndpointSlice watch event; returns whether answers may have changed.
    pub fn apply_slice_event(&mut self, event: Event<EndpointSlice>) -> bool {
        self.serial = self.serial.wrapping_add(1);
        self.slices.apply(event, slice_entry, slice_key)
    }

    pub fn service(&self, namespace: &str, name: &str) -> Option<&ServiceEntry> {
        self.services.live.get(&ServiceKey {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }

    /// A namespace is known to DNS when it has at least one Service (the server does not watch
    /// Namespace objects).
    pub fn namespace_exists(&self, namespace: &str) -> bool {
        self.services
            .live
            .range(
                ServiceKey {
                    namespace: namespace.to_owned(),
                    name: String::new(),
                }..,
            )
            .next()
            .is_some_and(|(key, _)| key.namespace == namespace)
    }

    /// The ready endpoints of a Service with the ports of their slice, deduplicated by label
    /// (a pod can appear in two slices while they are being rebalanced).
    pub fn ready_endpoints(&self, key: &ServiceKey) -> Vec<(&Endpoint, &[Port])> {
        let mut seen = BTreeSet::new();
        self.slices
            .live
            .values()
            .filter(|slice| &slice.service == key)
            .flat_map(|slice| {
                slice
                    .endpoints
                    .iter()
                    .filter(|ep| ep.ready)
                    .map(move |ep| (ep, slice.ports.as_slice()))
            })
            .filter(|(ep, _)| seen.insert(ep.label()))
            .collect()
    }

    /// Who owns `ip`: a Service by ClusterIP (`None` label) or a ready endpoint of a headless
    /// Service (its label), for PTR records.
    pub fn owner_of(&self, ip: IpAddr) -> Option<(ServiceKey, Option<String>)> {
        let by_cluster_ip =
            self.services.live.iter().find(
                |(_, svc)| matches!(&svc.kind, ServiceKind::ClusterIp(ips) if ips.contains(&ip)),
            );
        if let Some((key, _)) = by_cluster_ip {
            return Some((key.clone(), None));
        }
        self.slices
            .live
            .values()
            .filter(|slice| {
                self.services
                    .live
                    .get(&slice.service)
                    .is_some_and(|svc| svc.kind == ServiceKind::Headless)
            })
            .find_map(|slice| {
                let ep = slice
                    .endpoints
                    .iter()
                    .find(|ep| ep.ready && ep.addresses.contains(&ip))?;
                Some((slice.service.clone(), ep.label()))
            })
    }
}

fn service_key(svc: &K8sService) -> Option<ServiceKey> {
    Some(ServiceKey {
        namespace: svc.metadata.namespace.clone()?,
        name: svc.metadata.name.clone()?,
    })
}

fn service_entry(svc: &K8sService) -> Option<(ServiceKey, ServiceEntry)> {
    let key = service_key(svc)?;
    let spec = svc.spec.clone().unwrap_or_default();
    let kind = if spec.type_.as_deref() == Some("ExternalName") {
        ServiceKind::ExternalName(spec.external_name.unwrap_or_default())
    } else if spec.cluster_ip.as_deref() == Some("None") {
        ServiceKind::Headless
    } else {
        let ips = spec
            .cluster_ips
            .filter(|ips| !ips.is_empty())
            .or_else(|| spec.cluster_ip.map(|ip| vec![ip]))
            .unwrap_or_default();
        ServiceKind::ClusterIp(ips.iter().filter_map(|ip| ip.parse().ok()).collect())
    };
    let ports = spec
        .ports
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| {
            Some(Port {
                name: p.name.unwrap_or_default().to_ascii_lowercase(),
                protocol: p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase(),
                port: u16::try_from(p.port).ok()?,
            })
        })
        .collect();
    Some((key, ServiceEntry { kind, ports }))
}

fn slice_key(slice: &EndpointSlice) -> Option<(String, String)> {
    Some((
        slice.metadata.namespace.clone()?,
        slice.metadata.name.clone()?,
    ))
}

fn slice_entry(slice: &EndpointSlice) -> Option<((String, String), SliceEntry)> {
    let key = slice_key(slice)?;
    let service = ServiceKey {
        namespace: key.0.clone(),
        name: slice
            .metadata
            .labels
            .as_ref()?
            .get(SERVICE_NAME_LABEL)?
            .clone(),
    };
    let ports = slice
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            Some(Port {
                name: p.name.clone().unwrap_or_default().to_ascii_lowercase(),
                protocol: p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase(),
                port: u16::try_from(p.port?).ok()?,
            })
        })
        .collect();
    let endpoints = slice
        .endpoints
        .iter()
        .map(|ep| Endpoint {
            addresses: ep.addresses.iter().filter_map(|a| a.parse().ok()).collect(),
            hostname: ep.hostname.clone(),
            // discovery.k8s.io/v1: a nil `ready` means unknown and is read as ready.
            ready: ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true),
        })
        .collect();
    Some((
        key,
        SliceEntry {
            service,
            ports,
            endpoints,
        },
    ))
}
