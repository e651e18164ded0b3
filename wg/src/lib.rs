//! kwg WireGuard library.
