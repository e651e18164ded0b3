//! The kubelet's and ReplicaSet controller's decisions (pure).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

/// The label carrying the hash of the Deployment's pod template (as the real controller does).
pub const TEMPLATE_HASH_LABEL: &str = "pod-template-hash";

/// The local binary an image names: `ghcr.io/x/kwg-gateway:v1` -> `kwg-gateway`.
pub fn image_binary(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    let last = last.split('@').next().unwrap_or(last);
    last.split(':').next().unwrap_or(last).to_string()
}

/// A stable 10-character hash of a Deployment's pod template (FNV-1a, base 36).
pub fn template_hash(d: &Deployment) -> String {
    let text = serde_json::to_string(&d.spec.as_ref().map(|s| &s.template)).unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let digits = b"0123456789bcdfghjklmnpqrstvwxz";
    (0..10)
        .map(|i| digits[((h >> (i * 6)) % digits.len() as u64) as usize] as char)
        .collect()
}

/// Whether `pod` is owned by `d`.
pub fn owned_by(pod: &Pod, d: &Deployment) -> bool {
    let uid = d.metadata.uid.as_deref();
    uid.is_some()
        && pod.metadata.namespace == d.metadata.namespace
        && pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| Some(o.uid.as_str()) == uid)
}

/// Whether a pod's Ready condition is True.
pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// A new Pod for `d` named `<deployment>-<hash>-<suffix>`, bound to `node`.
pub fn new_pod(d: &Deployment, suffix: &str, node: &str) -> Option<Pod> {
    let spec = d.spec.as_ref()?;
    let hash = template_hash(d);
    let name = format!("{}-{hash}-{suffix}", d.metadata.name.as_deref()?);
    let mut labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.insert(TEMPLATE_HASH_LABEL.into(), hash);
    let mut pod_spec = serde_json::to_value(spec.template.spec.as_ref()?).ok()?;
    pod_spec["nodeName"] = json!(node);
    if pod_spec.get("serviceAccountName").is_none() {
        pod_spec["serviceAccountName"] = json!("default");
    }
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": d.metadata.namespace, "labels": labels,
            "annotations": spec.template.metadata.as_ref().and_then(|m| m.annotations.clone()),
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": d.metadata.name,
                "uid": d.metadata.uid, "controller": true, "blockOwnerDeletion": true}]},
        "spec": pod_spec,
    }))
    .ok()
}

/// A Deployment's status from its pods; None when the stored status already says the same.
pub fn deployment_status(d: &Deployment, owned: &[&Pod], now: &str) -> Option<Value> {
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let hash = template_hash(d);
    let live: Vec<&&Pod> = owned
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    let replicas = live.len() as i32;
    let updated = live
        .iter()
        .filter(|p| {
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(TEMPLATE_HASH_LABEL))
                == Some(&hash)
        })
        .count() as i32;
    let ready = live.iter().filter(|p| pod_ready(p)).count() as i32;
    let generation = d.metadata.generation.unwrap_or(1);
    let available = if ready >= want { "True" } else { "False" };
    let cur = d.status.as_ref();
    let same = cur.is_some_and(|s| {
        s.replicas.unwrap_or(0) == replicas
            && s.updated_replicas.unwrap_or(0) == updated
            && s.ready_replicas.unwrap_or(0) == ready
            && s.available_replicas.unwrap_or(0) == ready
            && s.observed_generation == Some(generation)
            && s.conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Available" && c.status == available)
    });
    if same {
        return None;
    }
    let rs = format!("{}-{hash}", d.metadata.name.as_deref().unwrap_or_default());
    Some(json!({
        "observedGeneration": generation, "replicas": replicas, "updatedReplicas": updated,
        "readyReplicas": ready, "availableReplicas": ready, "unavailableReplicas": (replicas - ready).max(0),
        "conditions": [
            {"type": "Available", "status": available,
             "reason": if available == "True" { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" },
             "message": if available == "True" { "Deployment has minimum availability." } else { "Deployment does not have minimum availability." },
             "lastUpdateTime": now, "lastTransitionTime": now},
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
             "message": format!("ReplicaSet \"{rs}\" has successfully progressed."),
             "lastUpdateTime": now, "lastTransitionTime": now}]
    }))
}

/// The first of `candidates` (the node's pod addresses in order,
/// [`crate::net::ClusterNet::pod_ips`]) not in `used`.
pub fn allocate_ip(
    mut candidates: impl Iterator<Item = Ipv4Addr>,
    used: &BTreeSet<Ipv4Addr>,
) -> Option<Ipv4Addr> {
    candidates.find(|ip| !used.contains(ip))
}

