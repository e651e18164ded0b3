//! Command-line flags.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ipnet::IpNet;

#[derive(Debug, Parser)]
#[command(
    name = "kwg",
    version = crate::version::LONG_VERSION,
    about = "Join this machine to a Kubernetes cluster over WireGuard: cluster Services, Pods and DNS names become reachable, the rest of the machine's networking stays as it was.",
    after_help = "State (key, what join changed) lives in $KWG_STATE_DIR (default /var/lib/kwg for root, else $XDG_RUNTIME_DIR/kwg or /tmp/kwg-<uid>). Logs: KWG_LOG=debug."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Join the cluster: register this machine as a peer, start the tunnel daemon, set up
    /// routes and split DNS (or, without root/CAP_NET_ADMIN or /dev/net/tun, userspace mode:
    /// a SOCKS5/HTTP proxy and no change to the machine, see --userspace). Exits 0 once the
    /// tunnel handshake is done and a cluster name resolves through it (and every --wait-for
    /// target answers); on failure undoes everything and exits with the code of the table
    /// below. Each step shows on stderr as it happens; Ctrl-C (SIGTERM, a closed terminal)
    /// before it returns cancels the join and undoes every step taken.
    #[command(after_help = crate::exit::ExitCode::help_table())]
    Join(Box<JoinArgs>),
    /// Show whether this machine is joined and how: every session (one per kubeconfig
    /// context), or the one of --context (exit 1 when not joined).
    Status(OutputArgs),
    /// List every registered peer of the cluster (this machine marked with *).
    Peers(PeersArgs),
    /// Leave the cluster: restore DNS, remove routes and the interface, delete the peer Secret.
    /// Idempotent; also cleans up after a killed daemon. With several sessions: --context NAME
    /// or --all.
    Leave(LeaveArgs),
    /// Listen on 127.0.0.1:LOCAL_PORT and carry each connection to HOST:PORT in the cluster
    /// (for clients that cannot use a proxy, e.g. a database client), until Ctrl-C.
    Forward(ForwardArgs),
    /// Run CMD with ALL_PROXY, HTTP_PROXY, HTTPS_PROXY (and lower-case) and NO_PROXY set to
    /// the userspace proxy, so it reaches the cluster (nothing is set with the TUN path).
    Exec(ExecArgs),
    /// As a cluster admin: create a ServiceAccount bound to the kwg-user roles and print a
    /// kubeconfig with a token of --duration for it (a CI secret).
    CiCredentials(crate::credentials::CiCredentialsArgs),
    /// Check this machine, the cluster and the tunnel, one line per check naming the fix of
    /// each failure (exit code of the first failure); --bundle writes a redacted tar.gz.
    Doctor(crate::doctor::DoctorArgs),
    /// Run the tunnel daemon (started by `kwg join`).
    #[command(hide = true)]
    Daemon(DaemonArgs),
    /// Show this client's version and commit, the gateway's version and contract version,
    /// and a warning (on stderr, exit 0) when they are outside the supported skew.
    Version(crate::version::VersionArgs),
    /// Print a shell completion script: `source <(kwg completion bash)`.
    Completion(crate::version::CompletionArgs),
    /// Write the man pages (kwg.1, kwg-COMMAND.1) into a directory.
    #[command(hide = true)]
    Man(crate::version::ManArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
pub enum Format {
    Text,
    Json,
    Wide,
}

/// `-o` of the commands that print text or JSON only: `wide` is refused with clap's message
/// and code 2, as kubectl refuses an output format a command does not support.
pub fn text_or_json() -> impl clap::builder::TypedValueParser<Value = Format> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(["text", "json"])
        .map(|s| Format::from_str(&s, false).expect("one of the listed values"))
}

