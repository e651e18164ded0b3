//! kwg as a CI pre-step: each documented exit code comes from the situation it names (with the
//! `-o json` object), `--wait-for`, `kwg ci-credentials`, the GitHub action's steps run as a
//! runner runs them, and the gateway collecting the peer of a killed job.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use kwg_e2e::laptop::{Laptop, laptop, secret_exists, shared, text};

/// Runs a `kwg join … -o json` expected to fail with `code`; checks the JSON object, the one
/// stderr sentence, and that nothing of the join is left behind. Returns the message.
fn fails_with(laptop: &Laptop, user: &str, argv: &[&str], code: i32, step: &str) -> String {
    let original = laptop.resolv_conf();
    let mut all = argv.to_vec();
    all.extend(["-o", "json"]);
    let out = laptop.run_as(user, &all);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(code), "{argv:?}: {stdout}{stderr}");
    let json: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{argv:?}: stdout is not one JSON object ({e}): {stdout}"));
    assert_eq!(json["connected"], false, "{json}");
    assert_eq!(json["exitCode"], code, "{json}");
    assert_eq!(json["step"], step, "{json}");
    let message = json["message"].as_str().unwrap().to_string();
    assert!(stderr.contains(&message), "{stderr} lacks {message}");
    assert_eq!(laptop.resolv_conf(), original);
    assert!(!laptop.routes().contains("kwg0"), "{}", laptop.routes());
    assert!(!secret_exists(&laptop.sim, &laptop.name));
    message
}

fn nft(laptop: &Laptop, rules: &str) {
    let out = laptop.run(&["nft", rules]);
    assert!(out.status.success(), "nft {rules}: {}", text(&out.stderr));
}

#[test]
fn each_exit_code_comes_from_the_situation_it_names() {
    let sim = shared();
    let l = laptop(&sim, "codes");
    let join = ["kwg", "join", "--name", "codes", "-n", "emojivoto"];
    let with = |extra: &[&'static str]| [&join[..], extra].concat();

    let m = fails_with(
        &l,
        "developer",
        &with(&["--wait-for", "web-app"]),
        2,
        "usage",
    );
    assert!(m.contains("has no port: pass HOST:PORT"), "{m}");
    let m = fails_with(&l, "developer", &["kwg", "join", "-n", "nope"], 2, "usage");
    assert!(m.contains("namespaces \"nope\" not found"), "{m}");

    let noroot = [
        &kwg_e2e::AS_NOBODY[..],
        &join[..],
        // Without --tun a user without privilege gets userspace mode (tests/userspace.rs).
        &["--tun"][..],
    ]
    .concat();
    fails_with(&l, "developer", &noroot, 3, "privilege");

    let m = fails_with(&l, "nobody", &join, 4, "credentials");
    assert!(m.contains("kwg-user"), "{m}");
    let nokube = [&["env", "KUBECONFIG=/nonexistent/config"][..], &join[..]].concat();
    fails_with(&l, "developer", &nokube, 4, "credentials");

    // An admin may read every ConfigMap: a namespace without the gateway's is "not installed".
    let m = fails_with(
        &l,
        "admin",
        &with(&["--kwg-namespace", "default"]),
        5,
        "gateway",
    );
    assert!(
        m.contains("no kwg gateway is installed in namespace default"),
        "{m}"
    );

    let dead = l.state.with_extension("dead.kubeconfig");
    let kc = std::fs::read_to_string(sim.names().kubeconfig("developer")).unwrap();
    let server = kc
        .lines()
        .find_map(|x| x.trim().strip_prefix("server: "))
        .unwrap();
    std::fs::write(&dead, kc.replace(server, "https://127.0.0.1:9")).unwrap();
    let dead_env = format!("KUBECONFIG={}", dead.display());
    let unreachable = [&["env", dead_env.as_str()][..], &join[..]].concat();
    fails_with(&l, "developer", &unreachable, 10, "api-server");

    l.run(&["ip", "tuntap", "add", "wg9", "mode", "tun"]);
    let m = fails_with(
        &l,
        "developer",
        &with(&["--interface", "wg9"]),
        9,
        "local-conflict",
    );
    assert!(m.contains("interface wg9 already exists"), "{m}");
    l.run(&["ip", "link", "del", "wg9"]);

    // WireGuard's UDP dropped on the way out (DNS to the LAN resolver still works), and the
    // join held to UDP: `--transport auto` would go on over TCP.
    nft(&l, "add table inet kwgtest");
    nft(
        &l,
        "add chain inet kwgtest out { type filter hook output priority 0 ; }",
    );
    nft(&l, "add rule inet kwgtest out udp dport != 53 drop");
    let started = Instant::now();
    let udp_only = with(&["--timeout", "4s", "--transport", "udp"]);
    let m = fails_with(&l, "developer", &udp_only, 6, "handshake");
    assert!(m.contains("did not answer on UDP"), "{m}");
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "{:?}",
        started.elapsed()
    );
    nft(&l, "flush chain inet kwgtest out");

    // The tunnel is up, but nothing reaches the cluster DNS through it.
    nft(&l, "add rule inet kwgtest out ip daddr 10.96.0.10 drop");
    let m = fails_with(&l, "developer", &with(&["--timeout", "4s"]), 7, "dns");
    assert!(m.contains("cluster DNS did not answer"), "{m}");
    nft(&l, "delete table inet kwgtest");

    l.join(&["-n", "emojivoto"]);
    let again = l.kwg(&["join", "--name", "codes", "-n", "emojivoto", "-o", "json"]);
    assert_eq!(again.status.code(), Some(9), "{}", text(&again.stderr));
    let json: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(json["step"], "local-conflict");
    assert!(l.kwg(&["leave"]).status.success());
}

