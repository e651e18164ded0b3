//! `kwg join/status/peers/leave` on the one-machine cluster: the demo's transcript with
//! assertions, plus recovery, RBAC, mapped namespaces, also/never-proxy, two laptops and
//! non-root. Each test uses its own laptop (`kwg-sim laptop add`) on one shared cluster.

use kwg_e2e::laptop::{laptop, secret_exists, shared, text};

#[test]
fn walkthrough_join_status_curl_peers_leave() {
    let sim = shared();
    let laptop = laptop(&sim, "walk");
    let original = laptop.resolv_conf();
    assert_eq!(laptop.dig("intranet.corp.example"), "192.0.2.80");

    let join = laptop.join(&["--namespace", "emojivoto"]);
    assert!(
        text(&join.stdout).contains("Joined"),
        "{}",
        text(&join.stdout)
    );

    let status = laptop.kwg(&["status"]);
    assert!(status.status.success());
    let s = text(&status.stdout);
    for want in [
        "Status          : Connected",
        "Namespace       : emojivoto",
        "10.96.0.0/12",
        "Exclude suffixes: [.arpa .com .io .net .org .ru]",
    ] {
        assert!(s.contains(want), "kwg status lacks {want:?}:\n{s}");
    }
    let json: serde_json::Value =
        serde_json::from_slice(&laptop.kwg(&["status", "-o", "json"]).stdout).unwrap();
    assert_eq!(json["connected"], true);
    assert!(json["lastHandshake"].is_string(), "{json}");

    let page = laptop.curl("web-app:80");
    assert!(
        text(&page.stdout).contains("<title>Emoji Vote</title>"),
        "curl web-app:80: {}",
        text(&page.stderr)
    );
    assert!(text(&laptop.curl("web-app.emojivoto").stdout).contains("Emoji Vote"));
    assert!(text(&laptop.curl("echo.default").stdout).contains("<title>Echo</title>"));
    assert_eq!(laptop.dig("intranet.corp.example"), "192.0.2.80");
    let web = kwg_e2e::cluster_ip(&laptop.sim, "emojivoto", "web-app").expect("web-app");
    assert_eq!(laptop.dig("web-app"), web);
    let tcp = text(
        &laptop
            .run(&[
                "dig",
                "+tcp",
                "+short",
                "web-app.emojivoto.svc.cluster.local",
            ])
            .stdout,
    );
    assert!(tcp.trim().starts_with("10.96."), "dig +tcp: {tcp}");

    let peers = text(&laptop.kwg(&["peers"]).stdout);
    let me = peers
        .lines()
        .find(|l| l.starts_with('*'))
        .unwrap_or_else(|| panic!("no marked row:\n{peers}"));
    assert!(me.contains("walk") && me.contains("100.77."), "{peers}");

    let leave = laptop.kwg(&["leave"]);
    assert!(leave.status.success(), "{}", text(&leave.stderr));
    assert!(
        !laptop.curl("web-app:80").status.success(),
        "web-app:80 still answers after leave"
    );
    assert_eq!(
        laptop.resolv_conf(),
        original,
        "resolv.conf not restored byte for byte"
    );
    assert_eq!(laptop.dig("intranet.corp.example"), "192.0.2.80");
    assert!(!secret_exists(&sim, "walk"));
    assert!(!laptop.routes().contains("kwg0"));

    let again = laptop.kwg(&["leave"]);
    assert!(again.status.success());
    let st = laptop.kwg(&["status"]);
    assert_eq!(st.status.code(), Some(1));
    assert_eq!(
        text(&st.stdout).trim(),
        "kwg is not joined to a cluster: run `kwg join --namespace <ns>`."
    );
}

#[test]
fn killed_daemon_is_recovered_by_leave_and_by_the_next_join() {
    let sim = shared();
    let laptop = laptop(&sim, "kill");
    let original = laptop.resolv_conf();
    for recover_with_join in [false, true] {
        laptop.join(&["--namespace", "emojivoto"]);
        laptop.kill_daemon();
        // Even with the daemon dead the machine keeps working DNS (the original servers follow).
        assert_eq!(laptop.getent("intranet.corp.example"), "192.0.2.80");
        if recover_with_join {
            laptop.join(&["--namespace", "emojivoto"]);
            assert!(text(&laptop.curl("web-app:80").stdout).contains("Emoji Vote"));
        }
        let leave = laptop.kwg(&["leave"]);
        assert!(leave.status.success(), "{}", text(&leave.stderr));
        assert_eq!(laptop.resolv_conf(), original);
        assert!(!secret_exists(&sim, "kill"));
        assert!(!laptop.routes().contains("kwg0"), "{}", laptop.routes());
        assert!(!laptop.curl("web-app:80").status.success());
    }
}

