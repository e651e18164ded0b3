use super::*;
use kwg_contract::keys::PrivateKey;
use proptest::prelude::*;
use std::collections::HashSet;
use std::time::Duration;

mod rules;

pub(super) const LEASE: &str = "2030-01-01T00:00:00Z";

pub(super) fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000) // 2027
}

pub(super) fn data(name: &str, key: &PublicKey, lease: &str) -> BTreeMap<String, Vec<u8>> {
    [
        ("name", name.to_owned()),
        ("publicKey", key.to_string()),
        // One owner per peer: the per-owner limit has its own tests.
        ("owner", format!("owner-of-{name}")),
        ("hostname", name.to_owned()),
        ("namespaces", "".into()),
        ("leaseExpires", lease.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.into_bytes()))
    .collect()
}

pub(super) fn secret(name: &str, key: &PublicKey) -> PeerSecret {
    PeerSecret::parse(
        &format!("kwg-peer-{name}"),
        &data(name, key, LEASE),
        &BTreeMap::new(),
    )
}

pub(super) fn key() -> PublicKey {
    PrivateKey::generate().public_key()
}

pub(super) fn core() -> Core {
    Core::new(Allocator::new("100.77.0.0/16".parse().unwrap()).unwrap())
}

pub(super) fn store(secrets: impl IntoIterator<Item = PeerSecret>) -> BTreeMap<String, PeerSecret> {
    secrets
        .into_iter()
        .map(|s| (s.secret_name.clone(), s))
        .collect()
}

/// Applies a plan like the I/O layer would: device ops to `running`, annotations to the Secrets.
pub(super) fn apply(
    plan: &Plan,
    running: &mut BTreeMap<PublicKey, Vec<IpNet>>,
    secrets: &mut BTreeMap<String, PeerSecret>,
) {
    for op in &plan.device {
        match op {
            DeviceOp::Upsert { key, ip, .. } => {
                running.insert(*key, vec![IpNet::V4(Ipv4Net::from(ip.addr()))]);
            }
            DeviceOp::Remove { key } => {
                running.remove(key);
            }
        }
    }
    for (name, ip) in &plan.annotate {
        let s = secrets.get_mut(name).unwrap();
        s.tunnel_ip = Some(*ip);
        s.error = None;
    }
    for m in plan.malformed.iter().filter(|m| m.write_annotation) {
        secrets.get_mut(&m.secret_name).unwrap().error = Some(m.reason.clone());
    }
}

#[test]
fn new_peer_is_added_and_annotated() {
    let mut c = core();
    let k = key();
    let mut secrets = store([secret("a", &k)]);
    let mut running = BTreeMap::new();
    let plan = c.reconcile(secrets.values(), &running, now());
    let ip: TunnelIp = "100.77.0.2".parse().unwrap();
    assert_eq!(
        plan.device,
        [DeviceOp::Upsert {
            name: "a".parse().unwrap(),
            key: k,
            ip,
            new: true
        }]
    );
    assert_eq!(plan.annotate, [("kwg-peer-a".to_owned(), ip)]);
    // LEASE (2030) lies beyond --max-lease: the gateway holds it to 24 h from now.
    let capped = DateTime::<Utc>::from(now()) + chrono::Duration::hours(24);
    assert_eq!(plan.next_expiry, Some(capped));
    apply(&plan, &mut running, &mut secrets);
    let again = c.reconcile(secrets.values(), &running, now());
    assert!(
        again.device.is_empty() && again.annotate.is_empty(),
        "{again:?}"
    );
    assert_eq!(again.active.len(), 1);
}

