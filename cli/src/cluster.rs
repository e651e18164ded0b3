//! The Kubernetes side of kwg: kubeconfig like kubectl, gateway info, the peer Secret.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{
    DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams, Preconditions,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use kwg_contract::{GatewayInfo, PeerSpec};
use kwg_session::lease::{LeaseFailure, renewal_failure};

use crate::error::Error;
use crate::output;

/// A client for the cluster kwg joins, with what `status` shows about it.
#[derive(Clone)]
pub struct Kube {
    pub client: Client,
    /// For port-forward streams: `TCP_NODELAY`, no read timeout
    /// ([`crate::portforward::stream_client`]).
    pub streams: Client,
    pub server: String,
    pub user: String,
    /// The user's groups as the API server gives them (SelfSubjectReview); `None` when it
    /// did not tell. Written into the peer Secret, where the admission policy checks them.
    pub groups: Option<Vec<String>>,
    pub context: Option<String>,
    /// The kubeconfig context's namespace (`default` when unset).
    pub default_namespace: String,
}

/// What a Kubernetes call was doing, for error messages.
pub struct Step<'a> {
    pub verb: &'a str,
    pub resource: &'a str,
    pub namespace: &'a str,
}

impl Kube {
    /// Loads the kubeconfig like kubectl: `--kubeconfig`, else `$KUBECONFIG`, else
    /// `~/.kube/config`; `--context` or the current context. Exec auth plugins work.
    pub async fn connect(kubeconfig: Option<&Path>, context: Option<&str>) -> Result<Kube, Error> {
        let kc = match kubeconfig {
            Some(p) => Kubeconfig::read_from(p),
            None => Kubeconfig::read(),
        }
        .map_err(kubeconfig_error)?;
        let ctx_name = context
            .map(str::to_string)
            .or_else(|| kc.current_context.clone());
        let user = ctx_name
            .as_ref()
            .and_then(|n| kc.contexts.iter().find(|c| &c.name == n))
            .and_then(|c| c.context.as_ref())
            .and_then(|c| c.user.clone())
            .unwrap_or_else(|| "unknown".into());
        let opts = KubeConfigOptions {
            context: context.map(str::to_string),
            ..Default::default()
        };
        let mut config = Config::from_custom_kubeconfig(kc, &opts)
            .await
            .map_err(kubeconfig_error)?;
        config.connect_timeout = Some(Duration::from_secs(5));
        config.read_timeout = Some(Duration::from_secs(15));
        let server = config
            .cluster_url
            .to_string()
            .trim_end_matches('/')
            .to_string();
        let default_namespace = config.default_namespace.clone();
        let streams = crate::portforward::stream_client(&config)
            .map_err(|e| Error::Kubeconfig(e.to_string()))?;
        let client = Client::try_from(config).map_err(|e| Error::Kubeconfig(e.to_string()))?;
        // The name the API server authenticates (what RBAC and the peer-ownership policy
        // see), not the kubeconfig's name for the user entry.
        let (user, groups) = match whoami(&client).await {
            Some((name, groups)) => (name, Some(groups)),
            None => (user, None),
        };
        Ok(Kube {
            client,
            streams,
            server,
            user,
            groups,
            context: ctx_name,
            default_namespace,
        })
    }

    /// Maps a kube error to the sentence a user can act on.
    pub fn error(&self, step: Step<'_>, e: kube::Error) -> Error {
        match &e {
            kube::Error::Api(s) if s.code == 401 => Error::Unauthorized {
                server: self.server.clone(),
                user: self.user.clone(),
            },
            kube::Error::Api(s) if s.is_forbidden() => Error::Forbidden {
                user: self.user.clone(),
                verb: step.verb.into(),
                resource: step.resource.into(),
                namespace: step.namespace.into(),
            },
            kube::Error::Api(_) | kube::Error::SerdeError(_) => Error::Kube {
                step: format!("{} {} in {}", step.verb, step.resource, step.namespace),
                source: Box::new(e),
            },
            _ => Error::ApiUnreachable {
                server: self.server.clone(),
                reason: error_chain(&e),
            },
        }
    }

    /// The gateway's published info (with its IPv6 side, `ipv6.json`, when published);
    /// [`Error::NoGateway`] when it is not installed.
    pub async fn gateway_info(&self, ns: &str) -> Result<GatewayInfo, Error> {
        let data = self.gateway_info_data(ns).await?;
        parse_gateway_info(&data).unwrap_or_else(|| Err(no_gateway(ns)))
    }

