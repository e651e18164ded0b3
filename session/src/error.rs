//! The one error type of the laptop's decisions. Each message is one sentence naming the fix;
//! the CLI wraps it (`kwg::Error::Session`) and gives each its exit code.

use ipnet::IpNet;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error(
        "route {subnet} ({source_name}) conflicts with the existing route {existing}; pass --allow-conflicting-subnets {subnet} to route it through kwg anyway, or --never-proxy the overlap"
    )]
    RouteConflict {
        subnet: IpNet,
        source_name: String,
        existing: String,
    },
    #[error(
        "refused {what} from the cluster: {why}; {}a cluster admin must fix it (kubectl -n kwg-system get configmap kwg-gateway-info -o yaml shows what the gateway published)",
        .allow.as_ref().map(|f| format!("pass {f} to accept it, or ")).unwrap_or_default()
    )]
    UntrustedInfo {
        what: String,
        why: String,
        /// The user's flag that would accept it.
        allow: Option<String>,
    },
    /// A cluster domain or namespace systemd-resolved could not take as a link domain.
    #[error("invalid DNS configuration for systemd-resolved: {0}")]
    DnsConfig(String),
    /// Virtual subnets: a cluster range could not be mapped (`--map`, `--map-pool`).
    #[error(transparent)]
    Mapping(#[from] crate::mapping::MapError),
}
