//! Reach by RBAC as the laptop sees it: what the gateway says it forwards this peer to (its
//! own `/peers` entry, through the tunnel), the warnings of `kwg join` for mapped namespaces
//! the peer cannot reach, and the `Reachable ns` line of `kwg status`.
//!
//! The gateway's answer is the truth: it is what its nftables sets enforce, from a
//! SubjectAccessReview per owner and namespace (`get services`).

use std::net::SocketAddr;
use std::time::Duration;

use kwg_contract::{GatewayPeer, ReachStatus, Status};
use tokio::time::Instant;

/// How often `kwg join` asks again while the gateway has not decided the peer's reach.
const POLL: Duration = Duration::from_millis(200);

/// This peer's reach from the gateway's `/peers/self` (all of `/peers` from a gateway older
/// than that route) (`None`: no answer, or not decided yet).
pub async fn own(admin: SocketAddr, peer: &str) -> Option<ReachStatus> {
    match fetch_own(admin, OWN_WAIT).await {
        Ok(Own::Entry(p)) => p.reach,
        Ok(Own::NoRoute) => {
            peers(admin)
                .await
                .into_iter()
                .find(|g| g.name.as_str() == peer)?
                .reach
        }
        Err(_) => None,
    }
}

/// How long `/peers/self` may take through the tunnel for `kwg join` and `kwg status`.
const OWN_WAIT: Duration = Duration::from_secs(2);

/// The gateway's `/peers` through the tunnel (or the userspace proxy), or why it did not
/// answer within `timeout` (a sentence for `kwg status`'s health line).
pub async fn fetch(admin: SocketAddr, timeout: Duration) -> Result<Vec<GatewayPeer>, String> {
    let (status, body) = get(admin, PEERS, timeout).await?;
    if !status.is_success() {
        return Err(format!("GET http://{admin}{PEERS}: {status}"));
    }
    serde_json::from_slice(&body).map_err(|e| format!("GET http://{admin}{PEERS}: {e}"))
}

/// The gateway's `/peers` through the tunnel; empty when it does not answer within 2 s.
pub async fn peers(admin: SocketAddr) -> Vec<GatewayPeer> {
    fetch(admin, Duration::from_secs(2))
        .await
        .unwrap_or_default()
}

const PEERS: &str = "/peers";
/// This peer's own `/peers` entry alone, told by the tunnel address it asks from.
pub const OWN: &str = "/peers/self";

/// What the gateway's `/peers/self` answered.
#[derive(Debug)]
pub enum Own {
    /// This peer's entry.
    Entry(Box<GatewayPeer>),
    /// A gateway from before `/peers/self` (its router's bare 404): ask `/peers` instead.
    NoRoute,
}

/// This peer's entry from the gateway's `/peers/self` (one entry, not every peer's), or why
/// there is none (the gateway has no active peer at this tunnel address, or no answer).
pub async fn fetch_own(admin: SocketAddr, timeout: Duration) -> Result<Own, String> {
    let (status, body) = get(admin, OWN, timeout).await?;
    own_answer(status, &body).map_err(|e| format!("GET http://{admin}{OWN}: {e}"))
}

/// [`fetch_own`]'s decision on the gateway's answer. A gateway that has the route says why it
/// found no entry in a body starting `not found:`; an older one answers a bare 404.
pub fn own_answer(status: hyper::StatusCode, body: &[u8]) -> Result<Own, String> {
    match status {
        s if s.is_success() => serde_json::from_slice(body)
            .map(|p| Own::Entry(Box::new(p)))
            .map_err(|e| e.to_string()),
        hyper::StatusCode::NOT_FOUND if !body.starts_with(b"not found:") => Ok(Own::NoRoute),
        s => Err(format!("{s}: {}", String::from_utf8_lossy(body).trim())),
    }
}

/// A `GET` of `path` on the gateway's admin address through the tunnel: its status and body.
async fn get(
    admin: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<(hyper::StatusCode, bytes::Bytes), String> {
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
        let req = hyper::Request::get(path)
            .header(hyper::header::HOST, admin.to_string())
            .header(hyper::header::ACCEPT, "application/json")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .map_err(|e| e.to_string())?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("GET http://{admin}{path}: {e}"))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("GET http://{admin}{path}: {e}"))?
            .to_bytes();
        Ok((status, body))
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
    fn peers_self_answers_an_entry_a_reason_or_that_the_gateway_is_older() {
        use hyper::StatusCode;
        let entry = crate::dns::follow::tests::peer("laptop", None);
        let body = serde_json::to_vec(&entry).unwrap();
        match own_answer(StatusCode::OK, &body) {
            Ok(Own::Entry(p)) => assert_eq!(p.name.as_str(), "laptop"),
            other => panic!("{other:?}"),
        }
        // An older gateway: its router's 404 has no body.
        assert!(matches!(
            own_answer(StatusCode::NOT_FOUND, b""),
            Ok(Own::NoRoute)
        ));
        // This gateway has the route but no active peer at this address: no answer, not older.
        let gone = own_answer(
            StatusCode::NOT_FOUND,
            b"not found: no active peer has the tunnel address 100.77.0.9\n",
        )
        .unwrap_err();
        assert!(gone.contains("no active peer"), "{gone}");
        assert!(own_answer(StatusCode::FORBIDDEN, b"forbidden: ...").is_err());
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
        r.last_refused = Some(kwg_contract::RefusedDestination {
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
