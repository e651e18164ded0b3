//! Userspace mode on the one-machine cluster: a user without privilege joins (no TUN, no
//! routes, no DNS changes: the laptop's routes, resolv.conf and interfaces are compared before,
//! while and after), reaches cluster names through the SOCKS5 and HTTP proxy, `kwg exec` and
//! `kwg forward`, reaches a LAN name directly through the same proxy, and leaves.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use kwg_e2e::laptop::{Laptop, laptop, path_with_bins, secret_exists, shared, text};

/// The unprivileged user (nobody) and its files: a runtime directory and a kubeconfig copy.
struct User {
    home: PathBuf,
    kubeconfig: PathBuf,
    netns: String,
}

const UID: u32 = 65534;

impl User {
    fn new(l: &Laptop) -> User {
        // Below /tmp (world-traversable), per laptop namespace (unique per run).
        let home = PathBuf::from(format!("/tmp/{}-home", l.netns));
        let _ = std::fs::remove_dir_all(&home);
        std::fs::create_dir_all(home.join("run")).unwrap();
        let kubeconfig = home.join("kubeconfig");
        std::fs::copy(l.sim.names().kubeconfig("developer"), &kubeconfig).unwrap();
        for (p, mode) in [
            (&home, 0o755),
            (&home.join("run"), 0o700),
            (&kubeconfig, 0o600),
        ] {
            std::os::unix::fs::chown(p, Some(UID), Some(UID)).unwrap();
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        User {
            home,
            kubeconfig,
            netns: l.netns.clone(),
        }
    }

    /// `argv` as nobody in the laptop's namespace, without any capability and with its own
    /// runtime directory (no KWG_STATE_DIR: kwg picks $XDG_RUNTIME_DIR/kwg).
    fn argv_in(&self, argv: &[&str]) -> Vec<String> {
        let mut all: Vec<String> = ["ip", "netns", "exec", &self.netns]
            .iter()
            .chain(&kwg_e2e::AS_NOBODY)
            .chain(&["env", "-i"])
            .map(|s| s.to_string())
            .collect();
        all.push(format!("PATH={}", path_with_bins()));
        all.push(format!("HOME={}", self.home.display()));
        all.push(format!(
            "XDG_RUNTIME_DIR={}",
            self.home.join("run").display()
        ));
        all.push(format!("KUBECONFIG={}", self.kubeconfig.display()));
        all.extend(argv.iter().map(|s| s.to_string()));
        all
    }

    fn run(&self, argv: &[&str]) -> Output {
        let all = self.argv_in(argv);
        Command::new(&all[0]).args(&all[1..]).output().unwrap()
    }

    fn spawn(&self, argv: &[&str]) -> Child {
        let all = self.argv_in(argv);
        Command::new(&all[0])
            .args(&all[1..])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn state(&self) -> PathBuf {
        self.home.join("run/kwg")
    }
}

impl Drop for User {
    /// A failed test leaves no daemon of the user behind (the laptop's own leave is root's).
    fn drop(&mut self) {
        if self.state().join("state.json").exists() {
            let all = self.argv_in(&["kwg", "leave"]);
            let _ = Command::new(&all[0]).args(&all[1..]).output();
        }
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

/// What must not change on the laptop: routes (every table), addresses and links, the
/// resolver file.
fn machine(l: &Laptop) -> String {
    let ip = |args: &[&str]| text(&l.run(args).stdout);
    // A new namespace's IPv6 link-local address is tentative for a moment (duplicate address
    // detection), and gets its local route after: wait until the kernel settled.
    let deadline = Instant::now() + Duration::from_secs(5);
    while ip(&["ip", "-o", "addr", "show"]).contains("tentative") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    format!(
        "{}\n{}\n{}\n{}",
        ip(&["ip", "route", "show", "table", "all"]),
        ip(&["ip", "-o", "addr", "show"]),
        ip(&["ip", "-o", "link", "show"]),
        String::from_utf8_lossy(&l.resolv_conf())
    )
}

const CURL: [&str; 4] = ["curl", "-sS", "--max-time", "5"];

fn curl(u: &User, args: &[&str]) -> Output {
    u.run(&[&CURL[..], args].concat())
}

/// `kwg exec -- curl … url`.
fn exec_curl(url: &str) -> Vec<&str> {
    [&["kwg", "exec", "--"][..], &CURL, &[url]].concat()
}

fn wait_listening(u: &User, port: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let out = text(&u.run(&["ss", "-Htln", &format!("sport = :{port}")]).stdout);
        if !out.trim().is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens on port {port}");
}

#[test]
fn a_user_without_privilege_joins_in_userspace_and_reaches_the_cluster_through_the_proxy() {
    let sim = shared();
    let l = laptop(&sim, "usp");
    let u = User::new(&l);
    let before = machine(&l);

    let join = u.run(&[
        "kwg",
        "join",
        "--name",
        "usp",
        "-n",
        "emojivoto",
        "--wait-for",
        "web-app:80",
    ]);
    let said = text(&join.stderr);
    assert!(
        join.status.success(),
        "join failed:\n{}{said}",
        text(&join.stdout)
    );
    assert!(
        said.contains("Userspace mode: this process is neither root nor has CAP_NET_ADMIN"),
        "{said}"
    );
    assert!(
        said.contains("SOCKS5 and HTTP proxy on 127.0.0.1:1080"),
        "{said}"
    );
    assert!(
        text(&join.stdout).contains("Joined"),
        "{}",
        text(&join.stdout)
    );
    assert!(secret_exists(&sim, "usp"));
    // The daemon runs as the user, with its state in the user's runtime directory.
    let state = u.state();
    assert!(state.join("state.json").exists());
    let meta = std::fs::metadata(&state).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), UID);
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);
    assert_eq!(machine(&l), before, "joining changed the laptop's network");

    const SOCKS: &str = "socks5h://127.0.0.1:1080";
    const HTTP: &str = "http://127.0.0.1:1080";
    // (curl's proxy arguments, URL, what the page says): SOCKS5 with the name resolved by the
    // proxy, the HTTP proxy plain and with CONNECT (-p), by single label, <svc>.<ns> and FQDN;
    // a LAN name through the same proxy goes direct (the cluster knows nothing of it).
    let cases: [(&[&str], &str, &str); 5] = [
        (
            &["--proxy", SOCKS],
            "http://web-app.emojivoto/",
            "Emoji Vote",
        ),
        (&["--proxy", SOCKS], "http://web-app/", "Emoji Vote"),
        (&["-x", HTTP], "http://web-app.emojivoto/", "Emoji Vote"),
        (
            &["-p", "-x", HTTP],
            "http://web-app.emojivoto.svc.cluster.local/",
            "Emoji Vote",
        ),
        (
            &["--proxy", SOCKS],
            "http://intranet.corp.example/",
            "Corp Intranet",
        ),
    ];
    for (proxy, url, want) in cases {
        let out = curl(&u, &[proxy, &[url]].concat());
        assert!(
            text(&out.stdout).contains(want),
            "curl {proxy:?} {url}: {}",
            text(&out.stderr)
        );
    }
    // Another local user may not use the proxy (it would reach the cluster as this one).
    let stranger = l.run(&[
        "setpriv",
        "--reuid=65533",
        "--regid=65533",
        "--clear-groups",
        "curl",
        "-sS",
        "--max-time",
        "5",
        "--proxy",
        "socks5h://127.0.0.1:1080",
        "http://web-app.emojivoto/",
    ]);
    assert!(
        !stranger.status.success() && !text(&stranger.stdout).contains("Emoji Vote"),
        "another user got through the proxy: {}",
        text(&stranger.stdout)
    );
    // A cluster name that does not exist: the proxy says so.
    let missing = curl(
        &u,
        &["-x", "http://127.0.0.1:1080", "http://nope.emojivoto/"],
    );
    assert!(
        text(&missing.stdout).contains("kwg cannot reach nope.emojivoto:80"),
        "{}",
        text(&missing.stdout)
    );

    let exec = u.run(&exec_curl("web-app.emojivoto"));
    assert!(
        text(&exec.stdout).contains("Emoji Vote"),
        "kwg exec: {}",
        text(&exec.stderr)
    );

    // kwg forward to the web-app pod itself (its IP, port 80): a TCP session via 127.0.0.1.
    let pod = sim.pod_ip("emojivoto", "web-app").unwrap();
    let spec = format!("18080:{pod}:80");
    let mut fwd = u.spawn(&["kwg", "forward", &spec]);
    wait_listening(&u, "18080");
    let page = curl(&u, &["http://127.0.0.1:18080/"]);
    let big = curl(
        &u,
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "http://127.0.0.1:18080/readyz",
        ],
    );
    // Ctrl-C stops it (the pid is kwg's: ip netns exec, setpriv and env exec it).
    let _ = Command::new("kill")
        .args(["-INT", &fwd.id().to_string()])
        .status();
    let _ = fwd.wait();
    assert!(
        text(&page.stdout).contains("Emoji Vote"),
        "kwg forward: {}",
        text(&page.stderr)
    );
    assert_eq!(text(&big.stdout), "200");

