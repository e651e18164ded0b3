//! WireGuard's byte stream through the Kubernetes API server: `pods/portforward` to a ready
//! gateway pod over the WebSocket channel protocol (`v4.channel.k8s.io`), the protocol the
//! API server proxies to the kubelet for WebSocket clients.
//!
//! kube-rs's `Api::portforward` speaks the same protocol but moves every 4 KiB chunk through a
//! task and a channel of one; [`open`] reads and writes the upgraded WebSocket directly
//! ([`PodStream`]), which carried several times more in `scripts/bench-reach.sh`.
//!
//! RBAC (Kubernetes 1.32): the upgrade is a GET, authorized as `get pods/portforward`; from
//! 1.35 `create` is checked too. Finding a ready gateway pod needs `list pods`.

mod client;
mod demux;
mod stream;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::core::Request;
use kube::{Client, Resource};
use kwg_contract::GATEWAY_POD_SELECTOR;

pub use client::stream_client;
pub use demux::ProtocolError;
pub use stream::{MAX_MESSAGE, PodPortError, PodStream};

/// The stream [`open`] returns.
pub type Upgraded = hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>;

/// What the gateway's users ask for when port-forward is refused.
pub const PERMISSION: &str = "get and create on pods/portforward";

/// Why the API-server path could not be opened. Each message is one clause-complete sentence
/// that names the fix; [`PortForwardError::Forbidden`] is what to combine with "UDP is
/// blocked" when every path failed.
#[derive(Debug, thiserror::Error)]
pub enum PortForwardError {
    #[error(
        "your kubeconfig user may not port-forward to the kwg gateway's pods in namespace {namespace} ({message}): ask a cluster admin for {PERMISSION} in {namespace} (the kwg-user role in manifests/rbac-user.yaml has it)"
    )]
    Forbidden { namespace: String, message: String },
    #[error(
        "your kubeconfig user may not list the kwg gateway's pods in namespace {namespace} ({message}): ask a cluster admin for get and list on pods in {namespace} (the kwg-user role in manifests/rbac-user.yaml has it)"
    )]
    ListForbidden { namespace: String, message: String },
    #[error(
        "the kwg gateway has no ready pod in namespace {namespace} to port-forward to: kubectl -n {namespace} get pods -l {GATEWAY_POD_SELECTOR} shows why"
    )]
    NoReadyPod { namespace: String },
    #[error(
        "the gateway pod {namespace}/{pod} is gone ({message}): the next attempt picks another ready pod"
    )]
    PodGone {
        namespace: String,
        pod: String,
        message: String,
    },
    #[error(
        "the API server refused the port-forward to {namespace}/{pod} ({code}: {message}): kubectl -n {namespace} port-forward pod/{pod} {port} shows the same answer"
    )]
    Refused {
        namespace: String,
        pod: String,
        port: u16,
        code: u16,
        message: String,
    },
    #[error(
        "the port-forward to {namespace}/{pod} failed ({source}): check that the API server is reachable (kubectl get --raw /readyz)"
    )]
    Api {
        namespace: String,
        pod: String,
        #[source]
        source: kube::Error,
    },
}

impl PortForwardError {
    /// The RBAC permission the user lacks, when that is the reason.
    pub fn missing_permission(&self) -> Option<String> {
        match self {
            Self::Forbidden { namespace, .. } => Some(format!("{PERMISSION} in {namespace}")),
            Self::ListForbidden { namespace, .. } => Some(format!("list pods in {namespace}")),
            _ => None,
        }
    }
}

/// Open `port` of `pod` in `namespace` as a byte stream through the API server.
pub async fn open(
    client: Client,
    namespace: &str,
    pod: &str,
    port: u16,
) -> Result<PodStream<Upgraded>, PortForwardError> {
    let span = tracing::debug_span!("portforward", namespace, pod, port);
    let _in = span.enter();
    let req = Request::new(Pod::url_path(&(), Some(namespace)))
        .portforward(pod, &[port])
        .expect("a port-forward request of a valid name builds");
    // connect() offers v5 and v4 of the channel protocol; the kubelet answers v4 for
    // port-forward (it has no v5).
    let conn = client.connect(req).await.map_err(|e| match e {
        kube::Error::Api(s) if s.code == 403 => PortForwardError::Forbidden {
            namespace: namespace.into(),
            message: s.message.clone(),
        },
        kube::Error::Api(s) if s.code == 404 => PortForwardError::PodGone {
            namespace: namespace.into(),
            pod: pod.into(),
            message: s.message.clone(),
        },
        kube::Error::Api(s) => PortForwardError::Refused {
            namespace: namespace.into(),
            pod: pod.into(),
            port,
            code: s.code,
            message: s.message.clone(),
        },
        source => PortForwardError::Api {
            namespace: namespace.into(),
            pod: pod.into(),
            source,
        },
    })?;
    tracing::debug!("port-forward open");
    Ok(PodStream::new(conn.into_stream(), port))
}

/// The ready gateway pod to forward to: the newest ready one that is not being deleted (in a
/// rolling update the older pods go first).
pub async fn ready_gateway_pod(
    client: Client,
    namespace: &str,
) -> Result<String, PortForwardError> {
    let pods: Api<Pod> = Api::namespaced(client, namespace);
    let list = pods
        .list(&ListParams::default().labels(GATEWAY_POD_SELECTOR))
        .await
        .map_err(|e| match e {
            kube::Error::Api(s) if s.code == 403 => PortForwardError::ListForbidden {
                namespace: namespace.into(),
                message: s.message.clone(),
            },
            source => PortForwardError::Api {
                namespace: namespace.into(),
                pod: "-".into(),
                source,
            },
        })?;
    pick_ready(&list.items).ok_or_else(|| PortForwardError::NoReadyPod {
        namespace: namespace.into(),
    })
}

/// The newest pod with condition Ready=True and no deletion timestamp (pure).
pub fn pick_ready(pods: &[Pod]) -> Option<String> {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            let conds = p.status.as_ref().and_then(|s| s.conditions.as_ref());
            conds.is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .max_by_key(|p| {
            (
                p.metadata.creation_timestamp.clone(),
                p.metadata.name.clone(),
            )
        })
        .and_then(|p| p.metadata.name.clone())
}

/// [`ready_gateway_pod`] then [`open`]: the pod's name and the stream.
pub async fn open_gateway(
    client: Client,
    namespace: &str,
    port: u16,
) -> Result<(String, PodStream<Upgraded>), PortForwardError> {
    let pod = ready_gateway_pod(client.clone(), namespace).await?;
    let stream = open(client, namespace, &pod, port).await?;
    Ok((pod, stream))
}

#[cfg(test)]
mod tests;
