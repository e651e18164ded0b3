//! kwg's userspace WireGuard: a protocol core driving boringtun's `Tunn`, the TUN/UDP device
//! and UAPI (`wg` compatible). Keys and the gateway↔client contract live in `kwg-contract`,
//! netlink and process plumbing in `kwg-host`.

pub mod core;
pub mod device;
mod error;
pub mod io;
pub mod peer;
pub mod run;
pub mod translate;
pub mod uapi;

pub use error::Error;
