//! Creating objects from YAML manifests (what `kubectl create -f` does) and the Node object.

use crate::net::ClusterNet;
use crate::{Error, Result, names};
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use serde_json::{Value, json};
use std::net::SocketAddr;

/// The cluster's own manifest: workloads, kube-dns, RBAC.
pub const CLUSTER_YAML: &str = include_str!("../../manifests/cluster.yaml");

/// [`CLUSTER_YAML`] for `net`: kube-dns at `.10` of its Service CIDR, and the cluster DNS
/// server told the cluster domain and the LAN resolver (a CoreDNS Corefile's `kubernetes` zone
/// and `forward`).
pub fn cluster_docs(net: &ClusterNet) -> Result<Vec<Value>> {
    let mut docs = parse_docs(CLUSTER_YAML)?;
    for d in &mut docs {
        let in_kube_system = d["metadata"]["namespace"] == "kube-system";
        if d["kind"] == "Service" && d["metadata"]["name"] == "kube-dns" && in_kube_system {
            d["spec"]["clusterIP"] = json!(net.dns_svc_addr().to_string());
        }
        // A dual-stack cluster's workloads ask for both families (their Services as a user of
        // such a cluster writes them); kube-dns gets ::10 of the IPv6 Service CIDR too.
        if d["kind"] == "Service" && net.dual() {
            d["spec"]["ipFamilyPolicy"] = json!("PreferDualStack");
            if let Some(ip6) = net
                .dns_svc_ip6()
                .filter(|_| d["metadata"]["name"] == "kube-dns")
            {
                d["spec"]["clusterIPs"] = json!([net.dns_svc_ip().to_string(), ip6.to_string()]);
            }
        }
        if d["kind"] == "Deployment" && d["metadata"]["name"] == "coredns" && in_kube_system {
            let args = &mut d["spec"]["template"]["spec"]["containers"][0]["args"];
            let Some(args) = args.as_array_mut() else {
                return Err(Error::Invalid("manifest: coredns has no args".into()));
            };
            let upstream = SocketAddr::from((net.lan_dns_addr(), 53)).to_string();
            for a in ["--domain", &net.domain, "--upstream", &upstream] {
                args.push(json!(a));
            }
        }
    }
    Ok(docs)
}

/// The documents of a multi-document YAML text (empty documents skipped).
pub fn parse_docs(yaml: &str) -> Result<Vec<Value>> {
    use serde::Deserialize;
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(yaml) {
        let v =
            Value::deserialize(doc).map_err(|e| Error::Invalid(format!("manifest YAML: {e}")))?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

/// The resource name of a kind, as the API serves it.
fn plural(kind: &str) -> String {
    let k = kind.to_lowercase();
    match k.as_str() {
        "endpoints" => k,
        _ if k.ends_with('s') => format!("{k}es"),
        _ if k.ends_with('y') => format!("{}ies", &k[..k.len() - 1]),
        _ => format!("{k}s"),
    }
}

/// The API resource of a document from its `apiVersion` and `kind`.
fn resource(doc: &Value) -> Result<ApiResource> {
    let (api_version, kind) = (
        doc["apiVersion"].as_str().unwrap_or_default(),
        doc["kind"].as_str().unwrap_or_default(),
    );
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    if kind.is_empty() || version.is_empty() {
        return Err(Error::Invalid(format!(
            "manifest document without apiVersion/kind: {doc}"
        )));
    }
    let gvk = GroupVersionKind::gvk(group, version, kind);
    Ok(ApiResource::from_gvk_with_plural(&gvk, &plural(kind)))
}

/// Creates every document; objects that exist already are left alone.
pub async fn create_all(client: &Client, docs: Vec<Value>) -> Result<()> {
    for doc in docs {
        let ar = resource(&doc)?;
        let obj: DynamicObject = serde_json::from_value(doc)
            .map_err(|e| Error::Invalid(format!("manifest object: {e}")))?;
        let api: Api<DynamicObject> = match obj.metadata.namespace.as_deref() {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
            None => Api::all_with(client.clone(), &ar),
        };
        match api.create(&PostParams::default(), &obj).await {
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            r => {
                r?;
            }
        }
    }
    Ok(())
}

/// The Node object of the one node.
pub fn node(net: &ClusterNet) -> Value {
    let pod_cidrs = net.node_pod_cidrs();
    let pod_cidr = pod_cidrs[0].clone();
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": names::NODE_NAME, "labels": {"kubernetes.io/hostname": names::NODE_NAME,
            "kubernetes.io/os": "linux", "node-role.kubernetes.io/control-plane": ""}},
        "spec": {"podCIDR": pod_cidr, "podCIDRs": pod_cidrs},
    })
}

/// The `kubernetes` Service's EndpointSlice and Endpoints: the API server at the node's LAN
/// address, port 6443 (the real API server maintains these itself), of the cluster's primary
/// family.
pub fn kubernetes_endpoints(net: &ClusterNet) -> Vec<Value> {
    let node = net.node_addr();
    let ip = node.to_string();
    let family = if node.is_ipv6() { "IPv6" } else { "IPv4" };
    vec![
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "kubernetes", "namespace": "default",
                "labels": {"kubernetes.io/service-name": "kubernetes", "endpointslice.kubernetes.io/managed-by": "endpointslicemirroring-controller.k8s.io"}},
            "addressType": family, "ports": [{"name": "https", "port": names::API_PORT, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ip], "conditions": {"ready": true, "serving": true, "terminating": false}}]}),
        json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "kubernetes", "namespace": "default"},
            "subsets": [{"addresses": [{"ip": ip}], "ports": [{"name": "https", "port": names::API_PORT, "protocol": "TCP"}]}]}),
    ]
}

