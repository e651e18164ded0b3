//! The one error type of the `kwg` CLI: every message is one sentence naming the fix.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "kwg join needs root or CAP_NET_ADMIN to create the tunnel interface: run it with sudo (or grant CAP_NET_ADMIN)"
    )]
    NotPrivileged,
    /// A normal user's TUN join found no kwg-helper and could not start one.
    #[error(
        "kwg join needs root or CAP_NET_ADMIN to create the tunnel interface, or kwg-helper to create it: {0}: run sudo kwg-helper install once (it says how to enable it), join with sudo, or pass --userspace"
    )]
    NoHelper(String),
    #[error(
        "no kwg gateway is installed in namespace {namespace} (ConfigMap {configmap} is missing): as a cluster admin, apply the manifests with kubectl apply -k manifests/"
    )]
    NoGateway {
        namespace: String,
        configmap: String,
    },
    #[error(
        "your kubeconfig user {user} is not allowed to {verb} {resource} in namespace {namespace}: ask a cluster admin to bind you to the kwg-user role (see manifests/)"
    )]
    Forbidden {
        user: String,
        verb: String,
        resource: String,
        namespace: String,
    },
    #[error(
        "the Kubernetes API server {server} rejected the credentials of your kubeconfig user {user}: log in again (refresh the token or certificate) or pick another --context"
    )]
    Unauthorized { server: String, user: String },
    #[error(
        "the Kubernetes API server {server} is unreachable ({reason}): check your network, kubeconfig and --context"
    )]
    ApiUnreachable { server: String, reason: String },
    #[error("cannot load the kubeconfig: {0}: check KUBECONFIG, --kubeconfig and --context")]
    Kubeconfig(String),
    #[error(
        "cannot read the kubeconfig {}: {source}: set KUBECONFIG or pass --kubeconfig (kubectl config view shows what kubectl uses)", path.display()
    )]
    KubeconfigRead {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no kubeconfig found ($KUBECONFIG is unset and there is no ~/.kube/config): set KUBECONFIG or pass --kubeconfig"
    )]
    NoKubeconfig,
    #[error(
        "the kubeconfig has no current context: pass --context, or pick one with kubectl config use-context NAME"
    )]
    NoContext,
    #[error("context {0} is not in the kubeconfig: kubectl config get-contexts lists them")]
    NoSuchContext(String),
    #[error(
        "the kwg gateway has no ready pod ({ready}/{desired} ready in {namespace}): kubectl -n {namespace} describe deployment kwg-gateway shows why; a cluster admin must scale it up or fix it"
    )]
    GatewayNotReady {
        ready: i32,
        desired: i32,
        namespace: String,
    },
    #[error("Kubernetes API error while trying to {step}: {source}")]
    Kube {
        step: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error(
        "the gateway did not answer within {secs}s on any path ({tried}): check that UDP or TCP to the kwg-gateway NodePort/LoadBalancer is allowed by firewalls and that the gateway pod runs"
    )]
    GatewayPaths { secs: u64, tried: String },
    #[error("kwg is already joined or joining (daemon pid {}): run kwg leave first", pid.map_or("unknown".to_string(), |p| p.to_string()))]
    AlreadyJoined { pid: Option<u32> },
    /// A second `kwg join` to a context that has a session (issue 27).
    /// `name` is what `--context` finds that session by (its alias when another cluster's
    /// context has the same name).
    #[error("kwg is already joined to context {context} (daemon pid {}, interface {interface}): kwg status --context {name} shows it; run kwg leave --context {name} first to join it again", pid.map_or("unknown".to_string(), |p| p.to_string()))]
    AlreadyJoinedContext {
        context: String,
        pid: Option<u32>,
        interface: String,
        name: String,
    },
    /// `kwg leave` (or `status`/`peers` where one is needed) with several sessions and no
    /// terminal to ask on.
    #[error("{} sessions are joined ({}): name one with --context NAME, or pass --all for every one", contexts.len(), contexts.join(", "))]
    WhichSession { contexts: Vec<String> },
    /// `kwg join --primary` while another session answers the short names.
    #[error(
        "the session of context {other} is the primary (short names go to it): join without --primary (names of this cluster are then <svc>.<ns>.svc.<alias>), or run kwg leave --context {other} first"
    )]
    PrimaryTaken { other: String },
    #[error(
        "the kwg daemon did not finish joining within {secs}s and was stopped (what it had set up is undone): read its log {log}"
    )]
    DaemonTimeout { secs: u64, log: String },
    #[error("the kwg daemon exited before it finished joining: read its log {log}")]
    DaemonExited { log: String },
    #[error("{0}")]
    Api(#[from] crate::api::ClientError),
    #[error(
        "--wait-for {targets} did not accept a TCP connection through the tunnel within {secs}s (last: {last}); kwg left the cluster again: check the Service has ready endpoints (kubectl get endpointslices), or raise --timeout"
    )]
    WaitFor {
        targets: String,
        secs: u64,
        last: String,
    },
    #[error(
        "the Kubernetes API server {server} does not serve TokenRequest (serviceaccounts/token, Kubernetes >= 1.22): upgrade the cluster, or create a token Secret for the ServiceAccount by hand"
    )]
    NoTokenRequest { server: String },
    #[error(
        "peer name {name} is taken by another machine's peer (Secret {secret}, owner {owner}, hostname {hostname}): pass --name with a name of its own for this machine"
    )]
    PeerNameTaken {
        name: String,
        secret: String,
        owner: String,
        hostname: String,
    },
    /// `leave` cleaned up the machine but could not delete the peer Secret.
    #[error("{0}")]
    PeerLeftBehind(crate::state::LeftBehind),
    /// An error the daemon reported, already one sentence, with its exit code.
    #[error("{}", .0.message)]
    Reported(crate::exit::Failure),
    #[error("gateway info is invalid: {0}: upgrade kwg or the gateway so they match")]
    Contract(#[from] kwg_contract::ContractError),
    #[error("{0}")]
    Netlink(#[from] kwg_host::netlink::NetlinkError),
    #[error("{0}")]
    Wg(#[from] kwg_wg::Error),
    #[error("{0}")]
    Key(#[from] kwg_contract::keys::KeyError),
    #[error("DNS forwarder: cannot listen on {addr}: {source}: pick another with --dns-listen")]
    DnsListen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Resolved(#[from] crate::dns::resolved::ResolvedError),
    /// A decision of the session core (kwg-session): a refused gateway info, a route
    /// conflict, ...
    #[error(transparent)]
    Session(#[from] kwg_session::Error),
    #[error("invalid {what}: {reason}")]
    Invalid { what: String, reason: String },
    #[error("cannot {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// `kwg ci-credentials` run by a user who may not create what it creates.
    #[error(
        "your kubeconfig user {user} may not {verb} {resource} ({}): kwg ci-credentials is for a cluster admin, who may create ServiceAccounts, RoleBindings, ClusterRoleBindings and service-account tokens: run it with an admin's kubeconfig (--kubeconfig or --context), or ask an admin to run it and store the kubeconfig it prints as the CI secret",
        if namespace.is_empty() { "cluster-wide".to_string() } else { format!("namespace {namespace}") }
    )]
    NotClusterAdmin {
        user: String,
        verb: String,
        resource: String,
        namespace: String,
    },
    /// `kwg join` stopped before it finished; `undone` says whether everything was undone.
    #[error("join cancelled by {by} before it finished; {undone}")]
    Cancelled {
        by: crate::exit::Cancel,
        undone: String,
    },
}

impl Error {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    pub fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Invalid {
            what: what.into(),
            reason: reason.into(),
        }
    }
}
