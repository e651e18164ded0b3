//! What a new user trips over, and what must never be lost: each failure is one sentence of
//! ours naming the fix, with nothing left behind (no Secret, interface, route or DNS change).

use std::time::{Duration, Instant};

use kwg_e2e::laptop::{Laptop, laptop, secret_exists, shared, text};

/// Runs `kwg join` expected to fail; returns its stderr after checking that it is one line and
/// that nothing of the join is left on the laptop or in the cluster.
fn failed_join(laptop: &Laptop, argv: &[&str]) -> String {
    let original = laptop.resolv_conf();
    let out = laptop.run(argv);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{argv:?} succeeded: {err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(laptop.resolv_conf(), original);
    assert!(!laptop.routes().contains("kwg0"), "{}", laptop.routes());
    assert!(!secret_exists(&laptop.sim, &laptop.name));
    assert_eq!(laptop.kwg(&["status"]).status.code(), Some(1));
    err
}

#[test]
fn a_namespace_that_does_not_exist_is_refused_with_kubectls_words() {
    let sim = shared();
    let laptop = laptop(&sim, "typo");
    let name = laptop.name.clone();
    let err = failed_join(
        &laptop,
        &["kwg", "join", "--name", &name, "-n", "doesnotexist"],
    );
    assert!(
        err.contains("namespaces \"doesnotexist\" not found: kubectl get namespaces lists them"),
        "{err}"
    );
    let err = failed_join(
        &laptop,
        &[
            "kwg",
            "join",
            "--name",
            &name,
            "-n",
            "emojivoto",
            "--mapped-namespaces",
            "emojivoto,nope",
        ],
    );
    assert!(err.contains("namespaces \"nope\" not found"), "{err}");
}

#[test]
fn no_kubeconfig_is_one_sentence_with_the_path_once() {
    let sim = shared();
    let laptop = laptop(&sim, "nokube");
    let err = failed_join(
        &laptop,
        &[
            "env",
            "KUBECONFIG=/nonexistent/.kube/config",
            "kwg",
            "join",
            "--name",
            "nokube",
        ],
    );
    assert!(
        err.contains(
            "cannot read the kubeconfig /nonexistent/.kube/config: No such file or directory (os error 2): set KUBECONFIG or pass --kubeconfig"
        ),
        "{err}"
    );
    assert_eq!(err.matches("/nonexistent/.kube/config").count(), 1, "{err}");
}

#[test]
fn an_existing_interface_is_refused_and_survives() {
    let sim = shared();
    let laptop = laptop(&sim, "iface");
    laptop.run(&["ip", "tuntap", "add", "wg0", "mode", "tun"]);
    let err = failed_join(
        &laptop,
        &["kwg", "join", "--name", "iface", "--interface", "wg0"],
    );
    assert!(
        err.contains("interface wg0 already exists and is not kwg's"),
        "{err}"
    );
    let link = text(&laptop.run(&["ip", "link", "show", "wg0"]).stdout);
    assert!(link.contains("wg0"), "wg0 was removed: {link}");
}

#[test]
fn of_two_concurrent_joins_one_wins_and_keeps_working() {
    let sim = shared();
    let laptop = laptop(&sim, "race");
    let argv = ["join", "--name", "race", "--namespace", "emojivoto"];
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| laptop.kwg(&argv));
        let b = s.spawn(|| laptop.kwg(&argv));
        (a.join().unwrap(), b.join().unwrap())
    });
    let wins = [&a, &b].iter().filter(|o| o.status.success()).count();
    assert_eq!(wins, 1, "a: {}\nb: {}", text(&a.stderr), text(&b.stderr));
    let loser = if a.status.success() { &b } else { &a };
    // The loser meets the winner's daemon lock while it joins, or its session record once it
    // has: either sentence names the daemon and what to run.
    let said = text(&loser.stderr);
    assert!(
        said.contains("kwg is already joined or joining (daemon pid")
            || (said.contains("kwg is already joined to context")
                && said.contains("(daemon pid")
                && said.contains("run kwg leave --context")),
        "{said}"
    );
    assert!(text(&laptop.curl("web-app:80").stdout).contains("Emoji Vote"));
    assert_eq!(laptop.kwg(&["status"]).status.code(), Some(0));
    assert!(laptop.kwg(&["leave"]).status.success());
    assert!(!secret_exists(&sim, "race"));
}

