//! Watch streams: newline-delimited `{"type":..,"object":..}` events from a resourceVersion,
//! filtered by namespace and selectors, ending on timeout, compaction or shutdown.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use crate::Shared;
use crate::kinds::Kind;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::status::ApiError;
use crate::store::{Event, EventType, meta_str};
use crate::table;

/// What a watch request asked for.
pub struct WatchParams {
    pub kind: &'static Kind,
    /// None: all namespaces.
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    /// None (or "0"): start with the current state as ADDED events.
    pub resource_version: Option<u64>,
    pub timeout: Duration,
    pub table: bool,
    pub send_initial_events: bool,
}

impl WatchParams {
    fn matches(&self, obj: &Value) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| meta_str(obj, "namespace") == ns)
            && self.labels.matches(obj)
            && self.fields.matches(obj)
    }

    fn encode(&self, ty: &str, object: &Value) -> Bytes {
        let object = if self.table && ty != "ERROR" && ty != "BOOKMARK" {
            let rv = meta_str(object, "resourceVersion").parse().unwrap_or(0);
            table::table(self.kind, [object], rv, Utc::now())
        } else {
            object.clone()
        };
        let mut line = json!({"type": ty, "object": object}).to_string();
        line.push('\n');
        Bytes::from(line)
    }

    /// The event a watcher with these filters sees for a change, if any.
    fn translate(&self, ev: &Event) -> Option<Bytes> {
        if !std::ptr::eq(ev.kind, self.kind) {
            return None;
        }
        let now = self.matches(&ev.object);
        let ty = match (ev.ty, ev.old.as_ref().map(|o| self.matches(o))) {
            (EventType::Modified, Some(true)) if !now => EventType::Deleted,
            (EventType::Modified, Some(false)) if now => EventType::Added,
            (EventType::Modified, Some(false)) => return None,
            (ty, _) if now => ty,
            _ => return None,
        };
        Some(self.encode(ty.as_str(), &ev.object))
    }
}

/// Start a watch; returns the receiving end of the event stream.
pub fn start(shared: &Arc<Shared>, p: WatchParams) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel(256);
    let mut initial: Vec<Bytes> = Vec::new();
    let subscription = {
        let store = shared.store();
        match p.resource_version {
            None => {
                for obj in store
                    .list(p.kind, p.namespace.as_deref())
                    .into_iter()
                    .filter(|o| p.matches(o))
                {
                    initial.push(p.encode("ADDED", obj));
                }
                if p.send_initial_events {
                    let rv = store.current_rv().to_string();
                    let bookmark = json!({"kind": p.kind.kind, "apiVersion": p.kind.api_version(),
                        "metadata": {"resourceVersion": rv, "annotations": {"k8s.io/initial-events-end": "true"}}});
                    initial.push(p.encode("BOOKMARK", &bookmark));
                }
                Ok(store.subscribe())
            }
            Some(rv) => match store.watch_from(p.kind, rv) {
                Ok((past, sub)) => {
                    initial.extend(past.iter().filter_map(|e| p.translate(e)));
                    Ok(sub)
                }
                Err(gone) => Err(gone),
            },
        }
    };
    let epoch = shared.store().epoch();
    let shutdown = shared.shutdown.clone();
    tokio::spawn(async move {
        let mut sub = match subscription {
            Ok(sub) => sub,
            Err(gone) => {
                let _ = tx.send(p.encode("ERROR", &gone_status(&gone))).await;
                return;
            }
        };
        for line in initial {
            if tx.send(line).await.is_err() {
                return;
            }
        }
        let mut epoch = epoch;
        let deadline = tokio::time::sleep(p.timeout);
        tokio::pin!(deadline);
        loop {
            let ev = tokio::select! {
                _ = &mut deadline => return,
                _ = epoch.changed() => return,
                _ = shutdown.cancelled() => return,
                _ = tx.closed() => return,
                ev = sub.recv() => ev,
            };
            match ev {
                Ok(ev) => {
                    if let Some(line) = p.translate(&ev)
                        && tx.send(line).await.is_err()
                    {
                        return;
                    }
                }
                // A slow watcher ends its stream; it resumes from its last resourceVersion.
                Err(broadcast::error::RecvError::Lagged(_))
                | Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    rx
}

fn gone_status(e: &ApiError) -> Value {
    e.to_status()
}
