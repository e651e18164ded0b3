//! Reflector stores that wake a reconcile loop on every change (the controller pattern).

use futures::StreamExt;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::sync::Arc;
use tokio::sync::Notify;

/// A cache of every `K` in the cluster, kept current by a watcher task that pokes `wake`.
pub async fn store<K>(client: Client, wake: Arc<Notify>) -> reflector::Store<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let api = Api::<K>::all(client);
    tokio::spawn(async move {
        let stream = reflector(
            writer,
            watcher(api, watcher::Config::default()).default_backoff(),
        );
        futures::pin_mut!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(_) => wake.notify_one(),
                Err(e) => {
                    tracing::warn!(kind = %K::kind(&()), error = %e, "watch failed; retrying")
                }
            }
        }
    });
    let _ = reader.wait_until_ready().await;
    reader
}

/// Clones every object of a store.
pub fn snapshot<K: Resource<DynamicType = ()> + Clone>(s: &reflector::Store<K>) -> Vec<K> {
    s.state().iter().map(|o| (**o).clone()).collect()
}