#[test]
fn wait_for_a_service_without_endpoints_fails_and_leaves_nothing() {
    let sim = shared();
    let l = laptop(&sim, "waitnone");
    sim.kubectl_admin(&[
        "-n",
        "emojivoto",
        "create",
        "service",
        "clusterip",
        "nothing-ready",
        "--tcp=80:80",
    ])
    .expect("create a Service without pods");
    let started = Instant::now();
    let argv = [
        "kwg",
        "join",
        "--name",
        "waitnone",
        "-n",
        "emojivoto",
        "--timeout",
        "6s",
        "--wait-for",
        "nothing-ready.emojivoto:80",
    ];
    let m = fails_with(&l, "developer", &argv, 8, "wait-for");
    assert!(
        m.starts_with("--wait-for nothing-ready.emojivoto:80 did not accept"),
        "{m}"
    );
    let took = started.elapsed();
    assert!(took < Duration::from_secs(15), "{took:?}");
    assert_eq!(l.kwg(&["status"]).status.code(), Some(1));
    assert!(!l.state.join("state.json").exists());
}

#[test]
fn wait_for_a_ready_service_returns_when_it_answers() {
    let sim = shared();
    let l = laptop(&sim, "waitok");
    // `late` has no endpoint until a web-app pod is given its label, after the tunnel is up.
    let late = serde_json::json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "late", "namespace": "emojivoto"},
        "spec": {"selector": {"kwg-e2e-late": "waitok"}, "ports": [{"port": 80, "targetPort": 80}]}});
    sim.kubectl_apply(&sim.admin_kubeconfig(), &late.to_string())
        .expect("create Service late");
    let pod = sim
        .kubectl_admin(&[
            "-n",
            "emojivoto",
            "get",
            "pods",
            "-l",
            "app=web-app",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ])
        .expect("a web-app pod");
    let mut join = l.spawn(&[
        "kwg",
        "join",
        "--name",
        "waitok",
        "-n",
        "emojivoto",
        "--timeout",
        "40s",
        "--wait-for",
        "web-app.emojivoto:80",
        "--wait-for",
        "echo.default:80",
        "--wait-for",
        "late.emojivoto:80",
    ]);
    // The tunnel comes up (status: connected) while the join keeps waiting for `late`.
    let joined_early = |join: &mut std::process::Child| {
        join.try_wait()
            .expect("kwg join")
            .map(|s| panic!("kwg join returned ({s}) before late.emojivoto:80 had an endpoint"))
    };
    kwg_e2e::wait_for("the tunnel up", Duration::from_secs(20), || {
        joined_early(&mut join);
        Ok(l.kwg(&["status"]).status.success().then_some(()))
    })
    .expect("kwg status connected while the join waits");
    std::thread::sleep(Duration::from_millis(1500));
    joined_early(&mut join);
    let label = ["-n", "emojivoto", "label", "pod", &pod];
    sim.kubectl_admin(&[&label[..], &["kwg-e2e-late=waitok"]].concat())
        .expect("label the pod");
    let ready = Instant::now();
    let out = join.wait_with_output().expect("kwg join");
    let waited = ready.elapsed();
    sim.kubectl_admin(&[&label[..], &["kwg-e2e-late-"]].concat())
        .expect("unlabel the pod");
    sim.kubectl_admin(&["-n", "emojivoto", "delete", "service", "late"])
        .expect("delete Service late");
    assert!(
        out.status.success(),
        "kwg join: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        waited < Duration::from_secs(10),
        "returned {waited:?} after"
    );
    // No retry: the first request works.
    let out = l.run(&[
        "curl",
        "-sS",
        "--max-time",
        "2",
        "--retry",
        "0",
        "web-app:80",
    ]);
    assert!(
        text(&out.stdout).contains("Emoji Vote"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn ci_credentials_print_a_kubeconfig_that_joins() {
    let sim = shared();
    let l = laptop(&sim, "cicreds");
    let file = l.state.with_extension("ci.kubeconfig");
    let out = l.ci_credentials("cicreds", &["emojivoto"], &["--duration", "1h"], &file);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stderr);
    assert!(
        said.contains("ServiceAccount kwg-ci/cicreds is bound to the kwg-user Roles and ClusterRole; it reaches emojivoto (kwg-reach bound there)"),
        "{said}"
    );
    // Without --reach it reaches nothing, and says so.
    let bare_file = l.state.with_extension("cibare.kubeconfig");
    let bare = l.ci_credentials("cibare", &[], &[], &bare_file);
    let said = text(&bare.stderr);
    assert!(bare.status.success(), "{said}");
    assert!(
        said.contains("it reaches no namespace (pass --reach NS,... to open some)"),
        "{said}"
    );
    let can_i = |ns: &str| {
        let out = sim.kubectl_output(&file, &["auth", "can-i", "get", "services", "-n", ns]);
        text(&out.expect("kubectl").stdout).trim().to_owned()
    };
    assert_eq!(
        (can_i("emojivoto"), can_i("default")),
        ("yes".into(), "no".into())
    );
    // Bound in the gateway's namespace too: `kwg join` reads whether the gateway is ready.
    let ready = sim.kubectl_output(
        &file,
        &[
            "auth",
            "can-i",
            "get",
            "deployments.apps/kwg-gateway",
            "-n",
            "kwg-gateway",
        ],
    );
    assert_eq!(text(&ready.expect("kubectl").stdout).trim(), "yes");
    let kubeconfig = format!("KUBECONFIG={}", file.display());
    let join = l.run(&[
        "env",
        &kubeconfig,
        "kwg",
        "join",
        "--name",
        "cicreds",
        "-n",
        "emojivoto",
    ]);
    assert!(join.status.success(), "{}", text(&join.stderr));
    assert!(text(&l.curl("web-app:80").stdout).contains("Emoji Vote"));
    // ... and nothing else: the gateway forwards it to emojivoto only, `default` is refused.
    let json = l.status_json();
    assert_eq!(
        json["reach"]["namespaces"],
        serde_json::json!(["emojivoto"]),
        "{json}"
    );
    let echo = kwg_e2e::cluster_ip(&sim, "default", "echo").expect("echo's ClusterIP");
    let refused = l.run(&["curl", "-s", "--max-time", "2", &format!("http://{echo}/")]);
    assert_eq!(
        refused.status.code(),
        Some(7),
        "echo.default from the CI credential"
    );
    let leave = l.run(&["env", &kubeconfig, "kwg", "leave"]);
    assert!(leave.status.success());
}

/// The runner's file commands: `name<<DELIM` / value / `DELIM`, or `name=value`.
fn file_commands(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some((name, delim)) = line.split_once("<<") {
            let value: Vec<&str> = lines.by_ref().take_while(|l| *l != delim).collect();
            out.push((name.to_string(), value.join("\n")));
        } else if let Some((name, value)) = line.split_once('=') {
            out.push((name.to_string(), value.to_string()));
        }
    }
    out
}

