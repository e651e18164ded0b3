//! The daemon: owns the WireGuard device, its address and routes, the DNS forwarder and the
//! lease; answers `status` and `leave` on a unix socket in the state directory.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

use chrono::Utc;
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use ipnet::{IpNet, Ipv4Net};
use kwg_wg::contract::{GatewayInfo, PeerName, PeerSpec};
use kwg_wg::device::{DEFAULT_MTU, Device, DeviceConfig, PeerConfig};
use kwg_wg::keys::{self, PrivateKey};
use kwg_wg::netlink::Netlink;
use kwg_wg::uapi::SetRequest;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::time::Instant;

use crate::args::{DnsMode, JoinArgs};
use crate::cluster::Kube;
use crate::dns::forwarder::{self, Forwarder, ForwarderConfig};
use crate::dns::resolvconf;
use crate::dns::split::{DEFAULT_EXCLUDE_SUFFIXES, SplitDns};
use crate::error::Error;
use crate::routes::{self, RouteInputs};
use crate::state::{DnsState, State, StateDir};
use kwg_wg::contract::{DnsStatus, Status};

/// WireGuard persistent keepalive, seconds (the `wg` man page suggests 25 behind NAT).
const KEEPALIVE: u16 = 25;

/// When to move to a new UDP source port (and restart the handshake) while there is no
/// handshake yet; a handshake answer takes one round trip, far below these.
const REBIND_FIRST: Duration = Duration::from_millis(1000);
const REBIND_EVERY: Duration = Duration::from_millis(2000);

/// What the daemon tells `kwg join` while it comes up (one JSON object per line).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Progress {
    Step(String),
    Ready(Box<Status>),
    Failed(String),
}

/// What is up, for undoing it.
struct Up {
    dir: StateDir,
    state: Option<State>,
    kube: Option<Kube>,
    device: Option<Device>,
    forwarder: Option<Forwarder>,
}

impl Up {
    fn save(&self) -> Result<(), Error> {
        match &self.state {
            Some(s) => s.save(&self.dir.state()),
            None => Ok(()),
        }
    }

    /// DNS first, then the interface (its routes go with it), the Secret and the state file.
    /// The device itself is dropped with `Up`; the process exits right after.
    async fn teardown(&mut self) -> Result<Vec<String>, Error> {
        if let Some(f) = self.forwarder.take() {
            f.stop();
        }
        match self.state.take() {
            Some(state) => {
                let (done, result) = crate::undo::undo(&state, &self.dir, self.kube.as_ref()).await;
                result.map(|()| done)
            }
            None => Ok(Vec::new()),
        }
    }
}

