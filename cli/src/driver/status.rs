//! The status `kwg status` shows, from the journal (and the daemon's live statistics), and
//! following the gateway info while serving.

use std::future::Future;
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use kwg_contract::{ConnectionState, DnsStatus, Status};

use kwg_session::machine::Session;

use crate::args::JoinArgs;
use crate::cluster::Kube;
use crate::health::{self, Observed, Probe, SecretProbe};
use crate::state::{DnsModeUsed, State, StateFile};

/// How long each of `kwg status`'s checks (the gateway through the tunnel, the peer Secret)
/// may take: the CLI waits 3 s for the daemon's answer.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

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
        tunnel_ip6: state.tunnel_ip6().map(|i| i.to_string()),
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
        state: (!connected).then_some(ConnectionState::NotRunning),
        health: Vec::new(),
    }
}

/// `kwg status` when the daemon holds its lock but does not answer (stopped, hung): the
/// state file's status, judged with what the API server says about the peer Secret (whose
/// lease nobody renews meanwhile).
pub async fn silent_daemon_status(state: &State, why: String) -> Status {
    let mut s = status_from_state(state, false);
    let peer_secret =
        match Kube::connect(state.kubeconfig.as_deref(), state.context.as_deref()).await {
            Ok(kube) => peer_secret(&kube, &state.kwg_namespace, &state.peer.to_string()).await,
            Err(_) => SecretProbe::Unknown,
        };
    let observed = Observed {
        daemon_silent: Some(why),
        peer_secret,
        ..Observed::default()
    };
    health::apply(&mut s, &observed, Utc::now());
    s
}

/// The peer Secret of `peer` as the API server shows it (`Unknown` when it does not say
/// within [`PROBE_TIMEOUT`]).
pub async fn peer_secret(kube: &Kube, namespace: &str, peer: &str) -> SecretProbe {
    let name = format!("{}{peer}", kwg_contract::PEER_SECRET_PREFIX);
    let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(kube.client.clone(), namespace);
    match tokio::time::timeout(PROBE_TIMEOUT, api.get_opt(&name)).await {
        Ok(Ok(None)) => SecretProbe::Missing {
            namespace: namespace.to_string(),
            name,
        },
        Ok(Ok(Some(secret))) => SecretProbe::Present {
            lease_expires: secret
                .data
                .as_ref()
                .and_then(|d| d.get("leaseExpires"))
                .and_then(|v| std::str::from_utf8(&v.0).ok())
                .and_then(|v| kwg_contract::parse_lease(v).ok()),
        },
        _ => SecretProbe::Unknown,
    }
}

/// The planned routes that are not on the tunnel interface (none in userspace mode, or when
/// the kernel's table cannot be read).
async fn missing_routes(state: &State) -> Vec<ipnet::IpNet> {
    if state.proxy.is_some() {
        return Vec::new();
    }
    let Ok(existing) = async { kwg_host::netlink::Netlink::open()?.routes().await }.await else {
        return Vec::new();
    };
    state
        .routes
        .iter()
        .map(|r| r.subnet)
        .filter(|subnet| {
            !existing.iter().any(|e| {
                e.destination == *subnet && e.interface.as_deref() == Some(state.interface.as_str())
            })
        })
        .collect()
}

/// Resolved mode: why systemd-resolved no longer sends names to kwg (kwg's forwarder gone
/// from the link: reverted by something else, resolved restarted); `None` when it is there
/// or resolved cannot be asked.
async fn resolved_problem(
    client: Option<&crate::dns::resolved::Resolved>,
    state: &State,
) -> Option<String> {
    let d = state
        .dns
        .as_ref()
        .filter(|d| d.mode == DnsModeUsed::Resolved)?;
    let ifindex = nix::net::if_::if_nametoindex(state.interface.as_str()).ok()?;
    let servers = tokio::time::timeout(PROBE_TIMEOUT, client?.link_servers(ifindex))
        .await
        .ok()?
        .ok()?;
    let ip = d.forwarder.ip();
    (!servers.contains(&ip)).then(|| {
        format!(
            "systemd-resolved no longer sends cluster names to kwg: {} has no DNS server {ip}",
            state.interface
        )
    })
}

