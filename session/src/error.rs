//! The one error type of the laptop's decisions. Each message is one sentence naming the fix;
//! the CLI wraps it (`kwg::Error::Session`) and gives each its exit code. A step the driver
//! took and that failed reaches the session as [`Error::Step`]: what the session needs to know
//! of it ([`StepKind`]), with the driver's own error inside for the CLI to take back out.

use ipnet::IpNet;

use crate::journal::LeftBehind;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "route {subnet} ({source_name}) conflicts with the existing route {existing}; pass --allow-conflicting-subnets {subnet} to route it through kwg anyway, or --never-proxy the overlap"
    )]
    RouteConflict {
        subnet: IpNet,
        source_name: String,
        existing: String,
    },
    #[error(
        "refused {what} from the cluster: {why}; {}a cluster admin must fix it (kubectl -n kwg-system get configmap kwg-gateway-info -o yaml shows what the gateway published)",
        .allow.as_ref().map(|f| format!("pass {f} to accept it, or ")).unwrap_or_default()
    )]
    UntrustedInfo {
        what: String,
        why: String,
        /// The user's flag that would accept it.
        allow: Option<String>,
    },
    /// `--also-proxy` with an IPv6 range while this join's tunnel carries IPv4 only (`why`:
    /// the gateway publishes no `ipv6.json`, userspace mode, a join through kwg-helper).
    #[error("--also-proxy {net} is an IPv6 range, and {why}: remove it")]
    UncarriedFamily { net: IpNet, why: String },
    /// An IPv6-only cluster (no IPv4 Service or pod CIDR) while this join carries IPv4 only.
    #[error(
        "this cluster is IPv6-only (its gateway info lists no IPv4 Service or pod CIDR), and {why}: nothing of it could be reached"
    )]
    Ipv6OnlyCluster { why: &'static str },
    /// A cluster domain or namespace systemd-resolved could not take as a link domain.
    #[error("invalid DNS configuration for systemd-resolved: {0}")]
    DnsConfig(String),
    /// Virtual subnets: a cluster range could not be mapped (`--map`, `--map-pool`).
    #[error(transparent)]
    Mapping(#[from] crate::mapping::MapError),
    #[error(
        "namespaces \"{name}\" not found: kubectl get namespaces lists them; pass an existing one with {flag}"
    )]
    NamespaceNotFound { name: String, flag: &'static str },
    /// `--name` is no peer name, or the hostname gives none.
    #[error("invalid peer name from {what}: {reason}")]
    PeerName { what: &'static str, reason: String },
    #[error(
        "interface {name} already exists and is not kwg's: pass --interface with another name (kwg never touches an interface it did not create)"
    )]
    InterfaceExists { name: String },
    #[error(
        "--dns-mode resolved: systemd-resolved does not manage this machine's DNS ({reason}): pass --dns-mode auto or resolv-conf"
    )]
    ResolvedUnavailable { reason: String },
    #[error(
        "the gateway did not assign a tunnel IP to peer {peer} within {secs}s: check that the kwg-gateway pod runs (kubectl -n kwg-gateway get pods) and read its log{detail}"
    )]
    NoTunnelIp {
        peer: String,
        secs: u64,
        detail: String,
    },
    #[error(
        "the gateway did not answer on UDP {endpoints} within {secs}s: check that UDP to the kwg-gateway NodePort/LoadBalancer is allowed by firewalls and that the gateway pod runs"
    )]
    GatewayUdp { endpoints: String, secs: u64 },
    #[error(
        "cluster DNS did not answer {name} through the tunnel within {secs}s: check the kube-dns Service and the gateway's log"
    )]
    DnsCheck { name: String, secs: u64 },
    #[error(
        "kwg join did not get past {step} within {secs}s: check the API server and the kwg-gateway pod (kubectl -n kwg-gateway get pods), or raise --timeout"
    )]
    JoinTimeout { step: String, secs: u64 },
    /// A step the driver took failed.
    #[error(transparent)]
    Step(StepError),
}

/// What the session must know of a failed step: the rest is the driver's sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepKind {
    /// The API server rejects the credentials (401, also after loading the kubeconfig again).
    CredentialsRejected,
    /// The peer Secret could not be deleted: the rest of the machine is cleaned up all the
    /// same, and the gateway collects the peer when its lease ends.
    PeerLeftBehind(LeftBehind),
    Other,
}

/// A failed step of the driver: its kind, the short sentence `kwg status` shows for it, and
/// the driver's own error (which the CLI takes back out, `Error::into_step`).
#[derive(Debug, thiserror::Error)]
#[error("{source}")]
pub struct StepError {
    pub kind: StepKind,
    /// What `kwg status` shows (the innermost cause, not the HTTP stack's whole chain).
    pub summary: String,
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl Error {
    /// The driver's error of a failed step, as the session reports it.
    pub fn step(
        kind: StepKind,
        summary: String,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Error {
        Error::Step(StepError {
            kind,
            summary,
            source: source.into(),
        })
    }

    /// What `kwg status` shows for this error.
    pub fn summary(&self) -> String {
        match self {
            Error::Step(s) => s.summary.clone(),
            e => e.to_string(),
        }
    }

    /// The driver's error inside a failed step, or `self` back.
    pub fn into_step<E: std::error::Error + Send + Sync + 'static>(self) -> Result<E, Error> {
        match self {
            Error::Step(s) => match s.source.downcast::<E>() {
                Ok(e) => Ok(*e),
                Err(source) => Err(Error::Step(StepError { source, ..s })),
            },
            e => Err(e),
        }
    }
}