#[test]
fn removed_secret_removes_peer_and_frees_ip() {
    // /29: gateway .1, peers .2-.6
    let mut c = Core::new(Allocator::new("10.9.0.0/29".parse().unwrap()).unwrap());
    let (ka, kb) = (key(), key());
    let mut secrets = store([secret("a", &ka), secret("b", &kb)]);
    let mut running = BTreeMap::new();
    apply(
        &c.reconcile(secrets.values(), &running, now()),
        &mut running,
        &mut secrets,
    );
    let a_ip = secrets["kwg-peer-a"].tunnel_ip.unwrap();
    secrets.remove("kwg-peer-a");
    let plan = c.reconcile(secrets.values(), &running, now());
    assert_eq!(plan.device, [DeviceOp::Remove { key: ka }]);
    apply(&plan, &mut running, &mut secrets);
    for n in ["c", "d", "e", "f"] {
        let s = secret(n, &key());
        secrets.insert(s.secret_name.clone(), s);
    }
    let plan = c.reconcile(secrets.values(), &running, now());
    assert!(plan.malformed.is_empty(), "{plan:?}");
    assert!(
        plan.annotate.iter().any(|(_, ip)| *ip == a_ip),
        "freed {a_ip} reused"
    );
    let one_more = secret("g", &key());
    secrets.insert(one_more.secret_name.clone(), one_more);
    apply(&plan, &mut running, &mut secrets);
    let plan = c.reconcile(secrets.values(), &running, now());
    assert!(plan.malformed[0].reason.contains("full"), "{plan:?}");
}

#[test]
fn key_change_replaces_device_peer() {
    let mut c = core();
    let (k1, k2) = (key(), key());
    let mut secrets = store([secret("a", &k1)]);
    let mut running = BTreeMap::new();
    apply(
        &c.reconcile(secrets.values(), &running, now()),
        &mut running,
        &mut secrets,
    );
    let ip = secrets["kwg-peer-a"].tunnel_ip;
    let mut s = secret("a", &k2);
    s.tunnel_ip = ip;
    secrets.insert(s.secret_name.clone(), s);
    let plan = c.reconcile(secrets.values(), &running, now());
    assert!(plan.device.contains(&DeviceOp::Remove { key: k1 }));
    assert!(plan.device.iter().any(
        |op| matches!(op, DeviceOp::Upsert { key, ip: i, .. } if *key == k2 && Some(*i) == ip)
    ));
    assert!(plan.annotate.is_empty(), "same name keeps its address");
}

#[test]
fn malformed_reported_once_and_valid_peer_undisturbed() {
    let mut c = core();
    let k = key();
    let mut bad_data = data("bad", &key(), LEASE);
    bad_data.insert("publicKey".into(), b"garbage".to_vec());
    let bad = PeerSecret::parse("kwg-peer-bad", &bad_data, &BTreeMap::new());
    let mut secrets = store([secret("good", &k), bad]);
    let mut running = BTreeMap::new();
    let plan = c.reconcile(secrets.values(), &running, now());
    assert_eq!(plan.malformed.len(), 1);
    assert!(plan.malformed[0].first_report && plan.malformed[0].write_annotation);
    assert!(plan.malformed[0].reason.contains("public key is invalid"));
    assert_eq!(plan.active.len(), 1);
    apply(&plan, &mut running, &mut secrets);
    let plan = c.reconcile(secrets.values(), &running, now());
    assert!(plan.malformed.is_empty(), "reported once: {plan:?}");
    assert!(plan.device.is_empty());
}

#[test]
fn duplicate_key_is_malformed() {
    let mut c = core();
    let k = key();
    let secrets = store([secret("a", &k), secret("b", &k)]);
    let plan = c.reconcile(secrets.values(), &BTreeMap::new(), now());
    assert_eq!(plan.active.len(), 1);
    assert_eq!(plan.active[0].spec.name.as_str(), "a");
    assert!(
        plan.malformed[0]
            .reason
            .contains("already used by peer `a`")
    );
}

#[test]
fn expired_lease_is_deleted_not_added() {
    let mut c = core();
    let past = PeerSecret::parse(
        "kwg-peer-old",
        &data("old", &key(), "2020-01-01T00:00:00Z"),
        &BTreeMap::new(),
    );
    let plan = c.reconcile(store([past]).values(), &BTreeMap::new(), now());
    assert_eq!(plan.expired, ["kwg-peer-old"]);
    assert!(plan.device.is_empty() && plan.active.is_empty());
}

#[test]
fn lease_passing_removes_running_peer() {
    let mut c = core();
    let k = key();
    let lease_end = "2027-01-15T09:00:00Z"; // an hour after now()
    let mut secrets = store([PeerSecret::parse(
        "kwg-peer-a",
        &data("a", &k, lease_end),
        &BTreeMap::new(),
    )]);
    let mut running = BTreeMap::new();
    let plan = c.reconcile(secrets.values(), &running, now());
    apply(&plan, &mut running, &mut secrets);
    let end: SystemTime = kwg_contract::parse_lease(lease_end).unwrap().into();
    assert_eq!(plan.next_expiry.map(SystemTime::from), Some(end));
    let plan = c.reconcile(secrets.values(), &running, end);
    assert_eq!(plan.expired, ["kwg-peer-a"]);
    assert_eq!(plan.device, [DeviceOp::Remove { key: k }]);
}

