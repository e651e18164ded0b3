//! What crosses the helper's socket: one JSON object per line each way, a request, then its
//! reply. The reply to [`Request::CreateTun`] carries the TUN's file descriptor (SCM_RIGHTS) on
//! its first byte. Every line is bounded ([`MAX_LINE`]); anything the helper cannot parse is
//! refused with a reply naming what was wrong, and the connection is closed.
//!
//! One connection is one session: it begins with [`Request::Open`] and the session's changes
//! are reverted when the connection ends, however it ends (`Close`, the client's exit, a crash,
//! `kill -9`).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The protocol's version; a helper refuses an `Open` of another one with a reply saying which
/// binaries to match.
pub const VERSION: u32 = 2;

/// The longest line either side accepts, newline included (a request names at most
/// [`MAX_ROUTES`] prefixes: a few KiB).
pub const MAX_LINE: usize = 16 * 1024;

/// At most this many route prefixes in one session (the trust rules allow 32 cluster prefixes;
/// the rest is the user's `--also-proxy`).
pub const MAX_ROUTES: usize = 64;

/// A client's request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "camelCase", deny_unknown_fields)]
pub enum Request {
    /// Begins this connection's session on `interface` (`kwg` and up to 12 more letters,
    /// digits, `-` or `_`).
    #[serde(rename_all = "camelCase")]
    Open {
        version: u32,
        interface: String,
        /// The user daemon's state directory: shown by `List`, never opened by the helper.
        #[serde(default)]
        state_dir: Option<PathBuf>,
        /// The user's `--also-proxy`: prefixes outside private space the user asked to route.
        /// Honoured for root, and for others only inside the helper's `--allow-route`.
        #[serde(default)]
        also_proxy: Vec<IpNet>,
        /// The user's `--allow-conflicting-subnets`: overlapping the machine's own routes (never
        /// another session's, never the machine's addresses, gateways or DNS servers).
        #[serde(default)]
        allow_conflicting: Vec<IpNet>,
    },
    /// Creates the session's TUN link (with offloads where the kernel has them, forwarding
    /// from it off) and passes its descriptor back.
    CreateTun { mtu: u16 },
    /// Gives the link `address` (replacing the session's previous one) and sets it up.
    SetAddress { address: IpNet },
    /// Removes `address` from the session's link: only one the helper gave it (the IPv6 tunnel
    /// address once the cluster withdraws `ipv6.json`).
    RemoveAddress { address: IpNet },
    /// Removes, then adds routes through the session's link.
    Routes {
        #[serde(default)]
        add: Vec<IpNet>,
        #[serde(default)]
        remove: Vec<IpNet>,
    },
    /// Loads the session's nftables table (new connections from the tunnel dropped).
    Firewall {},
    /// Binds the session's DNS forwarder socket on `listen` (a loopback address, port 53:
    /// privileged) and passes its descriptor back: UDP, or a TCP listener with `tcp`.
    #[serde(rename_all = "camelCase")]
    DnsSocket {
        listen: SocketAddr,
        #[serde(default)]
        tcp: bool,
    },
    /// Rewrites the resolver file (the helper's own `/etc/resolv.conf`, never a path from the
    /// client) to ask `forwarder` (the address of this session's `DnsSocket`) first, with
    /// `search` before the file's own search domains. Reverted with the session.
    ResolvConf {
        forwarder: IpAddr,
        #[serde(default)]
        search: Vec<String>,
    },
    /// Has systemd-resolved send `domains` to this session's forwarder (the address of its
    /// `DnsSocket`) on the session's own link, never as the default route: the calls of a root
    /// join (`SetLinkDNS`, `SetLinkDomains`, `SetLinkDefaultRoute` false). A second one
    /// replaces the domains. Reverted (`RevertLink`) with the session and by `RevertDns`.
    ResolvedLink { domains: Vec<Domain> },
    /// Puts the resolver file back and reverts the link in systemd-resolved now (the user side
    /// stops its forwarder next).
    RevertDns {},
    /// Forces the buffers of the session's WireGuard UDP socket, passed with this line
    /// (SCM_RIGHTS), to the size a root join's has (past `net.core.rmem_max`): a UDP socket of
    /// the caller's uid only, one per session at a time. Nothing to revert: the socket dies with
    /// the daemon.
    UdpBuffers {},
    /// Reverts everything of the session.
    Close {},
    /// The sessions the caller may see (root: all; others: their own).
    List {},
    /// Reverts the session on `interface` (its owner or root only).
    End { interface: String },
}

/// A domain of the session's link in systemd-resolved: `routingOnly` is resolved's `~domain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Domain {
    pub name: String,
    #[serde(default)]
    pub routing_only: bool,
}

impl From<&kwg_session::dns::domains::LinkDomain> for Domain {
    fn from(d: &kwg_session::dns::domains::LinkDomain) -> Domain {
        Domain {
            name: d.name.clone(),
            routing_only: d.routing_only,
        }
    }
}

impl From<Domain> for kwg_session::dns::domains::LinkDomain {
    fn from(d: Domain) -> Self {
        kwg_session::dns::domains::LinkDomain {
            name: d.name,
            routing_only: d.routing_only,
        }
    }
}

/// What the helper answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "camelCase", deny_unknown_fields)]
pub enum Reply {
    Opened {
        session: u64,
    },
    /// The TUN's descriptor travels with this line; `offload` says whether it has
    /// IFF_VNET_HDR (a virtio-net header before each packet, TSO/USO on).
    Tun {
        name: String,
        ifindex: u32,
        offload: bool,
    },
    /// A DNS socket's descriptor travels with this line.
    Socket {
        listen: SocketAddr,
        tcp: bool,
    },
    Done,
    /// `resolvedLink` applied, leaving out these namespaces (single-label routing domains) the
    /// rules refuse, each with the rule's sentence; the rest is on the link.
    #[serde(rename_all = "camelCase")]
    LinkDomains {
        left_out: Vec<LeftOut>,
    },
    /// The forced buffer sizes of the socket `udpBuffers` passed, as the kernel reports them
    /// (twice the size set).
    Buffers {
        receive: u64,
        send: u64,
    },
    Sessions {
        sessions: Vec<SessionInfo>,
    },
    Error {
        kind: ErrorKind,
        message: String,
    },
}