/// `--timeout`: a duration above zero (0s would give up before the first step).
fn timeout(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("must be above zero, e.g. 30s".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
pub enum DnsMode {
    /// resolved when systemd-resolved manages the machine's DNS, else resolv-conf.
    Auto,
    /// systemd-resolved per-link DNS of the tunnel interface over D-Bus, reverted on leave.
    Resolved,
    /// Rewrite /etc/resolv.conf in place, restoring the original byte for byte on leave.
    ResolvConf,
    /// Leave the machine's DNS alone.
    Off,
}

#[derive(Debug, Clone, Args, serde::Serialize, serde::Deserialize)]
pub struct KubeArgs {
    /// Kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, like kubectl).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context (default: the current context).
    #[arg(long)]
    pub context: Option<String>,
    /// Namespace of peer Secrets and the gateway info.
    #[arg(long, env = "KWG_NAMESPACE", default_value = kwg_contract::DEFAULT_NAMESPACE)]
    pub kwg_namespace: String,
    /// Namespace the gateway's pods run in (its readiness is read there).
    #[arg(long, env = "KWG_GATEWAY_NAMESPACE", default_value = kwg_contract::DEFAULT_GATEWAY_NAMESPACE)]
    #[serde(default = "default_gateway_namespace")]
    pub gateway_namespace: String,
}

fn default_gateway_namespace() -> String {
    kwg_contract::DEFAULT_GATEWAY_NAMESPACE.into()
}

#[derive(Debug, Clone, Args, serde::Serialize, serde::Deserialize)]
pub struct JoinArgs {
    #[command(flatten)]
    pub kube: KubeArgs,
    /// Namespace whose Services resolve by their single-label name (default: the context's).
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// Only these namespaces' names resolve (comma-separated); routing is unchanged.
    #[arg(long, value_delimiter = ',')]
    pub mapped_namespaces: Option<Vec<String>>,
    /// Also route this subnet through the cluster (repeatable).
    #[arg(long, value_name = "CIDR")]
    pub also_proxy: Vec<IpNet>,
    /// Never route this subnet through the cluster (repeatable; the most specific subnet wins).
    #[arg(long, value_name = "CIDR")]
    pub never_proxy: Vec<IpNet>,
    /// Route cluster subnets inside this one even where they overlap existing routes.
    #[arg(long, value_name = "CIDR")]
    pub allow_conflicting_subnets: Vec<IpNet>,
    /// Reach this Service, pod or tunnel CIDR of the cluster (or an --also-proxy range) through
    /// this range of the same size (CLUSTER=MAPPED, repeatable): addresses are translated 1:1
    /// on this machine.
    #[arg(long, value_name = "CIDR=CIDR")]
    #[serde(default)]
    pub map: Vec<kwg_session::mapping::ForcedMap>,
    /// Where a Service, pod or tunnel CIDR (or an --also-proxy range) that overlaps this
    /// machine's routes or another session's is mapped from, onto a free range of the same size
    /// (repeatable).
    #[arg(long, value_name = "CIDR", default_value = "10.224.0.0/11")]
    #[serde(default)]
    pub map_pool: Vec<ipnet::Ipv4Net>,
    /// Peer name (a DNS label; default: derived from the hostname).
    #[arg(long)]
    pub name: Option<String>,
    /// Lease of the peer Secret; renewed while joined, the gateway removes the peer after it.
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// Give up (and undo everything) when not connected after this long.
    #[arg(long, default_value = "30s", value_parser = timeout)]
    pub timeout: Duration,
    /// How to configure the machine's resolver.
    #[arg(long, value_enum, default_value = "auto")]
    pub dns_mode: DnsMode,
    /// Names ending in these go to the cluster DNS (wins over --dns-exclude-suffix).
    #[arg(long = "dns-include-suffix", value_name = "SUFFIX")]
    pub include_suffixes: Vec<String>,
    /// Names ending in these never go to the cluster DNS (default .arpa .com .io .net .org .ru).
    #[arg(long = "dns-exclude-suffix", value_name = "SUFFIX")]
    pub exclude_suffixes: Vec<String>,
    /// Accept this very cluster domain from the gateway info although it is a public name (a
    /// public suffix such as co.uk, or a name under one such as k8s.example.com): the cluster's
    /// DNS then answers every name under it. Private names (cluster.local, *.internal) need no flag.
    #[arg(long, value_name = "DOMAIN")]
    #[serde(default)]
    pub cluster_domain: Option<String>,
    /// DNS lookup timeout.
    #[arg(long, default_value = "4s", value_parser = humantime::parse_duration)]
    pub dns_timeout: Duration,
    /// Address of the local DNS forwarder.
    #[arg(long, default_value = crate::dns::forwarder::DEFAULT_LISTEN)]
    pub dns_listen: std::net::SocketAddr,
    /// The resolver file rewritten in resolv-conf mode.
    #[arg(long, default_value = "/etc/resolv.conf", hide = true)]
    pub resolv_conf: PathBuf,
    /// Tunnel interface name (default kwg0; the next free kwgN while another session holds
    /// it).
    #[arg(long, default_value = "kwg0")]
    pub interface: String,
    /// This session's name in DNS: `<svc>.<ns>.svc.<ALIAS>` reaches this cluster whatever
    /// else is joined (default: the context's name as a DNS label, with `-cluster` added when
    /// `svc.<name>` would be a public suffix such as `svc.dev`).
    #[arg(long, value_name = "ALIAS")]
    #[serde(default)]
    pub alias: Option<String>,
    /// This session answers short names (`web-app`, `web-app.emojivoto`, `*.cluster.local`):
    /// the default for the first session; refused while another session is the primary.
    #[arg(long)]
    #[serde(default)]
    pub primary: bool,
    /// Another session answers the short names (decided by `kwg join` for its daemon).
    #[arg(skip)]
    #[serde(default)]
    pub secondary: bool,
    /// How WireGuard reaches the gateway: auto tries UDP, then TCP to the same endpoint, then
    /// the API server's port-forward, and moves back up when a better path answers.
    #[arg(long, value_enum, default_value = "auto")]
    #[serde(default)]
    pub transport: crate::transport::Flag,
    /// How often auto probes better paths while on TCP or the API server.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration, hide = true)]
    #[serde(default = "default_probe_every")]
    pub transport_probe_every: Duration,
    /// Userspace mode: no interface, routes, DNS or firewall changes and no privilege; the
    /// cluster is reached through a SOCKS5/HTTP proxy on --proxy-listen (see kwg exec, kwg
    /// forward). Chosen by itself without root/CAP_NET_ADMIN or /dev/net/tun.
    #[arg(long, conflicts_with = "tun")]
    #[serde(default)]
    pub userspace: bool,
    /// Require the tunnel interface: fail without root/CAP_NET_ADMIN instead of falling back
    /// to --userspace.
    #[arg(long)]
    #[serde(default)]
    pub tun: bool,
    /// The userspace proxy's address (SOCKS5 and HTTP on one port).
    #[arg(long, default_value = crate::userspace::DEFAULT_PROXY)]
    #[serde(default = "default_proxy")]
    pub proxy_listen: std::net::SocketAddr,
    /// Stay in the foreground (the daemon runs in this process until Ctrl-C).
    #[arg(long)]
    pub foreground: bool,
    /// Return only when HOST:PORT (a cluster name such as web-app.emojivoto, or an IP)
    /// accepts a TCP connection through the tunnel, retried within --timeout; else leave
    /// again and exit 8 (repeatable).
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "foreground")]
    #[serde(default)]
    pub wait_for: Vec<crate::wait::Target>,
    /// Output: text progress lines, or one JSON object (progress as JSON events on stderr).
    #[arg(short, long, default_value = "text", value_parser = text_or_json())]
    pub output: Format,
}

