//! The HTTP layer: TLS accept loop, authentication, authorization and routing to the store.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::ReceiverStream;

use crate::kinds::{Kind, find};
use crate::ops::{self, WriteOpts};
use crate::patch::PatchKind;
use crate::rbac::{self, Attrs, User};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::status::ApiError;
use crate::watch::{self, WatchParams};
use crate::{Shared, discovery, podlog, scale, table};

pub type Body = BoxBody<Bytes, Infallible>;

/// Accept TLS connections until shutdown.
pub async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((tcp, _)) => {
                tokio::spawn(connection(shared.clone(), tcp));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn connection(shared: Arc<Shared>, tcp: TcpStream) {
    let _ = tcp.set_nodelay(true);
    let tls = tokio::select! {
        _ = shared.shutdown.cancelled() => return,
        r = shared.tls.accept(tcp) => match r {
            Ok(t) => t,
            Err(e) => {
                tracing::debug!(error = %e, "TLS handshake failed");
                return;
            }
        },
    };
    let s = shared.clone();
    let svc = hyper::service::service_fn(move |req| {
        let s = s.clone();
        async move { Ok::<_, Infallible>(handle(s, req).await) }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(TokioIo::new(tls), svc);
    tokio::select! {
        r = conn => if let Err(e) = r { tracing::debug!(error = %e, "connection ended"); },
        _ = shared.shutdown.cancelled() => {}
    }
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return error_response(&ApiError::bad_request(format!(
                "reading the request body: {e}"
            )));
        }
    };
    let q = parse_query(parts.uri.query().unwrap_or(""));
    let req = Req {
        method: &parts.method,
        path: parts.uri.path(),
        q: &q,
        headers: &parts.headers,
        body,
        now: Utc::now(),
    };
    let resp = match route(&shared, &req) {
        Ok(r) => r,
        Err(e) => error_response(&e),
    };
    tracing::debug!(method = %parts.method, path = %parts.uri, code = resp.status().as_u16(), "request");
    resp
}

struct Req<'a> {
    method: &'a Method,
    path: &'a str,
    q: &'a HashMap<String, String>,
    headers: &'a HeaderMap,
    body: Bytes,
    now: DateTime<Utc>,
}

impl Req<'_> {
    fn param(&self, k: &str) -> &str {
        self.q.get(k).map(String::as_str).unwrap_or("")
    }

    fn header(&self, h: header::HeaderName) -> &str {
        self.headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    fn wants_table(&self) -> bool {
        self.header(header::ACCEPT)
            .split(',')
            .next()
            .is_some_and(|first| first.contains("as=Table"))
    }

    fn opts(&self) -> WriteOpts {
        WriteOpts {
            dry_run: self.param("dryRun") == "All",
            now: self.now,
        }
    }

    fn json_body(&self) -> Result<Value, ApiError> {
        if self.body.starts_with(crate::protobuf::MAGIC) {
            return crate::protobuf::to_json(&self.body);
        }
        serde_json::from_slice(&self.body)
            .or_else(|_| serde_yaml_ng::from_slice::<Value>(&self.body))
            .map_err(|e| {
                ApiError::bad_request(format!(
                    "the body of the request was in an unknown format: {e}"
                ))
            })
    }
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_query(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn full(code: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)).boxed())
        .expect("static response parts are valid")
}

fn json_response(code: u16, v: &Value) -> Response<Body> {
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    full(
        code,
        "application/json",
        serde_json::to_vec(v).unwrap_or_default(),
    )
}

fn error_response(e: &ApiError) -> Response<Body> {
    json_response(e.code, &e.to_status())
}

fn authenticate(shared: &Shared, req: &Req) -> Result<User, ApiError> {
    let auth = req.header(header::AUTHORIZATION);
    let token = auth
        .strip_prefix("Bearer ")
        .map(str::trim)
        .ok_or_else(ApiError::unauthorized)?;
    shared.user(token).ok_or_else(ApiError::unauthorized)
}

fn authorize(shared: &Shared, user: &User, a: &Attrs) -> Result<(), ApiError> {
    if rbac::allowed(&shared.store(), user, a) {
        Ok(())
    } else {
        Err(rbac::forbidden(user, a))
    }
}

