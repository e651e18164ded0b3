//! kube-rs's `Api::portforward` (WebSocket `v4.channel.k8s.io`) against the stand-in: bytes
//! both ways to a listener "in the pod", two ports on one socket, the kubelet's error for a
//! closed port, the 403 of a user who may only `create pods/portforward` (a 1.32 server
//! authorizes the WebSocket GET as `get`), and the 404 of a missing pod.

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
