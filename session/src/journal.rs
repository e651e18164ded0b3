//! The undo journal: what `join` changed on this machine, as what undoes each change, written
//! before the change is made (the CLI keeps it in the state file, `kwg::state`), so `leave`
//! can undo it even after the daemon was killed.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use kwg_contract::{PeerName, PlannedRoute};

/// How the machine's resolver was changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DnsModeUsed {
    ResolvConf,
    Resolved,
}

impl DnsModeUsed {
    pub fn as_str(self) -> &'static str {
        match self {
            DnsModeUsed::ResolvConf => "resolv-conf",
            DnsModeUsed::Resolved => "resolved",
        }
    }
}

/// The split-DNS set-up, for `status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DnsState {
    pub mode: DnsModeUsed,
    pub forwarder: SocketAddr,
    /// The cluster DNS the forwarder asks through the tunnel.
    pub cluster_dns: Option<SocketAddr>,
    pub upstreams: Vec<SocketAddr>,
    pub include_suffixes: Vec<String>,
    pub exclude_suffixes: Vec<String>,
    pub timeout_secs: u64,
    pub search: Vec<String>,
}

/// One change `join` made, as what undoes it. Recorded in the state file before the change.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "undo", rename_all = "camelCase")]
pub enum Undo {
    /// Delete the peer Secret, but only while it is this join's own: the object of `uid`
    /// (recorded once created), or before that a Secret holding this machine's `public_key`
    /// (deleted with its uid as precondition). Another machine's peer of the same name is
    /// never touched.
    #[serde(rename_all = "camelCase")]
    DeletePeer {
        namespace: String,
        secret: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        uid: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        public_key: Option<String>,
        /// When the gateway collects the peer if nobody deletes it (moved by each renewal).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lease_expires: Option<DateTime<Utc>>,
    },
    /// Delete the tunnel interface, but only while it is the one this daemon created
    /// (`ifindex` is recorded once it exists; a TUN without its process is gone anyway).
    #[serde(rename_all = "camelCase")]
    DeleteInterface { name: String, ifindex: Option<u32> },
    /// Delete kwg's nftables table (it outlives a killed daemon).
    #[serde(rename_all = "camelCase")]
    RemoveFirewall { table: String },
    /// Stop the DNS forwarder (in the daemon only: it dies with it).
    StopForwarder,
    /// Drop kwg's per-link DNS in systemd-resolved (it forgets a link that is gone by
    /// itself).
    #[serde(rename_all = "camelCase")]
    RevertLink { name: String, ifindex: u32 },
    /// Put the original resolv.conf back from its backup, if the file is still kwg's.
    #[serde(rename_all = "camelCase")]
    RestoreResolvConf { path: PathBuf, backup: PathBuf },
    /// Stop the userspace tunnel and its proxy (in the daemon only: they die with it).
    #[serde(rename_all = "camelCase")]
    StopProxy { listen: SocketAddr },
}

/// A peer Secret `leave` could not delete (refused, credentials rejected, API gone): the
/// machine is cleaned up anyway and the gateway collects the peer when its lease ends.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeftBehind {
    pub namespace: String,
    pub secret: String,
    /// Why it could not be deleted (the API's sentence).
    pub reason: String,
    pub lease_expires: Option<DateTime<Utc>>,
}

impl LeftBehind {
    /// "when its lease ends at …".
    pub fn when(&self) -> String {
        match self.lease_expires {
            Some(t) => format!(
                "when its lease ends at {}",
                t.format("%Y-%m-%d %H:%M:%S UTC")
            ),
            None => "when its lease ends".to_string(),
        }
    }
}

impl std::fmt::Display for LeftBehind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "left this machine (its interface, routes, DNS and state are removed) but could not delete peer Secret {}/{}: {}; the gateway removes it {}, and kwg join works meanwhile",
            self.namespace,
            self.secret,
            self.reason,
            self.when()
        )
    }
}

impl State {
    /// The IPv6 tunnel address of a dual-stack join.
    pub fn tunnel_ip6(&self) -> Option<std::net::Ipv6Addr> {
        let ip = kwg_contract::TunnelIp::new(self.tunnel_ip?);
        Some(kwg_contract::tunnel_ip6_of(self.tunnel_cidr6?, ip))
    }

    /// The state a session of `config` starts from: who joins from where, nothing changed
    /// yet (the session fills in the peer, the cluster and each step as it goes).
    pub fn template(
        config: &crate::SessionConfig,
        kubeconfig: Option<PathBuf>,
        context: Option<String>,
        daemon_pid: Option<u32>,
        joined_at: DateTime<Utc>,
    ) -> State {
        State {
            peer: "pending".parse().expect("a valid name"),
            kwg_namespace: config.kwg_namespace.clone(),
            kubeconfig,
            context,
            server: String::new(),
            user: String::new(),
            namespace: String::new(),
            mapped_namespaces: config.mapped_namespaces.clone(),
            interface: config.interface.clone(),
            tunnel_ip: None,
            tunnel_cidr6: None,
            gateway_endpoint: None,
            gateway_key: None,
            gateway_admin: None,
            routes: Vec::new(),
            dns: None,
            daemon_pid,
            proxy: None,
            joined_at,
            ttl_secs: config.ttl.as_secs(),
            undo: Vec::new(),
        }
    }
}

/// Everything `join` did, written before each change is made.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    pub peer: PeerName,
    pub kwg_namespace: String,
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    pub server: String,
    pub user: String,
    pub namespace: String,
    pub mapped_namespaces: Option<Vec<String>>,
    pub interface: String,
    pub tunnel_ip: Option<Ipv4Addr>,
    /// A dual-stack join's IPv6 tunnel prefix (`ipv6.json`'s /96): the interface's IPv6
    /// address is `tunnel_ip` in its last 32 bits ([`State::tunnel_ip6`]); absent for IPv4
    /// only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel_cidr6: Option<ipnet::Ipv6Net>,
    pub gateway_endpoint: Option<String>,
    pub gateway_key: Option<String>,
    pub gateway_admin: Option<SocketAddr>,
    pub routes: Vec<PlannedRoute>,
    pub dns: Option<DnsState>,
    pub daemon_pid: Option<u32>,
    /// Userspace mode: the SOCKS5/HTTP proxy (no interface, routes or DNS changes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<SocketAddr>,
    pub joined_at: DateTime<Utc>,
    pub ttl_secs: u64,
    /// What undoes each change made so far, oldest first.
    #[serde(default)]
    pub undo: Vec<Undo>,
}
