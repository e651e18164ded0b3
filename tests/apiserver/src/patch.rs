//! Patches: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and the strategic merge
//! patches `kubectl apply`/`label`/`edit` send (merge keys of the built-in kinds, `$patch`,
//! `$retainKeys`, `$setElementOrder`, `$deleteFromPrimitiveList`).

use serde_json::{Map, Value};

use crate::status::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    Json,
    Merge,
    Strategic,
    /// Server-side apply, approximated by a strategic merge of the applied configuration.
    Apply,
}

impl PatchKind {
    pub fn from_content_type(ct: &str) -> Option<Self> {
        match ct.split(';').next().unwrap_or("").trim() {
            "application/json-patch+json" => Some(PatchKind::Json),
            "application/merge-patch+json" => Some(PatchKind::Merge),
            "application/strategic-merge-patch+json" => Some(PatchKind::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => {
                Some(PatchKind::Apply)
            }
            _ => None,
        }
    }
}

/// Apply `patch` to `doc`.
pub fn apply(kind: PatchKind, doc: &Value, patch: &Value) -> Result<Value, ApiError> {
    match kind {
        PatchKind::Json => {
            let p: json_patch::Patch = serde_json::from_value(patch.clone()).map_err(|e| {
                ApiError::bad_request(format!(
                    "the server rejected our request due to an error in our request: {e}"
                ))
            })?;
            let mut out = doc.clone();
            json_patch::patch(&mut out, &p).map_err(|e| ApiError::internal(e.to_string()))?;
            Ok(out)
        }
        PatchKind::Merge => {
            let mut out = doc.clone();
            json_patch::merge(&mut out, patch);
            Ok(out)
        }
        PatchKind::Strategic | PatchKind::Apply => {
            if !patch.is_object() {
                return Err(ApiError::bad_request(
                    "the body of the request was in an unknown format",
                ));
            }
            Ok(strategic(doc, patch, ""))
        }
    }
}

/// The merge key of a list field (`patchMergeKey` of the built-in types), if it merges.
fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    let has = |k: &str| items.iter().any(|i| i.get(k).is_some());
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims"
        | "containerStatuses"
        | "initContainerStatuses" => "name",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "hostAliases" => "ip",
        "conditions" | "addresses" => "type",
        "ownerReferences" => "uid",
        "topologySpreadConstraints" => "topologyKey",
        "ports" if has("containerPort") => "containerPort",
        "ports" if has("port") => "port",
        _ => return None,
    })
}

/// Lists of scalars that merge (union) instead of being replaced.
fn merges_primitives(field: &str) -> bool {
    field == "finalizers"
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

/// `parent`: the field holding `orig` ("" at the object's top level).
fn strategic(orig: &Value, patch: &Value, parent: &str) -> Value {
    let (Some(o), Some(p)) = (orig.as_object(), patch.as_object()) else {
        return strip_directives(patch);
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        return strip_directives(patch);
    }
    let mut out: Map<String, Value> = o.clone();
    for (k, pv) in p {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(cur)), Some(del)) = (out.get_mut(field), pv.as_array()) {
                cur.retain(|x| !del.contains(x));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        match pv {
            Value::Null => {
                out.remove(k);
            }
            Value::Object(pm) if pm.get("$patch").and_then(Value::as_str) == Some("delete") => {
                out.remove(k);
            }
            Value::Object(_) => {
                let merged = strategic(out.get(k).unwrap_or(&Value::Null), pv, k);
                out.insert(k.clone(), merged);
            }
            Value::Array(items) => {
                let merged = match out.get(k) {
                    // No built-in kind merges a top-level list: an EndpointSlice's `ports`
                    // and `endpoints` are atomic (unlike a Service's `spec.ports`).
                    Some(Value::Array(cur)) if !parent.is_empty() => merge_list(k, cur, items),
                    _ => strip_directives(&Value::Array(
                        items
                            .iter()
                            .filter(|i| !is_directive_item(i))
                            .cloned()
                            .collect(),
                    )),
                };
                out.insert(k.clone(), merged);
            }
            other => {
                out.insert(k.clone(), other.clone());
            }
        }
    }
    if let Some(Value::Array(keep)) = p.get("$retainKeys") {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        out.retain(|k, _| keep.contains(&k.as_str()));
    }
    Value::Object(out)
}

