//! kwg WireGuard library.

pub mod netlink;
