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

fn kwg_link_state(r: &ResolvedNs) -> String {
    // The global view of every link: kwg's link and domains must not appear after leave.
    r.resolvectl(&["status"]).unwrap_or_default()
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
        // The first time as `sudo kwg join` would run it (the variables sudo sets, for a user
        // who is not root): with resolved managing DNS it stays root's and sets the link's DNS,
        // and sudo kwg status and sudo kwg leave act on that root session (the user has none).
        let sudo: &[&'static str] = match kill {
            false => &["SUDO_UID=65534", "SUDO_GID=65534", "SUDO_USER=nobody"],
            true => &[],
        };
        let as_typed = |argv: &[&'static str]| -> Vec<&'static str> {
            sudo.iter().chain(argv).copied().collect()
        };
        let out = run(
            &r,
            &l,
            &as_typed(&["kwg", "join", "--name", "rsv", "--namespace", "emojivoto"]),
        );
        assert!(
            out.status.success(),
            "join: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        if !kill {
            assert!(
                text(&out.stderr).contains(
                    "systemd-resolved manages DNS here and its per-link DNS needs root, so this join's cluster side runs as root, not as nobody"
                ),
                "{}",
                text(&out.stderr)
            );
        }
        assert!(
            text(&out.stdout).contains("DNS resolved"),
            "{}",
            text(&out.stdout)
        );
        let link = r.resolvectl(&["status", "kwg0"]).unwrap();
        for want in [
            "127.77.0.53",
            "~cluster.local",
            "emojivoto.svc.cluster.local",
            "~emojivoto",
        ] {
            assert!(
                link.contains(want),
                "{want} missing from resolvectl status kwg0:\n{link}"
            );
        }
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
            let after = kwg_link_state(&r);
            assert!(
                !after.contains("kwg0") && !after.contains("127.77.0.53"),
                "{after}"
            );
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
}
