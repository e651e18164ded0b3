//! Virtual subnets (issue 27): two one-machine clusters with the same Service and pod CIDRs and
//! `cluster.local` (LANs apart), one laptop on both LANs. The first join routes the CIDRs as
//! they are (kwg0); the second, whose CIDRs now overlap the first session's routes, maps them
//! onto free ranges of `--map-pool` (kwg1), and its own web-app answers through the mapping: by
//! ClusterIP, by pod IP, by name through its forwarder (A records rewritten), ping (ICMP)
//! included, while the first cluster keeps answering at the same addresses. `kwg status` shows
//! the mappings; leaving the second leaves the first as it was.

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

/// `curl` of `url` with `nameserver` as the only resolver (a private mount namespace), as an
/// application resolving through that session's forwarder.
fn title_via(l: &Laptop, nameserver: &str, url: &str) -> String {
    let conf = l.state.with_extension("resolv.conf");
    std::fs::write(&conf, format!("nameserver {nameserver}\n")).unwrap();
    let script = format!(
        "mount --bind {} /etc/resolv.conf && curl -sS --max-time 3 {url}",
        conf.display()
    );
    let out = l.run(&["unshare", "-m", "sh", "-c", &script]);
    let page = text(&out.stdout);
    kwg_e2e::page_title(&page)
        .map(str::to_string)
        .unwrap_or_else(|| format!("no page from {url}: {}", text(&out.stderr)))
}

#[test]
fn a_second_cluster_with_the_same_cidrs_is_reached_through_its_mapping() {
    let a = Cluster::up().expect("kwg-sim up (alpha)");
    // The same Service and pod CIDRs and domain as alpha's (the defaults), another LAN.
    let b = Cluster::builder()
        .lan("198.51.100.0/24")
        .up()
        .expect("kwg-sim up (beta)");
    kwg_e2e::install_gateway(&a).expect("alpha's gateway");
    kwg_e2e::install_gateway_from(&b, "tests/e2e/manifests-second", 1).expect("beta's gateway");
    kwg_e2e::title_web_app(&a, "Cluster Alpha").unwrap();
    kwg_e2e::title_web_app(&b, "Cluster Beta").unwrap();
    let (netns, _) = a
        .add_laptop_on("maps", &[&b])
        .expect("a laptop on both LANs");
    let (a, b) = (Arc::new(a), Arc::new(b));
    let laptop = |sim: &Arc<Cluster>, which: &str| Laptop {
        state: sim
            .names()
            .run_dir()
            .join(format!("kwg-state-maps-{which}")),
        sim: sim.clone(),
        name: "maps".into(),
        netns: netns.clone(),
    };
    let (la, lb) = (laptop(&a, "alpha"), laptop(&b, "beta"));

    la.join(&["--namespace", "emojivoto"]);
    // Before mapping, this join was refused: "route 10.96.0.0/12 (service CIDR) conflicts".
    lb.join(&[
        "--namespace",
        "emojivoto",
        "--interface",
        "kwg1",
        "--dns-listen",
        "127.77.0.54:53",
    ]);

    // Status names each mapping, from the default pool 10.224.0.0/11.
    let status = lb.status_json();
    let maps: Vec<(Net, Net)> = status["subnets"]
        .as_array()
        .expect("subnets[]")
        .iter()
        .filter(|s| s["cluster"].is_string())
        .map(|s| {
            let n = |k: &str| Net::parse(s[k].as_str().unwrap());
            (n("cluster"), n("subnet"))
        })
        .collect();
    let pool = Net::parse("10.224.0.0/11");
    let service = maps
        .iter()
        .find(|(c, _)| c.to_string() == "10.96.0.0/12")
        .copied()
        .unwrap_or_else(|| panic!("the Service CIDR is mapped: {status}"));
    let pod = maps
        .iter()
        .find(|(c, _)| c.contains(Ipv4Addr::new(10, 244, 0, 0)))
        .copied()
        .unwrap_or_else(|| panic!("the pod CIDR is mapped: {status}"));
    for (_, m) in [service, pod] {
        assert!(m.within(pool), "{m} from the pool: {status}");
    }
    let shown = text(&lb.kwg(&["status"]).stdout);
    let line = format!("  - 10.96.0.0/12 (service CIDR) as {}", service.1);
    assert!(
        shown.contains("Mapped: (2 cluster ranges") && shown.contains(&line),
        "{shown}"
    );
    let routes = lb.routes();
    assert!(
        routes.contains(&format!("{} dev kwg1", service.1)),
        "{routes}"
    );
    assert!(routes.contains("10.96.0.0/12 dev kwg0"), "{routes}");
    // Alpha's session knows nothing of it.
    assert!(
        la.status_json()["subnets"]
            .to_string()
            .find("cluster")
            .is_none()
    );

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
    assert_eq!(title(&la, &format!("http://{svc_a}/")), "Cluster Alpha");
    assert_eq!(title(&la, &format!("http://{pod_a}/")), "Cluster Alpha");
    let svc_b = mapped(&svc_b, service.0, service.1);
    let pod_b = mapped(&pod_b, pod.0, pod.1);
    assert_eq!(title(&lb, &format!("http://{svc_b}/")), "Cluster Beta");
    assert_eq!(title(&lb, &format!("http://{pod_b}/")), "Cluster Beta");
    let ping = lb.run(&["ping", "-c", "1", "-W", "2", &pod_b]);
    assert!(
        ping.status.success(),
        "ping {pod_b}: {}",
        text(&ping.stdout)
    );

    // By name: each session's forwarder answers from its own cluster, beta's at the mapped
    // address.
    let name = "web-app.emojivoto.svc.cluster.local";
    let answer = lb.run(&["dig", "+short", "@127.77.0.54", name]);
    assert_eq!(
        text(&answer.stdout).trim(),
        svc_b,
        "{}",
        text(&answer.stderr)
    );
    assert_eq!(
        title_via(&lb, "127.77.0.54", &format!("http://{name}/")),
        "Cluster Beta"
    );
    assert_eq!(
        title_via(&la, "127.77.0.53", &format!("http://{name}/")),
        "Cluster Alpha"
    );

    // Leaving beta takes its mapped routes; alpha keeps answering.
    let left = lb.kwg(&["leave"]);
    assert!(left.status.success(), "{}", text(&left.stderr));
    let routes = la.routes();
    assert!(
        !routes.contains("kwg1") && !routes.contains(&service.1.to_string()),
        "{routes}"
    );
    assert_eq!(title(&la, &format!("http://{svc_a}/")), "Cluster Alpha");
    let left = la.kwg(&["leave"]);
    assert!(left.status.success(), "{}", text(&left.stderr));
}
