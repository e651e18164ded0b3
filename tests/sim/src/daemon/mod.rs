//! `kwg-sim daemon`: the API server stand-in and the node's controllers, running inside the
//! node namespace until SIGTERM.

pub mod apply;
pub mod ready;

use crate::names::{self, Names};
use crate::net::ClusterNet;
use crate::{Error, Result};
use kube::Client;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Builds a client from kubeconfig text.
pub async fn client_from_kubeconfig(text: &str) -> Result<Client> {
    let kc =
        kube::config::Kubeconfig::from_yaml(text).map_err(|e| Error::Kubeconfig(e.to_string()))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Kubeconfig(e.to_string()))?;
    Ok(Client::try_from(cfg)?)
}

/// The certificate SANs of the API server.
fn cert_sans(net: &ClusterNet) -> Vec<String> {
    let mut sans = vec![
        net.node_ip().to_string(),
        net.kubernetes_svc_ip().to_string(),
    ];
    // Pods of an IPv6-only cluster reach it at the IPv6 ClusterIP and node address.
    if net.ipv6_only() {
        sans.extend(net.kubernetes_svc_ip6().map(|ip| ip.to_string()));
        sans.extend(net.node_ip6().map(|ip| ip.to_string()));
    }
    for s in ["kubernetes", "kubernetes.default", "kubernetes.default.svc"] {
        sans.push(s.into());
    }
    sans.push(format!("kubernetes.default.svc.{}", net.domain));
    sans.extend(["127.0.0.1".to_string(), "localhost".to_string()]);
    sans
}

/// Runs the daemon. The process must already be in the node namespace (see [`crate::cli`]).
pub async fn run(n: Names) -> Result<()> {
    let dir = n.run_dir();
    std::fs::write(n.daemon_pid(), std::process::id().to_string())
        .map_err(Error::io("writing the pid file"))?;
    let net = ClusterNet::load(&n)?;
    let addr = SocketAddr::from((net.node_ip(), names::API_PORT));
    let listener =
        api_listener(&net).map_err(Error::io(format!("binding the API server to {addr}")))?;
    let (service_cidr, service_cidr_secondary) = net.api_service_cidrs();
    let cfg = kwg_apiserver::Config {
        service_cidr,
        service_cidr_secondary,
        cert_sans: cert_sans(&net),
        state_dir: dir.join("pki"),
    };
    let api = Arc::new(
        kwg_apiserver::ApiServer::serve(cfg, listener)
            .await
            .map_err(|e| Error::ApiServer(e.to_string()))?,
    );
    crate::sh::write_file(&dir.join("ca.crt"), &api.ca_pem())?;
    let pods = n.clone();
    // kubectl port-forward dials localhost:PORT inside the pod's namespace, as containerd does.
    api.set_pod_netns(move |ns, pod| {
        Some(std::path::PathBuf::from("/run/netns").join(pods.pod_ns(ns, pod)))
    });
    let server = format!("https://{addr}");
    for (user, groups) in [
        ("admin", vec!["system:masters"]),
        // A team's member: `developers` edits emojivoto and views default (cluster.yaml).
        ("developer", vec!["kwg:users", "developers"]),
        // Not a kwg user until a test binds it; what it reaches comes through its group
        // (e2e reach_groups.rs).
        ("carol", vec!["kwg:viewers"]),
        ("nobody", vec![]),
    ] {
        let token = api.add_user(user, &groups);
        crate::sh::write_file(
            &n.kubeconfig(user),
            &api.kubeconfig(&server, user, &token, "default"),
        )?;
    }
    let token = api.add_user("system:kwg-sim", &["system:masters"]);
    let client =
        client_from_kubeconfig(&api.kubeconfig(&server, "system:kwg-sim", &token, "default"))
            .await?;
    tracing::info!(%server, "API server up");

    create_node(&client, &net).await?;
    apply::create_all(&client, apply::cluster_docs(&net)?).await?;

    let lan = crate::lan::start(&n, &net)?;
    spawn("kube-proxy", crate::proxy::run(client.clone(), net.clone()));
    spawn(
        "endpoints controller",
        crate::endpoints::run(client.clone()),
    );
    let api2 = api.clone();
    let kcfg = crate::kubelet::Config {
        names: n.clone(),
        net: net.clone(),
        ca_pem: api.ca_pem(),
        token: Arc::new(move |ns, sa| Ok(api2.service_account_token(ns, sa))),
        exe: std::env::current_exe().map_err(Error::io("finding the kwg-sim executable"))?,
    };
    spawn("kubelet", crate::kubelet::run(client.clone(), kcfg));

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(Error::io("SIGTERM handler"))?;
    tokio::select! {
        r = wait_ready(&client, &n, &net) => r?,
        _ = term.recv() => return stop(&n, lan),
    }
    crate::sh::write_file(&n.ready_file(), "ready\n")?;
    tracing::info!(prefix = n.prefix(), "cluster ready");
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(Error::io("SIGINT handler"))?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    stop(&n, lan)
}

