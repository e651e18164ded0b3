//! Running `ip`, `nft` and friends.

use crate::{Error, Result};
use std::io::Write;
use std::process::{Command, Stdio};

/// Runs `cmd args...`, returning stdout; a non-zero exit is an error carrying stderr.
pub fn run(cmd: &str, args: &[&str]) -> Result<String> {
    run_stdin(cmd, args, None)
}

/// Like [`run`], feeding `stdin` to the command.
pub fn run_stdin(cmd: &str, args: &[&str], stdin: Option<&str>) -> Result<String> {
    let line = || format!("{cmd} {}", args.join(" "));
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Spawn {
            cmd: cmd.to_string(),
            source,
        })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(Error::io(format!("writing to {}", line())))?;
    }
    let out = child
        .wait_with_output()
        .map_err(Error::io(format!("waiting for {}", line())))?;
    if !out.status.success() {
        return Err(Error::Command {
            cmd: line(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip` with arguments split on whitespace.
pub fn ip(args: &str) -> Result<String> {
    let args: Vec<&str> = args.split_whitespace().collect();
    run("ip", &args)
}

/// Network namespaces that exist now.
pub fn netns_list() -> Result<Vec<String>> {
    Ok(ip("netns list")?
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

/// PIDs of processes inside a network namespace.
pub fn netns_pids(ns: &str) -> Vec<i32> {
    run("ip", &["netns", "pids", ns])
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Sends `sig` to `pid`, ignoring a process that is already gone.
pub fn kill(pid: i32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
}

/// Whether a process with this PID is alive (and not a zombie).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

/// Whether `pid` runs `kwg-sim daemon --prefix <prefix>`.
pub fn is_daemon(pid: i32, prefix: &str) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    args.len() >= 4
        && args[0].ends_with(b"kwg-sim")
        && args[1] == b"daemon"
        && args
            .windows(2)
            .any(|w| w[0] == b"--prefix" && w[1] == prefix.as_bytes())
}

/// Writes `text` to `path`, rewriting in place (a bind-mounted resolv.conf cannot be renamed over).
pub fn write_file(path: &std::path::Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(Error::io(format!("creating {}", dir.display())))?;
    }
    std::fs::write(path, text).map_err(Error::io(format!("writing {}", path.display())))
}