/// Restart back-off after `restarts` crashes: 250 ms doubling up to 10 s (a kubelet caps at 5 min).
pub fn backoff(restarts: u32) -> Duration {
    Duration::from_millis(250u64.saturating_mul(1 << restarts.min(6))).min(Duration::from_secs(10))
}

/// The value of a `fieldRef` env var.
pub fn field_ref(
    pod: &Pod,
    path: &str,
    pod_ip: std::net::IpAddr,
    host_ip: std::net::IpAddr,
) -> Option<String> {
    let spec = pod.spec.as_ref();
    Some(match path {
        "metadata.name" => pod.metadata.name.clone()?,
        "metadata.namespace" => pod.metadata.namespace.clone()?,
        "metadata.uid" => pod.metadata.uid.clone()?,
        "spec.nodeName" => spec?.node_name.clone()?,
        "spec.serviceAccountName" => spec?
            .service_account_name
            .clone()
            .unwrap_or_else(|| "default".into()),
        "status.podIP" => pod_ip.to_string(),
        "status.hostIP" => host_ip.to_string(),
        _ => return None,
    })
}

/// The argv of a container: `command` (its first word a local binary or a path) + `args`, or the
/// image's binary + `args`.
pub fn argv(c: &Container, resolve: impl Fn(&str) -> String) -> Vec<String> {
    let mut out = match c.command.as_deref() {
        Some([first, rest @ ..]) => {
            let mut v = vec![if first.contains('/') {
                first.clone()
            } else {
                resolve(first)
            }];
            v.extend(rest.iter().cloned());
            v
        }
        _ => vec![resolve(&image_binary(
            c.image.as_deref().unwrap_or_default(),
        ))],
    };
    out.extend(c.args.iter().flatten().cloned());
    out
}

/// The port and path of an httpGet readiness probe (named ports resolved).
pub fn readiness_http(c: &Container) -> Option<(u16, String)> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let get = c.readiness_probe.as_ref()?.http_get.as_ref()?;
    let port = match &get.port {
        IntOrString::Int(p) => *p,
        IntOrString::String(name) => {
            c.ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name))?
                .container_port
        }
    };
    Some((
        u16::try_from(port).ok()?,
        get.path.clone().unwrap_or_else(|| "/".into()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy(replicas: i32, image: &str) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "demo", "uid": "d-1", "generation": 2},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": image}]}}}
        }))
        .unwrap()
    }

    #[test]
    fn image_names_map_to_binaries() {
        assert_eq!(image_binary("kwg-gateway:dev"), "kwg-gateway");
        assert_eq!(image_binary("ghcr.io/x/kwg-gateway:v1.2"), "kwg-gateway");
        assert_eq!(image_binary("localhost:5000/kwg-sim@sha256:abc"), "kwg-sim");
        assert_eq!(image_binary("kwg-sim"), "kwg-sim");
    }

    #[test]
    fn deployment_status_counts_ready_pods_once() {
        let mut d = deploy(1, "kwg-sim");
        let mut p = new_pod(&d, "aaaaa", "node-1").unwrap();
        p.status = serde_json::from_value(
            json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}),
        )
        .unwrap();
        let st = deployment_status(&d, &[&p], "2026-01-01T00:00:00Z").unwrap();
        assert_eq!(
            (
                st["readyReplicas"].as_i64(),
                st["updatedReplicas"].as_i64(),
                st["observedGeneration"].as_i64()
            ),
            (Some(1), Some(1), Some(2))
        );
        assert_eq!(st["conditions"][0]["status"], "True");
        d.status = serde_json::from_value(st).unwrap();
        assert_eq!(
            deployment_status(&d, &[&p], "later"),
            None,
            "no patch when nothing changed"
        );
    }

    #[test]
    fn ip_allocation_backoff_and_argv() {
        let used: BTreeSet<Ipv4Addr> = [Ipv4Addr::new(10, 244, 0, 2)].into();
        let net = crate::net::ClusterNet::default();
        assert_eq!(
            allocate_ip(net.pod_ips(), &used),
            Some(Ipv4Addr::new(10, 244, 0, 3))
        );
        assert_eq!(backoff(0), Duration::from_millis(250));
        assert_eq!(backoff(20), Duration::from_secs(10));
        let c: Container = serde_json::from_value(
            json!({"name": "c", "image": "ghcr.io/x/kwg-sim:1", "args": ["workload", "http"]}),
        )
        .unwrap();
        assert_eq!(
            argv(&c, |b| format!("/bin/{b}")),
            ["/bin/kwg-sim", "workload", "http"]
        );
        let c: Container = serde_json::from_value(
            json!({"name": "c", "image": "x", "command": ["/bin/sh", "-c"], "args": ["exit 1"]}),
        )
        .unwrap();
        assert_eq!(argv(&c, |b| b.to_string()), ["/bin/sh", "-c", "exit 1"]);
    }
}
