//! Who gets a public key and how many peers an owner gets: the rules that stop one kwg user
//! from taking over or crowding out another's peer.

use super::{LEASE, apply, core, data, key, now, secret, store};
use crate::core::*;
use std::collections::HashSet;

/// A Secret of `owner`, created `age` seconds after a fixed instant (larger = newer).
fn aged(name: &str, k: &PublicKey, owner: &str, age: i64) -> PeerSecret {
    let mut d = data(name, k, LEASE);
    d.insert("owner".into(), owner.as_bytes().to_vec());
    let mut s = PeerSecret::parse(&format!("kwg-peer-{name}"), &d, &BTreeMap::new());
    s.created = DateTime::from_timestamp(1_700_000_000 + age, 0);
    s.uid = format!("uid-{name}-{age}");
    s
}

fn active(plan: &Plan) -> Vec<&str> {
    let mut v: Vec<&str> = plan.active.iter().map(|p| p.spec.name.as_str()).collect();
    v.sort();
    v
}

fn rejected(plan: &Plan, problem: Problem) -> Vec<&str> {
    let mut v: Vec<&str> = plan
        .malformed
        .iter()
        .filter(|m| m.problem == problem)
        .map(|m| m.secret_name.as_str())
        .collect();
    v.sort();
    v
}

#[test]
fn the_older_secret_keeps_a_duplicated_key() {
    // The attacker's name sorts first, so name order would have given it the key.
    let k = key();
    let secrets = store([
        aged("zed", &k, "victim", 0),
        aged("aaa", &k, "attacker", 60),
    ]);
    let plan = core().reconcile(secrets.values(), &BTreeMap::new(), now());
    assert_eq!(active(&plan), ["zed"]);
    assert_eq!(rejected(&plan, Problem::DuplicateKey), ["kwg-peer-aaa"]);
    let m = &plan.malformed[0];
    assert!(
        m.reason.contains("already used by peer `zed`"),
        "{}",
        m.reason
    );
    assert!(m.first_report && m.write_annotation);
    assert_eq!(m.problem.event_reason(), "DuplicatePublicKey");
    assert!(
        plan.annotate.iter().all(|(n, _)| n == "kwg-peer-zed"),
        "{plan:?}"
    );
}

#[test]
fn a_key_never_moves_while_its_holder_lives() {
    let mut c = core();
    let (k, other) = (key(), key());
    // `old` is older but uses another key; `holder` gets k.
    let mut secrets = store([aged("old", &other, "a", 0), aged("holder", &k, "b", 60)]);
    let mut running = BTreeMap::new();
    let plan = c.reconcile(secrets.values(), &running, now());
    apply(&plan, &mut running, &mut secrets);
    let holder_ip = secrets["kwg-peer-holder"].tunnel_ip.unwrap();
    // `old` switches to the holder's key: older, but the key stays where it is.
    let mut switched = aged("old", &k, "a", 0);
    switched.tunnel_ip = secrets["kwg-peer-old"].tunnel_ip;
    secrets.insert(switched.secret_name.clone(), switched);
    let plan = c.reconcile(secrets.values(), &running, now());
    assert_eq!(active(&plan), ["holder"]);
    assert_eq!(rejected(&plan, Problem::DuplicateKey), ["kwg-peer-old"]);
    assert!(
        !plan
            .device
            .iter()
            .any(|op| matches!(op, DeviceOp::Upsert { key, .. } if *key == k)),
        "the key moved: {plan:?}"
    );
    assert_eq!(running[&k], [IpNet::V4(Ipv4Net::from(holder_ip.addr()))]);
    apply(&plan, &mut running, &mut secrets);
    // The holder goes: now the key may move.
    secrets.remove("kwg-peer-holder");
    let plan = c.reconcile(secrets.values(), &running, now());
    assert_eq!(active(&plan), ["old"]);
    assert!(plan.malformed.is_empty(), "{plan:?}");
}

#[test]
fn a_recreated_secret_is_a_new_holder() {
    let mut c = core();
    let k = key();
    let mut secrets = store([aged("a", &k, "a", 0)]);
    let mut running = BTreeMap::new();
    apply(
        &c.reconcile(secrets.values(), &running, now()),
        &mut running,
        &mut secrets,
    );
    // Deleted and created again with the same name (new uid, newer), next to an older
    // Secret with the same key that was waiting: the older one wins.
    secrets.insert("kwg-peer-a".into(), aged("a", &k, "a", 500));
    secrets.insert("kwg-peer-b".into(), aged("b", &k, "b", 100));
    let plan = c.reconcile(secrets.values(), &running, now());
    assert_eq!(active(&plan), ["b"]);
}

