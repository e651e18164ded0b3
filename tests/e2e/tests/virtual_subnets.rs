//! Virtual subnets (issue 27): two one-machine clusters with the same Service and pod CIDRs and
//! `cluster.local` (LANs apart), both gateways with the same tunnel CIDR, one laptop on both
//! LANs, a kubeconfig per cluster, joined as a user does (no interface or forwarder flags). The
//! first join routes the CIDRs as they are (kwg0); the second, whose CIDRs now overlap the
//! first session's routes and addresses, maps them onto free ranges of `--map-pool` (kwg1), the
//! tunnel CIDR included (its tunnel address on kwg1 is the mapped one), and its own web-app
//! answers through the mapping: by ClusterIP, by pod IP, by name (its alias, and its
//! forwarder's A records rewritten), ping (ICMP) included, while the first cluster keeps
//! answering at the same addresses and short names. `kwg status` shows the mappings; leaving
//! the second leaves the first as it was.

use std::net::Ipv4Addr;
use std::sync::Arc;

use kwg_e2e::laptop::{Laptop, text};
use kwg_sim::testing::Cluster;

/// An IPv4 prefix as `kwg status -o json` prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Net {
    addr: u32,
    len: u32,
}

impl Net {
    fn parse(s: &str) -> Net {
        let (a, l) = s
            .split_once('/')
            .unwrap_or_else(|| panic!("{s} is no prefix"));
        let addr = u32::from(a.parse::<Ipv4Addr>().unwrap());
        Net {
            addr,
            len: l.parse().unwrap(),
        }
    }
    fn mask(&self) -> u32 {
        u32::MAX.checked_shl(32 - self.len).unwrap_or(0)
    }
    fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == self.addr
    }
    fn within(&self, outer: Net) -> bool {
        self.len >= outer.len && outer.contains(Ipv4Addr::from(self.addr))
    }
}

impl std::fmt::Display for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.addr), self.len)
    }
}

/// Where the mapping `cluster` → `mapped` puts `ip`.
fn mapped(ip: &str, cluster: Net, mapped: Net) -> String {
    let ip: Ipv4Addr = ip.parse().unwrap();
    assert!(cluster.contains(ip), "{ip} outside {cluster}");
    Ipv4Addr::from(mapped.addr | (u32::from(ip) & !cluster.mask())).to_string()
}

fn title(l: &Laptop, url: &str) -> String {
    let out = l.curl(url);
    let page = text(&out.stdout);
    kwg_e2e::page_title(&page)
        .map(str::to_string)
        .unwrap_or_else(|| format!("no page from {url}: {}", text(&out.stderr)))
}

/// The mappings `kwg status -o json` lists: (cluster range, mapped range).
fn mappings(status: &serde_json::Value) -> Vec<(Net, Net)> {
    status["subnets"]
        .as_array()
        .expect("subnets[]")
        .iter()
        .filter(|s| s["cluster"].is_string())
        .map(|s| {
            let n = |k: &str| Net::parse(s[k].as_str().unwrap());
            (n("cluster"), n("subnet"))
        })
        .collect()
}

