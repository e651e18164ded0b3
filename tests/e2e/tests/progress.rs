//! The first minutes of a new user: `kwg join` shows each step while it works, Ctrl-C at any
//! step cancels it and leaves nothing behind (exit 130), and failing commands print only
//! kwg's own sentences (no log line, no terminal escape when stderr is not a terminal).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kwg_e2e::firewall::Blocked;
use kwg_e2e::laptop::{Laptop, laptop, path_with_bins, secret_exists, shared, text};

/// The gateway's node: its NodePort carries WireGuard.
const NODE_IP: &str = "192.0.2.1";

/// `kwg ARGS` on the laptop, started (not waited for), stdout and stderr piped.
fn spawn(l: &Laptop, kubeconfig: &str, args: &[&str]) -> Child {
    Command::new("ip")
        .args(["netns", "exec", &l.netns, "env"])
        .arg(format!("KWG_STATE_DIR={}", l.state.display()))
        .arg(format!("KUBECONFIG={kubeconfig}"))
        .arg(format!("PATH={}", path_with_bins()))
        .arg("kwg")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kwg")
}

/// Each line of `child`'s stderr with the moment it was read.
fn lines(child: &mut Child) -> mpsc::Receiver<(Instant, String)> {
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().expect("piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    rx
}

/// Sends `kill -SIGNAL` to `child` only, as a terminal signals its foreground process (the
/// daemon runs in a process group of its own, which the terminal does not signal).
fn send(child: &Child, signal: &str) {
    let pid = child.id().to_string();
    let sent = Command::new("kill")
        .args([&format!("-{signal}"), &pid])
        .status()
        .unwrap();
    assert!(sent.success(), "kill -{signal} {pid}");
}

/// Waits for `child` (at most 20 s); its exit code and stdout.
fn finish(mut child: Child) -> (Option<i32>, String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "kwg did not exit");
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().unwrap();
    (out.status.code(), text(&out.stdout))
}

/// Nothing of a join is left: no peer Secret (asked as the admin), interface, route, nft
/// table, resolv.conf change or state file, and `kwg status` says not joined.
fn assert_clean(l: &Laptop, resolv: &[u8], when: &str) {
    assert!(
        !secret_exists(&l.sim, &l.name),
        "{when}: the peer Secret stayed"
    );
    let links = text(&l.run(&["ip", "-o", "link", "show"]).stdout);
    assert!(!links.contains("kwg0"), "{when}: kwg0 stayed:\n{links}");
    assert!(!l.routes().contains("kwg0"), "{when}: {}", l.routes());
    let tables = text(&l.run(&["nft", "list", "tables"]).stdout);
    assert!(!tables.contains("kwg_kwg0"), "{when}: {tables}");
    assert_eq!(l.resolv_conf(), resolv, "{when}: resolv.conf changed");
    assert!(
        !l.state.join("state.json").exists(),
        "{when}: the state file stayed"
    );
    assert_eq!(l.kwg(&["status"]).status.code(), Some(1), "{when}");
}

