//! The status `kwg status` shows, from the journal (and the daemon's live statistics), and
//! following the gateway info while serving.

use futures::StreamExt;
use kwg_wg::contract::{DnsStatus, GatewayInfo, Status};

use crate::session::Session;

use crate::args::JoinArgs;
use crate::state::State;

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
        peer: state.peer.to_string(),
        interface: state.interface.clone(),
        tunnel_ip: state.tunnel_ip.map(|i| i.to_string()),
        gateway_endpoint: state.gateway_endpoint.clone(),
        gateway_key: state.gateway_key.clone(),
        last_handshake: None,
        rx_bytes: 0,
        tx_bytes: 0,
        dns: state.dns.as_ref().map(|d| DnsStatus {
            mode: d.mode.as_str().to_string(),
            remote_ip: d.cluster_dns.map(|a| a.ip().to_string()),
            forwarder: d.forwarder,
            upstreams: d.upstreams.clone(),
            include_suffixes: d.include_suffixes.clone(),
            exclude_suffixes: d.exclude_suffixes.clone(),
            timeout_secs: d.timeout_secs,
        }),
        subnets: state.routes.clone(),
        lease: None,
        reach: None,
        transport: None,
        refused_info: None,
        proxy: state.proxy,
    }
}

/// The status of a daemon still inspecting the cluster (nothing changed yet).
pub fn joining(args: &JoinArgs) -> Status {
    Status {
        connected: false,
        daemon_pid: Some(std::process::id()),
        server: String::new(),
        context: args.kube.context.clone(),
        user: String::new(),
        namespace: args.namespace.clone().unwrap_or_default(),
        mapped_namespaces: args.mapped_namespaces.clone(),
        peer: args.name.clone().unwrap_or_default(),
        interface: args.interface.clone(),
        tunnel_ip: None,
        gateway_endpoint: None,
        gateway_key: None,
        last_handshake: None,
        rx_bytes: 0,
        tx_bytes: 0,
        dns: None,
        subnets: Vec::new(),
        lease: None,
        reach: None,
        transport: None,
        refused_info: None,
        proxy: None,
    }
}

impl super::Driver {
    /// Follows the gateway info ConfigMap while serving.
    pub(super) fn watch_gateway_info(&mut self) {
        let (Some(kube), tx) = (self.kube.clone(), self.info_tx.clone()) else {
            return;
        };
        let ns = self.args.kube.kwg_namespace.clone();
        self.watch = Some(tokio::spawn(async move {
            use kube::runtime::{WatchStreamExt, watcher};
            let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
                kube::Api::namespaced(kube.client.clone(), &ns);
            let cfg = watcher::Config::default().fields(&format!(
                "metadata.name={}",
                kwg_wg::contract::GATEWAY_INFO_CONFIGMAP
            ));
            let mut stream = std::pin::pin!(watcher(api, cfg).default_backoff().applied_objects());
            while let Some(item) = stream.next().await {
                let Ok(cm) = item else { continue };
                let Some(json) = cm
                    .data
                    .as_ref()
                    .and_then(|d| d.get(kwg_wg::contract::GATEWAY_INFO_KEY))
                else {
                    continue;
                };
                match GatewayInfo::from_json(json.as_bytes()) {
                    Ok(info) => {
                        if tx.send(info).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "ignoring invalid gateway info"),
                }
            }
        }));
    }

    pub(super) async fn status(&self, session: &Session) -> Status {
        let mut s = match session.state() {
            Some(state) => status_from_state(state, true),
            None => joining(&self.args),
        };
        if let Some(p) = match &self.device {
            Some(d) => d.handle().peers().await.into_iter().next(),
            None => None,
        } {
            s.last_handshake = p.last_handshake.map(chrono::DateTime::<chrono::Utc>::from);
            s.rx_bytes = p.rx_bytes;
            s.tx_bytes = p.tx_bytes;
        }
        if let Some(t) = &self.transport {
            s.transport = t.status().await;
        }
        s.lease = session.lease_status(std::time::Instant::now(), chrono::Utc::now());
        s
    }
        s.refused_info = session.refused_status(std::time::Instant::now(), chrono::Utc::now());
}
