use super::*;
use crate::policy::fixtures::*;

#[test]
fn owner_grants_intersected_with_asked_namespaces() {
    let mut ids = NsIds::default();
    let peers = [
        peer("100.77.0.2", "alice", &[]),
        peer("100.77.0.3", "root", &["emojivoto"]),
        peer("100.77.0.4", "root", &[]),
        peer("100.77.0.5", "alice", &["default"]),
    ];
    let sets = desired(&inv(), &peers, rbac, &mut ids);
    let (emo, def) = (ids.id("emojivoto").get(), ids.id("default").get());
    assert_eq!(names(&sets, "100.77.0.2"), [emo]);
    assert_eq!(names(&sets, "100.77.0.3"), [emo]);
    let mut all = names(&sets, "100.77.0.4");
    all.sort();
    let mut want = vec![emo, def];
    want.sort();
    assert_eq!(all, want);
    assert!(names(&sets, "100.77.0.5").is_empty());
    // Every destination maps to its namespace; DNS separately.
    assert_eq!(sets.dest_ns[&ip("10.244.0.6")].get(), def);
    assert_eq!(sets.dest_ns[&ip("10.96.1.0")].get(), emo);
    assert_eq!(sets.dns, [ip("10.96.0.10")].into());
    // Ids are never 0 (the mark of a destination in no namespace).
    assert!(sets.dest_ns.values().all(|i| i.get() != 0));
}

#[test]
fn a_grant_and_its_removal_are_two_elements() {
    let mut ids = NsIds::default();
    let peers = [peer("100.77.0.2", "alice", &[])];
    let before = desired(&inv(), &peers, rbac, &mut ids);
    let after = desired(&inv(), &peers, |_, _| true, &mut ids);
    let def = ids.id("default");
    let d = diff(&before, &after);
    assert_eq!(d.add_peer, [(ip("100.77.0.2"), def)]);
    assert_eq!(d.len(), 1);
    // The IPv6 grant is the same peer, keyed by its IPv4 address as the last 32 bits of its
    // IPv6 tunnel address carry it.
    assert_eq!(
        d.render("kwg"),
        format!(
            "add element inet kwg peer_ns {{ 100.77.0.2 . {id} }}\nadd element inet kwg peer_ns6 {{ 0x644d0002 . {id} }}\n",
            id = def.get()
        )
    );
    let back = diff(&after, &before);
    assert_eq!(back.del_peer, [(ip("100.77.0.2"), def)]);
    assert!(
        back.render("kwg")
            .starts_with("delete element inet kwg peer_ns")
    );
    assert!(diff(&after, &after).is_empty());
}

#[test]
fn ipv6_twins_go_where_their_ipv4_address_goes() {
    let mut ids = NsIds::default();
    let mut inv = inv();
    let v6 = |s: &str| s.parse::<std::net::Ipv6Addr>().unwrap();
    inv.twins6.insert(v6("fd00:10:96::100"), ip("10.96.1.0"));
    inv.twins6.insert(v6("fd00:10:96::a"), ip("10.96.0.10"));
    // An IPv6-only Service has no twin judged anywhere: no peer reaches it.
    inv.twins6.insert(v6("fd00:10:96::99"), ip("10.96.9.9"));
    let sets = desired(&inv, &[], rbac, &mut ids);
    let emo = ids.id("emojivoto");
    assert_eq!(sets.dest_ns6.get(&v6("fd00:10:96::100")), Some(&emo));
    assert!(!sets.dest_ns6.contains_key(&v6("fd00:10:96::99")));
    assert_eq!(sets.dns6, [v6("fd00:10:96::a")].into());
    let script = diff(&Sets::default(), &sets).render("kwg");
    assert!(
        script.contains(&format!(
            "add element inet kwg dest_ns6 {{ fd00:10:96::100 : {} }}",
            emo.get()
        )),
        "{script}"
    );
    assert!(
        script.contains("add element inet kwg dns6 { fd00:10:96::a }"),
        "{script}"
    );
    // Gone again: deleted.
    let back = diff(
        &sets,
        &desired(&crate::policy::fixtures::inv(), &[], rbac, &mut ids),
    );
    assert_eq!(back.del_dest6, [v6("fd00:10:96::100")]);
}

