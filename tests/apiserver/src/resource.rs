//! Resource requests: verbs on `/api/v1/...` and `/apis/<group>/<version>/...` paths.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Response, header};
use serde_json::{Value, json};

use crate::http::{Body, Req, authorize, json_response, stream_response};
use crate::kinds::{Kind, find};
use crate::ops;
use crate::patch::PatchKind;
use crate::rbac::{Attrs, User};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::status::ApiError;
use crate::watch::{self, WatchParams};
use crate::{Shared, podlog, scale, table};

/// Subresources of a namespace (`/api/v1/namespaces/NAME/status`), not namespaced resources.
const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];

pub(crate) fn resource(
    shared: &Arc<Shared>,
    req: &Req,
    user: &User,
    group: &str,
    version: &str,
    rest: &[&str],
) -> Result<Response<Body>, ApiError> {
    let namespaced_path = rest.len() >= 3
        && rest[0] == "namespaces"
        && !(group.is_empty() && rest.len() == 3 && NAMESPACE_SUBRESOURCES.contains(&rest[2]));
    let (ns, res, name, sub) = if namespaced_path {
        (rest[1], rest[2], rest.get(3).copied(), rest.get(4).copied())
    } else {
        ("", rest[0], rest.get(1).copied(), rest.get(2).copied())
    };
    if rest.len() > if namespaced_path { 5 } else { 3 } {
        return Err(ApiError::unknown_path());
    }
    let watching = matches!(req.param("watch"), "1" | "true");
    let verb = match (req.method, name.is_some()) {
        (&Method::GET, _) if watching => "watch",
        (&Method::GET, true) => "get",
        (&Method::GET, false) => "list",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, true) => "delete",
        (&Method::DELETE, false) => "deletecollection",
        _ => return Err(ApiError::method_not_allowed()),
    };
    // As the real RequestInfoFactory: a list or watch whose fieldSelector names one object
    // (`metadata.name=x`) is authorized as a request for that name, so a Role with
    // `resourceNames: [x]` and the list/watch verbs allows it.
    let selected = match (req.method, name) {
        (&Method::GET, None) => crate::selectors::FieldSelector::parse(req.param("fieldSelector"))
            .ok()
            .and_then(|f| f.exact("metadata.name").map(str::to_owned))
            .filter(|n| valid_path_segment(n)),
        _ => None,
    };
    let attrs = Attrs::Resource {
        verb: verb.into(),
        group: group.into(),
        resource: res.into(),
        subresource: sub.unwrap_or("").into(),
        namespace: ns.into(),
        name: name.map(str::to_owned).or(selected).unwrap_or_default(),
    };
    authorize(shared, user, &attrs)?;
    let kind = find(group, version, res).ok_or_else(ApiError::unknown_path)?;
    if (!kind.namespaced && namespaced_path) || sub.is_some_and(|s| !kind.subresources.contains(&s))
    {
        return Err(ApiError::unknown_path());
    }
    if !kind.verbs.contains(&verb) {
        return Err(ApiError::method_not_allowed());
    }
    if kind.is("authentication.k8s.io", "selfsubjectreviews") {
        let review = json!({"apiVersion": kind.api_version(), "kind": kind.kind, "metadata": {"creationTimestamp": null},
            "status": {"userInfo": {"username": user.name, "groups": user.groups}}});
        return Ok(json_response(201, &review));
    }
    if kind.is("authorization.k8s.io", "selfsubjectrulesreviews") {
        return crate::reviews::self_subject_rules_review(shared, req, user, kind);
    }
    if kind.is("authorization.k8s.io", "selfsubjectaccessreviews") {
        return crate::reviews::access_review(shared, req, Some(user), kind);
    }
    if kind.is("authorization.k8s.io", "subjectaccessreviews") {
        let count = &shared.subject_access_reviews;
        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let body = req.json_body().unwrap_or_default();
        let user = body["spec"]["user"].as_str().unwrap_or("").to_string();
        let mut by_user = shared.subject_access_reviews_by_user.lock().unwrap();
        *by_user.entry(user).or_default() += 1;
        drop(by_user);
        return crate::reviews::access_review(shared, req, None, kind);
    }
    if sub == Some("token") {
        return match (verb, name) {
            ("create", Some(name)) => crate::token_request::create(shared, req, ns, name),
            _ => Err(ApiError::method_not_allowed()),
        };
    }
    let scoped = || {
        if kind.namespaced && ns.is_empty() {
            Err(ApiError::method_not_allowed())
        } else {
            Ok(())
        }
    };
    let name = name.unwrap_or("");
    let sub_verbs: &[&str] = if sub == Some("log") {
        &["get"]
    } else {
        &["get", "update", "patch"]
    };
    if sub.is_some() && !sub_verbs.contains(&verb) {
        return Err(ApiError::method_not_allowed());
    }
    if sub == Some("log") {
        let source = shared
            .logs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let r = podlog::LogRequest {
            namespace: ns,
            pod: name,
            container: req.param("container"),
            follow: req.param("follow") == "true",
            tail_lines: req.param("tailLines").parse().ok(),
        };
        return Ok(stream_response(
            "text/plain",
            podlog::start(shared, source, r)?,
        ));
    }
    if sub == Some("scale") {
        let body = if matches!(verb, "update" | "patch") {
            Some(req.json_body()?)
        } else {
            None
        };
        let change = match (verb, &body) {
            ("get", _) => scale::Change::Get,
            ("update", Some(b)) => scale::Change::Replace(b.clone()),
            ("patch", Some(b)) => scale::Change::Patch(patch_kind(req)?, b),
            _ => return Err(ApiError::method_not_allowed()),
        };
        let out = scale::handle(
            &mut shared.store(),
            &shared.env,
            kind,
            ns,
            name,
            change,
            req.opts(user),
        )?;
        return Ok(json_response(200, &out));
    }
    match verb {
        "get" => {
            let obj = shared
                .store()
                .get(kind, ns, name)
                .cloned()
                .ok_or_else(|| ApiError::not_found(kind, name))?;
            if req.wants_table() {
                let rv = crate::store::meta_str(&obj, "resourceVersion")
                    .parse()
                    .unwrap_or(0);
                return Ok(json_response(200, &table::table(kind, [&obj], rv, req.now)));
            }
            Ok(json_response(200, &obj))
        }
        "list" => list(shared, req, kind, ns),
        "watch" => watch(shared, req, kind, ns, name),
        "create" => {
            scoped()?;
            let obj = ops::create(
                &mut shared.store(),
                &shared.env,
                kind,
                ns,
                req.json_body()?,
                req.opts(user),
            )?;
            controllers(shared, req, kind, &obj);
            Ok(json_response(201, &obj))
        }
        "update" => {
            let body = req.json_body()?;
            let obj = ops::update(
                &mut shared.store(),
                &shared.env,
                kind,
                ns,
                name,
                body,
                sub,
                req.opts(user),
            )?;
            controllers(shared, req, kind, &obj);
            Ok(json_response(200, &obj))
        }
        "patch" => {
            let pk = patch_kind(req)?;
            let body = req.json_body()?;
            let (obj, created) = ops::patch(
                &mut shared.store(),
                &shared.env,
                kind,
                ns,
                name,
                pk,
                &body,
                sub,
                req.opts(user),
            )?;
            controllers(shared, req, kind, &obj);
            Ok(json_response(if created { 201 } else { 200 }, &obj))
        }
        "delete" => {
            // DeleteOptions.preconditions (uid, resourceVersion), checked under the same lock
            // as the delete, as the real server does.
            let options = match req.body.is_empty() {
                true => Value::Null,
                false => req.json_body()?,
            };
            let obj = {
                let mut store = shared.store();
                if let Some(current) = store.get(kind, ns, name) {
                    check_preconditions(kind, name, current, &options["preconditions"])?;
                }
                ops::delete(&mut store, kind, ns, name, req.opts(user))?
            };
            if !req.opts(user).dry_run {
                crate::events::mirror_delete(&mut shared.store(), kind, &obj);
            }
            let mut details =
                json!({"name": name, "kind": kind.plural, "uid": obj["metadata"]["uid"]});
            if !kind.group.is_empty() {
                details["group"] = json!(kind.group);
            }
            Ok(json_response(
                200,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}),
            ))
        }
        "deletecollection" => {
            let (labels, fields) = selectors(req)?;
            let scope = (!ns.is_empty()).then_some(ns);
            let items = ops::delete_collection(
                &mut shared.store(),
                kind,
                scope,
                &labels,
                &fields,
                req.opts(user),
            )?;
            if !req.opts(user).dry_run {
                for item in &items {
                    crate::events::mirror_delete(&mut shared.store(), kind, item);
                }
            }
            let rv = shared.store().current_rv();
            Ok(json_response(200, &list_doc(kind, items, rv)))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// What the cluster's controllers do after a write (the answer is the object as written, the
/// controllers' changes follow as watch events).
fn controllers(shared: &Shared, req: &Req, kind: &Kind, obj: &Value) {
    if req.param("dryRun") == "All" {
        return;
    }
    crate::events::mirror_write(&mut shared.store(), kind, obj);
    if kind.is("", "secrets") {
        let meta = |f| crate::store::meta_str(obj, f).to_string();
        crate::tokens::reconcile(shared, &meta("namespace"), &meta("name"));
    }
}

fn patch_kind(req: &Req) -> Result<PatchKind, ApiError> {
    let ct = req.header(header::CONTENT_TYPE);
    PatchKind::from_content_type(ct).ok_or_else(|| unsupported_media(ct))
}

fn unsupported_media(ct: &str) -> ApiError {
    let mut e = ApiError::bad_request(format!(
        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {ct:?})"
    ));
    e.code = 415;
    e.reason = "UnsupportedMediaType";
    e
}

