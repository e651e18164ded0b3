//! The documented exit codes of `kwg`: one per situation a script (a CI job) handles
//! differently. The same table is printed by `kwg join --help`, and is in the README and
//! docs/ci.md (a unit test checks both files carry it).

use crate::error::Error;

/// Why `kwg` failed, as its process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExitCode {
    /// Anything not listed below (read the message).
    Failure = 1,
    /// Bad flags or flag values (clap's code), a namespace that does not exist.
    Usage = 2,
    /// Not root and no CAP_NET_ADMIN.
    Privilege = 3,
    /// No or unreadable kubeconfig, rejected credentials, or RBAC forbids what kwg needs.
    Credentials = 4,
    /// The kwg gateway is not installed, has no ready pod, or assigns no tunnel IP.
    GatewayMissing = 5,
    /// No WireGuard handshake with the gateway on any path (UDP, TCP, API server).
    GatewayUnreachable = 6,
    /// Cluster DNS did not answer through the tunnel.
    DnsVerification = 7,
    /// A `--wait-for` target did not accept a TCP connection in time.
    WaitFor = 8,
    /// Something local is in the way: already joined, the interface exists, a route or the
    /// DNS listen address conflicts.
    LocalConflict = 9,
    /// The Kubernetes API server cannot be reached.
    ApiUnreachable = 10,
    /// The peer name is another machine's (or another user's) peer: pass `--name`.
    NameTaken = 11,
    /// `leave` cleaned up this machine but could not delete the peer Secret (refused,
    /// credentials rejected, API gone); the gateway collects it when its lease ends.
    LeftLocally = 12,
    /// A closed terminal (SIGHUP) cancelled `kwg join`; every step it took is undone.
    HungUp = 129,
    /// Ctrl-C (SIGINT) cancelled `kwg join`; every step it took is undone.
    Interrupted = 130,
    /// SIGTERM cancelled `kwg join`; every step it took is undone.
    Terminated = 143,
}

/// The end of [`Error::Cancelled`]'s sentence when everything was undone.
pub const UNDONE: &str = "every step it had taken is undone";

/// The end of [`Error::Cancelled`]'s sentence: [`UNDONE`], or which peer Secret stayed behind
/// and when its lease ends.
pub fn undone(left_behind: Option<&crate::state::LeftBehind>) -> String {
    match left_behind {
        Some(l) => format!("it {l}"),
        None => UNDONE.into(),
    }
}

/// What cancelled a `kwg join` before it finished. The codes are the shell's for a process
/// killed by the signal (128 + its number), as for any command stopped that way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancel {
    Interrupt,
    Terminate,
    Hangup,
    /// `kwg leave` (from another terminal) while the join was running.
    Leave,
}

impl Cancel {
    pub fn exit_code(self) -> ExitCode {
        match self {
            Cancel::Interrupt => ExitCode::Interrupted,
            Cancel::Terminate => ExitCode::Terminated,
            Cancel::Hangup => ExitCode::HungUp,
            Cancel::Leave => ExitCode::Failure,
        }
    }

    /// The signal of [`Cancel::name`].
    pub fn from_name(name: &str) -> Option<Cancel> {
        [
            Cancel::Interrupt,
            Cancel::Terminate,
            Cancel::Hangup,
            Cancel::Leave,
        ]
        .into_iter()
        .find(|c| c.name() == name)
    }

    /// The signal's name, as in the JSON progress events.
    pub fn name(self) -> &'static str {
        match self {
            Cancel::Interrupt => "SIGINT",
            Cancel::Terminate => "SIGTERM",
            Cancel::Hangup => "SIGHUP",
            Cancel::Leave => "leave",
        }
    }
}

impl std::fmt::Display for Cancel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Cancel::Interrupt => "Ctrl-C (SIGINT)",
            Cancel::Terminate => "SIGTERM",
            Cancel::Hangup => "a closed terminal (SIGHUP)",
            Cancel::Leave => "kwg leave",
        })
    }
}

impl ExitCode {
    pub const ALL: [ExitCode; 15] = [
        ExitCode::Failure,
        ExitCode::Usage,
        ExitCode::Privilege,
        ExitCode::Credentials,
        ExitCode::GatewayMissing,
        ExitCode::GatewayUnreachable,
        ExitCode::DnsVerification,
        ExitCode::WaitFor,
        ExitCode::LocalConflict,
        ExitCode::ApiUnreachable,
        ExitCode::NameTaken,
        ExitCode::LeftLocally,
        ExitCode::HungUp,
        ExitCode::Interrupted,
        ExitCode::Terminated,
    ];

    pub fn code(self) -> i32 {
        self as i32
    }

