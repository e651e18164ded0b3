//! The cross-platform userspace configuration protocol (`get=1` / `set=1`) that `wg` speaks to
//! wireguard-go and boringtun: <https://www.wireguard.com/xplatform/>. Parsing and formatting are
//! pure; [`serve`] runs it on a Unix socket for a [`crate::device::DeviceHandle`].

pub(crate) mod server;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;

use crate::core::Core;
use crate::peer::PeerConfig;
use kwg_contract::keys::{PresharedKey, PrivateKey, PublicKey, hex32, unhex32};

pub use server::serve;

/// errno values `wg` understands (positive, as the protocol carries them).
pub const EINVAL: i32 = libc::EINVAL;
pub const EPROTO: i32 = libc::EPROTO;
pub const EADDRINUSE: i32 = libc::EADDRINUSE;

/// A parse or apply failure, reported to the client as `errno=N`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UapiError {
    pub errno: i32,
    pub message: String,
}

fn invalid(message: impl Into<String>) -> UapiError {
    UapiError {
        errno: EINVAL,
        message: message.into(),
    }
}

/// One request.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Get,
    Set(SetRequest),
}

/// The body of `set=1`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SetRequest {
    /// `Some(None)`: remove the private key (all-zero key).
    pub private_key: Option<Option<PrivateKey>>,
    pub listen_port: Option<u16>,
    /// `Some(0)` removes the mark.
    pub fwmark: Option<u32>,
    pub replace_peers: bool,
    pub peers: Vec<PeerChange>,
}

/// One `public_key=` section of `set=1`.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerChange {
    pub public_key: PublicKey,
    pub remove: bool,
    pub update_only: bool,
    /// `Some(None)`: remove the preshared key.
    pub preshared_key: Option<Option<PresharedKey>>,
    pub endpoint: Option<SocketAddr>,
    /// `Some(0)` disables.
    pub persistent_keepalive: Option<u16>,
    pub replace_allowed_ips: bool,
    pub allowed_ips: Vec<IpNet>,
}

fn key_bytes(v: &str) -> Result<[u8; 32], UapiError> {
    unhex32(v).ok_or_else(|| invalid(format!("invalid hex key {v:?}")))
}

fn flag(k: &str, v: &str) -> Result<bool, UapiError> {
    match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(invalid(format!("{k} must be true or false, not {v:?}"))),
    }
}

fn number<T: std::str::FromStr>(k: &str, v: &str) -> Result<T, UapiError> {
    v.parse()
        .map_err(|_| invalid(format!("invalid number for {k}: {v:?}")))
}

/// Parses the lines after `set=1` (without the terminating empty line).
pub fn parse_set(body: &str) -> Result<SetRequest, UapiError> {
    let mut req = SetRequest::default();
    for line in body.lines() {
        if line.is_empty() {
            break;
        }
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| invalid(format!("line without '=': {line:?}")))?;
        if k == "public_key" {
            req.peers.push(PeerChange {
                public_key: PublicKey::from_bytes(key_bytes(v)?),
                remove: false,
                update_only: false,
                preshared_key: None,
                endpoint: None,
                persistent_keepalive: None,
                replace_allowed_ips: false,
                allowed_ips: Vec::new(),
            });
            continue;
        }
        match req.peers.last_mut() {
            None => match k {
                "private_key" => {
                    let b = key_bytes(v)?;
                    req.private_key = Some((b != [0; 32]).then(|| PrivateKey::from_bytes(b)));
                }
                "listen_port" => req.listen_port = Some(number(k, v)?),
                "fwmark" => req.fwmark = Some(number(k, v)?),
                "replace_peers" => req.replace_peers = flag(k, v)?,
                _ => return Err(invalid(format!("unknown interface key {k:?}"))),
            },
            Some(p) => match k {
                "remove" => p.remove = flag(k, v)?,
                "update_only" => p.update_only = flag(k, v)?,
                "preshared_key" => {
                    let b = key_bytes(v)?;
                    p.preshared_key = Some((b != [0; 32]).then(|| PresharedKey::from_bytes(b)));
                }
                "endpoint" => {
                    p.endpoint = Some(
                        v.parse()
                            .map_err(|_| invalid(format!("invalid endpoint {v:?}")))?,
                    )
                }
                "persistent_keepalive_interval" => p.persistent_keepalive = Some(number(k, v)?),
                "replace_allowed_ips" => p.replace_allowed_ips = flag(k, v)?,
                "allowed_ip" => p.allowed_ips.push(
                    v.parse()
                        .map_err(|_| invalid(format!("invalid allowed_ip {v:?}")))?,
                ),
                "protocol_version" if v == "1" => {}
                "protocol_version" => {
                    return Err(invalid(format!("unsupported protocol_version {v}")));
                }
                _ => return Err(invalid(format!("unknown peer key {k:?}"))),
            },
        }
    }
    Ok(req)
}

