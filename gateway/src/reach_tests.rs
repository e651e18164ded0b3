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
        ..Inventory::default()
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
    let inv = inventory(
        &svc,
        &pods,
        &nodes,
        &[],
        &[],
        &BTreeMap::new(),
        &BTreeMap::new(),
    );
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

/// The inventory of Services, Pods and EndpointSlices alone (no node, nothing allowed or
/// recently gone).
fn pods_and_slices(services: &[Service], pods: &[Pod], slices: &[EndpointSlice]) -> Inventory {
    inventory(
        services,
        pods,
        &[],
        slices,
        &[],
        &BTreeMap::new(),
        &BTreeMap::new(),
    )
}

fn objects<T: serde::de::DeserializeOwned>(values: Vec<serde_json::Value>) -> Vec<T> {
    values
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect()
}

fn service(ns: &str, name: &str, cluster_ip: &str) -> serde_json::Value {
    json!({"metadata": {"name": name, "namespace": ns}, "spec": {"clusterIP": cluster_ip}})
}

fn slice(ns: &str, service: &str, name: &str, addrs: &[&str]) -> serde_json::Value {
    let eps: Vec<_> = addrs
        .iter()
        .map(|a| json!({"addresses": [a], "conditions": {"ready": true}}))
        .collect();
    json!({"metadata": {"name": name, "namespace": ns, "labels": {SERVICE_NAME_LABEL: service}},
           "addressType": "IPv4", "endpoints": eps})
}

/// Pods `web` (emo, 10.244.0.5), `db` (default, 10.244.0.6), `api` (kube-system, 10.244.0.7);
/// node 192.0.2.1; Services in `emo`: `web` (its own pod), `pivot` (a hand-written slice),
/// `lb` and `empty` (no slices).
fn cluster(pivot: &[&str], allowed: &[&str]) -> Inventory {
    cluster_after(pivot, allowed, &BTreeMap::new())
}

/// [`cluster`] with endpoints that left their slices moments ago.
fn cluster_after(
    pivot: &[&str],
    allowed: &[&str],
    removed: &BTreeMap<ServiceKey, Judged>,
) -> Inventory {
    let pods: Vec<Pod> = objects(vec![
        json!({"metadata": {"name": "web", "namespace": "emo"}, "status": {"phase": "Running", "podIP": "10.244.0.5"}}),
        json!({"metadata": {"name": "db", "namespace": "default"}, "status": {"phase": "Running", "podIP": "10.244.0.6"}}),
        json!({"metadata": {"name": "api", "namespace": "kube-system"}, "status": {"phase": "Running", "podIP": "10.244.0.7"}}),
    ]);
    let nodes: Vec<Node> = objects(vec![
        json!({"metadata": {"name": "n1"}, "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.1"}]}}),
    ]);
    let services: Vec<Service> = objects(vec![
        service("emo", "web", "10.96.1.1"),
        service("emo", "pivot", "10.96.1.2"),
        service("emo", "empty", "10.96.1.3"),
    ]);
    let slices: Vec<EndpointSlice> = objects(vec![
        slice("emo", "web", "web-abcde", &["10.244.0.5"]),
        slice("emo", "pivot", "pivot-1", pivot),
        // Another namespace's slice naming a Service `pivot` is not emo/pivot's.
        slice("default", "pivot", "pivot", &["192.0.2.1"]),
    ]);
    let allowed: Vec<IpNet> = allowed.iter().map(|a| a.parse().unwrap()).collect();
    inventory(
        &services,
        &pods,
        &nodes,
        &slices,
        &allowed,
        &BTreeMap::new(),
        removed,
    )
}

#[test]
fn a_cluster_ip_of_its_own_pods_belongs_to_its_namespace() {
    let inv = cluster(&["10.244.0.5"], &[]);
    let emo = &inv.by_namespace["emo"];
    for a in ["10.96.1.1", "10.96.1.2", "10.96.1.3", "10.244.0.5"] {
        assert!(emo.contains(&ip(a)), "{a}: {inv:?}");
    }
    assert!(inv.spans.is_empty() && inv.refused.is_empty(), "{inv:?}");
}

