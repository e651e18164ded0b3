//! `kwg status` tells the truth (issue 24): `Connected` only while the gateway answers through
//! the tunnel, the lease holds and the peer Secret exists; otherwise `Degraded` (exit 13) with
//! one health line per problem and its fix, and `kwg doctor` names the same cause instead of
//! blaming UDP or the resolver. One laptop on the shared cluster: the peer Secret deleted by
//! an admin, the lease lapsing while the daemon is stopped, the gateway scaled to 0.

use std::process::Output;
use std::time::Duration;

use kwg_e2e::laptop::{Laptop, laptop, secret_exists, shared, text};

const DEGRADED: i32 = 13;

/// `kwg status` and `kwg status -o json`: (exit code, text, JSON).
fn status(l: &Laptop) -> (Option<i32>, String, serde_json::Value) {
    let out = l.kwg(&["status"]);
    let json = l.kwg(&["status", "-o", "json"]);
    let v = serde_json::from_slice(&json.stdout).unwrap_or_else(|e| {
        panic!(
            "kwg status -o json: {e}: {}{}",
            text(&json.stdout),
            text(&json.stderr)
        )
    });
    (out.status.code(), text(&out.stdout), v)
}

/// The `kind`s of the status JSON's health lines.
fn kinds(v: &serde_json::Value) -> Vec<String> {
    v["health"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h["kind"].as_str().map(str::to_string))
        .collect()
}

fn doctor(l: &Laptop) -> String {
    let out: Output = l.kwg(&["doctor"]);
    text(&out.stdout)
}

/// Doctor must not send the user after the UDP firewall or the resolver file when the cause
/// is the peer or the gateway.
fn blames_nothing_local(doctor: &str) {
    assert!(!doctor.contains("allow outgoing UDP"), "{doctor}");
    assert!(!doctor.contains("rewrote"), "{doctor}");
}

fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?}:\n{text}"))
}

/// Sends `sig` to the daemon; a stopped daemon is continued when the test fails.
struct Stopped(String);

impl Stopped {
    fn new(l: &Laptop) -> Stopped {
        let s = Stopped(l.daemon_pid().to_string());
        s.signal("-STOP");
        s
    }
    fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .args([sig, &self.0])
            .status()
            .unwrap();
        assert!(ok.success(), "kill {sig} {}", self.0);
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        self.signal("-CONT");
    }
}

fn wait_connected(l: &Laptop, what: &str) {
    kwg_e2e::wait_for(what, Duration::from_secs(30), || {
        let (code, out, _) = status(l);
        Ok((code == Some(0)).then_some(out))
    })
    .unwrap_or_else(|e| panic!("{e}: {}", status(l).1));
}

