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
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::ReceiverStream;

use crate::ops::WriteOpts;
use crate::rbac::{self, Attrs, User};
use crate::status::ApiError;
use crate::{Shared, discovery};

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
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc);
    tokio::select! {
        r = conn => if let Err(e) = r { tracing::debug!(error = %e, "connection ended"); },
        _ = shared.shutdown.cancelled() => {}
    }
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    if let Some((ns, pod)) = crate::portforward::target_of(req.uri().path()) {
        return crate::portforward::handle(shared, req, &ns, &pod).await;
    }
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
        warnings: std::sync::Mutex::default(),
    };
    let mut resp = match route(&shared, &req) {
        Ok(r) => r,
        Err(e) => error_response(&e),
    };
    let warnings = req.warnings.lock().map(|w| w.clone()).unwrap_or_default();
    for w in warnings {
        // RFC 7234 warn-code 299 with agent "-", as the real server sends admission warnings.
        let text = format!("299 - {w:?}");
        if let Ok(v) = http::HeaderValue::from_str(&text) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
    tracing::debug!(method = %parts.method, path = %parts.uri, code = resp.status().as_u16(), "request");
    resp
}

pub(crate) struct Req<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub q: &'a HashMap<String, String>,
    pub headers: &'a HeaderMap,
    pub body: Bytes,
    pub now: DateTime<Utc>,
    /// Warnings for the response (`Warning` headers), e.g. from admission policies.
    pub warnings: std::sync::Mutex<Vec<String>>,
}

impl Req<'_> {
    pub fn param(&self, k: &str) -> &str {
        self.q.get(k).map(String::as_str).unwrap_or("")
    }

    pub fn header(&self, h: header::HeaderName) -> &str {
        self.headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn wants_table(&self) -> bool {
        self.header(header::ACCEPT)
            .split(',')
            .next()
            .is_some_and(|first| first.contains("as=Table"))
    }

    /// Write options of a request by `user`.
    pub fn opts<'u>(&'u self, user: &'u User) -> WriteOpts<'u> {
        WriteOpts {
            dry_run: self.param("dryRun") == "All",
            now: self.now,
            user: Some(user),
            warnings: Some(&self.warnings),
        }
    }

    pub fn json_body(&self) -> Result<Value, ApiError> {
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

pub(crate) fn percent_decode(s: &str) -> String {
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

pub(crate) fn full(code: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)).boxed())
        .expect("static response parts are valid")
}

pub(crate) fn json_response(code: u16, v: &Value) -> Response<Body> {
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    full(
        code,
        "application/json",
        serde_json::to_vec(v).unwrap_or_default(),
    )
}

pub(crate) fn error_response(e: &ApiError) -> Response<Body> {
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

pub(crate) fn authorize(shared: &Shared, user: &User, a: &Attrs) -> Result<(), ApiError> {
    if rbac::allowed(&shared.store(), user, a) {
        Ok(())
    } else {
        Err(rbac::forbidden(user, a))
    }
}

/// The one series of kube-apiserver's `/metrics` this server keeps: SubjectAccessReviews
/// created (how many reviews a client such as the kwg gateway asks), in kube-apiserver's
/// name and labels (`kubectl get --raw /metrics`, as the admin); then kwg-sim's own series of
/// the same reviews by their `spec.user` (kube-apiserver has none), so that a test can count
/// one subject's reviews while other subjects' are asked.
fn metrics(shared: &Shared) -> String {
    let n = (shared.subject_access_reviews).load(std::sync::atomic::Ordering::Relaxed);
    let mut out = format!(
        "# HELP apiserver_request_total Counter of apiserver requests broken out for each verb, dry run value, group, version, resource, scope, component, and HTTP response code.\n\
         # TYPE apiserver_request_total counter\n\
         apiserver_request_total{{code=\"201\",component=\"apiserver\",dry_run=\"\",group=\"authorization.k8s.io\",resource=\"subjectaccessreviews\",scope=\"cluster\",subresource=\"\",verb=\"POST\",version=\"v1\"}} {n}\n"
    );
    out.push_str(
        "# HELP kwg_sim_subject_access_reviews_total SubjectAccessReviews created, by spec.user (kwg-sim only).\n\
         # TYPE kwg_sim_subject_access_reviews_total counter\n",
    );
    for (user, n) in shared.subject_access_reviews_by_user.lock().unwrap().iter() {
        let user = user.replace('\\', "\\\\").replace('"', "\\\"");
        out.push_str(&format!(
            "kwg_sim_subject_access_reviews_total{{user=\"{user}\"}} {n}\n"
        ));
    }
    out
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
        ["metrics"] => non_resource(Some(Value::Null)).map(|_| {
            full(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                metrics(shared).into_bytes(),
            )
        }),
        ["openapi", "v2"] => non_resource(Some(Value::Null)).map(|_| {
            let (content_type, doc) = discovery::openapi_v2(req.header(header::ACCEPT));
            full(StatusCode::OK, content_type, doc)
        }),
        ["openapi", "v3"] => non_resource(Some(discovery::openapi_v3_index())),
        ["openapi", "v3", rest @ ..] => non_resource(discovery::openapi_v3_doc(&rest.join("/"))),
        ["api", v, rest @ ..] => crate::resource::resource(shared, req, &user, "", v, rest),
        ["apis", g, v, rest @ ..] => crate::resource::resource(shared, req, &user, g, v, rest),
        _ => non_resource(None),
    }
}

/// A streamed response (watch events, followed logs).
pub(crate) fn stream_response(
    content_type: &str,
    rx: tokio::sync::mpsc::Receiver<Bytes>,
) -> Response<Body> {
    let stream = ReceiverStream::new(rx).map(|b| Ok::<_, Infallible>(Frame::data(b)));
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .expect("static response parts are valid")
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
