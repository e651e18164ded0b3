//! A laptop of the one-machine cluster running the real `kwg` (as the `developer` user by
//! default), and one cluster with the gateway installed shared by the tests of a binary.

use kwg_sim::testing::Cluster;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex, Weak};

/// One cluster with the gateway installed, shared by the tests running at the same time;
/// `kwg-sim down` when the last of them drops it.
pub fn shared() -> Arc<Cluster> {
    static SHARED: Mutex<Weak<Cluster>> = Mutex::new(Weak::new());
    let mut slot = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(c) = slot.upgrade() {
        return c;
    }
    let c = Cluster::up().expect("kwg-sim up");
    crate::install_gateway(&c).expect("kubectl apply -k manifests/");
    let c = Arc::new(c);
    *slot = Arc::downgrade(&c);
    c
}

/// A new machine on the LAN (it stays until `kwg-sim down`: deleting it while other tests run
/// let a new laptop reuse its LAN address, and the LAN's stale neighbour entry for it
/// blackholed DNS answers for seconds).
pub fn laptop(sim: &Arc<Cluster>, name: &str) -> Laptop {
    let netns = sim
        .add_laptop(name)
        .unwrap_or_else(|e| panic!("kwg-sim laptop add {name}: {e}"));
    let state = sim.names().run_dir().join(format!("kwg-state-{name}"));
    Laptop {
        sim: sim.clone(),
        name: name.to_string(),
        netns,
        state,
    }
}

pub struct Laptop {
    pub sim: Arc<Cluster>,
    pub name: String,
    pub netns: String,
    pub state: PathBuf,
}

impl Laptop {
    /// Runs `argv` on this laptop as the developer.
    pub fn run(&self, argv: &[&str]) -> Output {
        self.run_as("developer", argv)
    }

    pub fn run_as(&self, user: &str, argv: &[&str]) -> Output {
        self.command(user, argv)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {argv:?}: {e}"))
    }

    /// Runs `argv` on this laptop as the developer and returns its stdout; a failure panics
    /// with its stderr (an absence in the output of a command that failed proves nothing).
    pub fn run_ok(&self, argv: &[&str]) -> String {
        let out = self.run(argv);
        assert!(
            out.status.success(),
            "{argv:?} failed ({}): {}",
            out.status,
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// Starts `argv` on this laptop as the developer without waiting (stdout and stderr
    /// piped), e.g. to watch what a `kwg join` does while it runs.
    pub fn spawn(&self, argv: &[&str]) -> std::process::Child {
        self.command("developer", argv)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {argv:?}: {e}"))
    }

    fn command(&self, user: &str, argv: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::new("ip");
        c.args(["netns", "exec", &self.netns, "env"])
            .arg(format!("KWG_STATE_DIR={}", self.state.display()))
            .arg(format!(
                "KUBECONFIG={}",
                self.sim.names().kubeconfig(user).display()
            ))
            .arg(format!("PATH={}", path_with_bins()))
            .args(argv);
        c
    }

    /// `kwg ci-credentials NAME --out FILE` as the admin, `--reach` each of `reach` and
    /// `extra` flags after; what it said is the caller's to check.
    pub fn ci_credentials(
        &self,
        name: &str,
        reach: &[&str],
        extra: &[&str],
        file: &Path,
    ) -> Output {
        let file = file.display().to_string();
        let mut argv = vec!["kwg", "ci-credentials", name, "--out", &file];
        for ns in reach {
            argv.extend(["--reach", ns]);
        }
        argv.extend_from_slice(extra);
        self.run_as("admin", &argv)
    }

    pub fn kwg(&self, args: &[&str]) -> Output {
        let mut argv = vec!["kwg"];
        argv.extend_from_slice(args);
        self.run(&argv)
    }

    /// `kwg join` that must succeed.
    pub fn join(&self, args: &[&str]) -> Output {
        let mut a = vec!["join", "--name", &self.name];
        a.extend_from_slice(args);
        let out = self.kwg(&a);
        assert!(
            out.status.success(),
            "kwg join {args:?} failed:\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        out
    }

    /// `kwg status -o json`; output that is not one JSON object fails the test with it.
    pub fn status_json(&self) -> serde_json::Value {
        let out = self.kwg(&["status", "-o", "json"]);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "kwg status -o json: {e}: {}{}",
                text(&out.stdout),
                text(&out.stderr)
            )
        })
    }

    pub fn curl(&self, url: &str) -> Output {
        self.run(&["curl", "-sS", "--max-time", "3", url])
    }

    /// The addresses `dig +short` prints (its ";;" remarks, e.g. a refused first server, dropped).
    pub fn dig(&self, name: &str) -> String {
        let out = text(
            &self
                .run(&["dig", "+short", "+time=3", "+tries=3", name])
                .stdout,
        );
        let lines: Vec<&str> = out.lines().filter(|l| !l.starts_with(";;")).collect();
        lines.join("\n")
    }

    /// The answer's status (`NOERROR`, `NXDOMAIN`, `REFUSED`...) `dig` prints for `name`; no
    /// answer at all panics (a timeout is no "no such name").
    pub fn dig_status(&self, name: &str) -> String {
        let out = text(&self.run(&["dig", "+time=3", "+tries=3", name]).stdout);
        out.split_once("status: ")
            .and_then(|(_, rest)| rest.split(',').next())
            .unwrap_or_else(|| panic!("dig {name} got no answer:\n{out}"))
            .to_string()
    }

    /// The first IPv4 address glibc resolves for `name` (what applications see).
    pub fn getent(&self, name: &str) -> String {
        let out = text(&self.run(&["getent", "ahostsv4", name]).stdout);
        out.split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    }

    pub fn resolv_conf(&self) -> Vec<u8> {
        std::fs::read(format!("/etc/netns/{}/resolv.conf", self.netns)).unwrap()
    }

    /// `ip route show` (a failure panics: "no kwg0 route" must not pass on empty output).
    pub fn routes(&self) -> String {
        self.run_ok(&["ip", "route", "show"])
    }

    pub fn daemon_pid(&self) -> i32 {
        let s: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.state.join("state.json")).unwrap()).unwrap();
        s["daemonPid"].as_i64().unwrap() as i32
    }

    /// Kills the daemon with SIGKILL (no cleanup: a crash), and gives the kernel a moment to
    /// close its TUN.
    pub fn kill_daemon(&self) {
        let pid = self.daemon_pid().to_string();
        let killed = std::process::Command::new("kill")
            .args(["-KILL", &pid])
            .status()
            .unwrap();
        assert!(killed.success(), "kill -KILL {pid}");
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
}

impl Drop for Laptop {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.state.join("daemon.log")).unwrap_or_default();
            eprintln!("--- kwg daemon log of laptop {}:\n{log}", self.name);
        }
        let _ = self.kwg(&["leave"]);
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn path_with_bins() -> String {
    format!(
        "{}:{}",
        kwg_sim::bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// Whether the peer Secret of `name` exists. Only the API server's NotFound means it is gone:
/// any other failure (API server down, RBAC, kubectl missing) panics with kubectl's error, so
/// a "no Secret left" assertion cannot pass against a broken API server.
pub fn secret_exists(sim: &Cluster, name: &str) -> bool {
    let secret = format!("kwg-peer-{name}");
    let got = sim
        .kubectl_admin(&[
            "-n",
            "kwg-system",
            "get",
            "secret",
            &secret,
            "--ignore-not-found",
            "-o",
            "name",
        ])
        .unwrap_or_else(|e| panic!("cannot tell whether Secret {secret} exists: {e}"));
    !got.trim().is_empty()
}