#[test]
fn status_is_degraded_with_the_reason_and_doctor_names_it() {
    let sim = shared();
    let l = laptop(&sim, "truth");

    // Joined and healthy: Connected, exit 0, no health line.
    l.join(&["--namespace", "emojivoto"]);
    let (code, out, v) = status(&l);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(line(&out, "Status"), "Status          : Connected");
    assert_eq!(v["state"], "connected", "{v:#}");
    assert!(!out.contains("Health:"), "{out}");

    // 0. Something removes a route of the tunnel (NetworkManager, another VPN).
    let route = |verb: &str| {
        let out = l.run(&["ip", "route", verb, "10.96.0.0/12", "dev", "kwg0"]);
        assert!(
            out.status.success(),
            "ip route {verb}: {}",
            text(&out.stderr)
        );
    };
    route("del");
    let (code, out, v) = status(&l);
    let d = doctor(&l);
    route("add");
    assert_eq!(code, Some(DEGRADED), "{out}");
    assert_eq!(kinds(&v), ["routes-missing"], "{v:#}");
    assert!(
        out.contains("routes missing from kwg0: 10.96.0.0/12"),
        "{out}"
    );
    assert!(
        line(&d, "FAIL  daemon").contains("routes missing from kwg0: 10.96.0.0/12"),
        "{d}"
    );
    blames_nothing_local(&d);
    assert_eq!(status(&l).0, Some(0));

    // 1. An admin deletes the peer Secret: the gateway drops the peer at once.
    sim.kubectl_admin(&["-n", "kwg-system", "delete", "secret", "kwg-peer-truth"])
        .unwrap();
    let (code, out, v) = status(&l);
    assert_eq!(code, Some(DEGRADED), "{out}");
    assert_eq!(line(&out, "Status"), "Status          : Degraded");
    assert!(
        out.contains("the peer Secret kwg-system/kwg-peer-truth was deleted"),
        "{out}"
    );
    // The cause only: the gateway's silence follows from it.
    assert_eq!(kinds(&v), ["peer-deleted"], "{v:#}");
    assert_eq!(v["state"], "degraded");
    let d = doctor(&l);
    eprintln!("SEEN after the Secret was deleted:\n{out}\n{d}");
    assert!(
        line(&d, "FAIL  peer").contains("the peer Secret kwg-system/kwg-peer-truth was deleted"),
        "{d}"
    );
    blames_nothing_local(&d);
    assert!(l.kwg(&["leave"]).status.success());

    // 2. The lease lapses while the daemon is stopped (a suspended machine, a debugger): the
    // gateway collects the Secret, and status, without an answer from the daemon, says so.
    l.join(&["--namespace", "emojivoto", "--ttl", "6s"]);
    let stopped = Stopped::new(&l);
    kwg_e2e::wait_for(
        "the gateway to collect the lapsed peer Secret",
        Duration::from_secs(30),
        || Ok((!secret_exists(&sim, "truth")).then_some(())),
    )
    .unwrap();
    let (code, out, v) = status(&l);
    assert_eq!(code, Some(DEGRADED), "{out}");
    assert_eq!(line(&out, "Status"), "Status          : Degraded");
    assert_eq!(kinds(&v), ["daemon-unresponsive", "peer-deleted"], "{v:#}");
    assert!(out.contains("kill -CONT"), "{out}");
    assert!(out.contains("when the lease ended"), "{out}");
    let d = doctor(&l);
    eprintln!("SEEN with the daemon stopped past its lease:\n{out}\n{d}");
    assert!(line(&d, "FAIL  peer").contains("was deleted"), "{d}");
    let daemon = line(&d, "FAIL  daemon");
    assert!(daemon.contains("does not answer"), "{d}");
    assert!(daemon.contains("kill -CONT"), "{d}");
    blames_nothing_local(&d);
    drop(stopped);
    // Continued, the daemon registers again by itself.
    wait_connected(&l, "Connected again after the daemon continued");

    // 3. No gateway answers any more (scaled to 0 by an admin).
    let replicas = sim
        .kubectl_admin(&[
            "-n",
            "kwg-gateway",
            "get",
            "deployment",
            "kwg-gateway",
            "-o",
            "jsonpath={.spec.replicas}",
        ])
        .unwrap();
    let scale = |n: &str| {
        sim.kubectl_admin(&[
            "-n",
            "kwg-gateway",
            "scale",
            "deployment",
            "kwg-gateway",
            &format!("--replicas={n}"),
        ])
        .unwrap()
    };
    scale("0");
    kwg_e2e::wait_for("no gateway pod", Duration::from_secs(30), || {
        Ok(kwg_e2e::gateway_pods(&sim)?.is_empty().then_some(()))
    })
    .unwrap();
    let (code, out, v) = status(&l);
    let (d, restored) = {
        let d = doctor(&l);
        scale(replicas.trim());
        (
            d,
            kwg_e2e::wait_gateway_ready(&sim, Duration::from_secs(30)),
        )
    };
    eprintln!("SEEN with the gateway scaled to 0:\n{out}\n{d}");
    assert_eq!(code, Some(DEGRADED), "{out}");
    assert_eq!(kinds(&v), ["gateway-silent"], "{v:#}");
    assert!(
        out.contains("the gateway does not answer through the tunnel"),
        "{out}"
    );
    assert!(
        line(&d, "FAIL  gateway").contains("pods of Deployment kwg-gateway"),
        "{d}"
    );
    assert!(line(&d, "skip  udp").contains("(see gateway)"), "{d}");
    blames_nothing_local(&d);
    restored.unwrap();
    wait_connected(&l, "Connected again after the gateway came back");
    assert!(l.kwg(&["leave"]).status.success());
}
