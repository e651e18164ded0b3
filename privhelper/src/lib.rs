//! kwg's root helper (issue 26): a normal user's `kwg join` runs the cluster side (kubeconfig,
//! exec plugins, the WireGuard device, DNS forwarder) as that user; this helper is the only
//! privileged part. It creates the session's TUN and passes its descriptor back (SCM_RIGHTS),
//! sets addresses and routes and loads the firewall table, enforcing the trust rules itself
//! ([`rules`]: the user side parses the cluster's input and may be compromised), serves root and
//! one group by SO_PEERCRED ([`auth`]), journals every change before making it ([`journal`]) and
//! reverts a session when its connection ends and at its own start ([`server`]).
//!
//! - [`proto`]: what crosses the socket (JSON lines, bounded).
//! - [`registry`]: every session, pure: ownership, conflicts, planning changes and their undo.
//! - [`system`]: the machine (netlink, TUN, nft) behind a trait.
//! - [`sockbuf`]: the user daemon's WireGuard UDP socket buffers, forced as a root join's.
//! - [`client`]: the user side's end.
//! - [`install`]: the systemd units (socket activation).

pub mod auth;
pub mod client;
pub mod firewall;
pub mod install;
pub mod journal;
pub mod linkdns;
pub mod policy;
pub mod proto;
pub mod registry;
pub mod resolved;
pub mod rules;
pub mod server;
pub mod sockbuf;
pub mod system;
#[doc(hidden)]
pub mod testing;
