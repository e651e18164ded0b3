//! The contract between the gateway and every client (see `docs/contract.md`): WireGuard
//! keys, names of Kubernetes objects, the peer Secret format, the gateway info JSON, the
//! `/peers` JSON of the gateway's admin port and the `kwg status -o json` document. Parsing takes plain maps (a Secret's `data`,
//! its labels and annotations), so this crate does not depend on k8s-openapi.

mod error;
mod info;
mod ipv6;
pub mod keys;
mod peer;
mod status;
mod types;

pub use error::ContractError;
pub use info::{Endpoint, GatewayInfo, GatewayPeer, PublishedVersions, UdpReceive};
pub use ipv6::{
    DEFAULT_TUNNEL_CIDR6, GATEWAY_INFO6_KEY, GatewayInfo6, TUNNEL_PREFIX6_LEN, check_tunnel_cidr6,
    tunnel_ip6_of,
};
pub use peer::{PeerSpec, format_lease, parse_lease};
pub use status::LeaseStatus;
pub use status::{ConnectionState, HealthIssue, HealthKind};
pub use status::{DnsStatus, PlannedRoute, ReachStatus, RefusedDestination, RouteSource, Status};
pub use status::{PathFailure, RefusedInfo, TransportStatus};
pub use types::{PeerName, TunnelIp};

use std::collections::BTreeMap;

/// Default namespace of what clients and the gateway share: peer Secrets and the gateway
/// info ConfigMap (`--kwg-namespace` / `KWG_NAMESPACE`). kwg users write Secrets here.
pub const DEFAULT_NAMESPACE: &str = "kwg-system";
/// Default namespace the gateway runs in: its ServiceAccount, Deployment, Service, leader
/// Lease and private key Secret. Kept apart from [`DEFAULT_NAMESPACE`] because RBAC cannot
/// deny: kwg users may create Secrets in `kwg-system`, and a token Secret for a
/// ServiceAccount there would hand them its token. kwg users have no write and no Secret
/// rights here (see docs/contract.md, "Trust model").
pub const DEFAULT_GATEWAY_NAMESPACE: &str = "kwg-gateway";
/// The gateway's Deployment (and ServiceAccount), in the gateway namespace.
pub const GATEWAY_DEPLOYMENT: &str = "kwg-gateway";
/// Label selector of the gateway Deployment's pods (manifests/deployment.yaml).
pub const GATEWAY_POD_SELECTOR: &str = "app.kubernetes.io/name=kwg-gateway";

/// Label marking a Secret as a kwg peer, with value [`PEER_LABEL_VALUE`].
pub const PEER_LABEL: &str = "kwg.io/peer";
/// Value of [`PEER_LABEL`].
pub const PEER_LABEL_VALUE: &str = "true";
/// Label selector for peer Secrets.
pub const PEER_SELECTOR: &str = "kwg.io/peer=true";
/// Secret `type` of peer Secrets.
pub const PEER_SECRET_TYPE: &str = "kwg.io/peer";
/// Peer Secrets are named `kwg-peer-<peer name>`.
pub const PEER_SECRET_PREFIX: &str = "kwg-peer-";
/// Annotation the gateway writes with the peer's assigned tunnel address.
pub const TUNNEL_IP_ANNOTATION: &str = "kwg.io/tunnel-ip";
/// Annotation the gateway writes on a malformed peer Secret, with the reason.
pub const ERROR_ANNOTATION: &str = "kwg.io/error";
/// Annotation the client writes with its user's groups, one a line, as the API server gives
/// them (`request.userInfo.groups`, which the admission policy compares it with).
pub const GROUPS_ANNOTATION: &str = "kwg.io/groups";

/// Secret (in the gateway namespace) holding the gateway's private key.
pub const GATEWAY_KEY_SECRET: &str = "kwg-gateway-key";
/// Key of the private key inside [`GATEWAY_KEY_SECRET`].
pub const GATEWAY_KEY_FIELD: &str = "privateKey";
/// ConfigMap with the gateway info, readable by kwg users.
pub const GATEWAY_INFO_CONFIGMAP: &str = "kwg-gateway-info";
/// Key of the JSON document inside [`GATEWAY_INFO_CONFIGMAP`].
pub const GATEWAY_INFO_KEY: &str = "info.json";
/// Service exposing the gateway's WireGuard port (in the gateway namespace).
pub const GATEWAY_SERVICE: &str = "kwg-gateway";

/// The gateway's WireGuard UDP port in its pod (the port `wg-quick` uses by convention).
pub const WIREGUARD_PORT: u16 = 51820;
/// The default NodePort of the `kwg-gateway` Service.
pub const DEFAULT_NODE_PORT: u16 = 31820;
/// The gateway's admin HTTP port (`/healthz`, `/readyz`, `/metrics`, `/peers`).
pub const ADMIN_PORT: u16 = 8080;
/// The tunnel CIDR of an install whose key Secret keeps none (from before a new install
/// picked a random /20 inside 100.64.0.0/10, issue 27; RFC 6598 shared address space, which
/// rarely collides with home, office or cluster networks).
pub const DEFAULT_TUNNEL_CIDR: &str = "100.77.0.0/16";
/// Version of this contract; [`GatewayInfo::version`] must equal it.
pub const PROTOCOL_VERSION: u32 = 1;

