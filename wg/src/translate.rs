//! Virtual subnets: a 1:1 translation of IPv4 prefixes, as pure functions over packet bytes.
//!
//! A cluster whose Service or pod CIDR overlaps the laptop's networks (or another session's) is
//! reached through an equal-size range of its own, the *mapped* range: the laptop's
//! applications and routes see `mapped`, the tunnel and the cluster see `real`. A packet going
//! into the tunnel (laptop → cluster) has each address in a mapped range rewritten to the real
//! one ([`Translator::outbound`]); a packet coming out of it (cluster → laptop) each address in
//! a real range to the mapped one ([`Translator::inbound`]). For a Service or pod range that is
//! the destination going in and the source coming out; for a mapped tunnel CIDR (two gateways
//! with the same one) the laptop's own tunnel address too: its interface holds the mapped
//! address, the wire carries the one the gateway assigned. The host part of an address is
//! kept: with `10.96.0.0/12` mapped to `10.224.0.0/12`, `10.96.0.10` is seen as `10.224.0.10`.
//!
//! Checksums are updated incrementally (RFC 1624 equation 3, as Linux's `csum_replace4`): the
//! IPv4 header's, TCP's and UDP's (their pseudo-header holds the addresses; a UDP checksum of
//! zero, "none", stays zero), and for an ICMP error (destination unreachable, time exceeded,
//! parameter problem, source quench, redirect) the embedded packet's address, its header
//! checksum and its UDP or TCP checksum when present, with the ICMP checksum absorbing every
//! changed word. A packet whose transport checksum was left to the device (virtio-net
//! `NEEDS_CSUM`, `l4_partial`) holds the pseudo-header's sum, not its complement, and is updated
//! in that sense; what the device will sum itself (the ICMP message) is left alone.
//!
//! Only the first fragment of a datagram carries the transport header; later ones get their
//! IPv4 header translated only. IPv6 passes untouched (mappings are IPv4).
//!
//! No crate is used for the checksum arithmetic: `internet-checksum` has an `update` but is
//! BSD-licensed and unmaintained since 2019; the rest of the crate's checksums live in
//! [`crate::io::offload`].

use ipnet::Ipv4Net;

/// One mapping: the cluster's `real` range is seen on the laptop as `mapped` (same size).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PrefixMap {
    pub real: Ipv4Net,
    pub mapped: Ipv4Net,
}

/// Mappings that cannot be translated 1:1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    #[error(
        "cannot map {real} onto {mapped}: a mapping needs two ranges of the same size (give the mapped range the prefix length /{len})",
        len = real.prefix_len()
    )]
    Size { real: Ipv4Net, mapped: Ipv4Net },
    #[error(
        "the mappings of {a} and {b} overlap on the {side} side: give each cluster range its own mapped range"
    )]
    Overlap {
        a: Ipv4Net,
        b: Ipv4Net,
        side: &'static str,
    },
}

/// A mapping as masks and bases, ready for the per-packet lookup.
#[derive(Debug, Clone, Copy)]
struct Entry {
    mask: u32,
    real: u32,
    mapped: u32,
}

/// The set of mappings of one session. Empty: nothing is translated.
#[derive(Debug, Clone, Default)]
pub struct Translator {
    maps: Vec<PrefixMap>,
    entries: Vec<Entry>,
}

/// Which way a packet goes, and so which way its addresses change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    /// Laptop → cluster: every address (an ICMP error's embedded ones too) mapped → real.
    Out,
    /// Cluster → laptop: every address real → mapped.
    In,
}

// RFC 791 / RFC 9293 / RFC 768 / RFC 792 field offsets and numbers.
const SRC: usize = 12;
const DST: usize = 16;
const IP_CSUM: usize = 10;
const ICMP: u8 = 1;
const TCP: u8 = 6;
const UDP: u8 = 17;
const TCP_CSUM: usize = 16;
const UDP_CSUM: usize = 6;
const ICMP_CSUM: usize = 2;
/// The ICMP header before an error's embedded packet (type, code, checksum, 4 bytes unused).
const ICMP_ERR_HDR: usize = 8;