#[test]
fn a_lease_beyond_the_maximum_ends_max_after_it_was_first_seen() {
    let mut c = core().with_max_lease(Duration::from_secs(3600));
    let k = key();
    let far = |lease: &str| {
        store([PeerSecret::parse(
            "kwg-peer-a",
            &data("a", &k, lease),
            &BTreeMap::new(),
        )])
    };
    let mut secrets = far(LEASE);
    let mut running = BTreeMap::new();
    let plan = c.reconcile(secrets.values(), &running, now());
    apply(&plan, &mut running, &mut secrets);
    let hour = Duration::from_secs(3600);
    let cap = DateTime::<Utc>::from(now() + hour);
    assert_eq!(plan.next_expiry, Some(cap));
    // /peers shows when the gateway collects it, not the stated 2030.
    assert_eq!(plan.active[0].spec.lease_expires, cap);
    // Reconciling later does not move the end (it runs from when the value was first seen).
    let later = c.reconcile(secrets.values(), &running, now() + hour / 2);
    assert_eq!(later.next_expiry, Some(cap));
    let plan = c.reconcile(secrets.values(), &running, now() + hour);
    assert_eq!(plan.expired, ["kwg-peer-a"]);
    assert_eq!(plan.device, [DeviceOp::Remove { key: k }]);
    // A renewal (a new value, even a far one) starts anew; a lease within the cap is kept.
    let renewed = far("2031-01-01T00:00:00Z");
    let at = now() + hour / 2;
    let plan = c.reconcile(renewed.values(), &BTreeMap::new(), at);
    assert_eq!(plan.next_expiry, Some(DateTime::<Utc>::from(at + hour)));
    let near = DateTime::<Utc>::from(at + hour / 4);
    let soon = far(&kwg_contract::format_lease(near));
    let plan = c.reconcile(soon.values(), &BTreeMap::new(), at);
    assert_eq!(plan.next_expiry, Some(near));
}

#[test]
fn stray_device_peer_is_removed() {
    let mut c = core();
    let stray = key();
    let running = BTreeMap::from([(stray, vec!["100.77.0.9/32".parse().unwrap()])]);
    let plan = c.reconcile([], &running, now());
    assert_eq!(plan.device, [DeviceOp::Remove { key: stray }]);
}

#[test]
fn fifty_registrations_at_once_get_distinct_ips() {
    let mut c = core();
    let secrets = store((0..50).map(|i| secret(&format!("p{i}"), &key())));
    let plan = c.reconcile(secrets.values(), &BTreeMap::new(), now());
    let ips: HashSet<_> = plan.annotate.iter().map(|(_, ip)| *ip).collect();
    assert_eq!((plan.annotate.len(), ips.len()), (50, 50));
    assert!(!ips.contains(&c.gateway_ip()));
}

#[test]
fn restart_keeps_every_ip() {
    let mut c = core();
    let mut secrets = store((0..50).map(|i| secret(&format!("p{i}"), &key())));
    let mut running = BTreeMap::new();
    // Peers arrive in several batches and some leave, so addresses are not simply by name.
    for i in (0..50).step_by(7) {
        secrets.remove(&format!("kwg-peer-p{i}"));
    }
    apply(
        &c.reconcile(secrets.values(), &running, now()),
        &mut running,
        &mut secrets,
    );
    for i in 50..60 {
        let s = secret(&format!("p{i}"), &key());
        secrets.insert(s.secret_name.clone(), s);
    }
    apply(
        &c.reconcile(secrets.values(), &running, now()),
        &mut running,
        &mut secrets,
    );
    let before: BTreeMap<_, _> = secrets
        .iter()
        .map(|(n, s)| (n.clone(), s.tunnel_ip.unwrap()))
        .collect();
    // A new gateway process: empty allocator, empty device, and one more new peer.
    let mut restarted = core();
    let s = secret("late", &key());
    secrets.insert(s.secret_name.clone(), s);
    let plan = restarted.reconcile(secrets.values(), &BTreeMap::new(), now());
    let after: BTreeMap<_, _> = plan
        .active
        .iter()
        .map(|p| (format!("kwg-peer-{}", p.spec.name), p.ip))
        .collect();
    for (name, ip) in &before {
        assert_eq!(after.get(name), Some(ip), "{name} moved");
    }
    assert_eq!(plan.annotate.len(), 1, "only the new peer is annotated");
    assert!(!before.values().any(|ip| *ip == after["kwg-peer-late"]));
}

