//! Several one-machine clusters at once: `kwg-sim up --lan/--service-cidr/--pod-cidr/--domain`
//! and one laptop on two clusters' LANs (`kwg-sim laptop add NAME --cluster a --cluster b`).

mod common;

use kwg_sim::testing::Cluster;

/// The first address `dig +short` prints for `name` in `netns` (its resolv.conf's nameserver).
fn resolve(c: &Cluster, netns: &str, name: &str) -> String {
    let out = c
        .exec_ok(
            netns,
            &["dig", "+short", "+search", "+time=2", "+tries=1", name],
        )
        .unwrap();
    out.lines().next().unwrap_or_default().to_string()
}

/// A Service's ClusterIP, read with kubectl.
fn cluster_ip(c: &Cluster, ns: &str, svc: &str) -> String {
    let path = "jsonpath={.spec.clusterIP}";
    c.kubectl_admin(&["get", "svc", "-n", ns, svc, "-o", path])
        .unwrap()
}

#[test]
fn two_clusters_with_the_same_cidrs_on_one_laptop() {
    // Same Service and pod CIDRs (the installer defaults), another LAN and domain for `b`.
    let b = std::thread::spawn(|| {
        Cluster::builder()
            .lan("198.51.100.0/24")
            .service_cidr("10.96.0.0/12")
            .pod_cidr("10.244.0.0/16")
            .domain("corp.internal")
            .up()
            .expect("kwg-sim up --lan 198.51.100.0/24 --domain corp.internal")
    });
    let a = common::cluster();
    let b = b.join().unwrap();
    assert_eq!(b.net().api_server(), "https://198.51.100.1:6443");

    let name = kwg_sim::testing::unique("two");
    let (laptop, addrs) = a.add_laptop_on(&name, &[&b]).unwrap();
    assert_eq!(
        addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        ["192.0.2.11", "198.51.100.11"]
    );

    // Each API server answers the laptop, each with its own node on its own LAN.
    for (c, node_ip) in [(&a, "192.0.2.1"), (&b, "198.51.100.1")] {
        let kc = c.admin_kubeconfig();
        let kubectl = |args: &[&str]| {
            let mut argv = vec!["kubectl", "--kubeconfig", kc.to_str().unwrap()];
            argv.extend_from_slice(args);
            c.exec_ok(&laptop, &argv).unwrap()
        };
        let ns = kubectl(&["get", "ns"]);
        assert!(ns.contains("emojivoto"), "{}: {ns}", c.prefix());
        let node = kubectl(&[
            "get",
            "node",
            "-o",
            "jsonpath={.items[0].status.addresses[0].address} {.items[0].spec.podCIDR}",
        ]);
        assert_eq!(node, format!("{node_ip} 10.244.0.0/24"));
        assert_eq!(cluster_ip(c, "kube-system", "kube-dns"), "10.96.0.10");
    }

    // A pod in each cluster resolves its own domain's names through its cluster DNS, and the
    // search list carries that domain.
    for (c, domain, other) in [
        (&a, "cluster.local", "corp.internal"),
        (&b, "corp.internal", "cluster.local"),
    ] {
        let pod = c.pod_netns("emojivoto", "web-app").unwrap();
        let resolv = std::fs::read_to_string(format!("/etc/netns/{pod}/resolv.conf")).unwrap();
        assert!(
            resolv.contains(&format!(
                "search emojivoto.svc.{domain} svc.{domain} {domain}"
            )),
            "{resolv}"
        );
        let web = cluster_ip(c, "emojivoto", "web-app");
        assert_eq!(
            resolve(c, &pod, &format!("kubernetes.default.svc.{domain}")),
            "10.96.0.1"
        );
        assert_eq!(
            resolve(c, &pod, &format!("web-app.emojivoto.svc.{domain}")),
            web
        );
        assert_eq!(resolve(c, &pod, "web-app"), web, "short name, {domain}");
        assert_eq!(
            resolve(c, &pod, &format!("kubernetes.default.svc.{other}")),
            "",
            "{} must not answer for {other}",
            c.prefix()
        );
        let page = c
            .exec_ok(
                &pod,
                &[
                    "curl",
                    "-s",
                    "-m",
                    "3",
                    &format!("http://web-app.emojivoto.svc.{domain}/"),
                ],
            )
            .unwrap();
        assert!(page.contains("<title>Emoji Vote</title>"), "{page}");
    }

    // Each LAN's resolver answers the laptop on its own LAN.
    let lan_b = a
        .exec_ok(
            &laptop,
            &[
                "dig",
                "+short",
                "+time=2",
                "@198.51.100.53",
                "node.corp.example",
            ],
        )
        .unwrap();
    assert_eq!(lan_b.trim(), "198.51.100.1");

    // The laptop goes with `a`; `b` forgets it.
    drop(a);
    assert!(
        !kwg_sim::sh::netns_list().unwrap().contains(&laptop),
        "{laptop} outlived its cluster"
    );
    let (_, again) = b.add_laptop_on(&name, &[]).unwrap();
    assert_eq!(again[0].to_string(), "198.51.100.11");
}