/// No terminal escape and no tracing log line (`<time>  WARN target: …`) in `stderr`.
fn assert_only_sentences(what: &str, stderr: &str) {
    assert!(
        !stderr.contains('\u{1b}'),
        "{what}: an escape on stderr: {stderr:?}"
    );
    for line in stderr.lines() {
        let level = line.split_whitespace().nth(1).unwrap_or_default();
        assert!(
            !["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&level),
            "{what}: a log line on stderr: {line}"
        );
    }
}

/// Starts a join that will wait for the handshake (UDP to the gateway blocked, `--transport
/// udp`) and reads its progress until the tunnel is up, checking the join still runs.
fn join_until_waiting(l: &Laptop, kubeconfig: &str) -> (Child, mpsc::Receiver<(Instant, String)>) {
    let started = Instant::now();
    let argv = [
        "join",
        "--name",
        &l.name,
        "-n",
        "emojivoto",
        "--transport",
        "udp",
    ];
    let mut child = spawn(l, kubeconfig, &argv);
    let rx = lines(&mut child);
    let (at, line) = rx
        .iter()
        .find(|(_, line)| line.contains(" Tunnel kwg0 up as "))
        .expect("the tunnel line");
    assert!(
        child.try_wait().unwrap().is_none(),
        "the join ended before its progress was read: {line}"
    );
    eprintln!(
        "MEASURED: with the handshake blocked, the tunnel line after {} ms while the join waits",
        (at - started).as_millis()
    );
    (child, rx)
}

#[test]
fn progress_arrives_while_the_join_runs_and_ctrl_c_undoes_every_step() {
    let sim = shared();
    let l = laptop(&sim, "ctrlc");
    let kubeconfig = sim.names().kubeconfig("developer").display().to_string();
    let resolv = l.resolv_conf();

    // A join as CI logs it (stderr not a terminal): timestamped lines, each as it happens.
    let started = Instant::now();
    let mut child = spawn(
        &l,
        &kubeconfig,
        &["join", "--name", "ctrlc", "-n", "emojivoto"],
    );
    let rx = lines(&mut child);
    let (code, stdout) = finish(child);
    let returned = started.elapsed();
    assert_eq!(code, Some(0), "{stdout}");
    let got: Vec<(Instant, String)> = rx.iter().collect();
    let first = got.first().expect("progress lines").0 - started;
    eprintln!(
        "MEASURED: first progress line {} ms after the start, join returned after {} ms",
        first.as_millis(),
        returned.as_millis()
    );
    for (_, line) in &got {
        let (time, _) = line.split_once(' ').unwrap_or_default();
        assert!(
            chrono::DateTime::parse_from_rfc3339(time).is_ok(),
            "not a timestamped line: {line}"
        );
    }
    assert!(
        got.iter()
            .any(|(_, l)| l.contains(" Registered peer ctrlc")),
        "{got:?}"
    );
    assert_only_sentences(
        "join",
        &got.iter()
            .map(|(_, l)| l.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
    );
    assert!(stdout.starts_with("Joined: "), "{stdout}");
    // Joined, the daemon outlives the terminal that started it: a hangup does not stop it.
    let daemon = l.daemon_pid().to_string();
    let hup = Command::new("kill")
        .args(["-HUP", &daemon])
        .status()
        .unwrap();
    assert!(hup.success());
    std::thread::sleep(Duration::from_millis(200));
    let status = l.kwg(&["status"]);
    assert_eq!(status.status.code(), Some(0), "{}", text(&status.stdout));
    assert_eq!(l.daemon_pid().to_string(), daemon);
    // leave reports the same way: with -o json its events on stderr, its object on stdout.
    let leave = l.kwg(&["leave", "-o", "json"]);
    assert_eq!(leave.status.code(), Some(0));
    let left: serde_json::Value = serde_json::from_slice(&leave.stdout).unwrap();
    assert_eq!(left["left"], true, "{left}");
    let events = text(&leave.stderr);
    let first: serde_json::Value = serde_json::from_str(events.lines().next().unwrap_or("{}"))
        .unwrap_or_else(|e| panic!("not a JSON event ({e}): {events}"));
    assert_eq!(first["event"], "doing", "{events}");
    assert_eq!(first["step"], "Leaving", "{events}");
    assert_clean(&l, &resolv, "after leave");

    // A step that waits (no UDP to the gateway, --transport udp): every line up to it arrives
    // while the join runs, and Ctrl-C there undoes all of it; so do SIGTERM and a closed
    // terminal (SIGHUP), with the shell's codes for them.
    {
        let _udp = Blocked::new(&l, &format!("ip daddr {NODE_IP} meta l4proto udp drop"));
        for (signal, code, by) in [
            ("INT", 130, "Ctrl-C (SIGINT)"),
            ("TERM", 143, "SIGTERM"),
            ("HUP", 129, "a closed terminal (SIGHUP)"),
        ] {
            let (child, rx) = join_until_waiting(&l, &kubeconfig);
            assert!(secret_exists(&sim, "ctrlc"));
            send(&child, signal);
            let mut err: Vec<String> = Vec::new();
            if signal == "INT" {
                // A second Ctrl-C while it undoes: it says so and goes on undoing.
                for (_, line) in rx.iter() {
                    let cancelling = line.contains("cancelling the join");
                    err.push(line);
                    if cancelling {
                        send(&child, "INT");
                        break;
                    }
                }
            }
            let (exit, stdout) = finish(child);
            err.extend(rx.iter().map(|(_, l)| l));
            let err = err.join("\n");
            assert_eq!(exit, Some(code), "SIG{signal}: {stdout}\n{err}");
            if signal == "INT" {
                assert!(
                    err.contains("Still undoing the steps taken; kwg exits when they are undone"),
                    "{err}"
                );
            }
            assert!(
                err.contains(&format!(
                    "{by}: cancelling the join, undoing the steps taken"
                )),
                "{err}"
            );
            assert!(err.contains("peer Secret kwg-peer-ctrlc"), "{err}");
            assert!(
                err.ends_with(&format!(
                    "kwg: join cancelled by {by} before it finished; every step it had taken is undone"
                )),
                "{err}"
            );
            assert_only_sentences("cancelled join", &err);
            assert_clean(
                &l,
                &resolv,
                &format!("SIG{signal} while waiting for the handshake"),
            );
        }
        // A daemon that dies there (kill -9): the join says so and undoes its journal itself.
        let (child, rx) = join_until_waiting(&l, &kubeconfig);
        l.kill_daemon();
        let (exit, stdout) = finish(child);
        let err: Vec<String> = rx.iter().map(|(_, l)| l).collect();
        assert_eq!(exit, Some(1), "{stdout}\n{err:?}");
        assert!(
            err.iter()
                .any(|l| l.contains("kwg: the kwg daemon exited before it finished joining")),
            "{err:?}"
        );
        assert_clean(
            &l,
            &resolv,
            "the daemon killed while waiting for the handshake",
        );
        // Ctrl-C while RBAC refuses the delete: the machine is clean, and the message names
        // the peer Secret left to its lease instead of saying every step is undone.
        let kc = l.state.with_extension("refused.kubeconfig");
        let creds = l.ci_credentials("ctrlc-refused", &["emojivoto"], &["--duration", "1h"], &kc);
        assert!(creds.status.success(), "{}", text(&creds.stderr));
        let (child, rx) = join_until_waiting(&l, &kc.display().to_string());
        sim.kubectl_admin(&[
            "-n",
            "kwg-system",
            "delete",
            "rolebinding",
            "kwg-ci-kwg-ci-ctrlc-refused",
        ])
        .expect("delete the RoleBinding");
        send(&child, "INT");
        let (exit, stdout) = finish(child);
        let err = rx.iter().map(|(_, l)| l).collect::<Vec<_>>().join("\n");
        eprintln!("SAID (Ctrl-C, delete refused): {err}");
        assert_eq!(exit, Some(130), "{stdout}\n{err}");
        assert!(
            err.contains(
                "kwg: join cancelled by Ctrl-C (SIGINT) before it finished; it left this machine"
            ) && err.contains("could not delete peer Secret kwg-system/kwg-peer-ctrlc")
                && err.contains("the gateway removes it when its lease ends at 20"),
            "{err}"
        );
        assert!(!err.contains("every step it had taken is undone"), "{err}");
        assert!(secret_exists(&sim, "ctrlc"), "the refused delete deleted");
        sim.kubectl_admin(&["-n", "kwg-system", "delete", "secret", "kwg-peer-ctrlc"])
            .expect("delete the Secret left behind");
        assert_clean(&l, &resolv, "Ctrl-C with the delete refused");
    }

    // Ctrl-C after each step's start (the JSON events): whatever was done is undone.
    let mut steps = Vec::new();
    for n in 1.. {
        let mut child = spawn(
            &l,
            &kubeconfig,
            &["join", "--name", "ctrlc", "-n", "emojivoto", "-o", "json"],
        );
        let rx = lines(&mut child);
        let mut seen = 0;
        let mut step = None;
        for (_, line) in rx.iter() {
            let event: serde_json::Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not a JSON event ({e}): {line}"));
            if event["event"] == "doing" {
                seen += 1;
                if seen == n {
                    step = event["step"].as_str().map(String::from);
                    send(&child, "INT");
                    break;
                }
            }
        }
        let rest: Vec<String> = rx.iter().map(|(_, l)| l).collect();
        let (code, stdout) = finish(child);
        let Some(step) = step else {
            // The join had fewer steps than n: each one was interrupted.
            assert_eq!(code, Some(0), "{stdout}");
            assert_eq!(l.kwg(&["leave"]).status.code(), Some(0));
            break;
        };
        assert_eq!(code, Some(130), "SIGINT at {step}: {stdout}\n{rest:?}");
        let failure: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(failure["step"], "interrupted", "{stdout}");
        assert_eq!(failure["exitCode"], 130, "{stdout}");
        assert!(
            rest.iter()
                .any(|l| l.contains("\"event\":\"cancelling\"")
                    && l.contains("\"signal\":\"SIGINT\"")),
            "SIGINT at {step}: {rest:?}"
        );
        assert_clean(&l, &resolv, &format!("SIGINT at {step}"));
        steps.push(step);
    }
    eprintln!("SIGINT undone at each of: {}", steps.join(", "));
    for step in [
        "Inspecting",
        "Registering",
        "AwaitingHandshake",
        "ProbingDns",
    ] {
        assert!(
            steps.iter().any(|s| s == step),
            "{step} not reached: {steps:?}"
        );
    }
}

#[test]
fn failing_commands_print_sentences_without_escapes_or_log_lines() {
    let sim = shared();
    let l = laptop(&sim, "plainerr");
    let kubeconfig = sim.names().kubeconfig("developer").display().to_string();

    let typo = l.kwg(&["join", "--name", "plainerr", "-n", "doesnotexist"]);
    assert_eq!(typo.status.code(), Some(2));
    let err = text(&typo.stderr);
    assert!(
        err.contains("kwg: namespaces \"doesnotexist\" not found"),
        "{err}"
    );
    assert_only_sentences("join with a namespace typo", &err);

    // The API server down: doctor's lines on stdout, nothing but sentences on stderr.
    let down = l.state.with_extension("down.kubeconfig");
    let config = std::fs::read_to_string(&kubeconfig).unwrap();
    std::fs::write(&down, config.replace(":6443", ":1")).unwrap();
    let doctor = l.run(&[
        "env",
        &format!("KUBECONFIG={}", down.display()),
        "kwg",
        "doctor",
    ]);
    assert_ne!(doctor.status.code(), Some(0));
    assert_only_sentences("doctor with the API down", &text(&doctor.stderr));
    // An existing --bundle file is refused in kwg's words.
    let doctor = l.run(&[
        "env",
        &format!("KUBECONFIG={}", down.display()),
        "kwg",
        "doctor",
        "--bundle",
        &kubeconfig,
    ]);
    let err = text(&doctor.stderr);
    assert_eq!(doctor.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "kwg: invalid --bundle {kubeconfig}: it already exists"
        )),
        "{err}"
    );
    assert_only_sentences("doctor --bundle over a file", &err);

    // ci-credentials needs an admin; the developer is told so, not to ask for kwg-user.
    let ci = l.kwg(&["ci-credentials", "plainerr-ci"]);
    let err = text(&ci.stderr);
    assert_eq!(ci.status.code(), Some(4), "{err}");
    assert!(
        err.contains(
            "may not create namespaces (cluster-wide): kwg ci-credentials is for a cluster admin"
        ),
        "{err}"
    );
    assert!(!err.contains("kwg-user role"), "{err}");
    assert_only_sentences("ci-credentials as the developer", &err);

    // Credentials rejected after the join, the daemon gone: leave cleans up this machine and
    // says what it could not do, in sentences.
    let creds = l.state.with_extension("kubeconfig");
    std::fs::write(&creds, &config).unwrap();
    let creds_env = format!("KUBECONFIG={}", creds.display());
    let join = l.run(&[
        "env",
        &creds_env,
        "kwg",
        "join",
        "--name",
        "plainerr",
        "-n",
        "emojivoto",
    ]);
    assert!(join.status.success(), "{}", text(&join.stderr));
    l.kill_daemon();
    let token = config
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .expect("a token in the developer's kubeconfig");
    std::fs::write(&creds, config.replace(token, "0000rejected0000")).unwrap();
    let leave = l.run(&["env", &creds_env, "kwg", "leave"]);
    let err = text(&leave.stderr);
    assert_only_sentences("leave with rejected credentials", &err);
    assert!(!l.routes().contains("kwg0"), "{}", l.routes());
    // The Secret is the gateway's to collect when its lease ends; not this test's.
    let _ = sim.kubectl_admin(&["-n", "kwg-system", "delete", "secret", "kwg-peer-plainerr"]);
    let _ = std::fs::remove_file(&down);
    let _ = std::fs::remove_file(&creds);
}

/// The GitHub action's `::error::` and `::warning::` lines (escaped, one line each) and its
/// post step's exit code after a failed leave: ci/action/action.test.js, without a cluster.
#[test]
fn the_actions_messages_follow_the_workflow_command_rules() {
    let test = kwg_e2e::repo_root().join("ci/action/action.test.js");
    let out = Command::new("node")
        .arg("--test")
        .arg(&test)
        .output()
        .expect("node (the action's runtime) is installed");
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}
