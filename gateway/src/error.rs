//! The one error type of `kwg-gateway`.

use ipnet::Ipv4Net;

/// Everything that stops the gateway or one of its operations.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("tunnel CIDR {cidr} is full: start the gateway with a larger --tunnel-cidr")]
    TunnelCidrFull { cidr: Ipv4Net },
    #[error("Kubernetes API: cannot {action}: {source}{}", hint(.source))]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "no service CIDR found (no ServiceCIDR objects, no range in the API's error): start the gateway with --service-cidr"
    )]
    NoServiceCidr,
    #[error("WireGuard device: {0}")]
    Device(#[from] kwg_wg::Error),
    #[error("network setup of {interface}: {source}")]
    Netlink {
        interface: String,
        #[source]
        source: kwg_host::netlink::NetlinkError,
    },
    #[error("nftables: {0} (the pod needs NET_ADMIN and the nft binary)")]
    Nft(String),
    #[error(
        "cannot enable IPv4 forwarding: {0} (run the pod with NET_ADMIN and a writable /proc/sys/net)"
    )]
    Forwarding(std::io::Error),
    #[error(
        "cannot listen on TCP port {port} for WireGuard over TCP: {source} (another process holds it: choose another --listen-port)"
    )]
    TcpBind {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("admin HTTP server on {addr}: {source}")]
    Admin {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "gateway private key in Secret {0} is invalid: delete the Secret to generate a new key (peers must then re-join)"
    )]
    BadPrivateKey(String),
}

/// What to do about an API error, when there is something to do.
fn hint(e: &kube::Error) -> &'static str {
    match e {
        kube::Error::Api(s) if s.is_forbidden() => " (apply manifests/ for the gateway's RBAC)",
        kube::Error::InferConfig(_) => " (run in a pod with a ServiceAccount, or set KUBECONFIG)",
        _ => "",
    }
}

impl GatewayError {
    /// Wraps a kube error with what was being done.
    pub fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> GatewayError {
        let action = action.into();
        move |source| GatewayError::Kube { action, source }
    }
}
