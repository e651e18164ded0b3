//! The endpoints controller: EndpointSlices and Endpoints from the Pods each Service selects.

use crate::proxy::render::SERVICE_NAME_LABEL;
use crate::watch::{snapshot, store};
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::Notify;

const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
const MANAGER: &str = "endpointslice-controller.k8s.io";

/// A selected pod as an endpoint.
#[derive(Debug, Clone, PartialEq)]
struct Ep<'a> {
    pod: &'a Pod,
    ip: String,
    /// Every address of the pod (`status.podIPs`), the primary first.
    ips: Vec<String>,
    ready: bool,
}

fn selected<'a>(svc: &Service, pods: &'a [Pod]) -> Vec<Ep<'a>> {
    let Some(sel) = svc
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .filter(|s| !s.is_empty())
    else {
        return Vec::new();
    };
    let mut eps: Vec<Ep> = pods
        .iter()
        .filter(|p| {
            p.metadata.namespace == svc.metadata.namespace
                && p.metadata.deletion_timestamp.is_none()
        })
        .filter(|p| sel.iter().all(|(k, v)| p.labels().get(k) == Some(v)))
        .filter_map(|p| {
            let st = p.status.as_ref()?;
            (st.phase.as_deref() == Some("Running")).then_some(())?;
            let ip = st.pod_ip.clone()?;
            let mut ips: Vec<String> = st.pod_ips.iter().flatten().map(|i| i.ip.clone()).collect();
            if ips.is_empty() {
                ips.push(ip.clone());
            }
            Some(Ep {
                pod: p,
                ip,
                ips,
                ready: crate::kubelet::plan::pod_ready(p),
            })
        })
        .collect();
    eps.sort_by(|a, b| a.ip.cmp(&b.ip));
    eps
}

/// The target port of a Service port on `pod`: a number, or a named container port.
fn target_port(sp: &k8s_openapi::api::core::v1::ServicePort, pod: Option<&Pod>) -> Option<i32> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    match &sp.target_port {
        None => Some(sp.port),
        Some(IntOrString::Int(p)) => Some(*p),
        Some(IntOrString::String(name)) => pod?
            .spec
            .as_ref()?
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(name))
            .map(|p| p.container_port),
    }
}

fn target_ref(p: &Pod) -> Value {
    json!({"kind": "Pod", "namespace": p.metadata.namespace, "name": p.metadata.name, "uid": p.metadata.uid})
}

/// The EndpointSlice of a Service's primary family (named after it), or None for a Service
/// without selector.
pub fn desired_slice(svc: &Service, pods: &[Pod]) -> Option<EndpointSlice> {
    desired_slices(svc, pods).into_iter().next()
}

/// The EndpointSlices a Service should have, one per IP family of `spec.ipFamilies` (IPv4 when
/// unset), as the real controller keeps them: the primary family's named after the Service,
/// the other `<service>-ipv6` (or `-ipv4`); none for a Service without selector.
pub fn desired_slices(svc: &Service, pods: &[Pod]) -> Vec<EndpointSlice> {
    let families = svc
        .spec
        .as_ref()
        .and_then(|s| s.ip_families.clone())
        .filter(|f| !f.is_empty())
        .unwrap_or_else(|| vec!["IPv4".into()]);
    families
        .iter()
        .enumerate()
        .filter_map(|(i, fam)| family_slice(svc, pods, fam, i == 0))
        .collect()
}

fn is_family(ip: &str, family: &str) -> bool {
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => family == "IPv4",
        Ok(std::net::IpAddr::V6(_)) => family == "IPv6",
        Err(_) => false,
    }
}

fn family_slice(svc: &Service, pods: &[Pod], family: &str, primary: bool) -> Option<EndpointSlice> {
    let spec = svc.spec.as_ref()?;
    spec.selector.as_ref().filter(|s| !s.is_empty())?;
    let eps: Vec<Ep> = selected(svc, pods)
        .into_iter()
        .filter_map(|e| {
            let ip = e.ips.iter().find(|ip| is_family(ip, family))?.clone();
            Some(Ep { ip, ..e })
        })
        .collect();
    let first = eps.first().map(|e| e.pod);
    let ports: Vec<Value> = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|sp| {
            Some(
                json!({"name": sp.name.clone().unwrap_or_default(), "port": target_port(sp, first)?,
                "protocol": sp.protocol.clone().unwrap_or_else(|| "TCP".into())}),
            )
        })
        .collect();
    let endpoints: Vec<Value> = eps
        .iter()
        .map(|e| {
            json!({"addresses": [e.ip], "conditions": {"ready": e.ready, "serving": e.ready, "terminating": false},
                "nodeName": e.pod.spec.as_ref().and_then(|s| s.node_name.clone()), "targetRef": target_ref(e.pod)})
        })
        .collect();
    let service = svc.name_any();
    let name = if primary {
        service.clone()
    } else {
        format!("{service}-{}", family.to_lowercase())
    };
    // Owned by its Service, as the real controller's slices are (the garbage collector
    // deletes them with it).
    let owner = json!({"apiVersion": "v1", "kind": "Service", "name": service,
        "uid": svc.metadata.uid, "controller": true, "blockOwnerDeletion": true});
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": svc.metadata.namespace,
            "labels": {SERVICE_NAME_LABEL: service, MANAGED_BY: MANAGER},
            "ownerReferences": [owner]},
        "addressType": family, "ports": ports, "endpoints": endpoints,
    }))
    .ok()
}

