//! How WireGuard's datagrams reach the gateway: UDP, TCP, or the API server's port-forward.
//! `kwg_session::transport`'s ladder decides (pure, time passed in); [`run`] does the I/O in
//! one task next to the device; the driver talks to it through [`Transport`].

mod api_server;
mod run;

use std::net::SocketAddr;
use std::time::Instant;

use kwg_contract::{PathFailure, TransportStatus};
use kwg_wg::device::{DeviceHandle, PeerConfig};
use tokio::sync::{mpsc, watch};

pub use kwg_session::transport::{Ladder, Mode, Rung, Step, Timings, first_endpoint};

use crate::cluster::Kube;

/// `kwg join --transport`: the ladder's [`Mode`], as a flag.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Flag {
    /// UDP, falling back to TCP, then to the API server; moves back up when it can.
    #[default]
    Auto,
    /// UDP to the gateway's endpoint only (what WireGuard does).
    Udp,
    /// WireGuard over TCP to the same endpoint only (networks without UDP).
    Tcp,
    /// WireGuard over the API server's pods/portforward to a gateway pod only (needs get and
    /// create on pods/portforward in the gateway's namespace).
    ApiServer,
}

impl From<Flag> for Mode {
    fn from(m: Flag) -> Mode {
        match m {
            Flag::Auto => Mode::Auto,
            Flag::Udp => Mode::Udp,
            Flag::Tcp => Mode::Tcp,
            Flag::ApiServer => Mode::ApiServer,
        }
    }
}

/// What the driver tells the transport task.
#[derive(Debug)]
enum Cmd {
    /// No handshake yet, or the session stalled: try again or another path.
    Stall,
    /// The status, after looking at the device (a handshake may have completed since the
    /// last tick).
    Status(tokio::sync::oneshot::Sender<Option<TransportStatus>>),
}

/// The ladder's state for `kwg status`, with wall-clock times.
#[derive(Debug, Clone, Default)]
struct Snapshot(Option<TransportStatus>);

impl Snapshot {
    fn of(l: &Ladder, endpoint: Option<String>, now: Instant) -> Snapshot {
        let wall = |t: Instant| {
            let d = chrono::Duration::from_std(t.saturating_duration_since(now))
                .unwrap_or_default()
                - chrono::Duration::from_std(now.saturating_duration_since(t)).unwrap_or_default();
            chrono::Utc::now() + d
        };
        Snapshot(Some(TransportStatus {
            mode: l.mode().as_str().into(),
            path: l.path().map(|p| p.as_str().into()),
            endpoint,
            failed: l
                .failures()
                .map(|(r, f)| PathFailure {
                    path: r.as_str().into(),
                    reason: f.reason.clone(),
                    at: wall(f.at),
                })
                .collect(),
            next_probe: l.next_probe().map(wall),
        }))
    }
}

/// The running transport task.
pub struct Transport {
    cmds: mpsc::Sender<Cmd>,
    /// The gateway peer, latest first: a change is never lost to a full queue.
    gateway: watch::Sender<Option<PeerConfig>>,
    status: watch::Receiver<Snapshot>,
    task: tokio::task::JoinHandle<()>,
}

impl Transport {
    /// Starts choosing the path for `gateway` (already added to the device); `udp` is the
    /// gateway's advertised endpoint.
    pub fn start(
        mode: Mode,
        timings: Timings,
        device: DeviceHandle,
        gateway: PeerConfig,
        udp: SocketAddr,
        kube: Option<Kube>,
        kwg_namespace: String,
    ) -> Transport {
        let (cmds, rx) = mpsc::channel(8);
        let (gateway_tx, gateway_rx) = watch::channel(None);
        let (status_tx, status) = watch::channel(Snapshot::default());
        let io = run::Io {
            ladder: Ladder::new(mode, timings, Instant::now()),
            device,
            gateway,
            udp,
            kube,
            kwg_namespace,
            stream: None,
            status: status_tx,
        };
        let task = tokio::spawn(io.run(rx, gateway_rx));
        Transport {
            cmds,
            gateway: gateway_tx,
            status,
            task,
        }
    }

    /// The gateway peer changed: applied by the task, the latest change winning.
    pub fn gateway(&self, peer: PeerConfig) {
        self.gateway.send_replace(Some(peer));
    }

    /// No handshake yet, or the session stalled.
    pub fn stall(&self) {
        let _ = self.cmds.try_send(Cmd::Stall);
    }

    /// For `kwg status`: fresh from the task, or its last state when it does not answer.
    pub async fn status(&self) -> Option<TransportStatus> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.cmds.try_send(Cmd::Status(tx)).is_ok()
            && let Ok(Ok(s)) = tokio::time::timeout(std::time::Duration::from_millis(500), rx).await
        {
            return s;
        }
        self.last_status()
    }

    /// The task's last published state.
    pub fn last_status(&self) -> Option<TransportStatus> {
        self.status.borrow().0.clone()
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The `Path` line of `kwg status`: the path in use, then each better path that failed and
/// why, and when better paths are tried again.
pub fn text(t: &TransportStatus, now: chrono::DateTime<chrono::Utc>) -> String {
    let secs = |from, to| {
        let s: chrono::Duration = to - from;
        humantime::format_duration(std::time::Duration::from_secs(s.num_seconds().max(0) as u64))
    };
    let mut o = match (&t.path, &t.endpoint) {
        (Some(_), Some(e)) => e.clone(),
        (Some(p), None) => p.clone(),
        (None, _) => format!("none yet (--transport {})", t.mode),
    };
    for f in &t.failed {
        o += &format!("; {} failed {} ago: {}", f.path, secs(f.at, now), f.reason);
    }
    if let Some(n) = t.next_probe {
        o += &format!("; better paths tried again in {}", secs(now, n));
    }
    o
}

/// Each failed path and why, for an error: `udp: …; tcp: …`.
pub fn failures_text(t: &TransportStatus) -> String {
    let each: Vec<String> = t
        .failed
        .iter()
        .map(|f| format!("{}: {}", f.path, f.reason))
        .collect();
    each.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_line_names_the_path_and_why_better_ones_failed() {
        let now: chrono::DateTime<chrono::Utc> = "2026-01-01T00:01:00Z".parse().unwrap();
        let t = kwg_contract::TransportStatus {
            mode: "auto".into(),
            path: Some("tcp".into()),
            endpoint: Some("tcp 192.0.2.1:31820".into()),
            failed: vec![kwg_contract::PathFailure {
                path: "udp".into(),
                reason: "no answer to a handshake over UDP within 3 s".into(),
                at: "2026-01-01T00:00:40Z".parse().unwrap(),
            }],
            next_probe: Some("2026-01-01T00:01:30Z".parse().unwrap()),
        };
        assert_eq!(
            text(&t, now),
            "tcp 192.0.2.1:31820; udp failed 20s ago: no answer to a handshake over UDP within 3 s; better paths tried again in 30s"
        );
        let joining = kwg_contract::TransportStatus {
            path: None,
            endpoint: None,
            failed: vec![],
            next_probe: None,
            ..t
        };
        assert_eq!(text(&joining, now), "none yet (--transport auto)");
    }
}
