//! Who is on the other end of a loopback connection: the proxy serves only the user who
//! joined (any local user could otherwise reach the cluster with that user's identity). The
//! kernel lists every TCP socket of the network namespace with its owner's uid in
//! `/proc/net/tcp` and `/proc/net/tcp6`; the client's socket is the one whose local address is
//! the client's and whose remote address is the proxy's.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};

/// How often refusals are logged at most (a flood of them must not flood the log).
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);
/// How long to wait after a failed `accept` (out of descriptors, say) before the next one.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The uid owning the client socket `client` connected to `server`, from the kernel's tables.
/// Both tables are searched: an IPv6 socket connected to an IPv4 address is listed in
/// `/proc/net/tcp6` with IPv4-mapped addresses.
pub fn uid_of(client: SocketAddr, server: SocketAddr) -> Option<u32> {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .find_map(|table| {
            let text = std::fs::read_to_string(table).ok()?;
            find_uid(&text, client, server)
        })
}

/// The uid column of the line whose local address is `client` and remote address `server`
/// (IPv4-mapped IPv6 addresses compare as the IPv4 ones).
pub fn find_uid(table: &str, client: SocketAddr, server: SocketAddr) -> Option<u32> {
    let (client, server) = (unmapped(client), unmapped(server));
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (local, remote, uid) = (f.get(1)?, f.get(2)?, f.get(7)?);
        (unmapped(parse(local)?) == client && unmapped(parse(remote)?) == server)
            .then(|| uid.parse().ok())
            .flatten()
    })
}

fn unmapped(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => a,
        },
        v4 => v4,
    }
}

/// Admits loopback clients of this effective user only, logging refusals at most once per
/// [`REFUSAL_LOG_EVERY`] with how many there were.
pub struct Gate {
    owner: u32,
    what: &'static str,
    log: Mutex<RefusalLog>,
}

impl Gate {
    pub fn new(what: &'static str) -> Gate {
        Gate {
            owner: nix::unistd::geteuid().as_raw(),
            what,
            log: Mutex::new(RefusalLog::default()),
        }
    }

    /// Whether the process at the other end of `client` (accepted from `from`) is this user's.
    /// The kernel's tables are read off the runtime's threads.
    pub async fn admits(&self, client: &TcpStream, from: SocketAddr) -> bool {
        let Ok(at) = client.local_addr() else {
            return false;
        };
        let uid = tokio::task::spawn_blocking(move || uid_of(from, at))
            .await
            .ok()
            .flatten();
        if uid == Some(self.owner) {
            return true;
        }
        let logged = self.log.lock().expect("refusal log").note(Instant::now());
        if let Some(count) = logged {
            let (what, owner) = (self.what, self.owner);
            tracing::warn!(%from, ?uid, owner, count, "{what}: refused a client of another user (count: refusals since the last such line)");
        }
        false
    }
}

/// When to log a refusal: the first, then at most once per [`REFUSAL_LOG_EVERY`].
#[derive(Debug, Default)]
struct RefusalLog {
    last: Option<Instant>,
    unlogged: u64,
}

impl RefusalLog {
    /// Counts a refusal at `now`; `Some(n)` when it is to be logged, `n` counting it and the
    /// ones not logged since the last line.
    fn note(&mut self, now: Instant) -> Option<u64> {
        self.unlogged += 1;
        match self.last {
            Some(t) if now.saturating_duration_since(t) < REFUSAL_LOG_EVERY => None,
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.unlogged))
            }
        }
    }
}