    let status = u.run(&["kwg", "status"]);
    assert!(status.status.success(), "{}", text(&status.stderr));
    let said = text(&status.stdout);
    assert!(said.contains("Connected"), "{said}");
    assert!(
        said.contains("in userspace mode (no interface): SOCKS5/HTTP proxy on 127.0.0.1:1080"),
        "{said}"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&u.run(&["kwg", "status", "-o", "json"]).stdout).unwrap();
    assert_eq!(json["proxy"], "127.0.0.1:1080", "{json}");
    assert_eq!(
        machine(&l),
        before,
        "the proxy changed the laptop's network"
    );

    let leave = u.run(&["kwg", "leave"]);
    assert!(leave.status.success(), "{}", text(&leave.stderr));
    assert!(
        text(&leave.stdout).contains("the userspace tunnel and proxy on 127.0.0.1:1080"),
        "{}",
        text(&leave.stdout)
    );
    assert!(!secret_exists(&sim, "usp"), "leave left the peer Secret");
    assert!(!state.join("state.json").exists());
    let gone = curl(
        &u,
        &[
            "--proxy",
            "socks5h://127.0.0.1:1080",
            "http://web-app.emojivoto/",
        ],
    );
    assert!(!gone.status.success(), "the proxy outlived leave");
    assert_eq!(machine(&l), before, "leaving changed the laptop's network");
}

