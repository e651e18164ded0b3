//! The transport's I/O: one task owns the [`Ladder`], opens streams (TCP, the API server),
//! attaches them to the device, pins the gateway peer to the path the ladder chooses, sends
//! probes, and watches the device for handshakes, answers over other paths and broken streams.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kwg_wg::device::{ByteStream, DeviceHandle, PeerConfig};
use kwg_wg::io::stream::{is_stream_endpoint, set_stream_options};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::Rung;
use super::{Cmd, Snapshot};
use crate::cluster::Kube;
use kwg_session::transport::{Ladder, Step};

/// How often the device is looked at.
const TICK: Duration = Duration::from_millis(100);
/// A TCP connect that takes longer failed (one lost SYN is retransmitted after 1 s, RFC
/// 6298); short, so that a dropped TCP still lets the API-server path join within ~3 s.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A connect attempt's result, with the attempt's number: only the latest attempt's counts.
type Opened = (u64, Rung, Result<Box<dyn ByteStream>, String>);

pub(super) struct Io {
    pub ladder: Ladder,
    pub device: DeviceHandle,
    pub gateway: PeerConfig,
    /// The gateway's UDP endpoint (TCP goes to the same address).
    pub udp: SocketAddr,
    pub kube: Option<Kube>,
    pub kwg_namespace: String,
    pub stream: Option<(Rung, SocketAddr)>,
    pub status: watch::Sender<Snapshot>,
}

impl Io {
    pub(super) async fn run(
        mut self,
        mut cmds: mpsc::Receiver<Cmd>,
        mut gateway: watch::Receiver<Option<PeerConfig>>,
    ) {
        let (opened_tx, mut opened) = mpsc::channel::<Opened>(2);
        let mut connecting: Option<JoinHandle<()>> = None;
        let mut attempt = 0u64;
        let mut seen_handshake = 0;
        loop {
            while let Some(step) = self.ladder.poll() {
                if let Step::Connect(rung) = step {
                    if let Some(c) = connecting.take() {
                        c.abort();
                    }
                    attempt += 1;
                    let (tx, target, n) = (opened_tx.clone(), self.udp, attempt);
                    let (kube, ns) = (self.kube.clone(), self.kwg_namespace.clone());
                    connecting = Some(tokio::spawn(async move {
                        let r = open(rung, target, kube, &ns).await;
                        let _ = tx.send((n, rung, r)).await;
                    }));
                } else {
                    self.execute(step).await;
                }
            }
            self.publish();
            tokio::select! {
                cmd = cmds.recv() => match cmd {
                    None => break,
                    Some(Cmd::Stall) => self.ladder.stall(Instant::now()),
                    Some(Cmd::Status(reply)) => {
                        self.observe(&mut seen_handshake, Instant::now()).await;
                        self.publish();
                        let _ = reply.send(self.status.borrow().0.clone());
                    }
                },
                Ok(()) = gateway.changed() => {
                    let peer = gateway.borrow_and_update().clone();
                    if let Some(peer) = peer {
                        self.follow(peer).await;
                    }
                }
                Some((n, rung, r)) = opened.recv() => {
                    if n == attempt && self.ladder.connecting() == Some(rung) {
                        self.opened(rung, r);
                    } else {
                        // Superseded: its stream (if any) is dropped, which closes it.
                        tracing::debug!(path = %rung, "result of a superseded connect ignored");
                    }
                }
                _ = tokio::time::sleep(TICK) => {
                    let now = Instant::now();
                    self.observe(&mut seen_handshake, now).await;
                    self.ladder.tick(now);
                }
            }
        }
        if let Some(c) = connecting {
            c.abort();
        }
        if let Some((_, ep)) = self.stream.take() {
            self.device.close_stream(&ep);
        }
    }

    fn opened(&mut self, rung: Rung, r: Result<Box<dyn ByteStream>, String>) {
        let now = Instant::now();
        let attached = r.and_then(|s| {
            self.device
                .attach_stream(s, format!("{rung} to the gateway"))
                .map_err(|e| e.to_string())
        });
        match attached {
            Ok(ep) => {
                if let Some((_, old)) = self.stream.replace((rung, ep)) {
                    self.device.close_stream(&old);
                }
                self.ladder.connected(rung, now);
            }
            Err(e) => self.ladder.connect_failed(rung, &e, now),
        }
    }

