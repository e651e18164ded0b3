//! Split DNS decisions: which resolver answers a name (`split`), the resolver file's
//! rendering (`resolvconf`), and the domains of kwg's link in systemd-resolved (`domains`).

pub mod domains;
pub mod resolvconf;
pub mod split;

use std::net::SocketAddr;
use std::time::Duration;

use split::SplitDns;

/// What kwg's DNS forwarder answers with (the CLI's `dns::forwarder` runs it).
#[derive(Debug, Clone)]
pub struct ForwarderConfig {
    pub split: SplitDns,
    /// The cluster DNS (kube-dns Service IP, port 53), reached through the tunnel.
    pub cluster: SocketAddr,
    /// The machine's original resolvers, read before resolv.conf was rewritten.
    pub upstreams: Vec<SocketAddr>,
    /// Per-lookup timeout.
    pub timeout: Duration,
    /// Virtual subnets: the cluster DNS's A records in these ranges are rewritten to the
    /// mapped ones.
    pub mappings: Vec<crate::mapping::Mapping>,
}
