//! What the `kwg-wg` binary does: run a UAPI-configured device, in the foreground or as a
//! daemon that the parent waits for (like wireguard-go).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::device::{DEFAULT_MTU, Device};
use kwg_host::lifeline::Lifeline;

/// Env var naming a file where the daemon writes its segments per syscall (see
/// [`crate::io::stats::IoStats`]) on SIGUSR1 and when it stops.
pub const STATS_ENV: &str = "KWG_WG_STATS";
/// Where `wg` looks for UAPI sockets; `KWG_WG_RUN_DIR` overrides it.
pub const DEFAULT_RUN_DIR: &str = "/var/run/wireguard";
/// How long the parent waits for the daemon's interface.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

pub fn run_dir() -> PathBuf {
    std::env::var_os("KWG_WG_RUN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_RUN_DIR))
}

/// Runs the device until SIGTERM/SIGINT or until its [`Lifeline`] ends. `detached`: started by
/// [`daemonize`], whose parent reads stderr only until the device is up; after that the daemon
/// logs nowhere (like wireguard-go).
pub fn foreground(ifname: &str, detached: bool) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let dir = run_dir();
        let device =
            Device::start_with(ifname.to_owned(), None, 0, DEFAULT_MTU, Some(dir.clone())).await?;
        let lifeline = Lifeline::new(ifname, dir.join(format!("{ifname}.sock")));
        if detached {
            let devnull = std::fs::File::options().write(true).open("/dev/null")?;
            nix::unistd::dup2_stderr(&devnull).context("cannot detach from the parent's stderr")?;
        }
        let mut signals = kwg_host::process::Signals::new()?;
        let stats = StatsFile::from_env();
        let mut usr1 =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())?;
        loop {
            tokio::select! {
                _ = signals.recv() => break,
                _ = usr1.recv() => stats.write(&device),
                _ = tokio::time::sleep(Duration::from_secs(1)) => {
                    if let Some(reason) = lifeline.ended() {
                        tracing::info!(ifname, %reason, "stopping");
                        break;
                    }
                }
            }
        }
        stats.write(&device);
        tracing::info!(
            ifname,
            "segments per syscall:\n{}",
            device.handle().io_stats()
        );
        device.shutdown().await?;
        anyhow::Ok(())
    })
}

/// Starts `kwg-wg --foreground IFNAME` in a new session and returns once its UAPI socket
/// answers, or fails with the child's error.
pub fn daemonize(ifname: &str) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find the kwg-wg executable")?;
    let socket = run_dir().join(format!("{ifname}.sock"));
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["--foreground", "--detached"])
        .arg(ifname)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        // Kept only to report a startup failure; later log lines are dropped (like
        // wireguard-go without LOG_LEVEL).
        .stderr(std::process::Stdio::piped());
    let mut child =
        kwg_host::process::spawn_detached(&mut cmd).context("cannot start the kwg-wg daemon")?;
    let deadline = std::time::Instant::now() + STARTUP_TIMEOUT;
    while std::time::Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            bail!("the kwg-wg daemon exited with {status}: {}", err.trim());
        }
        if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!(
        "the kwg-wg daemon did not create {} within {STARTUP_TIMEOUT:?}",
        socket.display()
    )
}

/// The `KWG_WG_STATS` file, if asked for.
struct StatsFile(Option<PathBuf>);

impl StatsFile {
    fn from_env() -> StatsFile {
        StatsFile(std::env::var_os(STATS_ENV).map(PathBuf::from))
    }

    /// Replaces the file with the current counters (a reader never sees half of it).
    fn write(&self, device: &Device) {
        let Some(path) = &self.0 else { return };
        let tmp = path.with_extension("tmp");
        let text = device.handle().io_stats().to_string();
        if let Err(e) = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path)) {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the stats file");
        }
    }
}