/// SIGTERM and SIGINT, which stop the daemon (after undoing everything).
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Signals, Error> {
        use tokio::signal::unix::{SignalKind, signal};
        let handle = |kind| signal(kind).map_err(|e| Error::io("handle SIGTERM/SIGINT", e));
        Ok(Signals {
            term: handle(SignalKind::terminate())?,
            int: handle(SignalKind::interrupt())?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// Runs the daemon: brings everything up (reporting progress), serves until `leave` or
/// SIGTERM/SIGINT, then undoes everything. On a bring-up failure undoes what was done and
/// returns the error.
pub async fn run(
    args: JoinArgs,
    dir: StateDir,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), Error> {
    let mut up = Up {
        dir: dir.clone(),
        state: None,
        kube: None,
        device: None,
        forwarder: None,
    };
    let started = Instant::now();
    // Handled from the start, so a signal during bring-up also undoes what was done.
    let mut signals = Signals::new()?;
    let result = tokio::select! {
        r = bring_up(&args, &mut up, progress) => r,
        _ = signals.recv() => Err(Error::Daemon(
            "it was stopped by a signal before it finished joining; what it had set up is undone"
                .into(),
        )),
    };
    let listener = match result {
        Ok(l) => l,
        Err(e) => {
            if let Err(undo) = up.teardown().await {
                tracing::error!(error = %undo, "cleanup after a failed join also failed");
            }
            return Err(e);
        }
    };
    let status = current_status(&up).await;
    tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "joined");
    progress(Progress::Ready(Box::new(status)));
    let leave_conn = serve(&args, &mut up, listener, &mut signals).await;
    let result = up.teardown().await;
    if let Some(mut conn) = leave_conn {
        let reply = match &result {
            Ok(done) => serde_json::json!({ "ok": true, "removed": done }),
            Err(e) => serde_json::json!({ "ok": false, "error": e.to_string() }),
        };
        let _ = conn.write_all(format!("{reply}\n").as_bytes()).await;
    }
    result.map(drop)
}

async fn bring_up(
    args: &JoinArgs,
    up: &mut Up,
    progress: &mut dyn FnMut(Progress),
) -> Result<UnixListener, Error> {
    let deadline = Instant::now() + args.timeout;
    let kube = Kube::connect(
        args.kube.kubeconfig.as_deref(),
        args.kube.context.as_deref(),
    )
    .await?;
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| kube.default_namespace.clone());
    let kwg_ns = args.kube.kwg_namespace.clone();
    let info = kube.gateway_info(&kwg_ns).await?;
    progress(Progress::Step(format!(
        "Connected to context {}, namespace {namespace} ({})",
        kube.context.as_deref().unwrap_or("(current)"),
        kube.server
    )));
    up.kube = Some(kube.clone());
    let dir = up.dir.clone();
    dir.create()?;
    let key = load_or_create_key(&dir)?;
    let peer = peer_name(args)?;

    let gateway_net = IpNet::V4(Ipv4Net::from(info.gateway_ip.addr()));
    let plan = routes::plan(&RouteInputs {
        service: info.service_cidrs.clone(),
        pod: info.pod_cidrs.clone(),
        also_proxy: args.also_proxy.clone(),
        never_proxy: args.never_proxy.clone(),
        gateway: vec![gateway_net],
    });
    let nl = Netlink::open()?;
    routes::check_conflicts(
        &plan,
        &nl.routes().await?,
        &args.interface,
        &args.allow_conflicting_subnets,
    )?;
    let endpoint = resolve_endpoint(&info).await?;

    up.state = Some(State {
        peer: peer.to_string(),
        kwg_namespace: kwg_ns.clone(),
        kubeconfig: args.kube.kubeconfig.clone(),
        context: kube.context.clone(),
        server: kube.server.clone(),
        user: kube.user.clone(),
        namespace: namespace.clone(),
        mapped_namespaces: args.mapped_namespaces.clone(),
        interface: args.interface.clone(),
        tunnel_ip: None,
        gateway_endpoint: Some(endpoint.to_string()),
        gateway_key: Some(info.public_key.to_string()),
        gateway_admin: Some(SocketAddr::new(
            IpAddr::V4(info.gateway_ip.addr()),
            info.admin_port,
        )),
        routes: plan.clone(),
        dns: None,
        daemon_pid: Some(std::process::id()),
        joined_at: Utc::now(),
        ttl_secs: args.ttl.as_secs(),
    });
    up.save()?;

    let spec = PeerSpec {
        name: peer.clone(),
        public_key: key.public_key(),
        owner: kube.user.clone(),
        hostname: hostname(),
        namespaces: args
            .mapped_namespaces
            .clone()
            .unwrap_or_else(|| vec![namespace.clone()]),
        lease_expires: Utc::now() + args.ttl,
    };
    kube.register_peer(&kwg_ns, &spec).await?;
    progress(Progress::Step(format!(
        "Registered peer {peer}, waiting for its tunnel IP"
    )));
    let tunnel_ip = kube
        .wait_tunnel_ip(
            &kwg_ns,
            &spec.secret_name(),
            deadline.saturating_duration_since(Instant::now()),
        )
        .await?;
    if let Some(s) = up.state.as_mut() {
        s.tunnel_ip = Some(tunnel_ip);
    }
    up.save()?;

    let device = Device::start(DeviceConfig {
        name: args.interface.clone(),
        private_key: key,
        listen_port: 0,
        mtu: DEFAULT_MTU,
        uapi_dir: Some(dir.uapi_dir()),
    })
    .await?;
    let handle = device.handle();
    up.device = Some(device);
    nl.link_up(&args.interface, Some(u32::from(DEFAULT_MTU)))
        .await?;
    nl.add_address(&args.interface, IpNet::V4(Ipv4Net::from(tunnel_ip)))
        .await?;
    for r in &plan {
        nl.replace_route(r.subnet, &args.interface).await?;
    }
    let gateway = PeerConfig {
        public_key: info.public_key,
        preshared_key: None,
        endpoint: Some(endpoint),
        allowed_ips: plan.iter().map(|r| r.subnet).collect(),
        persistent_keepalive: Some(KEEPALIVE),
    };
    handle.upsert_peer(gateway.clone()).await?;
    progress(Progress::Step(format!(
        "Tunnel {} up as {tunnel_ip} to gateway {endpoint}, {} routes",
        args.interface,
        plan.len()
    )));

    if let Some(dns_ip) = info.dns_ip {
        setup_dns(args, up, &kube, &info, &namespace, dns_ip, &plan).await?;
    }
    verify(args, up, &gateway, &info, &endpoint, deadline).await?;
    let _ = std::fs::remove_file(dir.socket());
    UnixListener::bind(dir.socket())
        .map_err(|e| Error::io(format!("listen on {}", dir.socket().display()), e))
}

#[allow(clippy::too_many_arguments)]
async fn setup_dns(
    args: &JoinArgs,
    up: &mut Up,
    kube: &Kube,
    info: &GatewayInfo,
    namespace: &str,
    dns_ip: IpAddr,
    plan: &[routes::PlannedRoute],
) -> Result<(), Error> {
    match args.dns_mode {
        DnsMode::Off => return Ok(()),
        DnsMode::Resolved => {
            return Err(Error::invalid(
                "--dns-mode resolved",
                "systemd-resolved support is not implemented yet: use --dns-mode resolv-conf",
            ));
        }
        DnsMode::Auto | DnsMode::ResolvConf => {}
    }
    let path = &args.resolv_conf;
    // Read the original resolvers BEFORE rewriting, or the forwarder would forward to itself.
    let original =
        std::fs::read(path).map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    let original_text = String::from_utf8_lossy(&original).to_string();
    let upstreams = resolvconf::upstreams(&original_text, args.dns_listen.ip());
    let exclude = if args.exclude_suffixes.is_empty() {
        DEFAULT_EXCLUDE_SUFFIXES
            .iter()
            .map(|s| s.to_string())
            .collect()
    } else {
        args.exclude_suffixes.clone()
    };
    let split = SplitDns {
        cluster_domain: info.cluster_domain.clone(),
        namespace: namespace.to_string(),
        cluster_namespaces: kube.namespaces().await,
        mapped: args
            .mapped_namespaces
            .as_ref()
            .map(|m| m.iter().cloned().collect()),
        include_suffixes: args.include_suffixes.clone(),
        exclude_suffixes: exclude.clone(),
        reverse_subnets: plan.iter().map(|r| r.subnet).collect(),
    };
    let search = split.search_domains();
    let fwd = Forwarder::start(
        args.dns_listen,
        ForwarderConfig {
            split,
            cluster: SocketAddr::new(dns_ip, 53),
            upstreams: upstreams.clone(),
            timeout: args.dns_timeout,
        },
    )
    .await?;
    let forwarder_addr = fwd.addr;
    up.forwarder = Some(fwd);
    let backup = up.dir.resolv_backup();
    std::fs::write(&backup, &original)
        .map_err(|e| Error::io(format!("write {}", backup.display()), e))?;
    if let Some(s) = up.state.as_mut() {
        s.dns = Some(DnsState {
            mode: "resolv-conf".into(),
            resolv_conf: Some(path.clone()),
            backup: Some(backup),
            forwarder: forwarder_addr,
            cluster_dns: Some(SocketAddr::new(dns_ip, 53)),
            upstreams,
            include_suffixes: args.include_suffixes.clone(),
            exclude_suffixes: exclude,
            timeout_secs: args.dns_timeout.as_secs(),
            search: search.clone(),
        });
    }
    up.save()?;
    resolvconf::write_in_place(
        path,
        resolvconf::render(&original_text, forwarder_addr.ip(), &search).as_bytes(),
    )
}

/// Waits for the handshake and for the cluster DNS to answer through the tunnel.
async fn verify(
    args: &JoinArgs,
    up: &Up,
    gateway: &PeerConfig,
    info: &GatewayInfo,
    endpoint: &SocketAddr,
    deadline: Instant,
) -> Result<(), Error> {
    let handle = up.device.as_ref().expect("device is up").handle();
    let name = format!(
        "kubernetes.default.svc.{}.",
        info.cluster_domain.trim_end_matches('.')
    );
    let mut dns_ok = info.dns_ip.is_none();
    let mut handshake = false;
    let mut next_rebind = Instant::now() + REBIND_FIRST;
    while Instant::now() < deadline {
        if !handshake && Instant::now() >= next_rebind {
            // A stale conntrack/NAT entry for our UDP 5-tuple (made before the NodePort was
            // programmed) would swallow every retry: move to a fresh source port.
            let req = SetRequest {
                listen_port: Some(0),
                ..Default::default()
            };
            let errno = handle.uapi_set(&req);
            // Re-adding the peer drops its pending handshake, so the next packet starts a new
            // one right away instead of after the retry timer.
            let _ = handle.remove_peer(&gateway.public_key).await;
            handle.upsert_peer(gateway.clone()).await?;
            tracing::info!(
                errno,
                port = handle.listen_port(),
                "no handshake yet: rebound the UDP port"
            );
            next_rebind += REBIND_EVERY;
        }
        if !dns_ok && let Some(ip) = info.dns_ip {
            dns_ok = probe_dns(SocketAddr::new(ip, 53), &name, Duration::from_millis(300)).await;
        } else if !handshake {
            // No DNS to probe: any packet into the tunnel starts the handshake.
            let admin = SocketAddr::new(IpAddr::V4(info.gateway_ip.addr()), info.admin_port);
            let _ = tokio::time::timeout(
                Duration::from_millis(200),
                tokio::net::TcpStream::connect(admin),
            )
            .await;
        }
        handshake = handle
            .peers()
            .await
            .iter()
            .any(|p| p.public_key == info.public_key && p.last_handshake.is_some());
        if handshake && dns_ok {
            return Ok(());
        }
        if !handshake {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let secs = args.timeout.as_secs();
    if !handshake {
        return Err(Error::GatewayUdp {
            endpoints: endpoint.to_string(),
            secs,
        });
    }
    Err(Error::DnsCheck { name, secs })
}

/// Whether `server` resolves `name` to at least one address.
pub async fn probe_dns(server: SocketAddr, name: &str, timeout: Duration) -> bool {
    let Ok(qname) = Name::from_ascii(name) else {
        return false;
    };
    let mut m = Message::query();
    m.metadata.id = rand_id();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(qname, RecordType::A));
    let Ok(raw) = m.to_vec() else {
        return false;
    };
    forwarder::relay(&raw, server, timeout)
        .await
        .and_then(|reply| Message::from_vec(&reply).ok())
        .is_some_and(|m| m.metadata.response_code == ResponseCode::NoError && !m.answers.is_empty())
}

fn rand_id() -> u16 {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (nanos ^ std::process::id()) as u16
}

async fn resolve_endpoint(info: &GatewayInfo) -> Result<SocketAddr, Error> {
    for ep in &info.endpoints {
        if let Some(ip) = ep.ip() {
            return Ok(SocketAddr::new(ip, ep.port));
        }
        if let Ok(mut addrs) = tokio::net::lookup_host((ep.host.as_str(), ep.port)).await
            && let Some(a) = addrs.next()
        {
            return Ok(a);
        }
    }
    Err(Error::invalid(
        "gateway endpoints",
        "none of them resolves: check the kwg-gateway Service and the gateway info ConfigMap",
    ))
}

fn load_or_create_key(dir: &StateDir) -> Result<PrivateKey, Error> {
    let path = dir.key();
    if path.exists() {
        return Ok(keys::read_private_key_file(&path)?);
    }
    let key = PrivateKey::generate();
    keys::write_private_key_file(&path, &key)?;
    Ok(key)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

fn peer_name(args: &JoinArgs) -> Result<PeerName, Error> {
    match &args.name {
        Some(n) => n
            .parse()
            .map_err(|e: kwg_wg::contract::ContractError| Error::invalid("--name", e.to_string())),
        None => PeerName::sanitize(&hostname())
            .ok_or_else(|| Error::invalid("hostname", "it gives no usable peer name: pass --name")),
    }
}

/// The status as the daemon sees it, with live tunnel statistics.
async fn current_status(up: &Up) -> Status {
    let state = up.state.as_ref().expect("joined");
    let stats = match &up.device {
        Some(d) => d.handle().peers().await.into_iter().next(),
        None => None,
    };
    let mut s = status_from_state(state, true);
    if let Some(p) = stats {
        s.last_handshake = p.last_handshake.map(chrono::DateTime::<Utc>::from);
        s.rx_bytes = p.rx_bytes;
        s.tx_bytes = p.tx_bytes;
    }
    s
}

/// The status from the state file alone (`connected` says whether the daemon runs).
pub fn status_from_state(state: &State, connected: bool) -> Status {
    Status {
        connected,
        daemon_pid: state.daemon_pid,
        server: state.server.clone(),
        context: state.context.clone(),
        user: state.user.clone(),
        namespace: state.namespace.clone(),
        mapped_namespaces: state.mapped_namespaces.clone(),
        peer: state.peer.clone(),
        interface: state.interface.clone(),
        tunnel_ip: state.tunnel_ip.map(|i| i.to_string()),
        gateway_endpoint: state.gateway_endpoint.clone(),
        gateway_key: state.gateway_key.clone(),
        last_handshake: None,
        rx_bytes: 0,
        tx_bytes: 0,
        dns: state.dns.as_ref().map(|d| DnsStatus {
            mode: d.mode.clone(),
            remote_ip: d.cluster_dns.map(|a| a.ip().to_string()),
            forwarder: d.forwarder,
            upstreams: d.upstreams.clone(),
            include_suffixes: d.include_suffixes.clone(),
            exclude_suffixes: d.exclude_suffixes.clone(),
            timeout_secs: d.timeout_secs,
        }),
        subnets: state.routes.clone(),
    }
}

/// Serves the control socket and renews the lease until `leave` (returns its connection, to
/// answer once everything is undone) or SIGTERM/SIGINT.
async fn serve(
    args: &JoinArgs,
    up: &mut Up,
    listener: UnixListener,
    signals: &mut Signals,
) -> Option<UnixStream> {
    let renew_every = (args.ttl / 3).max(Duration::from_secs(1));
    let mut renew = tokio::time::interval_at(Instant::now() + renew_every, renew_every);
    loop {
        tokio::select! {
            _ = signals.recv() => return None,
            _ = renew.tick() => renew_lease(args, up).await,
            conn = listener.accept() => {
                let Ok((conn, _)) = conn else { continue };
                if let Some(leave) = handle_request(conn, up).await {
                    return Some(leave);
                }
            }
        }
    }
}

async fn renew_lease(args: &JoinArgs, up: &Up) {
    let (Some(kube), Some(state)) = (&up.kube, &up.state) else {
        return;
    };
    let secret = format!("{}{}", kwg_wg::contract::PEER_SECRET_PREFIX, state.peer);
    match kube
        .renew_lease(&state.kwg_namespace, &secret, Utc::now() + args.ttl)
        .await
    {
        Ok(()) => tracing::debug!(peer = %state.peer, "lease renewed"),
        Err(e) => {
            tracing::warn!(peer = %state.peer, error = %e, "lease renewal failed; retrying at the next interval")
        }
    }
}

/// Answers `status`; returns the connection on `leave`.
async fn handle_request(conn: UnixStream, up: &Up) -> Option<UnixStream> {
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    let read = tokio::time::timeout(Duration::from_secs(2), reader.read_line(&mut line)).await;
    let mut conn = reader.into_inner();
    if !matches!(read, Ok(Ok(n)) if n > 0) {
        return None;
    }
    match line.trim() {
        "leave" => Some(conn),
        "status" => {
            let status = current_status(up).await;
            let json = serde_json::to_string(&status).unwrap_or_default();
            let _ = conn.write_all(format!("{json}\n").as_bytes()).await;
            None
        }
        other => {
            let _ = conn
                .write_all(format!("{{\"error\":\"unknown request {other:?}\"}}\n").as_bytes())
                .await;
            None
        }
    }
}

/// Sends one request line to the daemon and reads one reply line.
pub async fn request(
    dir: &StateDir,
    req: &str,
    timeout: Duration,
) -> Result<String, std::io::Error> {
    tokio::time::timeout(timeout, async {
        let mut conn = UnixStream::connect(dir.socket()).await?;
        conn.write_all(format!("{req}\n").as_bytes()).await?;
        let mut reader = BufReader::new(conn);
        let mut line = String::new();
        reader.read_line(&mut line).await?;
        Ok(line)
    })
    .await
    .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}
