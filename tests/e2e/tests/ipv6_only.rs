//! An IPv6-only one-machine cluster (`kwg-sim up --ip-family ipv6`, issue 28): the gateway
//! comes up on it and publishes its ranges in `ipv6.json` (an older client refuses the
//! `info.json` alone in one sentence), then the walkthrough of `scripts/demo.sh` on it: join,
//! `curl web-app.emojivoto` and `curl web-app:80` (AAAA only), reach by RBAC, leave. One
//! cluster, one test.

use kwg_contract::GatewayInfo;
use kwg_e2e::laptop::{Laptop, text};
use kwg_e2e::{gateway_info_key, install_gateway, kube_dns_pod_ip, kubectl};
use kwg_sim::testing::Cluster;
use std::sync::Arc;

#[test]
fn an_ipv6_only_cluster_runs_the_gateway_and_the_walkthrough() {
    let c = Cluster::builder()
        .ip_family("ipv6")
        .up()
        .expect("kwg-sim up");
    // The cluster as Kubernetes makes an IPv6-only one.
    let cidrs = kubectl(
        &c,
        &[
            "get",
            "servicecidr",
            "kubernetes",
            "-o",
            "jsonpath={.spec.cidrs}",
        ],
    );
    assert_eq!(cidrs, r#"["fd00:10:96::/112"]"#);
    let web = kubectl(
        &c,
        &[
            "-n",
            "emojivoto",
            "get",
            "svc",
            "web-app",
            "-o",
            "jsonpath={.spec.ipFamilyPolicy} {.spec.ipFamilies} {.spec.clusterIPs}",
        ],
    );
    assert!(
        web.starts_with(r#"SingleStack ["IPv6"] ["fd00:10:96::"#),
        "{web}"
    );
    let node = kubectl(
        &c,
        &[
            "get",
            "node",
            "node-1",
            "-o",
            "jsonpath={.spec.podCIDRs} {.status.addresses[0].address}",
        ],
    );
    assert_eq!(node, r#"["fd00:10:244::/64"] fd00:c0:2::1"#);
    let pod_ips = kubectl(
        &c,
        &[
            "-n",
            "emojivoto",
            "get",
            "pods",
            "-l",
            "app=web-app",
            "-o",
            "jsonpath={.items[0].status.podIPs}",
        ],
    );
    assert!(
        pod_ips.starts_with(r#"[{"ip":"fd00:10:244::"#) && !pod_ips.contains('.'),
        "only an IPv6 pod IP: {pod_ips}"
    );

    // The gateway: ready (the kubelet probes its IPv6 address), info.json keeps the IPv4
    // tunnel with no IPv4 range, ipv6.json carries the ranges and the DNS address.
    let info = install_gateway(&c).expect("the gateway and its info.json with ipv6.json");
    let info_json = gateway_info_key(&c, "info.json").expect("info.json");
    let info6 = info.ipv6.clone().expect("ipv6.json");
    assert_eq!(info6.service_cidrs, ["fd00:10:96::/112".parse().unwrap()]);
    assert_eq!(info6.pod_cidrs, ["fd00:10:244::/64".parse().unwrap()]);
    assert_eq!(info6.dns_ip, Some("fd00:10:96::10".parse().unwrap()));
    assert!(info.ipv6_only() && info.dns_ip.is_none(), "{info_json}");
    assert_eq!(info.endpoints[0].to_string(), "[fd00:c0:2::1]:31820");
    // A client older than ipv6.json reads info.json alone: one sentence, nothing routed.
    let old = GatewayInfo::from_json(info_json.as_bytes()).unwrap_err();
    assert_eq!(
        old.to_string(),
        "gateway info is invalid: no service CIDR: start the gateway with --service-cidr"
    );

    // The walkthrough: join emojivoto as the developer, names by AAAA through the split DNS.
    let c = Arc::new(c);
    let netns = c.add_laptop("v6").expect("laptop");
    let l = Laptop {
        sim: c.clone(),
        name: "v6".into(),
        state: c.names().run_dir().join("kwg-state-v6"),
        netns,
    };
    l.join(&["--namespace", "emojivoto"]);
    let status = l.status_json();
    let subnets: Vec<&str> = status["subnets"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["subnet"].as_str())
        .collect();
    for net in ["fd00:10:96::/112", "fd00:10:244::/64"] {
        assert!(subnets.contains(&net), "{net} not routed: {status}");
    }
    assert!(
        !subnets.iter().any(|s| s.starts_with("10.")),
        "no IPv4 cluster range: {status}"
    );
    for url in ["http://web-app.emojivoto/", "http://web-app:80/"] {
        let page = l.curl(url);
        assert!(
            text(&page.stdout).contains("Emoji Vote"),
            "curl {url}: {}",
            text(&page.stderr)
        );
    }
    let aaaa = text(
        &l.run(&[
            "dig",
            "+short",
            "+time=3",
            "AAAA",
            "web-app.emojivoto.svc.cluster.local",
        ])
        .stdout,
    );
    assert!(aaaa.trim().starts_with("fd00:10:96::"), "{aaaa}");
    // An A query: NODATA (NOERROR, no address), as CoreDNS answers on an IPv6-only cluster.
    assert_eq!(
        l.dig_status("web-app.emojivoto.svc.cluster.local"),
        "NOERROR"
    );
    assert_eq!(l.dig("web-app.emojivoto.svc.cluster.local"), "");
    // Reach by RBAC on IPv6 alone: the developer may not see kube-system, so cluster DNS's pod
    // is refused at once (a reset), while emojivoto's pod answers.
    let dns_pod = kube_dns_pod_ip(&c, 0).expect("kube-dns pod");
    let refused = l.curl(&format!("http://[{dns_pod}]:53/"));
    assert_eq!(
        refused.status.code(),
        Some(7),
        "IPv6 to kube-system: {}",
        text(&refused.stderr)
    );
    let web_pod = pod_ips.split('"').nth(3).unwrap();
    let page = l.curl(&format!("http://[{web_pod}]/"));
    assert!(
        text(&page.stdout).contains("Emoji Vote"),
        "the pod: {}",
        text(&page.stderr)
    );

    let left = l.kwg(&["leave"]);
    assert!(left.status.success(), "{}", text(&left.stderr));
    let after = l.curl("http://web-app.emojivoto/");
    assert!(!after.status.success(), "reached after leave");
}