    /// The `step` of the `-o json` failure object.
    pub fn step(self) -> &'static str {
        match self {
            ExitCode::Failure => "join",
            ExitCode::Usage => "usage",
            ExitCode::Privilege => "privilege",
            ExitCode::Credentials => "credentials",
            ExitCode::GatewayMissing => "gateway",
            ExitCode::GatewayUnreachable => "handshake",
            ExitCode::DnsVerification => "dns",
            ExitCode::WaitFor => "wait-for",
            ExitCode::LocalConflict => "local-conflict",
            ExitCode::ApiUnreachable => "api-server",
            ExitCode::NameTaken => "name-taken",
            ExitCode::LeftLocally => "left-locally",
            ExitCode::HungUp => "hangup",
            ExitCode::Interrupted => "interrupted",
            ExitCode::Terminated => "terminated",
        }
    }

    fn meaning(self) -> &'static str {
        match self {
            ExitCode::Failure => "any other failure (read the message)",
            ExitCode::Usage => "bad flags or flag values, a namespace that does not exist",
            ExitCode::Privilege => "not root and no CAP_NET_ADMIN",
            ExitCode::Credentials => {
                "no or unreadable kubeconfig, rejected credentials, RBAC forbids what kwg needs"
            }
            ExitCode::GatewayMissing => {
                "kwg gateway not installed, no ready gateway pod, or no tunnel IP assigned"
            }
            ExitCode::GatewayUnreachable => {
                "no WireGuard handshake with the gateway on any path (UDP, TCP, API server)"
            }
            ExitCode::DnsVerification => "cluster DNS did not answer through the tunnel",
            ExitCode::WaitFor => "a --wait-for target did not accept a TCP connection in time",
            ExitCode::LocalConflict => {
                "already joined, the interface exists, a route or the DNS listen address conflicts"
            }
            ExitCode::ApiUnreachable => "the Kubernetes API server cannot be reached",
            ExitCode::NameTaken => {
                "the peer name is another machine's peer (pass --name with a name of its own)"
            }
            ExitCode::LeftLocally => {
                "leave: this machine is cleaned up, but the peer Secret could not be deleted (the gateway removes it when its lease ends)"
            }
            ExitCode::HungUp => {
                "join: the terminal closed (SIGHUP) before it finished; every step taken is undone"
            }
            ExitCode::Interrupted => {
                "join: cancelled with Ctrl-C (SIGINT); every step taken is undone"
            }
            ExitCode::Terminated => {
                "join: stopped by SIGTERM before it finished; every step taken is undone"
            }
        }
    }

    /// The table for `--help`.
    pub fn help_table() -> String {
        let mut s =
            String::from("Exit codes:\n   0  joined (and every --wait-for target answered)\n");
        for c in Self::ALL {
            s.push_str(&format!(
                "  {:>2}  {:<15} {}\n",
                c.code(),
                c.step(),
                c.meaning()
            ));
        }
        s.push_str(
            "With -o json a failure is one JSON object on stdout: {\"connected\":false,\"step\":…,\"message\":…,\"exitCode\":…}",
        );
        s
    }

    /// The table for the README and docs/ci.md.
    pub fn markdown_table() -> String {
        let mut s = String::from(
            "| Code | `step` | Meaning |\n|---:|---|---|\n| 0 | | joined (and every `--wait-for` target answered) |\n",
        );
        for c in Self::ALL {
            s.push_str(&format!(
                "| {} | `{}` | {} |\n",
                c.code(),
                c.step(),
                c.meaning().replace("--wait-for", "`--wait-for`")
            ));
        }
        s
    }
}

impl From<&Error> for ExitCode {
    fn from(e: &Error) -> Self {
        use ExitCode as C;
        match e {
            Error::NotPrivileged | Error::NoHelper(_) => C::Privilege,
            Error::NoGateway { .. } | Error::GatewayNotReady { .. } => C::GatewayMissing,
            Error::Forbidden { .. }
            | Error::Unauthorized { .. }
            | Error::Kubeconfig(_)
            | Error::KubeconfigRead { .. }
            | Error::NoKubeconfig
            | Error::NoContext
            | Error::NoSuchContext(_)
            | Error::NotClusterAdmin { .. } => C::Credentials,
            Error::Kube { source, .. } => match source.as_ref() {
                kube::Error::Api(s) if s.code == 401 || s.code == 403 => C::Credentials,
                _ => C::Failure,
            },
            Error::ApiUnreachable { .. } => C::ApiUnreachable,
            Error::PeerNameTaken { .. } => C::NameTaken,
            Error::PeerLeftBehind(_) => C::LeftLocally,
            Error::Invalid { .. } => C::Usage,
            Error::GatewayPaths { .. } => C::GatewayUnreachable,
            Error::WaitFor { .. } => C::WaitFor,
            Error::WhichSession { .. } => C::Usage,
            Error::AlreadyJoined { .. }
            | Error::AlreadyJoinedContext { .. }
            | Error::PrimaryTaken { .. }
            | Error::DnsListen { .. } => C::LocalConflict,
            Error::Session(e) => session_code(e),
            Error::Reported(f) => f.exit_code,
            Error::Cancelled { by, .. } => by.exit_code(),
            Error::DaemonTimeout { .. }
            | Error::DaemonExited { .. }
            | Error::NoTokenRequest { .. }
            | Error::Api(_)
            | Error::Contract(_)
            | Error::Netlink(_)
            | Error::Wg(_)
            | Error::Key(_)
            | Error::Resolved(_)
            | Error::Io { .. } => C::Failure,
        }
    }
}

