//! Reach by RBAC as the laptop sees it: what the gateway says it forwards this peer to (its
//! own `/peers` entry, through the tunnel), the warnings of `kwg join` for mapped namespaces
//! the peer cannot reach, and the `Reachable ns` line of `kwg status`.
//!
//! The gateway's answer is the truth: it is what its nftables sets enforce, from a
//! SubjectAccessReview per owner and namespace (`get services`).

use std::net::SocketAddr;
use std::time::Duration;

use kwg_wg::contract::{GatewayPeer, ReachStatus, Status};
use tokio::time::Instant;

/// How often `kwg join` asks again while the gateway has not decided the peer's reach.
const POLL: Duration = Duration::from_millis(200);

/// This peer's reach from the gateway's `/peers` (`None`: no answer, or not decided yet).
pub async fn own(admin: SocketAddr, peer: &str) -> Option<ReachStatus> {
    crate::commands::gateway_peers(admin)
        .await
        .into_iter()
        .find(|g| g.name.as_str() == peer)?
        .reach
}

/// The gateway's `/peers` through the tunnel (or the userspace proxy), or why it did not
/// answer within `timeout` (a sentence for `kwg status`'s health line).
pub async fn fetch(admin: SocketAddr, timeout: Duration) -> Result<Vec<GatewayPeer>, String> {
    use http_body_util::BodyExt;
    let fetch = async {
        let tcp = crate::userspace::client::dial_cluster(admin)
            .await
            .map_err(|e| format!("cannot connect to its admin address {admin}: {e}"))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .map_err(|e| format!("{admin}: {e}"))?;
        tokio::spawn(conn);
        let req = hyper::Request::get("/peers")
            .header(hyper::header::HOST, admin.to_string())
            .header(hyper::header::ACCEPT, "application/json")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .map_err(|e| e.to_string())?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("GET http://{admin}/peers: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("GET http://{admin}/peers: {}", resp.status()));
        }
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("GET http://{admin}/peers: {e}"))?
            .to_bytes();
        serde_json::from_slice(&body).map_err(|e| format!("GET http://{admin}/peers: {e}"))
    };
    match tokio::time::timeout(timeout, fetch).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "no answer from {admin} within {} ms",
            timeout.as_millis()
        )),
    }
}

