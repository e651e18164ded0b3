//! A tunnel that heals itself: with a request loop running through kwg, the gateway crashes
//! and is restarted; traffic must flow again within a few seconds of the new pod being Ready, with no
//! user action (the daemon notices the unanswered packets and handshakes again at once instead
//! of waiting out WireGuard's ~15 s). Its own cluster: deleting the gateway would disturb the
//! other tests' joins.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kwg_e2e::laptop::laptop;
use kwg_e2e::requests::{HEAL_TARGET, RequestLoop};
use kwg_sim::testing::Cluster;

#[test]
fn traffic_flows_again_within_seconds_of_a_crashed_gateway_being_ready() {
    let sim = Arc::new(Cluster::up().expect("kwg-sim up"));
    kwg_e2e::install_gateway(&sim).expect("kubectl apply -k manifests/");
    let l = Arc::new(laptop(&sim, "heal"));
    l.join(&["--namespace", "emojivoto"]);
    let requests = RequestLoop::start(&l);
    requests.wait_working();
    // The gateway crashes (SIGKILL: no drain, every session lost) and the kubelet restarts it;
    // a graceful delete drains for 2 s while the new pod takes over (0.2 s gap measured).
    let netns = kwg_e2e::gateway_netns(&sim).unwrap();
    let pids = sim
        .exec_ok(&netns, &["pgrep", "-x", "kwg-gateway"])
        .unwrap();
    let old: Vec<String> = pids.split_whitespace().map(str::to_string).collect();
    assert!(!old.is_empty(), "no gateway process in {netns}");
    let deleted_at = Instant::now();
    for pid in &old {
        assert!(
            std::process::Command::new("kill")
                .args(["-KILL", pid])
                .status()
                .unwrap()
                .success()
        );
    }
    let new = kwg_e2e::wait_for("the restarted gateway", Duration::from_secs(60), || {
        let pids = sim.exec(&netns, &["pgrep", "-x", "kwg-gateway"])?;
        let pid = String::from_utf8_lossy(&pids.stdout).trim().to_string();
        let fresh = !pid.is_empty() && !old.contains(&pid);
        Ok(
            (fresh && kwg_e2e::wait_gateway_ready(&sim, Duration::from_millis(200)).is_ok())
                .then_some(pid),
        )
    })
    .unwrap();
    let ready_at = Instant::now();
    let healed = requests.first_success_after(ready_at, Duration::from_secs(30));
    requests.wait_steady(healed, Duration::from_millis(500), Duration::from_secs(10));
    let (gap, failed) = requests.longest_gap(deleted_at);
    eprintln!(
        "gateway restarted as pid {new}: ready {:.2} s after the kill; traffic again {:.2} s after ready; {failed} failed requests; longest gap between successful requests {:.2} s",
        (ready_at - deleted_at).as_secs_f64(),
        (healed - ready_at).as_secs_f64(),
        gap.as_secs_f64()
    );
    assert!(
        healed - ready_at < HEAL_TARGET,
        "traffic again {:?} after the new gateway was ready (target {HEAL_TARGET:?})",
        healed - ready_at
    );
    drop(requests);
    // It healed because the daemon restarted the session, not by WireGuard's own timers.
    let log = std::fs::read_to_string(l.state.join("daemon.log")).expect("the daemon's log");
    assert!(
        log.contains("packets to the gateway go unanswered: starting a new handshake"),
        "{log}"
    );
    assert!(l.kwg(&["leave"]).status.success());
}
