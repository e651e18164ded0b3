//! The gateway's Kubernetes edge: the private key Secret, the info ConfigMap, peer Secret
//! annotations, deletions and Events.

use crate::GatewayError;
use crate::core::Problem;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Secret};
use kube::Resource;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::WatchStreamExt;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kwg_contract::GatewayInfo;
use kwg_contract::keys::PrivateKey;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::hash::Hash;

/// The component name in Events and field managers.
pub const COMPONENT: &str = "kwg-gateway";

/// Field of the key Secret that keeps the tunnel CIDR a new install picked (issue 27).
pub const TUNNEL_CIDR_FIELD: &str = "tunnelCidr";

/// The gateway's private key and the tunnel CIDR kept with it: read from its Secret, or
/// generated and stored on first start with `new_cidr` (the replica that wins the create
/// decides for all). A Secret from before tunnel CIDRs were kept gives `None`.
pub async fn ensure_private_key(
    client: &kube::Client,
    namespace: &str,
    new_cidr: ipnet::Ipv4Net,
) -> Result<(PrivateKey, Option<ipnet::Ipv4Net>), GatewayError> {
    let api = Api::<Secret>::namespaced(client.clone(), namespace);
    let what = format!(
        "read Secret {namespace}/{}",
        kwg_contract::GATEWAY_KEY_SECRET
    );
    for _ in 0..3 {
        if let Some(secret) = api
            .get_opt(kwg_contract::GATEWAY_KEY_SECRET)
            .await
            .map_err(GatewayError::kube(&what))?
        {
            let bad = || {
                GatewayError::BadPrivateKey(format!(
                    "{namespace}/{}",
                    kwg_contract::GATEWAY_KEY_SECRET
                ))
            };
            let bytes = secret
                .data
                .as_ref()
                .and_then(|d| d.get(kwg_contract::GATEWAY_KEY_FIELD))
                .ok_or_else(bad)?;
            let text = std::str::from_utf8(&bytes.0).map_err(|_| bad())?;
            let key: PrivateKey = text.parse().map_err(|_| bad())?;
            let cidr = match secret.data.as_ref().and_then(|d| d.get(TUNNEL_CIDR_FIELD)) {
                None => None,
                Some(b) => Some(
                    std::str::from_utf8(&b.0)
                        .ok()
                        .and_then(|t| t.trim().parse().ok())
                        .ok_or_else(bad)?,
                ),
            };
            tracing::info!(key = %key.public_key().short(), "using the stored gateway key");
            return Ok((key, cidr));
        }
        let key = PrivateKey::generate();
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(kwg_contract::GATEWAY_KEY_SECRET.into()),
                ..Default::default()
            },
            type_: Some("Opaque".into()),
            data: Some(BTreeMap::from([
                (
                    kwg_contract::GATEWAY_KEY_FIELD.to_owned(),
                    ByteString(key.to_string().into_bytes()),
                ),
                (
                    TUNNEL_CIDR_FIELD.to_owned(),
                    ByteString(new_cidr.to_string().into_bytes()),
                ),
            ])),
            ..Default::default()
        };
        match api.create(&PostParams::default(), &secret).await {
            Ok(_) => {
                tracing::info!(key = %key.public_key().short(), tunnel_cidr = %new_cidr, "generated and stored a new gateway key and tunnel CIDR");
                return Ok((key, Some(new_cidr)));
            }
            // Another replica won the race: read its key.
            Err(kube::Error::Api(s)) if s.is_already_exists() => continue,
            Err(e) => {
                return Err(GatewayError::kube(format!(
                    "create Secret {namespace}/{}",
                    kwg_contract::GATEWAY_KEY_SECRET
                ))(e));
            }
        }
    }
    Err(GatewayError::BadPrivateKey(format!(
        "{namespace}/{} (created and deleted repeatedly)",
        kwg_contract::GATEWAY_KEY_SECRET
    )))
}

/// Creates or updates the gateway info ConfigMap: `info.json`, and `ipv6.json` from
/// `info.ipv6` (removed when `None`) in the same write, so a client never reads an IPv6-only
/// cluster's `info.json` (no IPv4 range) without its `ipv6.json`.
pub async fn publish_info(
    client: &kube::Client,
    namespace: &str,
    info: &GatewayInfo,
) -> Result<(), GatewayError> {
    let config = |e: kwg_contract::ContractError| GatewayError::Config(e.to_string());
    let json = info.to_json().map_err(config)?;
    let info6 = info.ipv6.as_ref();
    let json6 = info6
        .map(kwg_contract::GatewayInfo6::to_json)
        .transpose()
        .map_err(config)?;
    let api = Api::<ConfigMap>::namespaced(client.clone(), namespace);
    let mut data = BTreeMap::from([(kwg_contract::GATEWAY_INFO_KEY.to_owned(), json)]);
    if let Some(json6) = json6 {
        data.insert(kwg_contract::GATEWAY_INFO6_KEY.to_owned(), json6);
    }
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(kwg_contract::GATEWAY_INFO_CONFIGMAP.into()),
            ..Default::default()
        },
        data: Some(data.clone()),
        ..Default::default()
    };
    let what = format!(
        "publish ConfigMap {namespace}/{}",
        kwg_contract::GATEWAY_INFO_CONFIGMAP
    );
    match api.create(&PostParams::default(), &cm).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_already_exists() => {
            let mut patch = serde_json::json!({ "data": data });
            if info6.is_none() {
                // No IPv6 any more: a merge patch's null removes `ipv6.json`.
                patch["data"][kwg_contract::GATEWAY_INFO6_KEY] = serde_json::Value::Null;
            }
            api.patch(
                kwg_contract::GATEWAY_INFO_CONFIGMAP,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .map(|_| ())
            .map_err(GatewayError::kube(what))
        }
        Err(e) => Err(GatewayError::kube(what)(e)),
    }
}

