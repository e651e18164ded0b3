use super::*;
use crate::policy::fixtures::*;
use crate::policy::grants::{Subject, questions};
use crate::policy::sets::{NsId, NsIds, desired, diff};
use serde_json::json;

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

/// A dual-stack Service `emo/web` (10.96.1.1, fd00:96::1) with an IPv4 slice of its own
/// pod and an IPv6 slice of `v6`; pods web (emo), api (kube-system), both dual-stack.
fn dual_stack(v6: &[&str]) -> Inventory {
    let pods: Vec<Pod> = objects(vec![
        json!({"metadata": {"name": "web", "namespace": "emo"}, "status": {"phase": "Running",
            "podIP": "10.244.0.5", "podIPs": [{"ip": "10.244.0.5"}, {"ip": "fd00:244::5"}]}}),
        json!({"metadata": {"name": "api", "namespace": "kube-system"}, "status": {"phase": "Running",
            "podIP": "10.244.0.7", "podIPs": [{"ip": "10.244.0.7"}, {"ip": "fd00:244::7"}]}}),
    ]);
    let mut web = service("emo", "web", "10.96.1.1");
    web["spec"]["clusterIPs"] = json!(["10.96.1.1", "fd00:96::1"]);
    let services: Vec<Service> = objects(vec![web]);
    let mut six = slice("emo", "web", "web-v6", v6);
    six["addressType"] = json!("IPv6");
    let slices: Vec<EndpointSlice> =
        objects(vec![slice("emo", "web", "web-v4", &["10.244.0.5"]), six]);
    pods_and_slices(&services, &pods, &slices)
}

#[test]
fn an_ipv6_cluster_ip_follows_its_ipv4_one_only_while_its_ipv6_endpoints_need_no_more() {
    let v6: std::net::Ipv6Addr = "fd00:96::1".parse().unwrap();
    let emo = |inv: &Inventory| {
        let mut ids = NsIds::default();
        let sets = desired(inv, &[], |_, _| true, &mut ids);
        (sets.dest_ns6.get(&v6).copied(), ids.id("emo"))
    };
    // Its own pod's IPv6 address (and an empty IPv6 slice): where the IPv4 ClusterIP goes.
    for own in [&["fd00:244::5"][..], &[]] {
        let inv = dual_stack(own);
        assert_eq!(inv.twins6.get(&v6), Some(&ip("10.96.1.1")), "{inv:?}");
        let (got, id) = emo(&inv);
        assert_eq!(got, Some(id));
    }
    // A kube-system pod's or a node's IPv6 address, an address of no pod, or one not in
    // canonical form: the IPv6 ClusterIP is no peer's (the IPv4 one stays emo's).
    for hostile in ["fd00:244::7", "fd00:192::1", "::ffff:10.244.0.5"] {
        let inv = dual_stack(&["fd00:244::5", hostile]);
        assert_eq!(inv.twins6.get(&v6), None, "{hostile}: {inv:?}");
        assert_eq!(emo(&inv).0, None, "{hostile}");
        assert!(
            inv.by_namespace["emo"].contains(&ip("10.96.1.1")),
            "{hostile}"
        );
    }
    // Not IPv6 at all in an IPv6 slice: refused outright.
    let inv = dual_stack(&["10.244.0.5x"]);
    assert!(inv.refused.contains_key(&ip("10.96.1.1")), "{inv:?}");
    assert_eq!(inv.twins6.get(&v6), None);
}