#[test]
fn a_gateway_with_no_pod_fails_the_join_at_once() {
    // Its own cluster: scaling the gateway down would break the other tests' joins.
    let sim = std::sync::Arc::new(kwg_sim::testing::Cluster::up().expect("kwg-sim up"));
    kwg_e2e::install_gateway(&sim).expect("kubectl apply -k manifests/");
    sim.kubectl_admin(&[
        "-n",
        kwg_e2e::GATEWAY_NS,
        "scale",
        "deployment/kwg-gateway",
        "--replicas=0",
    ])
    .expect("scale");
    let laptop = laptop(&sim, "noready");
    kwg_e2e::wait_for("the gateway pod to go", Duration::from_secs(20), || {
        let pods = sim.kubectl_admin(&["-n", kwg_e2e::GATEWAY_NS, "get", "pods", "-o", "name"])?;
        Ok(pods.trim().is_empty().then_some(()))
    })
    .expect("gateway scaled to 0");
    let started = Instant::now();
    let err = failed_join(
        &laptop,
        &["kwg", "join", "--name", "noready", "-n", "emojivoto"],
    );
    assert!(
        err.contains("the kwg gateway has no ready pod (0/0 ready in kwg-gateway): kubectl -n kwg-gateway describe deployment kwg-gateway shows why"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

/// The laptop's firewall counter of dropped new connections from the tunnel.
fn firewall_drops(l: &Laptop) -> Option<u64> {
    let out = l.run(&["nft", "list", "table", "inet", "kwg_kwg0"]);
    if !out.status.success() {
        return None;
    }
    let t = text(&out.stdout);
    let line = t
        .lines()
        .find(|l| l.contains("counter") && l.contains("drop"))?;
    let mut words = line.split_whitespace();
    words.find(|w| *w == "packets")?;
    words.next()?.parse().ok()
}

#[test]
fn the_laptop_drops_new_connections_from_the_cluster_and_its_firewall_never_outlives_it() {
    let sim = shared();
    let l = laptop(&sim, "fw");
    for kill in [false, true] {
        l.join(&["--namespace", "emojivoto"]);
        let before = firewall_drops(&l).expect("the firewall table while joined");
        // The gateway pod itself (not forwarding: its own connection) calls the laptop.
        let status = text(&l.kwg(&["status", "-o", "json"]).stdout);
        let v: serde_json::Value = serde_json::from_str(&status).unwrap();
        let ip = v["tunnelIp"].as_str().unwrap().to_string();
        let gw = kwg_e2e::gateway_netns(&sim).unwrap();
        let call = sim
            .exec(
                &gw,
                &[
                    "curl",
                    "-sS",
                    "--max-time",
                    "2",
                    &format!("http://{ip}:22/"),
                ],
            )
            .unwrap();
        assert!(!call.status.success());
        // Replies to the laptop's own connections still pass.
        assert!(text(&l.curl("web-app:80").stdout).contains("Emoji Vote"));
        let after = firewall_drops(&l).unwrap();
        assert!(
            after > before,
            "the laptop's firewall dropped nothing ({before} -> {after})"
        );
        if kill {
            l.kill_daemon();
        }
        assert!(l.kwg(&["leave"]).status.success());
        assert_eq!(
            firewall_drops(&l),
            None,
            "the firewall table outlived leave"
        );
    }
}

#[test]
fn another_user_on_the_laptop_can_neither_leave_nor_read_the_daemons_state() {
    let sim = shared();
    let l = laptop(&sim, "second");
    l.join(&["--namespace", "emojivoto"]);
    let as_nobody = |args: &[&str]| {
        let argv = [&kwg_e2e::AS_NOBODY[..], &["kwg"], args].concat();
        l.run(&argv)
    };
    let leave = as_nobody(&["leave"]);
    assert!(
        !leave.status.success(),
        "another user left: {}",
        text(&leave.stdout)
    );
    assert!(
        text(&leave.stderr).contains("Permission denied"),
        "{}",
        text(&leave.stderr)
    );
    let socket = l.state.join("kwg.sock");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&socket).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let dir = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&l.state).unwrap().permissions(),
    );
    assert_eq!(dir & 0o777, 0o700);
    // The join is untouched.
    assert!(text(&l.curl("web-app:80").stdout).contains("Emoji Vote"));
    assert_eq!(l.kwg(&["status"]).status.code(), Some(0));
    assert!(l.kwg(&["leave"]).status.success());
}

#[test]
fn hostile_gateway_info_is_refused_before_anything_changes() {
    // An admin (or whoever may write the info ConfigMap) publishes info that would route half
    // the Internet through the tunnel; the laptop refuses it with the reason, and nothing of
    // the join is left. A namespace of its own, so the real gateway's info is not disturbed.
    let sim = shared();
    let l = laptop(&sim, "hostile");
    let mut info = serde_json::to_value(kwg_e2e::gateway_info(&sim).unwrap()).unwrap();
    info["podCidrs"]
        .as_array_mut()
        .unwrap()
        .push("0.0.0.0/1".into());
    let ns = "hostile-kwg";
    sim.kubectl_admin(&["create", "namespace", ns]).unwrap();
    kwg_e2e::put_gateway_info(&sim, ns, &info).unwrap();
    let out = l.run_as(
        "admin",
        &[
            "kwg",
            "join",
            "--name",
            "hostile",
            "--kwg-namespace",
            ns,
            "-n",
            "emojivoto",
        ],
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(9), "{err}");
    assert!(
        err.contains("refused cluster subnet 0.0.0.0/1 from the cluster: a prefix shorter than /8"),
        "{err}"
    );
    assert!(!l.routes().contains("kwg0"), "{}", l.routes());
    let secrets = sim
        .kubectl_admin(&["-n", ns, "get", "secrets", "-o", "name"])
        .unwrap();
    assert!(!secrets.contains("kwg-peer-hostile"), "{secrets}");
}
