//! `pods/portforward` as an API server with the kubelet behind it answers kubectl 1.31+:
//!
//! - WebSocket first (client-go `tools/portforward/tunneling_dialer.go`): `GET` with
//!   `Upgrade: websocket` and subprotocol `SPDY/3.1+portforward.k8s.io`; the SPDY/3.1 byte
//!   stream then rides in binary WebSocket messages (`tunneling_connection.go`).
//! - SPDY fallback (`transport/spdy`): `POST` with `Upgrade: SPDY/3.1` and
//!   `X-Stream-Protocol-Version: portforward.k8s.io`; answered `101` with the same headers.
//!   kubectl falls back when the WebSocket upgrade gets any non-101 answer
//!   (`httpstream.IsUpgradeFailure`), a 403 included.
//!
//! - WebSocket without a `SPDY/3.1+` subprotocol (kube-rs, older client-go): the API server
//!   proxies it to the kubelet, which speaks the channel protocol (`channel.rs`).
//!
//! Authorization as the request-info filter of a 1.32 server does it: the verb comes from the
//! method (`GET` → `get`, `POST` → `create`) on `pods/portforward`, before the options are
//! decoded (400 for bad `ports`) and the pod is looked up (404). The synthetic `create` check
//! for WebSocket upgrades (`AuthorizePodWebsocketUpgradeCreatePermission`) only exists from
//! 1.35 on, so a 1.32 WebSocket upgrade needs `get` alone.

pub mod channel;
mod session;
pub mod spdy;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::{Message, Role};
use tokio_util::sync::CancellationToken;

use crate::Shared;
use crate::http::{Body, error_response, full};
use crate::kinds::find;
use crate::rbac::{self, Attrs};
use crate::status::ApiError;

pub use session::Target;

/// A server-side WebSocket on an upgraded HTTP connection.
pub type WsStream = tokio_tungstenite::WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Where a pod's network namespace is: `f(namespace, pod)` → `/run/netns/...`.
pub type NetnsSource = Arc<dyn Fn(&str, &str) -> Option<PathBuf> + Send + Sync>;

/// The WebSocket subprotocol of SPDY tunnelled over WebSocket (`WebsocketsSPDYTunnelingPrefix`
/// + `portforward.k8s.io`).
const WS_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";
/// `WebsocketsSPDYTunnelingPrefix`: an offered subprotocol with it sends the request to the
/// API server's tunnelling handler (`IsWebSocketRequestWithTunnelingProtocol`).
const TUNNEL_PREFIX: &str = "SPDY/3.1+";
/// The port-forward protocol over SPDY (`PortForwardProtocolV1Name`).
const PORTFORWARD_V1: &str = "portforward.k8s.io";
const STREAM_PROTOCOL: &str = "X-Stream-Protocol-Version";

/// `(namespace, pod)` of a `/api/v1/namespaces/NS/pods/NAME/portforward` path.
pub(crate) fn target_of(path: &str) -> Option<(String, String)> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        ["api", "v1", "namespaces", ns, "pods", name, "portforward"] => {
            Some((ns.to_string(), name.to_string()))
        }
        _ => None,
    }
}

fn header_values<'a>(req: &'a Request<Incoming>, name: &str) -> Vec<&'a str> {
    req.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect()
}

/// Answer a port-forward request: an error, or `101` with the session running on the upgrade.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    mut req: Request<Incoming>,
    ns: &str,
    name: &str,
) -> Response<Body> {
    match start(&shared, &mut req, ns, name) {
        Ok(r) => r,
        Err(e) => error_response(&e),
    }
}

fn start(
    shared: &Arc<Shared>,
    req: &mut Request<Incoming>,
    ns: &str,
    name: &str,
) -> Result<Response<Body>, ApiError> {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(ApiError::unauthorized)?;
    let user = shared.user(token).ok_or_else(ApiError::unauthorized)?;
    let verb = match *req.method() {
        Method::GET => "get",
        Method::POST => "create",
        _ => return Err(ApiError::method_not_allowed()),
    };
    let attrs = Attrs::Resource {
        verb: verb.into(),
        group: String::new(),
        resource: "pods".into(),
        subresource: "portforward".into(),
        namespace: ns.into(),
        name: name.into(),
    };
    if !rbac::allowed(&shared.store(), &user, &attrs) {
        return Err(rbac::forbidden(&user, &attrs));
    }
    let ports = channel::parse_ports(req.uri().query())?;
    let pods = find("", "v1", "pods").expect("pods are served");
    let pod = shared
        .store()
        .get(pods, ns, name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(pods, name))?;
    if pod["spec"]["nodeName"].as_str().unwrap_or("").is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    let uid = pod["metadata"]["uid"]
        .as_str()
        .unwrap_or("")
        .replace('-', "");
    let netns = shared
        .netns
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .and_then(|f| f(ns, name));
    let target = Arc::new(Target {
        pod_ip: pod["status"]["podIP"]
            .as_str()
            .and_then(|s| s.parse::<IpAddr>().ok()),
        netns,
        // A CRI sandbox id is 64 hex digits; derived from the pod's uid.
        sandbox: format!("{uid}{uid}").chars().take(64).collect(),
    });
    let upgrade = header_values(req, "upgrade").join(",").to_ascii_lowercase();
    let tunnel = header_values(req, "sec-websocket-protocol")
        .iter()
        .any(|p| p.starts_with(TUNNEL_PREFIX));
    if upgrade.contains("websocket") && tunnel {
        websocket(shared, req, target)
    } else if upgrade.contains("websocket") {
        Ok(channels(shared, req, target, ports))
    } else if upgrade.contains("spdy/3.1") {
        spdy_upgrade(shared, req, target)
    } else {
        Err(ApiError::bad_request(
            "Upgrade request required".to_string(),
        ))
    }
}