/// The exit code of a decision of the session core.
fn session_code(e: &kwg_session::Error) -> ExitCode {
    use kwg_session::Error as S;
    use kwg_session::mapping::MapError;
    match e {
        S::RouteConflict { .. } | S::UntrustedInfo { .. } | S::InterfaceExists { .. } => {
            ExitCode::LocalConflict
        }
        S::NamespaceNotFound { .. }
        | S::PeerName { .. }
        | S::ResolvedUnavailable { .. }
        | S::UncarriedFamily { .. }
        | S::Ipv6OnlyCluster { .. } => ExitCode::Usage,
        S::NoTunnelIp { .. } => ExitCode::GatewayMissing,
        S::GatewayUdp { .. } => ExitCode::GatewayUnreachable,
        S::DnsCheck { .. } => ExitCode::DnsVerification,
        // No free range left for a conflicting one is the machine's conflict; a `--map` or
        // `--map-pool` that cannot be used is a bad flag value.
        S::Mapping(MapError::PoolExhausted { .. }) => ExitCode::LocalConflict,
        S::Mapping(
            MapError::NotClusterRange { .. }
            | MapError::ForcedConflict { .. }
            | MapError::ForcedCoversMachine { .. }
            | MapError::Space { .. },
        ) => ExitCode::Usage,
        S::DnsConfig(_) | S::JoinTimeout { .. } => ExitCode::Failure,
        // A step of the driver: the CLI's own error inside says.
        S::Step(s) => s
            .source
            .downcast_ref::<Error>()
            .map_or(ExitCode::Failure, ExitCode::from),
    }
}

/// `kwg status`: joined, but `Degraded` (a health line names each problem and its fix) or
/// still `Joining`. 0 is `Connected`, 1 not joined or no daemon (docs/ci.md).
pub const STATUS_DEGRADED: i32 = 13;

/// A failed join as the daemon reports it to `kwg join`, and as `-o json` prints it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    pub connected: bool,
    pub step: String,
    pub message: String,
    #[serde(with = "as_number")]
    pub exit_code: ExitCode,
}

impl From<&Error> for Failure {
    fn from(e: &Error) -> Self {
        if let Error::Reported(f) = e {
            return f.clone();
        }
        let exit_code = ExitCode::from(e);
        Failure {
            connected: false,
            step: exit_code.step().into(),
            message: e.to_string(),
            exit_code,
        }
    }
}

