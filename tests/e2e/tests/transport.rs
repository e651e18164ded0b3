//! WireGuard over TCP when UDP does not get through (issue 13): with UDP from the laptop to the
//! node dropped by nftables in the laptop's namespace, `kwg join` succeeds over TCP to the same
//! NodePort, HTTP and DNS work, `kwg status` names the path and why UDP failed; once UDP is
//! let through again, the tunnel moves back to UDP without a failed request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kwg_e2e::laptop::{Laptop, laptop, shared, text};
use kwg_e2e::requests::RequestLoop;

/// This test's own nftables table in the laptop's namespace dropping what leaves it for
/// `ip` on `port` over each of `protocols` (removed on drop).
struct Dropped<'a> {
    l: &'a Laptop,
    table: String,
}

impl<'a> Dropped<'a> {
    fn new(l: &'a Laptop, ip: &str, port: u16, protocols: &[&str]) -> Dropped<'a> {
        let table = format!("kwgtransport_{}", l.name);
        let mut script = format!(
            "add table inet {table}; add chain inet {table} out {{ type filter hook output priority 0 ; }}"
        );
        for p in protocols {
            script += &format!("; add rule inet {table} out ip daddr {ip} {p} dport {port} drop");
        }
        let out = l.run(&["nft", &script]);
        assert!(out.status.success(), "nft: {}", text(&out.stderr));
        Dropped { l, table }
    }
}

impl Drop for Dropped<'_> {
    fn drop(&mut self) {
        let _ = self.l.run(&["nft", "delete", "table", "inet", &self.table]);
    }
}