fn get<'a>(cmds: &'a [(String, String)], name: &str) -> Option<&'a str> {
    cmds.iter()
        .rev()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Runs one of the action's JS steps the way the runner does: inputs as `INPUT_*`, the
/// state of the main step as `STATE_*` in the post step, and the three command files.
fn action_step(l: &Laptop, dir: &Path, script: &str, extra: &[String]) -> Output {
    let kubeconfig = std::fs::read_to_string(l.sim.names().kubeconfig("developer")).unwrap();
    let file = |n: &str| dir.join(n).display().to_string();
    let mut env = vec![
        format!("INPUT_KUBECONFIG={kubeconfig}"),
        "INPUT_NAMESPACE=emojivoto".to_string(),
        "INPUT_WAIT-FOR=web-app.emojivoto:80, echo.default:80".to_string(),
        "INPUT_TTL=1m".to_string(),
        format!("INPUT_NAME={}", l.name),
        // The kwg of this tree on PATH, not a downloaded release (ci/action/install.js).
        "INPUT_VERSION=path".to_string(),
        format!("GITHUB_OUTPUT={}", file("output")),
        format!("GITHUB_ENV={}", file("env")),
        format!("GITHUB_STATE={}", file("state")),
        format!("RUNNER_TEMP={}", dir.display()),
    ];
    env.extend(extra.iter().cloned());
    let js = kwg_e2e::repo_root().join("ci/action").join(script);
    let mut argv: Vec<&str> = vec!["env"];
    argv.extend(env.iter().map(String::as_str));
    argv.extend(["node", js.to_str().unwrap()]);
    l.run(&argv)
}