fn is_directive_item(v: &Value) -> bool {
    v.get("$patch").is_some()
}

fn merge_list(field: &str, cur: &[Value], patch: &[Value]) -> Value {
    if patch
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        return strip_directives(&Value::Array(
            patch
                .iter()
                .filter(|i| !is_directive_item(i))
                .cloned()
                .collect(),
        ));
    }
    if merges_primitives(field) {
        let mut out = cur.to_vec();
        for p in patch {
            if !out.contains(p) {
                out.push(p.clone());
            }
        }
        return Value::Array(out);
    }
    let Some(mk) = merge_key(field, patch).or_else(|| merge_key(field, cur)) else {
        return strip_directives(&Value::Array(patch.to_vec()));
    };
    let mut out = cur.to_vec();
    for p in patch {
        let Some(id) = p.get(mk) else {
            continue;
        };
        let pos = out.iter().position(|c| c.get(mk) == Some(id));
        let delete = p.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(i), true) => {
                out.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => out[i] = strategic(&out[i], p, field),
            (None, false) => out.push(strip_directives(p)),
        }
    }
    Value::Array(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kubectl_apply_patch_merges_containers_by_name() {
        let cur = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "web", "image": "nginx:1", "ports": [{"containerPort": 80}]},
            {"name": "side", "image": "busybox"}
        ]}}}});
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "web"}, {"name": "side"}],
            "containers": [{"name": "web", "image": "nginx:2"}, {"$patch": "delete", "name": "side"}]
        }}}});
        let out = apply(PatchKind::Strategic, &cur, &patch).unwrap();
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name": "web", "image": "nginx:2", "ports": [{"containerPort": 80}]}])
        );
    }

    #[test]
    fn labels_null_removes_and_retain_keys() {
        let cur = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"strategy": {"type": "Recreate", "rollingUpdate": {"maxSurge": 1}}}});
        let patch = json!({"metadata": {"labels": {"a": null, "c": "3"}}, "spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}});
        let out = apply(PatchKind::Strategic, &cur, &patch).unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"b": "2", "c": "3"}));
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn service_ports_merge_by_port_and_other_lists_replace() {
        let cur = json!({"spec": {"ports": [{"port": 80, "nodePort": 30080}], "selector": {"app": "x"}}, "rules": [1, 2]});
        let patch = json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 81}]}, "rules": [3]});
        let out = apply(PatchKind::Strategic, &cur, &patch).unwrap();
        assert_eq!(
            out["spec"]["ports"],
            json!([{"port": 80, "nodePort": 30080, "targetPort": 8080}, {"port": 81}])
        );
        assert_eq!(out["rules"], json!([3]));
    }

    #[test]
    fn endpoint_slice_ports_and_endpoints_are_replaced() {
        let cur = json!({"kind": "EndpointSlice", "ports": [{"name": "http", "port": 8080}],
                         "endpoints": [{"addresses": ["10.244.0.2"]}]});
        let patch = json!({"ports": [{"name": "http", "port": 80}], "endpoints": [{"addresses": ["10.244.0.6"]}]});
        let out = apply(PatchKind::Strategic, &cur, &patch).unwrap();
        assert_eq!(out["ports"], json!([{"name": "http", "port": 80}]));
        assert_eq!(out["endpoints"], json!([{"addresses": ["10.244.0.6"]}]));
    }

    #[test]
    fn json_and_merge_patches() {
        let cur = json!({"data": {"a": "1"}});
        let out = apply(
            PatchKind::Json,
            &cur,
            &json!([{"op": "add", "path": "/data/b", "value": "2"}]),
        )
        .unwrap();
        assert_eq!(out["data"], json!({"a": "1", "b": "2"}));
        let out = apply(PatchKind::Merge, &out, &json!({"data": {"a": null}})).unwrap();
        assert_eq!(out["data"], json!({"b": "2"}));
    }
}
