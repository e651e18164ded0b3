//! `kwg join` on a laptop whose DNS is managed by the real systemd-resolved (Debian's package
//! unpacked and run in the laptop's namespace on a private bus, `/etc/resolv.conf` its stub):
//! auto mode picks resolved, sets the tunnel link's DNS and domains, cluster and LAN names
//! resolve through the stub, and nothing of kwg stays in resolved after `leave` or `kill -9`.

use std::net::IpAddr;
use std::process::Output;

use kwg_e2e::laptop::{Laptop, laptop, path_with_bins, secret_exists, shared, text};
use kwg_sim::names::LAN_DNS_IP;
use kwg_sim::testing::ResolvedNs;

/// `argv` inside resolved's mount and network namespace, as the developer.
fn run(r: &ResolvedNs, l: &Laptop, argv: &[&str]) -> Output {
    let state = format!("KWG_STATE_DIR={}", l.state.display());
    let kubeconfig = format!(
        "KUBECONFIG={}",
        l.sim.names().kubeconfig("developer").display()
    );
    let path = format!("PATH={}", path_with_bins());
    let mut all = vec!["env", &state, &kubeconfig, &path];
    all.extend_from_slice(argv);
    r.exec(&all).unwrap()
}

/// The first address glibc resolves for `name` (through the stub).
/// The first address glibc resolves for `name`, or `None` when getent says it has none
/// (exit 2); any other failure panics.
fn getent(r: &ResolvedNs, l: &Laptop, name: &str) -> Option<String> {
    let out = run(r, l, &["getent", "ahostsv4", name]);
    match out.status.code() {
        Some(0) => Some(
            text(&out.stdout)
                .split_whitespace()
                .next()
                .unwrap_or_else(|| panic!("getent {name} printed nothing"))
                .to_string(),
        ),
        Some(2) => None,
        _ => panic!("getent ahostsv4 {name}: {out:?}"),
    }
}

/// `<svc>.<ns>` of a namespace other than the joined one resolves through resolved (it routes
/// a two-label name by its last label: kwg's link needs `~<ns>` for each), and so does one of
/// a namespace created after the join; a deleted namespace loses its routing domain.
fn every_namespace_resolves_and_follows_new_ones(r: &ResolvedNs, l: &Laptop) {
    let cluster_ip = |ns: &str, svc: &str| {
        l.sim
            .kubectl_admin(&[
                "-n",
                ns,
                "get",
                "svc",
                svc,
                "-o",
                "jsonpath={.spec.clusterIP}",
            ])
            .unwrap()
    };
    let echo = cluster_ip("default", "echo");
    assert_eq!(getent(r, l, "echo.default").as_deref(), Some(echo.as_str()));
    l.sim
        .kubectl_admin(&["create", "namespace", "late"])
        .unwrap();
    l.sim
        .kubectl_admin(&[
            "-n",
            "late",
            "create",
            "service",
            "clusterip",
            "late-svc",
            "--tcp=80:8080",
        ])
        .unwrap();
    let late = cluster_ip("late", "late-svc");
    let created = std::time::Instant::now();
    kwg_e2e::wait_for(
        "late-svc.late to resolve through resolved",
        std::time::Duration::from_secs(20),
        || Ok((getent(r, l, "late-svc.late").as_deref() == Some(late.as_str())).then_some(())),
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}\n{}",
            r.resolvectl(&["status", "kwg0"]).unwrap_or_default()
        )
    });
    eprintln!(
        "MEASURED: a namespace created while joined resolves through resolved after {:.1} s",
        created.elapsed().as_secs_f64()
    );
    assert!(
        r.resolvectl(&["status", "kwg0"]).unwrap().contains("~late"),
        "no ~late on kwg0"
    );
    l.sim
        .kubectl_admin(&["delete", "namespace", "late"])
        .unwrap();
    kwg_e2e::wait_for(
        "~late to leave kwg0's domains",
        std::time::Duration::from_secs(30),
        || Ok((!r.resolvectl(&["status", "kwg0"])?.contains("~late")).then_some(())),
    )
    .unwrap();
}

/// kwg's link in resolved: the forwarder, the cluster's domains, never the default route.
fn assert_kwg_link(r: &ResolvedNs) {
    let link = r.resolvectl(&["status", "kwg0"]).unwrap();
    for want in [
        "127.77.0.53",
        "~cluster.local",
        "emojivoto.svc.cluster.local",
        "~emojivoto",
        "-DefaultRoute",
    ] {
        assert!(
            link.contains(want),
            "{want} missing from resolvectl status kwg0:\n{link}"
        );
    }
}