/// The legacy Endpoints object of a Service (ready and not-ready addresses).
pub fn desired_endpoints(svc: &Service, pods: &[Pod]) -> Option<Endpoints> {
    let spec = svc.spec.as_ref()?;
    spec.selector.as_ref().filter(|s| !s.is_empty())?;
    let eps = selected(svc, pods);
    let first = eps.first().map(|e| e.pod);
    let addr = |e: &Ep| json!({"ip": e.ip, "nodeName": e.pod.spec.as_ref().and_then(|s| s.node_name.clone()), "targetRef": target_ref(e.pod)});
    let ready: Vec<Value> = eps.iter().filter(|e| e.ready).map(addr).collect();
    let not_ready: Vec<Value> = eps.iter().filter(|e| !e.ready).map(addr).collect();
    let ports: Vec<Value> = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|sp| Some(json!({"name": sp.name, "port": target_port(sp, first)?, "protocol": sp.protocol.clone().unwrap_or_else(|| "TCP".into())})))
        .collect();
    let subsets = if eps.is_empty() {
        json!([])
    } else {
        json!([{"addresses": ready, "notReadyAddresses": not_ready, "ports": ports}])
    };
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": svc.name_any(), "namespace": svc.metadata.namespace},
        "subsets": subsets,
    }))
    .ok()
}

/// Creates or replaces `want` unless the stored object already has the same `fields`.
async fn apply<K>(
    api: Api<K>,
    current: Option<&K>,
    mut want: K,
    same: impl Fn(&K, &K) -> bool,
) -> crate::Result<()>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = want.meta().name.clone().unwrap_or_default();
    match current {
        Some(cur) if same(cur, &want) => Ok(()),
        Some(cur) => {
            want.meta_mut().resource_version = cur.meta().resource_version.clone();
            api.replace(&name, &PostParams::default(), &want).await?;
            Ok(())
        }
        None => {
            api.create(&PostParams::default(), &want).await?;
            Ok(())
        }
    }
}

