use k8s_openapi::api::core::v1::Pod;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::*;

fn pod(name: &str, created: &str, ready: &str, deleting: bool) -> Pod {
    let mut p = json!({
        "metadata": {"name": name, "creationTimestamp": created},
        "status": {"conditions": [{"type": "Ready", "status": ready}]},
    });
    if deleting {
        p["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:09Z");
    }
    serde_json::from_value(p).unwrap()
}

#[test]
fn the_newest_ready_pod_not_being_deleted_is_picked() {
    let pods = [
        pod("a", "2026-01-01T00:00:01Z", "True", false),
        pod("b", "2026-01-01T00:00:03Z", "False", false),
        pod("c", "2026-01-01T00:00:04Z", "True", true),
        pod("d", "2026-01-01T00:00:02Z", "True", false),
    ];
    assert_eq!(pick_ready(&pods).as_deref(), Some("d"));
    assert_eq!(pick_ready(&pods[1..3]), None);
}

#[test]
fn forbidden_names_what_to_ask_for() {
    let e = PortForwardError::Forbidden {
        namespace: "kwg-gateway".into(),
        message: "pods \"g\" is forbidden: User \"dev\" cannot get resource \"pods/portforward\" in API group \"\" in the namespace \"kwg-gateway\"".into(),
    };
    assert_eq!(
        e.to_string(),
        "your kubeconfig user may not port-forward to the kwg gateway's pods in namespace \
         kwg-gateway (pods \"g\" is forbidden: User \"dev\" cannot get resource \
         \"pods/portforward\" in API group \"\" in the namespace \"kwg-gateway\"): ask a \
         cluster admin for get and create on pods/portforward in kwg-gateway (the kwg-user \
         role in manifests/rbac-user.yaml has it)"
    );
    assert_eq!(
        e.missing_permission().as_deref(),
        Some("get and create on pods/portforward in kwg-gateway")
    );
}

/// A server side speaking the kubelet's v4 channel protocol over an in-memory pipe.
async fn pair(
    port: u16,
) -> (
    PodStream<tokio::io::DuplexStream>,
    WebSocketStream<tokio::io::DuplexStream>,
) {
    let (a, b) = tokio::io::duplex(1 << 20);
    let client = WebSocketStream::from_raw_socket(a, Role::Client, None).await;
    let mut server = WebSocketStream::from_raw_socket(b, Role::Server, None).await;
    let le = port.to_le_bytes();
    for ch in [0u8, 1] {
        let m = Message::binary(vec![ch, le[0], le[1]]);
        futures::SinkExt::send(&mut server, m).await.unwrap();
    }
    (PodStream::new(client, port), server)
}

#[tokio::test]
async fn bytes_flow_both_ways_and_a_close_is_eof() {
    use futures::{SinkExt, StreamExt};
    let (mut s, mut server) = pair(51820).await;
    let big = vec![9u8; MAX_MESSAGE + 10];
    s.write_all(&big).await.unwrap();
    s.flush().await.unwrap();
    let mut got = Vec::new();
    while got.len() < big.len() {
        let Some(Ok(Message::Binary(m))) = server.next().await else {
            panic!()
        };
        assert_eq!(m[0], 0, "data goes on channel 0");
        assert!(m.len() <= MAX_MESSAGE + 1);
        got.extend_from_slice(&m[1..]);
    }
    assert_eq!(got, big);
    server
        .send(Message::binary(b"\x00pong".to_vec()))
        .await
        .unwrap();
    server.close(None).await.unwrap();
    let mut back = Vec::new();
    s.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, b"pong");
}

#[tokio::test]
async fn the_kubelet_error_is_what_a_read_returns() {
    use futures::SinkExt;
    let (mut s, mut server) = pair(51820).await;
    let text = "error forwarding port 51820 to pod abc, uid : dial tcp4 127.0.0.1:51820: connect: connection refused";
    let mut m = vec![1u8];
    m.extend_from_slice(text.as_bytes());
    server.send(Message::binary(m)).await.unwrap();
    server.close(None).await.unwrap();
    let mut buf = [0u8; 16];
    let e = s.read(&mut buf).await.unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
    assert_eq!(e.to_string(), text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_survive_reading_and_writing_at_once() {
    use futures::{SinkExt, StreamExt};
    let (s, mut server) = pair(51820).await;
    // The server echoes channel 0 back, in its own message sizes.
    tokio::spawn(async move {
        while let Some(Ok(m)) = server.next().await {
            if let Message::Binary(b) = m {
                for part in b[1..].chunks(7000) {
                    let mut out = vec![0u8];
                    out.extend_from_slice(part);
                    if server.send(Message::binary(out)).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    let total = 8 << 20;
    let data: Vec<u8> = (0..total).map(|i| (i * 7 + i / 251) as u8).collect();
    let (mut r, mut w) = tokio::io::split(s);
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        let mut off = 0;
        let mut step = 1;
        while off < sent.len() {
            let n = (step * 1237 % 70000 + 1).min(sent.len() - off);
            w.write_all(&sent[off..off + n]).await.unwrap();
            w.flush().await.unwrap();
            off += n;
            step += 1;
        }
        w
    });
    let mut got = vec![0u8; total];
    r.read_exact(&mut got).await.unwrap();
    let _w = writer.await.unwrap();
    assert!(got == data, "the echoed bytes differ");
}
