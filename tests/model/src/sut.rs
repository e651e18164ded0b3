//! Everything the model takes from the crates under test, in one place: when a type moves
//! (the ladder is moving out of `cli/` as the session core did), only this file changes.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kwg_contract::keys::PublicKey;

pub use kwg::transport::{Ladder, Step, Timings};
pub use kwg::transport::{Mode, Rung};
pub use kwg_session::Error;
pub use kwg_session::journal::{State, Undo};
pub use kwg_session::machine::plan::Resolved;
pub use kwg_session::machine::{Action, Event, Facts, LeaseFailure, Phase, Registration, Session};

pub use kwg_gateway::alloc::Allocator;
pub use kwg_gateway::core::{Core as GatewayCore, DeviceOp, PeerSecret, Plan};

pub use kwg::peer::peer_config;
pub use kwg_wg::core::testing::ipv4;
pub use kwg_wg::core::{Core as WgCore, NetBatch, Tai64N, TunBatch, open_initiation};
pub use kwg_wg::device::PeerConfig;

/// What a laptop joins with (`kwg join --name NAME --ttl TTL --timeout TIMEOUT
/// --dns-mode off`, as the CLI maps those flags).
pub struct JoinConfig {
    pub name: String,
    pub ttl: Duration,
    pub timeout: Duration,
}

/// A session of the real core for `cfg`, started at `now`.
pub fn new_session(cfg: &JoinConfig, now: Instant) -> Session {
    let ttl = format!("{}s", cfg.ttl.as_secs());
    let timeout = format!("{}s", cfg.timeout.as_secs());
    let argv = [
        "kwg",
        "join",
        "--name",
        &cfg.name,
        "--ttl",
        &ttl,
        "--timeout",
        &timeout,
        "--dns-mode",
        "off",
    ];
    let config = match <kwg::args::Cli as clap::Parser>::parse_from(argv).command {
        kwg::args::Command::Join(a) => kwg_session::SessionConfig::from(&*a),
        _ => unreachable!("parsed a join"),
    };
    let template = State::template(&config, None, None, None, chrono::DateTime::UNIX_EPOCH);
    Session::new(config, template, "/model/resolv.conf.orig".into(), now)
}

/// The machine facts a laptop's driver would gather (no DNS, no routes of its own).
pub fn facts(
    now_wall: chrono::DateTime<chrono::Utc>,
    info: kwg_contract::GatewayInfo,
    endpoint: SocketAddr,
    address: std::net::IpAddr,
    public_key: PublicKey,
    hostname: &str,
) -> Facts {
    Facts {
        now_wall,
        server: "https://192.0.2.1:6443".into(),
        user: "developer".into(),
        context: Some("model".into()),
        default_namespace: "default".into(),
        info,
        endpoint,
        namespaces: Some(["default".to_string()].into()),
        machine_routes: vec![],
        machine_addresses: vec![address],
        api_server: vec!["192.0.2.1".parse().expect("an address")],
        interface_exists: false,
        public_key,
        hostname: hostname.into(),
        machine_tag: String::new(),
        resolv_conf: None,
        uplink: None,
        resolved: Resolved::NotManaged("model".into()),
        ipv6_usable: true,
    }
}

/// The API server could not be reached (the CLI's error, as its driver hands it to the
/// session).
pub fn api_unreachable() -> Error {
    kwg::error::Error::ApiUnreachable {
        server: "https://192.0.2.1:6443".into(),
        reason: "blocked by the model".into(),
    }
    .into()
}

/// A peer of that name is another machine's.
pub fn name_taken(name: &str, secret: &str) -> Error {
    kwg::error::Error::PeerNameTaken {
        name: name.into(),
        secret: secret.into(),
        owner: "developer".into(),
        hostname: "other".into(),
    }
    .into()
}

/// The first UDP endpoint the gateway peer gets before the ladder pins it.
pub fn first_endpoint(mode: Mode, udp: Option<SocketAddr>) -> Option<SocketAddr> {
    kwg::transport::first_endpoint(mode, udp)
}

/// The journalled uid of the peer Secret, if any.
pub fn journalled_uid(state: &State) -> Option<String> {
    state.undo.iter().find_map(|u| match u {
        Undo::DeletePeer { uid, .. } => uid.clone(),
        _ => None,
    })
}
