//! The LAN's services: the resolver for `corp.example` and the intranet HTTP server, bound in
//! the LAN namespace by the daemon.

use crate::dns::lan::{LanDnsConfig, serve};
use crate::names::{self, Names};
use crate::{Result, netns};
use std::net::SocketAddr;

/// Handles of the LAN's servers (they stop with the daemon).
pub struct Lan {
    _tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Records of the LAN zone, relative to it (`intranet` is `intranet.corp.example`).
pub fn records() -> Vec<(String, std::net::Ipv4Addr)> {
    [
        ("intranet", names::INTRANET_IP),
        ("ns", names::LAN_DNS_IP),
        ("node", names::NODE_IP),
        ("laptop", names::LAPTOP_IP),
    ]
    .into_iter()
    .map(|(n, ip)| (n.to_string(), ip))
    .collect()
}

/// Binds and starts the LAN resolver (192.0.2.53:53 UDP+TCP) and intranet (192.0.2.80:80).
pub fn start(n: &Names) -> Result<Lan> {
    let lan = n.lan_ns();
    let dns = SocketAddr::from((names::LAN_DNS_IP, 53));
    let udp = netns::udp_socket(&lan, dns)?;
    let tcp = netns::tcp_listener(&lan, dns)?;
    let web = netns::tcp_listener(&lan, SocketAddr::from((names::INTRANET_IP, 80)))?;
    let cfg = LanDnsConfig {
        zone: names::LAN_ZONE.to_string(),
        records: records(),
    };
    let t1 = tokio::spawn(async move {
        if let Err(e) = serve(udp, tcp, cfg).await {
            tracing::error!(error = %e, "LAN resolver stopped");
        }
    });
    let t2 = tokio::spawn(async move {
        if let Err(e) = crate::workload::serve_http(web, "Corp Intranet".into()).await {
            tracing::error!(error = %e, "intranet server stopped");
        }
    });
    Ok(Lan {
        _tasks: vec![t1, t2],
    })
}
