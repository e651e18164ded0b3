//! A tunnel that heals itself: with a request loop running through kwg, the gateway pod is
//! replaced; traffic must flow again within a few seconds of the new pod being Ready, with no
//! user action (the daemon notices the unanswered packets and handshakes again at once instead
//! of waiting out WireGuard's ~15 s). Its own cluster: deleting the gateway would disturb the
//! other tests' joins.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kwg_e2e::laptop::laptop;
use kwg_sim::testing::Cluster;

#[test]
fn traffic_flows_again_within_seconds_of_a_replaced_gateway_pod_being_ready() {
    let sim = Arc::new(Cluster::up().expect("kwg-sim up"));
    kwg_e2e::install_gateway(&sim).expect("kubectl apply -k manifests/");
    let l = laptop(&sim, "heal");
    l.join(&["--namespace", "emojivoto"]);

    // One HTTP request every 100 ms; each result with its time.
    let results: Arc<Mutex<Vec<(Instant, bool)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let looper = {
        let (loop_results, loop_stop, l) = (results.clone(), stop.clone(), &l);
        std::thread::scope(|s| {
            let h = s.spawn(move || {
                let (results, stop) = (loop_results, loop_stop);
                while !stop.load(Ordering::Relaxed) {
                    let out = l.run(&[
                        "curl",
                        "-sS",
                        "-o",
                        "/dev/null",
                        "--max-time",
                        "1",
                        "http://web-app:80",
                    ]);
                    results
                        .lock()
                        .unwrap()
                        .push((Instant::now(), out.status.success()));
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
            std::thread::sleep(Duration::from_secs(1));
            let old = kwg_e2e::wait_gateway_ready(&sim, Duration::from_secs(5)).unwrap();
            let deleted_at = Instant::now();
            sim.kubectl_admin(&["-n", "kwg-system", "delete", "pod", &old, "--wait=false"])
                .unwrap();
            let new = kwg_e2e::wait_for("a new ready gateway pod", Duration::from_secs(60), || {
                let pod = kwg_e2e::wait_gateway_ready(&sim, Duration::from_secs(1)).ok();
                Ok(pod.filter(|p| *p != old))
            })
            .unwrap();
            let ready_at = Instant::now();
            // Wait until a request succeeds after the new pod is ready (or give up).
            let healed = kwg_e2e::wait_for(
                "traffic through the new pod",
                Duration::from_secs(30),
                || {
                    let r = results.lock().unwrap();
                    Ok(r.iter()
                        .find(|(t, ok)| *ok && *t > ready_at)
                        .map(|(t, _)| *t))
                },
            );
            std::thread::sleep(Duration::from_millis(500));
            stop.store(true, Ordering::Relaxed);
            h.join().unwrap();
            (deleted_at, new, ready_at, healed)
        })
    };
    let (deleted_at, new, ready_at, healed) = looper;
    let healed = healed.expect("traffic never came back through the new gateway pod");
    let r = results.lock().unwrap();
    let longest_gap = r
        .windows(2)
        .filter(|w| w[0].1 || w[1].1)
        .map(|w| w[1].0 - w[0].0)
        .max()
        .unwrap_or_default();
    let failures = r.iter().filter(|(t, ok)| !ok && *t > deleted_at).count();
    eprintln!(
        "gateway pod replaced by {new}: ready {:.2} s after the delete; traffic again {:.2} s after ready; {failures} failed requests; longest gap between requests {:.2} s",
        (ready_at - deleted_at).as_secs_f64(),
        (healed - ready_at).as_secs_f64(),
        longest_gap.as_secs_f64()
    );
    // The target is 3 s; the bound is generous so that a loaded CI machine does not flake.
    assert!(
        healed - ready_at < Duration::from_secs(6),
        "took {:?}",
        healed - ready_at
    );
    assert!(
        r.last().is_some_and(|(_, ok)| *ok),
        "the last request failed"
    );
    drop(r);
    // It healed because the daemon restarted the session, not by WireGuard's own timers.
    let log = std::fs::read_to_string(l.state.join("daemon.log")).unwrap_or_default();
    assert!(
        log.contains("packets to the gateway go unanswered: starting a new handshake"),
        "{log}"
    );
    assert!(l.kwg(&["leave"]).status.success());
}
