//! Where a proxied connection goes: through the tunnel (an address in the cluster's subnets,
//! or a name kwg's split DNS gives to the cluster) or directly from this machine (everything
//! else), so the proxy can be set for all traffic. Cluster names are resolved by asking the
//! cluster DNS through the tunnel (DNS over TCP, RFC 7766), in the order the split DNS decides.

use std::io;
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use bytes::Bytes;
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use ipnet::IpNet;
use tokio::net::TcpStream;

use super::netstack::{Connector, VirtualStream};
use super::target::{Host, Target};
use kwg_session::dns::split::{Decision, Source, SplitDns};

/// How long opening one connection (either way) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the router needs to know, fixed while joined.
#[derive(Clone)]
pub struct Router {
    pub tunnel: Connector,
    /// The subnets routed through the tunnel (cluster CIDRs, --also-proxy, minus
    /// --never-proxy); the driver updates them when the gateway's change.
    pub subnets: Subnets,
    /// The split-DNS decision and the cluster DNS (absent with --dns-mode off).
    pub dns: Option<(SplitDns, SocketAddrV4)>,
    pub dns_timeout: Duration,
}

/// Subnets shared between the driver (writer) and the proxy's router (readers).
pub type Subnets = std::sync::Arc<std::sync::RwLock<Vec<IpNet>>>;

/// An open connection.
pub enum Stream {
    Tunnel(VirtualStream),
    Direct(TcpStream),
}

/// Where a connection goes (for logs and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Tunnel(SocketAddrV4),
    Direct(SocketAddr),
}

impl Router {
    /// Whether `ip` is reached through the tunnel.
    pub fn in_tunnel(&self, ip: IpAddr) -> bool {
        self.subnets
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|n| n.contains(&ip))
    }

    /// Resolves `target` and opens the connection.
    pub async fn dial(&self, target: &Target) -> io::Result<(Stream, Via)> {
        let addrs = self.resolve(target).await?;
        let mut last = io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} has no address", target.host),
        );
        for ip in addrs {
            let via = match ip {
                IpAddr::V4(v4) if self.in_tunnel(ip) => {
                    Via::Tunnel(SocketAddrV4::new(v4, target.port))
                }
                _ => Via::Direct(SocketAddr::new(ip, target.port)),
            };
            let opened = match via {
                Via::Tunnel(a) => self
                    .tunnel
                    .connect(a, CONNECT_TIMEOUT)
                    .await
                    .map(Stream::Tunnel),
                Via::Direct(a) => tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(a))
                    .await
                    .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
                    .map(Stream::Direct),
            };
            match opened {
                Ok(s) => {
                    tracing::debug!(%target, ?via, "proxy connection");
                    return Ok((s, via));
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The addresses of `target`'s host, in the split DNS's order of sources.
    pub async fn resolve(&self, target: &Target) -> io::Result<Vec<IpAddr>> {
        let name = match &target.host {
            Host::Ip(ip) => return Ok(vec![*ip]),
            Host::Name(n) => n,
        };
        let sources = match &self.dns {
            Some((split, _)) => owned_sources(&split.decide(&format!("{name}."))),
            None => vec![Src::Upstream],
        };
        for src in sources {
            let found = match src {
                Src::Upstream => system_lookup(name, target.port).await,
                Src::Cluster(fqdn) => self.cluster_lookup(&fqdn).await,
            };
            if !found.is_empty() {
                return Ok(found);
            }
        }
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{name} does not resolve"),
        ))
    }

    /// Asks the cluster DNS through the tunnel for the A records of `fqdn`.
    async fn cluster_lookup(&self, fqdn: &str) -> Vec<IpAddr> {
        match &self.dns {
            Some((_, server)) => self.cluster_lookup_at(*server, fqdn).await,
            None => Vec::new(),
        }
    }

    /// Asks `server` through the tunnel for the A records of `fqdn` (none on any failure).
    pub async fn cluster_lookup_at(&self, server: SocketAddrV4, fqdn: &str) -> Vec<IpAddr> {
        let ask = async {
            let query = a_query(fqdn)?;
            let mut s = self.tunnel.connect(server, self.dns_timeout).await.ok()?;
            let mut framed = (query.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&query);
            s.send(Bytes::from(framed)).await.ok()?;
            let mut reply = Vec::new();
            while let Some(chunk) = s.recv().await {
                reply.extend_from_slice(&chunk);
                if reply.len() >= 2
                    && reply.len() >= 2 + usize::from(u16::from_be_bytes([reply[0], reply[1]]))
                {
                    break;
                }
            }
            Some(a_records(reply.get(2..)?))
        };
        tokio::time::timeout(self.dns_timeout, ask)
            .await
            .ok()
            .flatten()
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Src {
    Upstream,
    Cluster(String),
}

fn owned_sources(d: &Decision) -> Vec<Src> {
    d.sources()
        .into_iter()
        .map(|s| match s {
            Source::Upstream => Src::Upstream,
            Source::Cluster(n) => Src::Cluster(n.to_string()),
        })
        .collect()
}

/// The machine's resolvers (as before join: nothing of kwg is in them in userspace mode).
async fn system_lookup(name: &str, port: u16) -> Vec<IpAddr> {
    match tokio::net::lookup_host((name, port)).await {
        Ok(addrs) => addrs.map(|a| a.ip()).collect(),
        Err(_) => Vec::new(),
    }
}

/// A recursive A query for `fqdn`.
pub fn a_query(fqdn: &str) -> Option<Vec<u8>> {
    let name = Name::from_ascii(format!("{}.", fqdn.trim_end_matches('.'))).ok()?;
    let mut m = Message::query();
    m.metadata.id = rand::random();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(name, RecordType::A));
    m.to_vec().ok()
}

/// The IPv4 addresses of a reply (none for an error or NXDOMAIN).
pub fn a_records(reply: &[u8]) -> Vec<IpAddr> {
    let Ok(m) = Message::from_vec(reply) else {
        return Vec::new();
    };
    if m.metadata.response_code != ResponseCode::NoError {
        return Vec::new();
    }
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_and_answer_round_trip() {
        let q = a_query("web-app.emojivoto.svc.cluster.local").unwrap();
        let mut m = Message::from_vec(&q).unwrap();
        assert_eq!(
            m.queries[0].name.to_ascii(),
            "web-app.emojivoto.svc.cluster.local."
        );
        m.metadata.message_type = hickory_proto::op::MessageType::Response;
        m.answers.push(hickory_proto::rr::Record::from_rdata(
            m.queries[0].name.clone(),
            5,
            RData::A(hickory_proto::rr::rdata::A::new(10, 96, 0, 20)),
        ));
        assert_eq!(
            a_records(&m.to_vec().unwrap()),
            vec!["10.96.0.20".parse::<IpAddr>().unwrap()]
        );
        m.metadata.response_code = ResponseCode::NXDomain;
        assert!(a_records(&m.to_vec().unwrap()).is_empty());
        assert!(a_records(b"garbage").is_empty());
    }
}
