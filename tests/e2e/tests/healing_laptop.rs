//! A tunnel that heals itself when the laptop's side changes, each case with a request loop
//! through kwg and its time printed: the LAN address changes (a new DHCP lease), the machine
//! sleeps longer than its lease (daemon SIGSTOPped), the API server is unreachable for a while
//! (the tunnel keeps carrying traffic and `kwg status` says why the lease is not renewed).
//! Each case on its own laptop of one shared cluster.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kwg_e2e::firewall::Blocked;
use kwg_e2e::laptop::{Laptop, laptop, secret_exists, shared, text};
use kwg_e2e::requests::{HEAL_TARGET, RequestLoop};
use kwg_sim::names::{API_PORT, NODE_IP};

fn daemon_log(l: &Laptop) -> String {
    std::fs::read_to_string(l.state.join("daemon.log")).expect("the daemon's log")
}

#[test]
fn a_new_lan_address_carries_traffic_again_within_seconds() {
    let sim = shared();
    let l = Arc::new(laptop(&sim, "healaddr"));
    l.join(&["--namespace", "emojivoto"]);
    let requests = RequestLoop::start(&l);
    requests.wait_working();
    let old = text(
        &l.run(&["ip", "-4", "-o", "addr", "show", "dev", "eth0"])
            .stdout,
    );
    let old = old
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .expect("eth0 has an IPv4 address")
        .to_string();
    // Like a new DHCP lease: the old address goes, another one of the LAN comes.
    let last: u8 = old.split(['.', '/']).nth(3).unwrap().parse().unwrap();
    let new = format!("192.0.2.{}/24", 150 + last);
    let changed = Instant::now();
    for argv in [
        ["ip", "addr", "del", old.as_str(), "dev", "eth0"],
        ["ip", "addr", "add", new.as_str(), "dev", "eth0"],
    ] {
        let out = l.run(&argv);
        assert!(out.status.success(), "{argv:?}: {}", text(&out.stderr));
    }
    let healed = requests.first_success_after(changed, Duration::from_secs(30));
    requests.wait_steady(healed, Duration::from_secs(1), Duration::from_secs(10));
    let (gap, failed) = requests.longest_gap(changed);
    eprintln!(
        "MEASURED: LAN address {old} -> {new}: traffic again {:.2} s after the change; {failed} failed requests, longest gap {:.2} s",
        (healed - changed).as_secs_f64(),
        gap.as_secs_f64()
    );
    assert!(
        gap < HEAL_TARGET,
        "traffic stopped for {gap:?} (target {HEAL_TARGET:?})"
    );
    // The gateway now sends to the new address (its /peers, asked through the tunnel, shows
    // a peer its own endpoint).
    let new_ip = new.split('/').next().unwrap();
    let info = kwg_e2e::gateway_info(&sim).unwrap();
    let url = format!("http://{}:{}/peers", info.gateway_ip, info.admin_port);
    let out = l.run(&["curl", "-sf", "--max-time", "3", &url]);
    let peers: Vec<kwg_contract::GatewayPeer> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{url}: {e}: {}", text(&out.stderr)));
    let me = peers
        .iter()
        .find(|p| p.name.to_string() == "healaddr")
        .unwrap();
    let endpoint = me
        .endpoint
        .expect("the gateway shows a peer its own endpoint");
    assert_eq!(endpoint.ip().to_string(), new_ip);
    drop(requests);
    assert!(l.kwg(&["leave"]).status.success());
}