fn switching(headers: &[(&str, String)]) -> Response<Body> {
    let mut resp = full(StatusCode::SWITCHING_PROTOCOLS, "text/plain", Vec::new());
    resp.headers_mut().remove(header::CONTENT_TYPE);
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(k.as_bytes()),
            http::HeaderValue::from_str(v),
        ) {
            resp.headers_mut().insert(k, v);
        }
    }
    resp
}

/// Accept a WebSocket upgrade: the `Sec-WebSocket-Accept` answer (None without a key), with
/// `serve` run on the upgraded connection.
fn accept_websocket<F, Fut>(
    shared: &Arc<Shared>,
    req: &mut Request<Incoming>,
    serve: F,
) -> Option<String>
where
    F: FnOnce(WsStream, CancellationToken) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let key = req.headers().get("sec-websocket-key")?;
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(req);
    let stop = shared.shutdown.clone();
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let ws = WsStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        serve(ws, stop).await;
    });
    Some(accept)
}

fn websocket(
    shared: &Arc<Shared>,
    req: &mut Request<Incoming>,
    target: Arc<Target>,
) -> Result<Response<Body>, ApiError> {
    let offered = header_values(req, "sec-websocket-protocol");
    if !offered.contains(&WS_TUNNEL) {
        return Err(ApiError::bad_request(format!(
            "unable to upgrade: unable to match protocol: client supports {offered:?}, server supports [\"{WS_TUNNEL}\"]"
        )));
    }
    let accept = accept_websocket(shared, req, move |ws, stop| async move {
        let (sink, stream) = ws.split();
        let input = stream
            .take_while(|m| futures::future::ready(!matches!(m, Ok(Message::Close(_)))))
            .filter_map(|m| async move {
                match m {
                    Ok(Message::Binary(b)) => Some(Ok(b)),
                    Ok(Message::Text(_)) => {
                        Some(Err(std::io::Error::other("invalid message type received")))
                    }
                    Ok(_) => None,
                    Err(e) => Some(Err(std::io::Error::other(e))),
                }
            });
        let output = sink
            .sink_map_err(std::io::Error::other)
            .with(|b: Bytes| futures::future::ready(Ok(Message::Binary(b))));
        session::serve(Box::pin(input), Box::pin(output), target, stop).await;
    })
    .ok_or_else(|| ApiError::bad_request("missing Sec-WebSocket-Key"))?;
    Ok(switching(&[
        ("connection", "Upgrade".into()),
        ("upgrade", "websocket".into()),
        ("sec-websocket-accept", accept),
        ("sec-websocket-protocol", WS_TUNNEL.into()),
    ]))
}

/// The kubelet's WebSocket port-forward (`handleWebSocketStreams`), proxied unchanged.
fn channels(
    shared: &Arc<Shared>,
    req: &mut Request<Incoming>,
    target: Arc<Target>,
    ports: Vec<u16>,
) -> Response<Body> {
    if let Err(text) = channel::check_ports(&ports) {
        // The kubelet's 400, passed through by the API server's upgrade-aware proxy.
        return full(StatusCode::BAD_REQUEST, "text/plain", text.into_bytes());
    }
    let offered = header_values(req, "sec-websocket-protocol");
    let Some((protocol, codec)) = channel::negotiate(&offered) else {
        // x/net/websocket: a handshake error is a bare 403.
        return full(StatusCode::FORBIDDEN, "text/plain", Vec::new());
    };
    let serve = move |ws, stop| channel::serve(ws, codec, ports, target, stop);
    let Some(accept) = accept_websocket(shared, req, serve) else {
        return full(
            StatusCode::BAD_REQUEST,
            "text/plain",
            b"Bad Request".to_vec(),
        );
    };
    let mut headers = vec![
        ("connection", "Upgrade".to_string()),
        ("upgrade", "websocket".into()),
        ("sec-websocket-accept", accept),
    ];
    if !protocol.is_empty() {
        headers.push(("sec-websocket-protocol", protocol.into()));
    }
    switching(&headers)
}

fn spdy_upgrade(
    shared: &Arc<Shared>,
    req: &mut Request<Incoming>,
    target: Arc<Target>,
) -> Result<Response<Body>, ApiError> {
    let offered = header_values(req, STREAM_PROTOCOL);
    if !offered.contains(&PORTFORWARD_V1) {
        // apimachinery httpstream.Handshake answers 403 with this text.
        let text = format!(
            "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports [\"{PORTFORWARD_V1}\"]"
        );
        return Ok(full(StatusCode::FORBIDDEN, "text/plain", text.into_bytes()));
    }
    let on_upgrade = hyper::upgrade::on(req);
    let stop = shared.shutdown.clone();
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let (r, w) = tokio::io::split(TokioIo::new(upgraded));
        let input = futures::stream::unfold(r, |mut r| async move {
            let mut buf = vec![0u8; 64 * 1024];
            match r.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(Bytes::from(buf)), r))
                }
                Err(e) => Some((Err(e), r)),
            }
        });
        let output = futures::sink::unfold(w, |mut w, b: Bytes| async move {
            w.write_all(&b).await?;
            Ok::<_, std::io::Error>(w)
        });
        session::serve(Box::pin(input), Box::pin(output), target, stop).await;
    });
    Ok(switching(&[
        ("connection", "Upgrade".into()),
        ("upgrade", "SPDY/3.1".into()),
        (STREAM_PROTOCOL, PORTFORWARD_V1.into()),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            target_of("/api/v1/namespaces/emojivoto/pods/web-1/portforward"),
            Some(("emojivoto".into(), "web-1".into()))
        );
        assert_eq!(target_of("/api/v1/namespaces/x/pods/p/log"), None);
    }
}
