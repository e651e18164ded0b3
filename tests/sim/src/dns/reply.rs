//! What a zone answers to one query: plain data, built by the pure cores of both servers.

use hickory_proto::{
    op::ResponseCode,
    rr::{
        Name, RData, Record,
        rdata::{NS, SOA},
    },
};

/// The outcome of looking one question up in a zone.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolution {
    /// The zone is authoritative for the name: send this reply.
    Answer(Reply),
    /// Not our name: relay the query to the upstream resolver.
    Forward,
    /// Not our name and nowhere to forward it (RFC 1035 REFUSED).
    Refused,
}

/// An authoritative reply: response code and the records of each section.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub rcode: ResponseCode,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub additionals: Vec<Record>,
}

impl Reply {
    /// NOERROR with these answers (and additional records, e.g. the A records of SRV targets).
    /// An empty answer section means NODATA, which needs the SOA: use [`Reply::nodata`].
    pub fn records(answers: Vec<Record>, additionals: Vec<Record>) -> Self {
        Self {
            rcode: ResponseCode::NoError,
            answers,
            authorities: Vec::new(),
            additionals,
        }
    }

    /// The name exists but has no record of the asked type (RFC 2308 NODATA): SOA in authority.
    pub fn nodata(soa: Record) -> Self {
        Self {
            rcode: ResponseCode::NoError,
            answers: Vec::new(),
            authorities: vec![soa],
            additionals: Vec::new(),
        }
    }

    /// The name does not exist (RFC 2308 NXDOMAIN): SOA in authority.
    pub fn nxdomain(soa: Record) -> Self {
        Self {
            rcode: ResponseCode::NXDomain,
            ..Self::nodata(soa)
        }
    }

    /// NOERROR with `answers`, or NODATA when there are none.
    pub fn or_nodata(answers: Vec<Record>, additionals: Vec<Record>, soa: Record) -> Self {
        if answers.is_empty() {
            Self::nodata(soa)
        } else {
            Self::records(answers, additionals)
        }
    }
}

/// The SOA and NS of an authoritative zone, shaped like CoreDNS's:
/// `<zone> SOA ns.dns.<zone> hostmaster.<zone> <serial> 7200 1800 86400 <ttl>`.
#[derive(Debug, Clone)]
pub struct ZoneApex {
    pub origin: Name,
    pub ttl: u32,
    ns: Name,
    hostmaster: Name,
}

impl ZoneApex {
    pub fn new(origin: Name, ttl: u32) -> Self {
        let under = |label: &str| {
            Name::from_ascii(label)
                .and_then(|l| l.append_domain(&origin))
                .unwrap_or_else(|_| origin.clone())
        };
        Self {
            ns: under("ns.dns"),
            hostmaster: under("hostmaster"),
            origin,
            ttl,
        }
    }

    /// The SOA record; `serial` changes whenever the zone's data does (RFC 1035 3.3.13).
    pub fn soa(&self, serial: u32) -> Record {
        // Refresh, retry, expire: CoreDNS's values; minimum (the negative-caching TTL, RFC 2308)
        // equals the record TTL so a new name becomes visible as fast as a changed one.
        let soa = SOA::new(
            self.ns.clone(),
            self.hostmaster.clone(),
            serial,
            7200,
            1800,
            86400,
            self.ttl,
        );
        Record::from_rdata(self.origin.clone(), self.ttl, RData::SOA(soa))
    }

    pub fn ns(&self) -> Record {
        Record::from_rdata(
            self.origin.clone(),
            self.ttl,
            RData::NS(NS(self.ns.clone())),
        )
    }

    /// The labels of `name` below this zone, leftmost first, lowercased; `None` if `name` is
    /// not in the zone. `svc.ns.svc.cluster.local` in `cluster.local` gives `[svc, ns, svc]`.
    pub fn labels_below(&self, name: &Name) -> Option<Vec<String>> {
        if !self.origin.zone_of(name) {
            return None;
        }
        let depth = usize::from(name.num_labels() - self.origin.num_labels());
        Some(
            name.iter()
                .take(depth)
                .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
                .collect(),
        )
    }

    /// The answer for the apex itself: SOA, NS, NODATA for anything else.
    pub fn apex_reply(&self, qtype: hickory_proto::rr::RecordType, serial: u32) -> Reply {
        use hickory_proto::rr::RecordType;
        match qtype {
            RecordType::SOA => Reply::records(vec![self.soa(serial)], Vec::new()),
            RecordType::NS => Reply::records(vec![self.ns()], Vec::new()),
            _ => Reply::nodata(self.soa(serial)),
        }
    }

    /// `label.label…<zone>.` as a name (labels leftmost first).
    pub fn name(&self, labels: &[&str]) -> Result<Name, hickory_proto::ProtoError> {
        Name::from_labels(labels.iter().map(|l| l.as_bytes()))?.append_domain(&self.origin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_below_the_zone_are_lowercased_and_leftmost_first() {
        let apex = ZoneApex::new(Name::from_ascii("cluster.local.").unwrap(), 5);
        let name = Name::from_ascii("Web-App.EmojiVoto.svc.Cluster.Local.").unwrap();
        assert_eq!(
            apex.labels_below(&name),
            Some(vec!["web-app".into(), "emojivoto".into(), "svc".into()])
        );
        assert_eq!(
            apex.labels_below(&Name::from_ascii("cluster.local.").unwrap()),
            Some(vec![])
        );
        assert_eq!(
            apex.labels_below(&Name::from_ascii("example.com.").unwrap()),
            None
        );
        assert_eq!(
            apex.labels_below(&Name::from_ascii("local.").unwrap()),
            None
        );
    }

    #[test]
    fn soa_names_the_zone_like_coredns() {
        let apex = ZoneApex::new(Name::from_ascii("cluster.local.").unwrap(), 5);
        let soa = apex.soa(7);
        assert_eq!(
            soa.to_string(),
            "cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 7 7200 1800 86400 5"
        );
    }
}
