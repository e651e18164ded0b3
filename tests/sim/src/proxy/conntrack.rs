//! Forgetting UDP flows to endpoints that are gone, as kube-proxy does: a UDP client that keeps
//! sending (a WireGuard peer) would otherwise stay DNATed to a dead pod for as long as it sends.
//!
//! Flows are read from `/proc/net/nf_conntrack` and deleted over ctnetlink (no `conntrack` tool).

use std::collections::BTreeSet;
use std::net::IpAddr;
#[cfg(test)]
use std::net::Ipv4Addr;

/// The original direction of a UDP flow (both addresses of one family).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
}

/// UDP flows DNATed to a pod address (the reply source, in one of `pods`) that is no longer a
/// UDP endpoint (pure); IPv4 and IPv6 flows alike.
pub fn stale_udp_flows(
    proc_text: &str,
    pods: &[ipnet::IpNet],
    live: &BTreeSet<IpAddr>,
) -> Vec<Flow> {
    let mut out = Vec::new();
    for line in proc_text.lines() {
        let mut words = line.split_whitespace();
        if words.nth(2) != Some("udp") {
            continue;
        }
        let kv: Vec<(&str, &str)> = line
            .split_whitespace()
            .filter_map(|w| w.split_once('='))
            .collect();
        let get = |key: &str, nth: usize| {
            kv.iter()
                .filter(|(k, _)| *k == key)
                .nth(nth)
                .map(|(_, v)| *v)
        };
        let (Some(src), Some(dst), Some(sport), Some(dport), Some(reply_src)) = (
            get("src", 0),
            get("dst", 0),
            get("sport", 0),
            get("dport", 0),
            get("src", 1),
        ) else {
            continue;
        };
        let (Ok(src), Ok(dst), Ok(sport), Ok(dport), Ok(reply_src)) = (
            src.parse(),
            dst.parse(),
            sport.parse(),
            dport.parse(),
            reply_src.parse::<IpAddr>(),
        ) else {
            continue;
        };
        let dnated = reply_src != dst;
        let to_pod = pods.iter().any(|p| p.contains(&reply_src));
        if dnated && to_pod && !live.contains(&reply_src) {
            out.push(Flow {
                src,
                dst,
                sport,
                dport,
            });
        }
    }
    out
}

fn attr(buf: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(buf.len().next_multiple_of(4), 0);
}

const NLA_F_NESTED: u16 = 0x8000;

/// An IPCTNL_MSG_CT_DELETE request for `f` (linux/netfilter/nfnetlink_conntrack.h).
pub fn delete_message(f: &Flow, seq: u32) -> Vec<u8> {
    let mut ip = Vec::new();
    let family = match (f.src, f.dst) {
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            attr(&mut ip, 3, &src.octets()); // CTA_IP_V6_SRC
            attr(&mut ip, 4, &dst.octets()); // CTA_IP_V6_DST
            libc::AF_INET6
        }
        (src, dst) => {
            let v4 = |a: IpAddr| match a {
                IpAddr::V4(a) => a.octets(),
                IpAddr::V6(_) => [0; 4],
            };
            attr(&mut ip, 1, &v4(src)); // CTA_IP_V4_SRC
            attr(&mut ip, 2, &v4(dst)); // CTA_IP_V4_DST
            libc::AF_INET
        }
    };
    let mut proto = Vec::new();
    attr(&mut proto, 1, &[libc::IPPROTO_UDP as u8]); // CTA_PROTO_NUM
    attr(&mut proto, 2, &f.sport.to_be_bytes()); // CTA_PROTO_SRC_PORT
    attr(&mut proto, 3, &f.dport.to_be_bytes()); // CTA_PROTO_DST_PORT
    let mut tuple = Vec::new();
    attr(&mut tuple, 1 | NLA_F_NESTED, &ip); // CTA_TUPLE_IP
    attr(&mut tuple, 2 | NLA_F_NESTED, &proto); // CTA_TUPLE_PROTO
    let mut body = vec![family as u8, 0, 0, 0]; // nfgenmsg: family, NFNETLINK_V0, res_id
    attr(&mut body, 1 | NLA_F_NESTED, &tuple); // CTA_TUPLE_ORIG
    let mut msg = Vec::with_capacity(16 + body.len());
    msg.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
    msg.extend_from_slice(&((1u16 << 8) | 2).to_ne_bytes()); // NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_DELETE
    msg.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16).to_ne_bytes());
    msg.extend_from_slice(&seq.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(&body);
    msg
}

