//! Create, update, patch and delete on the store: one generic path plus `hooks`.

use std::sync::Mutex;

use chrono::{DateTime, SecondsFormat, Utc};
use ipnet::IpNet;
use rand::Rng;
use serde_json::{Value, json};

use crate::admission::{self, Operation};
use crate::hooks::{self, Ctx};
use crate::kinds::{Kind, find};
use crate::patch::{self, PatchKind};
use crate::rbac::User;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::status::{ApiError, FieldError, go_str};
use crate::store::{Store, meta_str};
use crate::validation::name_errors;

/// Server-wide settings writes depend on.
#[derive(Debug, Clone)]
pub struct Env {
    pub service_cidr: IpNet,
    /// A second Service CIDR of the other family (a dual-stack cluster).
    pub service_cidr_secondary: Option<IpNet>,
    pub ca_pem: String,
}

impl Env {
    /// The Service CIDRs, primary first.
    pub fn service_cidrs(&self) -> crate::families::ServiceCidrs {
        crate::families::ServiceCidrs {
            primary: self.service_cidr,
            secondary: self.service_cidr_secondary,
        }
    }
}

/// Options common to writes.
#[derive(Debug, Clone, Copy)]
pub struct WriteOpts<'u> {
    pub dry_run: bool,
    pub now: DateTime<Utc>,
    /// The requesting user: admission (ValidatingAdmissionPolicy) runs for user requests,
    /// not for the server's own writes (bootstrap, controllers).
    pub user: Option<&'u User>,
    /// Where admission warnings go (the response's `Warning` headers).
    pub warnings: Option<&'u Mutex<Vec<String>>>,
}

impl WriteOpts<'_> {
    /// The same options for a controller's write (no admission).
    pub fn as_controller(self) -> WriteOpts<'static> {
        WriteOpts {
            dry_run: self.dry_run,
            now: self.now,
            user: None,
            warnings: None,
        }
    }
}

/// Run admission for a user's request.
fn admit(store: &Store, opts: WriteOpts, a: Attrs) -> Result<(), ApiError> {
    let Some(user) = opts.user else {
        return Ok(());
    };
    let warned = admission::validate(
        store,
        &admission::Attributes {
            operation: a.0,
            kind: a.1,
            subresource: a.2,
            namespace: a.3,
            name: a.4,
            object: a.5,
            old_object: a.6,
            user,
            dry_run: opts.dry_run,
        },
    )?;
    if let Some(w) = opts.warnings {
        w.lock().unwrap_or_else(|p| p.into_inner()).extend(warned);
    }
    Ok(())
}

/// (operation, kind, subresource, namespace, name, object, old object)
type Attrs<'a> = (
    Operation,
    &'static Kind,
    &'a str,
    &'a str,
    &'a str,
    Option<&'a Value>,
    Option<&'a Value>,
);

pub fn timestamp(now: DateTime<Utc>) -> String {
    now.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The suffix `generateName` gets (the real server's alphabet, no vowels).
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn namespaces() -> &'static Kind {
    find("", "v1", "namespaces").expect("namespaces are served")
}

/// Set kind/apiVersion and reconcile `metadata.namespace` with the URL's namespace.
fn normalize(kind: &'static Kind, ns: &str, obj: &mut Value) -> Result<(), ApiError> {
    if !obj.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request was in an unknown format",
        ));
    }
    obj["apiVersion"] = json!(kind.api_version());
    obj["kind"] = json!(kind.kind);
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    let meta = obj["metadata"]
        .as_object_mut()
        .expect("metadata is an object");
    if kind.namespaced {
        let body_ns = meta.get("namespace").and_then(Value::as_str).unwrap_or("");
        if !body_ns.is_empty() && body_ns != ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        meta.insert("namespace".into(), json!(ns));
    } else {
        meta.remove("namespace");
    }
    Ok(())
}