#[test]
fn an_address_whose_pod_just_went_counts_for_its_namespace_for_a_while() {
    let t0 = std::time::Instant::now();
    let mut gone = Departed::default();
    let with_web = cluster(&["10.244.0.5"], &[]);
    let none6 = BTreeMap::new();
    assert!(!gone.update(&with_web.pods, &none6, t0));
    // web's Pod is deleted; its slice still lists it until the controller catches up.
    let mut pods = with_web.pods.clone();
    pods.remove(&ip("10.244.0.5"));
    assert!(gone.update(&pods, &none6, t0), "an address went");
    assert_eq!(
        gone.recent(),
        [(IpAddr::V4(ip("10.244.0.5")), "emo".to_owned())].into()
    );
    assert_eq!(gone.next_expiry(), Some(t0 + DEPARTED_GRACE));
    let services: Vec<Service> = objects(vec![service("emo", "web", "10.96.1.1")]);
    let slices: Vec<EndpointSlice> = objects(vec![slice("emo", "web", "web-1", &["10.244.0.5"])]);
    let judge = |recent: &BTreeMap<IpAddr, String>| {
        inventory(&services, &[], &[], &slices, &[], recent, &BTreeMap::new())
    };
    assert!(judge(&gone.recent()).by_namespace["emo"].contains(&ip("10.96.1.1")));
    // After the grace it is no pod: refused.
    assert!(!gone.update(&pods, &none6, t0 + DEPARTED_GRACE));
    assert!(gone.recent().is_empty() && gone.next_expiry().is_none());
    assert!(judge(&gone.recent()).refused.contains_key(&ip("10.96.1.1")));
    // An address that is a pod again (of any namespace) is judged by that pod at once.
    let mut again = Departed::default();
    again.update(&with_web.pods, &none6, t0);
    again.update(&pods, &none6, t0);
    let mut reused = pods.clone();
    reused.insert(ip("10.244.0.5"), ["default".to_owned()].into());
    again.update(&reused, &none6, t0);
    assert!(again.recent().is_empty());
}

#[test]
fn a_departed_dual_stack_pods_ipv6_address_counts_for_the_same_grace() {
    // web's Pod is deleted; both its slices still list it. The IPv6 ClusterIP keeps following
    // the IPv4 one for the grace, as the IPv4 one keeps counting (red before: the IPv6
    // address was no pod's at once, so IPv6 to the Service was refused for the grace).
    let t0 = std::time::Instant::now();
    let v6: std::net::Ipv6Addr = "fd00:96::1".parse().unwrap();
    let with_web = dual_stack(&["fd00:244::5"]);
    assert!(with_web.pods6.contains_key(&"fd00:244::5".parse().unwrap()));
    let mut gone = Departed::default();
    gone.update(&with_web.pods, &with_web.pods6, t0);
    let mut web = service("emo", "web", "10.96.1.1");
    web["spec"]["clusterIPs"] = json!(["10.96.1.1", "fd00:96::1"]);
    let services: Vec<Service> = objects(vec![web]);
    let mut six = slice("emo", "web", "web-v6", &["fd00:244::5"]);
    six["addressType"] = json!("IPv6");
    let slices: Vec<EndpointSlice> =
        objects(vec![slice("emo", "web", "web-v4", &["10.244.0.5"]), six]);
    let judge = |recent: &BTreeMap<IpAddr, String>| {
        inventory(&services, &[], &[], &slices, &[], recent, &BTreeMap::new())
    };
    let without = judge(&BTreeMap::new());
    assert!(
        gone.update(&without.pods, &without.pods6, t0),
        "addresses went"
    );
    let inv = judge(&gone.recent());
    assert_eq!(inv.twins6.get(&v6), Some(&ip("10.96.1.1")), "{inv:?}");
    assert!(inv.refused6.is_empty(), "{inv:?}");
    // After the grace: both refused, and the IPv6 ClusterIP is recorded (and logged) as such.
    gone.update(&without.pods, &without.pods6, t0 + DEPARTED_GRACE);
    let inv = judge(&gone.recent());
    assert!(inv.refused.contains_key(&ip("10.96.1.1")));
    assert_eq!(inv.refused6[&v6].service, "emo/web");
    assert_eq!(inv.twins6.get(&v6), None);
}

#[test]
fn an_ipv6_cluster_ip_refused_is_recorded_like_an_ipv4_one() {
    // Another namespace's pod in the IPv6 slice: the IPv4 ClusterIP stays emo's, the IPv6
    // one is refused, with the endpoint that refuses it.
    let inv = dual_stack(&["fd00:244::5", "fd00:244::7"]);
    let v6: std::net::Ipv6Addr = "fd00:96::1".parse().unwrap();
    assert!(inv.refused.is_empty());
    assert_eq!(inv.refused6[&v6].endpoint, "fd00:244::7");
    assert!(dual_stack(&["fd00:244::5"]).refused6.is_empty());
}

