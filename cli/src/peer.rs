//! The gateway peer on the device: the session's plain [`GatewayPeer`] as the device's
//! [`PeerConfig`], waiting for its handshake, a new handshake, a fresh UDP port. Used by the
//! driver, the transport and the userspace stack alike.

use std::time::Duration;

use kwg_contract::keys::PublicKey;
use kwg_session::gateway::GatewayPeer;
use kwg_wg::device::{DeviceHandle, PeerConfig};
use kwg_wg::translate::{PrefixMap, Translator};
use kwg_wg::uapi::SetRequest;

use crate::error::Error;

/// The session's gateway peer as the device takes it.
pub fn peer_config(g: &GatewayPeer) -> PeerConfig {
    PeerConfig {
        public_key: g.public_key,
        preshared_key: None,
        endpoint: g.endpoint,
        allowed_ips: g.allowed_ips.clone(),
        persistent_keepalive: g.persistent_keepalive,
    }
}

/// Sets the device's virtual subnets to the gateway peer's mappings (none: no translation).
pub fn set_translation(handle: &DeviceHandle, g: &GatewayPeer) -> Result<(), Error> {
    let maps: Vec<PrefixMap> = g
        .mappings
        .iter()
        .map(|m| PrefixMap {
            real: m.cluster,
            mapped: m.mapped,
        })
        .collect();
    let t = Translator::new(&maps)
        .map_err(|e| kwg_wg::Error::Io(std::io::Error::other(e.to_string())))?;
    handle.set_translation(Some(t))?;
    Ok(())
}

/// Runs `poke` (which sends something into the tunnel) until the gateway answered the
/// handshake.
pub async fn await_handshake<F: std::future::Future<Output = ()>>(
    handle: DeviceHandle,
    gateway: PublicKey,
    mut poke: impl FnMut() -> F,
) {
    loop {
        let done = handle
            .peers()
            .await
            .iter()
            .any(|p| p.public_key == gateway && p.last_handshake.is_some());
        if done {
            return;
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
