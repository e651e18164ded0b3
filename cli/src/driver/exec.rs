//! The driver's I/O for the session's actions after the inspection: the peer Secret
//! (register, wait for the tunnel IP, renew), the tunnel's network (routes, address,
//! forwarding off), the handshake, and DNS (probe, the resolver file). Each long action is a
//! future that owns what it needs.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use kwg_contract::{GatewayInfo, PeerSpec};
use kwg_host::netlink::Netlink;
use kwg_wg::device::{DeviceHandle, PeerConfig};

use crate::cluster::Kube;
use crate::dns::{forwarder, resolvconf};
use crate::error::Error;
use kwg_session::error::StepKind;
use kwg_session::lease::LeaseFailure;
use kwg_session::machine::Event;

/// The end of a lease of `ttl` written now: the one place a lease's end is decided, from the
/// wall clock as the Secret is written (registration and every renewal); the session only
/// journals what `Registered` and `LeaseRenewed` report.
fn lease_from_now(ttl: Duration) -> chrono::DateTime<chrono::Utc> {
    kwg_session::lease::lease_end(chrono::Utc::now(), ttl)
}

/// Registers the peer with a lease of `ttl` from now.
pub async fn register(kube: Kube, ns: String, mut spec: PeerSpec, ttl: Duration) -> Event {
    spec.lease_expires = lease_from_now(ttl);
    match kube.register_peer(&ns, &spec).await {
        Ok(uid) => Event::Registered(kwg_session::machine::Registration {
            uid,
            lease_expires: spec.lease_expires,
        }),
        Err(e) => Event::Failed(e.into()),
    }
}

/// With `within`, only a tunnel IP in that CIDR counts (a new gateway's).
pub async fn wait_tunnel_ip(
    kube: Kube,
    ns: String,
    secret: String,
    within: Option<ipnet::Ipv4Net>,
) -> Event {
    match kube.wait_tunnel_ip(&ns, &secret, within).await {
        Ok(ip) => Event::TunnelIp(ip),
        Err(e) => Event::Failed(e.into()),
    }
}

/// `secret` is its name and, when journalled, its uid.
pub async fn renew_lease(
    kube: Kube,
    ns: String,
    (secret, uid): (String, Option<String>),
    ttl: Duration,
) -> Event {
    let expires = lease_from_now(ttl);
    match kube
        .renew_lease(&ns, &secret, uid.as_deref(), expires)
        .await
    {
        Ok(()) => Event::LeaseRenewed(expires),
        Err(f) => Event::LeaseFailed(f.map_other(Into::into)),
    }
}

/// Renews the lease; when the API server rejects the credentials (401), loads the kubeconfig
/// `login` names again (a refreshed token file, the exec plugin run again) and tries once more
/// with that client, which is returned for the driver to keep.
pub async fn renew_lease_fresh(
    kube: Kube,
    login: (Option<std::path::PathBuf>, Option<String>),
    ns: String,
    secret: (String, Option<String>),
    ttl: Duration,
) -> (Event, Option<Kube>) {
    let first = renew_lease(kube, ns.clone(), secret.clone(), ttl).await;
    let rejected = |e: &kwg_session::Error| matches!(e, kwg_session::Error::Step(s) if s.kind == StepKind::CredentialsRejected);
    if !matches!(&first, Event::LeaseFailed(LeaseFailure::Other(e)) if rejected(e)) {
        return (first, None);
    }
    match Kube::connect(login.0.as_deref(), login.1.as_deref()).await {
        Ok(fresh) => {
            tracing::info!("the API server rejected the credentials: loaded the kubeconfig again");
            (
                renew_lease(fresh.clone(), ns, secret, ttl).await,
                Some(fresh),
            )
        }
        Err(e) => {
            tracing::warn!(error = %e, "loading the kubeconfig again failed");
            (first, None)
        }
    }
}