fn kwg_link_state(r: &ResolvedNs) -> String {
    // The global view of every link: kwg's link and domains must not appear after leave.
    // `resolvectl status` (no link named) lists every link and succeeds whenever resolved
    // answers, so a failure is resolved or its bus being gone, never "kwg's link reverted".
    r.resolvectl(&["status"])
        .unwrap_or_else(|e| panic!("resolvectl status failed (is resolved still running?): {e:#}"))
}

/// Polls resolved (every 50 ms) until neither kwg's link nor its forwarder appears, and
/// returns how long that took. The bound is generous for a loaded 2-core CI machine: the
/// figure that matters is the MEASURED line the caller prints.
fn wait_kwg_link_gone(
    r: &ResolvedNs,
    after: &str,
    context: impl Fn() -> String,
) -> std::time::Duration {
    let bound = std::time::Duration::from_secs(10);
    let t = std::time::Instant::now();
    loop {
        let all = kwg_link_state(r);
        if !all.contains("kwg0") && !all.contains("127.77.0.53") {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < bound,
            "resolved still has kwg's link {bound:?} after {after}:\n{all}\n{}",
            context()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn auto_mode_uses_systemd_resolved_and_leaves_nothing_behind() {
    let sim = shared();
    let l = laptop(&sim, "rsv");
    let r = ResolvedNs::start(&l.netns, IpAddr::V4(LAN_DNS_IP)).expect("start systemd-resolved");
    let web_app = sim
        .kubectl_admin(&[
            "-n",
            "emojivoto",
            "get",
            "svc",
            "web-app",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ])
        .unwrap();
    assert_eq!(
        getent(&r, &l, "intranet.corp.example").as_deref(),
        Some("192.0.2.80")
    );

    for kill in [false, true] {
        // A root join; the first time `sudo kwg status` and `sudo kwg leave` (the variables sudo
        // sets, for a user who is not root; KUBECONFIG reset as sudo's env_reset does: one kept
        // is refused on root's session) act on that root session: the user has none.
        let sudo: &[&'static str] = match kill {
            false => &[
                "SUDO_UID=65534",
                "SUDO_GID=65534",
                "SUDO_USER=nobody",
                "KUBECONFIG=",
            ],
            true => &[],
        };
        let as_typed = |argv: &[&'static str]| -> Vec<&'static str> {
            sudo.iter().chain(argv).copied().collect()
        };
        let out = run(
            &r,
            &l,
            &["kwg", "join", "--name", "rsv", "--namespace", "emojivoto"],
        );
        assert!(
            out.status.success(),
            "join: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        assert!(
            text(&out.stdout).contains("DNS resolved"),
            "{}",
            text(&out.stdout)
        );
        assert_kwg_link(&r);
        for name in [
            "web-app",
            "web-app.emojivoto",
            "web-app.emojivoto.svc.cluster.local",
        ] {
            assert_eq!(
                getent(&r, &l, name).as_deref(),
                Some(web_app.as_str()),
                "{name}"
            );
        }
        assert_eq!(
            getent(&r, &l, "intranet.corp.example").as_deref(),
            Some("192.0.2.80")
        );
        if !kill {
            every_namespace_resolves_and_follows_new_ones(&r, &l);
        }
        let page = run(
            &r,
            &l,
            &["curl", "-sS", "--max-time", "3", "http://web-app:80"],
        );
        assert!(
            text(&page.stdout).contains("Emoji Vote"),
            "{}",
            text(&page.stderr)
        );
        let status = text(&run(&r, &l, &as_typed(&["kwg", "status", "-o", "json"])).stdout);
        assert!(status.contains("\"mode\": \"resolved\""), "{status}");
        // kwg doctor sees queries for a cluster name reach kwg through resolved.
        let doctor = run(&r, &l, &["kwg", "doctor", "-o", "json"]);
        let checks: serde_json::Value = serde_json::from_slice(&doctor.stdout).unwrap();
        let dns = checks["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["check"] == "dns")
            .unwrap();
        assert_eq!(dns["outcome"], "pass", "{checks:#}");
        assert!(
            dns["detail"]
                .as_str()
                .unwrap()
                .starts_with("mode resolved: kubernetes.default.svc.cluster.local resolves to"),
            "{dns}"
        );

        if kill {
            l.kill_daemon();
            // The TUN went with the process, and resolved forgot its DNS settings.
            let took = wait_kwg_link_gone(&r, "kill -9 of the daemon", || String::new());
            eprintln!("MEASURED: resolved forgot kwg's link {took:?} after kill -9 of the daemon");
            assert_eq!(
                getent(&r, &l, "intranet.corp.example").as_deref(),
                Some("192.0.2.80")
            );
            // kwg doctor names the dead daemon and the fix.
            let doctor = run(&r, &l, &["kwg", "doctor"]);
            let out = text(&doctor.stdout);
            assert_eq!(doctor.status.code(), Some(1), "{out}");
            assert!(
                out.lines().any(|l| l.starts_with("FAIL  daemon")
                    && l.ends_with("fix: run kwg leave, then kwg join")),
                "{out}"
            );
            assert!(
                out.lines().any(|l| l.starts_with("skip  dns")
                    && l.ends_with("joined, but the daemon does not answer (see daemon)")),
                "{out}"
            );
        }
        if !kill {
            // Something reverts kwg's link: status is Degraded and says so.
            r.resolvectl(&["revert", "kwg0"]).unwrap();
            let out = run(&r, &l, &["kwg", "status", "-o", "json"]);
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(out.status.code(), Some(13), "{v:#}");
            assert_eq!(v["health"][0]["kind"], "dns-missing", "{v:#}");
            assert!(
                v["health"][0]["message"]
                    .as_str()
                    .unwrap()
                    .starts_with("systemd-resolved no longer sends cluster names to kwg"),
                "{v:#}"
            );
        }
        let leave = run(&r, &l, &as_typed(&["kwg", "leave"]));
        assert!(leave.status.success(), "{}", text(&leave.stderr));
        if !kill {
            assert!(
                text(&leave.stderr).contains("kwg: nobody has no kwg session, root has one"),
                "{}",
                text(&leave.stderr)
            );
        }
        let after = kwg_link_state(&r);
        assert!(
            !after.contains("kwg0") && !after.contains("127.77.0.53"),
            "{after}"
        );
        assert!(getent(&r, &l, "web-app.emojivoto").is_none());
        assert_eq!(
            getent(&r, &l, "intranet.corp.example").as_deref(),
            Some("192.0.2.80")
        );
        assert!(!secret_exists(&sim, "rsv"));
    }
    a_user_joins_through_the_helper(&r, &l, &web_app);
}

/// A normal user (no privilege, no polkit here: resolved refuses its per-link calls) joins in
/// TUN mode through a kwg-helper running in resolved's namespaces: the helper sets the link's
/// server (the forwarder it bound for the session) and domains in resolved, names resolve
/// through the stub, and soon after `kill -9` of the user's daemon (MEASURED; 10 s bound) the helper has reverted
/// the link (RevertLink, then the link itself) and resolved sends nothing to kwg.
fn a_user_joins_through_the_helper(r: &ResolvedNs, l: &Laptop, web_app: &str) {
    use std::os::unix::fs::PermissionsExt;
    const USER: u32 = 64041;
    let dir = std::path::PathBuf::from(format!("/tmp/kwg-e2e-rsvu-{}", l.sim.prefix()));
    let _ = std::fs::remove_dir_all(&dir);
    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let kubeconfig = home.join("kubeconfig");
    std::fs::copy(l.sim.names().kubeconfig("developer"), &kubeconfig).unwrap();
    for p in [&kubeconfig, &home] {
        std::os::unix::fs::chown(p, Some(USER), Some(USER)).unwrap();
    }
    // The bus (dbus-daemon) serves only uids of the user database, as on a real machine; this
    // /etc is the namespace's overlay.
    r.exec_ok(&[
        "sh",
        "-c",
        "echo 'kwg-e2e:x:64041:64041::/nonexistent:/bin/sh' >> /etc/passwd",
    ])
    .unwrap();
    let socket = dir.join("helper.sock");
    let log = std::fs::File::create(dir.join("helper.log")).unwrap();
    let mut helper = r
        .command(&kwg_sim::bin_path("kwg-helper").display().to_string())
        .arg("serve")
        .arg("--socket")
        .arg(&socket)
        .arg("--journal")
        .arg(dir.join("journal"))
        .args(["--group", "kwg-test-no-such-group", "--allow-uid"])
        .arg(USER.to_string())
        .stderr(log)
        .spawn()
        .unwrap();
    let helper_log = || std::fs::read_to_string(dir.join("helper.log")).unwrap_or_default();
    kwg_e2e::wait_for(
        "kwg-helper's socket",
        std::time::Duration::from_secs(15),
        || Ok(socket.exists().then_some(())),
    )
    .unwrap();
    let as_user = |argv: &[&str]| {
        let uid = USER.to_string();
        let mut all = vec![
            "setpriv",
            "--reuid",
            &uid,
            "--regid",
            &uid,
            "--clear-groups",
        ];
        let env = [
            format!("HOME={}", home.display()),
            format!("PATH={}", path_with_bins()),
            format!("KUBECONFIG={}", kubeconfig.display()),
            format!("KWG_STATE_DIR={}/kwg", home.display()),
            format!("KWG_HELPER_SOCKET={}", socket.display()),
        ];
        all.extend(["env", "-i"]);
        all.extend(env.iter().map(String::as_str));
        all.extend_from_slice(argv);
        r.exec(&all).unwrap()
    };
    let out = as_user(&["kwg", "join", "--name", "rsvu", "-n", "emojivoto"]);
    let daemon_log = || std::fs::read_to_string(home.join("kwg/daemon.log")).unwrap_or_default();
    assert!(
        out.status.success() && text(&out.stdout).contains("DNS resolved"),
        "the user's join: {}{}\ndaemon log:\n{}\nhelper log:\n{}",
        text(&out.stdout),
        text(&out.stderr),
        daemon_log(),
        helper_log()
    );
    assert_kwg_link(r);
    for name in ["web-app", "web-app.emojivoto"] {
        assert_eq!(getent(r, l, name).as_deref(), Some(web_app), "{name}");
    }
    assert_eq!(
        getent(r, l, "intranet.corp.example").as_deref(),
        Some("192.0.2.80")
    );
    let status = text(&as_user(&["kwg", "status", "-o", "json"]).stdout);
    assert!(status.contains("\"mode\": \"resolved\""), "{status}");
    // The domains follow the cluster's namespaces through the helper too.
    every_namespace_resolves_and_follows_new_ones(r, l);
    // kill -9 of the user's daemon (it runs as the user): the helper reverts the link.
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(home.join("kwg/state.json")).unwrap()).unwrap();
    let pid = state["daemonPid"]
        .as_i64()
        .expect("the daemon's pid")
        .to_string();
    let owner = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        owner
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("64041")),
        "{owner}"
    );
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let took = wait_kwg_link_gone(r, "kill -9 of the user's daemon", || {
        format!("helper log:\n{}", helper_log())
    });
    eprintln!("MEASURED: resolved's link reverted {took:?} after kill -9 of the user's daemon");
    assert!(getent(r, l, "web-app.emojivoto").is_none());
    let left = as_user(&["kwg", "leave"]);
    assert!(left.status.success(), "{}", text(&left.stderr));
    a_namespace_named_like_another_links_domain_is_left_out(r, l, web_app, &as_user);
    let _ = helper.kill();
    let _ = helper.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A namespace named like the last label of another link's domain (`lan`, next to the LAN
/// link's `home.lan`) is one domain kwg-helper refuses on the user's link (systemd-resolved
/// would send `router.lan`-style names to kwg): the join leaves that namespace out and says
/// so once, naming it and the domain, and every other name resolves. Before, the helper
/// refused the whole request and the user's join failed without DNS.
fn a_namespace_named_like_another_links_domain_is_left_out(
    r: &ResolvedNs,
    l: &Laptop,
    web_app: &str,
    as_user: &dyn Fn(&[&str]) -> Output,
) {
    r.resolvectl(&["domain", "eth0", "~home.lan"]).unwrap();
    l.sim
        .kubectl_admin(&["create", "namespace", "lan"])
        .unwrap();
    let out = as_user(&["kwg", "join", "--name", "rsvl", "-n", "emojivoto"]);
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{said}");
    let warning =
        "Warning: namespace lan is left out of this session's domains in systemd-resolved";
    assert_eq!(said.matches(warning).count(), 1, "{said}");
    assert!(said.contains("it overlaps ~home.lan of link"), "{said}");
    let link = r.resolvectl(&["status", "kwg0"]).unwrap();
    assert!(
        link.contains("~emojivoto") && !link.contains("~lan"),
        "{link}"
    );
    for name in ["web-app", "web-app.emojivoto"] {
        assert_eq!(getent(r, l, name).as_deref(), Some(web_app), "{name}");
    }
    let left = as_user(&["kwg", "leave"]);
    assert!(left.status.success(), "{}", text(&left.stderr));
    l.sim
        .kubectl_admin(&["delete", "namespace", "lan"])
        .unwrap();
    r.resolvectl(&["revert", "eth0"]).unwrap();
}
