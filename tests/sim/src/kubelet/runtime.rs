//! A pod's containers as local processes: spawn, supervise, probe, report.

use super::plan;
use crate::topology::PodNet;
use crate::{Error, Result};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// One container: a process in the pod's namespace, restarted when it exits.
#[derive(Debug)]
pub struct Ctr {
    pub name: String,
    pub image: String,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub probe: Option<(u16, String)>,
    pub child: Option<Child>,
    pub restarts: u32,
    pub next_start: Option<Instant>,
    pub ready: bool,
    pub started_at: Option<String>,
    /// Why it is not running (missing binary, last exit).
    pub waiting: Option<(String, String)>,
}

/// A pod the kubelet runs.
#[derive(Debug)]
pub struct RunningPod {
    pub uid: String,
    pub net: PodNet,
    /// `/run/kwg-sim/<P>/pods/<ns>_<pod>`: logs and the service-account files.
    pub dir: PathBuf,
    pub containers: Vec<Ctr>,
    pub started: String,
    pub reported: Option<Value>,
    /// How long containers get between SIGTERM and SIGKILL.
    pub grace: Duration,
}

impl Ctr {
    /// Starts the process via `ip netns exec <pod ns> kwg-sim pod-exec` (which mounts the
    /// service-account files and execs `argv`).
    pub fn spawn(
        &mut self,
        pod_ns: &str,
        dir: &std::path::Path,
        exe: &std::path::Path,
        now: &str,
    ) -> Result<()> {
        let bin = &self.argv[0];
        if !std::path::Path::new(bin).exists() {
            self.waiting = Some((
                "ErrImageNeverPull".into(),
                format!(
                    "no local binary {bin} for image {} (cargo build it)",
                    self.image
                ),
            ));
            return Ok(());
        }
        let log_path = dir.join(format!("{}.log", self.name));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(Error::io(format!("opening {}", log_path.display())))?;
        let log2 = log.try_clone().map_err(Error::io("cloning a log file"))?;
        let sa = dir.join("sa");
        let child = Command::new("ip")
            .args(["netns", "exec", pod_ns])
            .arg(exe)
            .arg("pod-exec")
            .arg("--sa-dir")
            .arg(&sa)
            .arg("--")
            .args(&self.argv)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0)
            .spawn()
            .map_err(|source| Error::Spawn {
                cmd: self.argv.join(" "),
                source,
            })?;
        tracing::info!(container = %self.name, pid = ?child.id(), ns = %pod_ns, "started container");
        self.child = Some(child);
        self.next_start = None;
        self.waiting = None;
        self.ready = self.probe.is_none();
        self.started_at = Some(now.to_string());
        Ok(())
    }

    /// Notices an exited process and schedules its restart; returns true if it changed.
    pub fn reap(&mut self, now: Instant) -> bool {
        let Some(child) = self.child.as_mut() else {
            return false;
        };
        match child.try_wait() {
            Ok(Some(status)) => {
                tracing::warn!(container = %self.name, %status, restarts = self.restarts + 1, "container exited; restarting");
                self.child = None;
                self.ready = false;
                self.next_start = Some(now + plan::backoff(self.restarts));
                self.restarts += 1;
                self.waiting = Some((
                    "CrashLoopBackOff".into(),
                    format!("container exited: {status}"),
                ));
                true
            }
            _ => false,
        }
    }

    /// SIGTERM to the process group, then SIGKILL after `grace`.
    pub async fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child.id() {
            crate::sh::kill(-(pid as i32), nix::sys::signal::Signal::SIGTERM);
        }
        if tokio::time::timeout(grace, child.wait()).await.is_err() {
            let _ = child.kill().await;
        }
    }
}

