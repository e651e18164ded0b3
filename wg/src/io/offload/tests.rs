use super::*;

/// RFC 1071 the slow way: 16-bit big-endian words, end-around carry.
pub(crate) fn naive(data: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for c in data.chunks(2) {
        s += u32::from(c[0]) << 8 | u32::from(*c.get(1).unwrap_or(&0));
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// Whether a packet's IPv4 header and TCP/UDP checksums verify (computed by `naive`).
pub(crate) fn checksums_ok(p: &[u8]) -> bool {
    let (v6, t) = if p[0] >> 4 == 6 {
        (true, 40)
    } else {
        (false, usize::from(p[0] & 15) * 4)
    };
    let proto = if v6 { p[6] } else { p[9] };
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(if v6 { &p[8..40] } else { &p[12..20] });
    pseudo.extend_from_slice(&[0, proto]);
    pseudo.extend_from_slice(&((p.len() - t) as u16).to_be_bytes());
    pseudo.extend_from_slice(&p[t..]);
    (v6 || naive(&p[..t]) == 0xffff) && naive(&pseudo) == 0xffff
}

pub(crate) struct Pkt {
    pub v6: bool,
    pub payload: usize,
    pub seq: u32,
    pub flags: u8,
    pub opts: Vec<u8>,
    pub udp: bool,
}

pub(crate) fn pkt(v6: bool, payload: usize) -> Pkt {
    Pkt {
        v6,
        payload,
        seq: 1000,
        flags: ACK,
        opts: vec![1, 1, 8, 10, 0, 0, 0, 7, 0, 0, 0, 9], // NOP NOP timestamps
        udp: false,
    }
}

impl Pkt {
    pub(crate) fn build(&self) -> Vec<u8> {
        let ip = if self.v6 { 40 } else { 20 };
        let th = if self.udp { 8 } else { 20 + self.opts.len() };
        let len = ip + th + self.payload;
        let mut p = vec![0u8; len];
        if self.v6 {
            p[0] = 0x60;
            p[1] = 0x01; // traffic class and flow label
            put16(&mut p, 4, (len - 40) as u16);
            p[6] = if self.udp { UDP } else { TCP };
            p[7] = 64;
            p[8..24].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
            p[24..40].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        } else {
            p[0] = 0x45;
            put16(&mut p, 2, len as u16);
            put16(&mut p, 4, 0x1234);
            p[6] = 0x40; // DF
            p[8] = 64;
            p[9] = if self.udp { UDP } else { TCP };
            p[12..20].copy_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
            ipv4_checksum(&mut p, 20);
        }
        put16(&mut p, ip, 40000);
        put16(&mut p, ip + 2, 5201);
        if self.udp {
            put16(&mut p, ip + 4, (len - ip) as u16);
        } else {
            p[ip + 4..ip + 8].copy_from_slice(&self.seq.to_be_bytes());
            p[ip + 8..ip + 12].copy_from_slice(&77u32.to_be_bytes());
            p[ip + 12] = ((th / 4) as u8) << 4;
            p[ip + 13] = self.flags;
            put16(&mut p, ip + 14, 512);
            p[ip + 20..ip + th].copy_from_slice(&self.opts);
        }
        for (i, b) in p[ip + th..].iter_mut().enumerate() {
            *b = (i * 7 + 3) as u8;
        }
        let at = ip + if self.udp { 6 } else { 16 };
        let c = !fold(sum(
            &p[ip..],
            pseudo(&p, self.v6, p[if self.v6 { 6 } else { 9 }], len - ip),
        ));
        put16(&mut p, at, c);
        p
    }

    /// The packet as the TUN hands a TSO/USO read over: vnet header, checksum field holding
    /// the pseudo-header sum.
    pub(crate) fn gso(&self, gso_size: u16) -> Vec<u8> {
        let p = self.build();
        let ip = if self.v6 { 40 } else { 20 };
        let th = if self.udp { 8 } else { 20 + self.opts.len() };
        let mut b = vec![0u8; VNET_HDR_LEN];
        VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: match (self.udp, self.v6) {
                (true, _) => GSO_UDP_L4,
                (false, false) => GSO_TCPV4,
                (false, true) => GSO_TCPV6,
            },
            hdr_len: (ip + th) as u16,
            gso_size,
            csum_start: ip as u16,
            csum_offset: if self.udp { 6 } else { 16 },
        }
        .encode(&mut b);
        b.extend_from_slice(&p);
        let at = VNET_HDR_LEN + ip + if self.udp { 6 } else { 16 };
        let ps = fold(pseudo(
            &p,
            self.v6,
            p[if self.v6 { 6 } else { 9 }],
            p.len() - ip,
        ));
        put16(&mut b, at, ps);
        b
    }
}

pub(crate) fn fix_ipv4_checksum(p: &mut [u8]) {
    ipv4_checksum(p, 20);
}

pub(crate) fn split_all(buf: &mut [u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let n = split(buf, |s| out.push(s.to_vec())).unwrap();
    assert_eq!(n, out.len());
    out
}

/// Coalesces packets as `TunBatch` does: into one buffer behind a vnet header, a new buffer
/// whenever a packet does not continue the flow.
fn coalesce(pkts: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut out: Vec<(Vec<u8>, Option<Flow>)> = Vec::new();
    for p in pkts {
        if let Some((buf, Some(flow))) = out.last_mut() {
            let (first, _) = buf[VNET_HDR_LEN..].split_at_mut(flow.hdr_len);
            if flow.append(first, p, p.len()) {
                buf.extend_from_slice(&p[flow.hdr_len..]);
                continue;
            }
        }
        let mut buf = vec![0; VNET_HDR_LEN];
        buf.extend_from_slice(p);
        out.push((buf, Flow::start(p)));
    }
    out.into_iter()
        .map(|(mut buf, flow)| {
            match flow {
                Some(f) => f.finish(&mut buf),
                None => VnetHdr::default().encode(&mut buf),
            }
            buf
        })
        .collect()
}

#[test]
fn checksum_matches_rfc1071_at_every_length_and_alignment() {
    let data: Vec<u8> = (0..300u32).map(|i| (i * 31 + 7) as u8).collect();
    for start in 0..4 {
        for end in start..data.len() {
            let d = &data[start..end];
            assert_eq!(fold(sum(d, 0)), naive(d), "{start}..{end}");
        }
    }
    assert_eq!(fold(sum(&[0xff, 0xff], 0xffff)), 0xffff);
}

#[test]
fn tso_split_makes_valid_segments_in_place() {
    for v6 in [false, true] {
        let mut p = pkt(v6, 1000 * 3 + 123);
        p.flags = ACK | PSH | FIN | CWR;
        let mut read = p.gso(1000);
        let original = p.build();
        let segs = split_all(&mut read);
        assert_eq!(segs.len(), 4);
        let h = if v6 { 40 } else { 20 } + 32;
        let mut payload = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            assert!(checksums_ok(s), "v6={v6} segment {i}");
            let t = h - 32;
            assert_eq!(be32(s, t + 4), 1000 + 1000 * i as u32, "seq");
            let last = i == 3;
            assert_eq!(
                s[t + 13] & (PSH | FIN) != 0,
                last,
                "PSH/FIN on the last only"
            );
            assert_eq!(s[t + 13] & CWR != 0, i == 0, "CWR on the first only");
            assert_eq!(s.len(), h + if last { 123 } else { 1000 });
            if !v6 {
                assert_eq!(be16(s, 4), 0x1234 + i as u16, "ids increment");
                assert_eq!(usize::from(be16(s, 2)), s.len());
            } else {
                assert_eq!(usize::from(be16(s, 4)), s.len() - 40);
            }
            assert_eq!(s[t + 20..h], original[t + 20..h], "options kept");
            payload.extend_from_slice(&s[h..]);
        }
        assert_eq!(payload, original[h..]);
    }
}

#[test]
fn uso_split_and_needs_csum_single_packets_get_checksums() {
    for v6 in [false, true] {
        let mut p = pkt(v6, 2500);
        p.udp = true;
        let segs = split_all(&mut p.gso(1200));
        assert_eq!(segs.iter().map(Vec::len).collect::<Vec<_>>(), {
            let h = if v6 { 48 } else { 28 };
            vec![h + 1200, h + 1200, h + 100]
        });
        assert!(segs.iter().all(|s| checksums_ok(s)));
        // GSO_NONE with NEEDS_CSUM: one packet, checksum completed.
        let mut one = pkt(v6, 300).gso(0);
        one[1] = GSO_NONE;
        let segs = split_all(&mut one);
        assert_eq!(segs.len(), 1);
        assert!(checksums_ok(&segs[0]));
        // GSO_NONE without flags: passed as it is.
        let plain = pkt(v6, 300).build();
        let mut read = vec![0; VNET_HDR_LEN];
        read.extend_from_slice(&plain);
        assert_eq!(split_all(&mut read), vec![plain]);
    }
}

#[test]
fn split_refuses_what_it_cannot_cut() {
    assert_eq!(split(&mut [0; 5], |_| {}), Err(SplitError::Short(5)));
    let mut zero = pkt(false, 3000).gso(0);
    assert!(matches!(
        split(&mut zero, |_| {}),
        Err(SplitError::Header(_))
    ));
    let mut wrong = pkt(false, 3000).gso(1000);
    wrong[1] = GSO_TCPV6; // an IPv4 packet
    assert!(matches!(
        split(&mut wrong, |_| {}),
        Err(SplitError::Header(_))
    ));
    let mut short = pkt(false, 3000).gso(1000);
    assert_eq!(
        split(&mut short[..VNET_HDR_LEN + 30], |_| {}),
        Err(SplitError::Short(30))
    );
}

#[test]
fn split_then_coalesce_rebuilds_the_super_packet() {
    for v6 in [false, true] {
        let mut p = pkt(v6, 1400 * 10 + 500);
        p.flags = ACK | PSH;
        let mut read = p.gso(1400);
        let segs = split_all(&mut read.clone());
        let out = coalesce(&segs);
        assert_eq!(out.len(), 1, "one write");
        let hdr = VnetHdr::decode(&out[0]).unwrap();
        let h = if v6 { 40 } else { 20 } + 32;
        assert_eq!(
            hdr,
            VnetHdr::decode(&read)
                .map(|r| VnetHdr {
                    hdr_len: h as u16,
                    ..r
                })
                .unwrap()
        );
        // Byte for byte what the TUN gave (the IPv4 id aside: the first segment's).
        assert_eq!(out[0], read);
        // Splitting it again gives the same segments.
        assert_eq!(split_all(&mut out[0].clone()), split_all(&mut read));
    }
}

#[test]
fn a_lone_segment_is_written_unchanged_with_a_zero_header() {
    let p = pkt(false, 500).build();
    let out = coalesce(std::slice::from_ref(&p));
    assert_eq!(out[0][..VNET_HDR_LEN], [0; VNET_HDR_LEN]);
    assert_eq!(out[0][VNET_HDR_LEN..], p);
}

/// Two segments that coalesce, after `change` altered the second's built fields.
fn second_after(v6: bool, change: impl Fn(&mut Pkt), edit: impl Fn(&mut Vec<u8>)) -> usize {
    let a = pkt(v6, 1000);
    let mut b = pkt(v6, 1000);
    b.seq = 2000;
    change(&mut b);
    let mut bb = b.build();
    edit(&mut bb);
    if !v6 && bb[0] == 0x45 {
        ipv4_checksum(&mut bb, 20);
    }
    coalesce(&[a.build(), bb]).len()
}

#[test]
fn only_continuing_segments_coalesce() {
    for v6 in [false, true] {
        let t = if v6 { 40 } else { 20 };
        assert_eq!(
            second_after(v6, |_| {}, |_| {}),
            1,
            "the base case coalesces"
        );
        assert_eq!(second_after(v6, |b| b.seq = 2001, |_| {}), 2, "gap in seq");
        assert_eq!(second_after(v6, |b| b.payload = 1001, |_| {}), 2, "longer");
        assert_eq!(
            second_after(v6, |b| b.opts[7] = 8, |_| {}),
            2,
            "options differ"
        );
        assert_eq!(
            second_after(v6, |b| b.opts.truncate(8), |_| {}),
            2,
            "options len"
        );
        assert_eq!(second_after(v6, |b| b.udp = true, |_| {}), 2, "UDP");
        for f in [0x01, 0x02, 0x04, 0x20, 0x40, 0x80] {
            assert_eq!(
                second_after(v6, |b| b.flags = ACK | f, |_| {}),
                2,
                "flag {f:#x}"
            );
        }
        assert_eq!(second_after(v6, |b| b.flags = 0, |_| {}), 2, "no ACK");
        let edits: [(usize, &str); 5] = [
            (t, "source port"),
            (t + 3, "destination port"),
            (t + 11, "ack"),
            (t + 15, "window"),
            (if v6 { 39 } else { 19 }, "destination address"),
        ];
        for (at, what) in edits {
            assert_eq!(second_after(v6, |_| {}, |p| p[at] ^= 1), 2, "{what}");
        }
        let ip_edits: &[(usize, &str)] = if v6 {
            &[(1, "traffic class"), (3, "flow label"), (7, "hop limit")]
        } else {
            &[(1, "TOS"), (8, "TTL"), (6, "DF")]
        };
        for (at, what) in ip_edits {
            assert_eq!(second_after(v6, |_| {}, |p| p[*at] ^= 0x40), 2, "{what}");
        }
        let c = coalesce(&[pkt(!v6, 1000).build(), {
            let mut b = pkt(v6, 1000);
            b.seq = 2000;
            b.build()
        }]);
        assert_eq!(c.len(), 2, "IP version");
    }
    // IPv4 only: fragments, options, a bad header checksum.
    let frag = |p: &mut Vec<u8>| p[6] |= 0x20;
    assert_eq!(second_after(false, |_| {}, frag), 2, "more fragments");
    let mut b = pkt(false, 1000);
    b.seq = 2000;
    let mut bad = b.build();
    bad[10] ^= 1;
    assert_eq!(
        coalesce(&[pkt(false, 1000).build(), bad]).len(),
        2,
        "bad IPv4 header checksum"
    );
    let mut opt = pkt(false, 1000).build();
    opt[0] = 0x46;
    assert!(Flow::start(&opt).is_none(), "IPv4 options");
    assert!(Flow::start(&pkt(false, 0).build()).is_none(), "no payload");
}

#[test]
fn short_segments_and_psh_close_the_super_packet() {
    let seg = |seq: u32, payload: usize, flags: u8| {
        let mut p = pkt(true, payload);
        (p.seq, p.flags) = (seq, flags);
        p.build()
    };
    // A shorter segment is the last one.
    let c = coalesce(&[seg(0, 100, ACK), seg(100, 60, ACK), seg(160, 60, ACK)]);
    assert_eq!(c.len(), 2);
    // PSH is the last one, and the super-packet carries it.
    let c = coalesce(&[
        seg(0, 100, ACK),
        seg(100, 100, ACK | PSH),
        seg(200, 100, ACK),
    ]);
    assert_eq!(c.len(), 2);
    assert_eq!(c[0][VNET_HDR_LEN + 40 + 13], ACK | PSH);
    // A PSH first segment takes nothing more.
    assert_eq!(
        coalesce(&[seg(0, 100, ACK | PSH), seg(100, 100, ACK)]).len(),
        2
    );
}

#[test]
fn super_packets_stay_within_the_ip_length_field() {
    let h = 20 + 32;
    let gso = 1400;
    let n = (MAX_IP_LEN - h) / gso + 3;
    let segs: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let mut p = pkt(false, gso);
            p.seq = (i * gso) as u32;
            let mut b = p.build();
            put16(&mut b, 4, 0x1234 + i as u16); // as the sender's TSO numbers them
            ipv4_checksum(&mut b, 20);
            b
        })
        .collect();
    let out = coalesce(&segs);
    assert_eq!(out.len(), 2);
    let first = out[0].len() - VNET_HDR_LEN;
    assert_eq!(first, h + (MAX_IP_LEN - h) / gso * gso);
    assert!(first <= MAX_IP_LEN);
    let rebuilt: Vec<Vec<u8>> = out
        .into_iter()
        .flat_map(|mut b| split_all(&mut b))
        .collect();
    assert_eq!(
        rebuilt, segs,
        "each super-packet splits back into its segments"
    );
}

#[test]
fn without_df_only_consecutive_ipv4_ids_coalesce() {
    let seg = |seq: u32, id: u16, df: bool| {
        let mut b = pkt(false, 1000);
        b.seq = seq;
        let mut p = b.build();
        p[6] = if df { 0x40 } else { 0 };
        put16(&mut p, 4, id);
        ipv4_checksum(&mut p, 20);
        p
    };
    let run = |ids: [u16; 3], df: bool| {
        coalesce(&[
            seg(1000, ids[0], df),
            seg(2000, ids[1], df),
            seg(3000, ids[2], df),
        ])
        .len()
    };
    assert_eq!(run([7, 8, 9], false), 1, "consecutive");
    assert_eq!(run([0xffff, 0, 1], false), 1, "consecutive across the wrap");
    assert_eq!(run([7, 7, 7], false), 3, "repeated ids");
    assert_eq!(run([7, 8, 10], false), 2, "a gap");
    assert_eq!(run([7, 7, 7], true), 1, "with DF the ids do not matter");
}