/// Merge-patches a peer Secret's annotations, retrying conflicts.
pub async fn patch_secret(
    api: &Api<Secret>,
    name: &str,
    patch: &serde_json::Value,
) -> Result<(), GatewayError> {
    let mut attempt = 0;
    loop {
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.is_conflict() && attempt < 5 => attempt += 1,
            // Deleted meanwhile: nothing to annotate.
            Err(kube::Error::Api(s)) if s.is_not_found() => return Ok(()),
            Err(e) => return Err(GatewayError::kube(format!("annotate Secret {name}"))(e)),
        }
    }
}

/// Merge-patches a peer Secret at `resource_version` (optimistic concurrency: the tunnel IP
/// is decided from that version). A 409 means the Secret changed meanwhile: nothing is
/// retried here, its watch event brings the new version and a new decision.
pub async fn patch_secret_at(
    api: &Api<Secret>,
    name: &str,
    resource_version: Option<String>,
    mut patch: serde_json::Value,
) -> Result<(), GatewayError> {
    if let Some(rv) = resource_version {
        patch["metadata"]["resourceVersion"] = rv.into();
    }
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_conflict() => {
            tracing::debug!(secret = %name, "changed meanwhile: deciding again from the new version");
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
        Err(e) => Err(GatewayError::kube(format!("annotate Secret {name}"))(e)),
    }
}

/// Deletes a peer Secret whose lease ended, only if it is still the version that was read
/// (a client renewing at the same moment wins).
pub async fn delete_expired(
    api: &Api<Secret>,
    name: &str,
    resource_version: Option<String>,
) -> Result<(), GatewayError> {
    let dp = DeleteParams {
        preconditions: resource_version.map(|rv| Preconditions {
            resource_version: Some(rv),
            uid: None,
        }),
        ..Default::default()
    };
    match api.delete(name, &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_not_found() || s.is_conflict() => Ok(()),
        Err(e) => Err(GatewayError::kube(format!("delete expired Secret {name}"))(
            e,
        )),
    }
}

/// The Event recorder of the gateway (events.k8s.io/v1; repeats become a series).
pub fn recorder(client: &kube::Client) -> Recorder {
    let reporter = Reporter {
        controller: COMPONENT.into(),
        instance: std::env::var("HOSTNAME").ok(),
    };
    Recorder::new(client.clone(), reporter)
}

/// Records a Warning Event on a peer Secret the gateway does not serve (`kubectl describe
/// secret` shows it).
pub async fn problem_event(
    recorder: &Recorder,
    namespace: &str,
    secret: &str,
    uid: Option<String>,
    problem: Problem,
    message: &str,
) -> Result<(), GatewayError> {
    let reference = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Secret".into()),
        name: Some(secret.into()),
        namespace: Some(namespace.into()),
        uid,
        ..Default::default()
    };
    // The Events API takes at most 1 kB of note.
    let note: String = message.chars().take(1000).collect();
    let event = Event {
        type_: EventType::Warning,
        reason: problem.event_reason().into(),
        note: Some(note),
        action: "ServePeer".into(),
        secondary: None,
    };
    recorder
        .publish(&event, &reference)
        .await
        .map_err(GatewayError::kube(format!(
            "create an Event for Secret {secret}"
        )))
}

/// Whether a cache holds a first full list.
pub fn listed<K: Resource + Clone>(store: &Store<K>) -> bool
where
    K::DynamicType: Eq + Hash + Clone,
{
    matches!(store.wait_until_ready().now_or_never(), Some(Ok(())))
}

/// A watcher on `api` (only object `name` if given) filling a cache; the stream yields `()`
/// whenever the cache changed.
pub fn watch<K>(
    api: Api<K>,
    name: Option<&str>,
    what: &'static str,
    trim: fn(&mut K),
) -> (Store<K>, BoxStream<'static, ()>)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let mut wc = watcher::Config::default();
    if let Some(name) = name {
        wc = wc.fields(&format!("metadata.name={name}"));
    }
    let (store, writer) = reflector::store();
    let stream = watcher::watcher(api, wc)
        .default_backoff()
        .modify(trim)
        .reflect(writer)
        .filter_map(move |ev| async move {
            match ev {
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => None,
                Ok(
                    watcher::Event::InitDone | watcher::Event::Apply(_) | watcher::Event::Delete(_),
                ) => Some(()),
                Err(e) => {
                    tracing::warn!(error = %e, "watching {what} failed; retrying");
                    None
                }
            }
        })
        .boxed();
    (store, stream)
}