#[test]
fn the_github_action_joins_and_its_post_step_leaves_also_after_a_failed_step() {
    let action = std::fs::read_to_string(kwg_e2e::repo_root().join("action.yml")).unwrap();
    assert!(
        action.contains("post: ci/action/post.js\n  post-if: always()"),
        "{action}"
    );
    let sim = shared();
    let l = laptop(&sim, "action");
    let fresh = |n: &str| {
        let d = sim.names().run_dir().join(format!("action-runner-{n}"));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    for middle_fails in [false, true] {
        let dir = fresh(&middle_fails.to_string());
        let main = action_step(&l, &dir, "main.js", &[]);
        assert_eq!(main.status.code(), Some(0), "{}", text(&main.stdout));
        let outputs = file_commands(&dir.join("output"));
        let ip = get(&outputs, "tunnel-ip")
            .expect("tunnel-ip output")
            .to_string();
        let status: serde_json::Value =
            serde_json::from_str(get(&outputs, "status").unwrap()).unwrap();
        assert_eq!(status["tunnelIp"], ip.as_str());
        assert_eq!(status["connected"], true);
        let env = file_commands(&dir.join("env"));
        assert_eq!(get(&env, "KWG_TUNNEL_IP"), Some(ip.as_str()));
        // The job's step: the first request answers.
        let url = if middle_fails {
            "web-app:81"
        } else {
            "web-app:80"
        };
        let step = l.run(&["curl", "-sf", "--max-time", "2", url]);
        assert_eq!(step.status.success(), !middle_fails);
        // The runner runs the post step anyway (post-if: always()), with the saved state.
        let state: Vec<String> = file_commands(&dir.join("state"))
            .into_iter()
            .map(|(k, v)| format!("STATE_{k}={v}"))
            .collect();
        let kubeconfig = get(&file_commands(&dir.join("state")), "kubeconfig")
            .unwrap()
            .to_string();
        assert!(Path::new(&kubeconfig).exists());
        // The session the post step leaves (--context): its alias in kwg status.
        let alias = get(&file_commands(&dir.join("state")), "context")
            .unwrap()
            .to_string();
        let status: serde_json::Value =
            serde_json::from_slice(&l.kwg(&["status", "-o", "json"]).stdout).unwrap();
        assert_eq!(status["sessions"][0]["alias"], alias.as_str(), "{status:#}");
        let post = action_step(&l, &dir, "post.js", &state);
        assert_eq!(post.status.code(), Some(0), "{}", text(&post.stdout));
        assert!(
            text(&post.stdout).contains("\"left\":true"),
            "{}",
            text(&post.stdout)
        );
        assert!(
            !Path::new(&kubeconfig).exists(),
            "the post step keeps the kubeconfig"
        );
        assert!(!secret_exists(&sim, "action"));
        assert!(!l.routes().contains("kwg0"), "{}", l.routes());
        assert_eq!(l.kwg(&["status"]).status.code(), Some(1));
    }
    // A failed join fails the step with kwg's code and an ::error:: annotation.
    let dir = fresh("bad");
    let bad = ["INPUT_WAIT-FOR=web-app".to_string()];
    let main = action_step(&l, &dir, "main.js", &bad);
    assert_eq!(main.status.code(), Some(2), "{}", text(&main.stdout));
    assert!(text(&main.stdout).contains("::error title=kwg join failed (usage)::"));
}

#[test]
fn a_killed_job_is_collected_within_ttl_and_a_minute() {
    let sim = shared();
    let l = laptop(&sim, "killedjob");
    l.join(&["-n", "emojivoto", "--ttl", "20s"]);
    // The gateway's /peers lists it; a failed read is an error, never "still there" or "gone".
    let in_gateway = || -> anyhow::Result<bool> {
        let peers = kwg_e2e::gateway_peers(&sim)?;
        Ok(peers.iter().any(|p| p.name.as_str() == "killedjob"))
    };
    assert!(
        in_gateway().expect("the gateway's /peers"),
        "not registered"
    );
    let pid = l.daemon_pid().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-KILL", &pid])
            .status()
            .unwrap()
            .success()
    );
    let killed = Instant::now();
    kwg_e2e::wait_for(
        "the gateway to drop the peer",
        Duration::from_secs(80),
        || Ok((!in_gateway()? && !secret_exists(&sim, "killedjob")).then_some(())),
    )
    .expect("peer collected within ttl + 60 s");
    eprintln!(
        "MEASURED: peer of a killed job (--ttl 20s) gone from the gateway and its Secret deleted {:.1} s after kill -9",
        killed.elapsed().as_secs_f64()
    );
}