/// Why the machine's resolver does not send names to kwg's forwarder (resolv-conf mode: the
/// file must still name it; resolved mode is verified at join and reverted only by kwg).
pub fn dns_problem(state: &State) -> Option<String> {
    let d = state.dns.as_ref()?;
    if d.mode != DnsModeUsed::ResolvConf {
        return None;
    }
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let ip = d.forwarder.ip();
    let named = text.lines().any(|l| {
        let mut w = l.split_whitespace();
        w.next() == Some("nameserver") && w.next().and_then(|a| a.parse().ok()) == Some(ip)
    });
    (!named).then(|| {
        format!(
            "/etc/resolv.conf no longer names kwg's forwarder {ip}: cluster names do not resolve"
        )
    })
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
        tunnel_ip6: None,
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
        state: Some(ConnectionState::Joining),
        health: Vec::new(),
    }
}

/// The errors seen since the last success, so each distinct one is logged at warn once.
#[derive(Default)]
struct Repeats(std::collections::HashSet<String>);

impl Repeats {
    /// Whether `error` was not seen before (it is remembered).
    fn is_new(&mut self, error: &str) -> bool {
        self.0.insert(error.to_string())
    }
}

impl super::Driver {
    /// Follows the gateway info ConfigMap (and, with a forwarder, the cluster's namespaces)
    /// while serving, with the client of the moment: started again when the credentials are
    /// loaded again (the old client's watches would get 401 forever).
    pub(super) fn watch_gateway_info(&mut self) {
        let (Some(kube), tx) = (self.kube.clone(), self.info_tx.clone()) else {
            return;
        };
        let ns = self.args.kube.kwg_namespace.clone();
        let follow = self.dns_follow(&kube);
        self.followed_admin = follow
            .as_ref()
            .and_then(|f| f.gateway.as_ref())
            .map(|g| g.0);
        let info = async move {
            use kube::runtime::{WatchStreamExt, watcher};
            let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
                kube::Api::namespaced(kube.client.clone(), &ns);
            let cfg = watcher::Config::default().fields(&format!(
                "metadata.name={}",
                kwg_contract::GATEWAY_INFO_CONFIGMAP
            ));
            let mut stream = std::pin::pin!(watcher(api, cfg).default_backoff().applied_objects());
            let mut failures = Repeats::default();
            while let Some(item) = stream.next().await {
                let cm = match item {
                    Ok(cm) => {
                        failures = Repeats::default();
                        cm
                    }
                    Err(e) => {
                        let error = e.to_string();
                        if failures.is_new(&error) {
                            tracing::warn!(%error, "the gateway info watch failed (it retries, backing off): until it works, a new gateway key or a refused update is not followed; kwg doctor checks the RBAC it needs");
                        } else {
                            tracing::debug!(%error, "gateway info watch failed again");
                        }
                        continue;
                    }
                };
                let data = cm.data.unwrap_or_default();
                let Some(info) = crate::cluster::parse_gateway_info(&data) else {
                    continue;
                };
                match info {
                    Ok(info) => {
                        if tx.send(info).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "ignoring invalid gateway info"),
                }
            }
        };
        self.watch = Some(tokio::spawn(async move {
            match follow {
                Some(f) => {
                    futures::future::join(info, crate::dns::follow::run(f)).await;
                }
                None => info.await,
            }
        }));
    }

    /// Starts the watches again when the DNS follower asks another gateway admin address
    /// than `admin` (the session's, after a gateway change).
    pub(super) fn follow_gateway_admin(&mut self, admin: Option<std::net::SocketAddr>) {
        let Some(followed) = self.followed_admin else {
            return;
        };
        if admin.is_none_or(|a| a == followed) {
            return;
        }
        if let Some(w) = self.watch.take() {
            tracing::info!(old = %followed, new = ?admin, "the gateway's admin address moved: following the new one");
            w.abort();
            self.watch_gateway_info();
            // Once per move, even if the journal on disk still names the old one.
            self.followed_admin = admin;
        }
    }

