//! The driver's I/O: each long action of the session core as a future that owns what it
//! needs, and the undo steps (shared with the cleanup after a killed daemon).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use kwg_wg::contract::{GatewayInfo, PeerSpec};
use kwg_wg::device::{DeviceHandle, PeerConfig};
use kwg_wg::keys::{self, PrivateKey};
use kwg_wg::netlink::Netlink;
use kwg_wg::uapi::SetRequest;

use crate::args::{DnsMode, JoinArgs};
use crate::cluster::Kube;
use crate::dns::resolved::{self, Detection};
use crate::dns::{forwarder, resolvconf};
use crate::error::Error;
use crate::session::{Event, Facts, LeaseFailure, plan};
use crate::state::StateDir;

/// What inspecting found: the facts for the core, and the clients the driver keeps.
pub struct Inspected {
    pub facts: Box<Facts>,
    pub kube: Kube,
    pub key: PrivateKey,
    pub resolved: Option<resolved::Resolved>,
}

/// Connects to the cluster and reads what the plan needs, from it and from the machine.
pub async fn inspect(args: &JoinArgs, dir: &StateDir) -> Result<Inspected, Error> {
    let kube = Kube::connect(
        args.kube.kubeconfig.as_deref(),
        args.kube.context.as_deref(),
    )
    .await?;
    let info = kube.gateway_info(&args.kube.kwg_namespace).await?;
    // A gateway scaled to 0 (or whose pods all failed) is seen at once, not after --timeout;
    // a pod that is starting is waited for.
    if let Some((ready, desired, existing)) = kube.gateway_pods(&args.kube.gateway_namespace).await
        && ready == 0
        && existing == 0
    {
        return Err(Error::GatewayNotReady {
            ready,
            desired,
            namespace: args.kube.gateway_namespace.clone(),
        });
    }
    let nl = Netlink::open()?;
    let endpoint = resolve_endpoint(&info).await?;
    let key = load_or_create_key(dir)?;
    let (resolved_state, resolved) = detect_resolved(args).await?;
    let dns_on = plan::sets_up_dns(args.dns_mode) && info.dns_ip.is_some();
    let resolv_conf = match dns_on {
        // resolv.conf is a symlink on most laptops (to resolved's stub file): follow it.
        true => Some(
            std::fs::read(&args.resolv_conf)
                .map_err(|e| Error::io(format!("read {}", args.resolv_conf.display()), e))?,
        ),
        false => None,
    };
    let uplink = (dns_on && resolved.is_some())
        .then(|| std::fs::read(resolved::UPLINK_RESOLV_CONF).unwrap_or_default());
    let facts = Facts {
        now_wall: chrono::Utc::now(),
        server: kube.server.clone(),
        user: kube.user.clone(),
        context: kube.context.clone(),
        default_namespace: kube.default_namespace.clone(),
        namespaces: kube.namespaces().await,
        machine_routes: nl.routes().await?,
        machine_addresses: machine_addresses(),
        api_server: api_server_addresses(&kube.server).await,
        interface_exists: nl.link_exists(&args.interface).await?,
        public_key: key.public_key(),
        hostname: hostname(),
        endpoint,
        info,
        resolv_conf,
        uplink,
        resolved: resolved_state,
    };
    Ok(Inspected {
        facts: Box::new(facts),
        kube,
        key,
        resolved,
    })
}

/// Whether systemd-resolved manages DNS here (in modes auto and resolved).
async fn detect_resolved(
    args: &JoinArgs,
) -> Result<(plan::Resolved, Option<resolved::Resolved>), Error> {
    if !matches!(args.dns_mode, DnsMode::Auto | DnsMode::Resolved) {
        return Ok((plan::Resolved::NotChecked, None));
    }
    match resolved::detect_with(&args.resolv_conf, None).await {
        Ok(Detection::Managed(client)) => Ok((plan::Resolved::Managed, Some(client))),
        Ok(Detection::NotManaged { reason }) => Ok((plan::Resolved::NotManaged(reason), None)),
        // The stub without a running resolved: resolv.conf would not work either.
        Err(e) if args.dns_mode == DnsMode::Resolved => Err(e.into()),
        Err(e) => {
            tracing::warn!(error = %e, "systemd-resolved is not usable; using resolv.conf");
            Ok((plan::Resolved::NotManaged(e.to_string()), None))
        }
    }
}

/// Registers the peer with a lease of `ttl` from now.
pub async fn register(kube: Kube, ns: String, mut spec: PeerSpec, ttl: Duration) -> Event {
    spec.lease_expires = chrono::Utc::now() + ttl;
    match kube.register_peer(&ns, &spec).await {
        Ok(()) => Event::Registered,
        Err(e) => Event::Failed(e),
    }
}

pub async fn wait_tunnel_ip(kube: Kube, ns: String, secret: String) -> Event {
    match kube.wait_tunnel_ip(&ns, &secret).await {
        Ok(ip) => Event::TunnelIp(ip),
        Err(e) => Event::Failed(e),
    }
}

pub async fn renew_lease(kube: Kube, ns: String, secret: String, ttl: Duration) -> Event {
    match kube
        .renew_lease(&ns, &secret, chrono::Utc::now() + ttl)
        .await
    {
        Ok(()) => Event::LeaseRenewed,
        Err(f) => Event::LeaseFailed(f),
    }
}

/// Pokes the tunnel (a packet toward `poke` starts the handshake) until the gateway answered.
pub async fn await_handshake(handle: DeviceHandle, gateway: PeerConfig, poke: SocketAddr) -> Event {
    await_handshake_poking(handle, gateway, || async move {
        match poke.port() {
            53 => {
                let _ =
                    probe_dns(poke, "kubernetes.default.svc.", Duration::from_millis(100)).await;
            }
            _ => {
                let _ = tokio::time::timeout(
                    Duration::from_millis(100),
                    tokio::net::TcpStream::connect(poke),
                )
                .await;
            }
        }
    })
    .await
}

