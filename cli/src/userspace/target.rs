//! Where a proxy client wants to go: a host (a validated DNS name or an IP address) and a
//! port, as SOCKS5, HTTP and `kwg forward` name it. Every name comes from an untrusted local
//! client and is checked before it reaches a resolver or a log.

use std::fmt;
use std::net::IpAddr;

/// A destination host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Ip(IpAddr),
    /// A DNS name: ASCII letters, digits, `-` and `_`, labels of 1 to 63 characters, at most
    /// 253 in all (RFC 1035 section 2.3.4), lower-cased, without a trailing dot.
    Name(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: Host,
    pub port: u16,
}

/// Why a destination was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("{0:?} is not a host name or IP address")]
    BadHost(String),
    #[error("{0:?} is not a port (1-65535)")]
    BadPort(String),
    #[error("{0:?} has no port: write HOST:PORT")]
    NoPort(String),
}

impl Host {
    /// A host as written by a client: an IP address (IPv6 with or without brackets) or a DNS
    /// name.
    pub fn parse(s: &str) -> Result<Host, TargetError> {
        let bare = s
            .strip_prefix('[')
            .and_then(|x| x.strip_suffix(']'))
            .unwrap_or(s);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(Host::Ip(ip));
        }
        let name = s.strip_suffix('.').unwrap_or(s);
        let label_ok = |l: &str| {
            (1..=63).contains(&l.len())
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !l.starts_with('-')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
            return Err(TargetError::BadHost(s.chars().take(80).collect()));
        }
        Ok(Host::Name(name.to_ascii_lowercase()))
    }
}

impl Target {
    /// `host:port`, `[v6]:port`.
    pub fn parse(s: &str) -> Result<Target, TargetError> {
        let (host, port) = s
            .rsplit_once(':')
            .filter(|(h, _)| !h.is_empty())
            .ok_or_else(|| TargetError::NoPort(s.chars().take(80).collect()))?;
        // A bare IPv6 address has colons of its own: it needs brackets.
        if host.contains(':') && !host.starts_with('[') {
            return Err(TargetError::NoPort(s.chars().take(80).collect()));
        }
        Ok(Target {
            host: Host::parse(host)?,
            port: parse_port(port)?,
        })
    }
}

impl From<std::net::SocketAddr> for Target {
    fn from(a: std::net::SocketAddr) -> Target {
        Target {
            host: Host::Ip(a.ip()),
            port: a.port(),
        }
    }
}

pub fn parse_port(s: &str) -> Result<u16, TargetError> {
    match s.parse::<u16>() {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(TargetError::BadPort(s.chars().take(20).collect())),
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(n) => f.write_str(n),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_addresses_and_ports_are_checked() {
        let t = Target::parse("Web-App.emojivoto.:80").unwrap();
        assert_eq!(t.host, Host::Name("web-app.emojivoto".into()));
        assert_eq!(t.to_string(), "web-app.emojivoto:80");
        assert_eq!(
            Target::parse("[::1]:443").unwrap().host,
            Host::Ip("::1".parse().unwrap())
        );
        assert_eq!(Target::parse("10.96.0.10:53").unwrap().port, 53);
        for bad in [
            "web-app", "::1:80", ":80", "a..b:1", "-x:1", "x:0", "x:65536", "a b:1",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad} was accepted");
        }
        let long = format!("{}:1", "a.".repeat(130));
        assert!(Target::parse(&long).is_err());
        assert!(Host::parse("name\u{0}evil").is_err());
        assert!(Host::parse(&"x".repeat(64)).is_err());
    }
}
