//! `kwg doctor` as a user would run it: all checks pass on a healthy join; with UDP to the
//! gateway blocked, a route over a cluster subnet, a user without the kwg-user roles and the
//! gateway scaled to 0, the failing check names the fix and sets the exit code; the bundle
//! holds no private key, token or certificate. One test: scaling the gateway disturbs joins.

use std::process::Output;

use kwg_e2e::GATEWAY_NS;
use kwg_e2e::firewall::Blocked;
use kwg_e2e::laptop::{Laptop, laptop, shared, text};
use kwg_sim::names::{NODE_IP, NODE_POD_CIDR};

/// `kwg doctor -o json` (plus `extra`): its exit code and the checks by name.
fn doctor(l: &Laptop, extra: &[&str]) -> (i32, serde_json::Value, Output) {
    let mut args = vec!["doctor", "-o", "json"];
    args.extend_from_slice(extra);
    let out = l.kwg(&args);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "kwg doctor -o json: {e}:\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        )
    });
    let mut by_name = serde_json::Map::new();
    for c in json["checks"].as_array().unwrap() {
        by_name.insert(c["check"].as_str().unwrap().to_string(), c.clone());
    }
    (out.status.code().unwrap_or(-1), by_name.into(), out)
}

fn outcome(checks: &serde_json::Value, name: &str) -> String {
    checks[name]["outcome"]
        .as_str()
        .unwrap_or("missing")
        .to_string()
}

/// The developer's kubeconfig with its `user` replaced by `user_yaml` (indented 4), in a file
/// next to the laptop's state.
fn kubeconfig_with_user(l: &Laptop, file: &str, user_yaml: &str) -> String {
    let developer = std::fs::read_to_string(l.sim.names().kubeconfig("developer")).unwrap();
    let (head, _) = developer.split_once("users:").unwrap();
    let path = l.state.with_extension(file);
    std::fs::write(
        &path,
        format!("{head}users:\n- name: developer\n  user:\n{user_yaml}"),
    )
    .unwrap();
    path.to_str().unwrap().to_string()
}

/// A rejected token is a failed api check that says to log in again (not "authenticated as"
/// followed by a raw 401); a bundle made with an exec plugin's secret arguments, env values
/// and a proxy URL's user info holds none of them.
fn rejected_token_and_crafted_exec_arguments(l: &Laptop) {
    let bad = kubeconfig_with_user(l, "bad-token", "    token: kwg-revoked-token-0123456789\n");
    let (code, checks, out) = doctor(l, &["--kubeconfig", &bad]);
    eprintln!("api with a rejected token: {}", checks["api"]);
    assert_eq!(outcome(&checks, "api"), "fail", "{checks:#}");
    assert_eq!(code, 4, "{checks:#}");
    assert!(
        checks["api"]["detail"]
            .as_str()
            .unwrap()
            .ends_with("rejects the credentials (401 Unauthorized)"),
        "{checks:#}"
    );
    assert!(
        checks["api"]["fix"]
            .as_str()
            .unwrap()
            .starts_with("log in again"),
        "{checks:#}"
    );
    for name in ["rbac", "gateway", "peer"] {
        assert_eq!(outcome(&checks, name), "skip", "{name}: {checks:#}");
    }
    let all = text(&out.stdout);
    assert!(!all.contains("authenticated as"), "{all}");
    assert!(!all.contains("ApiError"), "{all}");
    let _ = std::fs::remove_file(&bad);

    let crafted = kubeconfig_with_user(
        l,
        "crafted",
        "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: /bin/false\n      args: [\"-p\", \"SHORT-FLAG-S3CRET\", \"POSITIONAL-T0KEN\", \"--role=dev\"]\n      env:\n      - name: PLUGIN_TOKEN\n        value: ENV-VALUE-S3CRET\n",
    );
    let crafted_text = std::fs::read_to_string(&crafted).unwrap().replace(
        "    server: https",
        "    proxy-url: http://proxyuser:PROXY-PASSW0RD@192.0.2.99:3128\n    server: https",
    );
    std::fs::write(&crafted, crafted_text).unwrap();
    let bundle = l.state.with_extension("crafted.tar.gz");
    let bundle_s = bundle.to_str().unwrap();
    l.kwg(&["doctor", "--kubeconfig", &crafted, "--bundle", bundle_s]);
    let unpacked = l.state.with_extension("crafted-bundle");
    std::fs::create_dir_all(&unpacked).unwrap();
    run_ok(
        l,
        &["tar", "-xzf", bundle_s, "-C", unpacked.to_str().unwrap()],
    );
    let kc = std::fs::read_to_string(unpacked.join("kwg-doctor/kubeconfig.yaml")).unwrap();
    for secret in [
        "SHORT-FLAG-S3CRET",
        "POSITIONAL-T0KEN",
        "ENV-VALUE-S3CRET",
        "PROXY-PASSW0RD",
        "proxyuser",
    ] {
        assert!(!kc.contains(secret), "{secret} in the bundle:\n{kc}");
    }
    assert!(kc.contains("/bin/false"), "{kc}");
    assert!(kc.contains("PLUGIN_TOKEN"), "{kc}");
    let _ = std::fs::remove_dir_all(&unpacked);
    let _ = std::fs::remove_file(&bundle);
    let _ = std::fs::remove_file(&crafted);
}

