//! Who is on the other end of a loopback connection: the proxy serves only the user who
//! joined (any local user could otherwise reach the cluster with that user's identity). The
//! kernel lists every TCP socket of the network namespace with its owner's uid in
//! `/proc/net/tcp` and `/proc/net/tcp6`; the client's socket is the one whose local address is
//! the client's and whose remote address is the proxy's.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The uid owning the client socket `client` connected to `server`, from the kernel's tables.
pub fn uid_of(client: SocketAddr, server: SocketAddr) -> Option<u32> {
    let table = match client {
        SocketAddr::V4(_) => "/proc/net/tcp",
        SocketAddr::V6(_) => "/proc/net/tcp6",
    };
    let text = std::fs::read_to_string(table).ok()?;
    find_uid(&text, client, server)
}

/// The uid column of the line whose local address is `client` and remote address `server`.
pub fn find_uid(table: &str, client: SocketAddr, server: SocketAddr) -> Option<u32> {
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (local, remote, uid) = (f.get(1)?, f.get(2)?, f.get(7)?);
        (parse(local)? == client && parse(remote)? == server)
            .then(|| uid.parse().ok())
            .flatten()
    })
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
