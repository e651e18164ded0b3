//! Inspecting before anything changes: the cluster (kubeconfig, gateway info, namespaces,
//! this machine's peer key) and the machine (routes, addresses, resolvers, systemd-resolved,
//! hostname and tag), as the session's `Facts`.

use std::net::{IpAddr, SocketAddr};

use kwg_contract::GatewayInfo;
use kwg_contract::keys::{self, PrivateKey};
use kwg_host::netlink::Netlink;

use crate::args::{DnsMode, JoinArgs};
use crate::cluster::Kube;
use crate::dns::resolved::{self, Detection};
use crate::error::Error;
use crate::state::StateDir;
use kwg_session::machine::{Facts, plan};

/// What inspecting found: the facts for the core, and the clients the driver keeps.
pub struct Inspected {
    pub facts: Box<Facts>,
    pub kube: Kube,
    pub key: PrivateKey,
    pub resolved: Option<resolved::Resolved>,
    /// Sentences for the user (a new key pair was made).
    pub notes: Vec<String>,
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
    let tag = machine_tag(&key.public_key());
    let own = plan::peer_name(args.name.as_deref(), &hostname(), &tag)
        .ok()
        .map(|n| format!("{}{n}", kwg_contract::PEER_SECRET_PREFIX));
    let (key, notes) = unsquatted_key(&kube, &args.kube.kwg_namespace, own, key, dir).await?;
    let (resolved_state, resolved) = detect_resolved(args).await?;
    let dns_on = plan::sets_up_dns(args.dns_mode.into()) && info.dns_ip.is_some();
    // resolv.conf is a symlink on most laptops (to resolved's stub file): follow it. Read even
    // without DNS: its servers are trust facts no cluster route may cover.
    let resolv_conf = match std::fs::read(&args.resolv_conf) {
        Ok(text) => Some(text),
        Err(e) if dns_on => {
            return Err(Error::io(format!("read {}", args.resolv_conf.display()), e));
        }
        Err(_) => None,
    };
    // resolved's uplink servers when it runs (its file is there), whatever --dns-mode says.
    let uplink = match &resolved {
        Some(_) => Some(std::fs::read(resolved::UPLINK_RESOLV_CONF).unwrap_or_default()),
        None => std::fs::read(resolved::UPLINK_RESOLV_CONF).ok(),
    };
    let facts = Facts {
        now_wall: chrono::Utc::now(),
        server: kube.server.clone(),
        user: kube.user.clone(),
        context: kube.context.clone(),
        default_namespace: kube.default_namespace.clone(),
        namespaces: kube.namespaces().await,
        machine_routes: nl.routes().await?.into_iter().map(machine_route).collect(),
        machine_addresses: machine_addresses(),
        api_server: api_server_addresses(&kube.server).await,
        interface_exists: nl.link_exists(&args.interface).await?,
        public_key: key.public_key(),
        hostname: hostname(),
        machine_tag: tag,
        endpoint,
        info,
        resolv_conf,
        uplink,
        resolved: resolved_state,
        ipv6_usable: ipv6_usable(),
    };
    Ok(Inspected {
        facts: Box::new(facts),
        kube,
        key,
        resolved,
        notes,
    })
}

/// A route netlink listed, as the session's plain description.
fn machine_route(r: kwg_host::netlink::RouteEntry) -> kwg_session::routes::Route {
    kwg_session::routes::Route {
        destination: r.destination,
        interface: r.interface,
        gateway: r.gateway,
        table: r.table,
    }
}

