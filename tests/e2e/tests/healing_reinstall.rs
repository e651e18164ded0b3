//! A tunnel that follows a reinstalled gateway: its key Secret deleted and its pod replaced,
//! the gateway comes back with a new key and a new random tunnel CIDR (and publishes them),
//! so it assigns the laptop another tunnel IP; with a request loop running through kwg, the
//! daemon follows the new info and address with no user action. Installed from plain
//! `manifests/` (no pinned tunnel CIDR), as a user would. Its own cluster: replacing the
//! gateway's key would disturb the other tests' joins.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kwg_contract::GATEWAY_KEY_SECRET;
use kwg_e2e::GATEWAY_NS;
use kwg_e2e::laptop::{laptop, text};
use kwg_e2e::requests::{HEAL_TARGET, RequestLoop};
use kwg_sim::testing::Cluster;

#[test]
fn traffic_flows_again_through_a_gateway_reinstalled_with_a_new_key() {
    let sim = Arc::new(Cluster::up().expect("kwg-sim up"));
    let before =
        kwg_e2e::install_gateway_from(&sim, "manifests", 1).expect("kubectl apply -k manifests/");
    let l = Arc::new(laptop(&sim, "reinstall"));
    l.join(&["--namespace", "emojivoto"]);
    let requests = RequestLoop::start(&l);
    requests.wait_working();
    // A reinstall as far as a client can tell: the key is gone and a new pod makes another.
    sim.kubectl_admin(&["-n", GATEWAY_NS, "delete", "secret", GATEWAY_KEY_SECRET])
        .unwrap();
    let replaced = Instant::now();
    kwg_e2e::restart_gateway(&sim).expect("a new gateway pod");
    let ready = Instant::now();
    let (after, published) =
        kwg_e2e::wait_for("the new key published", Duration::from_secs(30), || {
            let info = kwg_e2e::gateway_info(&sim)?;
            Ok((info.public_key != before.public_key).then(|| (info, Instant::now())))
        })
        .unwrap();
    let healed = requests.first_success_after(ready, Duration::from_secs(30));
    requests.wait_steady(healed, Duration::from_secs(1), Duration::from_secs(10));
    let (gap, failed) = requests.longest_gap(replaced);
    eprintln!(
        "MEASURED: gateway reinstalled with a new key and tunnel CIDR {} (was {}): ready {:.2} s after the pod was replaced, new key seen {:.2} s after ready, traffic again {:.2} s after ready; {failed} failed requests, longest gap {:.2} s",
        after.tunnel_cidr,
        before.tunnel_cidr,
        (ready - replaced).as_secs_f64(),
        published.saturating_duration_since(ready).as_secs_f64(),
        (healed - ready).as_secs_f64(),
        gap.as_secs_f64()
    );
    // The stall detector restarts the handshake with the new key (before it noticed the new
    // peer's counters starting from zero, this took WireGuard's 5 s rekey timeout).
    assert!(
        healed - ready < HEAL_TARGET,
        "traffic again {:?} after the reinstalled gateway was ready (target {HEAL_TARGET:?})",
        healed - ready
    );
    // The daemon followed the new info (its journal holds the new key) and took the tunnel IP
    // the new gateway assigned, in its tunnel CIDR.
    let out = l.kwg(&["status", "-o", "json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        status["gatewayKey"],
        after.public_key.to_string(),
        "{}",
        text(&out.stdout)
    );
    let ip: std::net::Ipv4Addr = status["tunnelIp"].as_str().unwrap().parse().unwrap();
    assert!(
        after.tunnel_cidr.contains(&ip),
        "tunnel IP {ip} outside the new tunnel CIDR {}",
        after.tunnel_cidr
    );
    drop(requests);
    assert!(l.kwg(&["leave"]).status.success());
}