pub fn create(
    store: &mut Store,
    env: &Env,
    kind: &'static Kind,
    ns: &str,
    mut obj: Value,
    opts: WriteOpts,
) -> Result<Value, ApiError> {
    normalize(kind, ns, &mut obj)?;
    let mut name = meta_str(&obj, "name").to_string();
    if name.is_empty() {
        let generate = meta_str(&obj, "generateName");
        if generate.is_empty() {
            let e = FieldError::required("metadata.name", "name or generateName is required");
            return Err(ApiError::invalid(kind, "", vec![e]));
        }
        name = format!("{generate}{}", random_suffix());
        obj["metadata"]["name"] = json!(name);
    }
    let errs = name_errors(kind.name_rule, &name);
    if !errs.is_empty() {
        return Err(ApiError::invalid(kind, &name, errs));
    }
    if kind.namespaced && store.get(namespaces(), "", ns).is_none() {
        return Err(ApiError::namespace_not_found(ns));
    }
    if store.get(kind, ns, &name).is_some() {
        return Err(ApiError::already_exists(kind, &name));
    }
    let meta = obj["metadata"]
        .as_object_mut()
        .expect("metadata is an object");
    meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    meta.insert("creationTimestamp".into(), json!(timestamp(opts.now)));
    for drop in [
        "resourceVersion",
        "deletionTimestamp",
        "managedFields",
        "selfLink",
    ] {
        meta.remove(drop);
    }
    if kind.generation {
        meta.insert("generation".into(), json!(1));
    }
    hooks::on_create(
        &Ctx {
            store,
            service_cidrs: env.service_cidrs(),
        },
        kind,
        &mut obj,
    )?;
    let a = (
        Operation::Create,
        kind,
        "",
        ns,
        name.as_str(),
        Some(&obj),
        None,
    );
    admit(store, opts, a)?;
    if opts.dry_run {
        return Ok(obj);
    }
    let stored = store.put(kind, obj);
    for (group, plural, child) in hooks::children(kind, &stored, &env.ca_pem) {
        if let Some(k) = find(group, "v1", plural) {
            let child_ns = meta_str(&child, "namespace").to_string();
            // A child that already exists is fine.
            let _ = create(store, env, k, &child_ns, child, opts.as_controller());
        }
    }
    Ok(stored)
}

