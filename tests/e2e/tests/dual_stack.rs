//! A dual-stack one-machine cluster (`kwg-sim up --ip-family dual`, issue 28): the cluster as
//! kubectl, pods and the node see it in both families, then kwg on it. One cluster, one test.

use kwg_e2e::laptop::{Laptop, text};
use kwg_e2e::{Implementation, WgPeer, install_gateway, register_peer, wait_tunnel_ip};
use kwg_sim::testing::Cluster;
use std::sync::Arc;

fn kubectl(c: &Cluster, args: &[&str]) -> String {
    c.kubectl_admin(args)
        .unwrap_or_else(|e| panic!("kubectl {args:?}: {e}"))
}

/// What kubectl says, stdout and stderr, whatever the exit code.
fn kubectl_says(c: &Cluster, args: &[&str]) -> String {
    let out = c.kubectl_output(&c.admin_kubeconfig(), args).unwrap();
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}

#[test]
fn a_dual_stack_cluster_serves_both_families_and_kwg_joins_it() {
    let c = Cluster::builder()
        .ip_family("dual")
        .up()
        .expect("kwg-sim up");

    // The API server allocates by ipFamilyPolicy, from both ServiceCIDRs.
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
    assert_eq!(cidrs, r#"["10.96.0.0/12","fd00:10:96::/112"]"#);
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
    let (policy, rest) = web.split_once(' ').unwrap();
    assert_eq!(policy, "PreferDualStack");
    assert!(rest.starts_with(r#"["IPv4","IPv6"] ["10.96."#), "{web}");
    assert!(rest.contains(r#"","fd00:10:96::"#), "{web}");
    let ip6 = rest.rsplit('"').nth(1).unwrap().to_string();
    // A Service without a policy stays single-stack in the primary family; asking for IPv6
    // alone gets an IPv6 ClusterIP.
    kubectl(
        &c,
        &[
            "-n",
            "default",
            "create",
            "service",
            "clusterip",
            "plain",
            "--tcp=80:80",
        ],
    );
    let plain = kubectl(
        &c,
        &[
            "-n",
            "default",
            "get",
            "svc",
            "plain",
            "-o",
            "jsonpath={.spec.ipFamilyPolicy} {.spec.clusterIPs}",
        ],
    );
    assert!(plain.starts_with(r#"SingleStack ["10.96."#), "{plain}");
    let only6 = r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"only6","namespace":"default"},
        "spec":{"ipFamilies":["IPv6"],"selector":{"app":"echo"},"ports":[{"port":80,"targetPort":8080}]}}"#;
    let file = c.names().run_dir().join("only6.json");
    std::fs::write(&file, only6).unwrap();
    kubectl(&c, &["create", "-f", file.to_str().unwrap()]);
    let got = kubectl(
        &c,
        &[
            "-n",
            "default",
            "get",
            "svc",
            "only6",
            "-o",
            "jsonpath={.spec.ipFamilies} {.spec.clusterIP}",
        ],
    );
    assert!(got.starts_with(r#"["IPv6"] fd00:10:96::"#), "{got}");
    // What the real API server says to a request the cluster cannot serve.
    let three = r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"bad","namespace":"default"},
        "spec":{"ipFamilyPolicy":"SingleStack","ipFamilies":["IPv4","IPv6"],"ports":[{"port":80}]}}"#;
    std::fs::write(&file, three).unwrap();
    let said = kubectl_says(&c, &["create", "-f", file.to_str().unwrap()]);
    assert!(
        said.contains(r#"The Service "bad" is invalid: spec.ipFamilyPolicy: Invalid value: "SingleStack": must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are specified"#),
        "{said}"
    );

    // The node publishes both podCIDRs; pods get an address of each.
    let node = kubectl(
        &c,
        &["get", "node", "node-1", "-o", "jsonpath={.spec.podCIDRs}"],
    );
    assert_eq!(node, r#"["10.244.0.0/24","fd00:10:244::/64"]"#);
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
            "jsonpath={.items[0].status.podIPs[*].ip}",
        ],
    );
    let (pod4, pod6) = pod_ips.split_once(' ').expect("two pod IPs");
    assert!(
        pod4.starts_with("10.244.0.") && pod6.starts_with("fd00:10:244::"),
        "{pod_ips}"
    );

    // From a pod: kube-proxy's rules of both families, and the cluster DNS's AAAA.
    let client = c.pod_netns("default", "echo").expect("an echo pod");
    let in_pod = |argv: &[&str]| text(&c.exec(&client, argv).expect("exec in the pod").stdout);
    let url6 = format!("http://[{ip6}]/");
    assert!(in_pod(&["curl", "-sS", "-6", "--max-time", "3", &url6]).contains("Emoji Vote"));
    assert!(
        in_pod(&[
            "curl",
            "-sS",
            "-6",
            "--max-time",
            "3",
            &format!("http://[{pod6}]/")
        ])
        .contains("Emoji Vote")
    );
    assert!(
        in_pod(&[
            "curl",
            "-sS",
            "-4",
            "--max-time",
            "3",
            "http://web-app.emojivoto/"
        ])
        .contains("Emoji Vote")
    );
    let aaaa = in_pod(&[
        "dig",
        "+short",
        "AAAA",
        "web-app.emojivoto.svc.cluster.local",
    ]);
    assert_eq!(aaaa.trim(), ip6);

    // kwg on a dual-stack cluster: the gateway announces in info.json the IPv4 ranges its
    // tunnel carries (not the IPv6 ones, which laptops would route into the tunnel for
    // nothing), and a laptop joins and reaches web-app over IPv4.
    let info = install_gateway(&c).expect("gateway installed");
    assert_eq!(info.service_cidrs, ["10.96.0.0/12".parse().unwrap()]);
    assert_eq!(info.pod_cidrs, ["10.244.0.0/24".parse().unwrap()]);
    // IPv6 through the gateway, for a WireGuard peer set up by hand from ipv6.json: its IPv6
    // tunnel address is its IPv4 one under the /96, and reach by RBAC holds in both families
    // (the peer asked for emojivoto only: default's Services are refused).
    let ipv6_json = kubectl(
        &c,
        &[
            "-n",
            "kwg-system",
            "get",
            "configmap",
            "kwg-gateway-info",
            "-o",
            "jsonpath={.data.ipv6\\.json}",
        ],
    );
    let info6 = kwg_contract::GatewayInfo6::from_json(ipv6_json.as_bytes()).expect("ipv6.json");
    assert_eq!(info6.tunnel_cidr.to_string(), "fd6b:7767::/96");
    assert_eq!(info6.service_cidrs, ["fd00:10:96::/112".parse().unwrap()]);
    let mut wg = WgPeer::start(&c.netns("laptop"), Implementation::KwgWg).expect("kwg-wg");
    register_peer(
        &c,
        "byhand",
        &wg.public_key(),
        std::time::Duration::from_secs(600),
    )
    .unwrap();
    let ip = wait_tunnel_ip(&c, "byhand", std::time::Duration::from_secs(10)).unwrap();
    let tun6 = info6.tunnel_ip6(ip);
    let routes = ["10.96.0.0/12", "fd00:10:96::/112", "fd00:10:244::/64"];
    wg.connect(&info, ip, &routes).unwrap();
    let addr6 = format!("{tun6}/128");
    c.exec_ok(
        &wg.netns,
        &["ip", "addr", "add", &addr6, "dev", &wg.ifname, "nodad"],
    )
    .unwrap();
    let web6 = wg.http_get(&url6, 3).unwrap().unwrap_or_default();
    assert!(
        web6.contains("Emoji Vote"),
        "curl -6 through the tunnel: {web6:?}"
    );
    let echo6 = kubectl(
        &c,
        &[
            "-n",
            "default",
            "get",
            "svc",
            "echo",
            "-o",
            "jsonpath={.spec.clusterIPs[1]}",
        ],
    );
    let refused = wg
        .exec(&[
            "curl",
            "-sS",
            "-6",
            "--max-time",
            "3",
            &format!("http://[{echo6}]/"),
        ])
        .unwrap();
    assert!(
        !refused.status.success(),
        "IPv6 to a namespace the peer did not ask for passed"
    );
    let said = text(&refused.stderr);
    assert!(
        said.contains("Couldn't connect to server") || said.contains("reset"),
        "refused at once: {said}"
    );

    let c = Arc::new(c);
    let netns = c.add_laptop("dual").expect("laptop");
    let l = Laptop {
        sim: c.clone(),
        name: "dual".into(),
        state: c.names().run_dir().join("kwg-state-dual"),
        netns,
    };
    // An IPv6 --also-proxy is refused in one sentence: the laptop's tunnel carries IPv4 only.
    let refused = l.kwg(&["join", "--name", "dual", "--also-proxy", "fd00:99::/64"]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stderr));
    assert!(
        text(&refused.stderr).contains("--also-proxy fd00:99::/64 is an IPv6 range, and kwg join carries only IPv4 through the tunnel so far"),
        "{}",
        text(&refused.stderr)
    );
    l.join(&["--namespace", "emojivoto"]);
    let page = l.curl("http://web-app.emojivoto/");
    assert!(
        text(&page.stdout).contains("Emoji Vote"),
        "{}",
        text(&page.stderr)
    );
    l.kwg(&["leave"]);
}
