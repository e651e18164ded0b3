//! The one-machine cluster: a small Kubernetes cluster network in network namespaces.
//!
//! `kwg-sim up` builds namespaces `<P>-node`, `<P>-lan`, `<P>-laptop` and one per pod, starts the
//! API server stand-in at `https://192.0.2.1:6443` in the node (the LAN's `.1`; `up --lan`,
//! `--service-cidr`, `--pod-cidr` and `--domain` choose other addresses, see [`net`]), and a daemon
//! that plays kube-proxy (nftables), the endpoints controller and the kubelet (pods are local
//! processes). Its LAN's interfaces behave as NICs on a wire (`up --lan-model nic`, the default:
//! frames of at most the MTU, GRO on receive) or as before (`previous`), see
//! [`topology::LanModel`]. See `docs/architecture.md` for the addresses and names.
//!
//! # Test harness
//!
//! End-to-end tests use [`testing::Cluster`]:
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cluster = kwg_sim::testing::Cluster::up()?; // unique prefix, `kwg-sim down` on drop
//! let out = cluster.exec(&cluster.netns("laptop"), &["kubectl", "--kubeconfig",
//!     cluster.developer_kubeconfig().to_str().unwrap(), "-n", "emojivoto", "get", "svc"])?;
//! assert!(String::from_utf8_lossy(&out.stdout).contains("web-app"));
//! let web = cluster.pod_netns("emojivoto", "web-app")?;
//! cluster.exec(&web, &["curl", "-s", "http://web-app.emojivoto.svc.cluster.local/"])?;
//! # Ok(()) }
//! ```
//!
//! Binaries of other packages are found with [`bin_path`].

pub mod cli;
pub mod daemon;
pub mod dns;
pub mod endpoints;
pub mod error;
pub mod kubelet;
pub mod lan;
pub mod names;
pub mod net;
pub mod netns;
pub mod podexec;
pub mod proxy;
pub mod resolved;
pub mod sh;
pub mod testing;
pub mod topology;
pub mod watch;
pub mod workload;

pub use error::{Error, Result};

use std::path::PathBuf;

/// Where the binary `name` is: `$KWG_BIN_DIR/name` if set, else next to the running executable
/// (for a test binary in `target/debug/deps`, its parent `target/debug`).
pub fn bin_path(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// The directory [`bin_path`] looks in.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KWG_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    if dir.file_name().is_some_and(|n| n == "deps") {
        return dir.parent().map(PathBuf::from).unwrap_or(dir);
    }
    dir
}