/// This machine's key, or a new pair when a peer Secret other than this machine's own name
/// holds its public key (another user copied it into theirs, or an old peer of this machine
/// lives on under another name): the gateway serves one Secret per key, so registering with
/// it would be refused. Not knowing (no right to list peers) keeps the key.
async fn unsquatted_key(
    kube: &Kube,
    ns: &str,
    own_secret: Option<String>,
    key: PrivateKey,
    dir: &StateDir,
) -> Result<(PrivateKey, Vec<String>), Error> {
    let public = key.public_key();
    let peers = match kube.list_peers(ns).await {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!(error = %e, "cannot list peers to check that this machine's key is its own");
            return Ok((key, Vec::new()));
        }
    };
    let holder = peers.iter().find(|p| {
        Some(&p.secret) != own_secret.as_ref()
            && p.spec.as_ref().is_ok_and(|s| s.public_key == public)
    });
    let Some(holder) = holder else {
        return Ok((key, Vec::new()));
    };
    let owner = holder
        .spec
        .as_ref()
        .map(|s| s.owner.clone())
        .unwrap_or_default();
    let new = PrivateKey::generate();
    let tmp = dir.key().with_extension("new");
    keys::write_private_key_file(&tmp, &new)?;
    std::fs::rename(&tmp, dir.key())
        .map_err(|e| Error::io(format!("write {}", dir.key().display()), e))?;
    let note = format!(
        "This machine's public key is held by peer Secret {} (owner {}): made a new key pair",
        holder.secret,
        crate::output::sanitize(&owner)
    );
    tracing::warn!(secret = %holder.secret, "{note}");
    Ok((new, vec![note]))
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

/// Whether this network namespace can take IPv6 addresses and routes: the kernel has IPv6
/// (`/proc/net/if_inet6`) and neither `net.ipv6.conf.all.disable_ipv6` nor `.default.` (what
/// a new interface such as kwg0 starts with) is 1.
fn ipv6_usable() -> bool {
    let off = |conf: &str| {
        std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6"))
            .is_ok_and(|v| v.trim() == "1")
    };
    std::path::Path::new("/proc/net/if_inet6").exists() && !off("all") && !off("default")
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

/// Six hex digits naming this machine in the default peer name: a hash of
/// `/etc/machine-id` (the id itself is never published, as machine-id(5) asks), else of this
/// state directory's public key (stable while the key is).
pub fn machine_tag(public_key: &kwg_contract::keys::PublicKey) -> String {
    let id = ["/etc/machine-id", "/var/lib/dbus/machine-id"]
        .iter()
        .find_map(|p| {
            std::fs::read_to_string(p)
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| public_key.to_string());
    tag_of(&id)
}

/// The tag of a machine id: a keyed BLAKE2s of it, six hex digits.
fn tag_of(id: &str) -> String {
    use blake2::Digest;
    let mut h = blake2::Blake2s256::new();
    h.update(b"kwg peer name\0");
    h.update(id.as_bytes());
    h.finalize()[..3]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_machine_tag_is_stable_short_and_never_the_id_itself() {
        let id = "4f1c0b7e9d2a4c61b3e8a9f0d1c2b3a4";
        let tag = tag_of(id);
        assert_eq!(tag, tag_of(id));
        assert_eq!(tag.len(), 6);
        assert!(tag.chars().all(|c| c.is_ascii_hexdigit()));
        assert!(!id.contains(&tag), "{tag} is a piece of the id");
        assert_ne!(tag, tag_of("4f1c0b7e9d2a4c61b3e8a9f0d1c2b3a5"));
    }

    #[test]
    fn default_names_are_the_hostname_and_the_tag_within_a_dns_label() {
        use kwg_session::machine::plan::default_peer_name;
        let name = |h: &str, t: &str| default_peer_name(h, t).map(|n| n.to_string());
        assert_eq!(
            name("Dev-Box.corp", "a1b2c3").as_deref(),
            Some("dev-box-corp-a1b2c3")
        );
        // Two machines of one hostname: two names.
        assert_ne!(name("runner", "a1b2c3"), name("runner", "d4e5f6"));
        // A long hostname is cut so the tag stays.
        let long = name(&"x".repeat(80), "a1b2c3").unwrap();
        assert_eq!(long.len(), 63);
        assert!(long.ends_with("-a1b2c3"));
        // Nothing usable in the hostname: the tag alone; no tag: the hostname.
        assert_eq!(name("...", "a1b2c3").as_deref(), Some("a1b2c3"));
        assert_eq!(name("box", "").as_deref(), Some("box"));
    }
}
