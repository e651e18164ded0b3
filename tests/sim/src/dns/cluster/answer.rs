//! The cluster DNS's pure lookup, after CoreDNS's kubernetes plugin
//! (<https://github.com/kubernetes/dns/blob/master/docs/specification.md>):
//! `(index, question) → reply`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::{
    Name, RData, Record, RecordType,
    rdata::{A, AAAA, CNAME, PTR, SRV},
};

use super::index::{Index, Port, ServiceEntry, ServiceKey, ServiceKind};
use crate::dns::{Reply, Resolution, ZoneApex};

/// TTL of every answer, in seconds (CoreDNS's default `ttl 5`).
pub const TTL: u32 = 5;

/// Answers one question from the index. Names in the cluster domain are answered
/// authoritatively; PTR queries for addresses the index knows are answered; every other
/// question is forwarded (CoreDNS's `fallthrough in-addr.arpa ip6.arpa` + `forward .`).
pub fn resolve(index: &Index, apex: &ZoneApex, name: &Name, qtype: RecordType) -> Resolution {
    let name = name.to_lowercase();
    if let Some(labels) = apex.labels_below(&name) {
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        return Resolution::Answer(in_zone(index, apex, &name, &labels, qtype));
    }
    if qtype == RecordType::PTR
        && let Some(target) = reverse_target(index, apex, &name)
    {
        let ptr = Record::from_rdata(name, TTL, RData::PTR(PTR(target)));
        return Resolution::Answer(Reply::records(vec![ptr], Vec::new()));
    }
    Resolution::Forward
}

fn in_zone(index: &Index, apex: &ZoneApex, name: &Name, labels: &[&str], q: RecordType) -> Reply {
    let soa = apex.soa(index.serial());
    let nodata = || Reply::nodata(soa.clone());
    let nxdomain = || Reply::nxdomain(soa.clone());
    match *labels {
        [] => apex.apex_reply(q, index.serial()),
        ["svc"] | ["pod"] => nodata(),
        [ns, "svc"] if index.namespace_exists(ns) => nodata(),
        [svc, ns, "svc"] => match index.service(ns, svc) {
            Some(entry) => service(index, apex, &key(ns, svc), entry, name, q, None),
            None => nxdomain(),
        },
        [port, proto, svc, ns, "svc"] if port.starts_with('_') && proto.starts_with('_') => {
            let wanted = (&port[1..], &proto[1..]);
            match index.service(ns, svc) {
                Some(entry) if has_port(index, &key(ns, svc), entry, wanted) => {
                    service(index, apex, &key(ns, svc), entry, name, q, Some(wanted))
                }
                _ => nxdomain(),
            }
        }
        [host, svc, ns, "svc"] => {
            let key = key(ns, svc);
            let endpoint = index
                .ready_endpoints(&key)
                .into_iter()
                .find(|(ep, _)| ep.label().as_deref() == Some(host));
            match (index.service(ns, svc), endpoint) {
                (Some(entry), Some((ep, _))) if entry.kind == ServiceKind::Headless => {
                    let answers = address_records(name, &ep.addresses, q);
                    Reply::or_nodata(answers, Vec::new(), soa)
                }
                _ => nxdomain(),
            }
        }
        // `pods insecure`: any dashed address in any namespace resolves to itself.
        [ip, _ns, "pod"] => match dashed_ip(ip) {
            Some(ip) => Reply::or_nodata(address_records(name, &[ip], q), Vec::new(), soa),
            None => nxdomain(),
        },
        _ => nxdomain(),
    }
}

fn key(ns: &str, svc: &str) -> ServiceKey {
    ServiceKey {
        namespace: ns.to_owned(),
        name: svc.to_owned(),
    }
}

/// Does the Service (or, headless, one of its endpoint slices) have this named port?
fn has_port(index: &Index, key: &ServiceKey, entry: &ServiceEntry, wanted: (&str, &str)) -> bool {
    let matches = |p: &Port| !p.name.is_empty() && (p.name.as_str(), p.protocol.as_str()) == wanted;
    entry.ports.iter().any(matches)
        || (entry.kind == ServiceKind::Headless
            && index
                .ready_endpoints(key)
                .iter()
                .any(|(_, ports)| ports.iter().any(matches)))
}

