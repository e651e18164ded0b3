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

mod needs {
    use super::*;
    use crate::policy::fixtures::{inv, ip};
    use crate::policy::reviews::{self, Reviews};
    use std::net::Ipv4Addr;
    use std::time::{Duration, Instant};

    fn peer(addr: &str, owner: &str, groups: &[&str]) -> PeerReach {
        let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        PeerReach {
            ip: ip(addr),
            subject: Subject::new(owner, &groups),
            asked: Vec::new(),
        }
    }

    /// dev (a RoleBinding could grant it emojivoto), nobody (no binding), olga (a
    /// ClusterRoleBinding could grant it everywhere).
    fn dev_nobody_olga() -> [PeerReach; 3] {
        [
            peer("100.77.0.2", "dev", &["developers"]),
            peer("100.77.0.3", "nobody", &[]),
            peer("100.77.0.4", "olga", &[]),
        ]
    }

    /// Every question of the pass asked and answered as RBAC would (`allowed`).
    fn pass(
        r: &mut Reviews,
        n: &Needs,
        now: Instant,
        allowed: impl Fn(&Question) -> bool,
    ) -> usize {
        let asked = r.to_ask_with(&n.questions, n.scoped.as_ref(), now);
        for q in &asked {
            r.answered(q.clone(), allowed(q));
        }
        asked.len()
    }

    #[test]
    fn only_pairs_a_binding_could_grant_are_reviewed_the_rest_denied_without_one() {
        let t0 = Instant::now();
        let peers = dev_nobody_olga();
        let n = Needs::of(&inv(), &peers, &cluster());
        let dev = Subject::new("dev", &["developers".to_owned()]);
        let (nobody, olga) = (Subject::new("nobody", &[]), Subject::new("olga", &[]));
        // dev: emojivoto only (default is alice's); olga: one cluster-scope question.
        assert_eq!(n.questions, [(dev.clone(), "emojivoto".to_owned())].into());
        assert_eq!(n.scoped, Some([olga.clone()].into()));
        let mut r = Reviews::new(Duration::from_secs(60), 20.0, t0);
        // Before any answer: nobody is decided (no), the others are not.
        assert_eq!(n.answer(&r, &nobody, "default"), Some(false));
        assert_eq!(n.answer(&r, &dev, "emojivoto"), None);
        assert_eq!(n.answer(&r, &dev, "default"), Some(false));
        assert_eq!(n.answer(&r, &olga, "default"), None);
        assert_eq!(
            pass(&mut r, &n, t0, |_| true),
            2,
            "dev in emojivoto, olga everywhere"
        );
        assert!(n.allowed(&r, &dev, "emojivoto") && !n.allowed(&r, &dev, "default"));
        assert!(n.allowed(&r, &olga, "default") && n.allowed(&r, &olga, "emojivoto"));
        assert!(!n.allowed(&r, &nobody, "emojivoto"));
        // A review saying no is the authority, whatever RBAC could grant.
        let mut r = Reviews::new(Duration::from_secs(60), 20.0, t0);
        pass(&mut r, &n, t0, |_| false);
        assert_eq!(n.answer(&r, &dev, "emojivoto"), Some(false));
        assert_eq!(n.answer(&r, &olga, "default"), Some(false));
        // The binding goes: denied at once, without a review.
        let mut r = Reviews::new(Duration::from_secs(60), 20.0, t0);
        pass(&mut r, &n, t0, |_| true);
        let gone = Needs::of(&inv(), &peers, &Possible::default());
        assert!(gone.questions.is_empty());
        assert_eq!(
            r.to_ask_with(&gone.questions, gone.scoped.as_ref(), t0)
                .len(),
            0
        );
        assert!(!gone.allowed(&r, &dev, "emojivoto") && !gone.allowed(&r, &olga, "default"));
        // --review-all-pairs: every pair a peer asks for.
        let all = Needs::of(&inv(), &peers, &Possible::all());
        assert_eq!((all.questions.len(), all.scoped.is_none()), (6, true));
    }