/// A domain `resolvedLink` left out, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeftOut {
    pub domain: Domain,
    pub message: String,
}

/// One session as `List` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionInfo {
    pub session: u64,
    pub uid: u32,
    pub pid: Option<u32>,
    pub interface: String,
    pub state_dir: Option<PathBuf>,
    pub addresses: Vec<IpNet>,
    pub routes: Vec<IpNet>,
    pub firewall: bool,
    /// Whether the resolver file points at the session's forwarder.
    #[serde(default)]
    pub dns: bool,
}

/// Why a request failed: the client maps each to its error and exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ErrorKind {
    /// The caller is neither root nor in the helper's group.
    Unauthorized,
    /// Not a request of this protocol, or out of order (no session yet, a second `Open`).
    BadRequest,
    /// Another protocol version.
    Version,
    /// A rule refused it (address space, the machine's own addresses).
    Refused,
    /// Another session (or the machine's routes) holds it.
    Conflict,
    /// Too many sessions or routes.
    Limit,
    /// No such session (or not the caller's).
    NotFound,
    /// The kernel or nft failed.
    System,
}

/// A line too long, not JSON, or not a request.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("a line longer than {MAX_LINE} bytes")]
    TooLong,
    #[error("not a request of kwg-helper's protocol: {0}")]
    Parse(String),
}

/// The line for `msg`, newline included.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let mut line = serde_json::to_vec(msg).expect("protocol types always serialize");
    line.push(b'\n');
    line
}

/// Parses one line (without its newline).
pub fn decode<T: for<'de> Deserialize<'de>>(line: &[u8]) -> Result<T, FrameError> {
    if line.len() >= MAX_LINE {
        return Err(FrameError::TooLong);
    }
    serde_json::from_slice(line).map_err(|e| FrameError::Parse(e.to_string()))
}

/// Splits complete lines off the front of a receive buffer, bounded in size.
#[derive(Debug, Default)]
pub struct LineBuf {
    buf: Vec<u8>,
}

impl LineBuf {
    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete line (without its newline); `Err` once a line exceeds [`MAX_LINE`].
    pub fn next_line(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        match self.buf.iter().position(|b| *b == b'\n') {
            Some(i) if i >= MAX_LINE => Err(FrameError::TooLong),
            Some(i) => {
                let mut line: Vec<u8> = self.buf.drain(..=i).collect();
                line.pop();
                Ok(Some(line))
            }
            None if self.buf.len() >= MAX_LINE => Err(FrameError::TooLong),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_as_one_line_each() {
        let reqs = [
            Request::Open {
                version: VERSION,
                interface: "kwg0".into(),
                state_dir: Some("/run/user/1000/kwg".into()),
                also_proxy: vec!["203.0.113.0/24".parse().unwrap()],
                allow_conflicting: vec![],
            },
            Request::CreateTun { mtu: 1420 },
            Request::RemoveAddress {
                address: "fd6b:7767::6440:2/128".parse().unwrap(),
            },
            Request::Routes {
                add: vec!["10.96.0.0/12".parse().unwrap()],
                remove: vec![],
            },
            Request::Firewall {},
            Request::DnsSocket {
                listen: "127.77.0.53:53".parse().unwrap(),
                tcp: true,
            },
            Request::ResolvConf {
                forwarder: "127.77.0.53".parse().unwrap(),
                search: vec!["emojivoto.svc.cluster.local".into()],
            },
            Request::ResolvedLink {
                domains: vec![Domain {
                    name: "cluster.local".into(),
                    routing_only: true,
                }],
            },
            Request::RevertDns {},
            Request::UdpBuffers {},
            Request::End {
                interface: "kwg1".into(),
            },
        ];
        for r in reqs {
            let line = encode(&r);
            assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
            assert_eq!(decode::<Request>(&line[..line.len() - 1]).unwrap(), r);
        }
        assert_eq!(
            String::from_utf8(encode(&Request::CreateTun { mtu: 1420 })).unwrap(),
            "{\"request\":\"createTun\",\"mtu\":1420}\n"
        );
    }

    #[test]
    fn unknown_fields_oversized_and_garbage_lines_are_refused() {
        assert!(matches!(
            decode::<Request>(br#"{"request":"firewall","table":"filter"}"#),
            Err(FrameError::Parse(_))
        ));
        assert!(matches!(
            decode::<Request>(br#"{"request":"shell","cmd":"rm -rf /"}"#),
            Err(FrameError::Parse(_))
        ));
        assert!(matches!(
            decode::<Request>(b"\xff\xfe"),
            Err(FrameError::Parse(_))
        ));
        let mut b = LineBuf::default();
        b.push(&vec![b'a'; MAX_LINE]);
        assert_eq!(b.next_line(), Err(FrameError::TooLong));
        let mut b = LineBuf::default();
        b.push(b"{\"request\":\"list\"}\n{\"requ");
        assert_eq!(b.next_line().unwrap().unwrap(), b"{\"request\":\"list\"}");
        assert_eq!(b.next_line().unwrap(), None);
        b.push(b"est\":\"close\"}\n");
        assert_eq!(
            decode::<Request>(&b.next_line().unwrap().unwrap()).unwrap(),
            Request::Close {}
        );
    }
}