#[test]
fn a_second_cluster_with_the_same_cidrs_is_reached_through_its_mapping() {
    let a = Cluster::up().expect("kwg-sim up (alpha)");
    // The same Service and pod CIDRs and domain as alpha's (the defaults), another LAN.
    let b = Cluster::builder()
        .lan("198.51.100.0/24")
        .up()
        .expect("kwg-sim up (beta)");
    // Both gateways with the same tunnel CIDR, as two installs with the same KWG_TUNNEL_CIDR
    // (or the 1 in 1024 chance of the same random /20): the same gateway address, and most
    // likely the same tunnel IP for the laptop.
    let ia = kwg_e2e::install_gateway(&a).expect("alpha's gateway");
    let ib = kwg_e2e::install_gateway(&b).expect("beta's gateway");
    assert_eq!(
        (ia.tunnel_cidr, ia.gateway_ip),
        (ib.tunnel_cidr, ib.gateway_ip)
    );
    kwg_e2e::title_web_app(&a, "Cluster Alpha").unwrap();
    kwg_e2e::title_web_app(&b, "Cluster Beta").unwrap();
    let (netns, _) = a
        .add_laptop_on("maps", &[&b])
        .expect("a laptop on both LANs");
    let (ka, kb) = (
        kwg_e2e::kubeconfig_as(&a, "alpha", "maps-alpha"),
        kwg_e2e::kubeconfig_as(&b, "beta", "maps-beta"),
    );
    let a = Arc::new(a);
    let l = Laptop {
        state: a.names().run_dir().join("kwg-state-maps"),
        sim: a.clone(),
        name: "maps".into(),
        netns,
    };

    // As a user does: no --interface, no --dns-listen; the second session takes kwg1 and the
    // next forwarder address by itself. Before mapping, it was refused: "route 10.96.0.0/12
    // (service CIDR) conflicts", then "route 100.77.0.1/32 (gateway tunnel address)".
    l.join(&["--kubeconfig", &ka, "--namespace", "emojivoto"]);
    l.join(&["--kubeconfig", &kb, "--namespace", "emojivoto"]);
    let status_of = |context: &str| {
        let out = l.kwg(&["status", "--context", context, "-o", "json"]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .unwrap_or_else(|e| panic!("kwg status: {e}: {}", text(&out.stderr)))
    };
    let (sa, sb) = (status_of("alpha"), status_of("beta"));
    assert_eq!(
        (sa["interface"].as_str(), sb["interface"].as_str()),
        (Some("kwg0"), Some("kwg1")),
        "{sb}"
    );

    // Status names each mapping, from the default pool 10.224.0.0/11: the Service, pod and
    // tunnel CIDRs.
    let maps = mappings(&sb);
    let pool = Net::parse("10.224.0.0/11");
    let find = |what: &str, cidr: &str| {
        maps.iter()
            .find(|(c, _)| c.contains(cidr.parse().unwrap()))
            .copied()
            .unwrap_or_else(|| panic!("the {what} is mapped: {sb}"))
    };
    let service = find("Service CIDR", "10.96.0.0");
    let pod = find("pod CIDR", "10.244.0.0");
    let tunnel = find("tunnel CIDR", "100.77.0.0");
    assert_eq!(service.0.to_string(), "10.96.0.0/12");
    assert_eq!(tunnel.0.to_string(), ib.tunnel_cidr.to_string());
    for (_, m) in [service, pod, tunnel] {
        assert!(m.within(pool), "{m} from the pool: {sb}");
    }
    let shown = text(&l.kwg(&["status", "--context", "beta"]).stdout);
    let line = format!("  - 10.96.0.0/12 (service CIDR) as {}", service.1);
    let tline = format!("  - {} (tunnel CIDR) as {}", tunnel.0, tunnel.1);
    assert!(
        shown.contains("Mapped: (3 cluster ranges")
            && shown.contains(&line)
            && shown.contains(&tline),
        "{shown}"
    );
    let routes = l.routes();
    for m in [service.1, tunnel.1] {
        assert!(routes.contains(&format!("{m} dev kwg1")), "{routes}");
    }
    assert!(routes.contains("10.96.0.0/12 dev kwg0"), "{routes}");
    assert!(
        routes.contains(&format!("\n{} dev kwg0", ia.gateway_ip)),
        "{routes}"
    );
    // The tunnel address each gateway assigned: alpha's on kwg0 as it is, beta's on kwg1 as
    // mapped (on the wire it is the assigned one).
    let (ta, tb) = (
        sa["tunnelIp"].as_str().expect("alpha's tunnel IP"),
        sb["tunnelIp"].as_str().expect("beta's tunnel IP"),
    );
    let addrs = |dev: &str| {
        text(
            &l.run(&["ip", "-4", "-o", "addr", "show", "dev", dev])
                .stdout,
        )
    };
    assert!(
        addrs("kwg0").contains(&format!("inet {ta}/32")),
        "{}",
        addrs("kwg0")
    );
    let tb_mapped = mapped(tb, tunnel.0, tunnel.1);
    assert!(
        addrs("kwg1").contains(&format!("inet {tb_mapped}/32")),
        "{}",
        addrs("kwg1")
    );
    // Alpha's session knows nothing of it.
    assert!(mappings(&sa).is_empty(), "{sa}");
    // Both sessions healthy: beta's daemon reached its gateway's admin address
    // (/peers) through the mapped tunnel CIDR.
    for s in [&sa, &sb] {
        assert_eq!(s["state"], "connected", "{s}");
    }

    // By ClusterIP and pod IP: alpha's as they are, beta's through the mapping (the two
    // clusters give their web-apps the same addresses).
    let (svc_a, svc_b) = (
        kwg_e2e::cluster_ip(&a, "emojivoto", "web-app").unwrap(),
        kwg_e2e::cluster_ip(&b, "emojivoto", "web-app").unwrap(),
    );
    let (pod_a, pod_b) = (
        a.pod_ip("emojivoto", "web-app").unwrap(),
        b.pod_ip("emojivoto", "web-app").unwrap(),
    );
    assert_eq!(title(&l, &format!("http://{svc_a}/")), "Cluster Alpha");
    assert_eq!(title(&l, &format!("http://{pod_a}/")), "Cluster Alpha");
    let svc_b = mapped(&svc_b, service.0, service.1);
    let pod_b = mapped(&pod_b, pod.0, pod.1);
    assert_eq!(title(&l, &format!("http://{svc_b}/")), "Cluster Beta");
    assert_eq!(title(&l, &format!("http://{pod_b}/")), "Cluster Beta");
    let ping = l.run(&["ping", "-c", "1", "-W", "5", &pod_b]);
    assert!(
        ping.status.success(),
        "ping {pod_b}: {}",
        text(&ping.stdout)
    );

    // By name: each cluster's web-app by its alias (beta's answered at the mapped address),
    // short names the primary's (alpha); each forwarder answers the cluster domain from its
    // own cluster.
    assert_eq!(
        title(&l, "http://web-app.emojivoto.svc.alpha/"),
        "Cluster Alpha"
    );
    assert_eq!(
        title(&l, "http://web-app.emojivoto.svc.beta/"),
        "Cluster Beta"
    );
    assert_eq!(title(&l, "http://web-app/"), "Cluster Alpha");
    // Beta's forwarder answers its alias with the mapped address (A record rewritten), and
    // passes the cluster domain on to the primary's: never answered by two clusters.
    let dig = |name: &str| {
        let answer = l.run(&["dig", "+short", "@127.77.0.54", name]);
        text(&answer.stdout).trim().to_string()
    };
    assert_eq!(dig("web-app.emojivoto.svc.beta"), svc_b);
    assert_eq!(dig("web-app.emojivoto.svc.cluster.local"), svc_a);

    // Leaving beta takes its mapped routes and address; alpha keeps answering.
    let left = l.kwg(&["leave", "--context", "beta"]);
    assert!(left.status.success(), "{}", text(&left.stderr));
    let routes = l.routes();
    assert!(
        !routes.contains("kwg1")
            && !routes.contains(&service.1.to_string())
            && !routes.contains(&tunnel.1.to_string()),
        "{routes}"
    );
    assert_eq!(title(&l, &format!("http://{svc_a}/")), "Cluster Alpha");
    assert_eq!(title(&l, "http://web-app/"), "Cluster Alpha");
    let left = l.kwg(&["leave", "--all"]);
    assert!(left.status.success(), "{}", text(&left.stderr));
}
