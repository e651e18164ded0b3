//! The LAN's services: the resolver for `corp.example` and the intranet HTTP server, bound in
//! the LAN namespace by the daemon.

use crate::dns::lan::{LanDnsConfig, serve};
use crate::names::{self, Names};
use crate::net::ClusterNet;
use crate::{Result, netns};
use std::net::SocketAddr;

/// Handles of the LAN's servers (they stop with the daemon).
pub struct Lan {
    _tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Records of the LAN zone, relative to it (`intranet` is `intranet.corp.example`).
pub fn records(net: &ClusterNet) -> Vec<(String, std::net::Ipv4Addr)> {
    [
        ("intranet", net.intranet_ip()),
        ("ns", net.lan_dns_ip()),
        ("node", net.node_ip()),
        ("laptop", net.laptop_ip()),
    ]
    .into_iter()
    .map(|(n, ip)| (n.to_string(), ip))
    .collect()
}

/// Binds and starts the LAN resolver (`.53` of the LAN, port 53 UDP+TCP, and `::53` on a LAN
/// with IPv6, which an IPv6-only cluster's DNS forwards to) and the intranet (`.80`, port 80).
pub fn start(n: &Names, net: &ClusterNet) -> Result<Lan> {
    let lan = n.lan_ns();
    let mut tasks = Vec::new();
    let v6 = net.lan_dns_ip6().map(std::net::IpAddr::V6);
    for ip in std::iter::once(std::net::IpAddr::V4(net.lan_dns_ip())).chain(v6) {
        let dns = SocketAddr::from((ip, 53));
        let udp = netns::udp_socket(&lan, dns)?;
        let tcp = netns::tcp_listener(&lan, dns)?;
        let cfg = LanDnsConfig {
            zone: names::LAN_ZONE.to_string(),
            records: records(net),
        };
        tasks.push(tokio::spawn(async move {
            if let Err(e) = serve(udp, tcp, cfg).await {
                tracing::error!(error = %e, "LAN resolver stopped");
            }
        }));
    }
    let web = netns::tcp_listener(&lan, SocketAddr::from((net.intranet_ip(), 80)))?;
    let t2 = tokio::spawn(async move {
        if let Err(e) = crate::workload::serve_http(web, "Corp Intranet".into()).await {
            tracing::error!(error = %e, "intranet server stopped");
        }
    });
    tasks.push(t2);
    Ok(Lan { _tasks: tasks })
}