/// The sets for alice (asking for emo, granted emo only) at 100.77.0.2 and root (granted
/// everywhere) at 100.77.0.3, with the ids of emo and default.
fn emo_and_root(inv: &Inventory) -> (crate::policy::sets::Sets, NsId, NsId) {
    let peers = [
        peer("100.77.0.2", "alice", &["emo"]),
        peer("100.77.0.3", "root", &[]),
    ];
    let mut ids = NsIds::default();
    let emo_rbac = |who: &Subject, ns: &str| who.user == "root" || ns == "emo";
    let sets = desired(inv, &peers, emo_rbac, &mut ids);
    (sets, ids.id("emo"), ids.id("default"))
}

#[test]
fn an_ipv6_only_cluster_is_reached_by_namespace_as_ipv4_is() {
    // IPv6-only: pods with only IPv6 addresses, Services with only IPv6 ClusterIPs.
    let pods: Vec<Pod> = objects(vec![
        json!({"metadata": {"name": "web", "namespace": "emo"}, "status": {"phase": "Running",
            "podIP": "fd00:244::5", "podIPs": [{"ip": "fd00:244::5"}]}}),
        json!({"metadata": {"name": "db", "namespace": "default"}, "status": {"phase": "Running",
            "podIP": "fd00:244::6", "podIPs": [{"ip": "fd00:244::6"}]}}),
    ]);
    let svc = |ns: &str, name: &str, ip: &str| {
        let mut s = service(ns, name, ip);
        s["spec"]["clusterIPs"] = json!([ip]);
        s
    };
    let services: Vec<Service> = objects(vec![
        svc("emo", "web", "fd00:96::100"),
        svc("emo", "pivot", "fd00:96::101"),
        svc("kube-system", "kube-dns", "fd00:96::a"),
    ]);
    let v6_slice = |svc: &str, addrs: &[&str]| {
        let mut s = slice("emo", svc, svc, addrs);
        s["addressType"] = json!("IPv6");
        s
    };
    let nodes: Vec<Node> = objects(vec![
        json!({"metadata": {"name": "n1"}, "status": {"addresses": [
        {"type": "InternalIP", "address": "fd00:c0:2::1"}]}}),
    ]);
    // pivot leads to the node's address.
    let slices: Vec<EndpointSlice> = objects(vec![
        v6_slice("web", &["fd00:244::5"]),
        v6_slice("pivot", &["fd00:c0:2::1"]),
    ]);
    let inv = inventory(
        &services,
        &pods,
        &nodes,
        &slices,
        &[],
        &BTreeMap::new(),
        &BTreeMap::new(),
    );
    let a6 = |s: &str| s.parse::<std::net::Ipv6Addr>().unwrap();
    assert_eq!(inv.refused6[&a6("fd00:96::101")].endpoint, "fd00:c0:2::1");
    assert!(inv.refused.is_empty(), "no IPv4 address is named: {inv:?}");
    let (sets, emo, default) = emo_and_root(&inv);
    // The pod and the Service of emo go to emo, db to default; pivot to no peer.
    assert_eq!(sets.dest_ns6.get(&a6("fd00:244::5")), Some(&emo));
    assert_eq!(sets.dest_ns6.get(&a6("fd00:96::100")), Some(&emo));
    assert_eq!(sets.dest_ns6.get(&a6("fd00:244::6")), Some(&default));
    assert_eq!(sets.dest_ns6.get(&a6("fd00:96::101")), None);
    assert_eq!(sets.dns6, [a6("fd00:96::a")].into());
    // Nothing of it in the IPv4 sets (the keys stay out).
    assert!(sets.dest_ns.is_empty() && sets.dns.is_empty(), "{sets:?}");
    // alice reaches emo only; root (cluster-wide) both.
    assert!(sets.peer_ns.contains(&(ip("100.77.0.2"), emo)));
    assert!(!sets.peer_ns.contains(&(ip("100.77.0.2"), default)));
    assert!(sets.peer_ns.contains(&(ip("100.77.0.3"), default)));
}