#[derive(Debug, Args)]
pub struct OutputArgs {
    /// text or json.
    #[arg(short, long, default_value = "text", value_parser = text_or_json())]
    pub output: Format,
    /// Only the session of this kubeconfig context or alias (default: every session).
    #[arg(long)]
    pub context: Option<String>,
}

#[derive(Debug, Args)]
pub struct PeersArgs {
    #[command(flatten)]
    pub kube: KubeArgs,
    /// text, wide (hostname, endpoint, key, error) or json.
    #[arg(short, long, value_enum, default_value = "text")]
    pub output: Format,
}

#[derive(Debug, Args)]
pub struct LeaveArgs {
    /// text or json (progress as JSON events on stderr).
    #[arg(short, long, default_value = "text", value_parser = text_or_json())]
    pub output: Format,
    /// Leave the session of this kubeconfig context or alias (needed when several are joined).
    #[arg(long, conflicts_with = "all")]
    pub context: Option<String>,
    /// Leave every session.
    #[arg(long)]
    pub all: bool,
}

fn default_probe_every() -> Duration {
    crate::transport::Timings::default().probe_every
}

fn default_proxy() -> std::net::SocketAddr {
    crate::userspace::DEFAULT_PROXY
        .parse()
        .expect("a socket address")
}

#[derive(Debug, Args)]
pub struct ForwardArgs {
    /// LOCAL_PORT:HOST:PORT, e.g. 5432:db.prod:5432 (HOST a cluster name or IP).
    #[arg(value_name = "LOCAL_PORT:HOST:PORT")]
    pub spec: crate::userspace::client::ForwardSpec,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The command and its arguments (after --).
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// The join flags, as JSON.
    #[arg(long)]
    pub spec: String,
}