#[test]
fn a_moved_address_is_deleted_then_added() {
    let mut ids = NsIds::default();
    let old = desired(&inv(), &[], rbac, &mut ids);
    let mut moved = inv();
    moved
        .by_namespace
        .get_mut("emojivoto")
        .unwrap()
        .remove(&ip("10.244.0.5"));
    moved
        .by_namespace
        .get_mut("default")
        .unwrap()
        .insert(ip("10.244.0.5"));
    moved.dns.clear();
    let new = desired(&moved, &[], rbac, &mut ids);
    let d = diff(&old, &new);
    assert_eq!(d.del_dest, [ip("10.244.0.5")]);
    assert_eq!(d.add_dest, [(ip("10.244.0.5"), ids.id("default"))]);
    assert_eq!(d.del_dns, [ip("10.96.0.10")]);
    let script = d.render("kwg");
    let del = script
        .find("delete element inet kwg dest_ns { 10.244.0.5 }")
        .unwrap();
    let add = script
        .find("add element inet kwg dest_ns { 10.244.0.5 : ")
        .unwrap();
    assert!(del < add, "{script}");
}

#[test]
fn an_address_claimed_by_two_namespaces_needs_reach_in_both() {
    // A stale pod of default still lists emojivoto's new pod's address: whichever answers,
    // alice (emojivoto only) reaches it through neither; root (both) does.
    let mut shared = inv();
    let stale = ip("10.244.0.5");
    shared
        .by_namespace
        .get_mut("default")
        .unwrap()
        .insert(stale);
    let mut ids = NsIds::default();
    let peers = [
        peer("100.77.0.2", "alice", &[]),
        peer("100.77.0.3", "root", &[]),
        peer("100.77.0.4", "root", &["emojivoto"]),
    ];
    let sets = desired(&shared, &peers, rbac, &mut ids);
    let both = ids.id("default,emojivoto");
    assert_eq!(sets.dest_ns[&stale], both);
    let reaches = |p: &str| sets.peer_ns.contains(&(ip(p), sets.dest_ns[&stale]));
    assert!(!reaches("100.77.0.2"), "granted emojivoto only");
    assert!(reaches("100.77.0.3"), "granted both");
    assert!(!reaches("100.77.0.4"), "asked for emojivoto only");
    // Their other addresses stay their own namespace's.
    assert_eq!(sets.dest_ns[&ip("10.244.0.6")], ids.id("default"));
    assert_eq!(sets.dest_ns[&ip("10.96.1.0")], ids.id("emojivoto"));
    assert!(
        sets.peer_ns
            .contains(&(ip("100.77.0.2"), ids.id("emojivoto")))
    );
}

#[test]
fn ids_are_stable() {
    let mut ids = NsIds::default();
    let a = ids.id("a");
    let b = ids.id("b");
    assert_ne!(a, b);
    assert_eq!(ids.id("a"), a);
}

#[test]
fn large_diffs_are_chunked() {
    let mut new = Sets::default();
    for i in 0..5000u32 {
        new.dest_ns.insert(Ipv4Addr::from(0x0a00_0000 + i), NsId(1));
    }
    let script = diff(&Sets::default(), &new).render("kwg");
    assert_eq!(script.lines().count(), 3);
}

proptest::proptest! {
    #[test]
    fn ipv6_elements_follow_their_ipv4_twins_and_diffs_reach_the_new_sets(
        old_twins in proptest::collection::btree_map(0u16..64, 0usize..6, 0..20),
        new_twins in proptest::collection::btree_map(0u16..64, 0usize..6, 0..20),
    ) {
        // Twins among the fixture's addresses (some judged, one unknown).
        let v4s = ["10.96.1.0", "10.244.0.5", "10.96.2.0", "10.244.0.6", "10.96.0.10", "10.96.9.9"];
        let sets_of = |twins: &std::collections::BTreeMap<u16, usize>, ids: &mut NsIds| {
            let mut inv = inv();
            for (h, i) in twins {
                let a6 = std::net::Ipv6Addr::new(0xfd00, 0x10, 0x96, 0, 0, 0, 0, *h);
                inv.twins6.insert(a6, ip(v4s[*i]));
            }
            (desired(&inv, &[], |_, _| true, ids), inv)
        };
        let mut ids = NsIds::default();
        let (old, _) = sets_of(&old_twins, &mut ids);
        let (new, inv) = sets_of(&new_twins, &mut ids);
        for (a6, a4) in &inv.twins6 {
            proptest::prop_assert_eq!(new.dest_ns6.get(a6), new.dest_ns.get(a4));
            proptest::prop_assert_eq!(new.dns6.contains(a6), new.dns.contains(a4));
        }
        let d = diff(&old, &new);
        let mut applied = old.dest_ns6.clone();
        for a in &d.del_dest6 {
            applied.remove(a);
        }
        applied.extend(d.add_dest6.iter().copied());
        proptest::prop_assert_eq!(&applied, &new.dest_ns6);
        let mut dns = old.dns6.clone();
        for a in &d.del_dns6 {
            dns.remove(a);
        }
        dns.extend(d.add_dns6.iter().copied());
        proptest::prop_assert_eq!(&dns, &new.dns6);
    }
}