#[test]
fn after_sleeping_longer_than_its_lease_the_daemon_registers_again_and_traffic_flows() {
    let sim = shared();
    let l = Arc::new(laptop(&sim, "healsleep"));
    l.join(&["--namespace", "emojivoto", "--ttl", "6s"]);
    let before = l.status_json();
    let ip = before["tunnelIp"].as_str().unwrap().to_string();
    let requests = RequestLoop::start(&l);
    requests.wait_working();
    let pid = l.daemon_pid().to_string();
    let signal = |sig: &str| {
        assert!(
            std::process::Command::new("kill")
                .args([sig, &pid])
                .status()
                .unwrap()
                .success()
        )
    };
    signal("-STOP");
    let stopped = Instant::now();
    // The lease ends while the machine sleeps: the gateway deletes the peer Secret.
    let gone = kwg_e2e::wait_for(
        "the expired peer Secret deleted",
        Duration::from_secs(30),
        || Ok((!secret_exists(&sim, "healsleep")).then_some(Instant::now())),
    );
    std::thread::sleep(Duration::from_secs(1));
    signal("-CONT");
    let resumed = Instant::now();
    let gone = gone.expect("the gateway never deleted the expired Secret");
    let healed = requests.first_success_after(resumed, Duration::from_secs(40));
    requests.wait_steady(healed, Duration::from_secs(1), Duration::from_secs(10));
    eprintln!(
        "MEASURED: slept {:.1} s (Secret deleted {:.1} s in, --ttl 6s): traffic again {:.2} s after resuming",
        (resumed - stopped).as_secs_f64(),
        (gone - stopped).as_secs_f64(),
        (healed - resumed).as_secs_f64()
    );
    assert!(
        healed - resumed < Duration::from_secs(15),
        "took {:?}",
        healed - resumed
    );
    assert!(secret_exists(&sim, "healsleep"), "not registered again");
    let log = daemon_log(&l);
    assert!(
        log.contains("the peer Secret is gone (lease expired?): registering again"),
        "{log}"
    );
    let after = l.status_json();
    assert_eq!(
        after["tunnelIp"],
        ip.as_str(),
        "the tunnel IP was still free: {after}"
    );
    assert_eq!(
        after["lease"]["failingSince"],
        serde_json::Value::Null,
        "{after}"
    );
    drop(requests);
    assert!(l.kwg(&["leave"]).status.success());
}

#[test]
fn with_the_api_server_unreachable_the_tunnel_works_and_status_says_why_the_lease_is_not_renewed() {
    let sim = shared();
    let l = Arc::new(laptop(&sim, "healapi"));
    // Renewed every 30 s; blocked for a minute (the figure) the lease (90 s from the
    // last renewal) holds.
    l.join(&["--namespace", "emojivoto", "--ttl", "90s"]);
    let requests = RequestLoop::start(&l);
    requests.wait_working();
    let rule = format!("ip daddr {NODE_IP} tcp dport {API_PORT} reject with tcp reset");
    let block = Blocked::new(&l, &rule);
    let blocked = Instant::now();
    let failing = kwg_e2e::wait_for(
        "status showing the lease error",
        Duration::from_secs(45),
        || {
            let s = l.status_json();
            Ok((!s["lease"]["failingSince"].is_null()).then_some(s))
        },
    )
    .unwrap();
    let error = failing["lease"]["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(error.contains("unreachable"), "{failing}");
    assert!(!failing["lease"]["nextAttempt"].is_null(), "{failing}");
    std::thread::sleep(Duration::from_secs(60).saturating_sub(blocked.elapsed()));
    let out = l.kwg(&["status"]);
    let status = text(&out.stdout);
    let line = status
        .lines()
        .find(|l| l.starts_with("Lease"))
        .unwrap_or_else(|| panic!("no lease line:\n{status}"));
    assert!(line.contains("renewal failing since"), "{line}");
    assert!(line.contains("unreachable: Connection refused"), "{line}");
    assert!(line.contains("retrying in"), "{line}");
    let held = blocked.elapsed();
    let (gap, failed) = requests.longest_gap(blocked);
    eprintln!(
        "MEASURED: API server blocked {:.1} s: {failed} failed requests, longest gap {:.2} s; status: {line}",
        held.as_secs_f64(),
        gap.as_secs_f64()
    );
    assert_eq!(failed, 0, "the tunnel stopped carrying traffic");
    assert!(gap < Duration::from_secs(1), "gap {gap:?}");
    // ... and requests kept running to the end (at least one a second, the last just now).
    let now = Instant::now();
    let ran = requests.successes_between(blocked, now);
    assert!(ran as u64 >= held.as_secs(), "{ran} requests in {held:?}");
    assert!(
        requests.successes_between(now - Duration::from_secs(2), now) > 0,
        "no request succeeded in the last 2 s"
    );
    drop(block);
    let unblocked = Instant::now();
    let renewed = kwg_e2e::wait_for("the lease renewed again", Duration::from_secs(20), || {
        let s = l.status_json();
        Ok(s["lease"]["failingSince"]
            .is_null()
            .then_some(Instant::now()))
    })
    .unwrap();
    eprintln!(
        "MEASURED: lease renewed again {:.1} s after the API server came back",
        (renewed - unblocked).as_secs_f64()
    );
    let out = l.kwg(&["status"]);
    assert!(
        text(&out.stdout).contains("Lease           : renewed"),
        "{}",
        text(&out.stdout)
    );
    drop(requests);
    assert!(l.kwg(&["leave"]).status.success());
}
