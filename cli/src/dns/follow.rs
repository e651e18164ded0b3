//! While joined: keeps the forwarder's split decision and systemd-resolved's routing domains
//! in step with the cluster's namespaces (created and deleted while joined) and with the
//! reach the gateway grants this peer (names of namespaces it cannot reach are NXDOMAIN).
//! [`apply`] decides without I/O; [`run`] asks the API server and the gateway.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use kwg_wg::contract::GatewayPeer;

use super::forwarder::SplitHandle;
use super::resolved::{self, LinkDomain, Resolved};
use super::split::SplitDns;
use crate::cluster::Kube;

/// How often the namespaces and the reach are read again: a namespace created while joined
/// resolves within this long (a user may list namespaces, not watch them).
pub const EVERY: Duration = Duration::from_secs(3);
/// How long the gateway's `/peers` may take through the tunnel.
const GATEWAY_WAIT: Duration = Duration::from_secs(2);

/// What the loop needs.
pub struct Follow {
    pub split: SplitHandle,
    pub kube: Kube,
    /// systemd-resolved and kwg's link index, in mode resolved.
    pub resolved: Option<(Resolved, u32)>,
    /// The gateway's admin address (through the tunnel) and this peer's name.
    pub gateway: Option<(SocketAddr, String)>,
}

/// The split with what was read: `namespaces` (`None`: could not be listed, keep the last
/// list) and the gateway's `/peers` (`None`: no answer, keep the last reach).
pub fn apply(
    split: &mut SplitDns,
    namespaces: Option<BTreeSet<String>>,
    peers: Option<(&[GatewayPeer], &str)>,
) {
    if let Some(n) = namespaces {
        split.cluster_namespaces = n;
    }
    if let Some((peers, me)) = peers {
        split.reachable = peers
            .iter()
            .find(|p| p.name.as_str() == me)
            .and_then(|p| p.reach.as_ref())
            .filter(|r| r.enforced)
            .map(|r| r.namespaces.iter().cloned().collect());
    }
}

/// Runs until the task is aborted (at leave).
pub async fn run(f: Follow) {
    let mut domains: Option<Vec<LinkDomain>> = resolved::split_domains(&f.split.split()).ok();
    loop {
        tokio::time::sleep(EVERY).await;
        // Mapped namespaces are fixed; a user who could not list them at join (none known)
        // cannot now either.
        let current = f.split.split();
        let namespaces = match current.mapped.is_none() && !current.cluster_namespaces.is_empty() {
            true => f.kube.namespaces().await,
            false => None,
        };
        let peers = match &f.gateway {
            Some((admin, _)) => crate::reach::fetch(*admin, GATEWAY_WAIT).await.ok(),
            None => None,
        };
        let me = f.gateway.as_ref().map_or("", |(_, me)| me.as_str());
        let changed = f
            .split
            .update(|s| apply(s, namespaces, peers.as_deref().map(|p| (p, me))));
        let Some((client, ifindex)) = &f.resolved else {
            continue;
        };
        if !changed {
            continue;
        }
        let want = match resolved::split_domains(&f.split.split()) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "cannot compute the link's domains");
                continue;
            }
        };
        if domains.as_ref() == Some(&want) {
            continue;
        }
        match client.set_domains(*ifindex, &want).await {
            Ok(()) => {
                let list: Vec<String> = want.iter().map(ToString::to_string).collect();
                tracing::info!(domains = %list.join(" "), "systemd-resolved's domains follow the cluster's namespaces");
                domains = Some(want);
            }
            Err(e) => tracing::warn!(error = %e, "cannot update systemd-resolved's domains"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kwg_wg::contract::ReachStatus;

    fn split() -> SplitDns {
        SplitDns {
            cluster_domain: "cluster.local".into(),
            namespace: "emojivoto".into(),
            cluster_namespaces: ["emojivoto", "default"].map(String::from).into(),
            mapped: None,
            include_suffixes: vec![],
            exclude_suffixes: vec![".com".into()],
            reverse_subnets: vec![],
            machine_search: vec![],
            reachable: None,
        }
    }

    fn peer(name: &str, reach: Option<ReachStatus>) -> GatewayPeer {
        let mut p: GatewayPeer = serde_json::from_value(serde_json::json!({
            "name": name,
            "publicKey": "p0DgqXpMPbxjtgkBYpjGFK6fJVGdjwi3mv3ZCw5qQV0=",
            "tunnelIp": "100.77.0.2",
            "owner": "developer",
            "namespaces": [],
            "leaseExpires": "2026-01-01T00:00:00Z",
            "endpoint": null,
            "lastHandshake": null,
            "rxBytes": 0,
            "txBytes": 0,
        }))
        .unwrap();
        p.reach = reach;
        p
    }

    fn names(domains: &[LinkDomain]) -> Vec<String> {
        domains.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_namespace_created_while_joined_gets_its_routing_domain_and_a_deleted_one_loses_it() {
        let mut s = split();
        let before = names(&resolved::split_domains(&s).unwrap());
        assert!(before.contains(&"~default".to_string()), "{before:?}");
        apply(
            &mut s,
            Some(["emojivoto", "late"].map(String::from).into()),
            None,
        );
        let after = names(&resolved::split_domains(&s).unwrap());
        assert!(after.contains(&"~late".to_string()), "{after:?}");
        assert!(!after.contains(&"~default".to_string()), "{after:?}");
        // Not allowed to list: the last list stays.
        apply(&mut s, None, None);
        assert!(s.cluster_namespaces.contains("late"));
    }

    #[test]
    fn the_gateways_reach_decides_which_names_are_nxdomain() {
        use crate::dns::split::Decision;
        let mut s = split();
        let reach = ReachStatus {
            enforced: true,
            namespaces: vec!["emojivoto".into()],
            dropped_packets: 0,
            last_refused: None,
        };
        let peers = [peer("other", None), peer("me", Some(reach))];
        apply(&mut s, None, Some((&peers, "me")));
        assert_eq!(s.reachable, Some(["emojivoto".to_string()].into()));
        assert_eq!(s.decide("echo.default.svc.cluster.local"), Decision::Hidden);
        assert_eq!(s.decide("echo.default"), Decision::UpstreamElseHidden);
        assert_eq!(
            s.decide("web-app.emojivoto"),
            Decision::ClusterThenUpstream("web-app.emojivoto.svc.cluster.local".into())
        );
        // --reach=all on the gateway, or not decided yet: nothing hidden.
        let open = ReachStatus {
            enforced: false,
            namespaces: vec![],
            dropped_packets: 0,
            last_refused: None,
        };
        apply(&mut s, None, Some((&[peer("me", Some(open))], "me")));
        assert_eq!(s.reachable, None);
        // No answer from the gateway: the last reach stays.
        s.reachable = Some(BTreeSet::new());
        apply(&mut s, None, None);
        assert_eq!(s.reachable, Some(BTreeSet::new()));
    }
}
