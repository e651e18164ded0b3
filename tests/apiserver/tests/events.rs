//! Events written through events.k8s.io/v1 (kube-runtime's Recorder, as the gateway does) are
//! core/v1 Events too, as on a real server: `kubectl get events` and `describe` show them.

mod common;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use common::Cluster;

#[tokio::test]
async fn a_recorders_event_is_listed_by_kubectl_get_events() {
    let c = Cluster::start().await;
    c.kubectl_ok("admin", &["create", "secret", "generic", "kwg-peer-x"])
        .await;
    let reporter = Reporter {
        controller: "kwg.io/gateway".into(),
        instance: Some("gw-0".into()),
    };
    let recorder = Recorder::new(c.client("admin").await, reporter);
    let secret = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Secret".into()),
        name: Some("kwg-peer-x".into()),
        namespace: Some("default".into()),
        ..Default::default()
    };
    let event = Event {
        type_: EventType::Warning,
        reason: "MalformedPeer".into(),
        note: Some("missing field publicKey".into()),
        action: "ServePeer".into(),
        secondary: None,
    };
    recorder.publish(&event, &secret).await.expect("publish");
    let out = c
        .kubectl_ok(
            "admin",
            &[
                "get",
                "events",
                "-o",
                "jsonpath={.items[0].reason} {.items[0].message} {.items[0].involvedObject.name} {.items[0].reportingComponent}",
            ],
        )
        .await;
    assert_eq!(
        out,
        "MalformedPeer missing field publicKey kwg-peer-x kwg.io/gateway"
    );
    // Deleting the core Event deletes the events.k8s.io one.
    let name = c
        .kubectl_ok(
            "admin",
            &["get", "events", "-o", "jsonpath={.items[0].metadata.name}"],
        )
        .await;
    c.kubectl_ok("admin", &["delete", "events", &name]).await;
    let left = c
        .kubectl_ok("admin", &["get", "events.events.k8s.io", "-o", "name"])
        .await;
    assert_eq!(left, "");
}
