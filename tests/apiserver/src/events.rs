//! core/v1 and events.k8s.io/v1 Events are one resource on a real server (one storage, two
//! versions). Here each write of one is mirrored into the other with the real field mapping
//! (`note` = `message`, `regarding` = `involvedObject`, `reportingController` =
//! `reportingComponent`, `deprecated*` = the core fields), so `kubectl get events` shows what a
//! kube-runtime `Recorder` wrote and the other way round.

use serde_json::{Map, Value, json};

use crate::kinds::{Kind, find};
use crate::store::{Store, meta_str};

/// (events.k8s.io field, core/v1 field) pairs that only differ by name.
const RENAMED: &[(&str, &str)] = &[
    ("note", "message"),
    ("regarding", "involvedObject"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];
/// Fields with the same name in both.
const SAME: &[&str] = &[
    "related",
    "reason",
    "type",
    "action",
    "eventTime",
    "reportingInstance",
    "series",
];

fn core() -> &'static Kind {
    find("", "v1", "events").expect("core events are served")
}

fn new_api() -> &'static Kind {
    find("events.k8s.io", "v1", "events").expect("events.k8s.io events are served")
}

/// The other version of an Event (None for other kinds).
fn convert(kind: &Kind, obj: &Value) -> Option<(&'static Kind, Value)> {
    let to_core = if kind.is("events.k8s.io", "events") {
        true
    } else if kind.is("", "events") {
        false
    } else {
        return None;
    };
    let target = if to_core { core() } else { new_api() };
    let mut out = Map::new();
    out.insert("apiVersion".into(), json!(target.api_version()));
    out.insert("kind".into(), json!("Event"));
    let mut meta = obj["metadata"].clone();
    if let Some(m) = meta.as_object_mut() {
        m.remove("resourceVersion");
    }
    out.insert("metadata".into(), meta);
    let pairs = RENAMED
        .iter()
        .map(|(a, b)| if to_core { (*a, *b) } else { (*b, *a) })
        .chain(SAME.iter().map(|f| (*f, *f)));
    for (from, to) in pairs {
        if let Some(v) = obj.get(from).filter(|v| !v.is_null()) {
            out.insert(to.into(), v.clone());
        }
    }
    Some((target, Value::Object(out)))
}

/// After a write of an Event: store the other version too.
pub fn mirror_write(store: &mut Store, kind: &Kind, obj: &Value) {
    if let Some((target, other)) = convert(kind, obj) {
        store.put(target, other);
    }
}

/// After a delete of an Event: delete the other version too.
pub fn mirror_delete(store: &mut Store, kind: &Kind, obj: &Value) {
    if let Some((target, _)) = convert(kind, obj) {
        store.remove(target, meta_str(obj, "namespace"), meta_str(obj, "name"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_versions_map_field_by_field() {
        let ev = json!({"metadata": {"name": "e", "namespace": "n", "resourceVersion": "3"},
            "note": "bad key", "regarding": {"kind": "Secret", "name": "kwg-peer-x"},
            "reason": "MalformedPeer", "type": "Warning", "reportingController": "kwg.io/gateway",
            "deprecatedCount": 2});
        let (k, c) = convert(new_api(), &ev).unwrap();
        assert!(k.is("", "events"));
        assert_eq!(
            c,
            json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e", "namespace": "n"},
                "message": "bad key", "involvedObject": {"kind": "Secret", "name": "kwg-peer-x"},
                "reason": "MalformedPeer", "type": "Warning", "reportingComponent": "kwg.io/gateway", "count": 2})
        );
        let (k, back) = convert(core(), &c).unwrap();
        assert!(k.is("events.k8s.io", "events"));
        assert_eq!(back["note"], "bad key");
        assert_eq!(back["apiVersion"], "events.k8s.io/v1");
    }
}
