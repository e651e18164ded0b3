use super::*;
use crate::kubelet::plan::new_pod;
use serde_json::json;

fn deploy(replicas: i32, image: &str, strategy: serde_json::Value) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "demo", "uid": "d-1", "generation": 2},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
            "strategy": strategy,
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": image}]}}}
    }))
    .unwrap()
}

fn pod(d: &Deployment, suffix: &str, ready: bool) -> Pod {
    let mut p = new_pod(d, suffix, "node-1").unwrap();
    p.status = serde_json::from_value(json!({"phase": "Running",
        "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}))
    .unwrap();
    p
}

fn names(ps: &[&Pod]) -> Vec<String> {
    ps.iter().map(|p| name(p)).collect()
}

const SURGE_ONLY: &str =
    r#"{"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}"#;

#[test]
fn limits_resolve_like_the_controller() {
    let d = deploy(2, "x", json!({}));
    assert_eq!(
        rolling_limits(&d, 2),
        Some((1, 0)),
        "25%: surge up, unavailable down"
    );
    assert_eq!(rolling_limits(&d, 4), Some((1, 1)));
    let d = deploy(2, "x", serde_json::from_str(SURGE_ONLY).unwrap());
    assert_eq!(rolling_limits(&d, 2), Some((1, 0)));
    let d = deploy(
        3,
        "x",
        json!({"rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}}),
    );
    assert_eq!(
        rolling_limits(&d, 3),
        Some((0, 1)),
        "both 0: one may be unavailable"
    );
    let d = deploy(3, "x", json!({"type": "Recreate"}));
    assert_eq!(rolling_limits(&d, 3), None);
}

#[test]
fn scaling_and_a_deleted_pod_are_replaced_at_once() {
    let d = deploy(2, "x", serde_json::from_str(SURGE_ONLY).unwrap());
    let p1 = pod(&d, "aaaaa", true);
    assert_eq!(
        replica_plan(&d, &[&p1], 0),
        ReplicaPlan {
            create: 1,
            delete: vec![]
        }
    );
    assert_eq!(
        replica_plan(&d, &[&p1], 1),
        ReplicaPlan::default(),
        "pending pods count"
    );
    let p2 = pod(&d, "bbbbb", false);
    let p3 = pod(&d, "ccccc", true);
    let plan = replica_plan(&d, &[&p1, &p2, &p3], 0);
    assert_eq!(plan.delete, names(&[&p2]), "surplus: the unready one goes");
}

/// maxSurge 1, maxUnavailable 0: one new pod at a time, an old one removed only once a new
/// one is Ready; never fewer than 2 ready pods.
#[test]
fn rolling_update_waits_for_readiness() {
    let old_d = deploy(2, "old", serde_json::from_str(SURGE_ONLY).unwrap());
    let d = deploy(2, "new", serde_json::from_str(SURGE_ONLY).unwrap());
    let (o1, o2) = (pod(&old_d, "o1", true), pod(&old_d, "o2", true));
    assert_eq!(
        replica_plan(&d, &[&o1, &o2], 0),
        ReplicaPlan {
            create: 1,
            delete: vec![]
        }
    );
    assert_eq!(
        replica_plan(&d, &[&o1, &o2], 1),
        ReplicaPlan::default(),
        "surge used up"
    );
    let n1 = pod(&d, "n1", false);
    assert_eq!(
        replica_plan(&d, &[&o1, &o2, &n1], 0),
        ReplicaPlan::default(),
        "the new pod is not Ready: nothing removed"
    );
    let n1 = pod(&d, "n1", true);
    assert_eq!(
        replica_plan(&d, &[&o1, &o2, &n1], 0),
        ReplicaPlan {
            create: 0,
            delete: names(&[&o1])
        }
    );
    assert_eq!(
        replica_plan(&d, &[&o2, &n1], 0),
        ReplicaPlan {
            create: 1,
            delete: vec![]
        }
    );
    let n2 = pod(&d, "n2", true);
    assert_eq!(
        replica_plan(&d, &[&o2, &n1, &n2], 0),
        ReplicaPlan {
            create: 0,
            delete: names(&[&o2])
        }
    );
    assert_eq!(replica_plan(&d, &[&n1, &n2], 0), ReplicaPlan::default());
}

#[test]
fn unready_old_pods_go_first_and_max_unavailable_allows_removal() {
    let old_d = deploy(
        2,
        "old",
        json!({"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}),
    );
    let d = deploy(
        2,
        "new",
        json!({"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}),
    );
    let (o1, o2) = (pod(&old_d, "o1", true), pod(&old_d, "o2", false));
    assert_eq!(
        replica_plan(&d, &[&o1, &o2], 0),
        ReplicaPlan {
            create: 0,
            delete: names(&[&o2])
        }
    );
    assert_eq!(
        replica_plan(&d, &[&o1], 0),
        ReplicaPlan {
            create: 1,
            delete: vec![]
        }
    );
}

#[test]
fn recreate_removes_every_old_pod_first() {
    let old_d = deploy(2, "old", json!({"type": "Recreate"}));
    let d = deploy(2, "new", json!({"type": "Recreate"}));
    let (o1, o2) = (pod(&old_d, "o1", true), pod(&old_d, "o2", true));
    assert_eq!(
        replica_plan(&d, &[&o1, &o2], 0),
        ReplicaPlan {
            create: 0,
            delete: names(&[&o1, &o2])
        }
    );
    assert_eq!(
        replica_plan(&d, &[], 0),
        ReplicaPlan {
            create: 2,
            delete: vec![]
        }
    );
}
