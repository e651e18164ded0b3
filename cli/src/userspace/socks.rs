//! SOCKS5 (RFC 1928), server side of CONNECT without authentication and a client for `kwg
//! forward`. Every field has a fixed or length-prefixed size (at most 255 bytes), so the
//! parser reads exactly what the format allows and never buffers more; anything else gets the
//! RFC's error reply and the connection is closed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::target::{Host, Target};

pub const VERSION: u8 = 5;
const NO_AUTH: u8 = 0;
const NO_ACCEPTABLE: u8 = 0xff;
const CONNECT: u8 = 1;
const ATYP_V4: u8 = 1;
const ATYP_NAME: u8 = 3;
const ATYP_V6: u8 = 4;

/// Reply codes (RFC 1928 section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Reply {
    Succeeded = 0,
    GeneralFailure = 1,
    NetworkUnreachable = 3,
    HostUnreachable = 4,
    ConnectionRefused = 5,
    TtlExpired = 6,
    CommandNotSupported = 7,
    AddressTypeNotSupported = 8,
}

/// Why a SOCKS5 client was turned away.
#[derive(Debug, thiserror::Error)]
pub enum SocksError {
    #[error("not SOCKS version 5 (got {0})")]
    Version(u8),
    #[error("the client offers no authentication method kwg accepts (only \"no authentication\")")]
    NoMethod,
    #[error("command {0} is not supported (only CONNECT)")]
    Command(u8),
    #[error("address type {0} is not supported")]
    AddressType(u8),
    #[error("bad destination: {0}")]
    Target(#[from] super::target::TargetError),
    #[error("the proxy server answered {0}")]
    Refused(u8),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads the greeting and the request of a client whose first byte (the version) was already
/// read; answers the method selection. The caller connects and then calls [`reply`].
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) -> Result<Target, SocksError> {
    let n = s.read_u8().await?;
    let mut methods = [0u8; 255];
    let methods = &mut methods[..usize::from(n)];
    s.read_exact(methods).await?;
    if !methods.contains(&NO_AUTH) {
        s.write_all(&[VERSION, NO_ACCEPTABLE]).await?;
        return Err(SocksError::NoMethod);
    }
    s.write_all(&[VERSION, NO_AUTH]).await?;
    let mut head = [0u8; 4];
    s.read_exact(&mut head).await?;
    let [version, cmd, _reserved, atyp] = head;
    if version != VERSION {
        return Err(SocksError::Version(version));
    }
    let host = match read_host(s, atyp).await {
        Ok(h) => h,
        Err(e) => {
            let code = match e {
                SocksError::AddressType(_) => Reply::AddressTypeNotSupported,
                _ => Reply::GeneralFailure,
            };
            let _ = reply(s, code).await;
            return Err(e);
        }
    };
    let port = s.read_u16().await?;
    if cmd != CONNECT {
        reply(s, Reply::CommandNotSupported).await?;
        return Err(SocksError::Command(cmd));
    }
    if port == 0 {
        let _ = reply(s, Reply::GeneralFailure).await;
        return Err(super::target::TargetError::BadPort("0".into()).into());
    }
    Ok(Target { host, port })
}

async fn read_host<S: AsyncRead + Unpin>(s: &mut S, atyp: u8) -> Result<Host, SocksError> {
    match atyp {
        ATYP_V4 => {
            let mut b = [0u8; 4];
            s.read_exact(&mut b).await?;
            Ok(Host::Ip(IpAddr::V4(Ipv4Addr::from(b))))
        }
        ATYP_V6 => {
            let mut b = [0u8; 16];
            s.read_exact(&mut b).await?;
            Ok(Host::Ip(IpAddr::V6(Ipv6Addr::from(b))))
        }
        ATYP_NAME => {
            let len = s.read_u8().await?;
            let mut b = [0u8; 255];
            let b = &mut b[..usize::from(len)];
            s.read_exact(b).await?;
            let name = std::str::from_utf8(b)
                .map_err(|_| super::target::TargetError::BadHost("(not UTF-8)".into()))?;
            Ok(Host::parse(name)?)
        }
        other => Err(SocksError::AddressType(other)),
    }
}

/// The reply to a request (the bound address is not meaningful here: zeros).
pub async fn reply<S: AsyncWrite + Unpin>(s: &mut S, code: Reply) -> std::io::Result<()> {
    s.write_all(&[VERSION, code as u8, 0, ATYP_V4, 0, 0, 0, 0, 0, 0])
        .await
}

/// Client side: asks the SOCKS5 server on `s` to CONNECT to `to` (names are sent as names:
/// the server resolves them, socks5h).
pub async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    to: &Target,
) -> Result<(), SocksError> {
    s.write_all(&[VERSION, 1, NO_AUTH]).await?;
    let mut choice = [0u8; 2];
    s.read_exact(&mut choice).await?;
    if choice != [VERSION, NO_AUTH] {
        return Err(SocksError::NoMethod);
    }
    let mut req = vec![VERSION, CONNECT, 0];
    match &to.host {
        Host::Ip(IpAddr::V4(ip)) => {
            req.push(ATYP_V4);
            req.extend_from_slice(&ip.octets());
        }
        Host::Ip(IpAddr::V6(ip)) => {
            req.push(ATYP_V6);
            req.extend_from_slice(&ip.octets());
        }
        Host::Name(n) => {
            req.push(ATYP_NAME);
            req.push(u8::try_from(n.len()).expect("names are at most 253 bytes"));
            req.extend_from_slice(n.as_bytes());
        }
    }
    req.extend_from_slice(&to.port.to_be_bytes());
    s.write_all(&req).await?;
    let mut head = [0u8; 4];
    s.read_exact(&mut head).await?;
    if head[0] != VERSION {
        return Err(SocksError::Version(head[0]));
    }
    // The bound address, whatever its type.
    read_host(s, head[3]).await.ok();
    s.read_u16().await?;
    match head[1] {
        0 => Ok(()),
        code => Err(SocksError::Refused(code)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `accept` on `input` (after the version byte); returns its result and what it
    /// wrote back.
    async fn serve(input: &[u8]) -> (Result<Target, SocksError>, Vec<u8>) {
        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(input).await.unwrap();
        drop(client.shutdown().await);
        let r = accept(&mut server).await;
        drop(server);
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.unwrap();
        (r, out)
    }

    #[tokio::test]
    async fn connect_by_name_and_by_address() {
        let mut req = vec![1, 0, 5, 1, 0, 3, 17];
        req.extend_from_slice(b"web-app.emojivoto");
        req.extend_from_slice(&80u16.to_be_bytes());
        let (t, out) = serve(&req).await;
        assert_eq!(t.unwrap().to_string(), "web-app.emojivoto:80");
        assert_eq!(out, [5, 0]);
        let (t, _) = serve(&[2, 2, 0, 5, 1, 0, 1, 10, 96, 0, 10, 0, 53]).await;
        assert_eq!(t.unwrap().to_string(), "10.96.0.10:53");
    }

    #[tokio::test]
    async fn untrusted_clients_get_the_rfc_error_and_nothing_more() {
        // Only username/password offered.
        let (r, out) = serve(&[1, 2]).await;
        assert!(matches!(r, Err(SocksError::NoMethod)));
        assert_eq!(out, [5, 0xff]);
        // BIND.
        let (r, out) = serve(&[1, 0, 5, 2, 0, 1, 1, 2, 3, 4, 0, 80]).await;
        assert!(matches!(r, Err(SocksError::Command(2))));
        assert_eq!(out[2..4], [5, Reply::CommandNotSupported as u8]);
        // Unknown address type.
        let (r, out) = serve(&[1, 0, 5, 1, 0, 9]).await;
        assert!(matches!(r, Err(SocksError::AddressType(9))));
        assert_eq!(out[3], Reply::AddressTypeNotSupported as u8);
        // A name with a NUL, a name that is not UTF-8, port 0, a truncated request.
        let mut req = vec![1, 0, 5, 1, 0, 3, 4];
        req.extend_from_slice(b"a\0.b");
        req.extend_from_slice(&[0, 80]);
        assert!(matches!(serve(&req).await.0, Err(SocksError::Target(_))));
        let (r, _) = serve(&[1, 0, 5, 1, 0, 3, 2, 0xff, 0xfe, 0, 80]).await;
        assert!(matches!(r, Err(SocksError::Target(_))));
        let (r, _) = serve(&[1, 0, 5, 1, 0, 1, 1, 2, 3, 4, 0, 0]).await;
        assert!(matches!(r, Err(SocksError::Target(_))));
        let (r, _) = serve(&[1, 0, 5, 1, 0, 3, 200, b'a']).await;
        assert!(matches!(r, Err(SocksError::Io(_))));
        // Wrong version in the request.
        let (r, _) = serve(&[1, 0, 4, 1, 0, 1, 1, 2, 3, 4, 0, 80]).await;
        assert!(matches!(r, Err(SocksError::Version(4))));
    }

    #[tokio::test]
    async fn the_client_speaks_to_the_server() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let server = tokio::spawn(async move {
            assert_eq!(b.read_u8().await.unwrap(), VERSION);
            let t = accept(&mut b).await.unwrap();
            reply(&mut b, Reply::ConnectionRefused).await.unwrap();
            t
        });
        let to = Target::parse("db.prod:5432").unwrap();
        let r = connect(&mut a, &to).await;
        assert!(matches!(r, Err(SocksError::Refused(5))), "{r:?}");
        assert_eq!(server.await.unwrap(), to);
    }
}
