//! The status `kwg status` shows, from the journal (and the daemon's live statistics).

use kwg_wg::contract::{DnsStatus, Status};

use crate::args::JoinArgs;
use crate::state::State;

/// The status from the state file alone (`connected` says whether the daemon runs).
pub fn status_from_state(state: &State, connected: bool) -> Status {
    Status {
        connected,
        daemon_pid: state.daemon_pid,
        server: state.server.clone(),
        context: state.context.clone(),
        user: state.user.clone(),
        namespace: state.namespace.clone(),
        mapped_namespaces: state.mapped_namespaces.clone(),
        peer: state.peer.to_string(),
        interface: state.interface.clone(),
        tunnel_ip: state.tunnel_ip.map(|i| i.to_string()),
        gateway_endpoint: state.gateway_endpoint.clone(),
        gateway_key: state.gateway_key.clone(),
        last_handshake: None,
        rx_bytes: 0,
        tx_bytes: 0,
        dns: state.dns.as_ref().map(|d| DnsStatus {
            mode: d.mode.as_str().to_string(),
            remote_ip: d.cluster_dns.map(|a| a.ip().to_string()),
            forwarder: d.forwarder,
            upstreams: d.upstreams.clone(),
            include_suffixes: d.include_suffixes.clone(),
            exclude_suffixes: d.exclude_suffixes.clone(),
            timeout_secs: d.timeout_secs,
        }),
        subnets: state.routes.clone(),
    }
}

/// The status of a daemon still inspecting the cluster (nothing changed yet).
pub fn joining(args: &JoinArgs) -> Status {
    Status {
        connected: false,
        daemon_pid: Some(std::process::id()),
        server: String::new(),
        context: args.kube.context.clone(),
        user: String::new(),
        namespace: args.namespace.clone().unwrap_or_default(),
        mapped_namespaces: args.mapped_namespaces.clone(),
        peer: args.name.clone().unwrap_or_default(),
        interface: args.interface.clone(),
        tunnel_ip: None,
        gateway_endpoint: None,
        gateway_key: None,
        last_handshake: None,
        rx_bytes: 0,
        tx_bytes: 0,
        dns: None,
        subnets: Vec::new(),
    }
}