/// An httpGet probe from the node: true on a 2xx/3xx answer.
pub async fn http_ok(ip: std::net::IpAddr, port: u16, path: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect((ip, port)).await.ok()?;
        s.write_all(
            format!(
                "GET {path} HTTP/1.0\r\nHost: {ip}:{port}\r\nUser-Agent: kube-probe/1.33\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .ok()?;
        let mut buf = [0u8; 64];
        let mut n = 0;
        while n < 12 {
            let r = s.read(&mut buf[n..]).await.ok()?;
            if r == 0 {
                break;
            }
            n += r;
        }
        let line = String::from_utf8_lossy(&buf[..n]).to_string();
        let code: u16 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some((200..400).contains(&code))
    };
    matches!(
        tokio::time::timeout(Duration::from_millis(500), attempt).await,
        Ok(Some(true))
    )
}

/// The Pod status a kubelet would report for `pod` (deterministic for unchanged state).
pub fn pod_status(pod: &RunningPod, host_ip: std::net::IpAddr) -> Value {
    let all_ready = pod.containers.iter().all(|c| c.ready);
    let any_started = pod.containers.iter().any(|c| c.started_at.is_some());
    let t = &pod.started;
    let cond = |ty: &str, ok: bool| json!({"type": ty, "status": if ok { "True" } else { "False" }, "lastTransitionTime": t});
    let statuses: Vec<Value> = pod
        .containers
        .iter()
        .map(|c| {
            let state = match (&c.child, &c.waiting) {
                (Some(ch), _) => json!({"running": {"startedAt": c.started_at}, "_pid": ch.id()}),
                (None, Some((reason, message))) => json!({"waiting": {"reason": reason, "message": message}}),
                (None, None) => json!({"waiting": {"reason": "ContainerCreating"}}),
            };
            let mut state = state;
            state.as_object_mut().map(|o| o.remove("_pid"));
            json!({"name": c.name, "image": c.image, "imageID": "", "ready": c.ready, "started": c.child.is_some(),
                "restartCount": c.restarts, "state": state,
                "containerID": c.child.as_ref().and_then(|ch| ch.id()).map(|p| format!("kwg-sim://{p}"))})
        })
        .collect();
    json!({
        "phase": if any_started { "Running" } else { "Pending" },
        "podIP": pod.net.primary().to_string(),
        "podIPs": pod.net.addrs().iter().map(|ip| json!({"ip": ip.to_string()})).collect::<Vec<_>>(),
        "hostIP": host_ip.to_string(), "hostIPs": [{"ip": host_ip.to_string()}],
        "startTime": t, "qosClass": "BestEffort",
        "conditions": [cond("PodScheduled", true), cond("Initialized", true),
            cond("ContainersReady", all_ready), cond("Ready", all_ready)],
        "containerStatuses": statuses,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::Names;

    fn ctr(name: &str, probe: bool) -> Ctr {
        Ctr {
            name: name.into(),
            image: "kwg-sim:dev".into(),
            argv: vec!["/bin/true".into()],
            env: Vec::new(),
            probe: probe.then(|| (80, "/readyz".into())),
            child: None,
            restarts: 0,
            next_start: None,
            ready: false,
            started_at: None,
            waiting: None,
        }
    }

    #[test]
    fn status_reports_ip_phase_readiness_and_restarts() {
        let n = Names::new("kwg").unwrap();
        let ip = std::net::Ipv4Addr::new(10, 244, 0, 7);
        let mut pod = RunningPod {
            uid: "u".into(),
            net: PodNet::new(&n, "default", "web-1", ip),
            dir: PathBuf::from("/nonexistent"),
            containers: vec![ctr("web", true)],
            started: "2026-01-01T00:00:00Z".into(),
            reported: None,
            grace: Duration::from_secs(1),
        };
        let st = pod_status(&pod, std::net::Ipv4Addr::new(192, 0, 2, 1).into());
        assert_eq!(st["phase"], "Pending");
        assert_eq!(st["podIP"], "10.244.0.7");
        assert_eq!(st["hostIP"], "192.0.2.1");
        assert_eq!(
            st["containerStatuses"][0]["state"]["waiting"]["reason"],
            "ContainerCreating"
        );

        // Crashed twice, waiting to restart: Running phase (it started before), not ready.
        let c = &mut pod.containers[0];
        c.started_at = Some("2026-01-01T00:00:01Z".into());
        c.restarts = 2;
        c.waiting = Some((
            "CrashLoopBackOff".into(),
            "container exited: exit status: 1".into(),
        ));
        let st = pod_status(&pod, std::net::Ipv4Addr::new(192, 0, 2, 1).into());
        assert_eq!(st["phase"], "Running");
        assert_eq!(st["containerStatuses"][0]["restartCount"], 2);
        assert_eq!(
            st["containerStatuses"][0]["state"]["waiting"]["reason"],
            "CrashLoopBackOff"
        );
        let ready = st["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap();
        assert_eq!(ready["status"], "False");
        assert_eq!(
            st,
            pod_status(&pod, std::net::Ipv4Addr::new(192, 0, 2, 1).into()),
            "deterministic"
        );
    }

    #[test]
    fn a_missing_binary_waits_with_a_reason() {
        let n = Names::new("kwg").unwrap();
        let mut c = ctr("gw", false);
        c.argv = vec!["/nonexistent/kwg-gateway".into()];
        let pod = PodNet::new(&n, "default", "x", std::net::Ipv4Addr::new(10, 244, 0, 9));
        c.spawn(
            &pod.ns,
            std::path::Path::new("/nonexistent"),
            std::path::Path::new("/bin/false"),
            "now",
        )
        .unwrap();
        assert!(c.child.is_none());
        assert_eq!(c.waiting.as_ref().unwrap().0, "ErrImageNeverPull");
    }
}
