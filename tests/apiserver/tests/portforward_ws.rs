//! kube-rs's `Api::portforward` (WebSocket `v4.channel.k8s.io`) against the stand-in: bytes
//! both ways to a listener "in the pod", two ports on one socket, the kubelet's error for a
//! closed port, the 403 of a user who may only `create pods/portforward` (a 1.32 server
//! authorizes the WebSocket GET as `get`), the 404 of a missing pod, the 400s before the upgrade
//! (no port: the kubelet's; a bad one: the API server's), the bare 403 for an unknown
//! subprotocol, and the base64 variant.

mod common;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use common::Cluster;

/// A running pod whose IP is loopback: the stand-in dials `127.0.0.1:PORT`.
async fn pod(c: &Cluster, name: &str) {
    c.server
        .create_object(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "x"}]},
        }))
        .unwrap();
    let pods: Api<Pod> = Api::default_namespaced(c.client("admin").await);
    let status = json!({"status": {"phase": "Running", "podIP": "127.0.0.1"}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();
}

/// A listener that answers each connection with `greeting` and then echoes.
async fn echo(greeting: &'static [u8]) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                s.write_all(greeting).await.unwrap();
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

fn forbidden_role(c: &Cluster, verbs: &[&str]) {
    let role = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "fwd", "namespace": "default"},
        "rules": [{"apiGroups": [""], "resources": ["pods/portforward"], "verbs": verbs}],
    });
    c.server.create_object(role).unwrap();
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "fwd", "namespace": "default"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "fwd"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "nobody"}],
    });
    c.server.create_object(binding).unwrap();
}

#[tokio::test]
async fn kube_rs_forwards_two_ports_and_gets_the_kubelet_error() {
    let c = Cluster::start().await;
    pod(&c, "web").await;
    let (a, b) = (echo(b"A>").await, echo(b"B>").await);
    let pods: Api<Pod> = Api::default_namespaced(c.client("admin").await);
    let mut pf = pods.portforward("web", &[a, b]).await.unwrap();
    for (port, greeting) in [(a, b"A>"), (b, b"B>")] {
        let mut s = pf.take_stream(port).unwrap();
        let big = vec![7u8; 300 * 1024];
        s.write_all(&big).await.unwrap();
        if std::env::var("DBG").is_ok() {
            let e = pf.take_error(port).unwrap().await;
            panic!(
                "{e:?} {:?}",
                c.server.get_object("", "pods", "default", "web")
            );
        }
        let mut got = vec![0u8; 2 + big.len()];
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[..2], greeting);
        assert!(got[2..] == big[..]);
    }
    drop(pf);

    // Nothing listens: the error channel carries containerd's refusal.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut pf = pods.portforward("web", &[port]).await.unwrap();
    let err = pf
        .take_error(port)
        .unwrap()
        .await
        .expect("an error message");
    let pod = c.server.get_object("", "pods", "default", "web").unwrap();
    let uid = pod["metadata"]["uid"].as_str().unwrap().replace('-', "");
    let sandbox: String = format!("{uid}{uid}").chars().take(64).collect();
    assert_eq!(
        err,
        format!(
            "error forwarding port {port} to pod {sandbox}, uid : dial tcp 127.0.0.1:{port}: \
             connect: connection refused"
        )
    );
    // The server closes the WebSocket once the only port is done: the stream ends.
    let mut s = pf.take_stream(port).unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
}

#[tokio::test]
async fn websocket_port_forward_needs_get_on_a_1_32_server() {
    let c = Cluster::start().await;
    pod(&c, "web").await;
    let port = echo(b"hi").await;
    forbidden_role(&c, &["create"]);
    let pods: Api<Pod> = Api::default_namespaced(c.client("nobody").await);
    let Err(kube::Error::Api(status)) = pods.portforward("web", &[port]).await else {
        panic!("create alone must not open a WebSocket port-forward");
    };
    assert_eq!(status.code, 403);
    assert_eq!(
        status.message,
        "pods \"web\" is forbidden: User \"nobody\" cannot get resource \"pods/portforward\" \
         in API group \"\" in the namespace \"default\""
    );

    // Admin: a bad port is the API server's 400, a missing pod its 404.
    let admin: Api<Pod> = Api::default_namespaced(c.client("admin").await);
    let Err(kube::Error::Api(status)) = admin.portforward("nope", &[port]).await else {
        panic!("a missing pod must fail");
    };
    assert_eq!(
        (status.code, status.message.as_str()),
        (404, "pods \"nope\" not found")
    );
}