/// Runs `poke` (which sends something into the tunnel) until the gateway answered the
/// handshake.
pub async fn await_handshake_poking<F: std::future::Future<Output = ()>>(
    handle: DeviceHandle,
    gateway: PeerConfig,
    mut poke: impl FnMut() -> F,
) -> Event {
    loop {
        let done = handle
            .peers()
            .await
            .iter()
            .any(|p| p.public_key == gateway.public_key && p.last_handshake.is_some());
        if done {
            return Event::Handshake;
        }
        poke().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A new handshake initiation to the gateway's current endpoint from the current socket (the
/// session stays until the answer replaces it, then what was sent since `since` goes again).
pub async fn rehandshake(
    handle: &DeviceHandle,
    gateway: PeerConfig,
    since: std::time::Instant,
) -> Result<(), Error> {
    let key = gateway.public_key;
    let endpoint = handle.peer_endpoint(&key).await.or(gateway.endpoint);
    if let Some(ep) = endpoint {
        handle.rehandshake(&key, ep, since).await?;
        tracing::info!(%ep, "sent a new handshake initiation");
    }
    Ok(())
}

/// A fresh UDP source port and a new handshake: a stale conntrack/NAT entry for the old
/// 5-tuple (made before the NodePort was programmed) would swallow every retry.
pub async fn rebind(handle: &DeviceHandle, gateway: PeerConfig) -> Result<(), Error> {
    let errno = handle.uapi_set(&SetRequest {
        listen_port: Some(0),
        ..Default::default()
    });
    // A new initiation from the new port; the peer stays, so packets a stalled session kept
    // for replay go again once it completes. A peer the device does not know is added (its
    // first packet starts the handshake).
    let sent = match gateway.endpoint {
        Some(ep) => handle.probe(&gateway.public_key, ep).await?,
        None => false,
    };
    if !sent {
        handle.remove_peer(&gateway.public_key).await?;
        handle.upsert_peer(gateway).await?;
    }
    tracing::info!(
        errno,
        port = handle.listen_port(),
        "no handshake yet: rebound the UDP port"
    );
    Ok(())
}

/// Brings `name` up (with `address`, when given) and reconciles its routes: `remove`d, then
/// `add`ed (replace: idempotent).
pub async fn set_routes(
    name: &str,
    address: Option<ipnet::IpNet>,
    add: &[ipnet::IpNet],
    remove: &[ipnet::IpNet],
) -> Result<(), Error> {
    let nl = Netlink::open()?;
    if let Some(address) = address {
        nl.link_up(name, Some(u32::from(kwg_wg::device::DEFAULT_MTU)))
            .await?;
        nl.add_address(name, address).await?;
    }
    for r in remove {
        nl.delete_route(*r, name).await?;
    }
    for r in add {
        nl.replace_route(*r, name).await?;
    }
    Ok(())
}

/// Replaces the interface's address `old` by `new`.
pub async fn change_address(name: &str, old: ipnet::IpNet, new: ipnet::IpNet) -> Result<(), Error> {
    let nl = Netlink::open()?;
    nl.add_address(name, new).await?;
    nl.delete_address(name, old).await?;
    Ok(())
}

/// Asks `server` until it resolves `name`.
pub async fn dns_answers(server: SocketAddr, name: String) -> Event {
    while !probe_dns(server, &name, Duration::from_millis(300)).await {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Event::DnsAnswered
}

/// Whether `server` resolves `name` to at least one address.
pub async fn probe_dns(server: SocketAddr, name: &str, timeout: Duration) -> bool {
    let Ok(qname) = Name::from_ascii(name) else {
        return false;
    };
    let mut m = Message::query();
    m.metadata.id = rand::random();
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

/// Backs up the resolver file, then rewrites it in place (it may be a bind mount, where a
/// rename fails). The backup is complete and synced before the file is touched.
pub fn write_resolv_conf(
    path: &std::path::Path,
    backup: &std::path::Path,
    original: &[u8],
    contents: &[u8],
) -> Result<(), Error> {
    crate::state::write_atomic(backup, original)?;
    resolvconf::write_in_place(path, contents)
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

/// The addresses of the machine's interfaces.
fn machine_addresses() -> Vec<IpAddr> {
    nix::ifaddrs::getifaddrs()
        .map(|addrs| {
            addrs
                .filter_map(|a| a.address)
                .filter_map(|a| {
                    a.as_sockaddr_in()
                        .map(|v4| IpAddr::V4(v4.ip()))
                        .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The API server's addresses (its URL's host, resolved).
async fn api_server_addresses(server: &str) -> Vec<IpAddr> {
    let Ok(url) = server.parse::<hyper::Uri>() else {
        return Vec::new();
    };
    let Some(host) = url.host() else {
        return Vec::new();
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse() {
        return vec![ip];
    }
    let port = url.port_u16().unwrap_or(443);
    tokio::net::lookup_host((host, port))
        .await
        .map(|a| a.map(|s| s.ip()).collect())
        .unwrap_or_default()
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

/// The gateway's admin address for `info`.
pub fn admin_addr(info: &GatewayInfo) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(info.gateway_ip.addr()), info.admin_port)
}

/// Failure kinds of a lease renewal, from the API status code.
pub fn lease_failure(code: Option<u16>, e: Error) -> LeaseFailure {
    match code {
        Some(409) => LeaseFailure::Conflict,
        Some(404) => LeaseFailure::NotFound,
        _ => LeaseFailure::Other(e),
    }
}
