//! The per-source cap of WireGuard-over-TCP connections (pure: no sockets, time passed in).
//!
//! A connection counts against its source ([`Source`]: the IPv4 address, or the /64 of an
//! IPv6 one) from its accept until the device answers it with an authenticated message (a
//! handshake response or transport data, seen by [`FrameWatch`] in what the device writes)
//! or it closes. Only a peer whose key the gateway knows gets such an answer, so a source
//! without a key can hold at most [`Pending::per_source`] of the [`super::MAX_STREAMS`]
//! slots, each for at most `kwg_wg::device::UNANSWERED` (10 s), while connected peers behind
//! one address (a NAT, or a node that masquerades NodePort traffic) do not count at all.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

/// Connections one source may hold before they authenticate, by default. A laptop holds one
/// (plus one per reconnect within 10 s: `kwg join --transport auto` opens TCP next to UDP
/// and leaves it unanswered when UDP works); 64 lets about 50 CI runners behind one NAT
/// address, or laptops coming through one node that masquerades NodePort traffic, join
/// within the same 10 s, and a source without a key then needs 64 addresses to fill the
/// 4096 slots. For comparison: nginx's `limit_conn` has no default (its documented example
/// is 1 per address, for downloads), tailscale's derper limits only the global accept rate,
/// wireguard-go has no TCP listener. `--tcp-pending-per-source` changes it. The API-server
/// path's connections all come from the pod's loopback (the kubelet's port-forward): they too
/// count as one source, but only for the round trip of their first handshake.
pub const PER_SOURCE: usize = 64;

/// Refusals are logged at most once per this long (with the count since the last log).
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// WireGuard message types (WireGuard paper §5.4): what only a known peer gets answered.
const HANDSHAKE_RESPONSE: u8 = 2;
const TRANSPORT_DATA: u8 = 4;

/// Whom a connection counts against: an IPv4 address (an IPv4-mapped IPv6 one too), or the
/// /64 of an IPv6 address (one host usually holds a whole /64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    V4(Ipv4Addr),
    V6Net(u64),
}

impl Source {
    pub fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(a) => Source::V4(a),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => Source::V4(v4),
                None => Source::V6Net((a.to_bits() >> 64) as u64),
            },
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::V4(a) => a.fmt(f),
            Source::V6Net(n) => {
                let a = std::net::Ipv6Addr::from_bits(u128::from(*n) << 64);
                write!(f, "{a}/64")
            }
        }
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its source already holds [`Pending::per_source`] unauthenticated connections.
    Source = 0,
    /// The device holds [`super::MAX_STREAMS`] streams.
    Full = 1,
}

/// The unauthenticated connections per source, and the refusals not yet logged.
#[derive(Debug)]
pub struct Pending {
    per_source: usize,
    open: HashMap<Source, usize>,
    unlogged: [u64; 2],
    last_source: Option<Source>,
    logged_at: Option<Instant>,
}

/// What to log about the refusals since the last log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedLog {
    /// Refused because their source held too many.
    pub source: u64,
    /// Refused because every slot was taken.
    pub full: u64,
    /// The source of the last refusal for its source.
    pub last_source: Option<Source>,
}

impl Pending {
    pub fn new(per_source: usize) -> Pending {
        Pending {
            per_source,
            open: HashMap::new(),
            unlogged: [0; 2],
            last_source: None,
            logged_at: None,
        }
    }

    pub fn per_source(&self) -> usize {
        self.per_source
    }

    /// Counts a new connection from `src` with `streams` open in the device, or refuses it.
    pub fn admit(&mut self, src: Source, streams: usize) -> Result<(), Refusal> {
        let refusal = if streams >= super::MAX_STREAMS {
            Refusal::Full
        } else if self.open.get(&src).copied().unwrap_or(0) >= self.per_source {
            self.last_source = Some(src);
            Refusal::Source
        } else {
            *self.open.entry(src).or_default() += 1;
            return Ok(());
        };
        self.unlogged[refusal as usize] += 1;
        Err(refusal)
    }

    /// A connection from `src` authenticated or closed.
    pub fn release(&mut self, src: Source) {
        if let Some(n) = self.open.get_mut(&src) {
            *n -= 1;
            if *n == 0 {
                self.open.remove(&src);
            }
        }
    }

    /// Unauthenticated connections from `src`.
    pub fn held(&self, src: Source) -> usize {
        self.open.get(&src).copied().unwrap_or(0)
    }

    /// The refusals to log now: some since the last log, which is [`LOG_EVERY`] old.
    pub fn log_due(&mut self, now: Instant) -> Option<RefusedLog> {
        if self.unlogged == [0; 2]
            || self
                .logged_at
                .is_some_and(|t| now.saturating_duration_since(t) < LOG_EVERY)
        {
            return None;
        }
        self.logged_at = Some(now);
        let [source, full] = std::mem::take(&mut self.unlogged);
        Some(RefusedLog {
            source,
            full,
            last_source: self.last_source.take(),
        })
    }
}

/// Follows the frames the device writes on a stream (2-byte big-endian length, then the
/// datagram: `kwg_wg::io::stream`) until one carries an authenticated message.
#[derive(Debug, Default)]
pub struct FrameWatch {
    state: Frame,
}

#[derive(Debug, Default, Clone, Copy)]
enum Frame {
    /// Before a length prefix.
    #[default]
    Len,
    /// After the first byte of a length prefix.
    LenHalf(u8),
    /// Inside a datagram: bytes left, whether the next one is its first (the type).
    Body { left: usize, first: bool },
}

impl FrameWatch {
    /// Follows `written` bytes; true once a handshake response or transport data went out.
    pub fn push(&mut self, mut written: &[u8]) -> bool {
        while let Some(&b) = written.first() {
            self.state = match self.state {
                Frame::Len => Frame::LenHalf(b),
                Frame::LenHalf(hi) => match u16::from_be_bytes([hi, b]) {
                    0 => Frame::Len,
                    n => Frame::Body {
                        left: n.into(),
                        first: true,
                    },
                },
                Frame::Body { left, first } => {
                    if first && matches!(b, HANDSHAKE_RESPONSE | TRANSPORT_DATA) {
                        return true;
                    }
                    let k = left.min(written.len());
                    written = &written[k..];
                    self.state = match left - k {
                        0 => Frame::Len,
                        left => Frame::Body { left, first: false },
                    };
                    continue;
                }
            };
            written = &written[1..];
        }
        false
    }
}

#[cfg(test)]
mod tests;