/// Pokes the tunnel (a packet toward `poke` starts the handshake) until the gateway answered.
pub async fn await_handshake(handle: DeviceHandle, gateway: PeerConfig, poke: SocketAddr) -> Event {
    crate::peer::await_handshake(handle, gateway.public_key, || async move {
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
    .await;
    Event::Handshake
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

/// Adds the interface's IPv6 tunnel address (a /128; a TUN is `NOARP`, so the kernel runs no
/// duplicate address detection and the address sources packets at once).
pub async fn add_address6(name: &str, address: ipnet::IpNet) -> Result<(), Error> {
    let nl = Netlink::open()?;
    nl.add_address(name, address).await?;
    Ok(())
}

/// Removes the interface's address `address`.
pub async fn delete_address(name: &str, address: ipnet::IpNet) -> Result<(), Error> {
    let nl = Netlink::open()?;
    nl.delete_address(name, address).await?;
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

/// Whether `server` resolves `name` to at least one address: A, else AAAA (an IPv6-only
/// cluster's DNS has no A records).
pub async fn probe_dns(server: SocketAddr, name: &str, timeout: Duration) -> bool {
    for rtype in [RecordType::A, RecordType::AAAA] {
        if probe_dns_of(server, name, rtype, timeout).await {
            return true;
        }
    }
    false
}

async fn probe_dns_of(
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
    timeout: Duration,
) -> bool {
    let Ok(qname) = Name::from_ascii(name) else {
        return false;
    };
    let mut m = Message::query();
    m.metadata.id = rand::random();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(qname, rtype));
    let Ok(raw) = m.to_vec() else {
        return false;
    };
    forwarder::relay(&raw, server, timeout)
        .await
        .and_then(|reply| Message::from_vec(&reply).ok())
        .is_some_and(|m| m.metadata.response_code == ResponseCode::NoError && !m.answers.is_empty())
}

/// Turns IPv4 forwarding off for packets coming in on `interface` (in this process's network
/// namespace): the kernel routes a packet from a device whose `forwarding` is 0 only to this
/// machine, so the cluster reaches no container or VM behind it even with `ip_forward=1`, from
/// the first handshake on and without nft. It goes away with the link: no undo. Nothing is
/// written when it is already 0 (the usual case: `ip_forward=0`), so a read-only `/proc/sys`
/// (a container's default) only matters where forwarding is on.
pub fn refuse_forwarding(interface: &str) -> Result<(), Error> {
    let path = format!("/proc/sys/net/ipv4/conf/{interface}/forwarding");
    if std::fs::read_to_string(&path).is_ok_and(|v| v.trim() == "0") {
        return Ok(());
    }
    std::fs::write(&path, "0").map_err(|e| {
        Error::io(
            format!(
                "turn off forwarding from the tunnel ({path} is 1 because net.ipv4.ip_forward is on; kwg keeps the cluster from routing through this machine): write 0 to it"
            ),
            e,
        )
    })
}

/// Turns forwarding from `interface` off again when something turned it on while joined:
/// changing `net.ipv4.ip_forward` from 0 to 1 (Docker or libvirt starting) sets every
/// interface's `forwarding` to 1. Run on each health check (a read of one file); a failure
/// is logged once, not on every check (the nft forward chain still drops what it would pass).
pub fn keep_forwarding_off(interface: &str) {
    use std::sync::atomic::{AtomicBool, Ordering};
    static FAILED: AtomicBool = AtomicBool::new(false);
    let path = format!("/proc/sys/net/ipv4/conf/{interface}/forwarding");
    if std::fs::read_to_string(&path).is_ok_and(|v| v.trim() == "0") {
        return;
    }
    match refuse_forwarding(interface) {
        Ok(()) => tracing::warn!(
            interface,
            "forwarding from the tunnel was turned on (net.ipv4.ip_forward changed?): turned it off again"
        ),
        Err(e) if !FAILED.swap(true, Ordering::Relaxed) => {
            tracing::warn!(interface, error = %e, "cannot turn forwarding from the tunnel off again")
        }
        Err(_) => {}
    }
}

/// Backs up the resolver file, then rewrites it in place (it may be a bind mount, where a
/// rename fails). The backup is complete and synced before the file is touched.
pub fn write_resolv_conf(
    path: &std::path::Path,
    backup: &std::path::Path,
    original: &[u8],
    contents: &[u8],
) -> Result<(), Error> {
    write_resolv_conf_until(path, backup, original, contents, |_| Ok(()))
}

/// The points of [`write_resolv_conf`] where the daemon can be killed with a change half made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolvWrite {
    /// The backup is on disk; the file is untouched.
    BackedUp,
    /// The file is truncated; nothing written yet.
    Truncated,
    /// The file holds kwg's version.
    Written,
}

/// [`write_resolv_conf`], calling `after` at each [`ResolvWrite`] point: an error from it
/// stops the write there, as a kill would (the undo test stops the real path at each).
pub fn write_resolv_conf_until(
    path: &std::path::Path,
    backup: &std::path::Path,
    original: &[u8],
    contents: &[u8],
    mut after: impl FnMut(ResolvWrite) -> Result<(), Error>,
) -> Result<(), Error> {
    crate::state::write_atomic(backup, original)?;
    after(ResolvWrite::BackedUp)?;
    resolvconf::write_in_place_until(path, contents, || after(ResolvWrite::Truncated))?;
    after(ResolvWrite::Written)
}

/// The gateway's admin address for `info`.
pub fn admin_addr(info: &GatewayInfo) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(info.gateway_ip.addr()), info.admin_port)
}