/// The next connection on `listener`; a failed accept is retried after a short pause (it
/// fails again at once while, say, descriptors run out).
pub async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(a) => return a,
            Err(e) => {
                tracing::debug!(error = %e, "accept");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// `0100007F:0438`: the address as the kernel prints it (32-bit words in host byte order,
/// `%08X` each), the port in hex.
fn parse(s: &str) -> Option<SocketAddr> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        Some(
            u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16)
                .ok()?
                .to_ne_bytes(),
        )
    };
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_sockets_owner_is_found_and_nothing_else_matches() {
        let ip4 = |a: [u8; 4]| format!("{:08X}", u32::from_ne_bytes(a));
        let table = format!(
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
             0: {lo}:0438 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0\n\
             1: {lo}:D431 {lo}:0438 01 00000000:00000000 00:00000000 00000000 65534        0 2 1 0\n\
             2: {lo}:0438 {lo}:D431 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0\n",
            lo = ip4([127, 0, 0, 1])
        );
        let proxy: SocketAddr = "127.0.0.1:1080".parse().unwrap();
        let client: SocketAddr = "127.0.0.1:54321".parse().unwrap();
        assert_eq!(find_uid(&table, client, proxy), Some(65534));
        assert_eq!(find_uid(&table, proxy, client), Some(0));
        let other: SocketAddr = "127.0.0.1:54322".parse().unwrap();
        assert_eq!(find_uid(&table, other, proxy), None);
        assert_eq!(find_uid("garbage\n1: x y z", client, proxy), None);
        let v6 = parse("00000000000000000000000001000000:0438").unwrap();
        assert_eq!(v6, "[::1]:1080".parse::<SocketAddr>().unwrap());
    }

    #[test]
    fn an_ipv6_socket_connected_to_an_ipv4_address_is_found_in_tcp6() {
        // `::ffff:127.0.0.1` as the kernel prints it: words 0, 0, 0000FFFF, 0100007F on x86.
        let mapped = |a: [u8; 4]| {
            let w = |b: [u8; 4]| format!("{:08X}", u32::from_ne_bytes(b));
            format!(
                "{}{}{}{}",
                w([0; 4]),
                w([0; 4]),
                w([0, 0, 0xff, 0xff]),
                w(a)
            )
        };
        let table = format!(
            "  sl  local_address remote_address st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
             0: {lo}:D431 {lo}:0438 01 00000000:00000000 00:00000000 00000000  1000        0 2 1 0\n",
            lo = mapped([127, 0, 0, 1])
        );
        let proxy: SocketAddr = "127.0.0.1:1080".parse().unwrap();
        let client: SocketAddr = "127.0.0.1:54321".parse().unwrap();
        assert_eq!(find_uid(&table, client, proxy), Some(1000));
        let client6: SocketAddr = "[::ffff:127.0.0.1]:54321".parse().unwrap();
        assert_eq!(find_uid(&table, client6, proxy), Some(1000));
        let other: SocketAddr = "127.0.0.2:54321".parse().unwrap();
        assert_eq!(find_uid(&table, other, proxy), None);
    }

    #[test]
    fn refusals_are_logged_first_then_once_per_ten_seconds_with_a_count() {
        let t0 = Instant::now();
        let mut log = RefusalLog::default();
        assert_eq!(log.note(t0), Some(1));
        assert_eq!(log.note(t0 + Duration::from_secs(1)), None);
        assert_eq!(log.note(t0 + Duration::from_secs(9)), None);
        assert_eq!(log.note(t0 + Duration::from_secs(10)), Some(3));
        assert_eq!(log.note(t0 + Duration::from_secs(11)), None);
        assert_eq!(log.note(t0 + Duration::from_secs(30)), Some(2));
    }

    #[tokio::test]
    async fn the_gate_admits_this_users_own_connection_from_an_ipv6_socket_to_ipv4() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = listener.local_addr().unwrap();
        // An AF_INET6 socket (the family follows the address) reaching 127.0.0.1.
        let mapped = SocketAddr::new(IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped()), at.port());
        let _client = TcpStream::connect(mapped).await.unwrap();
        let (server, from) = accept(&listener).await;
        assert!(Gate::new("test").admits(&server, from).await);
    }

    #[test]
    fn this_processs_own_loopback_connection_is_its_own() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server, from) = listener.accept().unwrap();
        assert_eq!(from, client.local_addr().unwrap());
        assert_eq!(
            uid_of(from, listener.local_addr().unwrap()),
            Some(nix::unistd::geteuid().as_raw())
        );
    }
}
