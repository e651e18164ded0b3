//! Kind-specific defaulting and validation on writes (everything else is generic).

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use crate::families::{ServiceCidrs, allocate_cluster_ips, init_ip_families};
use crate::kinds::Kind;
use crate::status::{ApiError, FieldError, go_str};
use crate::store::{Store, meta_str};
use crate::validation::{allocate_node_port, check_node_port, config_key_errors, services_in_use};

/// What hooks may look at.
pub struct Ctx<'a> {
    pub store: &'a Store,
    pub service_cidrs: ServiceCidrs,
}

fn invalid(kind: &Kind, obj: &Value, errs: Vec<FieldError>) -> Result<(), ApiError> {
    if errs.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(kind, meta_str(obj, "name"), errs))
    }
}

/// Defaulting and validation before a create.
pub fn on_create(ctx: &Ctx, kind: &'static Kind, obj: &mut Value) -> Result<(), ApiError> {
    match (kind.group, kind.plural) {
        ("", "secrets") => secret(kind, obj),
        ("", "configmaps") => invalid(kind, obj, data_key_errors(obj, "data")),
        ("", "namespaces") => {
            let name = meta_str(obj, "name").to_string();
            obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
            obj["status"] = json!({"phase": "Active"});
            Ok(())
        }
        ("", "services") => service(ctx, kind, None, obj),
        ("discovery.k8s.io", "endpointslices") => invalid(
            kind,
            obj,
            crate::validation::endpoint_slice_errors(None, obj),
        ),
        ("", "pods") => {
            obj["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
            default_pod_spec(&mut obj["spec"]);
            Ok(())
        }
        ("admissionregistration.k8s.io", _) => {
            invalid(kind, obj, crate::admission::config_errors(kind, obj))
        }
        ("apps", "deployments") | ("apps", "replicasets") => {
            let spec = &mut obj["spec"];
            default(spec, "replicas", json!(1));
            default(spec, "revisionHistoryLimit", json!(10));
            if kind.plural == "deployments" {
                default(spec, "progressDeadlineSeconds", json!(600));
                default(
                    spec,
                    "strategy",
                    json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}),
                );
            }
            default_pod_spec(&mut spec["template"]["spec"]);
            obj["status"] = json!({});
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Defaulting and validation before an update (`old` is the stored object).
pub fn on_update(
    ctx: &Ctx,
    kind: &'static Kind,
    old: &Value,
    obj: &mut Value,
) -> Result<(), ApiError> {
    match (kind.group, kind.plural) {
        ("", "secrets") => secret(kind, obj),
        ("", "configmaps") => invalid(kind, obj, data_key_errors(obj, "data")),
        ("", "services") => service(ctx, kind, Some(old), obj),
        ("discovery.k8s.io", "endpointslices") => invalid(
            kind,
            obj,
            crate::validation::endpoint_slice_errors(Some(old), obj),
        ),
        ("admissionregistration.k8s.io", _) => {
            invalid(kind, obj, crate::admission::config_errors(kind, obj))
        }
        _ => Ok(()),
    }
}

fn default(obj: &mut Value, field: &str, value: Value) {
    if obj.get(field).is_none_or(Value::is_null) {
        obj[field] = value;
    }
}

fn default_pod_spec(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    default(spec, "restartPolicy", json!("Always"));
    default(spec, "dnsPolicy", json!("ClusterFirst"));
    default(spec, "terminationGracePeriodSeconds", json!(30));
    default(spec, "schedulerName", json!("default-scheduler"));
    for c in spec["containers"].as_array_mut().into_iter().flatten() {
        let latest = c["image"].as_str().is_some_and(|i| {
            !i.rsplit('/').next().unwrap_or(i).contains(':') || i.ends_with(":latest")
        });
        default(
            c,
            "imagePullPolicy",
            json!(if latest { "Always" } else { "IfNotPresent" }),
        );
        default(c, "terminationMessagePath", json!("/dev/termination-log"));
        default(c, "terminationMessagePolicy", json!("File"));
        for p in c["ports"].as_array_mut().into_iter().flatten() {
            default(p, "protocol", json!("TCP"));
        }
    }
}

fn data_key_errors(obj: &Value, field: &str) -> Vec<FieldError> {
    obj[field]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, _)| config_key_errors(field, k))
        .collect()
}

