//! The API-server rung: WireGuard's datagrams through `pods/portforward` to a ready gateway
//! pod's WireGuard port (TCP on the UDP port's number), see [`crate::portforward`].

use std::time::Duration;

use kube::Client;
use kwg_contract::WIREGUARD_PORT;
use kwg_wg::device::ByteStream;

use crate::cluster::Kube;

/// Opening (the pod list, then the upgrade) that takes longer failed: the streams client has
/// no read timeout (a quiet tunnel is not a stalled request), so an API server that accepts
/// the connection and then stalls would otherwise hold the rung in "connecting" for ever.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens a port-forward stream to the gateway's WireGuard port; `ns` is the gateway's
/// namespace. The error is one sentence (a 403 names the permission to ask for).
pub(super) async fn open(kube: Option<Kube>, ns: &str) -> Result<Box<dyn ByteStream>, String> {
    let kube = kube.ok_or("the API-server path needs the cluster's kubeconfig")?;
    open_within(kube.streams, ns, OPEN_TIMEOUT).await
}

async fn open_within(
    streams: Client,
    ns: &str,
    limit: Duration,
) -> Result<Box<dyn ByteStream>, String> {
    let opening = crate::portforward::open_gateway(streams, ns, WIREGUARD_PORT);
    let (pod, stream) = tokio::time::timeout(limit, opening)
        .await
        .map_err(|_| {
            format!(
                "the API server did not open a port-forward to a gateway pod in {ns} within {} s \
                 (pod list and upgrade); check the API server's health and the network to it",
                limit.as_secs_f64()
            )
        })?
        .map_err(|e| e.to_string())?;
    tracing::info!(namespace = ns, pod, "port-forward to the gateway pod open");
    Ok(Box::new(stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_api_server_that_accepts_then_stalls_fails_the_open_in_time() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        // Accepts every connection and never answers.
        let server = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let config = kube::Config::new(url.parse().unwrap());
        let client = crate::portforward::stream_client(&config).unwrap();
        let started = std::time::Instant::now();
        let r = open_within(client, "kwg-gateway", Duration::from_millis(300)).await;
        let err = r.err().expect("a stalled API server must fail the open");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(
            err,
            "the API server did not open a port-forward to a gateway pod in kwg-gateway within \
             0.3 s (pod list and upgrade); check the API server's health and the network to it"
        );
        server.abort();
    }
}
