//! The demo workloads (`kwg-sim workload ...`), each run as a pod by the kubelet role, and the
//! LAN's intranet server.

use crate::{Error, Result};
use axum::Router;
use axum::response::Html;
use axum::routing::get;
use std::net::SocketAddr;

/// The page of an HTTP workload: `<title>` is what tests look for.
pub fn page(title: &str) -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_default();
    format!(
        "<!doctype html>\n<html><head><title>{title}</title></head>\n<body><h1>{title}</h1><p>served by {host}</p></body></html>\n"
    )
}

/// An HTTP server answering `/` with [`page`], `/healthz`, `/readyz`, and `/api/*` with JSON.
pub async fn serve_http(listener: tokio::net::TcpListener, title: String) -> Result<()> {
    let json_title = title.clone();
    let app = Router::new()
        .route("/", get(move || async move { Html(page(&title)) }))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(|| async { "ok\n" }))
        .route(
            "/api/{*rest}",
            get(
                move |axum::extract::Path(rest): axum::extract::Path<String>| async move {
                    axum::Json(serde_json::json!({"service": json_title, "path": rest,
                    "pod": std::env::var("HOSTNAME").unwrap_or_default()}))
                },
            ),
        );
    axum::serve(listener, app)
        .await
        .map_err(Error::io("serving HTTP"))
}

/// A UDP echo server: every datagram is sent back.
pub async fn serve_udp_echo(sock: tokio::net::UdpSocket) -> Result<()> {
    let mut buf = vec![0u8; 65535];
    loop {
        let (n, from) = sock
            .recv_from(&mut buf)
            .await
            .map_err(Error::io("receiving UDP"))?;
        sock.send_to(&buf[..n], from)
            .await
            .map_err(Error::io("sending UDP"))?;
    }
}

/// `kwg-sim workload http --port P --title T [--udp-echo U]`.
pub async fn http(port: u16, title: String, udp_echo: Option<u16>) -> Result<()> {
    // Both families (an IPv6 socket takes IPv4 too): a dual-stack cluster's pods have both.
    let addr = SocketAddr::from(([0u16; 8], port));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(Error::io(format!("binding {addr}")))?;
    tracing::info!(%addr, %title, "HTTP workload listening");
    match udp_echo {
        Some(u) => {
            let sock = tokio::net::UdpSocket::bind(("::", u))
                .await
                .map_err(Error::io(format!("binding UDP {u}")))?;
            tokio::try_join!(serve_http(listener, title), serve_udp_echo(sock)).map(|_| ())
        }
        None => serve_http(listener, title).await,
    }
}

/// `kwg-sim workload cluster-dns`: CoreDNS's role, with the pod's in-cluster credentials,
/// serving `domain` and forwarding the rest to `upstream`.
pub async fn cluster_dns(port: u16, domain: String, upstream: SocketAddr) -> Result<()> {
    use crate::dns::cluster::{ClusterDnsConfig, serve};
    let client = kube::Client::try_default().await?;
    let addr = SocketAddr::from(([0u16; 8], port));
    let udp = tokio::net::UdpSocket::bind(addr)
        .await
        .map_err(Error::io(format!("binding UDP {addr}")))?;
    let tcp = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(Error::io(format!("binding TCP {addr}")))?;
    let cfg = ClusterDnsConfig { domain, upstream };
    tracing::info!(%addr, "cluster DNS listening");
    serve(client, udp, tcp, cfg)
        .await
        .map_err(|e| Error::Invalid(format!("cluster DNS: {e}")))
}