/// `kwg join` that must succeed, with the daemon logging at info (printed when a test fails).
fn join(l: &Laptop, args: &[&str]) -> std::process::Output {
    let mut argv = vec!["env", "KWG_LOG=info", "kwg", "join", "--name", &l.name];
    argv.extend_from_slice(args);
    let out = l.run(&argv);
    assert!(
        out.status.success(),
        "kwg join {args:?}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

/// The ClusterIP of emojivoto's web-app, which its DNS names must resolve to.
fn web_app_ip(l: &Laptop) -> String {
    kwg_e2e::cluster_ip(&l.sim, "emojivoto", "web-app").expect("web-app's ClusterIP")
}

#[test]
fn join_over_tcp_without_udp_then_back_to_udp_without_a_failed_request() {
    let sim = shared();
    let l = Arc::new(laptop(&sim, "tcpladder"));
    let info = kwg_e2e::gateway_info(&sim).unwrap();
    let ep = info.endpoints.first().expect("an endpoint").clone();
    let ip = ep.ip().expect("a node address").to_string();
    let blocked = Dropped::new(&l, &ip, ep.port, &["udp"]);
    let started = Instant::now();
    let out = join(
        &l,
        &["--namespace", "emojivoto", "--transport-probe-every", "5s"],
    );
    let took = started.elapsed();
    eprintln!(
        "kwg join over TCP took {:.2} s\n{}",
        took.as_secs_f64(),
        text(&out.stdout)
    );
    assert!(took < Duration::from_secs(10), "join took {took:?}");
    let page = l.curl("web-app:80");
    assert!(
        text(&page.stdout).contains("<title>Emoji Vote</title>"),
        "curl web-app:80 over TCP: {}{}",
        text(&page.stdout),
        text(&page.stderr)
    );
    assert_eq!(
        l.dig("web-app.emojivoto.svc.cluster.local"),
        web_app_ip(&l),
        "DNS over TCP"
    );
    let s = l.status_json();
    assert_eq!(s["transport"]["mode"], "auto", "{s}");
    assert_eq!(s["transport"]["path"], "tcp", "{s}");
    assert_eq!(s["transport"]["failed"][0]["path"], "udp", "{s}");
    let line = text(&l.kwg(&["status"]).stdout);
    let path = line
        .lines()
        .find(|l| l.starts_with("Path"))
        .unwrap_or_default()
        .to_string();
    assert!(
        path.contains(&format!("tcp {ip}:{}", ep.port)) && path.contains("udp failed"),
        "{line}"
    );

    // UDP let through while a request loop runs: the next probe moves the tunnel to UDP.
    let requests = RequestLoop::start(&l);
    requests.first_success_after(Instant::now(), Duration::from_secs(5));
    drop(blocked);
    let unblocked = Instant::now();
    kwg_e2e::wait_for("the path back on UDP", Duration::from_secs(60), || {
        Ok((l.status_json()["transport"]["path"] == "udp").then_some(()))
    })
    .unwrap_or_else(|e| panic!("{e}: {}", l.status_json()));
    let moved = unblocked.elapsed();
    // Past the stream's closing (5 s after the move) with traffic still flowing.
    std::thread::sleep(Duration::from_secs(7));
    let (gap, failed) = requests.longest_gap(unblocked);
    let (over_tcp, over_udp) = (
        requests.successes_between(unblocked, unblocked + moved),
        requests.successes_between(unblocked + moved, Instant::now()),
    );
    drop(requests);
    eprintln!(
        "back on UDP {:.2} s after unblocking; {over_tcp} requests succeeded before the move, {over_udp} after, {failed} failed, longest gap {:.2} s",
        moved.as_secs_f64(),
        gap.as_secs_f64()
    );
    assert_eq!(failed, 0, "no failed request across the move");
    // Requests ran all along: over the 7 s on UDP (one every 100 ms plus curl's time), and
    // no pause long enough to hide a stalled tunnel.
    assert!(
        over_udp >= 10,
        "{over_udp} requests succeeded after the move"
    );
    assert!(gap < Duration::from_secs(2), "requests paused {gap:?}");
    let s = l.status_json();
    assert_eq!(s["transport"]["failed"], serde_json::json!([]), "{s}");
    assert!(l.curl("web-app:80").status.success());
    let left = l.kwg(&["leave"]);
    assert!(left.status.success(), "{}", text(&left.stderr));
}

#[test]
fn without_udp_and_tcp_the_join_goes_over_the_api_server() {
    let sim = shared();
    let l = laptop(&sim, "apipath");
    let info = kwg_e2e::gateway_info(&sim).unwrap();
    let ep = info.endpoints.first().expect("an endpoint").clone();
    let ip = ep.ip().expect("a node address").to_string();
    let _blocked = Dropped::new(&l, &ip, ep.port, &["udp", "tcp"]);
    let started = Instant::now();
    let out = join(&l, &["--namespace", "emojivoto"]);
    let took = started.elapsed();
    eprintln!(
        "kwg join over the API server took {:.2} s\n{}",
        took.as_secs_f64(),
        text(&out.stdout)
    );
    let page = l.curl("web-app:80");
    assert!(
        text(&page.stdout).contains("<title>Emoji Vote</title>"),
        "curl web-app:80 over the API server: {}",
        text(&page.stderr)
    );
    assert_eq!(l.dig("web-app"), web_app_ip(&l), "DNS over the API server");
    let s = l.status_json();
    assert_eq!(s["transport"]["path"], "api-server", "{s}");
    let failed: Vec<&str> = s["transport"]["failed"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["path"].as_str())
        .collect();
    assert_eq!(failed, ["udp", "tcp"], "{s}");
    // The path line names why TCP failed (its age varies: "tcp failed Ns ago: ...").
    let line = text(&l.kwg(&["status"]).stdout);
    let reason = format!(" ago: TCP connect to {ip}:{} timed out", ep.port);
    assert!(
        line.lines()
            .any(|p| p.starts_with("Path") && p.contains("; tcp failed ") && p.contains(&reason)),
        "{line}"
    );
    let left = l.kwg(&["leave"]);
    assert!(left.status.success(), "{}", text(&left.stderr));
}

#[test]
fn without_udp_tcp_and_port_forward_permission_the_error_names_each() {
    let sim = shared();
    // A user with kwg's rights except those in the gateway's namespace (no pods/portforward).
    for args in [
        &[
            "-n",
            "kwg-system",
            "create",
            "rolebinding",
            "kwgtest-noperm",
            "--role=kwg-user",
            "--user=nobody",
        ][..],
        &[
            "create",
            "clusterrolebinding",
            "kwgtest-noperm",
            "--clusterrole=kwg-user",
            "--user=nobody",
        ][..],
    ] {
        sim.kubectl_admin(args).unwrap();
    }
    let l = laptop(&sim, "noperm");
    let info = kwg_e2e::gateway_info(&sim).unwrap();
    let ep = info.endpoints.first().expect("an endpoint").clone();
    let ip = ep.ip().expect("a node address").to_string();
    let _blocked = Dropped::new(&l, &ip, ep.port, &["udp", "tcp"]);
    let out = l.run_as(
        "nobody",
        &["kwg", "join", "--name", "noperm", "--timeout", "6s"],
    );
    let err = text(&out.stderr);
    eprintln!("{err}");
    assert!(!out.status.success(), "{}", text(&out.stdout));
    assert!(
        err.contains(
            "the gateway did not answer within 6s on any path (udp: no handshake answer over UDP"
        ) && err.contains(&format!("tcp: TCP connect to {ip}:{} timed out", ep.port))
            && err.contains("api-server: your kubeconfig user may not")
            && err.contains("kwg-gateway"),
        "{err}"
    );
    let s = l.run_as("nobody", &["kwg", "status"]);
    assert_eq!(
        (s.status.code(), text(&s.stdout).trim()),
        (
            Some(1),
            "kwg is not joined to a cluster: run `kwg join --namespace <ns>`."
        ),
        "nothing stays joined: {}",
        text(&s.stderr)
    );
}

#[test]
fn userspace_mode_falls_back_to_tcp_too() {
    let sim = shared();
    let l = laptop(&sim, "tcpusp");
    let info = kwg_e2e::gateway_info(&sim).unwrap();
    let ep = info.endpoints.first().expect("an endpoint").clone();
    let ip = ep.ip().expect("a node address").to_string();
    let _blocked = Dropped::new(&l, &ip, ep.port, &["udp"]);
    join(
        &l,
        &[
            "-n",
            "emojivoto",
            "--userspace",
            "--proxy-listen",
            "127.0.0.1:1081",
        ],
    );
    assert_eq!(l.status_json()["transport"]["path"], "tcp");
    let page = l.run(&[
        "curl",
        "-sS",
        "--max-time",
        "3",
        "--proxy",
        "socks5h://127.0.0.1:1081",
        "http://web-app.emojivoto/",
    ]);
    assert!(
        text(&page.stdout).contains("<title>Emoji Vote</title>"),
        "curl through the proxy over TCP: {}",
        text(&page.stderr)
    );
    let left = l.kwg(&["leave"]);
    assert!(left.status.success(), "{}", text(&left.stderr));
}