/// A load through the gateway over a LAN that cuts datagrams to its MTU, on a node whose
/// interface does not coalesce forwarded UDP (the sim's default): the gateway publishes that
/// datagrams arrive one per frame and doctor's node-tuning line warns with the ethtool fix.
fn node_tuning_warns_after_a_load_of_one_datagram_per_frame(l: &Laptop) {
    run_ok(l, &["ip", "link", "set", "eth0", "gso_max_segs", "1"]);
    let pod = l.sim.pod_ip("emojivoto", "web-app").unwrap();
    let started = std::time::Instant::now();
    // 1200-byte datagrams to a closed port of a pod: 60 000 in a few seconds is well over the
    // gateway's window (20 000 within 30 s), even if the daemon drops some on the way.
    l.sim
        .run_in(&l.netns, move || {
            let s = std::net::UdpSocket::bind("0.0.0.0:0").expect("a UDP socket");
            let buf = [7u8; 1200];
            for i in 0..60_000u32 {
                let _ = s.send_to(&buf, (pod.as_str(), 9));
                // At most ~20 000 a second: what a debug-build daemon carries without dropping most.
                if i % 20 == 0 {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
            Ok(())
        })
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let checks = loop {
        let (code, checks, _) = doctor(l, &[]);
        if outcome(&checks, "node-tuning") != "skip" || std::time::Instant::now() > deadline {
            assert_eq!(code, 0, "a warning keeps exit 0: {checks:#}");
            break checks;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    run_ok(l, &["ip", "link", "set", "eth0", "gso_max_segs", "65535"]);
    let metrics = text(&l.curl("http://100.77.0.1:8080/metrics").stdout);
    eprintln!(
        "the gateway's UDP receive:\n{}",
        metrics
            .lines()
            .filter(|l| l.starts_with("kwg_gateway_udp"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    eprintln!(
        "node-tuning after {:?}: {}",
        started.elapsed(),
        checks["node-tuning"]
    );
    assert_eq!(outcome(&checks, "node-tuning"), "warn", "{checks:#}");
    let c = &checks["node-tuning"];
    assert!(
        c["detail"]
            .as_str()
            .unwrap()
            .contains("one UDP datagram per frame under load"),
        "{c}"
    );
    // The gateway's log says so once (at most once an hour), naming the fix and the page.
    let warning = "UDP datagrams arrive one per frame under load";
    let mut logged = Vec::new();
    for pod in std::fs::read_dir(l.sim.names().run_dir().join("pods")).unwrap() {
        let dir = pod.unwrap().path();
        if dir
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("kwg-gateway_"))
        {
            let log = std::fs::read_to_string(dir.join("gateway.log")).unwrap_or_default();
            logged.extend(
                log.lines()
                    .filter(|l| l.contains(warning))
                    .map(String::from),
            );
        }
    }
    assert!(
        logged.len() == 1
            && logged[0].contains("ethtool -K <nic> rx-udp-gro-forwarding on")
            && logged[0].contains("docs/performance.md"),
        "{logged:#?}"
    );
    let fix = c["fix"].as_str().unwrap();
    assert!(
        fix.contains("ethtool -K <nic> rx-udp-gro-forwarding on")
            && fix.contains("docs/performance.md"),
        "{fix}"
    );
}

fn run_ok(l: &Laptop, argv: &[&str]) {
    let out = l.run(argv);
    assert!(out.status.success(), "{argv:?}: {}", text(&out.stderr));
}

#[test]
fn doctor_passes_a_healthy_join_and_names_the_fix_of_each_failure() {
    let sim = shared();
    let l = laptop(&sim, "doctor");

    // Not joined: what can be checked passes, the rest says why it was not tested.
    let (code, checks, _) = doctor(&l, &[]);
    assert_eq!(code, 0, "{checks:#}");
    for name in ["kubeconfig", "api", "rbac", "gateway", "clock", "routes"] {
        assert_eq!(outcome(&checks, name), "pass", "{name}: {checks:#}");
    }
    for name in ["udp", "dns", "daemon"] {
        assert_eq!(outcome(&checks, name), "skip", "{name}: {checks:#}");
    }
    assert!(
        checks["udp"]["detail"]
            .as_str()
            .unwrap()
            .starts_with("not tested: not joined")
    );

    // Joined and healthy: every check passes, one line each. UDP only: with the default
    // transport (auto) kwg would move to TCP when UDP is blocked below, and doctor would warn
    // instead.
    l.join(&["--namespace", "emojivoto", "--transport", "udp"]);
    let (code, checks, _) = doctor(&l, &[]);
    assert_eq!(code, 0, "{checks:#}");
    for (name, c) in checks.as_object().unwrap() {
        if name != "node-tuning" {
            assert_eq!(c["outcome"], "pass", "{name}: {checks:#}");
        }
    }
    // The gateway has not carried a load yet: nothing to judge.
    assert_eq!(outcome(&checks, "node-tuning"), "skip", "{checks:#}");
    assert_eq!(checks.as_object().unwrap().len(), 11, "{checks:#}");
    let out = l.kwg(&["doctor"]);
    let lines = text(&out.stdout);
    eprintln!("kwg doctor (healthy join):\n{lines}");
    assert!(out.status.success());
    assert_eq!(
        lines.lines().filter(|l| l.starts_with("ok ")).count(),
        10,
        "{lines}"
    );
    assert!(lines.contains("lease ends in"), "{lines}");

    // The bundle: the expected files, and no private key, token or certificate.
    let bundle = l.state.with_extension("bundle.tar.gz");
    let bundle_s = bundle.to_str().unwrap();
    let out = l.kwg(&["doctor", "--bundle", bundle_s]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let unpacked = l.state.with_extension("bundle");
    std::fs::create_dir_all(&unpacked).unwrap();
    run_ok(
        &l,
        &["tar", "-xzf", bundle_s, "-C", unpacked.to_str().unwrap()],
    );
    let files = unpacked.join("kwg-doctor");
    let mut all = String::new();
    for name in [
        "versions.txt",
        "checks.txt",
        "checks.json",
        "status.json",
        "state.json",
        "daemon.log",
        "kubeconfig.yaml",
    ] {
        let t = std::fs::read_to_string(files.join(name))
            .unwrap_or_else(|e| panic!("{name} not in the bundle: {e}"));
        all.push_str(&t);
    }
    let private = std::fs::read_to_string(l.state.join("private.key")).unwrap();
    let kubeconfig = std::fs::read_to_string(sim.names().kubeconfig("developer")).unwrap();
    let token = kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("token:"))
        .map(|t| t.trim().trim_matches('"').to_string());
    assert!(
        !all.contains(private.trim()),
        "the private key is in the bundle"
    );
    if let Some(token) = &token {
        assert!(!all.contains(token.as_str()), "the token is in the bundle");
    }
    for marker in ["BEGIN CERTIFICATE", "PRIVATE KEY-----", "LS0tLS1C"] {
        assert!(!all.contains(marker), "{marker} in the bundle");
    }
    assert!(all.contains("REDACTED"), "nothing was redacted: {all}");
    let _ = std::fs::remove_dir_all(&unpacked);
    let _ = std::fs::remove_file(&bundle);

    rejected_token_and_crafted_exec_arguments(&l);
    node_tuning_warns_after_a_load_of_one_datagram_per_frame(&l);

    // UDP to the gateway dropped: the udp check fails first and names it.
    let block = Blocked::new(&l, &format!("ip daddr {NODE_IP} meta l4proto udp drop"));
    let (code, checks, _) = doctor(&l, &[]);
    drop(block);
    eprintln!("udp: {}", checks["udp"]);
    assert_eq!(outcome(&checks, "udp"), "fail", "{checks:#}");
    assert_eq!(code, 6, "{checks:#}");
    let fix = checks["udp"]["fix"].as_str().unwrap();
    assert!(
        fix.starts_with(&format!("allow outgoing UDP to {NODE_IP}:")),
        "{fix}"
    );

    // A route of this machine over a cluster subnet (another VPN's, in its own table).
    run_ok(
        &l,
        &[
            "ip",
            "route",
            "add",
            "10.244.0.0/25",
            "dev",
            "eth0",
            "table",
            "77",
        ],
    );
    let (code, checks, _) = doctor(&l, &[]);
    run_ok(
        &l,
        &[
            "ip",
            "route",
            "del",
            "10.244.0.0/25",
            "dev",
            "eth0",
            "table",
            "77",
        ],
    );
    eprintln!("routes: {}", checks["routes"]);
    // A pod CIDR is mapped at join (virtual subnets): a warning, not a failure.
    assert_eq!(outcome(&checks, "routes"), "warn", "{checks:#}");
    assert_eq!(code, 0, "{checks:#}");
    let detail = checks["routes"]["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!(
            "{NODE_POD_CIDR} (pod CIDR) overlaps the route 10.244.0.0/25 dev eth0 table 77"
        )),
        "{detail}"
    );
    let fix = checks["routes"]["fix"].as_str().unwrap();
    assert!(
        fix.starts_with(&format!("kwg join maps {NODE_POD_CIDR} onto a free range"))
            && fix.contains(&format!("--allow-conflicting-subnets {NODE_POD_CIDR}")),
        "{fix}"
    );

    // A user without the kwg-user roles.
    let nobody = sim.nobody_kubeconfig();
    let (code, checks, _) = doctor(&l, &["--kubeconfig", nobody.to_str().unwrap()]);
    eprintln!("rbac: {}", checks["rbac"]);
    assert_eq!(outcome(&checks, "rbac"), "fail", "{checks:#}");
    assert_eq!(code, 4, "{checks:#}");
    assert!(
        checks["rbac"]["detail"].as_str().unwrap().starts_with(
            "nobody may not create, get, list, watch, update, patch, delete secrets in kwg-system;"
        ),
        "{checks:#}"
    );
    assert!(
        checks["rbac"]["fix"]
            .as_str()
            .unwrap()
            .contains("manifests/rbac-user-binding.yaml")
    );

    // Userspace mode: the tunnel probe goes through its proxy; no routes, no DNS change.
    let u = laptop(&sim, "doctorus");
    u.join(&["--namespace", "emojivoto", "--userspace"]);
    let (code, checks, _) = doctor(&u, &[]);
    assert_eq!(code, 0, "{checks:#}");
    assert_eq!(outcome(&checks, "udp"), "pass", "{checks:#}");
    assert_eq!(outcome(&checks, "daemon"), "pass", "{checks:#}");
    for name in ["routes", "dns"] {
        assert_eq!(outcome(&checks, name), "skip", "{name}: {checks:#}");
        assert!(
            checks[name]["detail"]
                .as_str()
                .unwrap()
                .starts_with("userspace mode")
        );
    }
    assert!(u.kwg(&["leave"]).status.success());

    // The gateway scaled to 0.
    assert!(l.kwg(&["leave"]).status.success());
    sim.kubectl_admin(&[
        "-n",
        GATEWAY_NS,
        "scale",
        "deployment/kwg-gateway",
        "--replicas=0",
    ])
    .unwrap();
    kwg_e2e::wait_for(
        "no gateway pods",
        std::time::Duration::from_secs(30),
        || Ok(kwg_e2e::gateway_pods(&sim)?.is_empty().then_some(())),
    )
    .unwrap();
    let (code, checks, _) = doctor(&l, &[]);
    sim.kubectl_admin(&[
        "-n",
        GATEWAY_NS,
        "scale",
        "deployment/kwg-gateway",
        "--replicas=1",
    ])
    .unwrap();
    eprintln!("gateway: {}", checks["gateway"]);
    assert_eq!(outcome(&checks, "gateway"), "fail", "{checks:#}");
    assert_eq!(code, 5, "{checks:#}");
    assert_eq!(
        checks["gateway"]["fix"].as_str().unwrap(),
        format!("scale it up: kubectl -n {GATEWAY_NS} scale deployment kwg-gateway --replicas=1")
    );
}
