//! What the policy's unit tests share: a small cluster and its peers.

use super::grants::{PeerReach, Subject};
use super::inventory::Inventory;
use super::sets::{NsId, Sets};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

pub fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

pub fn inv() -> Inventory {
    let mut by_namespace = BTreeMap::new();
    by_namespace.insert(
        "emojivoto".to_owned(),
        [ip("10.96.1.0"), ip("10.244.0.5")].into(),
    );
    by_namespace.insert(
        "default".to_owned(),
        [ip("10.96.2.0"), ip("10.244.0.6")].into(),
    );
    Inventory {
        by_namespace,
        dns: [ip("10.96.0.10")].into(),
        ..Inventory::default()
    }
}

pub fn peer(addr: &str, owner: &str, asked: &[&str]) -> PeerReach {
    PeerReach {
        ip: ip(addr),
        subject: Subject::new(owner, &[]),
        asked: asked.iter().map(|s| s.to_string()).collect(),
    }
}

/// `alice` may get Services only in emojivoto; `root` everywhere.
pub fn rbac(who: &Subject, ns: &str) -> bool {
    who.user == "root" || ns == "emojivoto"
}

pub fn names(sets: &Sets, p: &str) -> Vec<u32> {
    sets.granted(ip(p)).map(NsId::get).collect()
}
