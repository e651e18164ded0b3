//! The real systemd-resolved running inside a network namespace, on a private system bus, for
//! tests of kwg's `--dns-mode resolved` (see "systemd-resolved in a test namespace" in the field
//! notes).
//!
//! ```no_run
//! # fn main() -> kwg_sim::Result<()> {
//! use kwg_sim::testing::ResolvedNs;
//! let r = ResolvedNs::start("kt1x0-laptop-a", "192.0.2.53".parse().unwrap())?;
//! println!("{}", r.resolvectl(&["status"])?);        // resolvectl of the same package
//! r.exec_ok(&["getent", "hosts", "intranet.corp.example"])?; // through the stub 127.0.0.53
//! # Ok(()) }                                         // drop: both daemons stop, resolv.conf back
//! ```
//!
//! `ip netns exec NS unshare -m --propagation private sh start.sh`: the script puts tmpfs on
//! `/run/dbus` and `/run/systemd` and an overlay on `/etc` (passwd and group with a
//! `systemd-resolve` user; `/etc/resolv.conf` a symlink to resolved's `stub-resolv.conf`, as on
//! a laptop, so the search domains resolved writes there reach glibc), starts `dbus-daemon`
//! with a config of its own, then execs resolved (whose upstream is the given server). Commands
//! see all this through `nsenter` into resolved's mount and network namespaces
//! ([`ResolvedNs::command`]); a process outside reaches the bus at [`ResolvedNs::bus_address`].
//! `ip netns exec` commands see `/etc/netns/<ns>/resolv.conf`, pointed at the stub too (without
//! resolved's search domains).

mod package;

pub use package::{CACHE_DIR, Package};

use crate::names::Names;
use crate::{Error, Result, sh};
use nix::sys::signal::Signal;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long resolved may take to own its bus name (it takes ~0.2 s).
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// resolv.conf as resolved writes its stub file.
const STUB_RESOLV_CONF: &str = "# written by kwg-sim: systemd-resolved's stub (as /run/systemd/resolve/stub-resolv.conf)\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n";

/// A running systemd-resolved (and its dbus-daemon) in one network namespace; stopped on drop.
#[derive(Debug)]
pub struct ResolvedNs {
    netns: String,
    package: Package,
    resolved: Child,
    dbus_pid: i32,
    state: PathBuf,
    resolv_conf: PathBuf,
    original_resolv_conf: Option<String>,
    started_in: Duration,
}