impl From<DnsMode> for kwg_session::DnsMode {
    fn from(m: DnsMode) -> Self {
        match m {
            DnsMode::Auto => Self::Auto,
            DnsMode::Resolved => Self::Resolved,
            DnsMode::ResolvConf => Self::ResolvConf,
            DnsMode::Off => Self::Off,
        }
    }
}

/// The session core's view of `kwg join`'s flags.
impl From<&JoinArgs> for kwg_session::SessionConfig {
    fn from(a: &JoinArgs) -> Self {
        kwg_session::SessionConfig {
            name: a.name.clone(),
            namespace: a.namespace.clone(),
            mapped_namespaces: a.mapped_namespaces.clone(),
            kwg_namespace: a.kube.kwg_namespace.clone(),
            interface: a.interface.clone(),
            userspace: a.userspace,
            proxy_listen: a.proxy_listen,
            timeout: a.timeout,
            ttl: a.ttl,
            also_proxy: a.also_proxy.clone(),
            never_proxy: a.never_proxy.clone(),
            allow_conflicting_subnets: a.allow_conflicting_subnets.clone(),
            map: a.map.clone(),
            map_pool: match a.map_pool.is_empty() {
                true => vec![kwg_session::mapping::DEFAULT_POOL],
                false => a.map_pool.clone(),
            },
            cluster_domain: a.cluster_domain.clone(),
            exclude_suffixes: a.exclude_suffixes.clone(),
            include_suffixes: a.include_suffixes.clone(),
            dns_mode: a.dns_mode.into(),
            dns_listen: a.dns_listen,
            dns_timeout: a.dns_timeout,
            resolv_conf: a.resolv_conf.clone(),
            naming: kwg_session::dns::split::Naming {
                alias: a.alias.clone(),
                secondary: a.secondary,
            },
            ipv4_only: a
                .userspace
                .then_some(kwg_session::config::USERSPACE_IPV4_ONLY),
        }
    }
}

impl From<JoinArgs> for kwg_session::SessionConfig {
    fn from(a: JoinArgs) -> Self {
        (&a).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;

    fn refused(argv: &[&str]) -> clap::Error {
        Cli::try_parse_from(argv).expect_err("refused")
    }

    #[test]
    fn wide_is_refused_where_it_would_do_nothing() {
        for cmd in ["join", "status", "leave", "doctor"] {
            let e = refused(&["kwg", cmd, "-o", "wide"]);
            assert_eq!(e.kind(), ErrorKind::InvalidValue, "{cmd}");
            assert_eq!(e.exit_code(), 2);
            assert!(
                e.to_string().contains("[possible values: text, json]"),
                "{cmd}: {e}"
            );
        }
        assert!(Cli::try_parse_from(["kwg", "peers", "-o", "wide"]).is_ok());
        assert!(Cli::try_parse_from(["kwg", "status", "-o", "json"]).is_ok());
    }

    #[test]
    fn a_zero_timeout_is_a_usage_error() {
        let e = refused(&["kwg", "join", "--timeout", "0s"]);
        assert_eq!(e.kind(), ErrorKind::ValueValidation);
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("must be above zero"), "{e}");
        assert!(Cli::try_parse_from(["kwg", "join", "--timeout", "1s"]).is_ok());
    }
}
