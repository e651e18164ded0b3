use super::*;
use proptest::prelude::*;
use std::net::Ipv4Addr;

/// RFC 1071, written plainly (independent of the incremental code under test).
fn csum(parts: &[&[u8]]) -> u16 {
    let mut s: u64 = 0;
    for p in parts {
        for c in p.chunks(2) {
            let w = if c.len() == 2 {
                [c[0], c[1]]
            } else {
                [c[0], 0]
            };
            s += u64::from(u16::from_be_bytes(w));
        }
    }
    while s > 0xffff {
        s = (s >> 16) + (s & 0xffff);
    }
    !(s as u16)
}

fn pseudo(pkt: &[u8], proto: u8, len: usize) -> Vec<u8> {
    let mut p = pkt[12..20].to_vec();
    p.extend_from_slice(&[0, proto]);
    p.extend_from_slice(&(len as u16).to_be_bytes());
    p
}

/// An IPv4 packet with valid checksums: `body` is the transport header and payload, with its
/// checksum field zero.
fn ipv4(src: u32, dst: u32, proto: u8, mut body: Vec<u8>, frag: u16) -> Vec<u8> {
    let mut p = vec![0x45, 0, 0, 0, 0x12, 0x34, 0, 0, 64, proto, 0, 0];
    p.extend_from_slice(&src.to_be_bytes());
    p.extend_from_slice(&dst.to_be_bytes());
    let total = 20 + body.len();
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[6..8].copy_from_slice(&frag.to_be_bytes());
    let c = csum(&[&p]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    if frag & 0x1fff == 0 {
        let ph = pseudo(&p, proto, body.len());
        match proto {
            TCP => {
                let c = csum(&[&ph, &body]);
                body[16..18].copy_from_slice(&c.to_be_bytes());
            }
            UDP => {
                let c = csum(&[&ph, &body]);
                let c = if c == 0 { 0xffff } else { c };
                body[6..8].copy_from_slice(&c.to_be_bytes());
            }
            ICMP => {
                let c = csum(&[&body]);
                body[2..4].copy_from_slice(&c.to_be_bytes());
            }
            _ => {}
        }
    }
    p.extend_from_slice(&body);
    p
}

fn tcp(payload: &[u8]) -> Vec<u8> {
    let mut b = vec![
        0x1f, 0x90, 0xc3, 0x50, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff,
    ];
    b.extend_from_slice(&[0, 0, 0, 0]);
    b.extend_from_slice(payload);
    b
}

fn udp(payload: &[u8]) -> Vec<u8> {
    let mut b = vec![0x00, 0x35, 0xc3, 0x50];
    b.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    b.extend_from_slice(&[0, 0]);
    b.extend_from_slice(payload);
    b
}

/// An ICMP error of `kind` embedding `inner`.
fn icmp_error(kind: u8, inner: &[u8]) -> Vec<u8> {
    let mut b = vec![kind, 3, 0, 0, 0, 0, 0, 0];
    b.extend_from_slice(inner);
    b
}

/// Every checksum of the packet verifies (an ICMP error's embedded header and UDP datagram
/// too, when whole).
fn verifies(p: &[u8]) -> bool {
    let ihl = usize::from(p[0] & 15) * 4;
    if csum(&[&p[..ihl]]) != 0 {
        return false;
    }
    if be16(p, 6) & 0x1fff != 0 {
        return true;
    }
    let body = &p[ihl..];
    match p[9] {
        TCP | UDP => {
            if p[9] == UDP && be16(body, 6) == 0 {
                return true;
            }
            csum(&[&pseudo(p, p[9], body.len()), body]) == 0
        }
        ICMP => {
            if csum(&[body]) != 0 {
                return false;
            }
            if matches!(body[0], 3 | 11) {
                let inner = &body[8..];
                let iihl = usize::from(inner[0] & 15) * 4;
                csum(&[&inner[..iihl]]) == 0 && (inner[9] != UDP || verifies_inner_udp(inner, iihl))
            } else {
                true
            }
        }
        _ => true,
    }
}

fn verifies_inner_udp(inner: &[u8], iihl: usize) -> bool {
    let body = &inner[iihl..];
    be16(body, 6) == 0 || csum(&[&pseudo(inner, UDP, body.len()), body]) == 0
}

fn addr(p: &[u8], at: usize) -> u32 {
    be32(p, at)
}

/// The same packet with source and destination swapped (its checksums stay valid): the
/// answer's addresses.
fn swapped(p: &[u8]) -> Vec<u8> {
    let mut q = p.to_vec();
    q[12..16].copy_from_slice(&p[16..20]);
    q[16..20].copy_from_slice(&p[12..16]);
    q
}

fn net(a: u32, len: u8) -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::from(a), len).unwrap().trunc()
}