/// [`own`], asked again until the gateway has decided or `deadline` passes.
pub async fn wait_own(admin: SocketAddr, peer: &str, deadline: Instant) -> Option<ReachStatus> {
    loop {
        let r = own(admin, peer).await;
        if r.is_some() || Instant::now() + POLL > deadline {
            return r;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The namespaces a user means to reach: the mapped ones, else the join's namespace.
fn wanted(s: &Status) -> Vec<String> {
    match &s.mapped_namespaces {
        Some(m) if !m.is_empty() => m.clone(),
        _ if s.namespace.is_empty() => Vec::new(),
        _ => vec![s.namespace.clone()],
    }
}

/// What `kwg join` tells the user about namespaces the gateway will not forward to.
pub fn warnings(s: &Status, reach: &ReachStatus) -> Vec<String> {
    let mut out: Vec<String> = reach
        .unreachable(&wanted(s))
        .map(|ns| {
            format!(
                "Namespace {ns} is not reachable: the gateway forwards only to namespaces whose \
                 Services {} may get. Ask an admin for a RoleBinding there (e.g. `kubectl -n {ns} \
                 create rolebinding {}-view --clusterrole=view --user={}`); it takes effect within \
                 a minute, without joining again.",
                s.user, s.peer, s.user
            )
        })
        .collect();
    if reach.enforced && reach.namespaces.is_empty() && out.is_empty() {
        out.push(format!(
            "No namespace is reachable: {} may get Services in none of the mapped namespaces \
             (only cluster DNS answers).",
            s.user
        ));
    }
    out
}

/// The `Reachable ns` value of `kwg status`.
pub fn text(reach: Option<&ReachStatus>) -> String {
    match reach {
        None => "unknown (the gateway did not say; is the tunnel up?)".into(),
        Some(r) if !r.enforced => "all (the gateway does not restrict by RBAC)".into(),
        Some(r) => {
            let ns = if r.namespaces.is_empty() {
                "none".to_owned()
            } else {
                r.namespaces.join(",")
            };
            format!("{ns} ({} packets dropped)", r.dropped_packets)
        }
    }
}

/// The `Last refused` value of `kwg status`: the destination the gateway last refused and the
/// RoleBinding that would allow it (`None`: nothing refused, or the gateway did not say).
pub fn refused_text(reach: Option<&ReachStatus>) -> Option<String> {
    let r = reach?.last_refused.as_ref()?;
    let why = if r.namespaces.is_empty() {
        "no pod or Service of the cluster reachable by peers".to_owned()
    } else if r.allow.is_empty() {
        format!(
            "{}: not among the mapped namespaces",
            r.namespaces.join(",")
        )
    } else {
        format!(
            "{}; allowed by: {}",
            r.namespaces.join(","),
            r.allow.join(" && ")
        )
    };
    Some(format!("{} ({why})", r.address))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reach(ns: &[&str]) -> ReachStatus {
        ReachStatus {
            enforced: true,
            namespaces: ns.iter().map(|s| s.to_string()).collect(),
            dropped_packets: 4,
            last_refused: None,
        }
    }

    #[test]
    fn join_warns_for_each_mapped_namespace_the_gateway_will_not_forward() {
        let mut s = Status::example();
        s.mapped_namespaces = Some(vec!["emojivoto".into(), "default".into()]);
        let w = warnings(&s, &reach(&["emojivoto"]));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("Namespace default is not reachable"),
            "{}",
            w[0]
        );
        assert!(w[0].contains(
            "kubectl -n default create rolebinding laptop-view --clusterrole=view --user=developer"
        ));
        assert!(warnings(&s, &reach(&["default", "emojivoto"])).is_empty());
        // Nothing mapped: the join's namespace is the one that matters.
        s.mapped_namespaces = None;
        assert!(warnings(&s, &reach(&["emojivoto"])).is_empty());
        let w = warnings(&s, &reach(&["default"]));
        assert!(
            w[0].starts_with("Namespace emojivoto is not reachable"),
            "{w:?}"
        );
        // --reach=all on the gateway: nothing to warn about.
        let open = ReachStatus {
            enforced: false,
            namespaces: vec![],
            dropped_packets: 0,
            last_refused: None,
        };
        assert!(warnings(&s, &open).is_empty());
    }

    #[test]
    fn status_line() {
        assert_eq!(text(Some(&reach(&["a", "b"]))), "a,b (4 packets dropped)");
        assert_eq!(text(Some(&reach(&[]))), "none (4 packets dropped)");
        assert!(text(None).starts_with("unknown"));
        let open = ReachStatus {
            enforced: false,
            namespaces: vec![],
            dropped_packets: 0,
            last_refused: None,
        };
        assert!(text(Some(&open)).starts_with("all"));
    }

    #[test]
    fn last_refused_line_names_the_rolebinding() {
        let mut r = reach(&["emojivoto"]);
        assert_eq!(refused_text(Some(&r)), None);
        let allow = "kubectl -n kube-system create rolebinding kwg-reach-developer --clusterrole=view --user=developer";
        r.last_refused = Some(kwg_wg::contract::RefusedDestination {
            address: "10.96.0.10".parse().unwrap(),
            namespaces: vec!["kube-system".into()],
            allow: vec![allow.into()],
        });
        assert_eq!(
            refused_text(Some(&r)).unwrap(),
            format!("10.96.0.10 (kube-system; allowed by: {allow})")
        );
        r.last_refused.as_mut().unwrap().namespaces.clear();
        assert!(
            refused_text(Some(&r))
                .unwrap()
                .contains("no pod or Service")
        );
    }
}
