//! The gateway's network edge: the WireGuard device and its TUN, IPv4 forwarding, nftables.

use crate::{Config, GatewayError, nft};
use ipnet::{IpNet, Ipv4Net};
use kwg_contract::TunnelIp;
use kwg_contract::keys::PrivateKey;
use kwg_host::netlink::Netlink;
use kwg_wg::device::{Device, DeviceConfig};
use std::io::Write;
use std::process::{Command, Stdio};

/// Starts the device on `cfg.interface`, gives the TUN the gateway's address with the tunnel
/// prefix (so the kernel routes the whole tunnel CIDR into it) and brings it up.
pub async fn start_device(
    cfg: &Config,
    key: PrivateKey,
    gateway_ip: TunnelIp,
) -> Result<Device, GatewayError> {
    let device = Device::start(DeviceConfig {
        name: cfg.interface.clone(),
        private_key: key,
        listen_port: cfg.listen_port,
        mtu: cfg.mtu,
        uapi_dir: cfg.uapi_dir.clone(),
    })
    .await?;
    let nl_err = |source| GatewayError::Netlink {
        interface: cfg.interface.clone(),
        source,
    };
    let nl = Netlink::open().map_err(nl_err)?;
    let addr = Ipv4Net::new(gateway_ip.addr(), cfg.tunnel_cidr.prefix_len())
        .expect("prefix of a valid CIDR");
    nl.add_address(&cfg.interface, IpNet::V4(addr))
        .await
        .map_err(nl_err)?;
    // The IPv6 tunnel address (used on a dual-stack cluster), best effort: a pod without IPv6
    // still serves IPv4.
    let gw6 = kwg_contract::tunnel_ip6_of(cfg.tunnel_cidr6, gateway_ip);
    let addr6 = ipnet::Ipv6Net::new(gw6, cfg.tunnel_cidr6.prefix_len()).expect("a /96");
    if let Err(e) = nl.add_address(&cfg.interface, IpNet::V6(addr6)).await {
        tracing::warn!(error = %e, address = %addr6, "no IPv6 tunnel address: IPv6 is not carried");
    }
    nl.link_up(&cfg.interface, Some(u32::from(cfg.mtu)))
        .await
        .map_err(nl_err)?;
    Ok(device)
}

/// Turns on IPv4 forwarding in the pod's network namespace, and IPv6 forwarding where the pod
/// has IPv6 (best effort: IPv4 is served without it).
pub fn enable_forwarding() -> Result<(), GatewayError> {
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").map_err(GatewayError::Forwarding)?;
    if let Err(e) = std::fs::write("/proc/sys/net/ipv6/conf/all/forwarding", "1") {
        tracing::warn!(error = %e, "cannot turn on IPv6 forwarding: IPv6 is not carried");
    }
    Ok(())
}

/// Loads an nft script (`nft -f -`).
pub fn nft_apply(script: &str) -> Result<(), GatewayError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| GatewayError::Nft(format!("cannot run nft: {e}")))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(script.as_bytes())
        .map_err(|e| GatewayError::Nft(e.to_string()))?;
    let out = child
        .wait_with_output()
        .map_err(|e| GatewayError::Nft(e.to_string()))?;
    if !out.status.success() {
        return Err(GatewayError::Nft(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ));
    }
    Ok(())
}

/// Packets the reach table dropped per peer address (empty when it does not exist).
pub fn nft_drops() -> Vec<(std::net::Ipv4Addr, u64)> {
    // A peer's IPv4 and IPv6 drops, summed.
    let mut by_peer: std::collections::BTreeMap<std::net::Ipv4Addr, u64> = Default::default();
    for set in ["peer_drops", "peer_drops6"] {
        for (ip, n) in reach_set_json(set).map_or_else(Vec::new, |j| nft::parse_drops(&j)) {
            *by_peer.entry(ip).or_default() += n;
        }
    }
    by_peer.into_iter().collect()
}

/// The destination the reach table last refused per peer address (empty when it does not
/// exist).
pub fn nft_last_refused() -> Vec<(std::net::Ipv4Addr, std::net::Ipv4Addr)> {
    reach_set_json("refused").map_or_else(Vec::new, |j| nft::parse_last_refused(&j))
}

/// `nft -j list set` of one set of the reach table (`None` when it cannot be read).
fn reach_set_json(set: &str) -> Option<String> {
    let out = Command::new("nft")
        .args(["-j", "list", "set", "inet", nft::REACH_TABLE, set])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Removes the gateway's nftables table.
pub fn nft_teardown() -> Result<(), GatewayError> {
    nft_apply(&nft::render_teardown())
}
