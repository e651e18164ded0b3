//! Peer Secrets as the gateway's reflector store keeps them: parsed once on arrival, without
//! the data of Secrets larger than the limit, so a flood of large Secrets costs no memory
//! after the watch event that carried them.

use crate::core::PeerSecret;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::reflector::Lookup;
use kube::runtime::watcher::Event;
use std::borrow::Cow;
use std::collections::BTreeMap;

/// Default of `--max-secret-bytes`: a valid peer Secret is a few hundred bytes.
pub const DEFAULT_MAX_SECRET_BYTES: usize = 16 * 1024;

/// One peer Secret in the store: the parsed contents and what writes to it need.
#[derive(Debug, Clone)]
pub struct PeerObject {
    pub namespace: Option<String>,
    pub resource_version: Option<String>,
    pub secret: PeerSecret,
}

impl PeerObject {
    /// Parses a Secret, or keeps only its annotations when the parts a client writes (data,
    /// annotations, labels) add up to more than `max_bytes`.
    pub fn from_secret(s: &Secret, max_bytes: usize) -> PeerObject {
        let name = s.metadata.name.as_deref().unwrap_or_default();
        let annotations = s.metadata.annotations.clone().unwrap_or_default();
        let bytes = secret_bytes(s);
        let mut secret = if bytes > max_bytes {
            PeerSecret::too_large(name, bytes, max_bytes, &annotations)
        } else {
            let data: BTreeMap<String, Vec<u8>> = s
                .data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.0.clone()))
                .collect();
            PeerSecret::parse(name, &data, &annotations)
        };
        secret.uid = s.metadata.uid.clone().unwrap_or_default();
        secret.created = s
            .metadata
            .creation_timestamp
            .as_ref()
            .and_then(|t| chrono::DateTime::from_timestamp_micros(t.0.as_microsecond()));
        PeerObject {
            namespace: s.metadata.namespace.clone(),
            resource_version: s.metadata.resource_version.clone(),
            secret,
        }
    }
}

/// The size of what a client controls in a Secret: data, annotations and labels.
pub fn secret_bytes(s: &Secret) -> usize {
    let map = |m: Option<&BTreeMap<String, String>>| {
        m.into_iter()
            .flatten()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
    };
    let data: usize = s
        .data
        .iter()
        .flatten()
        .map(|(k, v)| k.len() + v.0.len())
        .sum();
    data + map(s.metadata.annotations.as_ref()) + map(s.metadata.labels.as_ref())
}

/// A watcher event of Secrets as one of [`PeerObject`]s.
pub fn convert(ev: Event<Secret>, max_bytes: usize) -> Event<PeerObject> {
    let one = |s: Secret| PeerObject::from_secret(&s, max_bytes);
    match ev {
        Event::Apply(s) => Event::Apply(one(s)),
        Event::Delete(s) => Event::Delete(one(s)),
        Event::Init => Event::Init,
        Event::InitApply(s) => Event::InitApply(one(s)),
        Event::InitDone => Event::InitDone,
    }
}

impl Lookup for PeerObject {
    type DynamicType = ();

    fn kind(_: &()) -> Cow<'_, str> {
        "Secret".into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        "".into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        "v1".into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        "secrets".into()
    }
    fn name(&self) -> Option<Cow<'_, str>> {
        Some(self.secret.secret_name.as_str().into())
    }
    fn namespace(&self) -> Option<Cow<'_, str>> {
        self.namespace.as_deref().map(Into::into)
    }
    fn resource_version(&self) -> Option<Cow<'_, str>> {
        self.resource_version.as_deref().map(Into::into)
    }
    fn uid(&self) -> Option<Cow<'_, str>> {
        (!self.secret.uid.is_empty()).then(|| self.secret.uid.as_str().into())
    }
}

#[cfg(test)]
mod tests;