    /// The gateway's info document as published, not parsed (`kwg version` reads the
    /// versions of any contract from it); [`Error::NoGateway`] when it is not installed.
    pub async fn gateway_info_json(&self, ns: &str) -> Result<String, Error> {
        self.gateway_info_data(ns)
            .await?
            .remove(kwg_contract::GATEWAY_INFO_KEY)
            .ok_or_else(|| no_gateway(ns))
    }

    /// The data of the gateway info ConfigMap.
    async fn gateway_info_data(&self, ns: &str) -> Result<BTreeMap<String, String>, Error> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), ns);
        let step = || Step {
            verb: "get",
            resource: "configmaps",
            namespace: ns,
        };
        let cm = api
            .get_opt(kwg_contract::GATEWAY_INFO_CONFIGMAP)
            .await
            .map_err(|e| match &e {
                kube::Error::Api(s) if s.is_not_found() => no_gateway(ns),
                _ => self.error(step(), e),
            })?
            .ok_or_else(|| no_gateway(ns))?;
        Ok(cm.data.unwrap_or_default())
    }

    /// Creates the peer Secret, or overwrites this machine's own earlier one (same public key
    /// and owner); returns its uid. A Secret of that name holding another key or owner is
    /// another machine's: [`Error::PeerNameTaken`], and it is left alone.
    pub async fn register_peer(&self, ns: &str, spec: &PeerSpec) -> Result<String, Error> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        let secret = peer_secret(spec, self.groups.as_deref());
        match api.create(&PostParams::default(), &secret).await {
            Ok(created) => Ok(created.metadata.uid.unwrap_or_default()),
            // 409 with reason AlreadyExists (kube's `is_conflict` matches only reason Conflict).
            Err(kube::Error::Api(s)) if s.is_already_exists() || s.is_conflict() => {
                let existing = api
                    .get(&spec.secret_name())
                    .await
                    .map_err(|e| self.secrets_error("get", ns, e))?;
                let field = |k: &str| secret_field(&existing, k);
                let ours = field("publicKey").as_deref()
                    == Some(spec.public_key.to_string().as_str())
                    && field("owner").as_deref() == Some(spec.owner.as_str());
                if !ours {
                    return Err(Error::PeerNameTaken {
                        name: spec.name.to_string(),
                        secret: spec.secret_name(),
                        owner: output::sanitize(&field("owner").unwrap_or_default()),
                        hostname: output::sanitize(&field("hostname").unwrap_or_default()),
                    });
                }
                let patch = serde_json::json!({
                    "data": secret.data,
                    "metadata": { "labels": secret.metadata.labels },
                });
                self.patch_secret(ns, &spec.secret_name(), &patch).await?;
                Ok(existing.metadata.uid.unwrap_or_default())
            }
            Err(e) => Err(self.secrets_error("create", ns, e)),
        }
    }

    /// Watches the peer Secret until the gateway wrote its tunnel IP (in `within`, when
    /// given: an address the gateway before wrote does not count) or an error annotation.
    /// No timeout of its own: the session's deadline (or its lease renewal) cancels it.
    pub async fn wait_tunnel_ip(
        &self,
        ns: &str,
        secret: &str,
        within: Option<ipnet::Ipv4Net>,
    ) -> Result<Ipv4Addr, Error> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        let wanted = |v: &String| {
            v.parse::<Ipv4Addr>()
                .is_ok_and(|ip| within.is_none_or(|c| c.contains(&ip)))
        };
        let decided = |s: Option<&Secret>| {
            let a = s.and_then(|s| s.metadata.annotations.as_ref());
            a.is_some_and(|a| {
                a.contains_key(kwg_contract::ERROR_ANNOTATION)
                    || a.get(kwg_contract::TUNNEL_IP_ANNOTATION)
                        .is_some_and(wanted)
            })
        };
        let secret_obj = kube::runtime::wait::await_condition(api, secret, decided)
            .await
            .map_err(|kube::runtime::wait::Error::ProbeFailed(e)| {
                use kube::runtime::watcher::Error as W;
                match e {
                    W::InitialListFailed(e) | W::WatchStartFailed(e) | W::WatchFailed(e) => {
                        self.secrets_error("watch", ns, e)
                    }
                    other => Error::ApiUnreachable {
                        server: self.server.clone(),
                        reason: other.to_string(),
                    },
                }
            })?;
        let annotations = secret_obj
            .and_then(|s| s.metadata.annotations)
            .unwrap_or_default();
        if let Some(ip) = annotations
            .get(kwg_contract::TUNNEL_IP_ANNOTATION)
            .filter(|v| wanted(v))
            .and_then(|v| v.parse().ok())
        {
            return Ok(ip);
        }
        Err(kwg_session::Error::NoTunnelIp {
            peer: secret.to_string(),
            secs: 0,
            detail: format!(
                " (the gateway rejected the Secret: {})",
                crate::output::sanitize(
                    annotations
                        .get(kwg_contract::ERROR_ANNOTATION)
                        .map_or("", |s| s.as_str())
                )
            ),
        }
        .into())
    }

    /// Moves the lease to `expires`; with `uid`, only on that very object (a Secret of the
    /// same name with another uid is refused, not extended).
    pub async fn renew_lease(
        &self,
        ns: &str,
        secret: &str,
        uid: Option<&str>,
        expires: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), LeaseFailure<Error>> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        let patch = lease_patch(uid, expires);
        api.patch(secret, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(drop)
            .map_err(|e| {
                let (code, message) = match &e {
                    kube::Error::Api(s) => (Some(s.code), s.message.clone()),
                    _ => (None, String::new()),
                };
                let e = self.secrets_error("patch", ns, e);
                renewal_failure(code, &message, e)
            })
    }

    async fn patch_secret(
        &self,
        ns: &str,
        name: &str,
        patch: &serde_json::Value,
    ) -> Result<(), Error> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map(drop)
            .map_err(|e| self.secrets_error("patch", ns, e))
    }

    pub fn secrets_error(&self, verb: &str, ns: &str, e: kube::Error) -> Error {
        let step = Step {
            verb,
            resource: "secrets",
            namespace: ns,
        };
        self.error(step, e)
    }

    /// Deletes the peer Secret only if it is this join's own: the object of `uid`, or (before
    /// the uid was recorded) the Secret holding `public_key`, deleted with its uid as
    /// precondition so a Secret replaced meanwhile survives. `Ok(false)` when it is gone or
    /// not ours.
    pub async fn delete_own_peer(
        &self,
        ns: &str,
        secret: &str,
        uid: Option<&str>,
        public_key: Option<&str>,
    ) -> Result<bool, Error> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        let uid = match (uid, public_key) {
            (Some(uid), _) => uid.to_string(),
            (None, Some(key)) => {
                let existing = match api.get_opt(secret).await {
                    Ok(Some(s)) => s,
                    Ok(None) => return Ok(false),
                    Err(e) => return Err(self.secrets_error("get", ns, e)),
                };
                if secret_field(&existing, "publicKey").as_deref() != Some(key) {
                    tracing::info!(
                        secret,
                        "the peer Secret holds another machine's key: not deleting it"
                    );
                    return Ok(false);
                }
                existing.metadata.uid.unwrap_or_default()
            }
            (None, None) => return Ok(false),
        };
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(secret, &params).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.is_not_found() => Ok(false),
            // The precondition failed: another Secret of that name now, not ours.
            Err(kube::Error::Api(s)) if s.code == 409 => {
                tracing::info!(
                    secret,
                    "the peer Secret was replaced by another one: not deleting it"
                );
                Ok(false)
            }
            Err(e) => Err(self.secrets_error("delete", ns, e)),
        }
    }

    /// Every peer Secret: parsed spec (or the reason it is malformed), tunnel IP, error.
    pub async fn list_peers(&self, ns: &str) -> Result<Vec<ListedPeer>, Error> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        let list = api
            .list(&ListParams::default().labels(kwg_contract::PEER_SELECTOR))
            .await
            .map_err(|e| self.secrets_error("list", ns, e))?;
        Ok(list
            .items
            .into_iter()
            .filter_map(|s| {
                let name = s.metadata.name.clone()?;
                let data: BTreeMap<String, Vec<u8>> = s
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect();
                let annotations = s.metadata.annotations.unwrap_or_default();
                Some(ListedPeer {
                    spec: PeerSpec::from_secret_data(&name, &data).map_err(|e| e.to_string()),
                    secret: name,
                    tunnel_ip: annotations.get(kwg_contract::TUNNEL_IP_ANNOTATION).cloned(),
                    error: annotations.get(kwg_contract::ERROR_ANNOTATION).cloned(),
                })
            })
            .collect())
    }

    /// The cluster's namespaces; `None` when the user may not list them (names are then
    /// only resolved for the connected and mapped namespaces).
    pub async fn namespaces(&self) -> Option<BTreeSet<String>> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        match api.list_metadata(&ListParams::default()).await {
            Ok(l) => Some(
                l.items
                    .into_iter()
                    .filter_map(|n| n.metadata.name)
                    .collect(),
            ),
            Err(e) => {
                tracing::info!(error = %e, "cannot list namespaces; only the connected and mapped namespaces resolve as <svc>.<ns>");
                None
            }
        }
    }

    /// The gateway Deployment's (ready, desired, existing) pods, in the gateway's namespace
    /// `ns`; `None` when it cannot be read (not allowed, or not installed as a Deployment of
    /// that name).
    pub async fn gateway_pods(&self, ns: &str) -> Option<(i32, i32, i32)> {
        let api: Api<k8s_openapi::api::apps::v1::Deployment> =
            Api::namespaced(self.client.clone(), ns);
        let d = api.get_opt(kwg_contract::GATEWAY_DEPLOYMENT).await.ok()??;
        let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let status = d.status.unwrap_or_default();
        Some((
            status.ready_replicas.unwrap_or(0),
            desired,
            status.replicas.unwrap_or(0),
        ))
    }
}