/// A WebSocket upgrade of `.../pods/web/portforward?QUERY` offering `protocol`, as admin.
async fn upgrade(c: &Cluster, query: &str, protocol: &str) -> http::Response<kube::client::Body> {
    let client = c.client("admin").await;
    let req = http::Request::get(format!(
        "/api/v1/namespaces/default/pods/web/portforward?{query}"
    ))
    .header("connection", "Upgrade")
    .header("upgrade", "websocket")
    .header("sec-websocket-version", "13")
    .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
    .header("sec-websocket-protocol", protocol)
    .body(kube::client::Body::empty())
    .unwrap();
    client.send(req).await.unwrap()
}

async fn body_text(r: http::Response<kube::client::Body>) -> String {
    use http_body_util::BodyExt;
    let b = r.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&b).into_owned()
}

#[tokio::test]
async fn base64_channels_and_the_refusals_before_the_upgrade() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let c = Cluster::start().await;
    pod(&c, "web").await;
    let port = echo(b"hi").await;

    // No port: the kubelet's plain-text 400. A bad one: the API server's 400 Status.
    let r = upgrade(&c, "", "v4.channel.k8s.io").await;
    assert_eq!(r.status(), 400);
    assert_eq!(body_text(r).await, "query parameter \"port\" is required");
    let r = upgrade(&c, "ports=http", "v4.channel.k8s.io").await;
    assert_eq!(r.status(), 400);
    assert!(body_text(r).await.contains(
        "cannot convert to []int32: strconv.ParseUint: parsing \\\"http\\\": invalid syntax"
    ));
    // No subprotocol the kubelet knows: x/net/websocket's bare 403.
    let r = upgrade(&c, &format!("ports={port}"), "v5.channel.k8s.io").await;
    assert_eq!(r.status(), 403);
    assert_eq!(body_text(r).await, "");

    // base64: text messages, the channel as a digit.
    let r = upgrade(&c, &format!("ports={port}"), "v4.base64.channel.k8s.io").await;
    assert_eq!(r.status(), 101);
    assert_eq!(
        r.headers()["sec-websocket-protocol"],
        "v4.base64.channel.k8s.io"
    );
    let io = hyper_util::rt::TokioIo::new(hyper::upgrade::on(r).await.unwrap());
    let role = tokio_tungstenite::tungstenite::protocol::Role::Client;
    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(io, role, None).await;
    let b64 = |b: &[u8]| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(b)
    };
    let le = port.to_le_bytes();
    ws.send(Message::text(format!("0{}", b64(b"ping"))))
        .await
        .unwrap();
    let mut next = async || match ws.next().await.unwrap().unwrap() {
        Message::Text(t) => t.to_string(),
        other => panic!("{other:?}"),
    };
    // First each channel's port, then the pod's bytes on channel 0.
    assert_eq!(next().await, format!("0{}", b64(&le)));
    assert_eq!(next().await, format!("1{}", b64(&le)));
    let mut data = Vec::new();
    while data.len() < b"hiping".len() {
        let t = next().await;
        assert!(t.starts_with('0'), "{t}");
        use base64::Engine;
        data.extend(
            base64::engine::general_purpose::STANDARD
                .decode(&t[1..])
                .unwrap(),
        );
    }
    assert_eq!(data, b"hiping");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_survive_both_directions_at_once() {
    let c = Cluster::start().await;
    pod(&c, "web").await;
    let port = echo(b"").await;
    let pods: Api<Pod> = Api::default_namespaced(c.client("admin").await);
    let mut pf = pods.portforward("web", &[port]).await.unwrap();
    let (mut r, mut w) = tokio::io::split(pf.take_stream(port).unwrap());
    let total = 8 << 20;
    let data: Vec<u8> = (0..total).map(|i| (i * 7 + i / 251) as u8).collect();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        for chunk in sent.chunks(50_000) {
            w.write_all(chunk).await.unwrap();
        }
        w
    });
    let mut got = vec![0u8; total];
    r.read_exact(&mut got).await.unwrap();
    let _w = writer.await.unwrap();
    assert!(got == data, "the echoed bytes differ");
}