    /// Handshakes, answers over other paths, broken streams.
    /// A handshake is new when its serial changed: `last_handshake` differs on every read,
    /// which told the ladder of a handshake every tick and reset its UDP stall, so a session on
    /// UDP never fell back to a stream when UDP broke (found by tests/model).
    async fn observe(&mut self, seen: &mut u64, now: Instant) {
        let key = self.gateway.public_key;
        let serial = self.device.handshake_serial(&key).unwrap_or(0);
        if serial != 0 && serial != *seen {
            *seen = serial;
            self.ladder.handshake(now);
        }
        if let Some((from, age)) = self.device.heard_other(&key)
            && age < Duration::from_secs(5)
        {
            let rung = if is_stream_endpoint(&from) {
                self.stream.map_or(Rung::Tcp, |(r, _)| r)
            } else {
                Rung::Udp
            };
            self.ladder.heard(rung, now);
        }
        if let Some((_, ep)) = self.stream
            && !self.device.stream_open(&ep)
        {
            self.stream = None;
            self.ladder
                .stream_closed("closed by the gateway or the network", now);
        }
    }

    async fn execute(&mut self, step: Step) {
        let key = self.gateway.public_key;
        let r = match step {
            Step::Use { rung, restart } => {
                let ep = match rung {
                    Rung::Udp => Some(self.udp),
                    _ => self.stream.map(|(_, ep)| ep),
                };
                match ep {
                    Some(ep) => self.pin(ep, restart).await,
                    None => Ok(()),
                }
            }
            Step::Rebind => {
                let r = crate::peer::rebind(&self.device, self.gateway.clone()).await;
                match r {
                    Ok(()) => self.pin(self.udp, false).await,
                    Err(e) => Err(e.to_string()),
                }
            }
            Step::Probe(_) => {
                tracing::debug!(udp = %self.udp, "probing UDP with a handshake");
                self.device
                    .probe(&key, self.udp)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            Step::Close => {
                if let Some((_, ep)) = self.stream.take() {
                    self.device.close_stream(&ep);
                }
                Ok(())
            }
            Step::Connect(_) => Ok(()),
        };
        if let Err(e) = r {
            tracing::warn!(error = %e, "transport step failed");
        }
    }

    /// Pins the gateway peer to `ep`; `restart` drops its pending handshake so the next packet
    /// starts a new one there.
    async fn pin(&self, ep: SocketAddr, restart: bool) -> Result<(), String> {
        let key = self.gateway.public_key;
        if restart {
            self.device
                .remove_peer(&key)
                .await
                .map_err(|e| e.to_string())?;
            let mut peer = self.gateway.clone();
            peer.endpoint = Some(ep);
            self.device
                .upsert_peer(peer)
                .await
                .map_err(|e| e.to_string())?;
        }
        tracing::info!(endpoint = %ep, "gateway traffic pinned");
        self.device
            .pin_endpoint(&key, ep)
            .await
            .map_err(|e| e.to_string())
    }

    /// The gateway info changed: the new peer, on the current path.
    async fn follow(&mut self, peer: PeerConfig) {
        if let Some(ep) = peer.endpoint {
            self.udp = ep;
        }
        let old = self.gateway.public_key;
        self.gateway = peer.clone();
        let pinned = match self.ladder.pinned() {
            Rung::Udp => Some(self.udp),
            _ => self.stream.map(|(_, ep)| ep),
        };
        let r = async {
            if old != peer.public_key {
                self.device.remove_peer(&old).await?;
            }
            let mut p = peer;
            p.endpoint = pinned;
            self.device.upsert_peer(p).await?;
            if let Some(ep) = pinned {
                self.device
                    .pin_endpoint(&self.gateway.public_key, ep)
                    .await?;
            }
            Ok::<_, kwg_wg::Error>(())
        };
        if let Err(e) = r.await {
            tracing::warn!(error = %e, "cannot follow the gateway info");
        }
    }

    fn publish(&self) {
        let endpoint = self.ladder.path().map(|p| match (p, self.stream) {
            (Rung::Udp, _) => format!("udp {}", self.udp),
            (Rung::Tcp, _) => format!("tcp {}", self.udp),
            (Rung::ApiServer, _) => {
                format!("api-server pods/portforward in {}", self.kwg_namespace)
            }
        });
        let now = Instant::now();
        self.status
            .send_replace(Snapshot::of(&self.ladder, endpoint, now));
    }
}

/// Opens a stream of `rung` to the gateway.
async fn open(
    rung: Rung,
    target: SocketAddr,
    kube: Option<Kube>,
    ns: &str,
) -> Result<Box<dyn ByteStream>, String> {
    match rung {
        Rung::Tcp => {
            let s = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(target))
                .await
                .map_err(|_| {
                    format!(
                        "TCP connect to {target} timed out after {} s",
                        CONNECT_TIMEOUT.as_secs()
                    )
                })?
                .map_err(|e| format!("TCP connect to {target}: {e}"))?;
            set_stream_options(&s).map_err(|e| format!("TCP options: {e}"))?;
            Ok(Box::new(s))
        }
        Rung::ApiServer => super::api_server::open(kube, ns).await,
        Rung::Udp => Err("UDP is not a stream".into()),
    }
}
