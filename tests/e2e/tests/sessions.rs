//! Several clusters at once (issue 27): one laptop on two one-machine clusters with distinct
//! LANs and CIDRs, each gateway installed with the shipped manifests (a tunnel CIDR of its
//! own, picked at random), each web-app serving a page naming its cluster. A session per
//! kubeconfig context: `<svc>.<ns>.svc.<alias>` reaches each one's own web-app, short names
//! the first (primary) session's, `kwg status` lists both, `kwg leave` asks for
//! `--context`/`--all`, and leaving one leaves the other working and nothing of the first.

use std::sync::Arc;
use std::time::Duration;

use kwg_e2e::laptop::{Laptop, text};
use kwg_sim::testing::Cluster;

/// `kubectl apply -k manifests/` as shipped (no tunnel CIDR set), one replica, and the info
/// the gateway published.
fn install_default(c: &Cluster) -> kwg_contract::GatewayInfo {
    let manifests = kwg_e2e::repo_root().join("manifests");
    c.kubectl_admin(&["apply", "-k", manifests.to_str().unwrap()])
        .expect("kubectl apply -k manifests/");
    c.kubectl_admin(&[
        "-n",
        "kwg-gateway",
        "scale",
        "deployment/kwg-gateway",
        "--replicas=1",
    ])
    .expect("scale the gateway");
    kwg_e2e::wait_for("one ready gateway", Duration::from_secs(30), || {
        let pods = kwg_e2e::gateway_pods(c)?;
        Ok((pods.len() == 1 && pods[0].1).then_some(()))
    })
    .expect("the gateway is ready");
    kwg_e2e::wait_for("gateway info", Duration::from_secs(30), || {
        kwg_e2e::gateway_info(c).map(Some)
    })
    .expect("the gateway info")
}

/// web-app's page says which cluster served it.
fn name_web_app(c: &Cluster, title: &str) {
    let patch = serde_json::json!([{
        "op": "replace",
        "path": "/spec/template/spec/containers/0/args",
        "value": ["workload", "http", "--port", "80", "--title", title],
    }])
    .to_string();
    c.kubectl_admin(&[
        "-n",
        "emojivoto",
        "patch",
        "deployment/web-app",
        "--type=json",
        "-p",
        &patch,
    ])
    .expect("patch web-app");
    c.kubectl_admin(&[
        "-n",
        "emojivoto",
        "rollout",
        "status",
        "deployment/web-app",
        "--timeout=30s",
    ])
    .expect("web-app rolled out");
}

/// The developer's kubeconfig of `c` with its context called `context`.
fn kubeconfig(c: &Cluster, context: &str) -> String {
    kwg_e2e::kubeconfig_as(c, context, context)
}

fn title(l: &Laptop, url: &str) -> String {
    let out = l.curl(url);
    let page = text(&out.stdout);
    page.split_once("<title>")
        .and_then(|(_, rest)| rest.split_once("</title>"))
        .map(|(t, _)| t.to_string())
        .unwrap_or_else(|| format!("no page from {url}: {}", text(&out.stderr)))
}

