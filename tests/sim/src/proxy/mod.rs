//! The kube-proxy role: Services and EndpointSlices programmed as an nftables table in the node.

pub mod conntrack;
pub mod render;

use crate::net::ClusterNet;
use crate::watch::{snapshot, store};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use std::sync::Arc;
use tokio::sync::Notify;

/// The nftables table kube-proxy owns in the node namespace.
pub const TABLE: &str = "kube-proxy";

/// Reconciles forever; the calling process must be in the node namespace.
pub async fn run(client: Client, net: ClusterNet) -> crate::Result<()> {
    let wake = Arc::new(Notify::new());
    let services = store::<Service>(client.clone(), wake.clone()).await;
    let slices = store::<EndpointSlice>(client, wake.clone()).await;
    let mut last = String::new();
    loop {
        let rules = render::plan(&snapshot(&services), &snapshot(&slices));
        // An IPv6-only cluster's kube-proxy programs IPv6 alone (`--cluster-cidr` of one family).
        let mut text = if net.ipv6_only() {
            String::new()
        } else {
            render::render(TABLE, net.node_ip(), net.pod_cidr, &rules)
        };
        if let Some(node6) = net.node_ip6() {
            text.push_str(&render::render(TABLE, node6, net.pod_cidr6, &rules));
        }
        if text != last {
            match crate::sh::run_stdin("nft", &["-f", "-"], Some(&text)) {
                Ok(_) => {
                    let eps: usize = rules.iter().map(|r| r.endpoints.len()).sum();
                    tracing::info!(
                        ports = rules.len(),
                        endpoints = eps,
                        "kube-proxy programmed nftables"
                    );
                    last = text;
                    forget_stale_udp_flows(&rules, &net);
                }
                Err(e) => tracing::error!(error = %e, "kube-proxy could not program nftables"),
            }
        }
        wake.notified().await;
        // Let a burst of changes settle into one ruleset.
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Deletes UDP conntrack entries DNATed to addresses that are no longer UDP endpoints.
fn forget_stale_udp_flows(rules: &[render::PortRule], net: &ClusterNet) {
    let live = rules
        .iter()
        .filter(|r| r.proto == "udp")
        .flat_map(|r| r.endpoints.iter().map(|(ip, _)| *ip))
        .collect();
    let Ok(text) = std::fs::read_to_string("/proc/net/nf_conntrack") else {
        return;
    };
    let mut pods = vec![ipnet::IpNet::from(net.pod_cidr)];
    pods.extend(net.has_ipv6().then(|| ipnet::IpNet::from(net.pod_cidr6)));
    let stale = conntrack::stale_udp_flows(&text, &pods, &live);
    match conntrack::delete(&stale) {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            flows = n,
            "kube-proxy deleted UDP flows to removed endpoints"
        ),
        Err(e) => {
            tracing::warn!(error = %e, "kube-proxy cannot delete stale UDP conntrack entries")
        }
    }
}
