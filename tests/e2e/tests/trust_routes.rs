//! What a hostile cluster cannot make the laptop route, resolve or forward (issue 23), on one
//! cluster in sequence: gateway info announcing the Internet as cluster subnets (a fresh join
//! is refused and leaves nothing; a joined laptop keeps its last good routes and `kwg status`
//! says what it refused), a public suffix as cluster domain, and a hostile gateway sending
//! through the tunnel to a "container" behind a laptop that forwards.

use std::io::{Read, Write};
use std::process::Output;
use std::time::Duration;

use kwg_e2e::laptop::{Laptop, laptop, shared, text};
use kwg_e2e::{
    GATEWAY_NS, gateway_info, gateway_netns, gateway_peers, put_gateway_info, wait_for,
    wait_gateway_ready,
};
use kwg_sim::testing::Cluster;

/// Where the gateway serves its WireGuard UAPI socket in this test (the hostile gateway's
/// handle on its own device).
fn uapi_dir(sim: &Cluster) -> String {
    format!("/tmp/kwg-e2e-uapi-{}", sim.prefix())
}

/// The info the gateway published, as JSON.
fn published(sim: &Cluster) -> serde_json::Value {
    serde_json::to_value(gateway_info(sim).unwrap()).unwrap()
}

/// Writes the info ConfigMap of `ns` as the admin (how a hostile cluster changes it).
fn put_info(sim: &Cluster, ns: &str, info: &serde_json::Value) {
    put_gateway_info(sim, ns, info).unwrap();
}

/// The cluster's service CIDR plus every public /8: 217 separate prefixes.
fn internet_as_cluster(real: &serde_json::Value) -> serde_json::Value {
    let mut info = real.clone();
    let mut cidrs = vec![serde_json::Value::from("10.96.0.0/12")];
    cidrs.extend(
        (1..=223u8)
            .filter(|o| ![10, 100, 127, 169, 172, 192].contains(o))
            .map(|o| serde_json::Value::from(format!("{o}.0.0.0/8"))),
    );
    info["serviceCidrs"] = cidrs.into();
    info
}

/// `kwg join` as the admin against the info in namespace `ns`.
fn join_from(l: &Laptop, ns: &str) -> Output {
    l.run_as(
        "admin",
        &[
            "kwg",
            "join",
            "--name",
            &l.name,
            "--kwg-namespace",
            ns,
            "-n",
            "emojivoto",
        ],
    )
}

/// Nothing of a join is on the laptop: no interface, route, firewall table or state.
fn nothing_left(l: &Laptop, ns: &str) {
    let links = text(&l.run(&["ip", "link", "show"]).stdout);
    assert!(!links.contains("kwg0"), "{links}");
    assert!(!l.routes().contains("kwg0"), "{}", l.routes());
    let tables = text(&l.run(&["nft", "list", "tables"]).stdout);
    assert!(!tables.contains("kwg_"), "{tables}");
    let secrets = l
        .sim
        .kubectl_admin(&["-n", ns, "get", "secrets", "-o", "name"])
        .unwrap();
    assert!(
        !secrets.contains(&format!("kwg-peer-{}", l.name)),
        "{secrets}"
    );
    assert_eq!(l.kwg(&["status"]).status.code(), Some(1));
}

/// `ip route get` on the laptop, output and errors together.
fn route_get(l: &Laptop, ip: &str) -> String {
    let out = l.run(&["ip", "route", "get", ip]);
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}

