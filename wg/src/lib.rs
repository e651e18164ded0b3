//! kwg's userspace WireGuard: keys, a protocol core driving boringtun's `Tunn`, the TUN/UDP
//! device, UAPI (`wg` compatible) and the contracts shared by gateway and CLI.

pub mod contract;
pub mod core;
pub mod device;
mod error;
pub mod io;
pub mod keys;
pub mod lifeline;
pub mod logging;
pub mod netlink;
pub mod peer;
pub mod process;
pub mod run;
pub mod uapi;

pub use error::Error;
