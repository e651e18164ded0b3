//! The in-memory object store: objects as JSON keyed by (group, resource, namespace, name), a
//! global monotonically increasing resourceVersion and a bounded event history for watches.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::kinds::Kind;
use crate::status::ApiError;

/// Live events after a watch started.
pub type Subscription = broadcast::Receiver<Arc<Event>>;

/// Key of a stored object.
pub type Key = (&'static str, &'static str, String, String);

/// How many watch events are retained for watches resuming from an older resourceVersion.
pub const DEFAULT_HISTORY: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as watch streams see it.
#[derive(Debug)]
pub struct Event {
    pub rv: u64,
    pub ty: EventType,
    pub kind: &'static Kind,
    pub object: Value,
    /// The object before a modification (watches with selectors turn it into ADDED/DELETED).
    pub old: Option<Value>,
}

#[derive(Debug)]
pub struct Store {
    objects: BTreeMap<Key, Value>,
    rv: u64,
    history: VecDeque<Arc<Event>>,
    limit: usize,
    /// Every event with `rv > floor` is in `history`.
    floor: u64,
    tx: broadcast::Sender<Arc<Event>>,
    /// Bumped to end every open watch (see [`Store::compact`]).
    epoch: tokio::sync::watch::Sender<u64>,
}

pub fn key(kind: &'static Kind, namespace: &str, name: &str) -> Key {
    (
        kind.group,
        kind.plural,
        namespace.to_string(),
        name.to_string(),
    )
}

pub fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

impl Default for Store {
    fn default() -> Self {
        Store {
            objects: BTreeMap::new(),
            rv: 0,
            history: VecDeque::new(),
            limit: DEFAULT_HISTORY,
            floor: 0,
            tx: broadcast::channel(DEFAULT_HISTORY).0,
            epoch: tokio::sync::watch::channel(0).0,
        }
    }
}

impl Store {
    pub fn current_rv(&self) -> u64 {
        self.rv
    }

    pub fn get(&self, kind: &'static Kind, namespace: &str, name: &str) -> Option<&Value> {
        self.objects.get(&key(kind, namespace, name))
    }

    /// Objects of a resource, in one namespace or (None) in all, ordered by namespace and name.
    pub fn list(&self, kind: &'static Kind, namespace: Option<&str>) -> Vec<&Value> {
        let lo = (
            kind.group,
            kind.plural,
            namespace.unwrap_or("").to_string(),
            String::new(),
        );
        self.objects
            .range(lo..)
            .take_while(|((g, p, ns, _), _)| {
                *g == kind.group && *p == kind.plural && namespace.is_none_or(|want| want == ns)
            })
            .map(|(_, v)| v)
            .collect()
    }

    fn record(&mut self, ty: EventType, kind: &'static Kind, object: Value, old: Option<Value>) {
        let ev = Arc::new(Event {
            rv: self.rv,
            ty,
            kind,
            object,
            old,
        });
        self.history.push_back(ev.clone());
        while self.history.len() > self.limit {
            if let Some(e) = self.history.pop_front() {
                self.floor = e.rv;
            }
        }
        // No receivers is fine.
        let _ = self.tx.send(ev);
    }

    /// Store `obj` (create or replace), stamping a new resourceVersion; returns the stored object.
    pub fn put(&mut self, kind: &'static Kind, mut obj: Value) -> Value {
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let (ns, name) = (
            meta_str(&obj, "namespace").to_string(),
            meta_str(&obj, "name").to_string(),
        );
        let old = self.objects.insert(key(kind, &ns, &name), obj.clone());
        let ty = if old.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.record(ty, kind, obj.clone(), old);
        obj
    }

    /// Remove an object; the returned (deleted) object carries the deletion's resourceVersion.
    pub fn remove(&mut self, kind: &'static Kind, namespace: &str, name: &str) -> Option<Value> {
        let mut obj = self.objects.remove(&key(kind, namespace, name))?;
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.record(EventType::Deleted, kind, obj.clone(), None);
        Some(obj)
    }

    /// Past events after `from_rv` for a resource, plus a receiver for the following ones.
    /// 410 Gone when `from_rv` is older than the retained history.
    pub fn watch_from(
        &self,
        kind: &'static Kind,
        from_rv: u64,
    ) -> Result<(Vec<Arc<Event>>, Subscription), ApiError> {
        if from_rv < self.floor {
            return Err(ApiError::gone(format!(
                "too old resource version: {from_rv} ({})",
                self.floor + 1
            )));
        }
        let past = self
            .history
            .iter()
            .filter(|e| e.rv > from_rv && std::ptr::eq(e.kind, kind))
            .cloned()
            .collect();
        Ok((past, self.tx.subscribe()))
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }

    pub fn epoch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.epoch.subscribe()
    }

    /// Forget the event history and end every open watch, like an etcd compaction followed
    /// by an API server restart: clients resuming from an older resourceVersion get 410 Gone.
    pub fn compact(&mut self) {
        self.rv += 1;
        self.floor = self.rv;
        self.history.clear();
        self.epoch.send_modify(|e| *e += 1);
    }

    /// Change how many events are retained (tests use tiny histories).
    pub fn set_history_limit(&mut self, limit: usize) {
        self.limit = limit.max(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::find;

    fn secret(ns: &str, name: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": ns}})
    }

    #[test]
    fn resource_versions_increase_and_history_is_bounded() {
        let k = find("", "v1", "secrets").unwrap();
        let mut s = Store::default();
        s.set_history_limit(2);
        let a = s.put(k, secret("x", "a"));
        assert_eq!(meta_str(&a, "resourceVersion"), "1");
        s.put(k, secret("x", "b"));
        s.put(k, secret("x", "a"));
        assert_eq!(s.list(k, Some("x")).len(), 2);
        assert!(s.watch_from(k, 1).is_ok());
        assert_eq!(s.watch_from(k, 0).unwrap_err().code, 410);
        let d = s.remove(k, "x", "a").unwrap();
        assert_eq!(meta_str(&d, "resourceVersion"), "4");
        let (past, _) = s.watch_from(k, 2).unwrap();
        assert_eq!(
            past.iter().map(|e| e.ty).collect::<Vec<_>>(),
            vec![EventType::Modified, EventType::Deleted]
        );
    }

    #[test]
    fn list_scopes_by_namespace() {
        let k = find("", "v1", "secrets").unwrap();
        let c = find("", "v1", "configmaps").unwrap();
        let mut s = Store::default();
        s.put(k, secret("a", "1"));
        s.put(k, secret("ab", "2"));
        s.put(c, secret("a", "3"));
        assert_eq!(s.list(k, Some("a")).len(), 1);
        assert_eq!(s.list(k, None).len(), 2);
    }
}
