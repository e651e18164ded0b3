//! Validated newtypes of the contract.

use super::ContractError;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// Maximum length of a DNS label (RFC 1035 section 2.3.4).
const MAX_LABEL_LEN: usize = 63;

/// A peer's name: a DNS label (RFC 1123: `[a-z0-9]([a-z0-9-]*[a-z0-9])?`, at most 63 chars).
///
/// The Secret is named `kwg-peer-<name>`, so the Secret name also stays a valid object name.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct PeerName(String);

impl TryFrom<String> for PeerName {
    type Error = ContractError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<PeerName> for String {
    fn from(n: PeerName) -> String {
        n.0
    }
}

impl PeerName {
    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Turns any text (such as a hostname) into a valid peer name: lower case, other
    /// characters replaced by `-`, trimmed to 63 chars. `None` when nothing usable is left.
    pub fn sanitize(text: &str) -> Option<PeerName> {
        let mapped: String = text
            .chars()
            .map(|c| c.to_ascii_lowercase())
            .map(|c| {
                if c.is_ascii_lowercase() || c.is_ascii_digit() {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let trimmed: String = mapped
            .trim_matches('-')
            .chars()
            .take(MAX_LABEL_LEN)
            .collect();
        trimmed.trim_end_matches('-').parse().ok()
    }
}

impl FromStr for PeerName {
    type Err = ContractError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| ContractError::InvalidPeerName {
            name: super::error::truncate_for_message(s),
            reason: reason.to_owned(),
        };
        if s.is_empty() {
            return Err(bad("it is empty"));
        }
        if s.len() > MAX_LABEL_LEN {
            return Err(bad("it is longer than 63 characters"));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(bad("only lower-case letters, digits and '-' are allowed"));
        }
        if s.starts_with('-') || s.ends_with('-') {
            return Err(bad("it must start and end with a letter or digit"));
        }
        Ok(PeerName(s.to_owned()))
    }
}

impl fmt::Display for PeerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An address inside the tunnel CIDR, assigned by the gateway (IPv4 only).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TunnelIp(Ipv4Addr);

impl TunnelIp {
    /// Wraps an address.
    pub const fn new(ip: Ipv4Addr) -> TunnelIp {
        TunnelIp(ip)
    }

    /// The address.
    pub const fn addr(self) -> Ipv4Addr {
        self.0
    }
}

impl From<Ipv4Addr> for TunnelIp {
    fn from(ip: Ipv4Addr) -> Self {
        TunnelIp(ip)
    }
}

impl FromStr for TunnelIp {
    type Err = ContractError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim()
            .parse::<Ipv4Addr>()
            .map(TunnelIp)
            .map_err(|_| ContractError::InvalidTunnelIp {
                value: super::error::truncate_for_message(s),
            })
    }
}

impl fmt::Display for TunnelIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl serde::Serialize for TunnelIp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for TunnelIp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn peer_names() {
        for ok in ["a", "mybox", "ci-runner-42", "0", &"a".repeat(63)] {
            assert_eq!(ok.parse::<PeerName>().unwrap().as_str(), ok);
        }
        for bad in ["", "-a", "a-", "MyBox", "a_b", "a.b", "é", &"a".repeat(64)] {
            let err = bad.parse::<PeerName>().unwrap_err();
            assert!(
                matches!(err, ContractError::InvalidPeerName { .. }),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn sanitize_hostnames() {
        assert_eq!(
            PeerName::sanitize("My_Laptop.local").unwrap().as_str(),
            "my-laptop-local"
        );
        assert_eq!(PeerName::sanitize("--x--").unwrap().as_str(), "x");
        assert!(PeerName::sanitize("___").is_none());
        let long = format!("{}-{}", "a".repeat(62), "b");
        assert_eq!(PeerName::sanitize(&long).unwrap().as_str(), "a".repeat(62));
    }

    #[test]
    fn tunnel_ips() {
        let ip: TunnelIp = "100.77.0.2".parse().unwrap();
        assert_eq!(ip.addr(), Ipv4Addr::new(100, 77, 0, 2));
        assert!("::1".parse::<TunnelIp>().is_err());
        assert!("100.77.0.256".parse::<TunnelIp>().is_err());
        assert_eq!(serde_json::to_string(&ip).unwrap(), "\"100.77.0.2\"");
    }

    proptest! {
        #[test]
        fn sanitize_always_valid(s in ".{0,100}") {
            if let Some(n) = PeerName::sanitize(&s) {
                prop_assert_eq!(n.as_str().parse::<PeerName>().unwrap(), n);
            }
        }

        #[test]
        fn peer_name_never_panics(s in ".{0,100}") {
            let _ = s.parse::<PeerName>();
        }
    }
}
