use super::*;
use serde_json::json;

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn inv() -> Inventory {
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
    }
}

fn peer(addr: &str, owner: &str, asked: &[&str]) -> PeerReach {
    PeerReach {
        ip: ip(addr),
        subject: Subject::new(owner, &[]),
        asked: asked.iter().map(|s| s.to_string()).collect(),
    }
}

/// `alice` may get Services only in emojivoto; `root` everywhere.
fn rbac(who: &Subject, ns: &str) -> bool {
    who.user == "root" || ns == "emojivoto"
}

fn names(sets: &Sets, p: &str) -> Vec<u32> {
    sets.granted(ip(p)).map(NsId::get).collect()
}

#[test]
fn a_role_binding_change_names_only_its_namespace() {
    let v = |items: &[(&'static str, &str, &str, &str)]| -> RbacVersions {
        items
            .iter()
            .map(|(k, ns, n, rv)| ((*k, ns.to_string(), n.to_string()), rv.to_string()))
            .collect()
    };
    let old = v(&[
        ("RoleBinding", "emojivoto", "view", "1"),
        ("Role", "default", "r", "2"),
        ("RoleBinding", "kwg-system", "kwg", "3"),
    ]);
    let new = v(&[
        ("RoleBinding", "emojivoto", "view", "1"),
        ("Role", "default", "r", "5"),       // changed
        ("RoleBinding", "bench", "rb", "6"), // added
    ]); // kwg-system's deleted
    let changed: Vec<String> = changed_namespaces(&old, &new).into_iter().collect();
    assert_eq!(changed, ["bench", "default", "kwg-system"]);
    assert!(changed_namespaces(&new, &new).is_empty());
}

#[test]
fn reachable_names_only_decided_peers() {
    let peers = [
        peer("100.77.0.2", "alice", &[]),
        peer("100.77.0.3", "alice", &["emojivoto", "default", "gone"]),
        peer("100.77.0.4", "bob", &[]),
    ];
    // bob's review in `default` is not answered yet.
    let answer = |o: &Subject, ns: &str| (o.user != "bob" || ns != "default").then(|| rbac(o, ns));
    let r = reachable(&inv(), &peers, answer);
    // Namespaces in inventory order (sorted); a mapped namespace that does not exist is not reached.
    assert_eq!(r[&ip("100.77.0.2")], ["emojivoto"]);
    assert_eq!(r[&ip("100.77.0.3")], ["emojivoto"]);
    assert!(!r.contains_key(&ip("100.77.0.4")), "undecided: left out");
    let root = [peer("100.77.0.5", "root", &[])];
    assert_eq!(
        reachable(&inv(), &root, |o, ns| Some(rbac(o, ns)))[&ip("100.77.0.5")],
        ["default", "emojivoto"]
    );
}

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
fn questions_are_owner_namespace_pairs_not_known() {
    let peers = [
        peer("100.77.0.2", "alice", &[]),
        peer("100.77.0.3", "alice", &["default", "gone"]),
        peer("100.77.0.4", "bob", &["emojivoto"]),
    ];
    let q = questions(&inv(), &peers, |o, ns| {
        o.user == "alice" && ns == "emojivoto"
    });
    let q: Vec<(&str, &str)> = q
        .iter()
        .map(|(o, n)| (o.user.as_str(), n.as_str()))
        .collect();
    // A namespace with nothing to reach (`gone`) needs no review.
    assert_eq!(q, [("alice", "default"), ("bob", "emojivoto")]);
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
    assert_eq!(
        d.render("kwg"),
        format!(
            "add element inet kwg peer_ns {{ 100.77.0.2 . {} }}\n",
            def.get()
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

#[test]
fn inventory_skips_host_network_nodes_and_finished_pods() {
    let svc: Vec<Service> = [
        json!({"metadata": {"name": "web", "namespace": "emo"}, "spec": {"clusterIP": "10.96.1.0", "clusterIPs": ["10.96.1.0"]}}),
        json!({"metadata": {"name": "headless", "namespace": "emo"}, "spec": {"clusterIP": "None"}}),
        json!({"metadata": {"name": "kube-dns", "namespace": "kube-system"}, "spec": {"clusterIP": "10.96.0.10"}}),
    ]
    .into_iter()
    .map(|v| serde_json::from_value(v).unwrap())
    .collect();
    let pods: Vec<Pod> = [
        json!({"metadata": {"name": "a", "namespace": "emo"}, "status": {"phase": "Running", "podIP": "10.244.0.5"}}),
        json!({"metadata": {"name": "h", "namespace": "emo"}, "spec": {"hostNetwork": true, "containers": []}, "status": {"phase": "Running", "podIP": "192.0.2.1"}}),
        json!({"metadata": {"name": "done", "namespace": "emo"}, "status": {"phase": "Succeeded", "podIP": "10.244.0.9"}}),
        json!({"metadata": {"name": "n", "namespace": "emo"}, "status": {"phase": "Running", "podIP": "10.244.0.1"}}),
    ]
    .into_iter()
    .map(|v| serde_json::from_value(v).unwrap())
    .collect();
    let nodes: Vec<Node> = [json!({"metadata": {"name": "n1"}, "status": {"addresses": [
        {"type": "InternalIP", "address": "192.0.2.1"}, {"type": "InternalIP", "address": "10.244.0.1"}]}})]
    .into_iter()
    .map(|v| serde_json::from_value(v).unwrap())
    .collect();
    let inv = inventory(&svc, &pods, &nodes);
    assert_eq!(
        inv.by_namespace["emo"],
        [ip("10.96.1.0"), ip("10.244.0.5")].into()
    );
    assert_eq!(inv.by_namespace["kube-system"], [ip("10.96.0.10")].into());
    assert_eq!(inv.dns, [ip("10.96.0.10")].into());
}

#[test]
fn service_accounts_get_their_groups() {
    assert_eq!(owner_groups("alice"), ["system:authenticated"]);
    assert_eq!(
        owner_groups("system:serviceaccount:emo:bot"),
        [
            "system:authenticated",
            "system:serviceaccounts",
            "system:serviceaccounts:emo"
        ]
    );
    assert_eq!(
        owner_groups("system:serviceaccount:bad"),
        ["system:authenticated"]
    );
}

#[test]
fn reviews_are_keyed_by_owner_and_verified_groups() {
    let dev = |groups: &[&str]| {
        let g: Vec<String> = groups.iter().map(|s| s.to_string()).collect();
        Subject::new("dev", &g)
    };
    // Sorted and without repeats: the Secret's order and system:authenticated do not matter.
    assert_eq!(
        dev(&["system:authenticated", "kwg:users", ""]).groups,
        ["kwg:users", "system:authenticated"]
    );
    assert_eq!(
        dev(&["kwg:users"]),
        dev(&["system:authenticated", "kwg:users"])
    );
    assert_eq!(dev(&[]).groups, ["system:authenticated"]);
    // A `system:` group of the Secret never counts (an exempt writer could put any there).
    assert_eq!(
        dev(&[
            "system:masters",
            "system:serviceaccounts:kube-system",
            "kwg:users"
        ])
        .groups,
        ["kwg:users", "system:authenticated"]
    );
    let sa = Subject::new(
        "system:serviceaccount:emo:bot",
        &["ci".to_owned(), "system:masters".to_owned()],
    );
    assert_eq!(
        sa.groups,
        [
            "ci",
            "system:authenticated",
            "system:serviceaccounts",
            "system:serviceaccounts:emo"
        ]
    );
    // Two peers of one owner, one with a group: two reviews per namespace, each answered
    // for its own peer (the group grants `default`).
    let mut with = peer("100.77.0.2", "dev", &[]);
    with.subject = dev(&["kwg:users"]);
    let peers = [with, peer("100.77.0.3", "dev", &[])];
    let q = questions(&inv(), &peers, |_, _| false);
    assert_eq!(q.len(), 4);
    assert!(q.contains(&(dev(&["kwg:users"]), "default".to_owned())));
    assert!(q.contains(&(dev(&[]), "default".to_owned())));
    let by_group =
        |o: &Subject, ns: &str| ns == "emojivoto" || o.groups.iter().any(|g| g == "kwg:users");
    let got = reachable(&inv(), &peers, |o, ns| Some(by_group(o, ns)));
    assert_eq!(got[&ip("100.77.0.2")], ["default", "emojivoto"]);
    assert_eq!(got[&ip("100.77.0.3")], ["emojivoto"]);
    let known = |o: &Subject, ns: &str| o == &dev(&[]) && ns == "default";
    assert_eq!(questions(&inv(), &peers, known).len(), 3);
}