#[test]
fn ipv6_only_addresses_sharing_low_bits_keep_their_own_namespaces() {
    // A multi-node IPv6-only cluster: each node's /64 hands out ::5, and a tenant's Service
    // may take a ClusterIP ending in ::5 too. Each address is judged on its own; only one
    // address two pods hold (a stale one already reused) is a span of both namespaces.
    let pod = |name: &str, ns: &str, ip: &str| {
        json!({"metadata": {"name": name, "namespace": ns}, "status": {"phase": "Running",
            "podIP": ip, "podIPs": [{"ip": ip}]}})
    };
    let pods: Vec<Pod> = objects(vec![
        pod("web", "emo", "fd00:10:244:1::5"),
        pod("db", "default", "fd00:10:244:2::5"),
        pod("old", "emo", "fd00:10:244:3::7"),
        pod("new", "default", "fd00:10:244:3::7"),
    ]);
    let mut decoy = service("default", "decoy", "fd00:10:96::5");
    decoy["spec"]["clusterIPs"] = json!(["fd00:10:96::5"]);
    let services: Vec<Service> = objects(vec![decoy]);
    let mut decoy_slice = slice("default", "decoy", "decoy-1", &["fd00:10:244:2::5"]);
    decoy_slice["addressType"] = json!("IPv6");
    let slices: Vec<EndpointSlice> = objects(vec![decoy_slice]);
    let inv = pods_and_slices(&services, &pods, &slices);
    let (sets, emo, default) = emo_and_root(&inv);
    let a6 = |s: &str| s.parse::<std::net::Ipv6Addr>().unwrap();
    let of = |a: &str| sets.dest_ns6.get(&a6(a)).copied();
    assert_eq!(of("fd00:10:244:1::5"), Some(emo), "{inv:?}");
    assert_eq!(of("fd00:10:244:2::5"), Some(default), "{inv:?}");
    assert_eq!(of("fd00:10:96::5"), Some(default), "{inv:?}");
    let reused = of("fd00:10:244:3::7").expect("the reused address is in the sets");
    assert!(reused != emo && reused != default, "{sets:?}");
    // alice reaches her own pod, not default's nor the reused address; root all of them.
    let alice = |id| sets.peer_ns.contains(&(ip("100.77.0.2"), id));
    let root = |id| sets.peer_ns.contains(&(ip("100.77.0.3"), id));
    assert!(alice(emo) && !alice(default) && !alice(reused), "{sets:?}");
    assert!(root(emo) && root(default) && root(reused), "{sets:?}");
    assert!(
        sets.dest_ns.is_empty(),
        "the keys stay out of the IPv4 sets: {sets:?}"
    );
}

#[test]
fn ipv6_keys_are_one_per_address_in_class_e_and_run_out_closed() {
    let a6 = |s: &str| s.parse::<std::net::Ipv6Addr>().unwrap();
    let mut keys = Keys6::default();
    let (a, b) = (a6("fd00:10:244:1::5"), a6("fd00:10:244:2::5"));
    let ka = keys.key(a).unwrap();
    assert!(is_key6(ka) && keys.key(b).is_some_and(|kb| kb != ka && is_key6(kb)));
    assert_eq!(
        keys.key(a),
        Some(ka),
        "an address keeps its key within a pass"
    );
    // Once every key is taken, a new address gets none (its object: no twin, no peer).
    let mut keys = Keys6 {
        limit: 1,
        ..Keys6::default()
    };
    assert_eq!(keys.key(a), Some(ka));
    assert_eq!(keys.key(b), None);
    assert_eq!(keys.key(a), Some(ka));
    let mut twins = BTreeMap::new();
    assert_eq!(
        twin_v6(&mut twins, &mut keys, &[IpAddr::V6(b)], &BTreeSet::new()),
        None
    );
    assert!(twins.is_empty());
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
        db[&Ok(IpAddr::V4(ip("10.244.0.6")))],
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