#[test]
fn an_owner_gets_at_most_the_limit() {
    let mut c = core().with_peers_per_owner(3);
    let mut secrets = store((0..5).map(|i| aged(&format!("p{i}"), &key(), "dev", i)));
    let s = aged("x", &key(), "someone-else", 9);
    secrets.insert(s.secret_name.clone(), s);
    let mut running = BTreeMap::new();
    let plan = c.reconcile(secrets.values(), &running, now());
    assert_eq!(active(&plan), ["p0", "p1", "p2", "x"]);
    assert_eq!(
        rejected(&plan, Problem::OwnerLimit),
        ["kwg-peer-p3", "kwg-peer-p4"]
    );
    let m = plan
        .malformed
        .iter()
        .find(|m| m.secret_name == "kwg-peer-p3")
        .unwrap();
    assert!(
        m.reason.contains("owner `dev` already has 3 peers"),
        "{}",
        m.reason
    );
    assert!(m.reason.contains("--max-peers-per-owner"), "{}", m.reason);
    assert_eq!(m.problem.event_reason(), "PeerLimitReached");
    apply(&plan, &mut running, &mut secrets);
    assert_eq!(secrets["kwg-peer-p3"].tunnel_ip, None, "no address for p3");

    // An older Secret of the owner that becomes valid later does not push out a served one.
    let mut bad = data("early", &key(), LEASE);
    bad.insert("owner".into(), b"dev".to_vec());
    bad.insert("publicKey".into(), b"garbage".to_vec());
    let mut early = PeerSecret::parse("kwg-peer-early", &bad, &BTreeMap::new());
    early.created = DateTime::from_timestamp(1_600_000_000, 0);
    secrets.insert(early.secret_name.clone(), early);
    apply(
        &c.reconcile(secrets.values(), &running, now()),
        &mut running,
        &mut secrets,
    );
    let fixed = aged("early", &key(), "dev", -100_000_000);
    secrets.insert(fixed.secret_name.clone(), fixed);
    let plan = c.reconcile(secrets.values(), &running, now());
    assert_eq!(active(&plan), ["p0", "p1", "p2", "x"]);
    apply(&plan, &mut running, &mut secrets);

    // A restarted gateway serves the same peers (from their annotations), not the oldest.
    let plan = core()
        .with_peers_per_owner(3)
        .reconcile(secrets.values(), &BTreeMap::new(), now());
    assert_eq!(active(&plan), ["p0", "p1", "p2", "x"]);

    // One served peer leaves: the oldest waiting one takes its place.
    secrets.remove("kwg-peer-p1");
    let plan = c.reconcile(secrets.values(), &running, now());
    assert_eq!(active(&plan), ["early", "p0", "p2", "x"]);
}

#[test]
fn the_21st_peer_of_an_owner_is_refused_by_default() {
    let secrets = store((0..21).map(|i| aged(&format!("p{i:02}"), &key(), "dev", i)));
    let plan = core().reconcile(secrets.values(), &BTreeMap::new(), now());
    assert_eq!(plan.active.len(), 20);
    assert_eq!(rejected(&plan, Problem::OwnerLimit), ["kwg-peer-p20"]);
}

#[test]
fn a_forged_annotation_loses_to_the_older_holder_after_a_restart() {
    let mut c = core();
    let mut secrets = store([aged("victim", &key(), "a", 0)]);
    let mut running = BTreeMap::new();
    apply(
        &c.reconcile(secrets.values(), &running, now()),
        &mut running,
        &mut secrets,
    );
    let ip = secrets["kwg-peer-victim"].tunnel_ip;
    // A newer Secret whose name sorts first copies the victim's annotation.
    let mut thief = aged("aaa", &key(), "b", 60);
    thief.tunnel_ip = ip;
    secrets.insert(thief.secret_name.clone(), thief);
    let plan = core().reconcile(secrets.values(), &BTreeMap::new(), now());
    let by_name: HashMap<&str, TunnelIp> = plan
        .active
        .iter()
        .map(|p| (p.spec.name.as_str(), p.ip))
        .collect();
    assert_eq!(Some(by_name["victim"]), ip);
    assert_ne!(Some(by_name["aaa"]), ip);
}

#[test]
fn an_oversized_secret_is_reported_not_parsed() {
    let big = PeerSecret::too_large("kwg-peer-big", 1 << 20, 16_384, &BTreeMap::new());
    let plan = core().reconcile([&big], &BTreeMap::new(), now());
    assert_eq!(rejected(&plan, Problem::TooLarge), ["kwg-peer-big"]);
    assert!(
        plan.malformed[0].reason.contains("1048576 bytes"),
        "{plan:?}"
    );
    assert_eq!(plan.malformed[0].problem.event_reason(), "SecretTooLarge");
    assert!(plan.active.is_empty() && plan.device.is_empty());
}

/// Two replicas: the leader assigns, the follower configures exactly the annotated
/// addresses (and nothing before the leader annotated), and takes over assigning without
/// moving anybody when it becomes the leader.
#[test]
fn a_follower_serves_the_leaders_addresses_and_takes_over_without_moves() {
    let (mut leader, mut follower) = (core(), core());
    follower.set_assigning(false);
    let mut secrets = store((0..5).map(|i| secret(&format!("p{i}"), &key())));
    let (mut run_l, mut run_f) = (BTreeMap::new(), BTreeMap::new());
    let plan = follower.reconcile(secrets.values(), &run_f, now());
    assert!(plan.device.is_empty() && plan.annotate.is_empty() && plan.active.is_empty());
    let plan = leader.reconcile(secrets.values(), &run_l, now());
    apply(&plan, &mut run_l, &mut secrets);
    let plan = follower.reconcile(secrets.values(), &run_f, now());
    assert!(
        plan.annotate.is_empty(),
        "a follower never writes addresses"
    );
    let mut scratch = secrets.clone();
    apply(&plan, &mut run_f, &mut scratch);
    assert_eq!(
        run_f, run_l,
        "both replicas configure the same peers and addresses"
    );
    // The leader goes; the follower leads: a new peer gets a fresh address, nobody moves.
    follower.set_assigning(true);
    secrets.extend(store([secret("late", &key())]));
    let plan = follower.reconcile(secrets.values(), &run_f, now());
    assert_eq!(plan.annotate.len(), 1, "only the new peer is annotated");
    let before: HashSet<_> = run_l.values().cloned().collect();
    apply(&plan, &mut run_f, &mut secrets);
    let ips: HashSet<_> = run_f.values().cloned().collect();
    assert_eq!(ips.len(), 6, "six distinct addresses");
    assert!(before.is_subset(&ips));
}