/// A peer Secret as listed.
pub struct ListedPeer {
    pub secret: String,
    pub spec: Result<PeerSpec, String>,
    pub tunnel_ip: Option<String>,
    pub error: Option<String>,
}

/// `kubectl auth whoami`: the user name and groups the API server authenticates (a
/// SelfSubjectReview).
async fn whoami(client: &Client) -> Option<(String, Vec<String>)> {
    use k8s_openapi::api::authentication::v1::SelfSubjectReview;
    let api: Api<SelfSubjectReview> = Api::all(client.clone());
    let review = api
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .map_err(|e| tracing::debug!(error = %e, "SelfSubjectReview failed; using the kubeconfig's user name"))
        .ok()?;
    let info = review.status?.user_info?;
    Some((info.username?, info.groups.unwrap_or_default()))
}

/// The kubeconfig loader's errors as our sentences.
fn kubeconfig_error(e: kube::config::KubeconfigError) -> Error {
    use kube::config::KubeconfigError as K;
    match e {
        K::ReadConfig(source, path) => Error::KubeconfigRead { path, source },
        K::FindPath => Error::NoKubeconfig,
        K::CurrentContextNotSet => Error::NoContext,
        K::LoadContext(name) => Error::NoSuchContext(name),
        e => Error::Kubeconfig(error_chain(&e)),
    }
}

