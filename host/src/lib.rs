//! The machine side shared by `kwg`, `kwg-gateway` and `kwg-wg`: rtnetlink helpers for links,
//! addresses and routes, shutdown signals and detached daemons, the checks that end a daemon
//! whose interface or namespace is gone, and the tracing set-up. No WireGuard and no
//! Kubernetes here.

pub mod lifeline;
pub mod logging;
pub mod netlink;
pub mod process;
pub mod sockbuf;