/// Replace an object (PUT), or its status with `subresource == Some("status")`.
#[allow(clippy::too_many_arguments)]
pub fn update(
    store: &mut Store,
    env: &Env,
    kind: &'static Kind,
    ns: &str,
    name: &str,
    mut obj: Value,
    subresource: Option<&str>,
    opts: WriteOpts,
) -> Result<Value, ApiError> {
    normalize(kind, ns, &mut obj)?;
    let body_name = meta_str(&obj, "name");
    if body_name.is_empty() {
        obj["metadata"]["name"] = json!(name);
    } else if body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    let old = store
        .get(kind, ns, name)
        .ok_or_else(|| ApiError::not_found(kind, name))?
        .clone();
    let want_rv = meta_str(&obj, "resourceVersion");
    if !want_rv.is_empty() && want_rv != meta_str(&old, "resourceVersion") {
        return Err(ApiError::conflict(kind, name));
    }
    if subresource == Some("status") {
        let status = obj.get("status").cloned().unwrap_or(Value::Null);
        obj = old.clone();
        obj["status"] = status;
    } else if kind.has_status() {
        match old.get("status") {
            Some(s) => obj["status"] = s.clone(),
            None => {
                obj.as_object_mut().map(|o| o.remove("status"));
            }
        }
    }
    for keep in ["uid", "creationTimestamp", "generation", "resourceVersion"] {
        match old["metadata"].get(keep) {
            Some(v) => obj["metadata"][keep] = v.clone(),
            None => {
                obj["metadata"].as_object_mut().map(|m| m.remove(keep));
            }
        }
    }
    hooks::on_update(
        &Ctx {
            store,
            service_cidrs: env.service_cidrs(),
        },
        kind,
        &old,
        &mut obj,
    )?;
    if kind.generation && obj.get("spec") != old.get("spec") {
        let generation = old["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
        obj["metadata"]["generation"] = json!(generation);
    }
    drop_empty_maps(&mut obj);
    let sub = subresource.unwrap_or("");
    let a = (
        Operation::Update,
        kind,
        sub,
        ns,
        name,
        Some(&obj),
        Some(&old),
    );
    admit(store, opts, a)?;
    if obj == old || opts.dry_run {
        return Ok(obj);
    }
    Ok(store.put(kind, obj))
}

/// Go's `omitempty`: an emptied `labels`/`annotations` map disappears.
fn drop_empty_maps(obj: &mut Value) {
    if let Some(meta) = obj["metadata"].as_object_mut() {
        meta.retain(|k, v| {
            !((k == "labels" || k == "annotations") && v.as_object().is_some_and(|m| m.is_empty()))
        });
    }
}

/// Apply a patch; returns the object and whether it was created (server-side apply).
#[allow(clippy::too_many_arguments)]
pub fn patch(
    store: &mut Store,
    env: &Env,
    kind: &'static Kind,
    ns: &str,
    name: &str,
    pk: PatchKind,
    body: &Value,
    subresource: Option<&str>,
    opts: WriteOpts,
) -> Result<(Value, bool), ApiError> {
    let Some(current) = store.get(kind, ns, name).cloned() else {
        if pk == PatchKind::Apply && subresource.is_none() {
            let mut obj = patch::apply(pk, &json!({}), body)?;
            obj["metadata"]["name"] = json!(name);
            return create(store, env, kind, ns, obj, opts).map(|o| (o, true));
        }
        return Err(ApiError::not_found(kind, name));
    };
    let patched = patch::apply(pk, &current, body)?;
    // metadata.uid is immutable: the real server's update validation refuses a patch that
    // names another uid (a client's way to touch only the object it knows), where `update`
    // would quietly put the stored uid back.
    let uid = meta_str(&patched, "uid");
    if !uid.is_empty() && uid != meta_str(&current, "uid") {
        let e = FieldError::invalid("metadata.uid", go_str(uid), "field is immutable");
        return Err(ApiError::invalid(kind, name, vec![e]));
    }
    update(store, env, kind, ns, name, patched, subresource, opts).map(|o| (o, false))
}

/// Namespaces the real server refuses to delete.
const UNDELETABLE: &[&str] = &["default", "kube-system", "kube-public"];

/// Delete one object; deleting a Namespace deletes everything in it.
pub fn delete(
    store: &mut Store,
    kind: &'static Kind,
    ns: &str,
    name: &str,
    opts: WriteOpts,
) -> Result<Value, ApiError> {
    let obj = store
        .get(kind, ns, name)
        .ok_or_else(|| ApiError::not_found(kind, name))?
        .clone();
    if kind.is("", "namespaces") && UNDELETABLE.contains(&name) {
        return Err(ApiError::forbidden(
            "namespaces",
            name,
            "this namespace may not be deleted".into(),
        ));
    }
    admit(
        store,
        opts,
        (Operation::Delete, kind, "", ns, name, None, Some(&obj)),
    )?;
    if opts.dry_run {
        return Ok(obj);
    }
    if kind.is("", "namespaces") {
        for k in crate::kinds::all()
            .iter()
            .filter(|k| k.namespaced && k.stored())
        {
            let names: Vec<String> = store
                .list(k, Some(name))
                .iter()
                .map(|o| meta_str(o, "name").to_string())
                .collect();
            for n in names {
                store.remove(k, name, &n);
            }
        }
    }
    store
        .remove(kind, ns, name)
        .ok_or_else(|| ApiError::not_found(kind, name))
}

/// Delete every object matching the selectors; returns the deleted objects.
pub fn delete_collection(
    store: &mut Store,
    kind: &'static Kind,
    ns: Option<&str>,
    labels: &LabelSelector,
    fields: &FieldSelector,
    opts: WriteOpts,
) -> Result<Vec<Value>, ApiError> {
    let victims: Vec<(String, String)> = store
        .list(kind, ns)
        .into_iter()
        .filter(|o| labels.matches(o) && fields.matches(o))
        .map(|o| {
            (
                meta_str(o, "namespace").to_string(),
                meta_str(o, "name").to_string(),
            )
        })
        .collect();
    // Like the real server: every item is tried (each through admission), the first error
    // is the answer.
    let mut out = Vec::new();
    let mut first_err = None;
    for (n, name) in victims {
        match delete(store, kind, &n, &name, opts) {
            Ok(o) => out.push(o),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    first_err.map_or(Ok(out), Err)
}
