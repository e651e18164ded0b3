//! Names and addresses of one cluster, all derived from its prefix.

use std::net::Ipv4Addr;
use std::path::PathBuf;

/// The node's address on the LAN; the API server listens here.
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The default laptop's address on the LAN.
pub const LAPTOP_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
/// The LAN resolver (zone `corp.example`).
pub const LAN_DNS_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 53);
/// The intranet HTTP server, `intranet.corp.example`.
pub const INTRANET_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 80);
/// The gateway address pods route through (on every node-side pod veth).
pub const POD_GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// The node's link-local address on every pod veth, the pods' IPv6 default gateway.
pub const POD_GATEWAY6: &str = "fe80::1";
/// The `kubernetes` Service.
pub const KUBERNETES_SVC_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);
/// kube-dns.
pub const DNS_SVC_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
pub const API_PORT: u16 = 6443;
pub const LAN_CIDR: &str = "192.0.2.0/24";
pub const POD_CIDR: &str = "10.244.0.0/16";
pub const NODE_POD_CIDR: &str = "10.244.0.0/24";
pub const SERVICE_CIDR: &str = "10.96.0.0/12";
pub const CLUSTER_DOMAIN: &str = "cluster.local";
pub const LAN_ZONE: &str = "corp.example";
pub const NODE_NAME: &str = "node-1";
/// Users with kubeconfigs written by the daemon.
pub const USERS: [&str; 3] = ["admin", "developer", "nobody"];

/// The default prefix.
pub const DEFAULT_PREFIX: &str = "kwg";

/// Names of one cluster's namespaces and files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    prefix: String,
}

impl Names {
    /// Names for `prefix`: lowercase letters, digits and `-`, at most 20 characters.
    pub fn new(prefix: &str) -> crate::Result<Names> {
        let ok = !prefix.is_empty()
            && prefix.len() <= 20
            && prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !prefix.starts_with('-');
        if !ok {
            return Err(crate::Error::Invalid(format!(
                "prefix {prefix:?} must be 1-20 characters of a-z, 0-9 and '-'"
            )));
        }
        Ok(Names {
            prefix: prefix.to_string(),
        })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }
    pub fn node_ns(&self) -> String {
        format!("{}-node", self.prefix)
    }
    pub fn laptop_ns(&self) -> String {
        format!("{}-laptop", self.prefix)
    }
    pub fn lan_ns(&self) -> String {
        format!("{}-lan", self.prefix)
    }
    /// An extra laptop added with `kwg-sim laptop add NAME`.
    pub fn extra_laptop_ns(&self, name: &str) -> String {
        format!("{}-laptop-{name}", self.prefix)
    }
    pub fn pod_ns(&self, namespace: &str, pod: &str) -> String {
        format!("{}-pod-{namespace}-{pod}", self.prefix)
    }
    /// Prefix shared by every pod namespace of this cluster.
    pub fn pod_ns_prefix(&self) -> String {
        format!("{}-pod-", self.prefix)
    }
    /// `/run/kwg-sim/<prefix>`: kubeconfigs, CA, pid files, logs.
    pub fn run_dir(&self) -> PathBuf {
        PathBuf::from("/run/kwg-sim").join(&self.prefix)
    }
    pub fn kubeconfig(&self, user: &str) -> PathBuf {
        self.run_dir().join(format!("{user}.kubeconfig"))
    }
    pub fn daemon_pid(&self) -> PathBuf {
        self.run_dir().join("daemon.pid")
    }
    pub fn daemon_log(&self) -> PathBuf {
        self.run_dir().join("daemon.log")
    }
    /// Written by the daemon once the cluster is ready.
    pub fn ready_file(&self) -> PathBuf {
        self.run_dir().join("ready")
    }
    /// Directory of per-pod files (pid, logs, service account).
    pub fn pods_dir(&self) -> PathBuf {
        self.run_dir().join("pods")
    }
    /// Whether `ns` is one of this cluster's namespaces.
    pub fn owns_ns(&self, ns: &str) -> bool {
        let p = &self.prefix;
        [self.node_ns(), self.lan_ns(), self.laptop_ns()]
            .iter()
            .any(|n| n == ns)
            || ns.starts_with(&format!("{p}-pod-"))
            || ns.starts_with(&format!("{p}-laptop-"))
    }
    /// Directory recording extra laptops (one file per name holding its address).
    pub fn laptops_dir(&self) -> PathBuf {
        self.run_dir().join("laptops")
    }
    /// `/etc/netns/<ns>`, where `ip netns exec` finds the namespace's resolv.conf.
    pub fn etc_netns(ns: &str) -> PathBuf {
        PathBuf::from("/etc/netns").join(ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_prefix() {
        let n = Names::new("kwg").unwrap();
        assert_eq!(n.node_ns(), "kwg-node");
        assert_eq!(
            n.pod_ns("emojivoto", "web-app-1"),
            "kwg-pod-emojivoto-web-app-1"
        );
        assert_eq!(
            n.kubeconfig("developer"),
            PathBuf::from("/run/kwg-sim/kwg/developer.kubeconfig")
        );
    }

    fn n_owns() -> bool {
        let n = Names::new("kwg").unwrap();
        n.owns_ns("kwg-pod-a-b")
            && n.owns_ns("kwg-laptop-bob")
            && !n.owns_ns("kwg2-node")
            && !n.owns_ns("kwg-x-node")
    }

    #[test]
    fn bad_prefixes_are_rejected() {
        assert!(Names::new("").is_err());
        assert!(n_owns());
        assert!(Names::new("Kwg").is_err());
        assert!(Names::new("a/b").is_err());
    }
}