    /// What keeps the split DNS in step with the cluster's namespaces and the peer's reach
    /// (`None` without a forwarder: DNS off, or userspace mode).
    fn dns_follow(&self, kube: &Kube) -> Option<crate::dns::follow::Follow> {
        let split = self.forwarder.as_ref()?.split_handle();
        let secondary = split.split().naming.secondary;
        let state = State::load(&self.dir.state()).ok().flatten()?;
        let resolved = match (&self.resolved, state.dns.as_ref().map(|d| d.mode)) {
            (Some(r), Some(DnsModeUsed::Resolved)) => {
                // A normal user's session: kwg-helper changes the link (resolved refuses the user).
                let dns = match &self.helper {
                    Some(h) => crate::privileged::LinkDns::Helper(h.clone()),
                    None => crate::privileged::LinkDns::Bus(r.clone()),
                };
                nix::net::if_::if_nametoindex(state.interface.as_str())
                    .ok()
                    .map(|i| (dns, i))
            }
            _ => None,
        };
        Some(crate::dns::follow::Follow {
            split,
            kube: kube.clone(),
            resolved,
            gateway: state.gateway_admin.map(|a| (a, state.peer.to_string())),
            secondary: secondary.then(|| self.dir.clone()),
        })
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
        s.refused_info = session.refused_status(std::time::Instant::now(), chrono::Utc::now());
        // What the daemon knows without asking anyone (the answer to `kwg join`).
        let observed = Observed {
            helper_gone: self.helper.as_ref().and_then(|h| h.gone()),
            ..Observed::default()
        };
        health::apply(&mut s, &observed, Utc::now());
        s
    }

    /// `kwg status`: [`Self::status`] with its verdict. The checks (a request to the gateway
    /// through the tunnel, which also renews an idle session's handshake, the peer Secret,
    /// the routes and the resolver) run in the returned future, off the daemon's loop.
    pub(super) async fn status_checked(
        &self,
        session: &Session,
    ) -> impl Future<Output = Status> + Send + 'static {
        let mut s = self.status(session).await;
        let device = self.device.as_ref().map(|d| d.handle());
        let kube = self.kube.clone();
        let resolved = self.resolved.clone();
        let state = session.state().cloned();
        let serving = s.lease.is_some();
        let helper_gone = self.helper.as_ref().and_then(|h| h.gone());
        async move {
            let Some(state) = state.filter(|_| serving) else {
                return s;
            };
            let gateway = async {
                let Some(admin) = state.gateway_admin else {
                    return Probe::NotAsked;
                };
                match crate::reach::fetch(admin, PROBE_TIMEOUT).await {
                    Ok(peers) => {
                        s.reach = peers
                            .into_iter()
                            .find(|g| g.name.as_str() == state.peer.as_str())
                            .and_then(|g| g.reach);
                        Probe::Answered
                    }
                    Err(why) => Probe::Failed(why),
                }
            };
            let secret = async {
                match &kube {
                    Some(k) => peer_secret(k, &state.kwg_namespace, state.peer.as_str()).await,
                    None => SecretProbe::Unknown,
                }
            };
            let (gateway, peer_secret, missing_routes) =
                futures::join!(gateway, secret, missing_routes(&state));
            // The request through the tunnel handshook again if the session had expired.
            if let Some(p) = match &device {
                Some(d) => d.peers().await.into_iter().next(),
                None => None,
            } {
                s.last_handshake = p.last_handshake.map(chrono::DateTime::<Utc>::from);
                s.rx_bytes = p.rx_bytes;
                s.tx_bytes = p.tx_bytes;
            }
            let dns = match dns_problem(&state) {
                Some(p) => Some(p),
                None => resolved_problem(resolved.as_ref(), &state).await,
            };
            let observed = Observed {
                daemon_silent: None,
                gateway,
                peer_secret,
                missing_routes,
                dns,
                helper_gone,
            };
            health::apply(&mut s, &observed, Utc::now());
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Repeats;

    #[test]
    fn each_distinct_watch_error_is_new_once_until_a_success_forgets_them() {
        let mut r = Repeats::default();
        assert!(r.is_new("403 Forbidden"));
        assert!(!r.is_new("403 Forbidden"));
        assert!(r.is_new("connection refused"));
        assert!(!r.is_new("403 Forbidden"));
        r = Repeats::default();
        assert!(r.is_new("403 Forbidden"));
    }
}