#[test]
fn a_cluster_ip_pointing_at_a_node_or_outside_the_pods_is_refused() {
    for target in ["192.0.2.1", "10.244.0.99", "8.8.8.8"] {
        let inv = cluster(&["10.244.0.5", target], &[]);
        assert_eq!(
            inv.refused[&ip("10.96.1.2")],
            Refused {
                service: "emo/pivot".into(),
                endpoint: target.into()
            }
        );
        assert!(!inv.by_namespace["emo"].contains(&ip("10.96.1.2")));
        let mut ids = NsIds::default();
        let root = [peer("100.77.0.5", "root", &[])];
        let sets = desired(&inv, &root, |_, _| true, &mut ids);
        assert!(
            !sets.dest_ns.contains_key(&ip("10.96.1.2")),
            "no id: no peer reaches it"
        );
        // Its neighbour is untouched.
        assert_eq!(sets.dest_ns[&ip("10.96.1.1")], ids.id("emo"));
    }
    // Unless the admin allows the address to every peer anyway.
    let inv = cluster(&["192.0.2.1"], &["192.0.2.0/24"]);
    assert!(inv.refused.is_empty(), "{inv:?}");
    assert!(inv.by_namespace["emo"].contains(&ip("10.96.1.2")));
}

#[test]
fn a_cluster_ip_with_an_endpoint_not_in_canonical_form_is_refused() {
    // The API server takes these (Go's lenient parser); kube-proxy reads the first as
    // 10.244.0.5's neighbour 10.244.1.7, which may be anyone's.
    for odd in [
        "010.244.001.007",
        "::ffff:10.244.1.7",
        " 10.244.0.5",
        "10.244.0.5\n",
    ] {
        let inv = cluster(&["10.244.0.5", odd], &["0.0.0.0/0"]);
        assert_eq!(
            inv.refused[&ip("10.96.1.2")],
            Refused {
                service: "emo/pivot".into(),
                endpoint: odd.into()
            },
            "{odd}: not even --allow-cidr 0.0.0.0/0 vouches for it"
        );
        let sets = desired(
            &inv,
            &[peer("100.77.0.5", "root", &[])],
            |_, _| true,
            &mut NsIds::default(),
        );
        assert!(!sets.dest_ns.contains_key(&ip("10.96.1.2")), "{odd}");
        assert!(sets.dest_ns.contains_key(&ip("10.96.1.1")), "{odd}");
    }
}

#[test]
fn a_cluster_ip_spanning_namespaces_needs_reach_in_each() {
    let inv = cluster(&["10.244.0.5", "10.244.0.6"], &[]);
    let span: BTreeSet<String> = ["default".to_owned(), "emo".to_owned()].into();
    assert_eq!(inv.spans[&ip("10.96.1.2")], span);
    assert!(!inv.by_namespace["emo"].contains(&ip("10.96.1.2")));
    let only_emo = |_: &Subject, ns: &str| ns == "emo";
    let peers = [
        peer("100.77.0.2", "alice", &[]),
        peer("100.77.0.3", "root", &[]),
        // root's other peer asked only for emo: it does not reach into default.
        peer("100.77.0.4", "root", &["emo"]),
    ];
    let mut ids = NsIds::default();
    let sets = desired(
        &inv,
        &peers,
        |o, ns| o.user == "root" || only_emo(o, ns),
        &mut ids,
    );
    let id = sets.dest_ns[&ip("10.96.1.2")];
    assert!(
        ![ids.id("emo"), ids.id("default")].contains(&id),
        "a span has its own id"
    );
    let has = |p: &str| sets.peer_ns.contains(&(ip(p), id));
    assert!(!has("100.77.0.2"), "alice may not reach default");
    assert!(has("100.77.0.3"));
    assert!(!has("100.77.0.4"));
    // Alice still reaches the rest of emo; a grant in default opens the span too.
    assert!(sets.peer_ns.contains(&(ip("100.77.0.2"), ids.id("emo"))));
    let both = desired(&inv, &peers, |_, _| true, &mut ids);
    assert!(both.peer_ns.contains(&(ip("100.77.0.2"), id)));
}