#[test]
fn user_without_rights_gets_the_rbac_sentence_and_nothing_is_left() {
    let sim = shared();
    let laptop = laptop(&sim, "rbac");
    let original = laptop.resolv_conf();
    let out = laptop.run_as(
        "nobody",
        &["kwg", "join", "--name", "rbac", "--namespace", "emojivoto"],
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("is not allowed to") && err.contains("kwg-user"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(laptop.resolv_conf(), original);
    assert!(!laptop.routes().contains("kwg0"));
    assert!(!secret_exists(&sim, "rbac"));
    assert_eq!(laptop.kwg(&["status"]).status.code(), Some(1));
}

#[test]
fn mapped_namespaces_hide_other_names() {
    let sim = shared();
    let laptop = laptop(&sim, "mapped");
    laptop.join(&[
        "--namespace",
        "emojivoto",
        "--mapped-namespaces",
        "emojivoto",
    ]);
    assert!(text(&laptop.curl("web-app:80").stdout).contains("Emoji Vote"));
    assert!(!laptop.curl("echo.default").status.success());
    // NXDOMAIN, not a timeout (which `dig +short` would print as nothing too).
    assert_eq!(laptop.dig_status("echo.default"), "NXDOMAIN");
    assert_eq!(laptop.dig("intranet.corp.example"), "192.0.2.80");
}

#[test]
fn also_and_never_proxy_change_the_routes() {
    let sim = shared();
    let laptop = laptop(&sim, "proxy");
    laptop.join(&[
        "--namespace",
        "emojivoto",
        "--also-proxy",
        "172.30.0.0/16",
        "--never-proxy",
        "10.244.0.128/25",
    ]);
    let routes = laptop.routes();
    assert!(routes.contains("172.30.0.0/16 dev kwg0"), "{routes}");
    assert!(routes.contains("10.244.0.0/25 dev kwg0"), "{routes}");
    assert!(!routes.contains("10.244.0.0/24 dev kwg0"), "{routes}");
    let status = text(&laptop.kwg(&["status"]).stdout);
    assert!(status.contains("172.30.0.0/16 (--also-proxy)"), "{status}");
}

#[test]
fn two_laptops_appear_in_peers() {
    let sim = shared();
    let a = laptop(&sim, "twoa");
    let b = laptop(&sim, "twob");
    a.join(&["--namespace", "emojivoto"]);
    b.join(&["--namespace", "default"]);
    let rows: serde_json::Value =
        serde_json::from_slice(&a.kwg(&["peers", "-o", "json"]).stdout).unwrap();
    let names: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"twoa") && names.contains(&"twob"), "{rows}");
    let mine: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["thisMachine"] == true)
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(mine, ["twoa"]);
    assert!(text(&b.curl("echo:80").stdout).contains("Echo"));
}

#[test]
fn join_as_non_root_fails_with_the_privilege_sentence() {
    let sim = shared();
    let laptop = laptop(&sim, "noroot");
    // Without --tun a user without privilege gets userspace mode (tests/userspace.rs).
    let out = laptop.run(&[&kwg_e2e::AS_NOBODY[..], &["kwg", "join", "--tun"]].concat());
    assert!(!out.status.success());
    assert_eq!(out.status.code(), Some(3), "the privilege exit code");
    // No kwg-helper runs in the laptop namespace, and sudo cannot start one there (why
    // depends on the machine: no sudo, or no password for nobody).
    let err = text(&out.stderr);
    let err = err.trim();
    assert!(
        err.starts_with(
            "kwg: kwg join needs root or CAP_NET_ADMIN to create the tunnel interface, or kwg-helper to create it: \
             no helper answers on /run/kwg-helper/helper.sock and "
        ) && err.ends_with(
            ": run sudo kwg-helper install once (it says how to enable it), join with sudo, or pass --userspace"
        ),
        "{err}"
    );
}

#[test]
fn version_shows_both_ends_and_warns_outside_the_skew() {
    // The real gateway: its release and contract, within the skew (no warning).
    let sim = shared();
    let l = laptop(&sim, "vers");
    let out = l.kwg(&["version", "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let client = v["client"]["version"].as_str().unwrap().to_string();
    assert_eq!(v["gateway"]["version"], client.as_str(), "{v}");
    assert_eq!(v["gateway"]["contractVersion"], 1, "{v}");
    assert!(v.get("warnings").is_none(), "{v}");
    assert!(text(&out.stderr).is_empty(), "{}", text(&out.stderr));
    let out = l.kwg(&["version"]);
    let s = text(&out.stdout);
    assert!(s.contains(&format!("Gateway Version: {client}")), "{s}");
    assert!(l.kwg(&["--version"]).status.success());

    // Gateways of a newer and an older contract, and one older than the version field, in a
    // namespace of their own (the real gateway's info is not disturbed): exit 0, a warning
    // naming what to upgrade.
    let real = serde_json::to_value(kwg_e2e::gateway_info(&sim).unwrap()).unwrap();
    let ns = "version-kwg";
    sim.kubectl_admin(&["create", "namespace", ns]).unwrap();
    let version = |info: serde_json::Value| {
        kwg_e2e::put_gateway_info(&sim, ns, &info).unwrap();
        let out = l.run_as("admin", &["kwg", "version", "--kwg-namespace", ns]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        (text(&out.stdout), text(&out.stderr))
    };
    let (out, err) = version(serde_json::json!({"version": 2, "gatewayVersion": "9.0.0"}));
    assert!(out.contains("Gateway Contract: 2"), "{out}");
    assert!(
        err.contains("contract version 2, newer than the 1 this kwg understands")
            && err.trim_end().ends_with("upgrade kwg to 9.0.0"),
        "{err}"
    );
    let (_, err) = version(serde_json::json!({"version": 0}));
    assert!(err.contains("contract version 0, older"), "{err}");
    assert!(err.contains("upgrade the gateway to"), "{err}");
    let mut old = real.clone();
    old.as_object_mut().unwrap().remove("gatewayVersion");
    let (out, err) = version(old);
    assert!(out.contains("Gateway Version: unknown"), "{out}");
    assert!(err.contains("does not publish its release"), "{err}");
}
