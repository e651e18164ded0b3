//! A `kubectl port-forward` of one pod port with kwg's client or kube-rs's, for
//! scripts/bench-reach.sh: every connection to LISTEN gets its own port-forward.
//!
//!   portforward_proxy kwg|kube-rs 127.0.0.1:15201 NAMESPACE POD PORT   (KUBECONFIG is used)

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Pod;
use tokio::net::{TcpListener, TcpStream};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [which, listen, ns, pod, port] = args.as_slice() else {
        bail!("usage: portforward_proxy kwg|kube-rs LISTEN NAMESPACE POD PORT");
    };
    if which != "kwg" && which != "kube-rs" {
        bail!("the client is kwg or kube-rs, not {which}");
    }
    let port: u16 = port.parse().context("PORT")?;
    // As kwg opens them: the kwg client on kwg's stream client (TCP_NODELAY), kube-rs's on
    // kube-rs's default one.
    let config = kube::Config::infer().await?;
    let client = match which.as_str() {
        "kwg" => kwg::portforward::stream_client(&config)?,
        _ => kube::Client::try_from(config)?,
    };
    let listener = TcpListener::bind(listen.as_str()).await?;
    println!("Forwarding from {listen} -> {port}");
    loop {
        let (tcp, _) = listener.accept().await?;
        let (client, which, ns, pod) = (client.clone(), which.clone(), ns.clone(), pod.clone());
        tokio::spawn(async move {
            if let Err(e) = forward(tcp, client, &which, &ns, &pod, port).await {
                eprintln!("forward: {e:#}");
            }
        });
    }
}

async fn forward(
    mut tcp: TcpStream,
    client: kube::Client,
    which: &str,
    ns: &str,
    pod: &str,
    port: u16,
) -> anyhow::Result<()> {
    tcp.set_nodelay(true)?;
    if which == "kwg" {
        let mut s = kwg::portforward::open(client, ns, pod, port).await?;
        tokio::io::copy_bidirectional(&mut tcp, &mut s).await?;
    } else {
        let pods: kube::Api<Pod> = kube::Api::namespaced(client, ns);
        let mut pf = pods.portforward(pod, &[port]).await?;
        let mut s = pf.take_stream(port).context("kube-rs gave no stream")?;
        tokio::io::copy_bidirectional(&mut tcp, &mut s).await?;
        drop(s);
        pf.join().await.ok();
    }
    Ok(())
}