/// True when labels mark a Secret as a kwg peer.
pub fn is_peer_secret(labels: &BTreeMap<String, String>) -> bool {
    labels.get(PEER_LABEL).map(String::as_str) == Some(PEER_LABEL_VALUE)
}

/// Labels a client puts on a peer Secret.
pub fn peer_labels() -> BTreeMap<String, String> {
    BTreeMap::from([(PEER_LABEL.to_owned(), PEER_LABEL_VALUE.to_owned())])
}

/// The tunnel IP the gateway assigned, from a peer Secret's annotations.
///
/// `None` while the gateway has not assigned one yet; an error when the annotation holds
/// something that is not an IPv4 address.
pub fn tunnel_ip_from_annotations(
    annotations: &BTreeMap<String, String>,
) -> Option<Result<TunnelIp, ContractError>> {
    annotations.get(TUNNEL_IP_ANNOTATION).map(|v| v.parse())
}

/// The value of [`GROUPS_ANNOTATION`] for these groups; `None` when a group holds a line
/// break (the policy refuses such a list: register without groups).
pub fn groups_annotation(groups: &[String]) -> Option<String> {
    (!groups.iter().any(|g| g.contains('\n'))).then(|| groups.join("\n"))
}

/// The groups [`GROUPS_ANNOTATION`] lists (none when it is absent; empty lines are skipped).
pub fn groups_from_annotations(annotations: &BTreeMap<String, String>) -> Vec<String> {
    annotations
        .get(GROUPS_ANNOTATION)
        .map(|v| {
            v.split('\n')
                .filter(|g| !g.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Entry point for fuzzers: feeds arbitrary bytes to every parser of this module.
///
/// The bytes are read as a peer Secret (`key=value` lines, values may be any bytes), as
/// gateway info JSON, as `/peers` JSON, as a lease and as a tunnel IP. Never panics.
pub fn fuzz_parse(data: &[u8]) {
    let mut map = BTreeMap::new();
    for line in data.split(|b| *b == b'\n') {
        let mut kv = line.splitn(2, |b| *b == b'=');
        let k = String::from_utf8_lossy(kv.next().unwrap_or_default()).into_owned();
        map.insert(k, kv.next().unwrap_or_default().to_vec());
    }
    let name = map
        .get("name")
        .map(|n| format!("{PEER_SECRET_PREFIX}{}", String::from_utf8_lossy(n)))
        .unwrap_or_default();
    if let Ok(spec) = PeerSpec::from_secret_data(&name, &map) {
        let again = PeerSpec::from_secret_data(&spec.secret_name(), &spec.to_secret_data());
        assert_eq!(again.as_ref(), Ok(&spec), "peer spec roundtrip");
    }
    let _ = GatewayInfo::from_json(data);
    let _ = serde_json::from_slice::<Vec<GatewayPeer>>(data);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = parse_lease(s);
        let _ = s.parse::<TunnelIp>();
        let _ = s.parse::<PeerName>();
        let _ = s.parse::<Endpoint>();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn peer_label_detection() {
        assert!(is_peer_secret(&peer_labels()));
        let other = BTreeMap::from([(PEER_LABEL.to_owned(), "false".to_owned())]);
        assert!(!is_peer_secret(&other));
        assert!(!is_peer_secret(&BTreeMap::new()));
    }

    #[test]
    fn tunnel_ip_annotation() {
        let mut a = BTreeMap::new();
        assert!(tunnel_ip_from_annotations(&a).is_none());
        a.insert(TUNNEL_IP_ANNOTATION.to_owned(), "100.77.0.2".to_owned());
        let ip = tunnel_ip_from_annotations(&a).unwrap().unwrap();
        assert_eq!(ip.to_string(), "100.77.0.2");
        a.insert(TUNNEL_IP_ANNOTATION.to_owned(), "nope".to_owned());
        assert!(tunnel_ip_from_annotations(&a).unwrap().is_err());
    }

    #[test]
    fn groups_annotation_round_trips_and_refuses_line_breaks() {
        let groups = vec!["kwg:users".to_owned(), "system:authenticated".to_owned()];
        let v = groups_annotation(&groups).unwrap();
        assert_eq!(v, "kwg:users\nsystem:authenticated");
        let a = BTreeMap::from([(GROUPS_ANNOTATION.to_owned(), v)]);
        assert_eq!(groups_from_annotations(&a), groups);
        assert!(groups_from_annotations(&BTreeMap::new()).is_empty());
        assert_eq!(groups_annotation(&[]).as_deref(), Some(""));
        assert_eq!(groups_annotation(&["a\nb".to_owned()]), None);
    }

    proptest! {
        #[test]
        fn fuzz_entry_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            fuzz_parse(&data);
        }

        #[test]
        fn fuzz_entry_never_panics_on_near_valid(
            name in "[a-z0-9-]{0,70}",
            key in "[A-Za-z0-9+/=]{0,50}",
            lease in "[0-9TZ:.+-]{0,30}",
            extra in proptest::option::of("[a-zA-Z]{1,10}=.{0,20}"),
        ) {
            let mut s = format!("name={name}\npublicKey={key}\nowner=o\nhostname=h\nnamespaces=\nleaseExpires={lease}");
            if let Some(e) = extra { s.push('\n'); s.push_str(&e); }
            fuzz_parse(s.as_bytes());
        }
    }
}