/// A mapping of two disjoint ranges of one size, a host inside them and a laptop address
/// outside both.
fn setup() -> impl Strategy<Value = (PrefixMap, u32, u32)> {
    (
        8u8..=30,
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(|(len, r, m, host, laptop)| {
            let (real, mapped) = (net(r, len), net(m, len));
            let host = host & !u32::from(real.netmask());
            (PrefixMap { real, mapped }, host, laptop)
        })
        .prop_filter("disjoint ranges, laptop outside", |(m, _, laptop)| {
            let l = Ipv4Addr::from(*laptop);
            !m.real.contains(&m.mapped)
                && !m.mapped.contains(&m.real)
                && !m.real.contains(&l)
                && !m.mapped.contains(&l)
        })
}

fn body() -> impl Strategy<Value = (u8, Vec<u8>)> {
    (
        prop_oneof![Just(TCP), Just(UDP), Just(ICMP), Just(47u8)],
        proptest::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(proto, payload)| {
            let b = match proto {
                TCP => tcp(&payload),
                UDP => udp(&payload),
                // An echo request: no pseudo-header, nothing embedded.
                ICMP => [vec![8, 0, 0, 0, 0, 1, 0, 1], payload].concat(),
                _ => payload,
            };
            (proto, b)
        })
}

proptest! {
    #[test]
    fn translated_packets_verify_and_round_trip(
        (map, host, laptop) in setup(),
        (proto, body) in body(),
    ) {
        let t = Translator::new(&[map]).unwrap();
        let mapped = u32::from(map.mapped.network()) | host;
        let real = u32::from(map.real.network()) | host;
        let sent = ipv4(laptop, mapped, proto, body, 0);
        let mut p = sent.clone();
        prop_assert!(t.outbound(&mut p, false));
        prop_assert_eq!(addr(&p, DST), real);
        prop_assert_eq!(addr(&p, SRC), laptop);
        prop_assert!(verifies(&p), "outbound {:02x?}", p);
        // The answer comes from the real address and is seen from the mapped one: exactly the
        // packet sent, turned around.
        let mut answer = swapped(&p);
        prop_assert!(t.inbound(&mut answer));
        prop_assert!(verifies(&answer));
        prop_assert_eq!(answer, swapped(&sent));
    }

    #[test]
    fn icmp_errors_translate_the_embedded_packet(
        (map, host, laptop) in setup(),
        payload in proptest::collection::vec(any::<u8>(), 0..32),
        router in any::<u32>(),
        kind in prop_oneof![Just(3u8), Just(11u8)],
    ) {
        let t = Translator::new(&[map]).unwrap();
        let mapped = u32::from(map.mapped.network()) | host;
        let real = u32::from(map.real.network()) | host;
        // The cluster (a pod or a router on the way) tells the laptop its datagram to the
        // real address failed.
        let inner = ipv4(laptop, real, UDP, udp(&payload), 0);
        let mut p = ipv4(router, laptop, ICMP, icmp_error(kind, &inner), 0);
        t.inbound(&mut p);
        prop_assert!(verifies(&p), "inbound {:02x?}", p);
        prop_assert_eq!(addr(&p[28..], DST), mapped);
        prop_assert_eq!(addr(&p[28..], SRC), laptop);
        prop_assert_eq!(addr(&p, SRC), t.to_mapped(router).unwrap_or(router));
        // The laptop refuses a datagram from the mapped address: the error goes back with
        // the real one inside.
        let inner = ipv4(mapped, laptop, UDP, udp(&payload), 0);
        let mut q = ipv4(laptop, mapped, ICMP, icmp_error(3, &inner), 0);
        prop_assert!(t.outbound(&mut q, false));
        prop_assert!(verifies(&q), "outbound {:02x?}", q);
        prop_assert_eq!(addr(&q, DST), real);
        prop_assert_eq!(addr(&q[28..], SRC), real);
    }

    #[test]
    fn a_checksum_left_to_the_device_holds_the_new_pseudo_header_sum(
        (map, host, laptop) in setup(),
        is_tcp in any::<bool>(),
        len in 0usize..2000,
    ) {
        let t = Translator::new(&[map]).unwrap();
        let mapped = u32::from(map.mapped.network()) | host;
        let proto = if is_tcp { TCP } else { UDP };
        let body = if is_tcp { tcp(&vec![7; len]) } else { udp(&vec![7; len]) };
        let mut p = ipv4(laptop, mapped, proto, body, 0);
        // What the kernel hands over with NEEDS_CSUM: the pseudo-header's sum, folded.
        let partial = |p: &[u8]| !csum(&[&pseudo(p, proto, p.len() - 20)]);
        let off = 20 + if is_tcp { TCP_CSUM } else { UDP_CSUM };
        let s = partial(&p);
        p[off..off + 2].copy_from_slice(&s.to_be_bytes());
        prop_assert!(t.outbound(&mut p, true));
        prop_assert_eq!(be16(&p, off), partial(&p));
        prop_assert_eq!(csum(&[&p[..20]]), 0);
    }
}

#[test]
fn later_fragments_and_other_addresses_are_left_alone() {
    let real: Ipv4Net = "10.96.0.0/12".parse().unwrap();
    let mapped: Ipv4Net = "10.224.0.0/12".parse().unwrap();
    let t = Translator::new(&[PrefixMap { real, mapped }]).unwrap();
    let laptop = u32::from(Ipv4Addr::new(100, 77, 0, 2));
    let to = u32::from(Ipv4Addr::new(10, 224, 0, 10));
    // A later fragment: the bytes after the header are payload, not a UDP header.
    let frag = ipv4(laptop, to, UDP, vec![9; 24], 3);
    let mut p = frag.clone();
    assert!(t.outbound(&mut p, false));
    assert_eq!(Ipv4Addr::from(addr(&p, DST)), Ipv4Addr::new(10, 96, 0, 10));
    assert_eq!(p[20..], frag[20..]);
    assert!(verifies(&p));
    // Not in a mapped range, or IPv6: untouched.
    let other = ipv4(
        laptop,
        u32::from(Ipv4Addr::new(192, 0, 2, 80)),
        UDP,
        udp(b"x"),
        0,
    );
    let mut p = other.clone();
    assert!(!t.outbound(&mut p, false));
    assert_eq!(p, other);
    let mut v6 = vec![0x60; 60];
    assert!(!t.outbound(&mut v6, false));
    assert!(!t.inbound(&mut [0x45, 0, 0]));
    // A UDP datagram without a checksum keeps none.
    let mut p = ipv4(laptop, to, UDP, udp(b"abc"), 0);
    p[26..28].copy_from_slice(&[0, 0]);
    t.outbound(&mut p, false);
    assert_eq!(be16(&p, 26), 0);
}

#[test]
fn mappings_must_be_the_same_size_and_apart() {
    let n = |s: &str| s.parse::<Ipv4Net>().unwrap();
    let map = |r, m| PrefixMap {
        real: n(r),
        mapped: n(m),
    };
    let err = Translator::new(&[map("10.96.0.0/12", "10.224.0.0/16")]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot map 10.96.0.0/12 onto 10.224.0.0/16: a mapping needs two ranges of the same \
         size (give the mapped range the prefix length /12)"
    );
    let err = Translator::new(&[
        map("10.96.0.0/12", "10.224.0.0/12"),
        map("10.244.0.0/16", "10.230.0.0/16"),
    ])
    .unwrap_err();
    assert!(
        err.to_string().contains("overlap on the laptop side"),
        "{err}"
    );
    let t = Translator::new(&[
        map("10.96.0.0/12", "10.224.0.0/12"),
        map("10.244.0.0/16", "10.240.0.0/16"),
    ])
    .unwrap();
    let a = |s: &str| u32::from(s.parse::<Ipv4Addr>().unwrap());
    assert_eq!(t.to_mapped(a("10.244.0.7")), Some(a("10.240.0.7")));
    assert_eq!(t.to_real(a("10.224.0.10")), Some(a("10.96.0.10")));
    assert_eq!(t.to_real(a("10.96.0.10")), None);
}

proptest! {
    /// A mapped tunnel CIDR (issue 27: two gateways with the same one): the laptop's own
    /// address and the gateway's both lie in it; both addresses are translated, each way, and
    /// an ICMP error's embedded ones too.
    #[test]
    fn both_addresses_in_mapped_ranges_are_translated(
        (proto, body) in body(),
        payload in proptest::collection::vec(any::<u8>(), 0..32),
    ) {
        let n = |s: &str| s.parse::<Ipv4Net>().unwrap();
        let t = Translator::new(&[
            PrefixMap { real: n("10.96.0.0/12"), mapped: n("10.224.0.0/12") },
            PrefixMap { real: n("100.77.0.0/16"), mapped: n("10.241.0.0/16") },
        ])
        .unwrap();
        let a = |s: &str| u32::from(s.parse::<Ipv4Addr>().unwrap());
        // The laptop (seen as 10.241.0.2, the gateway assigned 100.77.0.2) to the gateway's
        // admin address and to a ClusterIP.
        for (to_mapped, to_real) in [("10.241.0.1", "100.77.0.1"), ("10.224.0.10", "10.96.0.10")] {
            let sent = ipv4(a("10.241.0.2"), a(to_mapped), proto, body.clone(), 0);
            let mut p = sent.clone();
            prop_assert!(t.outbound(&mut p, false));
            prop_assert_eq!(addr(&p, SRC), a("100.77.0.2"));
            prop_assert_eq!(addr(&p, DST), a(to_real));
            prop_assert!(verifies(&p), "outbound {:02x?}", p);
            let mut answer = swapped(&p);
            prop_assert!(t.inbound(&mut answer));
            prop_assert!(verifies(&answer));
            prop_assert_eq!(answer, swapped(&sent));
        }
        // The gateway says a datagram the laptop sent to a ClusterIP found no endpoint.
        let inner = ipv4(a("100.77.0.2"), a("10.96.0.10"), UDP, udp(&payload), 0);
        let mut p = ipv4(a("100.77.0.1"), a("100.77.0.2"), ICMP, icmp_error(3, &inner), 0);
        prop_assert!(t.inbound(&mut p));
        prop_assert!(verifies(&p), "inbound {:02x?}", p);
        prop_assert_eq!(addr(&p, SRC), a("10.241.0.1"));
        prop_assert_eq!(addr(&p, DST), a("10.241.0.2"));
        prop_assert_eq!(addr(&p[28..], SRC), a("10.241.0.2"));
        prop_assert_eq!(addr(&p[28..], DST), a("10.224.0.10"));
    }
}