/// Deletes the flows from the calling thread's network namespace; returns how many went.
pub fn delete(flows: &[Flow]) -> std::io::Result<usize> {
    if flows.is_empty() {
        return Ok(0);
    }
    // SAFETY: plain socket syscalls on a descriptor this function owns and closes.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_NETFILTER,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    let mut deleted = 0;
    for (i, f) in flows.iter().enumerate() {
        let msg = delete_message(f, i as u32 + 1);
        // SAFETY: `msg` is a valid buffer of its length; the kernel is the default destination.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        let sent = unsafe {
            libc::sendto(
                raw,
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if sent < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut ack = [0u8; 256];
        // SAFETY: `ack` is a writable buffer of its length.
        let n = unsafe { libc::recv(raw, ack.as_mut_ptr().cast(), ack.len(), 0) };
        // nlmsgerr after the 16-byte header: error 0 is success (ENOENT: already gone).
        if n >= 20 && i32::from_ne_bytes([ack[16], ack[17], ack[18], ack[19]]) == 0 {
            deleted += 1;
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROC: &str = "\
ipv4     2 udp      17 29 src=192.0.2.10 dst=192.0.2.1 sport=40000 dport=30007 src=10.244.0.3 dst=192.0.2.10 sport=7007 dport=40000 mark=0 zone=0 use=2
ipv4     2 udp      17 20 src=10.244.0.5 dst=10.96.0.10 sport=5353 dport=53 src=10.244.0.7 dst=10.244.0.5 sport=53 dport=5353 mark=0 zone=0 use=2
ipv4     2 udp      17 20 src=10.244.0.5 dst=192.0.2.53 sport=5353 dport=53 src=192.0.2.53 dst=192.0.2.1 sport=53 dport=5353 mark=0 zone=0 use=2
ipv4     2 tcp      6 431999 ESTABLISHED src=192.0.2.10 dst=192.0.2.1 sport=50000 dport=30080 src=10.244.0.4 dst=192.0.2.10 sport=8080 dport=50000 [ASSURED] mark=0 zone=0 use=2
ipv6     10 udp      17 29 src=fd00:00c0:0002:0000:0000:0000:0000:0010 dst=fd00:00c0:0002:0000:0000:0000:0000:0001 sport=40001 dport=31820 src=fd00:0010:0244:0000:0000:0000:0000:0009 dst=fd00:00c0:0002:0000:0000:0000:0000:0010 sport=51820 dport=40001 mark=0 zone=0 use=2
";

    #[test]
    fn only_udp_flows_dnated_to_dead_endpoints_are_stale() {
        let live: BTreeSet<IpAddr> = [Ipv4Addr::new(10, 244, 0, 7).into()].into();
        let pods = ["10.244.0.0/16".parse().unwrap()];
        let stale = stale_udp_flows(PROC, &pods, &live);
        assert_eq!(
            stale,
            [Flow {
                src: Ipv4Addr::new(192, 0, 2, 10).into(),
                dst: Ipv4Addr::new(192, 0, 2, 1).into(),
                sport: 40000,
                dport: 30007
            }]
        );
        // IPv6 (an IPv6-only cluster's gateway NodePort): the same, in the IPv6 pod CIDR.
        let pods6 = ["fd00:10:244::/56".parse().unwrap()];
        let stale6 = stale_udp_flows(PROC, &pods6, &live);
        assert_eq!(stale6.len(), 1, "{stale6:?}");
        assert_eq!(stale6[0].dst.to_string(), "fd00:c0:2::1");
        let gw: IpAddr = "fd00:10:244::9".parse().unwrap();
        assert!(stale_udp_flows(PROC, &pods6, &[gw].into()).is_empty());
    }

    #[test]
    fn delete_message_layout() {
        let f = Flow {
            src: Ipv4Addr::new(1, 2, 3, 4).into(),
            dst: Ipv4Addr::new(5, 6, 7, 8).into(),
            sport: 1,
            dport: 2,
        };
        let m = delete_message(&f, 7);
        assert_eq!(
            u32::from_ne_bytes(m[0..4].try_into().unwrap()) as usize,
            m.len()
        );
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), 0x102);
        assert_eq!(m[16], libc::AF_INET as u8);
        assert_eq!(m.len() % 4, 0);
        assert!(m.windows(4).any(|w| w == [1, 2, 3, 4]) && m.windows(4).any(|w| w == [5, 6, 7, 8]));
        let f6 = Flow {
            src: "fd00::10".parse().unwrap(),
            dst: "fd00::1".parse().unwrap(),
            sport: 1,
            dport: 2,
        };
        let m6 = delete_message(&f6, 8);
        assert_eq!(m6[16], libc::AF_INET6 as u8);
        assert_eq!(m6.len() % 4, 0);
        let dst6 = "fd00::1".parse::<std::net::Ipv6Addr>().unwrap().octets();
        assert!(m6.windows(16).any(|w| w == dst6));
    }
}
