//! `kwg-apiserver --listen 127.0.0.1:6443 --state-dir DIR`: serve the stand-in, write
//! `DIR/admin.kubeconfig` and `DIR/developer.kubeconfig`, run until SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use kwg_apiserver::{ApiServer, Config};

#[derive(Parser)]
#[command(about = "Kubernetes API server stand-in for kwg's tests and demos")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Directory for the CA and the kubeconfigs.
    #[arg(long)]
    state_dir: PathBuf,
    /// Service CIDR.
    #[arg(long, default_value = "10.96.0.0/12")]
    service_cidr: ipnet::IpNet,
    /// A second Service CIDR of the other family (a dual-stack cluster).
    #[arg(long)]
    service_cidr_secondary: Option<ipnet::IpNet>,
    /// Extra names/IPs for the serving certificate.
    #[arg(long = "san")]
    sans: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KWG_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let mut sans = vec![
        "127.0.0.1".to_string(),
        "localhost".into(),
        "kubernetes.default.svc".into(),
    ];
    sans.push(args.listen.ip().to_string());
    sans.extend(args.sans);
    sans.dedup();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let cfg = Config {
        service_cidr: args.service_cidr,
        service_cidr_secondary: args.service_cidr_secondary,
        cert_sans: sans,
        state_dir: args.state_dir.clone(),
    };
    let server = ApiServer::serve(cfg, listener).await?;
    let url = format!("https://{addr}");
    let admin = server.add_user("admin", &["system:masters"]);
    server.write_kubeconfig(
        &args.state_dir.join("admin.kubeconfig"),
        &url,
        "admin",
        &admin,
        "default",
    )?;
    let developer = server.add_user("developer", &["kwg:users"]);
    server
        .create_object(serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "kwg-users-view"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "kwg:users"}],
        }))
        .map_err(|e| anyhow::anyhow!(e.message))?;
    server.write_kubeconfig(
        &args.state_dir.join("developer.kubeconfig"),
        &url,
        "developer",
        &developer,
        "default",
    )?;
    tracing::info!(%url, state_dir = %args.state_dir.display(), "serving; kubeconfigs written");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    server.shutdown().await;
    Ok(())
}