/// `python3 -m http.server` on `ip`:8000 in `netns`; killed on drop.
struct HttpServer(std::process::Child);

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http_server(netns: &str, ip: &str) -> HttpServer {
    let child = std::process::Command::new("ip")
        .args(["netns", "exec", netns, "python3", "-m", "http.server"])
        .args(["--bind", ip, "8000", "--directory", "/tmp"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let server = HttpServer(child);
    let url = format!("http://{ip}:8000/");
    wait_for(
        "the container's HTTP server",
        Duration::from_secs(10),
        || {
            let out = kwg_sim::testing::exec(netns, &["curl", "-sf", "--max-time", "1", &url])?;
            Ok(out.status.success().then_some(()))
        },
    )
    .unwrap();
    server
}

/// Whether the laptop forwards what comes in on its tunnel (`0`: it does not).
fn forwarding(l: &Laptop) -> String {
    let out = l.run(&["cat", "/proc/sys/net/ipv4/conf/kwg0/forwarding"]);
    text(&out.stdout).trim().to_string()
}

/// The HTTP status `curl` from `netns` gets (`000`: no answer).
fn http_code(netns: &str, url: &str) -> String {
    let out = kwg_sim::testing::exec(
        netns,
        &[
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "2",
            url,
        ],
    )
    .unwrap();
    text(&out.stdout)
}

/// One UAPI `set` on the gateway's device (as whoever runs the gateway could).
fn uapi_set(sim: &Cluster, body: &str) -> String {
    let path = format!("{}/kwg0.sock", uapi_dir(sim));
    let mut s = std::os::unix::net::UnixStream::connect(&path).unwrap();
    s.write_all(format!("set=1\n{body}\n").as_bytes()).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn a_hostile_cluster_cannot_route_resolve_or_forward_through_the_laptop() {
    let sim = shared();
    let l = laptop(&sim, "trust");
    let real = published(&sim);
    // The hostile gateway will need its UAPI socket (case d): a rolling update, under way
    // while the refusals below run.
    let d = "deployment/kwg-gateway";
    let _uapi = RemoveDir(uapi_dir(&sim));
    let env = format!("KWG_UAPI_DIR={}", uapi_dir(&sim));
    sim.kubectl_admin(&["-n", GATEWAY_NS, "set", "env", d, &env])
        .unwrap();

    // (a) A fresh join against gateway info announcing the Internet: refused in one sentence
    // with the flag that would accept it, and nothing is left behind. A namespace of its own,
    // so the real gateway's info is not disturbed yet.
    let ns = "trust-kwg";
    sim.kubectl_admin(&["create", "namespace", ns]).unwrap();
    put_info(&sim, ns, &internet_as_cluster(&real));
    let out = join_from(&l, ns);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(9), "{err}");
    assert!(
        err.contains(
            "refused cluster subnet 1.0.0.0/8 (and 216 more) from the cluster: it is public address space"
        ) && err.contains("pass --also-proxy 1.0.0.0/8 to accept it"),
        "{err}"
    );
    nothing_left(&l, ns);

    // (c) A public suffix, and a registrable name under one, as cluster domain.
    for (domain, why) in [
        ("co.uk", "it is a public suffix"),
        (
            "bbc.co.uk",
            "it is a public name under the public suffix co.uk",
        ),
    ] {
        let mut info = real.clone();
        info["clusterDomain"] = domain.into();
        put_info(&sim, ns, &info);
        let out = join_from(&l, ns);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(9), "{domain}: {err}");
        assert!(
            err.contains(&format!(
                "refused clusterDomain \"{domain}\" from the cluster: {why}"
            )) && err.contains(&format!("pass --cluster-domain {domain} to accept it")),
            "{err}"
        );
        nothing_left(&l, ns);
    }

    // (b) A joined laptop given the same hostile info live: it keeps its last good routes,
    // the tunnel keeps working, and `kwg status` says what it refused and why.
    sim.kubectl_admin(&["-n", GATEWAY_NS, "rollout", "status", d, "--timeout=90s"])
        .unwrap();
    wait_gateway_ready(&sim, Duration::from_secs(60)).unwrap();
    // The laptop forwards (Docker, libvirt) from before the join: case (d).
    let lns = l.netns.as_str();
    sim.exec_ok(lns, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        .unwrap();
    l.join(&["-n", "emojivoto"]);
    let routes = l.routes();
    assert!(route_get(&l, "10.96.0.1").contains("dev kwg0"));
    assert!(!route_get(&l, "8.8.8.8").contains("kwg0"));
    put_info(&sim, "kwg-system", &internet_as_cluster(&real));
    let refused = wait_for(
        "kwg status to name the refusal",
        Duration::from_secs(10),
        || {
            Ok(l.status_json()["refusedInfo"]["reason"]
                .as_str()
                .map(str::to_owned))
        },
    )
    .unwrap();
    assert!(
        refused.starts_with(
            "refused cluster subnet 1.0.0.0/8 (and 216 more) from the cluster: it is public address space"
        ),
        "{refused}"
    );
    let route = route_get(&l, "8.8.8.8");
    assert!(
        !route.contains("kwg0"),
        "8.8.8.8 goes into the tunnel: {route}"
    );
    assert_eq!(l.routes(), routes);
    let status = text(&l.kwg(&["status"]).stdout);
    assert!(
        status.contains("keeping the last good configuration: refused cluster subnet 1.0.0.0/8"),
        "{status}"
    );
    assert!(text(&l.curl("web-app:80").stdout).contains("Emoji Vote"));
    // The real info again: accepted, the refusal is gone.
    put_info(&sim, "kwg-system", &real);
    wait_for("the refusal to clear", Duration::from_secs(10), || {
        Ok(l.status_json()["refusedInfo"].is_null().then_some(()))
    })
    .unwrap();

    // (d) The laptop forwards (Docker, libvirt): a "container" behind it at 172.17.0.2. A
    // hostile gateway routes that address to the laptop's peer and connects: the laptop does
    // not forward from the tunnel (its forwarding is off, and its firewall drops it), while the
    // laptop itself still reaches the container and the cluster.
    let ctr = sim.names().extra_laptop_ns("trust-ctr");
    for cmd in [
        vec!["ip", "netns", "add", &ctr],
        vec![
            "ip", "-n", lns, "link", "add", "ctr0", "type", "veth", "peer", "name", "eth0",
            "netns", &ctr,
        ],
        vec![
            "ip",
            "-n",
            lns,
            "addr",
            "add",
            "172.17.0.1/16",
            "dev",
            "ctr0",
        ],
        vec!["ip", "-n", lns, "link", "set", "ctr0", "up"],
        vec![
            "ip",
            "-n",
            &ctr,
            "addr",
            "add",
            "172.17.0.2/16",
            "dev",
            "eth0",
        ],
        vec!["ip", "-n", &ctr, "link", "set", "eth0", "up"],
        vec!["ip", "-n", &ctr, "link", "set", "lo", "up"],
        vec![
            "ip",
            "-n",
            &ctr,
            "route",
            "add",
            "default",
            "via",
            "172.17.0.1",
        ],
    ] {
        let out = std::process::Command::new(cmd[0])
            .args(&cmd[1..])
            .output()
            .unwrap();
        assert!(out.status.success(), "{cmd:?}: {}", text(&out.stderr));
    }
    let _server = http_server(&ctr, "172.17.0.2");
    assert_eq!(http_code(lns, "http://172.17.0.2:8000/"), "200");
    let gw = gateway_netns(&sim).unwrap();
    let peer = gateway_peers(&sim)
        .unwrap()
        .into_iter()
        .find(|p| p.name.as_str() == l.name)
        .expect("the laptop's peer at the gateway");
    let tunnel_ip = peer.tunnel_ip.expect("a tunnel IP").to_string();
    let answer = uapi_set(
        &sim,
        &format!(
            "public_key={}\nupdate_only=true\nreplace_allowed_ips=true\nallowed_ip={tunnel_ip}/32\nallowed_ip=172.17.0.2/32\n",
            peer.public_key.to_hex()
        ),
    );
    assert!(answer.contains("errno=0"), "{answer}");
    sim.exec_ok(&gw, &["ip", "route", "add", "172.17.0.2/32", "dev", "kwg0"])
        .unwrap();
    sim.exec_ok(
        &ctr,
        &[
            "nft",
            "add table inet seen; add chain inet seen input { type filter hook input priority 0; }; add rule inet seen input ip saddr != 172.17.0.0/16 counter",
        ],
    )
    .unwrap();
    assert_eq!(
        http_code(&gw, "http://172.17.0.2:8000/"),
        "000",
        "the gateway reached the container behind the laptop"
    );
    // The container received nothing from outside its own network.
    let counted = sim
        .exec_ok(&ctr, &["nft", "list", "chain", "inet", "seen", "input"])
        .unwrap();
    assert!(counted.contains("counter packets 0 "), "{counted}");
    assert_eq!(forwarding(&l), "0");
    assert_eq!(
        text(&l.run(&["sysctl", "-n", "net.ipv4.ip_forward"]).stdout).trim(),
        "1"
    );
    // Docker starting while joined turns ip_forward from 0 to 1, which turns every
    // interface's forwarding on: kwg turns the tunnel's off again at its next health check.
    for v in ["0", "1"] {
        sim.exec_ok(lns, &["sysctl", "-qw", &format!("net.ipv4.ip_forward={v}")])
            .unwrap();
    }
    wait_for(
        "forwarding from kwg0 to be off again",
        Duration::from_secs(2),
        || Ok((forwarding(&l) == "0").then_some(())),
    )
    .unwrap();
    assert!(text(&l.curl("web-app:80").stdout).contains("Emoji Vote"));
    assert_eq!(http_code(lns, "http://172.17.0.2:8000/"), "200");

    // Leave removes the table as before.
    assert!(l.kwg(&["leave"]).status.success());
    let tables = text(&l.run(&["nft", "list", "tables"]).stdout);
    assert!(!tables.contains("kwg_"), "{tables}");
}

/// Removes a directory on drop (the gateway's UAPI socket directory, outside the cluster's).
struct RemoveDir(String);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