#[test]
fn two_clusters_at_once_each_by_its_alias_and_short_names_to_the_primary() {
    let a = Cluster::up().expect("kwg-sim up (alpha)");
    let b = Cluster::builder()
        .lan("198.51.100.0/24")
        .service_cidr("10.128.0.0/16")
        .pod_cidr("10.200.0.0/16")
        .up()
        .expect("kwg-sim up (beta)");
    // Two default installs: each picked its own tunnel CIDR inside 100.64.0.0/10.
    let (ia, mut ib) = (install_default(&a), install_default(&b));
    if ia.tunnel_cidr == ib.tunnel_cidr {
        // One pick in 1024 is the same /20: a new install (a new key Secret) picks again,
        // so this test does not fail on that chance.
        b.kubectl_admin(&["-n", "kwg-gateway", "delete", "secret", "kwg-gateway-key"])
            .unwrap();
        b.kubectl_admin(&[
            "-n",
            "kwg-gateway",
            "rollout",
            "restart",
            "deployment/kwg-gateway",
        ])
        .unwrap();
        ib = kwg_e2e::wait_for("a new tunnel CIDR", Duration::from_secs(30), || {
            let info = kwg_e2e::gateway_info(&b)?;
            Ok((info.tunnel_cidr != ia.tunnel_cidr).then_some(info))
        })
        .unwrap();
    }
    for info in [&ia, &ib] {
        let [first, second, ..] = info.tunnel_cidr.network().octets();
        assert!(
            first == 100 && (64..128).contains(&second),
            "{}",
            info.tunnel_cidr
        );
    }
    assert_ne!(
        ia.tunnel_cidr, ib.tunnel_cidr,
        "two installs, two tunnel CIDRs"
    );
    // A restart keeps it (kept in the key Secret).
    a.kubectl_admin(&[
        "-n",
        "kwg-gateway",
        "rollout",
        "restart",
        "deployment/kwg-gateway",
    ])
    .unwrap();
    a.kubectl_admin(&[
        "-n",
        "kwg-gateway",
        "rollout",
        "status",
        "deployment/kwg-gateway",
        "--timeout=30s",
    ])
    .unwrap();
    assert_eq!(
        kwg_e2e::gateway_info(&a).unwrap().tunnel_cidr,
        ia.tunnel_cidr
    );
    name_web_app(&a, "Cluster Alpha");
    name_web_app(&b, "Cluster Beta");

    let (netns, _) = a
        .add_laptop_on("multi", &[&b])
        .expect("a laptop on both LANs");
    let a = Arc::new(a);
    let l = Laptop {
        state: a.names().run_dir().join("kwg-state-multi"),
        sim: a.clone(),
        name: "multi".into(),
        netns,
    };
    let original = l.resolv_conf();
    let (ka, kb) = (kubeconfig(&a, "alpha"), kubeconfig(&b, "beta"));
    l.join(&["--kubeconfig", &ka, "--namespace", "emojivoto"]);
    l.join(&["--kubeconfig", &kb, "--namespace", "emojivoto"]);

    // Each cluster by its alias, short names the primary's (alpha, joined first).
    assert_eq!(title(&l, "web-app.emojivoto.svc.alpha"), "Cluster Alpha");
    assert_eq!(title(&l, "web-app.emojivoto.svc.beta"), "Cluster Beta");
    assert_eq!(title(&l, "web-app"), "Cluster Alpha");
    assert_eq!(title(&l, "web-app.emojivoto"), "Cluster Alpha");

    let status = l.status_json();
    let sessions = status["sessions"].as_array().expect("sessions[]");
    assert_eq!(sessions.len(), 2, "{status}");
    let by = |ctx: &str| {
        sessions
            .iter()
            .find(|s| s["context"] == ctx)
            .unwrap_or_else(|| panic!("no session of {ctx}: {status}"))
            .clone()
    };
    let (sa, sb) = (by("alpha"), by("beta"));
    assert_eq!(
        (sa["primary"].as_bool(), sb["primary"].as_bool()),
        (Some(true), Some(false))
    );
    assert_eq!(
        (sa["interface"].as_str(), sb["interface"].as_str()),
        (Some("kwg0"), Some("kwg1"))
    );
    assert_eq!(
        (sa["alias"].as_str(), sb["alias"].as_str()),
        (Some("alpha"), Some("beta"))
    );
    assert_eq!(status["context"], "alpha", "the primary's status on top");
    let s = text(&l.kwg(&["status"]).stdout);
    assert!(
        s.contains("Context alpha (alias alpha")
            && s.contains("primary: short names go here")
            && s.contains("Context beta (alias beta"),
        "{s}"
    );
    let peers = text(
        &l.kwg(&["peers", "--context", "beta", "--kubeconfig", &kb])
            .stdout,
    );
    assert!(
        peers
            .lines()
            .any(|l| l.starts_with('*') && l.contains("multi")),
        "{peers}"
    );
    // Another kubeconfig's peers, nothing of the sessions' contexts mixed in.
    let other = l.kwg(&["peers", "--kubeconfig", &kb]);
    assert!(
        other.status.success() && text(&other.stdout).contains("multi"),
        "{}{}",
        text(&other.stdout),
        text(&other.stderr)
    );

    // A second join to a joined context, and a leave that does not say which.
    let again = l.kwg(&["join", "--kubeconfig", &ka, "--namespace", "emojivoto"]);
    assert_eq!(again.status.code(), Some(9), "{}", text(&again.stderr));
    assert!(
        text(&again.stderr).contains("already joined to context alpha"),
        "{}",
        text(&again.stderr)
    );
    let which = l.kwg(&["leave"]);
    assert_eq!(which.status.code(), Some(2), "{}", text(&which.stderr));
    let e = text(&which.stderr);
    assert!(
        e.contains("alpha, beta") && e.contains("--context NAME") && e.contains("--all"),
        "{e}"
    );

    // Leaving alpha leaves beta working and nothing of alpha.
    let left = l.kwg(&["leave", "--context", "alpha"]);
    assert!(left.status.success(), "{}", text(&left.stderr));
    assert_eq!(title(&l, "web-app.emojivoto.svc.beta"), "Cluster Beta");
    let routes = l.routes();
    assert!(
        !routes.contains("kwg0") && !routes.contains("10.96.0.0/12"),
        "{routes}"
    );
    assert!(routes.contains("10.128.0.0/16 dev kwg1"), "{routes}");
    assert!(!l.run_ok(&["ip", "link"]).contains("kwg0"));
    let resolv = text(&l.resolv_conf());
    assert!(
        !resolv.contains("127.77.0.53") && resolv.contains("127.77.0.54"),
        "{resolv}"
    );
    let tables = text(&l.run(&["nft", "list", "tables"]).stdout);
    assert!(
        !tables.contains("kwg_kwg0") && tables.contains("kwg_kwg1"),
        "alpha's firewall table gone, beta's kept: {tables}"
    );
    let status = l.status_json();
    assert_eq!(
        status["sessions"].as_array().map(Vec::len),
        Some(1),
        "{status}"
    );
    // The short names and <svc>.<ns> go to the next session joined (beta) within a few
    // seconds, and status says so.
    kwg_e2e::wait_for("beta answers short names", Duration::from_secs(20), || {
        Ok((title(&l, "web-app") == "Cluster Beta").then_some(()))
    })
    .unwrap();
    assert_eq!(title(&l, "web-app.emojivoto"), "Cluster Beta");
    let status = l.status_json();
    assert_eq!(
        (status["shortNames"].as_str(), status["primary"].as_bool()),
        (Some("beta"), Some(true)),
        "{status}"
    );
    let s = text(&l.kwg(&["status"]).stdout);
    assert!(s.contains("Short names     : beta"), "{s}");

    let all = l.kwg(&["leave", "--all", "-o", "json"]);
    assert!(all.status.success(), "{}", text(&all.stderr));
    let lines: Vec<serde_json::Value> = text(&all.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert!(
        matches!(lines.as_slice(), [one] if one["context"] == "beta" && one["alias"] == "beta" && one["left"] == true),
        "{lines:?}"
    );
    assert!(!l.routes().contains("kwg"));
    let resolv = text(&l.resolv_conf());
    assert!(
        !resolv.contains("127.77.") && !resolv.contains("added by kwg"),
        "{resolv}"
    );
    assert_eq!(
        kwg_session_like(&resolv),
        kwg_session_like(&text(&original)),
        "the machine's resolvers and search list as before"
    );

    // The same through systemd-resolved: each session's link routes its own alias, only the
    // primary's the cluster domain and the namespaces. Here both kubeconfigs call their
    // context `default` (as k3s does): two sessions all the same, the second `default-2`.
    let (da, db) = (
        kwg_e2e::kubeconfig_as(&a, "default", "default-a"),
        kwg_e2e::kubeconfig_as(&b, "default", "default-b"),
    );
    let r = a
        .start_resolved(&l.netns)
        .expect("systemd-resolved in the laptop");
    let in_resolved = |argv: &[&str]| {
        let state = format!("KWG_STATE_DIR={}", l.state.display());
        let path = format!("PATH={}", kwg_e2e::laptop::path_with_bins());
        let mut all = vec!["env", state.as_str(), path.as_str()];
        all.extend_from_slice(argv);
        r.exec(&all).expect("run in resolved's namespace")
    };
    for kc in [&da, &db] {
        let out = in_resolved(&[
            "kwg",
            "join",
            "--name",
            "multi",
            "--kubeconfig",
            kc,
            "-n",
            "emojivoto",
            "--dns-mode",
            "resolved",
        ]);
        assert!(
            out.status.success(),
            "{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
    let page = |url: &str| text(&in_resolved(&["curl", "-sS", "--max-time", "3", url]).stdout);
    assert!(page("web-app.emojivoto.svc.default").contains("Cluster Alpha"));
    assert!(page("web-app.emojivoto.svc.default-2").contains("Cluster Beta"));
    assert!(page("web-app").contains("Cluster Alpha"));
    assert!(page("web-app.emojivoto").contains("Cluster Alpha"));
    let domains = r.resolvectl(&["domain"]).expect("resolvectl domain");
    let of = |link: &str| {
        // A link's block runs to the next link (resolvectl wraps long lists).
        domains
            .split("Link ")
            .find(|b| b.contains(&format!("({link})")))
            .unwrap_or_else(|| panic!("no {link} in {domains}"))
            .to_string()
    };
    assert!(
        of("kwg0").split_whitespace().any(|w| w == "~svc.default")
            && of("kwg0").contains("~cluster.local"),
        "{domains}"
    );
    assert!(
        of("kwg1").contains("~svc.default-2") && !of("kwg1").contains("cluster.local"),
        "{domains}"
    );
    // Joined to that cluster already: the name that finds it.
    let again = in_resolved(&["kwg", "join", "--kubeconfig", &db, "-n", "emojivoto"]);
    assert_eq!(again.status.code(), Some(9), "{}", text(&again.stderr));
    assert!(
        text(&again.stderr).contains("kwg leave --context default-2 first"),
        "{}",
        text(&again.stderr)
    );
    let second: serde_json::Value = serde_json::from_slice(
        &in_resolved(&["kwg", "status", "--context", "default-2", "-o", "json"]).stdout,
    )
    .expect("status json");
    assert_eq!(
        (second["context"].as_str(), second["alias"].as_str()),
        (Some("default"), Some("default-2")),
        "{second}"
    );
    assert_eq!(second["sessions"].as_array().map(Vec::len), Some(1));
    // The primary leaves: default-2's link takes the cluster domain and the namespaces, and
    // the short names go to it; a join again is secondary (the short names stay).
    let left = in_resolved(&["kwg", "leave", "--context", "default"]);
    assert!(left.status.success(), "{}", text(&left.stderr));
    kwg_e2e::wait_for(
        "default-2 answers short names",
        Duration::from_secs(20),
        || Ok(page("web-app").contains("Cluster Beta").then_some(())),
    )
    .unwrap();
    assert!(page("web-app.emojivoto").contains("Cluster Beta"));
    let domains = r.resolvectl(&["domain"]).expect("resolvectl domain");
    let kwg1 = domains
        .split("Link ")
        .find(|b| b.contains("(kwg1)"))
        .unwrap_or_default();
    assert!(
        kwg1.contains("~cluster.local") && kwg1.contains("~svc.default-2"),
        "{domains}"
    );
    let again = in_resolved(&[
        "kwg",
        "join",
        "--name",
        "multi",
        "--kubeconfig",
        &da,
        "-n",
        "emojivoto",
        "--dns-mode",
        "resolved",
    ]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(page("web-app").contains("Cluster Beta"));
    assert!(page("web-app.emojivoto.svc.default").contains("Cluster Alpha"));
    // On a terminal, `kwg leave` asks which session (here: all of them).
    let asked = in_resolved(&[
        "sh",
        "-c",
        "printf 'a\\n' | script -qec 'kwg leave' /dev/null",
    ]);
    let said = text(&asked.stdout);
    assert!(asked.status.success(), "{said}");
    assert!(
        said.contains("Several sessions are joined")
            && said.contains("1) default-2 (kwg1, primary)")
            && said.contains("2) default (kwg0)")
            && said.contains("Left context default:")
            && said.contains("Left context default-2"),
        "{said}"
    );
    let none = text(&in_resolved(&["kwg", "status"]).stdout);
    assert!(none.contains("not joined"), "{none}");
    let after = r.resolvectl(&["domain"]).unwrap();
    assert!(!after.contains("kwg"), "{after}");
}

/// A resolver file's servers and search list.
fn kwg_session_like(text: &str) -> (Vec<String>, Vec<String>) {
    let words = |kind: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with(kind))
            .flat_map(|l| l.split_whitespace().skip(1).map(str::to_string))
            .collect()
    };
    (words("nameserver"), words("search"))
}
