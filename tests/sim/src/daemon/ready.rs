//! Is the cluster ready: workloads' pods ready and cluster DNS answering.

use k8s_openapi::api::apps::v1::Deployment;
use kube::Client;
use kube::api::{Api, ListParams};
use std::net::SocketAddr;
use std::time::Duration;

/// A DNS A query for `name` with id `id` (RFC 1035 4.1); AAAA (RFC 3596) when `aaaa`.
pub fn dns_query(id: u16, name: &str, aaaa: bool) -> Vec<u8> {
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD, QDCOUNT 1
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    let qtype = if aaaa { 28 } else { 1 };
    q.extend_from_slice(&[0, 0, qtype, 0, 1]); // root, type A or AAAA, class IN
    q
}

/// Whether `reply` answers query `id` with NOERROR and at least one answer.
pub fn dns_answered(id: u16, reply: &[u8]) -> bool {
    reply.len() >= 12
        && reply[..2] == id.to_be_bytes()
        && reply[3] & 0x0f == 0
        && u16::from_be_bytes([reply[6], reply[7]]) > 0
}

/// Sends one query over UDP and waits up to 300 ms: A, or AAAA to an IPv6 server (an IPv6-only
/// cluster's DNS has no A records).
pub async fn dns_answers(server: SocketAddr, name: &str) -> bool {
    let bind = if server.is_ipv6() {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    };
    let Ok(sock) = tokio::net::UdpSocket::bind(bind).await else {
        return false;
    };
    let id = rand::random::<u16>();
    let query = dns_query(id, name, server.is_ipv6());
    if sock.send_to(&query, server).await.is_err() {
        return false;
    }
    let mut buf = [0u8; 1500];
    matches!(tokio::time::timeout(Duration::from_millis(300), sock.recv(&mut buf)).await,
        Ok(Ok(n)) if dns_answered(id, &buf[..n]))
}

/// ClusterIP:port of every TCP port of Services with a selector (what kube-proxy must serve).
pub fn tcp_service_addrs(services: &[k8s_openapi::api::core::v1::Service]) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for spec in services.iter().filter_map(|s| s.spec.as_ref()) {
        let Some(ip) = spec
            .cluster_ip
            .as_deref()
            .and_then(|ip| ip.parse::<std::net::IpAddr>().ok())
        else {
            continue;
        };
        if spec.selector.as_ref().is_none_or(|s| s.is_empty()) {
            continue;
        }
        for p in spec
            .ports
            .iter()
            .flatten()
            .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
        {
            out.push(SocketAddr::from((ip, p.port as u16)));
        }
    }
    out
}

/// Those of `addrs` that do not accept a TCP connection within 300 ms (through kube-proxy's
/// output DNAT when called in the node).
pub async fn unreachable(addrs: &[SocketAddr]) -> Vec<SocketAddr> {
    let tries = addrs.iter().map(|a| async move {
        let ok = matches!(
            tokio::time::timeout(
                Duration::from_millis(300),
                tokio::net::TcpStream::connect(a)
            )
            .await,
            Ok(Ok(_))
        );
        (!ok).then_some(*a)
    });
    futures::future::join_all(tries)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Deployments that do not have all their replicas ready yet.
pub async fn unready_deployments(client: &Client) -> Result<Vec<String>, kube::Error> {
    let list = Api::<Deployment>::all(client.clone())
        .list(&ListParams::default())
        .await?;
    Ok(list
        .items
        .into_iter()
        .filter(|d| {
            let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            d.status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0)
                < want
        })
        .map(|d| {
            format!(
                "{}/{}",
                d.metadata.namespace.unwrap_or_default(),
                d.metadata.name.unwrap_or_default()
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_wire_format() {
        let q = dns_query(0x1234, "a.bc.", false);
        assert_eq!(
            q,
            [
                0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'a', 2, b'b', b'c', 0, 0, 1, 0, 1
            ]
        );
        // AAAA: type 28.
        assert_eq!(dns_query(0x1234, "a.bc.", true)[18..], [0, 28, 0, 1]);
        let mut reply = q.clone();
        reply[2] = 0x81;
        reply[3] = 0x80;
        assert!(!dns_answered(0x1234, &reply), "no answer records");
        reply[7] = 1;
        assert!(dns_answered(0x1234, &reply));
        reply[3] = 0x83; // NXDOMAIN
        assert!(!dns_answered(0x1234, &reply));
    }
}
