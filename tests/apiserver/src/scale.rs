//! The `scale` subresource of Deployments and ReplicaSets (`kubectl scale`).

use serde_json::{Value, json};

use crate::kinds::Kind;
use crate::ops::{self, Env, WriteOpts};
use crate::patch::{self, PatchKind};
use crate::status::{ApiError, FieldError};
use crate::store::{Store, meta_str};

/// An `autoscaling/v1` Scale view of a workload.
pub fn to_scale(obj: &Value) -> Value {
    let selector: Vec<String> = obj["spec"]["selector"]["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    let m = &obj["metadata"];
    json!({
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {"name": m["name"], "namespace": m["namespace"], "uid": m["uid"],
                     "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"]},
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(0)},
        "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector.join(",")},
    })
}

/// What a scale request carries.
pub enum Change<'a> {
    Get,
    Replace(Value),
    Patch(PatchKind, &'a Value),
}

#[allow(clippy::too_many_arguments)]
pub fn handle(
    store: &mut Store,
    env: &Env,
    kind: &'static Kind,
    ns: &str,
    name: &str,
    change: Change,
    opts: WriteOpts,
) -> Result<Value, ApiError> {
    let current = store
        .get(kind, ns, name)
        .ok_or_else(|| ApiError::not_found(kind, name))?
        .clone();
    let wanted = match change {
        Change::Get => return Ok(to_scale(&current)),
        Change::Replace(v) => v,
        Change::Patch(pk, body) => patch::apply(pk, &to_scale(&current), body)?,
    };
    let replicas = wanted["spec"]["replicas"]
        .as_i64()
        .filter(|r| *r >= 0)
        .ok_or_else(|| {
            let e = FieldError::invalid(
                "spec.replicas",
                wanted["spec"]["replicas"].to_string(),
                "must be greater than or equal to 0",
            );
            ApiError::invalid(kind, name, vec![e])
        })?;
    let mut obj = current.clone();
    obj["spec"]["replicas"] = json!(replicas);
    let rv = meta_str(&wanted, "resourceVersion");
    if !rv.is_empty() {
        obj["metadata"]["resourceVersion"] = json!(rv);
    }
    let updated = ops::update(store, env, kind, ns, name, obj, None, opts)?;
    Ok(to_scale(&updated))
}
