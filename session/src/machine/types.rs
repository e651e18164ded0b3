//! The vocabulary of the session core: actions out, events in, phases.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::Facts;
use crate::dns::ForwarderConfig;
use crate::dns::domains::LinkConfig;
use crate::error::Error;
use crate::gateway::GatewayPeer;
use crate::journal::{State, Undo};
use ipnet::IpNet;
use kwg_contract::{GatewayInfo, PeerSpec};

/// What the driver does next.
#[derive(Debug)]
pub enum Action {
    /// Connect to the cluster and inspect it and the machine (long; `Inspected`).
    Inspect,
    /// Tell `kwg join` how far it got.
    Progress(String),
    /// Write the state file (the undo journal).
    Save(Box<State>),
    /// Create or overwrite this machine's peer Secret, its lease ending `ttl` from the
    /// driver's wall clock (long; `Registered`).
    Register { spec: Box<PeerSpec>, ttl: Duration },
    /// Wait until the gateway annotates the Secret with a tunnel IP (long; `TunnelIp`); with
    /// `within`, only an address in that CIDR counts (after the gateway's tunnel CIDR or key
    /// changed, the annotation the old gateway wrote is still there until the new one
    /// replaces it).
    WaitTunnelIp {
        namespace: String,
        secret: String,
        within: Option<ipnet::Ipv4Net>,
    },
    /// Create the WireGuard TUN device (`DeviceCreated`).
    CreateDevice { name: String },
    /// Userspace mode instead of the device, network, firewall and DNS steps: the device on
    /// a packet channel, the userspace stack and the proxy (`UserspaceStarted`).
    StartUserspace(Box<crate::userspace::Setup>),
    /// Interface up, its address, the routes and the gateway peer (`NetworkConfigured`).
    ConfigureNetwork {
        name: String,
        address: IpNet,
        /// The IPv6 tunnel address, when the join carries IPv6 (a dual-stack cluster).
        address6: Option<IpNet>,
        routes: Vec<IpNet>,
        gateway: GatewayPeer,
    },
    /// Load the laptop's firewall table: new connections arriving on `interface` are dropped
    /// (`FirewallInstalled`).
    InstallFirewall { table: String, interface: String },
    /// Start the DNS forwarder (`ForwarderStarted`).
    StartForwarder {
        listen: SocketAddr,
        config: Box<ForwarderConfig>,
    },
    /// Back up the resolver file, then replace it (`ResolvConfWritten`).
    WriteResolvConf {
        path: std::path::PathBuf,
        backup: std::path::PathBuf,
        original: Vec<u8>,
        contents: Vec<u8>,
    },
    /// Point systemd-resolved's per-link DNS of the tunnel at the forwarder
    /// (`ResolvedConfigured`).
    ConfigureResolved(LinkConfig),
    /// Drop the tunnel link's DNS in resolved, to fall back to the resolver file
    /// (`ResolvedReverted`).
    RevertResolved { ifindex: u32 },
    /// Send into the tunnel until the gateway handshake completes (long; `Handshake`).
    AwaitHandshake {
        gateway: GatewayPeer,
        poke: SocketAddr,
    },
    /// Send the gateway a new handshake initiation on the current socket (any replica
    /// answers it); what was sent since `since` goes again under the new session.
    Rehandshake {
        gateway: GatewayPeer,
        since: Instant,
    },
    /// Move to a fresh UDP port and restart the handshake with the gateway.
    Rebind { gateway: GatewayPeer },
    /// Ask the cluster DNS through the tunnel until it answers `name` (long; `DnsAnswered`).
    ProbeDns { server: SocketAddr, name: String },
    /// Joined: report the status to `kwg join`.
    Ready,
    /// Read the gateway peer's byte counters (`Stats`).
    ReadStats,
    /// Move the lease to now + ttl (long; `LeaseRenewed` / `LeaseFailed`).
    RenewLease {
        namespace: String,
        secret: String,
        /// The registered Secret's uid (journalled; `None` from an older journal): a Secret
        /// of that name with another uid is not this machine's and is left alone.
        uid: Option<String>,
        ttl: Duration,
    },
    /// Replace the gateway peer (new key, endpoint or allowed IPs); `old_key` is removed when
    /// the key changed.
    UpdateGateway {
        old_key: kwg_contract::keys::PublicKey,
        peer: GatewayPeer,
    },
    /// Reconcile routes of the interface.
    SetRoutes {
        name: String,
        add: Vec<IpNet>,
        remove: Vec<IpNet>,
    },
    /// Replace the tunnel address (the gateway assigned another one on re-registration), one
    /// action per family.
    ChangeAddress {
        name: String,
        old: IpNet,
        new: IpNet,
    },
    /// Add an address to the interface: the IPv6 tunnel address of a gateway that started
    /// publishing `ipv6.json` while joined.
    AddAddress { name: String, address: IpNet },
    /// Remove an address from the interface: the IPv6 tunnel address once `ipv6.json` is
    /// withdrawn while joined.
    RemoveAddress { name: String, address: IpNet },
    /// Drop the long action in flight: the session is tearing down.
    Cancel,
    /// Undo one change (`Undone` / `UndoFailed`).
    Undo(Undo),
    /// Everything is undone: remove the state file.
    RemoveState,
    /// The session is over; [`Session::outcome`] says how.
    Exit,
}

