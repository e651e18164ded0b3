//! How WireGuard's datagrams reach the gateway: UDP, TCP, or the API server's port-forward.
//! [`ladder`] decides (pure, time passed in); [`run`] does the I/O in one task next to the
//! device; the driver talks to it through [`Transport`].

mod api_server;
pub mod ladder;
mod run;
mod rungs;

use std::net::SocketAddr;
use std::time::Instant;

use kwg_contract::{PathFailure, TransportStatus};
use kwg_wg::device::{DeviceHandle, PeerConfig};
use tokio::sync::{mpsc, watch};

use ladder::Ladder;
pub use ladder::Timings;
pub use rungs::{Mode, Rung};

use crate::cluster::Kube;

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

/// Where the gateway peer points before the transport chose: its UDP endpoint, or nowhere in
/// the stream-only modes (no datagram may go out over UDP then).
pub fn first_endpoint(mode: Mode, udp: Option<SocketAddr>) -> Option<SocketAddr> {
    match mode {
        Mode::Auto | Mode::Udp => udp,
        Mode::Tcp | Mode::ApiServer => None,
    }
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
mod tests;
