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

/// Time since the first timestamp found at `pointers`, like kubectl's AGE.
fn since(obj: &Value, pointers: &[&str], now: DateTime<Utc>) -> Value {
    let created = pointers
        .iter()
        .filter_map(|p| obj.pointer(p).and_then(Value::as_str))
        .find_map(|t| DateTime::parse_from_rfc3339(t).ok());
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

/// kubectl's pod STATUS: a waiting/terminated container's reason wins over the phase.
fn pod_status(pod: &Value) -> Value {
    let st = &pod["status"];
    let mut reason = st["reason"]
        .as_str()
        .or(st["phase"].as_str())
        .unwrap_or("")
        .to_string();
    for c in st["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .rev()
    {
        let state = &c["state"];
        if let Some(r) = state["waiting"]["reason"]
            .as_str()
            .filter(|r| !r.is_empty())
        {
            reason = r.to_string();
        } else if let Some(r) = state["terminated"]["reason"]
            .as_str()
            .filter(|r| !r.is_empty())
        {
            reason = r.to_string();
        } else if let Some(code) = state["terminated"]["exitCode"].as_i64() {
            reason = format!("ExitCode:{code}");
        }
    }
    if !pod["metadata"]["deletionTimestamp"].is_null() {
        reason = "Terminating".into();
    }
    json!(reason)
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

/// A Table column.
enum Col {
    Name,
    /// Header and the timestamps (JSON pointers, first present wins) to show the age of.
    Since(&'static str, &'static [&'static str]),
    /// Header, type, priority (1: only with `-o wide`), cell.
    Data(&'static str, &'static str, u8, Cell),
}

const AGE: Col = Col::Since("Age", &["/metadata/creationTimestamp"]);

/// The columns of a kind: NAME, the kind's own, AGE (events differ, like the real server).
fn columns(kind: &Kind) -> Vec<Col> {
    use Col::Data;
    let middle = match (kind.group, kind.plural) {
        ("", "namespaces") => vec![Data("Status", "string", 0, |o| s(&o["status"]["phase"]))],
        ("", "secrets") => {
            vec![
                Data("Type", "string", 0, |o| s(&o["type"])),
                Data("Data", "integer", 0, |o| count(&o["data"])),
            ]
        }
        ("", "configmaps") => vec![Data("Data", "integer", 0, |o| count(&o["data"]))],
        ("", "services") => vec![
            Data("Type", "string", 0, |o| s(&o["spec"]["type"])),
            Data("Cluster-IP", "string", 0, |o| {
                or_none(&o["spec"]["clusterIP"])
            }),
            Data("External-IP", "string", 0, external_ip),
            Data("Port(s)", "string", 0, ports),
        ],
        ("", "pods") => {
            return vec![
                Col::Name,
                Data("Ready", "string", 0, pod_ready),
                Data("Status", "string", 0, pod_status),
                Data("Restarts", "string", 0, pod_restarts),
                AGE,
                Data("IP", "string", 0, |o| or_none(&o["status"]["podIP"])),
                Data("Node", "string", 1, |o| or_none(&o["spec"]["nodeName"])),
            ];
        }
        ("apps", "deployments") => vec![
            Data("Ready", "string", 0, deploy_ready),
            Data("Up-to-date", "integer", 0, |o| {
                json!(o["status"]["updatedReplicas"].as_i64().unwrap_or(0))
            }),
            Data("Available", "integer", 0, |o| {
                json!(o["status"]["availableReplicas"].as_i64().unwrap_or(0))
            }),
        ],
        ("", "nodes") => {
            let version = Data("Version", "string", 0, |o| {
                s(&o["status"]["nodeInfo"]["kubeletVersion"])
            });
            return vec![
                Col::Name,
                Data("Status", "string", 0, node_status),
                AGE,
                version,
            ];
        }
        ("", "events") => {
            return vec![
                Col::Since(
                    "Last Seen",
                    &[
                        "/lastTimestamp",
                        "/eventTime",
                        "/metadata/creationTimestamp",
                    ],
                ),
                Data("Type", "string", 0, |o| s(&o["type"])),
                Data("Reason", "string", 0, |o| s(&o["reason"])),
                Data("Object", "string", 0, |o| {
                    let kind = o["involvedObject"]["kind"]
                        .as_str()
                        .unwrap_or("")
                        .to_ascii_lowercase();
                    json!(format!(
                        "{kind}/{}",
                        o["involvedObject"]["name"].as_str().unwrap_or("")
                    ))
                }),
                Data("Message", "string", 0, |o| s(&o["message"])),
            ];
        }
        ("", "serviceaccounts") => vec![Data("Secrets", "integer", 0, |o| count(&o["secrets"]))],
        ("admissionregistration.k8s.io", "validatingadmissionpolicies") => vec![
            Data("Validations", "integer", 0, |o| {
                count(&o["spec"]["validations"])
            }),
            Data("ParamKind", "string", 0, |o| {
                let k = &o["spec"]["paramKind"];
                json!(match (k["apiVersion"].as_str(), k["kind"].as_str()) {
                    (Some(v), Some(kind)) => format!("{v}/{kind}"),
                    _ => "<unset>".into(),
                })
            }),
        ],
        ("admissionregistration.k8s.io", "validatingadmissionpolicybindings") => vec![
            Data("PolicyName", "string", 0, |o| s(&o["spec"]["policyName"])),
            Data("ParamRef", "string", 0, |o| {
                let r = &o["spec"]["paramRef"];
                json!(match (r["namespace"].as_str(), r["name"].as_str()) {
                    (_, None | Some("")) => "<unset>".to_string(),
                    (None | Some(""), Some(n)) => format!("*/{n}"),
                    (Some(ns), Some(n)) => format!("{ns}/{n}"),
                })
            }),
        ],
        ("rbac.authorization.k8s.io", "rolebindings")
        | ("rbac.authorization.k8s.io", "clusterrolebindings") => {
            vec![Data("Role", "string", 0, |o| {
                let r = &o["roleRef"];
                json!(format!(
                    "{}/{}",
                    r["kind"].as_str().unwrap_or(""),
                    r["name"].as_str().unwrap_or("")
                ))
            })]
        }
        _ => vec![],
    };
    let mut cols = vec![Col::Name];
    cols.extend(middle);
    cols.push(AGE);
    cols
}

/// A `meta.k8s.io/v1` Table of `objects`.
pub fn table<'a>(
    kind: &Kind,
    objects: impl IntoIterator<Item = &'a Value>,
    rv: u64,
    now: DateTime<Utc>,
) -> Value {
    let cols = columns(kind);
    let defs: Vec<Value> = cols
        .iter()
        .map(|c| {
            let (name, ty, format, priority) = match c {
                Col::Name => ("Name", "string", "name", 0),
                Col::Since(h, _) => (*h, "string", "", 0),
                Col::Data(h, t, p, _) => (*h, *t, "", *p),
            };
            json!({"name": name, "type": ty, "format": format, "description": name, "priority": priority})
        })
        .collect();
    let rows: Vec<Value> = objects
        .into_iter()
        .map(|o| {
            let cells: Vec<Value> = cols
                .iter()
                .map(|c| match c {
                    Col::Name => o["metadata"]["name"].clone(),
                    Col::Since(_, pointers) => since(o, pointers, now),
                    Col::Data(_, _, _, f) => f(o),
                })
                .collect();
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
    fn pod_status_shows_container_reasons() {
        let pod = json!({"status": {"phase": "Pending", "containerStatuses": [{"state": {"waiting": {"reason": "ErrImageNeverPull"}}}]}});
        assert_eq!(pod_status(&pod), "ErrImageNeverPull");
        assert_eq!(
            pod_status(&json!({"status": {"phase": "Running"}})),
            "Running"
        );
    }

    #[test]
    fn durations_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(150), "2m30s");
        assert_eq!(human_duration(3600 * 5 + 60), "5h1m");
        assert_eq!(human_duration(86400 * 3), "3d");
    }
}