/// A field of a Secret's `data`, trimmed.
fn secret_field(s: &Secret, key: &str) -> Option<String> {
    s.data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|v| String::from_utf8_lossy(&v.0).trim().to_string())
}

/// The gateway info of the `kwg-gateway-info` ConfigMap's data: `info.json`, with the IPv6
/// side of a dual-stack (or IPv6-only) cluster from `ipv6.json` next to it
/// (`GatewayInfo::ipv6`); `None` without `info.json`. An invalid `ipv6.json` fails the
/// whole, as an invalid `info.json` does: half a cluster's ranges would route the rest
/// nowhere without a word.
pub fn parse_gateway_info(data: &BTreeMap<String, String>) -> Option<Result<GatewayInfo, Error>> {
    let json = data.get(kwg_contract::GATEWAY_INFO_KEY)?;
    let parse = || -> Result<GatewayInfo, Error> {
        let info6 = data
            .get(kwg_contract::GATEWAY_INFO6_KEY)
            .map(|j| kwg_contract::GatewayInfo6::from_json(j.as_bytes()))
            .transpose()?;
        Ok(GatewayInfo::from_json_with6(json.as_bytes(), info6)?)
    };
    Some(parse())
}

fn no_gateway(ns: &str) -> Error {
    Error::NoGateway {
        namespace: ns.to_string(),
        configmap: kwg_contract::GATEWAY_INFO_CONFIGMAP.to_string(),
    }
}