fn selectors(req: &Req) -> Result<(LabelSelector, FieldSelector), ApiError> {
    Ok((
        LabelSelector::parse(req.param("labelSelector"))?,
        FieldSelector::parse(req.param("fieldSelector"))?,
    ))
}

fn list_doc(kind: &Kind, items: Vec<Value>, rv: u64) -> Value {
    json!({
        "kind": kind.list_kind(),
        "apiVersion": kind.api_version(),
        "metadata": {"resourceVersion": rv.to_string()},
        "items": items,
    })
}

fn list(
    shared: &Shared,
    req: &Req,
    kind: &'static Kind,
    ns: &str,
) -> Result<Response<Body>, ApiError> {
    let (labels, fields) = selectors(req)?;
    let store = shared.store();
    let scope = (!ns.is_empty()).then_some(ns);
    let items: Vec<&Value> = store
        .list(kind, scope)
        .into_iter()
        .filter(|o| labels.matches(o) && fields.matches(o))
        .collect();
    let rv = store.current_rv();
    if req.wants_table() {
        return Ok(json_response(200, &table::table(kind, items, rv, req.now)));
    }
    let items = items.into_iter().cloned().collect();
    Ok(json_response(200, &list_doc(kind, items, rv)))
}

fn watch(
    shared: &Arc<Shared>,
    req: &Req,
    kind: &'static Kind,
    ns: &str,
    name: &str,
) -> Result<Response<Body>, ApiError> {
    let mut field_text = req.param("fieldSelector").to_string();
    if !name.is_empty() {
        field_text = format!(
            "metadata.name={name}{}{field_text}",
            if field_text.is_empty() { "" } else { "," }
        );
    }
    let resource_version = match req.param("resourceVersion") {
        "" | "0" => None,
        rv => Some(
            rv.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv:?}")))?,
        ),
    };
    let timeout = req
        .param("timeoutSeconds")
        .parse::<u64>()
        .ok()
        .filter(|t| *t > 0)
        .unwrap_or(1800);
    let params = WatchParams {
        kind,
        namespace: (!ns.is_empty()).then(|| ns.to_string()),
        labels: LabelSelector::parse(req.param("labelSelector"))?,
        fields: FieldSelector::parse(&field_text)?,
        resource_version,
        timeout: Duration::from_secs(timeout),
        table: req.wants_table(),
        send_initial_events: req.param("sendInitialEvents") == "true",
    };
    Ok(stream_response(
        "application/json",
        watch::start(shared, params),
    ))
}

/// A delete's preconditions against the stored object: 409 Conflict with the real server's
/// sentence when its uid or resourceVersion differs.
fn check_preconditions(
    kind: &Kind,
    name: &str,
    current: &Value,
    preconditions: &Value,
) -> Result<(), ApiError> {
    for (field, label) in [("uid", "UID"), ("resourceVersion", "ResourceVersion")] {
        let Some(want) = preconditions[field].as_str() else {
            continue;
        };
        let have = crate::store::meta_str(current, field);
        if want != have {
            let mut e = ApiError::conflict(kind, name);
            e.message = format!(
                "Precondition failed: {label} in precondition: {want}, {label} in object meta: {have}"
            );
            return Err(e);
        }
    }
    Ok(())
}

/// apimachinery's `path.IsValidPathSegmentName`: a name that can stand in a URL path.
fn valid_path_segment(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '%'])
}