#[test]
fn an_endpoint_slice_change_moves_the_cluster_ip_element_by_element() {
    let mut ids = NsIds::default();
    let peers = [peer("100.77.0.2", "alice", &[])];
    let rbac = |_: &Subject, ns: &str| ns == "emo";
    let good = desired(&cluster(&["10.244.0.5"], &[]), &peers, rbac, &mut ids);
    let bad = desired(
        &cluster(&["10.244.0.5", "192.0.2.1"], &[]),
        &peers,
        rbac,
        &mut ids,
    );
    let d = diff(&good, &bad);
    assert_eq!(d.del_dest, [ip("10.96.1.2")]);
    assert!(
        d.add_dest.is_empty() && d.add_peer.is_empty() && d.del_peer.is_empty(),
        "{d:?}"
    );
    let back = diff(&bad, &good);
    assert_eq!(back.add_dest, [(ip("10.96.1.2"), ids.id("emo"))]);
}

#[test]
fn only_ipv4_slices_labelled_for_the_service_count() {
    let pods: Vec<Pod> = objects(vec![
        json!({"metadata": {"name": "web", "namespace": "emo"}, "status": {"phase": "Running", "podIP": "10.244.0.5"}}),
    ]);
    let services: Vec<Service> = objects(vec![service("emo", "web", "10.96.1.1")]);
    let mut fqdn = slice("emo", "web", "fqdn", &["db.example.com"]);
    fqdn["addressType"] = json!("FQDN");
    let mut v6 = slice("emo", "web", "v6", &["fd00::1"]);
    v6["addressType"] = json!("IPv6");
    let mut unlabelled = slice("emo", "web", "other", &["192.0.2.1"]);
    unlabelled["metadata"]["labels"] = json!({});
    let slices: Vec<EndpointSlice> = objects(vec![fqdn, v6, unlabelled]);
    let inv = pods_and_slices(&services, &pods, &slices);
    assert!(
        inv.by_namespace["emo"].contains(&ip("10.96.1.1")),
        "{inv:?}"
    );
    // The label is what counts, not the slice's name or its manager.
    let hand: Vec<EndpointSlice> = objects(vec![slice("emo", "web", "anything", &["192.0.2.1"])]);
    let inv = pods_and_slices(&services, &pods, &hand);
    assert!(inv.refused.contains_key(&ip("10.96.1.1")));
}

#[test]
fn an_address_whose_pod_just_went_counts_for_its_namespace_for_a_while() {
    let t0 = std::time::Instant::now();
    let mut gone = Departed::default();
    let with_web = cluster(&["10.244.0.5"], &[]);
    assert!(!gone.update(&with_web.pods, t0));
    // web's Pod is deleted; its slice still lists it until the controller catches up.
    let mut pods = with_web.pods.clone();
    pods.remove(&ip("10.244.0.5"));
    assert!(gone.update(&pods, t0), "an address went");
    assert_eq!(gone.recent(), [(ip("10.244.0.5"), "emo".to_owned())].into());
    assert_eq!(gone.next_expiry(), Some(t0 + DEPARTED_GRACE));
    let services: Vec<Service> = objects(vec![service("emo", "web", "10.96.1.1")]);
    let slices: Vec<EndpointSlice> = objects(vec![slice("emo", "web", "web-1", &["10.244.0.5"])]);
    let judge = |recent: &BTreeMap<Ipv4Addr, String>| {
        inventory(&services, &[], &[], &slices, &[], recent, &BTreeMap::new())
    };
    assert!(judge(&gone.recent()).by_namespace["emo"].contains(&ip("10.96.1.1")));
    // After the grace it is no pod: refused.
    assert!(!gone.update(&pods, t0 + DEPARTED_GRACE));
    assert!(gone.recent().is_empty() && gone.next_expiry().is_none());
    assert!(judge(&gone.recent()).refused.contains_key(&ip("10.96.1.1")));
    // An address that is a pod again (of any namespace) is judged by that pod at once.
    let mut again = Departed::default();
    again.update(&with_web.pods, t0);
    again.update(&pods, t0);
    let mut reused = pods.clone();
    reused.insert(ip("10.244.0.5"), ["default".to_owned()].into());
    again.update(&reused, t0);
    assert!(again.recent().is_empty());
}