fn route(shared: &Arc<Shared>, req: &Req) -> Result<Response<Body>, ApiError> {
    let path = req.path;
    if ["/healthz", "/readyz", "/livez"]
        .iter()
        .any(|p| path == *p || path.starts_with(&format!("{p}/")))
    {
        return Ok(full(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            b"ok".to_vec(),
        ));
    }
    if path == "/version" || path == "/version/" {
        return Ok(json_response(200, &discovery::version()));
    }
    let user = authenticate(shared, req)?;
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let non_resource = |doc: Option<Value>| -> Result<Response<Body>, ApiError> {
        let verb = req.method.as_str().to_ascii_lowercase();
        authorize(
            shared,
            &user,
            &Attrs::NonResource {
                verb,
                path: path.to_string(),
            },
        )?;
        doc.map(|d| json_response(200, &d))
            .ok_or_else(ApiError::unknown_path)
    };
    match segs.as_slice() {
        ["api"] => non_resource(Some(discovery::api_versions())),
        ["apis"] => non_resource(Some(discovery::api_group_list())),
        ["api", v] => non_resource(discovery::resource_list("", v)),
        ["apis", g] => non_resource(discovery::api_group(g)),
        ["apis", g, v] => non_resource(discovery::resource_list(g, v)),
        ["openapi", "v3"] => non_resource(Some(discovery::openapi_v3_index())),
        ["openapi", "v3", rest @ ..] => non_resource(discovery::openapi_v3_doc(&rest.join("/"))),
        ["api", v, rest @ ..] => resource(shared, req, &user, "", v, rest),
        ["apis", g, v, rest @ ..] => resource(shared, req, &user, g, v, rest),
        _ => non_resource(None),
    }
}

/// Subresources of a namespace (`/api/v1/namespaces/NAME/status`), not namespaced resources.
const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];

fn resource(
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
    let attrs = Attrs::Resource {
        verb: verb.into(),
        group: group.into(),
        resource: res.into(),
        subresource: sub.unwrap_or("").into(),
        namespace: ns.into(),
        name: name.unwrap_or("").into(),
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
    if kind.is("authorization.k8s.io", "selfsubjectaccessreviews") {
        return self_subject_access_review(shared, req, user, kind);
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
            req.opts(),
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
                req.opts(),
            )?;
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
                req.opts(),
            )?;
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
                req.opts(),
            )?;
            Ok(json_response(if created { 201 } else { 200 }, &obj))
        }
        "delete" => {
            let obj = ops::delete(&mut shared.store(), kind, ns, name, req.opts().dry_run)?;
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
                req.opts().dry_run,
            )?;
            let rv = shared.store().current_rv();
            Ok(json_response(200, &list_doc(kind, items, rv)))
        }
        _ => Err(ApiError::method_not_allowed()),
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

/// A streamed response (watch events, followed logs).
fn stream_response(content_type: &str, rx: tokio::sync::mpsc::Receiver<Bytes>) -> Response<Body> {
    let stream = ReceiverStream::new(rx).map(|b| Ok::<_, Infallible>(Frame::data(b)));
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .expect("static response parts are valid")
}

fn self_subject_access_review(
    shared: &Shared,
    req: &Req,
    user: &User,
    kind: &Kind,
) -> Result<Response<Body>, ApiError> {
    let mut review = req.json_body()?;
    let spec = &review["spec"];
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    let attrs = if let Some(r) = spec.get("resourceAttributes").filter(|r| r.is_object()) {
        Attrs::Resource {
            verb: s(&r["verb"]),
            group: s(&r["group"]),
            resource: s(&r["resource"]),
            subresource: s(&r["subresource"]),
            namespace: s(&r["namespace"]),
            name: s(&r["name"]),
        }
    } else if let Some(n) = spec.get("nonResourceAttributes").filter(|r| r.is_object()) {
        Attrs::NonResource {
            verb: s(&n["verb"]),
            path: s(&n["path"]),
        }
    } else {
        return Err(ApiError::bad_request(
            "spec.resourceAttributes or spec.nonResourceAttributes is required",
        ));
    };
    let allowed = rbac::allowed(&shared.store(), user, &attrs);
    review["apiVersion"] = json!(kind.api_version());
    review["kind"] = json!(kind.kind);
    if !review["metadata"].is_object() {
        review["metadata"] = json!({});
    }
    review["metadata"]["creationTimestamp"] = Value::Null;
    review["status"] = json!({"allowed": allowed});
    Ok(json_response(201, &review))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let q = parse_query("labelSelector=app%3Dweb%2Ctier+in+%28a%29&watch=1&x");
        assert_eq!(q["labelSelector"], "app=web,tier in (a)");
        assert_eq!(q["watch"], "1");
        assert_eq!(q["x"], "");
        assert_eq!(percent_decode("%4"), "%4");
    }
}
