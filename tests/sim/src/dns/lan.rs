//! The LAN's ordinary resolver: authoritative for one zone of A records, REFUSED for anything
//! else (there is no internet to recurse to).

use std::{collections::BTreeMap, net::Ipv4Addr};

use hickory_proto::rr::{Name, RData, Record, RecordType, rdata::A};
use tokio::net::{TcpListener, UdpSocket};

use super::{Error, Reply, Resolution, ZoneApex, server, zone_name};

/// TTL of the LAN zone's records, in seconds.
const TTL: u32 = 60;

pub struct LanDnsConfig {
    /// The zone, e.g. `corp.example`.
    pub zone: String,
    /// A records relative to the zone: `("intranet", 192.0.2.80)`; `""` or `"@"` is the apex.
    pub records: Vec<(String, Ipv4Addr)>,
}

/// An ordinary authoritative resolver for the LAN zone; REFUSED for other names. Runs until
/// the sockets fail.
pub async fn serve(udp: UdpSocket, tcp: TcpListener, cfg: LanDnsConfig) -> Result<(), Error> {
    server::run(LanZone::new(&cfg)?, None, udp, tcp).await
}

/// The zone's data and its pure lookup.
#[derive(Debug, Clone)]
pub struct LanZone {
    apex: ZoneApex,
    hosts: BTreeMap<Name, Vec<Ipv4Addr>>,
}

impl LanZone {
    pub fn new(cfg: &LanDnsConfig) -> Result<Self, Error> {
        let apex = ZoneApex::new(zone_name("LAN zone", &cfg.zone)?, TTL);
        let mut hosts: BTreeMap<Name, Vec<Ipv4Addr>> = BTreeMap::new();
        for (label, ip) in &cfg.records {
            let name = match label.as_str() {
                "" | "@" => apex.origin.clone(),
                relative => apex
                    .name(&relative.split('.').collect::<Vec<_>>())
                    .map_err(|e| Error::InvalidName {
                        what: "LAN record",
                        value: relative.to_owned(),
                        reason: e.to_string(),
                    })?
                    .to_lowercase(),
            };
            hosts.entry(name).or_default().push(*ip);
        }
        Ok(Self { apex, hosts })
    }

    pub fn lookup(&self, name: &Name, qtype: RecordType) -> Resolution {
        let name = name.to_lowercase();
        if !self.apex.origin.zone_of(&name) {
            return Resolution::Refused;
        }
        let soa = self.apex.soa(1);
        let Some(ips) = self.hosts.get(&name) else {
            return Resolution::Answer(if name == self.apex.origin {
                self.apex.apex_reply(qtype, 1)
            } else {
                Reply::nxdomain(soa)
            });
        };
        let answers = match qtype {
            RecordType::A => ips
                .iter()
                .map(|ip| Record::from_rdata(name.clone(), TTL, RData::A(A(*ip))))
                .collect(),
            _ if name == self.apex.origin => {
                return Resolution::Answer(self.apex.apex_reply(qtype, 1));
            }
            _ => Vec::new(),
        };
        Resolution::Answer(Reply::or_nodata(answers, Vec::new(), soa))
    }
}

impl server::Zone for LanZone {
    fn resolve(&self, name: &Name, qtype: RecordType) -> Resolution {
        self.lookup(name, qtype)
    }
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::ResponseCode;

    use super::*;

    fn zone() -> LanZone {
        LanZone::new(&LanDnsConfig {
            zone: "corp.example".into(),
            records: vec![
                ("intranet".into(), Ipv4Addr::new(192, 0, 2, 80)),
                ("@".into(), Ipv4Addr::new(192, 0, 2, 81)),
            ],
        })
        .unwrap()
    }

    fn reply(name: &str, qtype: RecordType) -> Reply {
        match zone().lookup(&Name::from_ascii(name).unwrap(), qtype) {
            Resolution::Answer(reply) => reply,
            other => panic!("{name} {qtype}: expected an answer, got {other:?}"),
        }
    }

    #[test]
    fn a_record_of_a_host() {
        let r = reply("Intranet.Corp.Example.", RecordType::A);
        assert_eq!(r.rcode, ResponseCode::NoError);
        let got: Vec<String> = r.answers.iter().map(ToString::to_string).collect();
        assert_eq!(got, ["intranet.corp.example. 60 IN A 192.0.2.80"]);
    }

    #[test]
    fn unknown_host_is_nxdomain_with_soa() {
        let r = reply("nope.corp.example.", RecordType::A);
        assert_eq!(r.rcode, ResponseCode::NXDomain);
        assert!(r.answers.is_empty());
        assert_eq!(r.authorities[0].record_type(), RecordType::SOA);
    }

    #[test]
    fn other_type_of_a_host_is_nodata_with_soa() {
        let r = reply("intranet.corp.example.", RecordType::AAAA);
        assert_eq!(r.rcode, ResponseCode::NoError);
        assert!(r.answers.is_empty());
        assert_eq!(r.authorities[0].record_type(), RecordType::SOA);
    }

    #[test]
    fn apex_has_soa_and_its_a_record() {
        assert_eq!(
            reply("corp.example.", RecordType::SOA).answers[0].record_type(),
            RecordType::SOA
        );
        assert_eq!(reply("corp.example.", RecordType::A).answers.len(), 1);
    }

    #[test]
    fn names_outside_the_zone_are_refused() {
        let name = Name::from_ascii("example.com.").unwrap();
        assert_eq!(zone().lookup(&name, RecordType::A), Resolution::Refused);
    }
}
