//! `kwg join --wait-for HOST:PORT`: join returns only when every target accepts a TCP
//! connection through the tunnel. Names are resolved by kwg's own DNS forwarder (the split
//! DNS of the join), or by the system resolver when kwg's DNS is off.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use kwg_contract::Status;

use crate::dns::forwarder;
use crate::error::Error;

/// How long one connection attempt may take, and the pause between attempts.
const ATTEMPT: Duration = Duration::from_secs(1);
const PAUSE: Duration = Duration::from_millis(200);

/// One `--wait-for` target: a DNS name or an IP address, and a TCP port.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Target {
    pub host: String,
    pub port: u16,
}

impl FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("{s:?} {why}: pass HOST:PORT, e.g. web-app.emojivoto:80");
        let (host, port) = s.rsplit_once(':').ok_or_else(|| bad("has no port"))?;
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad("has no valid port (1-65535)"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.parse::<IpAddr>().is_err() && Name::from_ascii(host).is_err() || host.is_empty() {
            return Err(bad("has no valid host name or IP address"));
        }
        Ok(Target {
            host: host.trim_end_matches('.').to_ascii_lowercase(),
            port,
        })
    }
}

impl TryFrom<String> for Target {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Target> for String {
    fn from(t: Target) -> String {
        t.to_string()
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host.parse::<IpAddr>() {
            Ok(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            _ => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

/// Waits until every target accepts a TCP connection, retrying until `deadline`.
#[tracing::instrument(skip_all, fields(targets = targets.len()))]
pub async fn all(targets: &[Target], status: &Status, deadline: Instant) -> Result<(), Error> {
    let dns = status.dns.as_ref().map(|d| d.forwarder);
    let started = Instant::now();
    for t in targets {
        loop {
            let tried = match status.proxy {
                // Userspace mode: through the proxy, which resolves the name itself.
                Some(proxy) => through_proxy(t, proxy, deadline).await,
                None => attempt(t, dns, deadline).await,
            };
            let last = match tried {
                Ok(addr) => {
                    tracing::info!(target = %t, %addr, "wait-for target answered");
                    break;
                }
                Err(e) => e,
            };
            if Instant::now() + PAUSE >= deadline {
                let failing: Vec<String> = targets
                    .iter()
                    .skip_while(|x| *x != t)
                    .map(Target::to_string)
                    .collect();
                return Err(Error::WaitFor {
                    targets: failing.join(", "),
                    secs: (deadline - started).as_secs().max(1),
                    last,
                });
            }
            tokio::time::sleep(PAUSE).await;
        }
    }
    Ok(())
}

/// One try through the userspace proxy (SOCKS5 CONNECT by name). Err is a short reason.
async fn through_proxy(
    t: &Target,
    proxy: SocketAddr,
    deadline: Instant,
) -> Result<SocketAddr, String> {
    let budget = deadline
        .saturating_duration_since(Instant::now())
        .min(ATTEMPT);
    let to = crate::userspace::target::Target::parse(&t.to_string()).map_err(|e| e.to_string())?;
    let open = crate::userspace::client::socks_open(proxy, &to);
    match tokio::time::timeout(budget, open).await {
        Ok(Ok(_)) => Ok(proxy),
        Ok(Err(e)) => Err(format!("{t} through the proxy {proxy}: {e}")),
        Err(_) => Err(format!("{t}: no answer within {}ms", budget.as_millis())),
    }
}

/// One try: resolve, then connect to the first address. Err is a short reason.
async fn attempt(
    t: &Target,
    dns: Option<SocketAddr>,
    deadline: Instant,
) -> Result<SocketAddr, String> {
    let budget = deadline
        .saturating_duration_since(Instant::now())
        .min(ATTEMPT);
    let ip = match t.host.parse::<IpAddr>() {
        Ok(ip) => ip,
        Err(_) => resolve(&t.host, dns, budget).await?,
    };
    let addr = SocketAddr::new(ip, t.port);
    match tokio::time::timeout(budget, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Ok(addr),
        Ok(Err(e)) => Err(format!("{addr}: {e}")),
        Err(_) => Err(format!("{addr}: no answer within {}ms", budget.as_millis())),
    }
}

async fn resolve(host: &str, dns: Option<SocketAddr>, budget: Duration) -> Result<IpAddr, String> {
    let Some(server) = dns else {
        return match tokio::time::timeout(budget, tokio::net::lookup_host((host, 0))).await {
            Ok(Ok(mut addrs)) => addrs
                .next()
                .map(|a| a.ip())
                .ok_or_else(|| format!("{host} has no address")),
            Ok(Err(e)) => Err(format!("{host}: {e}")),
            Err(_) => Err(format!("{host}: the resolver did not answer")),
        };
    };
    // A, else AAAA: a dual-stack cluster's names have both, an IPv6-only cluster's only AAAA.
    for rtype in [RecordType::A, RecordType::AAAA] {
        if let Some(ip) = ask(host, server, rtype, budget).await? {
            return Ok(ip);
        }
    }
    Err(format!("{host} has no address"))
}

/// The first address of type `rtype` the forwarder at `server` gives for `host`.
async fn ask(
    host: &str,
    server: SocketAddr,
    rtype: RecordType,
    budget: Duration,
) -> Result<Option<IpAddr>, String> {
    let qname = Name::from_ascii(host).map_err(|e| format!("{host}: {e}"))?;
    let mut m = Message::query();
    m.metadata.id = rand::random();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(qname, rtype));
    let raw = m.to_vec().map_err(|e| e.to_string())?;
    let reply = forwarder::relay(&raw, server, budget)
        .await
        .and_then(|r| Message::from_vec(&r).ok())
        .ok_or_else(|| format!("{host}: kwg's DNS forwarder {server} did not answer"))?;
    if reply.metadata.response_code != ResponseCode::NoError {
        return Err(format!("{host}: {}", reply.metadata.response_code));
    }
    Ok(reply.answers.iter().find_map(|r| match &r.data {
        RData::A(a) => Some(IpAddr::V4(a.0)),
        RData::AAAA(a) => Some(IpAddr::V6(a.0)),
        _ => None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_print_back() {
        let t: Target = "web-app.emojivoto:80".parse().unwrap();
        assert_eq!((t.host.as_str(), t.port), ("web-app.emojivoto", 80));
        assert_eq!(t.to_string(), "web-app.emojivoto:80");
        let t: Target = "[fd00::1]:5432".parse().unwrap();
        assert_eq!(t.to_string(), "[fd00::1]:5432");
        let t: Target = "10.96.0.10:53".parse().unwrap();
        assert_eq!(t.host, "10.96.0.10");
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(serde_json::from_str::<Target>(&json).unwrap(), t);
    }

    #[test]
    fn bad_targets_name_the_fix() {
        for bad in ["web-app", "web-app:0", "web-app:http", ":80", "a b:80"] {
            let e = bad.parse::<Target>().unwrap_err();
            assert!(
                e.ends_with("pass HOST:PORT, e.g. web-app.emojivoto:80"),
                "{e}"
            );
        }
    }

    /// A DNS server answering AAAA `fd00::7` and A with no record (NODATA), as an IPv6-only
    /// cluster's DNS does.
    async fn ipv6_only_dns() -> SocketAddr {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let (n, from) = sock.recv_from(&mut buf).await.unwrap();
                let q = Message::from_vec(&buf[..n]).unwrap();
                let mut r = Message::response(q.metadata.id, q.metadata.op_code);
                r.queries = q.queries.clone();
                if q.queries[0].query_type == RecordType::AAAA {
                    let six = hickory_proto::rr::rdata::AAAA("fd00::7".parse().unwrap());
                    let name = q.queries[0].name.clone();
                    r.answers.push(hickory_proto::rr::Record::from_rdata(
                        name,
                        5,
                        RData::AAAA(six),
                    ));
                }
                sock.send_to(&r.to_vec().unwrap(), from).await.unwrap();
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_name_with_only_an_aaaa_record_resolves_to_it() {
        let dns = ipv6_only_dns().await;
        let ip = resolve("web-app.emojivoto", Some(dns), Duration::from_secs(2)).await;
        assert_eq!(ip, Ok("fd00::7".parse().unwrap()));
    }

    #[tokio::test]
    async fn a_closed_port_fails_with_the_wait_for_error_by_the_deadline() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let open = listener.local_addr().unwrap();
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let status = Status::example();
        let t = |a: SocketAddr| Target::from_str(&a.to_string()).unwrap();
        let ok = all(&[t(open)], &status, Instant::now() + Duration::from_secs(2)).await;
        assert!(ok.is_ok(), "{ok:?}");
        let started = Instant::now();
        let deadline = started + Duration::from_millis(700);
        let err = all(&[t(open), t(closed)], &status, deadline)
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2));
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("--wait-for {closed} did not accept")),
            "{msg}"
        );
        assert!(msg.contains("Connection refused"), "{msg}");
        assert_eq!(crate::exit::ExitCode::from(&err).code(), 8);
    }
}
