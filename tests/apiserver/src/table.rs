//! Server-side `Table` output (what `kubectl get` prints).

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::kinds::Kind;

/// apimachinery's `duration.HumanDuration`.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    let s = secs.max(0);
    let (m, h) = (s / 60, s / 3600);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        if s % 60 == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{}s", s % 60)
        }
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        if m % 60 == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{}m", m % 60)
        }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        if h % 24 == 0 {
            format!("{}d", h / 24)
        } else {
            format!("{}d{}h", h / 24, h % 24)
        }
    } else if h < 24 * 365 * 2 {
        format!("{}d", h / 24)
    } else if h < 24 * 365 * 8 {
        let y = h / (24 * 365);
        let d = (h / 24) % 365;
        if d == 0 {
            format!("{y}y")
        } else {
            format!("{y}y{d}d")
        }
    } else {
        format!("{}y", h / (24 * 365))
    }
}

type Cell = fn(&Value) -> Value;

fn age(obj: &Value, now: DateTime<Utc>) -> Value {
    let created = obj["metadata"]["creationTimestamp"]
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok());
    match created {
        Some(t) => json!(human_duration((now - t.with_timezone(&Utc)).num_seconds())),
        None => json!("<unknown>"),
    }
}

fn count(v: &Value) -> Value {
    json!(v.as_object().map_or(0, |m| m.len()) + v.as_array().map_or(0, |a| a.len()))
}

fn s(v: &Value) -> Value {
    json!(v.as_str().unwrap_or(""))
}

fn ports(svc: &Value) -> Value {
    let ps: Vec<String> = svc["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let proto = p["protocol"].as_str().unwrap_or("TCP");
            match p["nodePort"].as_u64() {
                Some(np) => format!("{}:{np}/{proto}", p["port"]),
                None => format!("{}/{proto}", p["port"]),
            }
        })
        .collect();
    json!(if ps.is_empty() {
        "<none>".to_string()
    } else {
        ps.join(",")
    })
}

fn external_ip(svc: &Value) -> Value {
    let lb: Vec<String> = svc["status"]["loadBalancer"]["ingress"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| {
            i["ip"]
                .as_str()
                .or(i["hostname"].as_str())
                .map(str::to_string)
        })
        .collect();
    json!(match (svc["spec"]["type"].as_str(), lb.is_empty()) {
        (_, false) => lb.join(","),
        (Some("LoadBalancer"), true) => "<pending>".to_string(),
        (Some("ExternalName"), _) => svc["spec"]["externalName"]
            .as_str()
            .unwrap_or("")
            .to_string(),
        _ => "<none>".to_string(),
    })
}

fn pod_ready(pod: &Value) -> Value {
    let total = pod["spec"]["containers"].as_array().map_or(0, Vec::len);
    let statuses = pod["status"]["containerStatuses"].as_array();
    let ready = statuses
        .into_iter()
        .flatten()
        .filter(|c| c["ready"] == json!(true))
        .count();
    json!(format!("{ready}/{total}"))
}

fn pod_restarts(pod: &Value) -> Value {
    let statuses = pod["status"]["containerStatuses"].as_array();
    json!(
        statuses
            .into_iter()
            .flatten()
            .filter_map(|c| c["restartCount"].as_i64())
            .sum::<i64>()
    )
}

fn deploy_ready(d: &Value) -> Value {
    let ready = d["status"]["readyReplicas"].as_i64().unwrap_or(0);
    json!(format!(
        "{ready}/{}",
        d["spec"]["replicas"].as_i64().unwrap_or(0)
    ))
}

fn node_status(n: &Value) -> Value {
    let ready = n["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready");
    json!(match ready.and_then(|c| c["status"].as_str()) {
        Some("True") => "Ready",
        _ => "NotReady",
    })
}

fn or_none(v: &Value) -> Value {
    match v.as_str() {
        Some(x) if !x.is_empty() => json!(x),
        _ => json!("<none>"),
    }
}

/// Columns between NAME and AGE: (header, type, priority, cell).
fn columns(kind: &Kind) -> Vec<(&'static str, &'static str, u8, Cell)> {
    match (kind.group, kind.plural) {
        ("", "namespaces") => vec![("Status", "string", 0, |o| s(&o["status"]["phase"]))],
        ("", "secrets") => vec![
            ("Type", "string", 0, |o| s(&o["type"])),
            ("Data", "integer", 0, |o| count(&o["data"])),
        ],
        ("", "configmaps") => vec![("Data", "integer", 0, |o| count(&o["data"]))],
        ("", "services") => vec![
            ("Type", "string", 0, |o| s(&o["spec"]["type"])),
            ("Cluster-IP", "string", 0, |o| {
                or_none(&o["spec"]["clusterIP"])
            }),
            ("External-IP", "string", 0, external_ip),
            ("Port(s)", "string", 0, ports),
        ],
        ("", "pods") => vec![
            ("Ready", "string", 0, pod_ready),
            ("Status", "string", 0, |o| s(&o["status"]["phase"])),
            ("Restarts", "string", 0, pod_restarts),
            ("IP", "string", 0, |o| or_none(&o["status"]["podIP"])),
            ("Node", "string", 1, |o| or_none(&o["spec"]["nodeName"])),
        ],
        ("apps", "deployments") => vec![
            ("Ready", "string", 0, deploy_ready),
            ("Up-to-date", "integer", 0, |o| {
                json!(o["status"]["updatedReplicas"].as_i64().unwrap_or(0))
            }),
            ("Available", "integer", 0, |o| {
                json!(o["status"]["availableReplicas"].as_i64().unwrap_or(0))
            }),
        ],
        ("", "nodes") => vec![("Status", "string", 0, node_status)],
        ("", "serviceaccounts") => vec![("Secrets", "integer", 0, |o| count(&o["secrets"]))],
        ("rbac.authorization.k8s.io", "rolebindings")
        | ("rbac.authorization.k8s.io", "clusterrolebindings") => {
            vec![("Role", "string", 0, |o| {
                json!(format!(
                    "{}/{}",
                    o["roleRef"]["kind"].as_str().unwrap_or(""),
                    o["roleRef"]["name"].as_str().unwrap_or("")
                ))
            })]
        }
        _ => vec![],
    }
}

/// A `meta.k8s.io/v1` Table of `objects`.
pub fn table<'a>(
    kind: &Kind,
    objects: impl IntoIterator<Item = &'a Value>,
    rv: u64,
    now: DateTime<Utc>,
) -> Value {
    let cols = columns(kind);
    let mut defs = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0}),
    ];
    defs.extend(cols.iter().map(
        |(n, t, p, _)| json!({"name": n, "type": t, "format": "", "description": n, "priority": p}),
    ));
    defs.push(
        json!({"name": "Age", "type": "string", "format": "", "description": "Age", "priority": 0}),
    );
    let rows: Vec<Value> = objects
        .into_iter()
        .map(|o| {
            let mut cells = vec![o["metadata"]["name"].clone()];
            cells.extend(cols.iter().map(|(_, _, _, f)| f(o)));
            cells.push(age(o, now));
            json!({"cells": cells, "object": o})
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv.to_string()},
        "columnDefinitions": defs,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(150), "2m30s");
        assert_eq!(human_duration(3600 * 5 + 60), "5h1m");
        assert_eq!(human_duration(86400 * 3), "3d");
    }
}
