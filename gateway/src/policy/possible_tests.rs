use super::*;
use serde_json::{Value, json};

fn of<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).unwrap()
}

fn rule(v: Value) -> PolicyRule {
    of(v)
}

fn cluster_role(name: &str, labels: Value, rules: Value) -> ClusterRole {
    of(json!({"metadata": {"name": name, "labels": labels}, "rules": rules}))
}

fn aggregated(name: &str, selectors: Value) -> ClusterRole {
    of(
        json!({"metadata": {"name": name}, "aggregationRule": {"clusterRoleSelectors": selectors}, "rules": []}),
    )
}

fn role_binding(ns: &str, kind: &str, role: &str, subjects: Value) -> RoleBinding {
    of(
        json!({"metadata": {"name": format!("b-{role}"), "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
        "subjects": subjects}),
    )
}

fn cluster_binding(role: &str, subjects: Value) -> ClusterRoleBinding {
    of(json!({"metadata": {"name": format!("cb-{role}")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": subjects}))
}

fn ns(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn a_rule_grants_only_get_services_of_the_core_group_without_names() {
    let yes = [
        json!({"apiGroups": [""], "resources": ["services"], "verbs": ["get"]}),
        json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}),
        json!({"apiGroups": ["apps", ""], "resources": ["pods", "services"], "verbs": ["list", "get", "watch"]}),
        json!({"apiGroups": [""], "resources": ["services"], "verbs": ["get"], "resourceNames": []}),
    ];
    for r in yes {
        assert!(rule_grants(&rule(r.clone())), "{r}");
    }
    let no = [
        json!({"apiGroups": [""], "resources": ["services"], "verbs": ["list", "watch"]}),
        json!({"apiGroups": ["apps"], "resources": ["services"], "verbs": ["get"]}),
        json!({"apiGroups": [""], "resources": ["services/status", "services/proxy"], "verbs": ["get"]}),
        json!({"apiGroups": [""], "resources": ["*/status"], "verbs": ["*"]}),
        // Names an object: a review without a name is never allowed by it.
        json!({"apiGroups": [""], "resources": ["services"], "verbs": ["get"], "resourceNames": ["web"]}),
        json!({"nonResourceURLs": ["*"], "verbs": ["*"]}),
        json!({"resources": ["services"], "verbs": ["get"]}),
    ];
    for r in no {
        assert!(!rule_grants(&rule(r.clone())), "{r}");
    }
}

#[test]
fn selectors_match_like_kubernetes_label_selectors() {
    let labels: BTreeMap<String, String> = [
        (
            "rbac.example/aggregate-to-view".to_owned(),
            "true".to_owned(),
        ),
        ("tier".to_owned(), "a".to_owned()),
    ]
    .into();
    let yes = [
        json!({}),
        json!({"matchLabels": {"rbac.example/aggregate-to-view": "true"}}),
        json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]}),
        json!({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["b"]}]}),
        json!({"matchExpressions": [{"key": "tier", "operator": "Exists"}, {"key": "x", "operator": "DoesNotExist"}]}),
        // Unknown to this code: counted (a review more, never a grant).
        json!({"matchExpressions": [{"key": "tier", "operator": "Gt", "values": ["1"]}]}),
    ];
    for s in yes {
        assert!(selector_matches(&of(s.clone()), &labels), "{s}");
    }
    let no = [
        json!({"matchLabels": {"rbac.example/aggregate-to-view": "false"}}),
        json!({"matchLabels": {"rbac.example/aggregate-to-view": "true", "other": "x"}}),
        json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["b"]}]}),
        json!({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["a"]}]}),
        json!({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}),
    ];
    for s in no {
        assert!(!selector_matches(&of(s.clone()), &labels), "{s}");
    }
}