impl Translator {
    /// The translator of `maps`: each pair of the same size, no two real and no two mapped
    /// ranges overlapping.
    pub fn new(maps: &[PrefixMap]) -> Result<Translator, MapError> {
        for (i, m) in maps.iter().enumerate() {
            if m.real.prefix_len() != m.mapped.prefix_len() {
                return Err(MapError::Size {
                    real: m.real,
                    mapped: m.mapped,
                });
            }
            for o in &maps[..i] {
                let overlap = |a: Ipv4Net, b: Ipv4Net| a.contains(&b) || b.contains(&a);
                if overlap(m.real, o.real) {
                    let (a, b, side) = (o.real, m.real, "cluster");
                    return Err(MapError::Overlap { a, b, side });
                }
                if overlap(m.mapped, o.mapped) {
                    let (a, b, side) = (o.mapped, m.mapped, "laptop");
                    return Err(MapError::Overlap { a, b, side });
                }
            }
        }
        let entries = maps
            .iter()
            .map(|m| Entry {
                mask: u32::from(m.real.netmask()),
                real: u32::from(m.real.network()),
                mapped: u32::from(m.mapped.network()),
            })
            .collect();
        Ok(Translator {
            maps: maps
                .iter()
                .map(|m| PrefixMap {
                    real: m.real.trunc(),
                    mapped: m.mapped.trunc(),
                })
                .collect(),
            entries,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn maps(&self) -> &[PrefixMap] {
        &self.maps
    }

    /// The real address behind a mapped one.
    pub fn to_real(&self, a: u32) -> Option<u32> {
        self.entries
            .iter()
            .find(|e| a & e.mask == e.mapped)
            .map(|e| e.real | (a & !e.mask))
    }

    /// The mapped address of a real one.
    pub fn to_mapped(&self, a: u32) -> Option<u32> {
        self.entries
            .iter()
            .find(|e| a & e.mask == e.real)
            .map(|e| e.mapped | (a & !e.mask))
    }

    fn lookup(&self, dir: Dir, a: u32) -> Option<u32> {
        match dir {
            Dir::Out => self.to_real(a),
            Dir::In => self.to_mapped(a),
        }
    }

    /// A packet read from the TUN, before it is encrypted: its addresses (and an ICMP
    /// error's embedded ones) from a mapped range to the real one. `l4_partial`: the TCP or
    /// UDP checksum field holds the pseudo-header's sum for the device to complete (virtio-net
    /// `NEEDS_CSUM`). True when something changed.
    pub fn outbound(&self, pkt: &mut [u8], l4_partial: bool) -> bool {
        self.translate(pkt, Dir::Out, l4_partial)
    }

    /// A packet decrypted from the tunnel, before it is written to the TUN: its addresses (and
    /// an ICMP error's embedded ones) from a real range to the mapped one.
    pub fn inbound(&self, pkt: &mut [u8]) -> bool {
        self.translate(pkt, Dir::In, false)
    }

    fn translate(&self, pkt: &mut [u8], dir: Dir, partial: bool) -> bool {
        let Some(ihl) = ipv4_header(pkt) else {
            return false;
        };
        let mut changed = false;
        for at in [SRC, DST] {
            let old = be32(pkt, at);
            if let Some(new) = self.lookup(dir, old) {
                put32(pkt, at, new);
                let c = replace4(be16(pkt, IP_CSUM), old, new);
                put16(pkt, IP_CSUM, c);
                changed = true;
                if first_fragment(pkt) {
                    pseudo_changed(pkt, ihl, old, new, partial);
                }
            }
        }
        if pkt[9] == ICMP && first_fragment(pkt) {
            changed |= self.icmp_error(pkt, ihl, dir, partial);
        }
        changed
    }

    /// Translates an ICMP error's embedded packet (its addresses the same way as the outer
    /// ones: the embedded packet went the other way, so its source is the outer destination),
    /// fixing its checksums and the ICMP checksum.
    fn icmp_error(&self, pkt: &mut [u8], ihl: usize, dir: Dir, partial: bool) -> bool {
        let icmp = ihl;
        let Some(&kind) = pkt.get(icmp) else {
            return false;
        };
        // RFC 792: destination unreachable, source quench, redirect, time exceeded, parameter
        // problem.
        if !matches!(kind, 3 | 4 | 5 | 11 | 12) {
            return false;
        }
        let inner_at = icmp + ICMP_ERR_HDR;
        if pkt.len() < icmp + ICMP_ERR_HDR {
            return false;
        }
        let inner = &mut pkt[inner_at..];
        let Some(inner_ihl) = ipv4_header_loose(inner) else {
            return false;
        };
        let field = match inner[9] {
            TCP => Some(inner_ihl + TCP_CSUM),
            UDP => Some(inner_ihl + UDP_CSUM),
            _ => None,
        }
        .filter(|off| first_fragment(inner) && inner.len() >= off + 2);
        // Every 16-bit word changed inside the ICMP message, for its checksum: (old, new);
        // the two checksums as they were and are.
        let mut words: [(u16, u16); 6] = [(0, 0); 6];
        let ip_csum = be16(inner, IP_CSUM);
        let l4_csum = field.map(|off| be16(inner, off));
        let mut changed = false;
        for (i, at) in [SRC, DST].into_iter().enumerate() {
            let old = be32(inner, at);
            let Some(new) = self.lookup(dir, old) else {
                continue;
            };
            changed = true;
            put32(inner, at, new);
            words[2 * i] = ((old >> 16) as u16, (new >> 16) as u16);
            words[2 * i + 1] = (old as u16, new as u16);
            let c = replace4(be16(inner, IP_CSUM), old, new);
            put16(inner, IP_CSUM, c);
            if let Some(off) = field {
                let l_old = be16(inner, off);
                if !(inner[9] == UDP && l_old == 0) {
                    let mut l_new = replace4(l_old, old, new);
                    if inner[9] == UDP && l_new == 0 {
                        l_new = 0xffff;
                    }
                    put16(inner, off, l_new);
                }
            }
        }
        if !changed {
            return false;
        }
        words[4] = (ip_csum, be16(inner, IP_CSUM));
        if let (Some(off), Some(before)) = (field, l4_csum) {
            words[5] = (before, be16(inner, off));
        }
        // A checksum the device completes sums the message as it will be: nothing to adjust.
        if !partial && pkt.len() >= icmp + ICMP_CSUM + 2 {
            let mut c = be16(pkt, icmp + ICMP_CSUM);
            for (o, n) in words {
                c = replace2(c, o, n);
            }
            put16(pkt, icmp + ICMP_CSUM, c);
        }
        true
    }
}

/// Fixes a TCP or UDP checksum after an address of its pseudo-header changed.
fn pseudo_changed(pkt: &mut [u8], ihl: usize, old: u32, new: u32, partial: bool) {
    let (off, udp) = match pkt[9] {
        TCP => (ihl + TCP_CSUM, false),
        UDP => (ihl + UDP_CSUM, true),
        _ => return,
    };
    if pkt.len() < off + 2 {
        return;
    }
    let c = be16(pkt, off);
    let c = if partial {
        // The field holds the pseudo-header's sum S (not complemented): S' = S - old + new.
        !replace4(!c, old, new)
    } else if udp && c == 0 {
        return; // RFC 768: no checksum
    } else {
        let c = replace4(c, old, new);
        // RFC 768: a computed zero is sent as all ones.
        if udp && c == 0 { 0xffff } else { c }
    };
    put16(pkt, off, c);
}

/// The IPv4 header's length, when `pkt` is IPv4 with a whole header of at least 20 bytes.
fn ipv4_header(pkt: &[u8]) -> Option<usize> {
    let ihl = ipv4_header_loose(pkt)?;
    (usize::from(be16(pkt, 2)) >= ihl).then_some(ihl)
}

/// As [`ipv4_header`] without the total length check (an ICMP error's embedded packet is
/// usually cut short).
fn ipv4_header_loose(pkt: &[u8]) -> Option<usize> {
    let first = *pkt.first()?;
    let ihl = usize::from(first & 15) * 4;
    (first >> 4 == 4 && ihl >= 20 && pkt.len() >= ihl).then_some(ihl)
}

/// Whether the packet's fragment offset is zero (it carries the transport header).
fn first_fragment(pkt: &[u8]) -> bool {
    be16(pkt, 6) & 0x1fff == 0
}

/// RFC 1624 equation 3 for a 32-bit field: HC' = ~(~HC + ~m + m'), word by word.
fn replace4(hc: u16, old: u32, new: u32) -> u16 {
    let s = u32::from(!hc) + ((!old) >> 16) + ((!old) & 0xffff) + (new >> 16) + (new & 0xffff);
    !fold(s)
}

/// RFC 1624 equation 3 for a 16-bit field.
fn replace2(hc: u16, old: u16, new: u16) -> u16 {
    !fold(u32::from(!hc) + u32::from(!old) + u32::from(new))
}

fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s >> 16) + (s & 0xffff);
    }
    s as u16
}

fn be16(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

fn be32(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

fn put16(b: &mut [u8], i: usize, v: u16) {
    b[i..i + 2].copy_from_slice(&v.to_be_bytes());
}

fn put32(b: &mut [u8], i: usize, v: u32) {
    b[i..i + 4].copy_from_slice(&v.to_be_bytes());
}

#[cfg(test)]
mod tests;