/// The peer Secret; with the user's groups in `kwg.io/groups` when the server told them and
/// none holds a line break (the policy refuses such a list; without it the gateway counts no
/// group of the owner).
/// The merge patch that moves a peer Secret's lease to `expires`; with `uid`, the uid too,
/// which the API server refuses on another object of that name (uid is immutable).
fn lease_patch(uid: Option<&str>, expires: chrono::DateTime<chrono::Utc>) -> serde_json::Value {
    let mut patch = serde_json::json!({
        "stringData": { "leaseExpires": kwg_contract::format_lease(expires) },
    });
    if let Some(uid) = uid {
        patch["metadata"] = serde_json::json!({ "uid": uid });
    }
    patch
}

fn peer_secret(spec: &PeerSpec, groups: Option<&[String]>) -> Secret {
    let annotations = groups
        .and_then(kwg_contract::groups_annotation)
        .map(|v| [(kwg_contract::GROUPS_ANNOTATION.to_owned(), v)].into());
    Secret {
        metadata: ObjectMeta {
            name: Some(spec.secret_name()),
            labels: Some(kwg_contract::peer_labels()),
            annotations,
            ..Default::default()
        },
        type_: Some(kwg_contract::PEER_SECRET_TYPE.to_string()),
        data: Some(
            spec.to_secret_data()
                .into_iter()
                .map(|(k, v)| (k, ByteString(v)))
                .collect(),
        ),
        ..Default::default()
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateway_info_carries_ipv6_json_when_published_and_a_bad_one_fails_the_whole() {
        let key = kwg_contract::keys::PrivateKey::generate().public_key();
        let info = format!(
            r#"{{"version":1,"publicKey":"{key}","endpoints":["192.0.2.1:31820"],"tunnelCidr":"100.77.0.0/16",
"gatewayIp":"100.77.0.1","serviceCidrs":["10.96.0.0/12"],"podCidrs":["10.244.0.0/16"],"dnsIp":"10.96.0.10",
"clusterDomain":"cluster.local","adminPort":8080}}"#
        );
        let six = r#"{"tunnelCidr":"fd6b:7767::/96","serviceCidrs":["fd00:10:96::/112"],"podCidrs":["fd00:10:244::/64"]}"#;
        let data = |with6: Option<&str>| {
            let mut d =
                BTreeMap::from([(kwg_contract::GATEWAY_INFO_KEY.to_string(), info.clone())]);
            if let Some(j) = with6 {
                d.insert(kwg_contract::GATEWAY_INFO6_KEY.to_string(), j.to_string());
            }
            d
        };
        assert!(parse_gateway_info(&BTreeMap::new()).is_none());
        let v4 = parse_gateway_info(&data(None)).unwrap().unwrap();
        assert_eq!(v4.ipv6, None);
        let dual = parse_gateway_info(&data(Some(six))).unwrap().unwrap();
        let got = dual.ipv6.expect("ipv6.json kept");
        assert_eq!(got.service_cidrs, ["fd00:10:96::/112".parse().unwrap()]);
        let bad = six.replace("/96", "/64");
        let e = parse_gateway_info(&data(Some(&bad))).unwrap().unwrap_err();
        assert!(e.to_string().contains("ipv6.json"), "{e}");
    }

    #[test]
    fn a_renewal_names_the_journalled_uid_and_only_then() {
        let at = kwg_contract::parse_lease("2030-01-01T00:00:00Z").unwrap();
        let lease = serde_json::json!({ "leaseExpires": kwg_contract::format_lease(at) });
        assert_eq!(
            lease_patch(Some("3f1c"), at),
            serde_json::json!({ "stringData": lease, "metadata": { "uid": "3f1c" } })
        );
        assert_eq!(
            lease_patch(None, at),
            serde_json::json!({ "stringData": lease })
        );
    }

    #[test]
    fn the_peer_secret_names_the_users_groups_when_known() {
        let spec = PeerSpec {
            name: "box".parse().unwrap(),
            public_key: kwg_contract::keys::PrivateKey::generate().public_key(),
            owner: "dev".into(),
            hostname: "box".into(),
            namespaces: vec![],
            lease_expires: kwg_contract::parse_lease("2030-01-01T00:00:00Z").unwrap(),
        };
        let groups = |g: Option<&[String]>| peer_secret(&spec, g).metadata.annotations;
        let two = ["kwg:users".to_owned(), "system:authenticated".to_owned()];
        assert_eq!(
            groups(Some(&two)).unwrap()[kwg_contract::GROUPS_ANNOTATION],
            "kwg:users\nsystem:authenticated"
        );
        assert_eq!(groups(None), None);
        assert_eq!(groups(Some(&["a\nb".to_owned()])), None);
    }
}
