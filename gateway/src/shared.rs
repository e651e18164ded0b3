//! What the gateway's tasks publish for each other and for the admin server: one
//! [`tokio::sync::watch`] per piece of state, its sender held by the one task that owns it, so
//! a reader sees the latest value (and may wait for the next) and nobody else can write it.

use crate::core::ActivePeer;
use crate::policy::view::ReachView;
use kwg_contract::UdpReceive;
use std::sync::Arc;
use tokio::sync::watch;

/// The writing ends, each handed to the task that owns the value.
#[derive(Debug)]
pub struct Owners {
    /// The peer loop: the active peers after each reconcile.
    pub peers: watch::Sender<Arc<Vec<ActivePeer>>>,
    /// The peer loop: every peer Secret has been listed once.
    pub watcher_ready: watch::Sender<bool>,
    /// Discovery: device, address and firewall are set up.
    pub tunnel_ready: watch::Sender<bool>,
    /// Reach by RBAC (with `--reach=all`, the build, once): what each peer is allowed.
    pub reach: watch::Sender<Arc<ReachView>>,
    /// The UDP receive watch: this replica's last verdict.
    pub udp_receive: watch::Sender<Option<UdpReceive>>,
    /// The drain: SIGTERM came, not ready any more (the endpoints drop this replica), still
    /// serving.
    pub draining: watch::Sender<bool>,
}

/// The reading ends; cheap to clone.
#[derive(Debug, Clone)]
pub struct Views {
    pub peers: watch::Receiver<Arc<Vec<ActivePeer>>>,
    pub watcher_ready: watch::Receiver<bool>,
    pub tunnel_ready: watch::Receiver<bool>,
    pub reach: watch::Receiver<Arc<ReachView>>,
    pub udp_receive: watch::Receiver<Option<UdpReceive>>,
    pub draining: watch::Receiver<bool>,
}

/// Every channel with its first value: no peers, nothing ready, nobody's reach decided.
pub fn channels() -> (Owners, Views) {
    let (peers, peers_rx) = watch::channel(Arc::new(Vec::new()));
    let (watcher_ready, watcher_rx) = watch::channel(false);
    let (tunnel_ready, tunnel_rx) = watch::channel(false);
    let undecided = ReachView {
        enforced: true,
        ..ReachView::open()
    };
    let (reach, reach_rx) = watch::channel(Arc::new(undecided));
    let (udp_receive, udp_rx) = watch::channel(None);
    let (draining, draining_rx) = watch::channel(false);
    let owners = Owners {
        peers,
        watcher_ready,
        tunnel_ready,
        reach,
        udp_receive,
        draining,
    };
    let views = Views {
        peers: peers_rx,
        watcher_ready: watcher_rx,
        tunnel_ready: tunnel_rx,
        reach: reach_rx,
        udp_receive: udp_rx,
        draining: draining_rx,
    };
    (owners, views)
}

impl Views {
    pub fn peers(&self) -> Arc<Vec<ActivePeer>> {
        self.peers.borrow().clone()
    }

    pub fn reach(&self) -> Arc<ReachView> {
        self.reach.borrow().clone()
    }

    pub fn udp_receive(&self) -> Option<UdpReceive> {
        self.udp_receive.borrow().clone()
    }

    /// (tunnel set up, peer Secrets listed, draining).
    pub fn readiness(&self) -> (bool, bool, bool) {
        (
            *self.tunnel_ready.borrow(),
            *self.watcher_ready.borrow(),
            *self.draining.borrow(),
        )
    }

    /// Ready for traffic: set up, listed, not draining.
    pub fn ready(&self) -> bool {
        let (tunnel, watcher, draining) = self.readiness();
        tunnel && watcher && !draining
    }
}
