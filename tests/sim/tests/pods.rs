//! From a pod: cluster DNS names, ClusterIPs (also a Service backed by the pod itself) and pod IPs.

mod common;

#[test]
fn a_pod_reaches_web_app_by_name_clusterip_and_pod_ip() {
    let c = common::cluster();
    let web = c.pod_netns("emojivoto", "web-app").unwrap();
    let echo = c.pod_netns("default", "echo").unwrap();

    // The full name and the short name through the pod's search list.
    for url in [
        "http://web-app.emojivoto.svc.cluster.local/",
        "http://web-app.emojivoto/",
    ] {
        let page = c.exec_ok(&echo, &["curl", "-sS", "-m", "5", url]).unwrap();
        assert!(page.contains("<title>Emoji Vote</title>"), "{url}: {page}");
    }
    // The web-app pod reaching its own Service (hairpin), by short name.
    let page = c
        .exec_ok(&web, &["curl", "-sS", "-m", "5", "http://web-app/"])
        .unwrap();
    assert!(page.contains("<title>Emoji Vote</title>"), "{page}");

    // A pod IP answers directly.
    let ip = c.pod_ip("emojivoto", "web-app").unwrap();
    assert!(ip.starts_with("10.244.0."), "pod IP {ip}");
    let page = c
        .exec_ok(&echo, &["curl", "-sS", "-m", "5", &format!("http://{ip}/")])
        .unwrap();
    assert!(page.contains("<title>Emoji Vote</title>"));

    // The API server through the `kubernetes` Service, with the pod's resolv.conf.
    let healthz = c
        .exec_ok(
            &echo,
            &[
                "curl",
                "-sS",
                "-m",
                "5",
                "-k",
                "https://kubernetes.default.svc/healthz",
            ],
        )
        .unwrap();
    assert_eq!(healthz.trim(), "ok");
    let resolv = std::fs::read_to_string(format!("/etc/netns/{echo}/resolv.conf")).unwrap();
    assert_eq!(
        resolv,
        "nameserver 10.96.0.10\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
    );
}

#[test]
fn cluster_dns_answers_srv_ptr_headless_nxdomain_and_tcp() {
    let c = common::cluster();
    let pod = c.pod_netns("default", "echo").unwrap();
    let dig = |args: &[&str]| {
        let mut cmd = vec!["dig", "@10.96.0.10", "+time=2", "+tries=2"];
        cmd.extend_from_slice(args);
        c.exec_ok(&pod, &cmd).unwrap()
    };
    let svc_ip = c
        .kubectl_admin(&[
            "get",
            "svc",
            "-n",
            "emojivoto",
            "web-app",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ])
        .unwrap();
    let a = dig(&["+short", "web-app.emojivoto.svc.cluster.local"]);
    assert_eq!(a.trim(), svc_ip);

    let srv = dig(&[
        "+short",
        "SRV",
        "_http._tcp.web-app.emojivoto.svc.cluster.local",
    ]);
    assert!(
        srv.contains(" 80 web-app.emojivoto.svc.cluster.local."),
        "SRV: {srv}"
    );
    let dns_srv = dig(&[
        "+short",
        "SRV",
        "_dns-tcp._tcp.kube-dns.kube-system.svc.cluster.local",
    ]);
    assert!(
        dns_srv.contains(" 53 kube-dns.kube-system.svc.cluster.local."),
        "SRV: {dns_srv}"
    );

    let ptr = dig(&["+short", "-x", "10.96.0.10"]);
    assert_eq!(ptr.trim(), "kube-dns.kube-system.svc.cluster.local.");

    let pod_ip = c.pod_ip("emojivoto", "web-app").unwrap();
    let headless = dig(&["+short", "web-app-headless.emojivoto.svc.cluster.local"]);
    assert_eq!(headless.trim(), pod_ip);

    let nx = dig(&["nope.emojivoto.svc.cluster.local"]);
    assert!(nx.contains("status: NXDOMAIN"), "{nx}");
    assert!(nx.contains("IN\tSOA"), "NXDOMAIN carries the SOA: {nx}");

    let tcp = dig(&["+tcp", "+short", "kubernetes.default.svc.cluster.local"]);
    assert_eq!(tcp.trim(), "10.96.0.1");

    // Other names go to the LAN resolver.
    let lan = dig(&["+short", "intranet.corp.example"]);
    assert_eq!(lan.trim(), "192.0.2.80");
}