/// Fold `stringData` into base64 `data`, check `data` is base64, default the type.
fn secret(kind: &'static Kind, obj: &mut Value) -> Result<(), ApiError> {
    if let Some(Value::Object(sd)) = obj.as_object_mut().and_then(|o| o.remove("stringData")) {
        for (k, v) in sd {
            let text = v.as_str().unwrap_or_default().to_string();
            obj["data"][k] = json!(B64.encode(text));
        }
    }
    for (_, v) in obj["data"].as_object().into_iter().flatten() {
        let ok = v.as_str().is_some_and(|s| B64.decode(s).is_ok()) || v.is_null();
        if !ok {
            return Err(ApiError::bad_request(format!(
                "Secret in version \"v1\" cannot be handled as a Secret: illegal base64 data at input byte 0 ({v})"
            )));
        }
    }
    default(obj, "type", json!("Opaque"));
    let mut errs = Vec::new();
    let sa = crate::tokens::NAME_ANNOTATION;
    if obj["type"] == crate::tokens::TOKEN_TYPE
        && obj["metadata"]["annotations"][sa]
            .as_str()
            .is_none_or(str::is_empty)
    {
        errs.push(FieldError::required(
            format!("metadata.annotations[{sa}]"),
            "",
        ));
    }
    errs.extend(data_key_errors(obj, "data"));
    invalid(kind, obj, errs)
}

const SERVICE_TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];

