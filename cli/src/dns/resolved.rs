//! systemd-resolved over D-Bus: the code lives in `kwg_privhelper::resolved`, where kwg-helper
//! makes the same calls for a normal user's session.

pub use kwg_privhelper::resolved::*;