/// `exitCode` is the number a shell sees.
mod as_number {
    use super::ExitCode;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(c: &ExitCode, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i32(c.code())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ExitCode, D::Error> {
        let n = i32::deserialize(d)?;
        ExitCode::ALL
            .into_iter()
            .find(|c| c.code() == n)
            .ok_or_else(|| D::Error::custom(format!("unknown exit code {n}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kwg_session::Error as S;

    fn code(e: Error) -> i32 {
        ExitCode::from(&e).code()
    }

    #[test]
    fn each_situation_has_its_code() {
        assert_eq!(code(Error::NotPrivileged), 3);
        assert_eq!(code(Error::NoKubeconfig), 4);
        let forbidden = Error::Forbidden {
            user: "u".into(),
            verb: "create".into(),
            resource: "secrets".into(),
            namespace: "kwg-system".into(),
        };
        assert_eq!(code(forbidden), 4);
        let kube403 = Error::Kube {
            step: "list".into(),
            source: Box::new(kube::Error::Api(Box::new(
                kube::core::Status::failure("no", "Forbidden").with_code(403),
            ))),
        };
        assert_eq!(code(kube403), 4);
        let ns = S::NamespaceNotFound {
            name: "x".into(),
            flag: "-n",
        };
        assert_eq!(code(ns.into()), 2);
        let ready = Error::GatewayNotReady {
            ready: 0,
            desired: 0,
            namespace: "kwg-gateway".into(),
        };
        assert_eq!(code(ready), 5);
        let udp = S::GatewayUdp {
            endpoints: "192.0.2.1:31820".into(),
            secs: 3,
        };
        assert_eq!(code(udp.into()), 6);
        let dns = S::DnsCheck {
            name: "kubernetes.default".into(),
            secs: 3,
        };
        assert_eq!(code(dns.into()), 7);
        let wait = Error::WaitFor {
            targets: "web-app.emojivoto:80".into(),
            secs: 3,
            last: "connection refused".into(),
        };
        assert_eq!(code(wait), 8);
        assert_eq!(code(Error::AlreadyJoined { pid: Some(1) }), 9);
        let iface = S::InterfaceExists { name: "wg0".into() };
        assert_eq!(code(iface.into()), 9);
        // Mapping: a full pool is the machine's conflict, a bad --map or --map-pool is usage.
        let forced: kwg_session::mapping::ForcedMap = "10.97.0.0/16=10.230.0.0/16".parse().unwrap();
        let pool = kwg_session::mapping::MapError::PoolExhausted {
            subnet: "10.96.0.0/12".parse().unwrap(),
            what: kwg_contract::RouteSource::Service,
            existing: "10.96.0.0/12 dev kwg0".into(),
            pool: "10.224.0.0/11".into(),
        };
        assert_eq!(code(S::from(pool).into()), 9);
        let not_cluster = kwg_session::mapping::MapError::NotClusterRange {
            forced,
            have: "10.96.0.0/12".into(),
        };
        assert_eq!(code(S::from(not_cluster).into()), 2);
        let public = kwg_session::mapping::MapError::Space {
            flag: "--map-pool",
            net: "8.8.0.0/16".parse().unwrap(),
            why: "it is public".into(),
        };
        assert_eq!(code(S::from(public).into()), 2);
        let api = Error::ApiUnreachable {
            server: "https://x".into(),
            reason: "refused".into(),
        };
        assert_eq!(code(api), 10);
        // A step of the driver that failed inside the session keeps its own code.
        let taken = Error::PeerNameTaken {
            name: "laptop".into(),
            secret: "kwg-peer-laptop".into(),
            owner: "ci".into(),
            hostname: "runner".into(),
        };
        assert_eq!(code(Error::Session(taken.into())), 11);
        assert_eq!(code(Error::invalid("--name", "not a label")), 2);
        let timeout = Error::DaemonTimeout {
            secs: 5,
            log: "l".into(),
        };
        assert_eq!(code(timeout), 1);
    }

    #[test]
    fn codes_are_distinct_and_not_clap_or_shell_reserved() {
        let mut seen = std::collections::HashSet::new();
        for c in ExitCode::ALL {
            assert!(seen.insert(c.code()), "{c:?} repeats {}", c.code());
            let signal = [Cancel::Interrupt, Cancel::Terminate, Cancel::Hangup]
                .into_iter()
                .find(|s| s.exit_code() == c);
            match signal {
                // The shell's code for a process a signal stopped: 128 + the signal's number.
                Some(s) => {
                    let number = match s {
                        Cancel::Interrupt => nix::sys::signal::Signal::SIGINT,
                        Cancel::Terminate => nix::sys::signal::Signal::SIGTERM,
                        _ => nix::sys::signal::Signal::SIGHUP,
                    };
                    assert_eq!(c.code(), 128 + number as i32, "{c:?}");
                }
                None => assert!((1..126).contains(&c.code()), "{c:?}"),
            }
        }
        assert_eq!(ExitCode::Usage.code(), 2, "clap exits 2 on usage errors");
    }

    #[test]
    fn a_reported_failure_keeps_the_daemons_code_through_json() {
        let f = Failure::from(&Error::Session(S::GatewayUdp {
            endpoints: "192.0.2.1:31820".into(),
            secs: 3,
        }));
        let json = serde_json::to_value(&f).unwrap();
        assert_eq!(json["connected"], false);
        assert_eq!(json["step"], "handshake");
        assert_eq!(json["exitCode"], 6);
        assert!(
            json["message"]
                .as_str()
                .unwrap()
                .contains("did not answer on UDP")
        );
        let back: Failure = serde_json::from_value(json).unwrap();
        assert_eq!(code(Error::Reported(back.clone())), 6);
        assert_eq!(Error::Reported(back).to_string(), f.message);
    }

    #[test]
    fn the_readme_and_the_ci_guide_carry_the_table() {
        let table = ExitCode::markdown_table();
        for doc in ["../README.md", "../docs/ci.md"] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(doc);
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(
                text.contains(&table),
                "{doc} lacks the exit-code table; paste:\n{table}"
            );
        }
    }

    #[test]
    fn help_lists_every_code() {
        let help = ExitCode::help_table();
        for c in ExitCode::ALL {
            assert!(
                help.lines()
                    .any(|l| l.trim_start().starts_with(&format!("{} ", c.code()))
                        && l.contains(c.step())),
                "{help}"
            );
        }
    }
}