/// Service defaulting, ClusterIP and NodePort allocation/validation.
fn service(
    ctx: &Ctx,
    kind: &'static Kind,
    old: Option<&Value>,
    obj: &mut Value,
) -> Result<(), ApiError> {
    let me = (
        meta_str(obj, "namespace").to_string(),
        meta_str(obj, "name").to_string(),
    );
    let (used_ips, mut used_ports) =
        services_in_use(ctx.store.list(kind, None).into_iter(), (&me.0, &me.1));
    let spec = &mut obj["spec"];
    if !spec.is_object() {
        *spec = json!({});
    }
    default(spec, "type", json!("ClusterIP"));
    default(spec, "sessionAffinity", json!("None"));
    let ty = spec["type"].as_str().unwrap_or("").to_string();
    if !SERVICE_TYPES.contains(&ty.as_str()) {
        let e = FieldError::not_supported("spec.type", go_str(&ty), SERVICE_TYPES);
        return invalid(kind, obj, vec![e]);
    }
    let old_spec = old.map(|o| &o["spec"]);
    let mut errs = Vec::new();
    // Ports: protocol and targetPort defaults, NodePorts kept from the old object or allocated.
    let wants_node_ports = ty == "NodePort" || ty == "LoadBalancer";
    // As the real allocator (registry/core/service/storage/alloc.go, allocNodePorts): ports
    // with the same port number (TCP and UDP of one service, e.g. DNS) share one NodePort.
    let mut by_port: HashMap<i64, u16> = HashMap::new();
    for (i, p) in spec["ports"]
        .as_array_mut()
        .into_iter()
        .flatten()
        .enumerate()
    {
        default(p, "protocol", json!("TCP"));
        if p.get("targetPort").is_none() {
            p["targetPort"] = p["port"].clone();
        }
        if !wants_node_ports {
            if let Some(o) = p.as_object_mut() {
                o.remove("nodePort");
            }
            continue;
        }
        let kept = old_spec.and_then(|s| {
            s["ports"]
                .as_array()?
                .iter()
                .find(|op| op["port"] == p["port"] && op["protocol"] == p["protocol"])?["nodePort"]
                .as_i64()
        });
        let port = p["port"].as_i64().unwrap_or_default();
        let shared = by_port.get(&port).copied();
        match p["nodePort"].as_i64() {
            Some(np) if Some(np) == kept => {}
            Some(np) if shared.is_some_and(|s| i64::from(s) == np) => {}
            None if shared.is_some() => p["nodePort"] = json!(shared),
            Some(np) => match check_node_port(i, np, &used_ports) {
                Ok(np) => {
                    used_ports.insert(np);
                }
                Err(e) => errs.push(e),
            },
            None => {
                let np = kept
                    .and_then(|k| u16::try_from(k).ok())
                    .or_else(|| allocate_node_port(&used_ports));
                if let Some(np) = np {
                    used_ports.insert(np);
                    p["nodePort"] = json!(np);
                }
            }
        }
        if let Some(np) = p["nodePort"].as_i64().and_then(|n| u16::try_from(n).ok()) {
            by_port.entry(port).or_insert(np);
        }
    }
    if ty == "ExternalName" {
        return invalid(kind, obj, errs);
    }
    // ClusterIPs: families defaulted and checked, addresses kept, validated or allocated.
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect()
    };
    let old_ips = old_spec
        .map(|s| strings(&s["clusterIPs"]))
        .filter(|v| !v.is_empty())
        .or_else(|| {
            old_spec
                .and_then(|s| s["clusterIP"].as_str())
                .map(|ip| vec![ip.to_string()])
        })
        .unwrap_or_default();
    let mut requested = strings(&spec["clusterIPs"]);
    if requested.is_empty() {
        if let Some(ip) = spec["clusterIP"].as_str().filter(|s| !s.is_empty()) {
            requested = vec![ip.to_string()];
        } else {
            requested = old_ips.clone();
        }
    }
    if let (Some(req), Some(prev)) = (requested.first(), old_ips.first())
        && req != prev
    {
        errs.push(FieldError::invalid(
            "spec.clusterIPs[0]",
            go_str(req),
            "may not change once set",
        ));
        return invalid(kind, obj, errs);
    }
    if requested.is_empty() {
        if let Some(o) = spec.as_object_mut() {
            o.remove("clusterIPs");
        }
    } else {
        spec["clusterIPs"] = json!(requested);
    }
    let fam_errs = init_ip_families(spec, old_spec, &ctx.service_cidrs);
    if !fam_errs.is_empty() {
        errs.extend(fam_errs);
        return invalid(kind, obj, errs);
    }
    let ips = if requested.first().map(String::as_str) == Some("None") {
        Ok(vec!["None".to_string()])
    } else {
        let mut used = used_ips;
        allocate_cluster_ips(spec, &old_ips, &ctx.service_cidrs, &mut used)
    };
    match ips {
        Ok(ips) => {
            spec["clusterIP"] = json!(ips[0]);
            spec["clusterIPs"] = json!(ips);
            default(spec, "internalTrafficPolicy", json!("Cluster"));
        }
        Err(e) => errs.push(e),
    }
    if old.is_none() {
        obj["status"] = json!({"loadBalancer": {}});
    }
    invalid(kind, obj, errs)
}

/// Objects the real controllers create for a new object (ServiceAccount `default` and
/// ConfigMap `kube-root-ca.crt` in every namespace).
pub fn children(
    kind: &Kind,
    obj: &Value,
    ca_pem: &str,
) -> Vec<(&'static str, &'static str, Value)> {
    if !kind.is("", "namespaces") {
        return Vec::new();
    }
    let ns = meta_str(obj, "name");
    vec![
        (
            "",
            "serviceaccounts",
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": ns}}),
        ),
        (
            "",
            "configmaps",
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kube-root-ca.crt", "namespace": ns}, "data": {"ca.crt": ca_pem}}),
        ),
    ]
}