#[test]
fn an_aggregated_cluster_role_counts_the_rules_of_the_roles_it_selects_transitively() {
    let get_services = json!([{"apiGroups": [""], "resources": ["services"], "verbs": ["get"]}]);
    let pods = json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]);
    let roles = [
        cluster_role("svc-reader", json!({"agg/view": "true"}), get_services),
        cluster_role("pod-reader", json!({"agg/pods": "true"}), pods),
        aggregated("my-view", json!([{"matchLabels": {"agg/view": "true"}}])),
        aggregated("pods-only", json!([{"matchLabels": {"agg/pods": "true"}}])),
        // Aggregates my-view (through its label), which aggregates svc-reader.
        of(json!({"metadata": {"name": "my-edit", "labels": {}},
            "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"agg/edit": "true"}}]}})),
        of(
            json!({"metadata": {"name": "my-view-labelled", "labels": {"agg/edit": "true"}},
            "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"agg/view": "true"}}]}}),
        ),
    ];
    assert_eq!(
        granting_cluster_roles(&roles),
        ns(&["my-edit", "my-view", "my-view-labelled", "svc-reader"])
    );
}

fn cluster() -> Possible {
    let view = cluster_role(
        "view",
        json!({}),
        json!([{"apiGroups": [""], "resources": ["services", "pods"], "verbs": ["get", "list"]}]),
    );
    let basic = cluster_role(
        "system:basic-user",
        json!({}),
        json!([{"apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews"], "verbs": ["create"]}]),
    );
    let reader: Role = of(json!({"metadata": {"name": "svc", "namespace": "tools"},
        "rules": [{"apiGroups": [""], "resources": ["services"], "verbs": ["*"]}]}));
    let nothing: Role = of(json!({"metadata": {"name": "cm", "namespace": "tools"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["*"]}]}));
    let bindings = [
        role_binding(
            "emojivoto",
            "ClusterRole",
            "view",
            json!([{"kind": "Group", "name": "developers"}]),
        ),
        role_binding(
            "default",
            "ClusterRole",
            "view",
            json!([{"kind": "User", "name": "alice"}]),
        ),
        role_binding(
            "tools",
            "Role",
            "svc",
            json!([{"kind": "ServiceAccount", "name": "ci"}]),
        ),
        role_binding(
            "tools",
            "Role",
            "cm",
            json!([{"kind": "User", "name": "alice"}]),
        ),
        // A Role of another namespace is not this one's.
        role_binding(
            "prod",
            "Role",
            "svc",
            json!([{"kind": "User", "name": "alice"}]),
        ),
        // A role that does not exist grants nothing.
        role_binding(
            "prod",
            "ClusterRole",
            "gone",
            json!([{"kind": "User", "name": "alice"}]),
        ),
    ];
    let cluster_bindings = [
        cluster_binding("view", json!([{"kind": "User", "name": "olga"}])),
        cluster_binding(
            "system:basic-user",
            json!([{"kind": "Group", "name": "system:authenticated"}]),
        ),
    ];
    Possible::build(
        &[reader, nothing],
        &[view, basic],
        &bindings,
        &cluster_bindings,
    )
}

#[test]
fn an_owner_is_asked_only_where_a_binding_could_grant_it() {
    let p = cluster();
    let dev = p.of(&Subject::new("dev", &["developers".to_owned()]));
    assert_eq!(dev.namespaces, ns(&["emojivoto"]));
    assert!(!dev.everywhere);
    assert!(dev.may("emojivoto") && !dev.may("kube-system") && !dev.may("default"));
    let alice = p.of(&Subject::new("alice", &[]));
    assert_eq!(alice.namespaces, ns(&["default"]));
    let ci = p.of(&Subject::new("system:serviceaccount:tools:ci", &[]));
    assert_eq!(ci.namespaces, ns(&["tools"]));
    // A ClusterRoleBinding to a role granting `get services`: one cluster-scope question.
    let olga = p.of(&Subject::new("olga", &[]));
    assert!(olga.everywhere && olga.may("kube-system") && !olga.asks("kube-system"));
    // Bound to no role that grants it anywhere (system:basic-user through
    // system:authenticated): nothing to ask, denied everywhere without a review.
    let nobody = p.of(&Subject::new("nobody", &[]));
    assert_eq!(nobody, Could::default());
    assert!(!nobody.may("default"));
}

#[test]
fn review_all_pairs_asks_everything() {
    let all = Possible::all().of(&Subject::new("nobody", &[]));
    assert!(all.all && all.may("kube-system") && all.asks("kube-system"));
}
