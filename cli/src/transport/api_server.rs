//! The API-server rung: WireGuard's datagrams through `pods/portforward` to a ready gateway
//! pod's WireGuard port (TCP on the UDP port's number), see [`crate::portforward`].

use kwg_wg::contract::WIREGUARD_PORT;
use kwg_wg::device::ByteStream;

use crate::cluster::Kube;

/// Opens a port-forward stream to the gateway's WireGuard port; `ns` is the gateway's
/// namespace. The error is one sentence (a 403 names the permission to ask for).
pub(super) async fn open(kube: Option<Kube>, ns: &str) -> Result<Box<dyn ByteStream>, String> {
    let kube = kube.ok_or("the API-server path needs the cluster's kubeconfig")?;
    let (pod, stream) = crate::portforward::open_gateway(kube.streams, ns, WIREGUARD_PORT)
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(namespace = ns, pod, "port-forward to the gateway pod open");
    Ok(Box::new(stream))
}