/// The API server's socket: the node's LAN address, and in an IPv6-only cluster every address
/// of the node (`[::]`, both families), as the `kubernetes` Service's IPv6 endpoint is the
/// node's IPv6 address (an IPv6 socket takes IPv4 too: the node keeps `bindv6only` 0).
fn api_listener(net: &ClusterNet) -> std::io::Result<tokio::net::TcpListener> {
    let std = if net.ipv6_only() {
        std::net::TcpListener::bind((std::net::Ipv6Addr::UNSPECIFIED, names::API_PORT))?
    } else {
        std::net::TcpListener::bind((net.node_ip(), names::API_PORT))?
    };
    std.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(std)
}

fn spawn(what: &'static str, f: impl std::future::Future<Output = Result<()>> + Send + 'static) {
    tokio::spawn(async move {
        if let Err(e) = f.await {
            tracing::error!(error = %e, "{what} stopped");
        }
    });
}

async fn create_node(client: &Client, net: &ClusterNet) -> Result<()> {
    use k8s_openapi::api::core::v1::Node;
    apply::create_all(client, vec![apply::node(net)]).await?;
    apply::create_all(client, apply::kubernetes_endpoints(net)).await?;
    let api: kube::Api<Node> = kube::Api::all(client.clone());
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    crate::kubelet::patch_status(&api, names::NODE_NAME, apply::node_status(&now, net)).await
}

/// Waits until every Deployment is ready, every TCP Service port accepts connections and cluster
/// DNS answers; what is missing is written to
/// `<run dir>/waiting` (and the log every 10 s) so `up` can say why it gave up.
async fn wait_ready(client: &Client, n: &Names, net: &ClusterNet) -> Result<()> {
    let start = Instant::now();
    let mut logged = Instant::now();
    let dns = SocketAddr::from((net.dns_svc_addr(), 53));
    let name = format!("kubernetes.default.svc.{}", net.domain);
    loop {
        let unready = ready::unready_deployments(client).await?;
        let services = kube::Api::<k8s_openapi::api::core::v1::Service>::all(client.clone())
            .list(&Default::default())
            .await?;
        let closed = ready::unreachable(&ready::tcp_service_addrs(&services.items)).await;
        let what = if !unready.is_empty() {
            format!("deployments not ready: {}", unready.join(", "))
        } else if !closed.is_empty() {
            format!("Services not reachable through kube-proxy yet: {closed:?}")
        } else if ready::dns_answers(dns, &name).await {
            let _ = std::fs::remove_file(n.run_dir().join("waiting"));
            tracing::info!(
                secs = start.elapsed().as_secs_f64(),
                "workloads ready and cluster DNS answers"
            );
            return Ok(());
        } else {
            format!("cluster DNS {dns} does not answer {name}")
        };
        crate::sh::write_file(&n.run_dir().join("waiting"), &what)?;
        if logged.elapsed() > Duration::from_secs(10) {
            tracing::warn!(%what, "cluster not ready yet");
            logged = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Stops the pods on the way out (SIGTERM, up to 1 s, then their namespaces go); `kwg-sim down`
/// removes the rest.
fn stop(n: &Names, _lan: crate::lan::Lan) -> Result<()> {
    tracing::info!("stopping: terminating pods");
    let pods: Vec<String> = crate::sh::netns_list()?
        .into_iter()
        .filter(|ns| ns.starts_with(&n.pod_ns_prefix()))
        .collect();
    let pids: Vec<i32> = pods
        .iter()
        .flat_map(|ns| crate::sh::netns_pids(ns))
        .collect();
    for pid in &pids {
        crate::sh::kill(*pid, nix::sys::signal::Signal::SIGTERM);
    }
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(1) && pids.iter().any(|p| crate::sh::alive(*p)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    for ns in pods {
        crate::topology::delete_ns(&ns);
    }
    Ok(())
}