#[test]
fn an_endpoint_that_left_its_slice_counts_for_a_while() {
    // pivot led to db (default) and the node; its slice now says web (emo) only. kube-proxy
    // may still send new connections to the old endpoints for a moment: for 30 s (fake
    // clock) the ClusterIP stays refused, as it was judged.
    let t0 = Instant::now();
    let pivot = ip("10.96.1.2");
    let mut removed = Removed::default();
    assert!(!removed.update(&cluster(&["10.244.0.6", "192.0.2.1"], &[]).endpoints, t0));
    let now = cluster(&["10.244.0.5"], &[]);
    assert!(removed.update(&now.endpoints, t0 + Duration::from_secs(1)));
    let judged = |at: u64, removed: &mut Removed| {
        removed.update(&now.endpoints, t0 + Duration::from_secs(at));
        cluster_after(&["10.244.0.5"], &[], &removed.recent())
    };
    let inv = judged(30, &mut removed);
    assert_eq!(inv.refused[&pivot].endpoint, "192.0.2.1", "{inv:?}");
    assert_eq!(removed.next_expiry(), Some(t0 + Duration::from_secs(31)));
    let inv = judged(31, &mut removed);
    assert!(inv.by_namespace["emo"].contains(&pivot), "{inv:?}");
    assert_eq!(removed.next_expiry(), None);

    // Toward db alone, then web: a span of default and emo for the grace (db's address as
    // it was judged when it left, whatever holds it later).
    let mut removed = Removed::default();
    removed.update(&cluster(&["10.244.0.6"], &[]).endpoints, t0);
    removed.update(&now.endpoints, t0);
    let gone = removed.recent();
    let db = &gone[&("emo".to_owned(), "pivot".to_owned())];
    assert_eq!(
        db[&Ok(ip("10.244.0.6"))],
        Some(BTreeSet::from(["default".to_owned()]))
    );
    let inv = cluster_after(&["10.244.0.5"], &[], &gone);
    assert_eq!(
        inv.spans[&pivot],
        BTreeSet::from(["default".into(), "emo".into()])
    );
    // Listed again: it counts as it is now, not as it was.
    assert!(!removed.update(&cluster(&["10.244.0.5", "10.244.0.6"], &[]).endpoints, t0));
    assert!(removed.recent().is_empty());
}

#[test]
fn a_span_from_a_namespace_without_pods_is_asked_about_and_granted() {
    let pods: Vec<Pod> = objects(vec![
        json!({"metadata": {"name": "db", "namespace": "data"}, "status": {"phase": "Running", "podIP": "10.244.0.6"}}),
    ]);
    let services: Vec<Service> = objects(vec![service("front", "db", "10.96.1.9")]);
    let slices: Vec<EndpointSlice> = objects(vec![slice("front", "db", "db-1", &["10.244.0.6"])]);
    let inv = pods_and_slices(&services, &pods, &slices);
    let peers = [peer("100.77.0.2", "alice", &[])];
    let q = questions(&inv, &peers, |_, _| false);
    assert!(q.iter().any(|(_, ns)| ns == "front"), "{q:?}");
    let mut ids = NsIds::default();
    let sets = desired(&inv, &peers, |_, _| true, &mut ids);
    let id = sets.dest_ns[&ip("10.96.1.9")];
    assert!(sets.peer_ns.contains(&(ip("100.77.0.2"), id)));
}

#[test]
fn allow_command_names_the_user_or_service_account() {
    assert_eq!(
        allow_command("developer", "kube-system"),
        "kubectl -n kube-system create rolebinding kwg-reach-developer --clusterrole=view --user=developer"
    );
    assert_eq!(
        allow_command("system:serviceaccount:kwg-ci:deploy", "emojivoto"),
        "kubectl -n emojivoto create rolebinding kwg-reach-system-serviceaccount-kwg-ci-deploy --clusterrole=view --serviceaccount=kwg-ci:deploy"
    );
    assert!(
        allow_command("Jane Doe", "a")
            .ends_with("kwg-reach-jane-doe --clusterrole=view --user='Jane Doe'")
    );
}