    #[test]
    fn an_owner_no_binding_could_grant_costs_one_low_priority_cluster_review_another_authorizer_may_allow()
     {
        // EKS access entries, GKE IAM, AKS Azure RBAC: a webhook authorizer grants `nobody`
        // what no RBAC binding does. One cluster-scope review says so; its yes reaches every
        // namespace, as a ClusterRoleBinding's.
        let t0 = Instant::now();
        let peers = dev_nobody_olga();
        let n = Needs::of(&inv(), &peers, &cluster());
        let (nobody, olga) = (Subject::new("nobody", &[]), Subject::new("olga", &[]));
        assert_eq!(n.probes, [nobody.clone()].into());
        // At 1 review a second (bursts of 2): dev's and olga's first, nobody's last.
        let mut r = Reviews::new(Duration::from_secs(60), 1.0, t0);
        let first = r.to_ask_needs(&n, t0);
        assert!(!first.contains(&reviews::cluster(&nobody)), "{first:?}");
        assert_eq!(first.len(), 2);
        for q in first {
            r.answered(q, true);
        }
        assert_eq!(
            n.answer(&r, &nobody, "default"),
            Some(false),
            "not answered yet: no"
        );
        let later = t0 + Duration::from_secs(1);
        r.tick(later);
        let second = r.to_ask_needs(&n, later);
        assert_eq!(second, [reviews::cluster(&nobody)].into());
        r.answered(reviews::cluster(&nobody), true);
        assert!(n.allowed(&r, &nobody, "default") && n.allowed(&r, &nobody, "emojivoto"));
        assert!(n.allowed(&r, &olga, "default"));
        // Said once.
        assert_eq!(r.granted_elsewhere(), vec![nobody.clone()]);
        assert!(r.granted_elsewhere().is_empty());
        // An RBAC change asks it no sooner than its period.
        r.cluster_bindings_changed();
        r.namespaces_changed(["default".to_owned()]);
        let soon = later + Duration::from_secs(5);
        r.tick(soon);
        let changed = r.to_ask_needs(&n, soon);
        assert!(!changed.contains(&reviews::cluster(&nobody)), "{changed:?}");
        for q in changed {
            r.answered(q, true);
        }
        // The periodic re-review asks it again: the webhook says no now, reach goes.
        let mut now = soon;
        let mut asked = 0;
        while now < later + Duration::from_secs(120) {
            now = r.next_wake(now).max(now + Duration::from_millis(1));
            r.tick(now);
            for q in r.to_ask_needs(&n, now) {
                asked += usize::from(q == reviews::cluster(&nobody));
                let yes = q.0 != nobody;
                r.answered(q, yes);
            }
        }
        assert!((1..=2).contains(&asked), "{asked} probes in two periods");
        assert!(!n.allowed(&r, &nobody, "default") && n.allowed(&r, &olga, "default"));
        assert!(r.granted_elsewhere().is_empty());
        // --review-all-pairs: no probe (its pairs are asked one by one).
        let all = Needs::of(&inv(), &peers, &Possible::all());
        assert!(all.probes.is_empty());
    }

    #[test]
    fn a_thousand_owners_in_fifty_teams_over_three_hundred_namespaces() {
        // The bench's cluster (bench_load teams 300 50): each namespace's RoleBinding of `view`
        // to one team; each owner in one team. 6 questions per owner, not 300.
        let view = cluster_role(
            "view",
            json!({}),
            json!([{"apiGroups": [""], "resources": ["services"], "verbs": ["get"]}]),
        );
        let bindings: Vec<RoleBinding> = (0..300)
            .map(|i| {
                let team = format!("bench-team-{}", i % 50);
                role_binding(
                    &format!("bench-ns-{i}"),
                    "ClusterRole",
                    "view",
                    json!([{"kind": "Group", "name": team}]),
                )
            })
            .collect();
        let p = Possible::build(&[], &[view], &bindings, &[]);
        let mut inventory = inv();
        for i in 0..300 {
            inventory
                .by_namespace
                .insert(format!("bench-ns-{i}"), Default::default());
        }
        let peers: Vec<PeerReach> = (0..1000)
            .map(|i| {
                let addr = Ipv4Addr::from(u32::from(ip("100.77.0.0")) + 2 + i);
                let team = format!("bench-team-{}", i % 50);
                PeerReach {
                    ip: addr,
                    subject: Subject::new(&format!("owner-{i}"), &[team]),
                    asked: Vec::new(),
                }
            })
            .collect();
        let n = Needs::of(&inventory, &peers, &p);
        assert_eq!(n.questions.len(), 6000);
        assert_eq!(n.scoped.as_ref().map(BTreeSet::len), Some(0));
        // The re-review takes at most half the rate limit: at 20/s, those 6,000 once every
        // 600 s (10/s). Run here a tenth of it (the first 600 questions at 2/s, so also once
        // every 600 s) for 30 minutes of the fake clock.
        let fewer = Needs {
            questions: n.questions.iter().take(600).cloned().collect(),
            ..n.clone()
        };
        let t0 = Instant::now();
        let mut r = Reviews::new(Duration::from_secs(60), 2.0, t0);
        let mut now = t0;
        let mut asked = 0;
        while now < t0 + Duration::from_secs(1800) {
            now = r.next_wake(now).max(now + Duration::from_millis(1));
            r.tick(now);
            let n_asked = pass(&mut r, &fewer, now, |_| true);
            if now >= t0 + Duration::from_secs(1200) {
                asked += n_asked;
            }
        }
        // The last 600 s, at steady state: about 1 a second (each once), never the limit of 2.
        let rate = asked as f64 / 600.0;
        assert!((0.8..=1.2).contains(&rate), "{rate} reviews a second");
    }
}