impl ResolvedNs {
    /// Starts resolved in `netns` with `upstream` as its global DNS server, and points the
    /// namespace's resolv.conf (`/etc/netns/<netns>/resolv.conf`) at the stub 127.0.0.53.
    pub fn start(netns: &str, upstream: IpAddr) -> Result<ResolvedNs> {
        let package = Package::get()?;
        let state = PathBuf::from("/run/kwg-test/resolved").join(netns);
        let _ = std::fs::remove_dir_all(&state);
        write_state_files(&state, &package, upstream)?;
        let started = Instant::now();
        let log = std::fs::File::create(state.join("resolved.log"))
            .map_err(Error::io("creating resolved.log"))?;
        let script = state.join("start.sh");
        let resolved = Command::new("ip")
            .args([
                "netns",
                "exec",
                netns,
                "unshare",
                "-m",
                "--propagation",
                "private",
                "sh",
            ])
            .arg(&script)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(Error::io("resolved.log"))?)
            .stderr(log)
            .spawn()
            .map_err(|source| Error::Spawn {
                cmd: format!("ip netns exec {netns} unshare -m sh {}", script.display()),
                source,
            })?;
        let resolv_conf = Names::etc_netns(netns).join("resolv.conf");
        let original_resolv_conf = std::fs::read_to_string(&resolv_conf).ok();
        let mut r = ResolvedNs {
            netns: netns.to_string(),
            package,
            resolved,
            dbus_pid: 0,
            state,
            resolv_conf,
            original_resolv_conf,
            started_in: Duration::ZERO,
        };
        r.wait_ready()?;
        r.started_in = started.elapsed();
        sh::write_file(&r.resolv_conf, STUB_RESOLV_CONF)?;
        tracing::info!(
            netns,
            ms = r.started_in.as_millis() as u64,
            "systemd-resolved is up"
        );
        Ok(r)
    }

    /// Polls until resolved owns `org.freedesktop.resolve1` on its bus.
    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.resolved.try_wait() {
                return Err(self.failed(&format!("exited with {status}")));
            }
            self.read_dbus_pid();
            if self.dbus_pid != 0 && self.name_has_owner() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(self.failed(&format!(
                    "did not own its bus name within {READY_TIMEOUT:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// dbus-daemon's PID, once start.sh has written it.
    fn read_dbus_pid(&mut self) {
        if self.dbus_pid == 0 {
            let pid = std::fs::read_to_string(self.state.join("dbus.pid")).unwrap_or_default();
            self.dbus_pid = pid.trim().parse().unwrap_or(0);
        }
    }

    fn name_has_owner(&self) -> bool {
        let out = self
            .command("dbus-send")
            .args([
                "--system",
                "--print-reply",
                "--dest=org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus.NameHasOwner",
                "string:org.freedesktop.resolve1",
            ])
            .output();
        out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("boolean true"))
    }

    fn failed(&self, what: &str) -> Error {
        let log = std::fs::read_to_string(self.state.join("resolved.log")).unwrap_or_default();
        let dbus = std::fs::read_to_string(self.state.join("dbus.log")).unwrap_or_default();
        Error::Invalid(format!(
            "systemd-resolved {} in {} {what}; its log: {log}; dbus-daemon's: {dbus}",
            self.package.version(),
            self.netns
        ))
    }

    /// How long resolved took from spawn to owning its bus name.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// The network namespace it runs in.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// The unpacked package (for its `resolvectl`).
    pub fn package(&self) -> &Package {
        &self.package
    }

    /// resolved's PID.
    pub fn pid(&self) -> u32 {
        self.resolved.id()
    }

    /// The private bus as a D-Bus address usable from outside its mount namespace (through
    /// `/proc/<dbus-daemon>/root`).
    pub fn bus_address(&self) -> String {
        format!(
            "unix:path=/proc/{}/root/run/dbus/system_bus_socket",
            self.dbus_pid
        )
    }

    /// `program` to run inside resolved's mount and network namespaces (`nsenter -t <pid> -m
    /// -n`), where `/etc/resolv.conf` is the stub and the system bus is the private one.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg("-t")
            .arg(self.dbus_pid.to_string())
            .args(["-m", "-n", "--", program]);
        cmd
    }

    /// Runs `cmd` inside ([`ResolvedNs::command`]).
    pub fn exec(&self, cmd: &[&str]) -> Result<Output> {
        let (program, args) = cmd
            .split_first()
            .ok_or_else(|| Error::Invalid("an empty command".into()))?;
        self.command(program)
            .args(args)
            .output()
            .map_err(|source| Error::Spawn {
                cmd: cmd.join(" "),
                source,
            })
    }

    /// Like [`ResolvedNs::exec`]; a non-zero exit is an error with the output; returns stdout.
    pub fn exec_ok(&self, cmd: &[&str]) -> Result<String> {
        let out = self.exec(cmd)?;
        if !out.status.success() {
            return Err(Error::Command {
                cmd: format!("nsenter ({}) {}", self.netns, cmd.join(" ")),
                stderr: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The package's `resolvectl --no-pager <args>`, inside; returns stdout.
    pub fn resolvectl(&self, args: &[&str]) -> Result<String> {
        let lib = format!("LD_LIBRARY_PATH={}", self.package.lib_dir().display());
        let ctl = self.package.resolvectl().to_string_lossy().into_owned();
        let mut argv = vec!["env", &lib, &ctl, "--no-pager"];
        argv.extend_from_slice(args);
        self.exec_ok(&argv)
    }

    /// Stops resolved and its dbus-daemon (by PID) and restores the namespace's resolv.conf.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(original) = self.original_resolv_conf.take() {
            sh::write_file(&self.resolv_conf, &original)?;
        }
        if self.resolved.try_wait().ok().flatten().is_none() {
            sh::kill(self.resolved.id() as i32, Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(3);
            while self.resolved.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = self.resolved.kill();
            let _ = self.resolved.wait();
        }
        // Only the dbus-daemon this run started: the PID must still run dbus-daemon.
        self.read_dbus_pid();
        let pid = std::mem::take(&mut self.dbus_pid);
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if pid > 0 && comm.trim() == "dbus-daemon" {
            sh::kill(pid, Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(3);
            while sh::alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = std::fs::remove_dir_all(&self.state);
        Ok(())
    }
}

impl Drop for ResolvedNs {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("stopping systemd-resolved in {}: {e}", self.netns);
        }
    }
}

/// The instance's files: start.sh, the bus config, resolved's config, passwd and group.
fn write_state_files(state: &std::path::Path, pkg: &Package, upstream: IpAddr) -> Result<()> {
    let read = |p: &str| std::fs::read_to_string(p).map_err(Error::io(format!("reading {p}")));
    let (mut passwd, mut group) = (read("/etc/passwd")?, read("/etc/group")?);
    if !passwd.lines().any(|l| l.starts_with("systemd-resolve:")) {
        passwd.push_str(
            "systemd-resolve:x:64953:64953:systemd Resolver (kwg test):/:/usr/sbin/nologin\n",
        );
    }
    if !group.lines().any(|l| l.starts_with("systemd-resolve:")) {
        group.push_str("systemd-resolve:x:64953:\n");
    }
    let files = [
        ("passwd", passwd),
        ("group", group),
        ("bus.conf", bus_config(pkg)),
        ("resolved.conf", resolved_config(upstream)),
        ("start.sh", start_script(state, pkg)),
    ];
    for (name, text) in files {
        sh::write_file(&state.join(name), &text)?;
    }
    Ok(())
}

/// A system bus of the test's: anyone may talk to anyone (the caller is root anyway); the
/// package's policy lets `systemd-resolve` own `org.freedesktop.resolve1`.
fn bus_config(pkg: &Package) -> String {
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=/run/dbus/system_bus_socket</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
  <includedir>{}</includedir>
</busconfig>
"#,
        pkg.policy_dir().display()
    )
}

/// resolved's configuration: `upstream` as the global server; no LLMNR/mDNS (they would talk
/// on the namespace's links), no DNSSEC (the LAN resolver signs nothing), no cache (tests see
/// each query arrive).
fn resolved_config(upstream: IpAddr) -> String {
    format!(
        "[Resolve]\nDNS={upstream}\nLLMNR=no\nMulticastDNS=no\nDNSSEC=no\nDNSOverTLS=no\nCache=no\n"
    )
}

fn start_script(state: &std::path::Path, pkg: &Package) -> String {
    format!(
        r#"set -eu
S={state}
mkdir -p /run/dbus /run/systemd
mount -t tmpfs -o mode=0755 kwg-test /run/dbus
mount -t tmpfs -o mode=0755 kwg-test /run/systemd
mkdir -p /run/systemd/resolved.conf.d
cp "$S/resolved.conf" /run/systemd/resolved.conf.d/kwg-test.conf
mkdir -p "$S/etc"
mount -t tmpfs -o mode=0755 kwg-test "$S/etc"
mkdir "$S/etc/upper" "$S/etc/work"
mount -t overlay kwg-test -o "lowerdir=/etc,upperdir=$S/etc/upper,workdir=$S/etc/work" /etc
cp "$S/passwd" /etc/passwd
cp "$S/group" /etc/group
ln -sf ../run/systemd/resolve/stub-resolv.conf /etc/resolv.conf
dbus-daemon --config-file="$S/bus.conf" --nofork --nopidfile >"$S/dbus.log" 2>&1 &
echo $! >"$S/dbus.pid"
i=0
while [ ! -S /run/dbus/system_bus_socket ]; do
  i=$((i + 1)); [ $i -lt 500 ] || {{ echo "dbus-daemon made no socket" >&2; exit 1; }}
  sleep 0.01
done
export LD_LIBRARY_PATH={lib}
exec env -u NOTIFY_SOCKET {daemon}
"#,
        state = state.display(),
        lib = pkg.lib_dir().display(),
        daemon = pkg.daemon().display(),
    )
}