/// What happened.
#[derive(Debug)]
pub enum Event {
    Inspected(Box<Facts>),
    /// The peer Secret exists: its uid (what undo deletes) and lease end.
    Registered(Registration),
    TunnelIp(Ipv4Addr),
    DeviceCreated {
        ifindex: u32,
    },
    NetworkConfigured,
    /// The userspace tunnel runs; its proxy listens here.
    UserspaceStarted(SocketAddr),
    FirewallInstalled,
    ForwarderStarted(SocketAddr),
    ResolvConfWritten,
    ResolvedConfigured,
    ResolvedReverted,
    Handshake,
    DnsAnswered,
    /// The lease now ends at this time.
    LeaseRenewed(chrono::DateTime<chrono::Utc>),
    LeaseFailed(LeaseFailure),
    /// The gateway peer's byte counters, and how many packets to it waited inside the
    /// WireGuard core for a handshake (both count from zero when the peer is replaced).
    Stats {
        tx_bytes: u64,
        rx_bytes: u64,
        held_packets: u64,
    },
    /// The gateway's published info changed.
    GatewayInfo(Box<GatewayInfo>),
    /// An undo step finished; what it removed, for the user.
    Undone(Option<String>),
    UndoFailed(Error),
    /// The action in flight (or just executed) failed.
    Failed(Error),
    /// `kwg leave` asked to undo everything.
    Leave,
    /// SIGTERM/SIGINT.
    Signal,
}

/// A registered peer Secret.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registration {
    pub uid: String,
    pub lease_expires: chrono::DateTime<chrono::Utc>,
}

/// Why a lease renewal failed (the driver's error in `Other`).
pub type LeaseFailure = crate::lease::LeaseFailure<Error>;

/// The states of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Inspecting,
    Registering,
    WaitingTunnelIp,
    CreatingDevice,
    ConfiguringNetwork,
    InstallingFirewall,
    StartingDns,
    WritingResolvConf,
    ConfiguringResolved,
    /// Queries did not arrive through resolved: reverting its link to fall back.
    RevertingResolved,
    AwaitingHandshake,
    ProbingDns,
    Serving,
    TearingDown,
    Done,
}

/// Lease renewal while serving.
#[derive(Debug, Clone, Default)]
pub struct Lease {
    pub next: Option<Instant>,
    pub in_flight: bool,
    pub failures: u32,
    /// The last failure, shown by `status` until a renewal succeeds.
    pub last_error: Option<String>,
    /// The first of the current run of failures.
    pub failing_since: Option<Instant>,
    /// The last successful registration or renewal.
    pub renewed: Option<Instant>,
    /// Registering again after the Secret vanished.
    pub reregistering: bool,
    /// Since when the API server rejects the credentials (401, after loading the
    /// kubeconfig again); `None` once a renewal succeeds or fails otherwise.
    pub credentials_rejected_since: Option<Instant>,
}
