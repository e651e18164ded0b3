//! A highly available gateway (2 replicas, as `manifests/` installs it): a laptop joined with
//! the real kwg keeps working when the replica holding its session is deleted and through a
//! `kubectl rollout restart`; the longest gap without a successful request (one every 100 ms)
//! is printed and bounded. Registrations against two replicas get distinct addresses, also
//! with the leader killed in the middle; an expired lease is collected exactly once.
//! Own clusters: deleting gateway pods would disturb other tests' joins.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use kwg_contract::GatewayPeer;
use kwg_contract::keys::PrivateKey;
use kwg_e2e::laptop::laptop;
use kwg_e2e::requests::RequestLoop;
use kwg_gateway::siblings;
use kwg_sim::testing::Cluster;

/// Generous bound on a gap with 2 replicas (the daemon handshakes again after 0.5 s of
/// unanswered packets and replays them; scripts/bench-failover.sh measures ~0.9 s). `KWG_HA_REPLICAS=1` (scripts/bench-failover.sh) measures a single
/// gateway for comparison, bounded only by 30 s.
fn gap_bound() -> Duration {
    Duration::from_secs(if replicas() >= 2 { 8 } else { 30 })
}

fn replicas() -> usize {
    std::env::var("KWG_HA_REPLICAS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
}
/// The gateway's namespace (its pods, Deployment and Lease).
const NS: &str = kwg_e2e::GATEWAY_NS;

/// `GET /<path>` on one gateway pod, from inside it.
fn admin_get(sim: &Cluster, pod: &str, path: &str) -> String {
    let netns = sim.names().pod_ns(NS, pod);
    let url = format!("http://127.0.0.1:8080/{path}");
    sim.exec_ok(&netns, &["curl", "-sf", "--max-time", "3", &url])
        .unwrap_or_else(|e| panic!("{url} in {pod}: {e}"))
}

fn peers_of(sim: &Cluster, pod: &str) -> Vec<GatewayPeer> {
    serde_json::from_str(&admin_get(sim, pod, "peers")).expect("/peers JSON")
}

fn ready_pods(sim: &Cluster) -> Vec<String> {
    let pods = kwg_e2e::gateway_pods(sim).unwrap();
    pods.into_iter().filter(|p| p.1).map(|p| p.0).collect()
}

/// `curl -s -w ' %{http_code}'` of a replica's `/replica/stats` from the web-app pod, with
/// these extra arguments.
fn replica_stats_from_a_pod(sim: &Cluster, pod: &str, extra: &[&str]) -> String {
    let web = sim.pod_netns("emojivoto", "web-app").unwrap();
    let jp = "jsonpath={.status.podIP}";
    let ip = sim
        .kubectl_admin(&["-n", NS, "get", "pod", pod, "-o", jp])
        .unwrap();
    let url = format!("http://{}:8080{}", ip.trim(), siblings::PATH);
    let mut argv = vec!["curl", "-s", "--max-time", "3", "-w", " %{http_code}"];
    argv.extend_from_slice(extra);
    argv.push(&url);
    let out = sim.exec(&web, &argv).unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The header a sibling replica proves itself to replica `pod` with, made from the gateway's
/// key (an admin reads it; pods cannot).
fn replica_proof(sim: &Cluster, pod: &str) -> String {
    let key = sim
        .kubectl_admin(&[
            "-n",
            NS,
            "get",
            "secret",
            kwg_contract::GATEWAY_KEY_SECRET,
            "-o",
            "go-template={{.data.privateKey | base64decode}}",
        ])
        .unwrap();
    let key: PrivateKey = key.trim().parse().unwrap();
    let nonce = siblings::Nonce::random();
    let proof =
        siblings::ReplicaKey::derive(&key).proof(pod, siblings::PATH, nonce, SystemTime::now());
    format!("{}: {proof}", siblings::HEADER)
}

/// A replica's own device statistics of the peer with `key` (`/replica/stats`, asked as a
/// sibling does): its last handshake (Unix ms) and received bytes.
fn local_stats(sim: &Cluster, pod: &str, key: &str) -> (Option<u64>, u64) {
    let proof = replica_proof(sim, pod);
    let said = replica_stats_from_a_pod(sim, pod, &["-H", &proof]);
    let body = said
        .strip_suffix(" 200")
        .unwrap_or_else(|| panic!("{said}"));
    let all: serde_json::Value = serde_json::from_str(body).expect("stats JSON");
    let me = all
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["publicKey"] == key);
    me.map_or((None, 0), |s| {
        (
            s["lastHandshakeMs"].as_u64(),
            s["rxBytes"].as_u64().unwrap_or(0),
        )
    })
}

fn key_of(sim: &Cluster, pod: &str, peer: &str) -> String {
    let p = peers_of(sim, pod)
        .into_iter()
        .find(|p| p.name.as_str() == peer);
    p.expect("the peer is served").public_key.to_string()
}

/// The replica holding `peer`'s session: the one whose own device saw its latest handshake.
fn session_holder(sim: &Cluster, peer: &str) -> String {
    let pods = ready_pods(sim);
    let key = key_of(sim, &pods[0], peer);
    pods.into_iter()
        .filter_map(|pod| Some((local_stats(sim, &pod, &key).0?, pod)))
        .max()
        .map(|(_, pod)| pod)
        .expect("no replica has a handshake with the laptop")
}

/// With several replicas, every replica's `/peers` (and the laptop's `kwg peers`) shows the
/// laptop's handshake and traffic as the replica holding its session counts them, though the
/// others never saw it; a pod asking a replica for its stats gets 403.
fn every_replica_reports_the_holders_session(sim: &Cluster, l: &kwg_e2e::laptop::Laptop) {
    let holder = session_holder(sim, "ha");
    let key = key_of(sim, &holder, "ha");
    let (held_hs, held_rx) = local_stats(sim, &holder, &key);
    for pod in ready_pods(sim) {
        let p = peers_of(sim, &pod)
            .into_iter()
            .find(|p| p.name.as_str() == "ha");
        let p = p.expect("served");
        let hs = p.last_handshake.map(|t| t.timestamp_millis() as u64);
        assert!(
            hs >= held_hs && p.rx_bytes >= held_rx,
            "{pod} /peers: {p:?}, holder {holder}: {held_hs:?} {held_rx}"
        );
        if pod != holder {
            let (own_hs, _) = local_stats(sim, &pod, &key);
            assert!(own_hs < held_hs, "{pod} holds a session too: {own_hs:?}");
        }
    }
    let rows: serde_json::Value =
        serde_json::from_slice(&l.kwg(&["peers", "-o", "json"]).stdout).expect("kwg peers JSON");
    let me = rows
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["name"] == "ha")
        .expect("own row");
    assert!(
        me["lastHandshake"].is_string() && me["rxBytes"].as_u64() > Some(0),
        "{me}"
    );
    let said = replica_stats_from_a_pod(sim, &holder, &[]);
    assert!(
        said.starts_with("forbidden") && said.ends_with(" 403"),
        "{said}"
    );
    let forged = format!(
        "{}: 1.{}.{}",
        siblings::HEADER,
        "0".repeat(32),
        "0".repeat(64)
    );
    let said = replica_stats_from_a_pod(sim, &holder, &["-H", &forged]);
    assert!(said.ends_with(" 403"), "{said}");
    // A proof read off the pod network is good for nothing: it names the replica it was made
    // for, which accepts it once.
    let proof = replica_proof(sim, &holder);
    let said = replica_stats_from_a_pod(sim, &holder, &["-H", &proof]);
    assert!(said.ends_with(" 200"), "{said}");
    let said = replica_stats_from_a_pod(sim, &holder, &["-H", &proof]);
    assert!(said.ends_with(" 403"), "replayed: {said}");
    let pods = ready_pods(sim);
    let other = pods.iter().find(|p| **p != holder).expect("two replicas");
    let said = replica_stats_from_a_pod(sim, other, &["-H", &replica_proof(sim, &holder)]);
    assert!(
        said.ends_with(" 403"),
        "made for {holder}, sent to {other}: {said}"
    );
}