/// Root may ask for userspace mode too: the same proxy, nothing changed on the machine.
#[test]
fn root_can_choose_userspace_mode() {
    let sim = shared();
    let l = laptop(&sim, "uspr");
    let before = machine(&l);
    let join = l.join(&[
        "-n",
        "emojivoto",
        "--userspace",
        "--proxy-listen",
        "127.0.0.1:1081",
    ]);
    assert!(
        !text(&join.stderr).contains("Userspace mode:"),
        "asked for: no sentence"
    );
    assert_eq!(machine(&l), before);
    let out = l.run(&exec_curl("http://web-app/"));
    assert!(
        text(&out.stdout).contains("Emoji Vote"),
        "{}",
        text(&out.stderr)
    );
    assert!(l.kwg(&["leave"]).status.success());
    assert_eq!(machine(&l), before);
}

/// The GitHub action with `userspace: true` on a runner without privilege: kwg runs as the
/// runner's user (no sudo), later steps get the proxy variables through GITHUB_ENV, and the
/// post step leaves as that user.
#[test]
fn the_action_in_userspace_mode_hands_the_proxy_to_later_steps() {
    let sim = shared();
    let l = laptop(&sim, "uspa");
    let u = User::new(&l);
    let runner = u.home.join("runner");
    std::fs::create_dir(&runner).unwrap();
    std::os::unix::fs::chown(&runner, Some(UID), Some(UID)).unwrap();
    let kubeconfig = std::fs::read_to_string(&u.kubeconfig).unwrap();
    let file = |n: &str| format!("{}", runner.join(n).display());
    let js = |s: &str| {
        format!(
            "{}",
            kwg_e2e::repo_root().join("ci/action").join(s).display()
        )
    };
    let step = |script: &str, extra: &[String]| {
        let mut env = vec![
            format!("INPUT_KUBECONFIG={kubeconfig}"),
            "INPUT_NAMESPACE=emojivoto".into(),
            "INPUT_WAIT-FOR=web-app:80".into(),
            "INPUT_USERSPACE=true".into(),
            "INPUT_NAME=uspa".into(),
            // The kwg of this tree on PATH, not a downloaded release (ci/action/install.js).
            "INPUT_VERSION=path".into(),
            format!("GITHUB_OUTPUT={}", file("output")),
            format!("GITHUB_ENV={}", file("env")),
            format!("GITHUB_STATE={}", file("state")),
            format!("RUNNER_TEMP={}", runner.display()),
        ];
        env.extend(extra.iter().cloned());
        let mut argv: Vec<&str> = vec!["env"];
        argv.extend(env.iter().map(String::as_str));
        let js = js(script);
        argv.extend(["node", &js]);
        u.run(&argv)
    };
    let main = step("main.js", &[]);
    assert_eq!(main.status.code(), Some(0), "{}", text(&main.stdout));
    let env = commands(&runner.join("env"));
    let value = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(
        value("ALL_PROXY").as_deref(),
        Some("socks5h://127.0.0.1:1080")
    );
    assert_eq!(
        value("http_proxy").as_deref(),
        Some("http://127.0.0.1:1080")
    );
    // A later step, with the variables the runner sets from GITHUB_ENV.
    let mut argv = vec!["env".to_string()];
    argv.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
    argv.extend(["curl", "-sS", "--max-time", "5", "http://web-app/"].map(String::from));
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let page = u.run(&argv);
    assert!(
        text(&page.stdout).contains("Emoji Vote"),
        "{}",
        text(&page.stderr)
    );
    let state: Vec<String> = commands(&runner.join("state"))
        .into_iter()
        .map(|(k, v)| format!("STATE_{k}={v}"))
        .collect();
    assert!(
        state.contains(&"STATE_userspace=true".to_string()),
        "{state:?}"
    );
    let post = step("post.js", &state);
    assert_eq!(post.status.code(), Some(0), "{}", text(&post.stdout));
    assert!(!secret_exists(&sim, "uspa"));
}

/// The `name<<delimiter` lines the runner's command files hold.
fn commands(path: &std::path::Path) -> Vec<(String, String)> {
    let all = std::fs::read_to_string(path).unwrap_or_default();
    let mut lines = all.lines();
    let mut out = Vec::new();
    while let Some(head) = lines.next() {
        if let Some((name, end)) = head.split_once("<<") {
            let value: Vec<&str> = lines.by_ref().take_while(|l| *l != end).collect();
            out.push((name.to_string(), value.join("\n")));
        }
    }
    out
}
