//! Virtual subnets in DNS: an A record the cluster DNS answers with an address of a mapped
//! range (`kwg_session::mapping`) is rewritten to where this machine sees it, so a name leads
//! to the mapped address that the laptop routes and its data plane translates. Answers and the
//! additional section (a headless Service's SRV targets) both; nothing else changes.

use hickory_proto::op::Message;
use hickory_proto::rr::RData;
use hickory_proto::rr::rdata::A;
use kwg_session::mapping::Mapping;

/// `reply` (raw DNS) with its A records moved into the mapped ranges; as it came when nothing
/// is mapped or nothing in it needs to change.
pub fn rewrite(reply: Vec<u8>, maps: &[Mapping]) -> Vec<u8> {
    if maps.is_empty() {
        return reply;
    }
    let Ok(mut msg) = Message::from_vec(&reply) else {
        return reply;
    };
    let mut changed = false;
    for r in msg.answers.iter_mut().chain(msg.additionals.iter_mut()) {
        if let RData::A(A(ip)) = &mut r.data
            && let Some(to) = maps.iter().find_map(|m| m.to_mapped(*ip))
        {
            *ip = to;
            changed = true;
        }
    }
    match changed {
        true => msg.to_vec().unwrap_or(reply),
        false => reply,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{MessageType, Query};
    use hickory_proto::rr::{Name, Record, RecordType};
    use kwg_contract::RouteSource;
    use std::net::Ipv4Addr;

    fn reply(ips: &[Ipv4Addr]) -> Vec<u8> {
        let name = Name::from_ascii("web-app.emojivoto.svc.cluster.local.").unwrap();
        let mut m = Message::query();
        m.metadata.message_type = MessageType::Response;
        m.queries.push(Query::query(name.clone(), RecordType::A));
        for ip in ips {
            m.answers
                .push(Record::from_rdata(name.clone(), 5, RData::A(A(*ip))));
        }
        m.to_vec().unwrap()
    }

    fn answers(raw: &[u8]) -> Vec<Ipv4Addr> {
        Message::from_vec(raw)
            .unwrap()
            .answers
            .iter()
            .filter_map(|r| match r.data {
                RData::A(A(ip)) => Some(ip),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_records_in_a_mapped_range_are_moved_the_rest_stays() {
        let maps = [Mapping {
            cluster: "10.96.0.0/12".parse().unwrap(),
            mapped: "10.224.0.0/12".parse().unwrap(),
            source: RouteSource::Service,
        }];
        let raw = reply(&[Ipv4Addr::new(10, 100, 2, 3), Ipv4Addr::new(192, 0, 2, 80)]);
        assert_eq!(
            answers(&rewrite(raw.clone(), &maps)),
            [Ipv4Addr::new(10, 228, 2, 3), Ipv4Addr::new(192, 0, 2, 80)]
        );
        // Nothing mapped, nothing to move, or no DNS at all: the bytes as they came.
        assert_eq!(rewrite(raw.clone(), &[]), raw);
        let lan = reply(&[Ipv4Addr::new(192, 0, 2, 80)]);
        assert_eq!(rewrite(lan.clone(), &maps), lan);
        assert_eq!(rewrite(vec![1, 2, 3], &maps), [1, 2, 3]);
    }
}