fn lease_holder(sim: &Cluster) -> String {
    sim.kubectl_admin(&[
        "-n",
        NS,
        "get",
        "lease",
        "kwg-gateway",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ])
    .unwrap()
}

/// `kubectl rollout status` of the gateway (waits for the rollout to finish).
fn rollout_status(sim: &Cluster) -> String {
    let d = "deployment/kwg-gateway";
    sim.kubectl_admin(&["-n", NS, "rollout", "status", d, "--timeout=90s"])
        .unwrap()
}

/// Waits until `replicas` pods are Ready and nothing else runs.
fn wait_replicas(sim: &Cluster, replicas: usize) {
    kwg_e2e::wait_for("the gateway replicas", Duration::from_secs(60), || {
        let pods = kwg_e2e::gateway_pods(sim)?;
        Ok((pods.len() == replicas && pods.iter().all(|p| p.1)).then_some(()))
    })
    .unwrap();
}

#[test]
fn a_laptop_keeps_working_when_its_replica_is_deleted_and_through_a_rolling_restart() {
    let sim = Arc::new(Cluster::up().expect("kwg-sim up"));
    kwg_e2e::install_gateway_replicas(&sim, replicas()).expect("kubectl apply -k manifests/");
    let l = Arc::new(laptop(&sim, "ha"));
    l.join(&["--namespace", "emojivoto"]);
    let requests = RequestLoop::start(&l);
    requests.wait_steady(
        Instant::now(),
        Duration::from_secs(1),
        Duration::from_secs(20),
    );

    every_replica_reports_the_holders_session(&sim, &l);

    // 1. The replica holding the session is deleted.
    let holder = session_holder(&sim, "ha");
    let t = Instant::now();
    sim.kubectl_admin(&["-n", NS, "delete", "pod", &holder, "--wait=false"])
        .unwrap();
    requests.measure(t, &format!("failover, deleted pod {holder}"), gap_bound());
    wait_replicas(&sim, replicas());
    assert!(!ready_pods(&sim).contains(&holder));

    // 2. kubectl rollout restart: one new replica at a time, an old one goes once it is Ready.
    let before = ready_pods(&sim);
    let t = Instant::now();
    sim.kubectl_admin(&["-n", NS, "rollout", "restart", "deployment/kwg-gateway"])
        .unwrap();
    let status = rollout_status(&sim);
    assert!(status.contains("successfully rolled out"), "{status}");
    requests.measure(t, "rolling restart", gap_bound());
    wait_replicas(&sim, replicas());
    let after = ready_pods(&sim);
    assert!(
        after.iter().all(|p| !before.contains(p)),
        "{before:?} -> {after:?}"
    );
    // Both replicas serve the laptop at the same address.
    let ips: Vec<_> = after
        .iter()
        .map(|pod| {
            peers_of(&sim, pod)
                .into_iter()
                .find(|p| p.name.as_str() == "ha")
                .map(|p| p.tunnel_ip)
        })
        .collect();
    assert!(
        ips[0].is_some() && ips.iter().all(|ip| *ip == ips[0]),
        "{ips:?}"
    );
    drop(requests);
    assert!(l.kwg(&["leave"]).status.success());
}