/// Applies the key and peer parts of a `set` to `core`; the caller handles the port and mark.
pub fn apply_to_core(req: &SetRequest, core: &mut Core) {
    if let Some(k) = &req.private_key {
        core.set_private_key(k.clone());
    }
    if req.replace_peers {
        core.remove_all_peers();
    }
    for change in &req.peers {
        if change.remove {
            core.remove_peer(&change.public_key);
            continue;
        }
        let mut cfg = match core.peer_config(&change.public_key) {
            Some(c) => c.clone(),
            None if change.update_only => continue,
            None => PeerConfig::new(change.public_key),
        };
        if let Some(psk) = &change.preshared_key {
            cfg.preshared_key = psk.clone();
        }
        if change.endpoint.is_some() {
            cfg.endpoint = change.endpoint;
        }
        if let Some(ka) = change.persistent_keepalive {
            cfg.persistent_keepalive = (ka > 0).then_some(ka);
        }
        if change.replace_allowed_ips {
            cfg.allowed_ips.clear();
        }
        cfg.allowed_ips.extend(change.allowed_ips.iter().copied());
        core.upsert_peer(cfg);
    }
}

/// The interface facts `get=1` reports besides the core's.
pub struct InterfaceInfo {
    pub listen_port: u16,
    pub fwmark: u32,
}

/// The response to `get=1`, including the final `errno=0` and empty line.
pub fn format_get(core: &Core, info: &InterfaceInfo, now: Instant, wall: SystemTime) -> String {
    let mut out = String::new();
    if let Some(k) = core.private_key() {
        let _ = writeln!(out, "private_key={}", hex32(k.as_bytes()));
    }
    let _ = writeln!(out, "listen_port={}", info.listen_port);
    if info.fwmark != 0 {
        let _ = writeln!(out, "fwmark={}", info.fwmark);
    }
    for stats in core.peers(now, wall) {
        let cfg = core
            .peer_config(&stats.public_key)
            .expect("listed peer exists");
        let _ = writeln!(out, "public_key={}", stats.public_key.to_hex());
        if let Some(psk) = &cfg.preshared_key {
            let _ = writeln!(out, "preshared_key={}", hex32(psk.as_bytes()));
        }
        let _ = writeln!(out, "protocol_version=1");
        if let Some(ep) = stats.endpoint {
            let _ = writeln!(out, "endpoint={ep}");
        }
        let (sec, nsec) = stats
            .last_handshake
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or((0, 0), |d| (d.as_secs(), d.subsec_nanos()));
        let _ = writeln!(out, "last_handshake_time_sec={sec}");
        let _ = writeln!(out, "last_handshake_time_nsec={nsec}");
        let _ = writeln!(out, "tx_bytes={}", stats.tx_bytes);
        let _ = writeln!(out, "rx_bytes={}", stats.rx_bytes);
        let _ = writeln!(
            out,
            "persistent_keepalive_interval={}",
            stats.persistent_keepalive.unwrap_or(0)
        );
        for ip in &stats.allowed_ips {
            let _ = writeln!(out, "allowed_ip={ip}");
        }
    }
    out.push_str("errno=0\n\n");
    out
}

/// `errno=N` and the terminating empty line.
pub fn format_errno(errno: i32) -> String {
    format!("errno={errno}\n\n")
}

/// Splits a request into its operation and body: `get=1\n\n` or `set=1\n...\n\n`.
pub fn parse_request(text: &str) -> Result<Request, UapiError> {
    let (first, body) = text.split_once('\n').unwrap_or((text, ""));
    match first {
        "get=1" => Ok(Request::Get),
        "set=1" => parse_set(body).map(Request::Set),
        _ => Err(UapiError {
            errno: EPROTO,
            message: format!("unknown operation {first:?}"),
        }),
    }
}

#[cfg(test)]
mod tests;