#[test]
fn forged_annotation_cannot_steal_an_address() {
    let mut c = core();
    let mut secrets = store([secret("a", &key())]);
    let mut running = BTreeMap::new();
    apply(
        &c.reconcile(secrets.values(), &running, now()),
        &mut running,
        &mut secrets,
    );
    let mut thief = secret("b", &key());
    thief.tunnel_ip = secrets["kwg-peer-a"].tunnel_ip;
    secrets.insert(thief.secret_name.clone(), thief);
    let plan = c.reconcile(secrets.values(), &running, now());
    let (name, ip) = &plan.annotate[0];
    assert_eq!(name, "kwg-peer-b");
    assert_ne!(Some(*ip), secrets["kwg-peer-a"].tunnel_ip);
}

proptest! {
    /// Whatever sequence of Secret changes arrives, active peers never share an address and
    /// the device ends up exactly with the active peers.
    #[test]
    fn reconcile_converges(ops in proptest::collection::vec((0usize..12, any::<bool>()), 1..60)) {
        let mut c = Core::new(Allocator::new("10.9.0.0/28".parse().unwrap()).unwrap());
        let keys: Vec<PublicKey> = (0..12).map(|_| key()).collect();
        let mut secrets = BTreeMap::new();
        let mut running = BTreeMap::new();
        for (i, add) in ops {
            if add {
                let s = secret(&format!("p{i}"), &keys[i]);
                secrets.entry(s.secret_name.clone()).or_insert(s);
            } else {
                secrets.remove(&format!("kwg-peer-p{i}"));
            }
            let plan = c.reconcile(secrets.values(), &running, now());
            apply(&plan, &mut running, &mut secrets);
            let ips: HashSet<_> = plan.active.iter().map(|p| p.ip).collect();
            prop_assert_eq!(ips.len(), plan.active.len(), "two active peers share an address");
            // Every Secret present is served (12 peers fit in the /28's 13 addresses), each
            // under its own key, at the address its Secret is annotated with.
            let served: BTreeMap<String, (PublicKey, TunnelIp)> = plan
                .active
                .iter()
                .map(|p| (format!("kwg-peer-{}", p.spec.name), (p.spec.public_key, p.ip)))
                .collect();
            let wanted: BTreeMap<String, (PublicKey, TunnelIp)> = secrets
                .iter()
                .map(|(n, s)| (n.clone(), (s.spec.as_ref().unwrap().public_key, s.tunnel_ip.unwrap())))
                .collect();
            prop_assert_eq!(&served, &wanted);
            // The device holds exactly the active peers, each allowed only its own address.
            let device: BTreeMap<PublicKey, Vec<IpNet>> = plan
                .active
                .iter()
                .map(|p| (p.spec.public_key, vec![IpNet::V4(Ipv4Net::from(p.ip.addr()))]))
                .collect();
            prop_assert_eq!(&running, &device);
        }
    }
}

#[test]
fn active_peers_carry_their_secrets_groups() {
    let k = key();
    let groups = BTreeMap::from([(
        kwg_contract::GROUPS_ANNOTATION.to_owned(),
        "kwg:users\nsystem:authenticated".to_owned(),
    )]);
    let with = PeerSecret::parse("kwg-peer-a", &data("a", &k, LEASE), &groups);
    let plan = core().reconcile(store([with]).values(), &BTreeMap::new(), now());
    assert_eq!(plan.active[0].groups, ["kwg:users", "system:authenticated"]);
    let plan = core().reconcile(store([secret("a", &k)]).values(), &BTreeMap::new(), now());
    assert!(plan.active[0].groups.is_empty());
}