#[test]
fn registrations_against_two_replicas_get_distinct_addresses_and_a_lease_is_collected_once() {
    let sim = Cluster::up().expect("kwg-sim up");
    kwg_e2e::install_gateway_replicas(&sim, 2).expect("kubectl apply -k manifests/");
    // One owner registers 50 peers: raise the per-owner limit (a rolling update, too).
    let patch = r#"[{"op":"add","path":"/spec/template/spec/containers/0/env/-","value":{"name":"KWG_MAX_PEERS_PER_OWNER","value":"100"}}]"#;
    sim.kubectl_admin(&[
        "-n",
        NS,
        "patch",
        "deployment/kwg-gateway",
        "--type=json",
        "-p",
        patch,
    ])
    .unwrap();
    rollout_status(&sim);
    wait_replicas(&sim, 2);
    kwg_e2e::wait_for("a leader", Duration::from_secs(20), || {
        Ok(Some(lease_holder(&sim)).filter(|h| ready_pods(&sim).contains(h)))
    })
    .unwrap();

    // 50 registrations at once, the leader killed after the first 25.
    let list = |range: std::ops::Range<usize>| {
        let items: Vec<_> = range
            .map(|i| {
                let expires = chrono::Utc::now() + chrono::Duration::hours(1);
                kwg_e2e::peer_secret_json(
                    &format!("ha-{i}"),
                    &PrivateKey::generate().public_key(),
                    expires,
                )
            })
            .collect();
        // One `kubectl apply` of 25 documents.
        let docs: Vec<String> = items.iter().map(|i| i.to_string()).collect();
        docs.join("\n---\n")
    };
    sim.kubectl_apply(&sim.developer_kubeconfig(), &list(0..25))
        .unwrap();
    let leader = lease_holder(&sim);
    sim.kubectl_admin(&["-n", NS, "delete", "pod", &leader, "--wait=false"])
        .unwrap();
    sim.kubectl_apply(&sim.developer_kubeconfig(), &list(25..50))
        .unwrap();
    let addresses = kwg_e2e::wait_for("50 addresses", Duration::from_secs(60), || {
        let out = sim.kubectl_admin(&[
            "-n",
            kwg_contract::DEFAULT_NAMESPACE,
            "get",
            "secrets",
            "-l",
            "kwg.io/peer=true",
            "-o",
            "json",
        ])?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        let anns: Vec<_> = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["metadata"]["annotations"].clone())
            .collect();
        let ips: Vec<String> = anns
            .iter()
            .filter_map(|a| {
                a[kwg_contract::TUNNEL_IP_ANNOTATION]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect();
        let errors: Vec<_> = anns
            .iter()
            .filter_map(|a| a[kwg_contract::ERROR_ANNOTATION].as_str())
            .collect();
        assert!(errors.is_empty(), "{errors:?}");
        Ok((ips.len() == 50).then_some(ips))
    })
    .unwrap();
    let distinct: std::collections::BTreeSet<String> = addresses.iter().cloned().collect();
    assert_eq!(distinct.len(), 50, "{addresses:?}");
    assert_ne!(
        lease_holder(&sim),
        leader,
        "a surviving replica took the Lease"
    );
    wait_replicas(&sim, 2);
    // Every replica serves all 50 at the annotated addresses.
    let pods = ready_pods(&sim);
    kwg_e2e::wait_for(
        "both replicas serving 50 peers",
        Duration::from_secs(20),
        || {
            Ok(pods
                .iter()
                .all(|pod| {
                    let ips: std::collections::BTreeSet<String> = peers_of(&sim, pod)
                        .iter()
                        .filter_map(|p| p.tunnel_ip)
                        .map(|ip| ip.to_string())
                        .collect();
                    ips.len() == 50 && ips.iter().all(|ip| distinct.contains(ip))
                })
                .then_some(()))
        },
    )
    .unwrap();

    // A lease that ends: the Secret goes, deleted by exactly one replica.
    kwg_e2e::register_peer(
        &sim,
        "ha-brief",
        &PrivateKey::generate().public_key(),
        Duration::from_secs(3),
    )
    .unwrap();
    kwg_e2e::wait_tunnel_ip(&sim, "ha-brief", Duration::from_secs(10)).unwrap();
    kwg_e2e::wait_for(
        "the expired peer collected",
        Duration::from_secs(30),
        || Ok((!kwg_e2e::laptop::secret_exists(&sim, "ha-brief")).then_some(())),
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let collected: u64 = pods
        .iter()
        .map(|pod| {
            let metrics = admin_get(&sim, pod, "metrics");
            metrics
                .lines()
                .find_map(|l| l.strip_prefix("kwg_gateway_leases_expired_total "))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0) as u64
        })
        .sum();
    assert_eq!(collected, 1, "leases collected over both replicas");
}
