//! The probes of `kwg doctor` that send packets: UDP to the gateway (through the tunnel, or a
//! handshake initiation) and a cluster name through the system resolver.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chrono::Utc;
use kwg_contract::{GatewayInfo, RouteSource};

use super::check::Check;
use super::gather::Findings;
use super::local::{self, DaemonProbe, DnsProbe, Initiation, UdpProbe};

/// How long a probe through the tunnel waits for the gateway.
const TUNNEL_WAIT: Duration = Duration::from_secs(3);
/// How long an initiation waits for a reply or an ICMP error.
const INITIATION_WAIT: Duration = Duration::from_secs(1);

/// Joined, but no daemon answers: what it set up may be half gone.
const NO_DAEMON: &str = "not tested: joined, but the daemon does not answer (see daemon)";

pub async fn udp(f: &Findings, daemon: &DaemonProbe) -> Check {
    let now = Utc::now();
    if let (DaemonProbe::Running(s), Some(admin)) =
        (daemon, f.state.as_ref().and_then(|s| s.gateway_admin))
    {
        // Any answer through the tunnel (even a refused connection) proves the path both ways.
        let answered = match s.proxy {
            Some(proxy) => socks_connect(proxy, admin).await,
            None => tcp_answered(admin).await,
        };
        let transport = s.transport.as_ref();
        let fallback = transport
            .and_then(|t| t.path.clone())
            .filter(|p| p != "udp")
            .map(|p| {
                let why = transport
                    .and_then(|t| t.failed.iter().find(|f| f.path == "udp"))
                    .map_or("UDP was not tried".to_string(), |f| f.reason.clone());
                (p, why)
            });
        let probe = UdpProbe::Tunnel {
            endpoint: match fallback {
                Some(_) => transport.and_then(|t| t.endpoint.clone()),
                None => s.gateway_endpoint.clone(),
            }
            .unwrap_or_else(|| "-".into()),
            answered,
            last_handshake: s.last_handshake,
            fallback,
        };
        return local::udp(&probe, now, TUNNEL_WAIT);
    }
    if f.state.is_some() {
        return Check::skip("udp", NO_DAEMON);
    }
    let Some(info) = &f.info else {
        return Check::skip("udp", "the gateway's endpoints are unknown (see gateway)");
    };
    let mut results = Vec::new();
    for e in &info.endpoints {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((e.host.as_str(), e.port))
            .await
            .map(|a| a.collect())
            .unwrap_or_default();
        let r = match addrs.first() {
            Some(a) => initiation(*a, info).await,
            None => Initiation::SendFailed(format!("{} does not resolve", e.host)),
        };
        results.push((e.to_string(), r));
    }
    local::udp(&UdpProbe::Initiations(results), now, INITIATION_WAIT)
}

/// A TCP connection to `to` through the tunnel: accepted or refused, an answer came back.
async fn tcp_answered(to: SocketAddr) -> bool {
    match tokio::time::timeout(TUNNEL_WAIT, tokio::net::TcpStream::connect(to)).await {
        Ok(Ok(_)) => true,
        Ok(Err(e)) => e.kind() == std::io::ErrorKind::ConnectionRefused,
        Err(_) => false,
    }
}

/// The same through userspace mode's proxy: a SOCKS5 CONNECT (RFC 1928) whose reply is
/// "succeeded" (0) or "connection refused" (5).
async fn socks_connect(proxy: SocketAddr, to: SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let SocketAddr::V4(to) = to else {
        return false;
    };
    let exchange = async {
        let mut c = tokio::net::TcpStream::connect(proxy).await?;
        c.write_all(&[5, 1, 0]).await?;
        let mut method = [0u8; 2];
        c.read_exact(&mut method).await?;
        let mut req = vec![5, 1, 0, 1];
        req.extend_from_slice(&to.ip().octets());
        req.extend_from_slice(&to.port().to_be_bytes());
        c.write_all(&req).await?;
        let mut reply = [0u8; 10];
        c.read_exact(&mut reply).await?;
        Ok::<_, std::io::Error>(method == [5, 0] && matches!(reply[1], 0 | 5))
    };
    matches!(
        tokio::time::timeout(TUNNEL_WAIT, exchange).await,
        Ok(Ok(true))
    )
}

/// Sends a handshake initiation from a throwaway key and waits for a reply or an ICMP error.
async fn initiation(to: SocketAddr, info: &GatewayInfo) -> Initiation {
    let key = kwg_contract::keys::PrivateKey::generate();
    let mut tunn = boringtun::noise::Tunn::new(
        key.to_secret(),
        info.public_key.to_x25519(),
        None,
        None,
        1,
        None,
    );
    let mut buf = vec![0u8; 256];
    let packet = match tunn.format_handshake_initiation(&mut buf, false) {
        boringtun::noise::TunnResult::WriteToNetwork(p) => p.to_vec(),
        _ => return Initiation::SendFailed("could not build an initiation".into()),
    };
    let bind: SocketAddr = match to {
        SocketAddr::V4(_) => "0.0.0.0:0".parse().expect("valid"),
        SocketAddr::V6(_) => "[::]:0".parse().expect("valid"),
    };
    let exchange = async {
        let sock = tokio::net::UdpSocket::bind(bind).await?;
        sock.connect(to).await?;
        sock.send(&packet).await?;
        let mut reply = [0u8; 256];
        sock.recv(&mut reply).await
    };
    match tokio::time::timeout(INITIATION_WAIT, exchange).await {
        Err(_) => Initiation::NoReply,
        Ok(Ok(_)) => Initiation::Answered,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Initiation::Refused(e.to_string())
        }
        Ok(Err(e)) => Initiation::SendFailed(e.to_string()),
    }
}

pub async fn dns(f: &Findings, interface: &str) -> Check {
    if f.status.is_none() && f.state.is_some() {
        return Check::skip("dns", NO_DAEMON);
    }
    let Some(status) = &f.status else {
        let nameservers = std::fs::read_to_string("/etc/resolv.conf")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                l.trim()
                    .strip_prefix("nameserver")
                    .map(|s| s.trim().to_string())
            })
            .collect();
        return local::dns(&DnsProbe::NotJoined { nameservers }, interface);
    };
    if let Some(proxy) = status.proxy {
        let proxy = proxy.to_string();
        return local::dns(&DnsProbe::Userspace { proxy }, interface);
    }
    let Some(d) = &status.dns else {
        return local::dns(&DnsProbe::Off, interface);
    };
    let domain = f
        .info
        .as_ref()
        .map_or("cluster.local".to_string(), |i| i.cluster_domain.clone());
    let name = format!("kubernetes.default.svc.{domain}");
    let started = Instant::now();
    let answer = match tokio::time::timeout(
        Duration::from_secs(d.timeout_secs.max(1) + 1),
        tokio::net::lookup_host((name.as_str(), 443)),
    )
    .await
    {
        Err(_) => Err(format!(
            "no answer within {} s",
            started.elapsed().as_secs()
        )),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(a)) => Ok(a.map(|a| a.ip()).collect()),
    };
    let service_cidrs = status
        .subnets
        .iter()
        .filter(|r| r.source == RouteSource::Service)
        .map(|r| r.subnet)
        .collect();
    let points_at_kwg = f
        .state
        .as_ref()
        .filter(|s| d.mode == "resolv-conf" && s.dns.is_some())
        .map(|s| crate::driver::dns_problem(s).is_none());
    local::dns(
        &DnsProbe::Joined {
            mode: d.mode.clone(),
            forwarder: d.forwarder.to_string(),
            name,
            answer,
            service_cidrs,
            points_at_kwg,
        },
        interface,
    )
}
