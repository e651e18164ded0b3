//! The state directory and the state file: what `join` changed on this machine, so `leave`
//! can undo it even after the daemon was killed.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use crate::error::Error;
use crate::routes::PlannedRoute;

/// Default state directory (`$KWG_STATE_DIR` overrides it).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/kwg";

/// Files of the state directory.
#[derive(Debug, Clone)]
pub struct StateDir(pub PathBuf);

impl StateDir {
    /// `$KWG_STATE_DIR` or [`DEFAULT_STATE_DIR`].
    pub fn from_env() -> Self {
        StateDir(
            std::env::var_os("KWG_STATE_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
        )
    }
    pub fn create(&self) -> Result<(), Error> {
        std::fs::create_dir_all(&self.0).map_err(|e| {
            Error::io(
                format!("create the state directory {}", self.0.display()),
                e,
            )
        })
    }
    pub fn key(&self) -> PathBuf {
        self.0.join("private.key")
    }
    pub fn state(&self) -> PathBuf {
        self.0.join("state.json")
    }
    pub fn socket(&self) -> PathBuf {
        self.0.join("kwg.sock")
    }
    pub fn resolv_backup(&self) -> PathBuf {
        self.0.join("resolv.conf.orig")
    }
    pub fn uapi_dir(&self) -> PathBuf {
        self.0.join("uapi")
    }
    pub fn log(&self) -> PathBuf {
        self.0.join("daemon.log")
    }
}

/// How the machine's resolver was changed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DnsState {
    /// `resolv-conf` or `off`.
    pub mode: String,
    /// The file rewritten in place, and its byte-for-byte backup.
    pub resolv_conf: Option<PathBuf>,
    pub backup: Option<PathBuf>,
    pub forwarder: SocketAddr,
    /// The cluster DNS the forwarder asks through the tunnel.
    #[serde(default)]
    pub cluster_dns: Option<SocketAddr>,
    pub upstreams: Vec<SocketAddr>,
    pub include_suffixes: Vec<String>,
    pub exclude_suffixes: Vec<String>,
    pub timeout_secs: u64,
    pub search: Vec<String>,
}

/// Everything `join` did, written before each change is made.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    pub peer: String,
    pub kwg_namespace: String,
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    pub server: String,
    pub user: String,
    pub namespace: String,
    pub mapped_namespaces: Option<Vec<String>>,
    pub interface: String,
    pub tunnel_ip: Option<Ipv4Addr>,
    pub gateway_endpoint: Option<String>,
    pub gateway_key: Option<String>,
    pub gateway_admin: Option<SocketAddr>,
    pub routes: Vec<PlannedRoute>,
    pub dns: Option<DnsState>,
    pub daemon_pid: Option<u32>,
    pub joined_at: DateTime<Utc>,
    pub ttl_secs: u64,
}

impl State {
    /// Reads the state file; `Ok(None)` when there is none.
    pub fn load(path: &Path) -> Result<Option<State>, Error> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                Error::invalid(
                    format!("state file {}", path.display()),
                    format!("{e}; delete it after checking /etc/resolv.conf by hand"),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("read {}", path.display()), e)),
        }
    }

    /// Writes the state file atomically (temporary file + rename).
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        let tmp = path.with_extension("json.tmp");
        let json = serde_json::to_vec_pretty(self).expect("state serializes");
        std::fs::write(&tmp, json)
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| Error::io(format!("write {}", path.display()), e))
    }

    pub fn remove(path: &Path) -> Result<(), Error> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io(format!("remove {}", path.display()), e))
            }
            _ => Ok(()),
        }
    }
}

/// Whether process `pid` is alive (signal 0) and runs this program: a pid recorded before a
/// reboot may belong to an unrelated process by now, which must never be taken for the daemon
/// (nor signalled by `leave`).
pub fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
        && !is_zombie(pid)
        && runs_this_program(pid)
}

/// Compares the program names of `pid` and of this process; true when `/proc` does not say.
fn runs_this_program(pid: i32) -> bool {
    let name = |p: std::path::PathBuf| {
        p.file_name().map(|n| {
            n.to_string_lossy()
                .trim_end_matches(" (deleted)")
                .to_string()
        })
    };
    match (
        std::fs::read_link(format!("/proc/{pid}/exe")),
        std::env::current_exe(),
    ) {
        (Ok(theirs), Ok(ours)) => name(theirs) == name(ours),
        _ => true,
    }
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> State {
        State {
            peer: "laptop".into(),
            kwg_namespace: "kwg-system".into(),
            kubeconfig: None,
            context: Some("dev".into()),
            server: "https://192.0.2.1:6443".into(),
            user: "developer".into(),
            namespace: "emojivoto".into(),
            mapped_namespaces: None,
            interface: "kwg0".into(),
            tunnel_ip: Some("100.77.0.2".parse().unwrap()),
            gateway_endpoint: Some("192.0.2.1:31820".into()),
            gateway_key: Some("k".into()),
            gateway_admin: Some("100.77.0.1:8080".parse().unwrap()),
            routes: vec![],
            dns: None,
            daemon_pid: Some(std::process::id()),
            joined_at: "2026-01-01T00:00:00Z".parse().unwrap(),
            ttl_secs: 3600,
        }
    }

    #[test]
    fn round_trips_and_missing_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir(dir.path().into());
        assert_eq!(State::load(&sd.state()).unwrap(), None);
        sample().save(&sd.state()).unwrap();
        assert_eq!(State::load(&sd.state()).unwrap(), Some(sample()));
        State::remove(&sd.state()).unwrap();
        State::remove(&sd.state()).unwrap();
        assert!(pid_alive(std::process::id()));
        // A live process of another program (a recycled pid) is never taken for the daemon.
        let mut other = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let other_alive = pid_alive(other.id());
        other.kill().unwrap();
        other.wait().unwrap();
        assert!(!other_alive);
    }
}
