//! kwg's laptop decisions, without I/O: what the laptop accepts from the cluster (`trust`),
//! which subnets it routes (`routes`), which names go to the cluster DNS and how the machine's
//! resolver is pointed at kwg (`dns`), and which way WireGuard's datagrams take to the gateway
//! (`transport`), and the join session itself (`machine`: events in, actions out, every change
//! journalled before it is asked for). Time is passed in; the CLI's driver (`kwg`) does the I/O. No tokio, kube,
//! clap, zbus, netlink, tun or hickory: the compiler keeps the decisions below the I/O.

pub mod config;
pub mod dns;
pub mod error;
pub mod firewall;
pub mod gateway;
pub mod journal;
pub mod lease;
pub mod machine;
pub mod mapping;
pub mod routes;
pub mod text;
pub mod transport;
pub mod trust;
pub mod userspace;

pub use config::{DnsMode, SessionConfig};
pub use error::Error;