/// The records of `svc.ns.svc.<zone>` (or of `_port._proto.` under it when `port` is given).
fn service(
    index: &Index,
    apex: &ZoneApex,
    key: &ServiceKey,
    entry: &ServiceEntry,
    name: &Name,
    q: RecordType,
    port: Option<(&str, &str)>,
) -> Reply {
    let soa = apex.soa(index.serial());
    let Ok(svc_name) = apex.name(&[&key.name, &key.namespace, "svc"]) else {
        return Reply::nxdomain(soa);
    };
    let selected = |p: &Port| port.is_none_or(|(n, proto)| p.name == n && p.protocol == proto);
    match (&entry.kind, q) {
        (ServiceKind::ExternalName(target), _) => match Name::from_ascii(target) {
            Ok(mut target) => {
                target.set_fqdn(true);
                let cname = Record::from_rdata(name.clone(), TTL, RData::CNAME(CNAME(target)));
                Reply::records(vec![cname], Vec::new())
            }
            Err(_) => Reply::nodata(soa),
        },
        (ServiceKind::ClusterIp(ips), RecordType::SRV) => {
            let ports: Vec<u16> = entry
                .ports
                .iter()
                .filter(|p| selected(p))
                .map(|p| p.port)
                .collect();
            let answers = srv_records(name, ports.iter().map(|p| (*p, svc_name.clone())));
            let extra = if answers.is_empty() {
                Vec::new()
            } else {
                glue(&svc_name, ips)
            };
            Reply::or_nodata(answers, extra, soa)
        }
        (ServiceKind::ClusterIp(_), _) if port.is_some() => Reply::nodata(soa),
        (ServiceKind::ClusterIp(ips), _) => {
            Reply::or_nodata(address_records(name, ips, q), Vec::new(), soa)
        }
        (ServiceKind::Headless, RecordType::SRV) => {
            let mut targets = Vec::new();
            let mut extra = Vec::new();
            for (ep, ports) in index.ready_endpoints(key) {
                let Some(host) = ep
                    .label()
                    .and_then(|label| Name::from_ascii(label).ok())
                    .and_then(|label| label.append_domain(&svc_name).ok())
                else {
                    continue;
                };
                let mut any = false;
                for p in ports.iter().filter(|p| selected(p)) {
                    targets.push((p.port, host.clone()));
                    any = true;
                }
                if any {
                    extra.extend(glue(&host, &ep.addresses));
                }
            }
            Reply::or_nodata(srv_records(name, targets.into_iter()), extra, soa)
        }
        (ServiceKind::Headless, _) if port.is_some() => Reply::nodata(soa),
        (ServiceKind::Headless, _) => {
            let mut ips: Vec<IpAddr> = index
                .ready_endpoints(key)
                .iter()
                .flat_map(|(ep, _)| ep.addresses.iter().copied())
                .collect();
            ips.sort();
            ips.dedup();
            Reply::or_nodata(address_records(name, &ips, q), Vec::new(), soa)
        }
    }
}

/// SRV records with CoreDNS's weights: priority 0, weight `100 / count` (at least 1).
fn srv_records(name: &Name, targets: impl ExactSizeIterator<Item = (u16, Name)>) -> Vec<Record> {
    let weight = u16::try_from(100 / targets.len().max(1))
        .unwrap_or(1)
        .max(1);
    targets
        .map(|(port, target)| {
            Record::from_rdata(
                name.clone(),
                TTL,
                RData::SRV(SRV::new(0, weight, port, target)),
            )
        })
        .collect()
}

/// An SRV answer's additional records: A and AAAA of the target (an IPv6-only cluster's
/// targets have only AAAA).
fn glue(name: &Name, ips: &[IpAddr]) -> Vec<Record> {
    let mut out = address_records(name, ips, RecordType::A);
    out.extend(address_records(name, ips, RecordType::AAAA));
    out
}

/// A records for the IPv4 addresses (query type A) or AAAA for the IPv6 ones (AAAA).
fn address_records(name: &Name, ips: &[IpAddr], q: RecordType) -> Vec<Record> {
    ips.iter()
        .filter_map(|ip| match (ip, q) {
            (IpAddr::V4(v4), RecordType::A) => Some(RData::A(A(*v4))),
            (IpAddr::V6(v6), RecordType::AAAA) => Some(RData::AAAA(AAAA(*v6))),
            _ => None,
        })
        .map(|rdata| Record::from_rdata(name.clone(), TTL, rdata))
        .collect()
}

/// `10-244-0-5` → 10.244.0.5; `fd00--1` → fd00::1.
fn dashed_ip(label: &str) -> Option<IpAddr> {
    if let Ok(v4) = label.replace('-', ".").parse::<Ipv4Addr>() {
        return Some(IpAddr::V4(v4));
    }
    label
        .replace('-', ":")
        .parse::<Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

/// The PTR target of a reverse name (`1.0.96.10.in-addr.arpa.`) if the address is a
/// ClusterIP or a headless Service's endpoint.
fn reverse_target(index: &Index, apex: &ZoneApex, name: &Name) -> Option<Name> {
    let net = name.parse_arpa_name().ok()?;
    if net.prefix_len() != net.max_prefix_len() {
        return None;
    }
    let (key, host) = index.owner_of(net.addr())?;
    let svc = apex.name(&[&key.name, &key.namespace, "svc"]).ok()?;
    match host {
        None => Some(svc),
        Some(host) => Name::from_ascii(host).ok()?.append_domain(&svc).ok(),
    }
}