/// Reconciles forever.
pub async fn run(client: Client) -> crate::Result<()> {
    let wake = Arc::new(Notify::new());
    let services = store::<Service>(client.clone(), wake.clone()).await;
    let pods = store::<Pod>(client.clone(), wake.clone()).await;
    let slices = store::<EndpointSlice>(client.clone(), wake.clone()).await;
    let endpoints = store::<Endpoints>(client.clone(), wake.clone()).await;
    loop {
        if let Err(e) = reconcile(
            &client,
            &snapshot(&services),
            &snapshot(&pods),
            &snapshot(&slices),
            &snapshot(&endpoints),
        )
        .await
        {
            tracing::warn!(error = %e, "endpoints controller: will retry");
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            wake.notify_one();
        }
        wake.notified().await;
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

async fn reconcile(
    client: &Client,
    services: &[Service],
    pods: &[Pod],
    slices: &[EndpointSlice],
    endpoints: &[Endpoints],
) -> crate::Result<()> {
    let key = |ns: &Option<String>, n: &Option<String>| {
        (
            ns.clone().unwrap_or_default(),
            n.clone().unwrap_or_default(),
        )
    };
    let cur_slices: BTreeMap<_, _> = slices
        .iter()
        .map(|s| (key(&s.metadata.namespace, &s.metadata.name), s))
        .collect();
    let cur_eps: BTreeMap<_, _> = endpoints
        .iter()
        .map(|e| (key(&e.metadata.namespace, &e.metadata.name), e))
        .collect();
    let mut wanted = std::collections::BTreeSet::new();
    for svc in services {
        let ns = svc.metadata.namespace.clone().unwrap_or_default();
        let k = key(&svc.metadata.namespace, &svc.metadata.name);
        for want in desired_slices(svc, pods) {
            let k = key(&want.metadata.namespace, &want.metadata.name);
            wanted.insert(k.clone());
            let same = |a: &EndpointSlice, b: &EndpointSlice| {
                a.endpoints == b.endpoints
                    && a.ports == b.ports
                    && a.metadata.labels == b.metadata.labels
            };
            apply(
                Api::namespaced(client.clone(), &ns),
                cur_slices.get(&k).copied(),
                want,
                same,
            )
            .await?;
        }
        if let Some(want) = desired_endpoints(svc, pods) {
            let same = |a: &Endpoints, b: &Endpoints| {
                a.subsets.clone().unwrap_or_default() == b.subsets.clone().unwrap_or_default()
            };
            apply(
                Api::namespaced(client.clone(), &ns),
                cur_eps.get(&k).copied(),
                want,
                same,
            )
            .await?;
        }
    }
    // Slices labelled as ours and not wanted: those a Service with a selector no longer
    // needs (the controller reconciles its own), and those owned by a Service that is gone
    // (what the garbage collector deletes). Like the real controller, the slices of a Service
    // without selector are left alone, whoever labelled them: they are written out of band.
    let selectorless: std::collections::BTreeSet<_> = services
        .iter()
        .filter(|s| {
            s.spec
                .as_ref()
                .and_then(|s| s.selector.as_ref())
                .is_none_or(|s| s.is_empty())
        })
        .map(|s| key(&s.metadata.namespace, &s.metadata.name))
        .collect();
    let uids: std::collections::BTreeSet<_> = services
        .iter()
        .filter_map(|s| s.metadata.uid.as_deref())
        .collect();
    for (k, s) in &cur_slices {
        let ours = s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(MANAGED_BY))
            .map(String::as_str)
            == Some(MANAGER);
        let service = s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL));
        let of_selectorless =
            service.is_some_and(|n| selectorless.contains(&(k.0.clone(), n.clone())));
        let orphan = s.metadata.owner_references.iter().flatten().any(|o| {
            o.kind == "Service" && o.controller == Some(true) && !uids.contains(o.uid.as_str())
        });
        if ours && !wanted.contains(k) && (!of_selectorless || orphan) {
            let api: Api<EndpointSlice> = Api::namespaced(client.clone(), &k.0);
            let _ = api.delete(&k.1, &DeleteParams::default()).await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ip: &str, ready: bool, app: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "demo", "labels": {"app": app}, "uid": format!("uid-{name}")},
            "spec": {"nodeName": "node-1", "containers": [{"name": "c", "ports": [{"name": "web", "containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIP": ip,
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
        }))
        .unwrap()
    }

    fn service(cluster_ip: &str) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "demo"},
            "spec": {"clusterIP": cluster_ip, "selector": {"app": "web"},
                "ports": [{"name": "http", "port": 80, "targetPort": "web"}, {"name": "raw", "port": 81}]}
        }))
        .unwrap()
    }

    #[test]
    fn slice_holds_selected_running_pods_with_named_ports_resolved() {
        let pods = vec![
            pod("b", "10.244.0.3", false, "web"),
            pod("a", "10.244.0.2", true, "web"),
            pod("x", "10.244.0.9", true, "other"),
        ];
        let slice = desired_slice(&service("10.96.0.5"), &pods).unwrap();
        let v = serde_json::to_value(&slice).unwrap();
        assert_eq!(v["metadata"]["labels"][SERVICE_NAME_LABEL], "web");
        assert_eq!(
            v["ports"][0],
            json!({"name": "http", "port": 8080, "protocol": "TCP"})
        );
        assert_eq!(v["ports"][1]["port"], 81);
        let addrs: Vec<(&str, bool)> = slice
            .endpoints
            .iter()
            .map(|e| {
                (
                    e.addresses[0].as_str(),
                    e.conditions.as_ref().unwrap().ready.unwrap(),
                )
            })
            .collect();
        assert_eq!(addrs, [("10.244.0.2", true), ("10.244.0.3", false)]);
    }

    #[test]
    fn a_slice_is_owned_by_its_service() {
        let mut svc = service("10.96.0.5");
        svc.metadata.uid = Some("uid-web".into());
        let slice = desired_slice(&svc, &[pod("a", "10.244.0.2", true, "web")]).unwrap();
        let owner = &slice.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("Service", "uid-web")
        );
        assert_eq!(owner.controller, Some(true));
    }

    #[test]
    fn headless_services_get_slices_and_endpoints_split_by_readiness() {
        let pods = vec![
            pod("a", "10.244.0.2", true, "web"),
            pod("b", "10.244.0.3", false, "web"),
        ];
        assert!(desired_slice(&service("None"), &pods).is_some());
        let ep = serde_json::to_value(desired_endpoints(&service("None"), &pods).unwrap()).unwrap();
        assert_eq!(ep["subsets"][0]["addresses"][0]["ip"], "10.244.0.2");
        assert_eq!(ep["subsets"][0]["notReadyAddresses"][0]["ip"], "10.244.0.3");
    }
}