/// The Node's status (Ready, InternalIP its LAN address).
pub fn node_status(now: &str, net: &ClusterNet) -> Value {
    json!({
        "addresses": std::iter::once(json!({"type": "InternalIP", "address": net.node_addr().to_string()}))
            .chain(net.node_ip6().filter(|_| net.dual()).map(|ip| json!({"type": "InternalIP", "address": ip.to_string()})))
            .chain([json!({"type": "Hostname", "address": names::NODE_NAME})])
            .collect::<Vec<_>>(),
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": "kubelet is posting ready status", "lastHeartbeatTime": now, "lastTransitionTime": now}],
        "nodeInfo": {"kubeletVersion": "v1.33.0", "kubeProxyVersion": "v1.33.0", "operatingSystem": "linux",
            "architecture": "amd64", "containerRuntimeVersion": "kwg-sim://0.1", "osImage": "kwg-sim",
            "kernelVersion": "", "machineID": "", "systemUUID": "", "bootID": ""},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_manifest_parses_into_known_kinds() {
        let docs = parse_docs(CLUSTER_YAML).unwrap();
        let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        assert!(kinds.contains(&"Deployment") && kinds.contains(&"ClusterRoleBinding"));
        for d in &docs {
            resource(d).unwrap();
        }
        let dns = docs
            .iter()
            .find(|d| d["metadata"]["name"] == "kube-dns")
            .unwrap();
        assert_eq!(dns["spec"]["clusterIP"], "10.96.0.10");
        assert_eq!(resource(&docs[0]).unwrap().plural, "namespaces");
        assert_eq!(plural("Endpoints"), "endpoints");
        assert_eq!(plural("NetworkPolicy"), "networkpolicies");
        assert_eq!(plural("Ingress"), "ingresses");
    }

    #[test]
    fn cluster_dns_follows_the_service_cidr_and_domain() {
        let net = ClusterNet {
            lan: "198.51.100.0/24".parse().unwrap(),
            service_cidr: "10.43.0.0/16".parse().unwrap(),
            domain: "corp.internal".into(),
            ..ClusterNet::default()
        };
        let docs = cluster_docs(&net).unwrap();
        let find = |kind: &str, name: &str| {
            docs.iter()
                .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
                .unwrap()
        };
        assert_eq!(
            find("Service", "kube-dns")["spec"]["clusterIP"],
            "10.43.0.10"
        );
        let args =
            &find("Deployment", "coredns")["spec"]["template"]["spec"]["containers"][0]["args"];
        assert_eq!(
            args,
            &json!([
                "workload",
                "cluster-dns",
                "--domain",
                "corp.internal",
                "--upstream",
                "198.51.100.53:53"
            ])
        );
        assert_eq!(node(&net)["spec"]["podCIDR"], "10.244.0.0/24");
        assert!(find("Service", "web-app")["spec"]["ipFamilyPolicy"].is_null());
    }

    /// The document of `kind` named `name`.
    fn doc<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
        docs.iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap()
    }

    #[test]
    fn a_dual_stack_cluster_asks_for_both_families() {
        let net = ClusterNet {
            ip_family: crate::net::IpFamily::Dual,
            ..ClusterNet::default()
        };
        let docs = cluster_docs(&net).unwrap();
        let find = |name: &str| doc(&docs, "Service", name);
        assert_eq!(find("web-app")["spec"]["ipFamilyPolicy"], "PreferDualStack");
        assert_eq!(
            find("kube-dns")["spec"]["clusterIPs"],
            json!(["10.96.0.10", "fd00:10:96::10"])
        );
        let node = node(&net);
        assert_eq!(
            node["spec"]["podCIDRs"],
            json!(["10.244.0.0/24", "fd00:10:244::/64"])
        );
        let status = node_status("now", &net);
        assert_eq!(status["addresses"][1]["address"], "fd00:c0:2::1");
    }

    #[test]
    fn an_ipv6_only_cluster_is_ipv6_in_every_object() {
        let net = ClusterNet {
            ip_family: crate::net::IpFamily::Ipv6,
            ..ClusterNet::default()
        };
        let docs = cluster_docs(&net).unwrap();
        let find = |kind: &str, name: &str| doc(&docs, kind, name);
        // Services ask for nothing: the API server gives them its one family, IPv6.
        assert!(find("Service", "web-app")["spec"]["ipFamilyPolicy"].is_null());
        assert_eq!(
            find("Service", "kube-dns")["spec"]["clusterIP"],
            "fd00:10:96::10"
        );
        let args =
            &find("Deployment", "coredns")["spec"]["template"]["spec"]["containers"][0]["args"];
        assert!(
            args.as_array()
                .unwrap()
                .contains(&json!("[fd00:c0:2::53]:53")),
            "{args}"
        );
        let node = node(&net);
        assert_eq!(node["spec"]["podCIDR"], "fd00:10:244::/64");
        assert_eq!(node["spec"]["podCIDRs"], json!(["fd00:10:244::/64"]));
        let status = node_status("now", &net);
        assert_eq!(status["addresses"][0]["address"], "fd00:c0:2::1");
        assert_eq!(status["addresses"][1]["type"], "Hostname");
        let eps = kubernetes_endpoints(&net);
        assert_eq!(eps[0]["addressType"], "IPv6");
        assert_eq!(eps[0]["endpoints"][0]["addresses"][0], "fd00:c0:2::1");
    }
}
