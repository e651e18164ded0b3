use super::*;

#[test]
fn a_cluster_role_change_moves_only_the_subjects_bound_to_it_where_they_are_bound() {
    use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding};
    let rb: RoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "team-edit", "namespace": "emojivoto"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"kind": "Group", "name": "developers"},
                     {"kind": "ServiceAccount", "name": "ci"},
                     {"kind": "ServiceAccount", "name": "deploy", "namespace": "tools"}]}))
    .unwrap();
    let own: RoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "own-role", "namespace": "default"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "edit"},
        "subjects": [{"kind": "User", "name": "eve"}]}))
    .unwrap();
    let crb: ClusterRoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "ops-view"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "User", "name": "olga"}]}))
    .unwrap();
    let bindings = [
        Binding::of_role_binding(&rb),
        Binding::of_role_binding(&own),
        Binding::of_cluster_role_binding(&crb),
    ];
    let edit = bound_to(&["edit".to_owned()].into(), &bindings);
    // A Role named like the ClusterRole is not it.
    assert!(edit.everywhere.is_empty());
    assert_eq!(
        edit.in_namespace,
        [(
            "emojivoto".to_owned(),
            [
                Named::Group("developers".into()),
                Named::User("system:serviceaccount:emojivoto:ci".into()),
                Named::User("system:serviceaccount:tools:deploy".into()),
            ]
            .into()
        )]
        .into()
    );
    let dev = Subject::new("dave", &["developers".to_owned()]);
    assert!(edit.touches(&(dev.clone(), "emojivoto".into())));
    assert!(!edit.touches(&(dev.clone(), "default".into())));
    assert!(!edit.touches(&(Subject::new("dave", &[]), "emojivoto".into())));
    let view = bound_to(&["view".to_owned()].into(), &bindings);
    assert!(view.everywhere(&Subject::new("olga", &[])) && !view.everywhere(&dev));
    assert!(view.in_namespace.is_empty());
    assert!(bound_to(&["admin".to_owned()].into(), &bindings).is_empty());
}

#[test]
fn changed_cluster_roles_are_those_added_changed_or_deleted() {
    let v = |items: &[(&str, &str)]| -> RoleVersions {
        items
            .iter()
            .map(|(n, rv)| (n.to_string(), rv.to_string()))
            .collect()
    };
    let old = v(&[("view", "1"), ("edit", "2"), ("gone", "3")]);
    let new = v(&[("view", "1"), ("edit", "4"), ("new", "5")]);
    let changed: Vec<String> = changed_roles(&old, &new).into_iter().collect();
    assert_eq!(changed, ["edit", "gone", "new"]);
}

#[test]
fn a_role_or_role_binding_change_moves_only_its_subjects_in_its_namespace() {
    let rb = |ns: &str, role: Option<&str>, subjects: Vec<Named>| Binding {
        namespace: Some(ns.into()),
        cluster_role: role.is_none().then(|| "view".to_owned()),
        role: role.map(str::to_owned),
        subjects,
    };
    let (team, ana, bo) = (
        Named::Group("team".into()),
        Named::User("ana".into()),
        Named::User("bo".into()),
    );
    let key = |ns: &str, n: &str| (ns.to_owned(), n.to_owned());
    let roles: Roles = [(key("emo", "reader"), "1".to_owned())].into();
    let old: RoleBindings = [
        (
            key("emo", "team-view"),
            ("1".into(), rb("emo", None, vec![team.clone()])),
        ),
        (
            key("emo", "ana-read"),
            ("2".into(), rb("emo", Some("reader"), vec![ana.clone()])),
        ),
        (
            key("default", "bo"),
            ("3".into(), rb("default", None, vec![bo.clone()])),
        ),
    ]
    .into();
    assert!(namespaced_changes((&roles, &old), (&roles, &old)).is_empty());
    // bo's binding in default now names ana instead: both, in default only.
    let mut new = old.clone();
    new.insert(
        key("default", "bo"),
        ("4".into(), rb("default", None, vec![ana.clone()])),
    );
    let moved = namespaced_changes((&roles, &old), (&roles, &new));
    assert!(moved.everywhere.is_empty());
    assert_eq!(
        moved.in_namespace,
        [("default".to_owned(), [ana.clone(), bo.clone()].into())].into()
    );
    // The Role `reader` in emo changes: ana there (its binding names it), not the team.
    let changed: Roles = [(key("emo", "reader"), "5".to_owned())].into();
    let moved = namespaced_changes((&roles, &old), (&changed, &old));
    assert_eq!(
        moved.in_namespace,
        [("emo".to_owned(), [ana.clone()].into())].into()
    );
    // A binding deleted moves what it granted.
    let mut gone = old.clone();
    gone.remove(&key("emo", "team-view"));
    let moved = namespaced_changes((&roles, &old), (&roles, &gone));
    assert_eq!(
        moved.in_namespace,
        [("emo".to_owned(), [team].into())].into()
    );
}

#[test]
fn a_cluster_role_binding_change_moves_only_the_cluster_wide_answers_of_its_subjects() {
    let crb = |subjects: Vec<Named>| Binding {
        namespace: None,
        cluster_role: Some("kwg-reach".into()),
        role: None,
        subjects,
    };
    let (ops, ana) = (Named::Group("ops".into()), Named::User("ana".into()));
    let old: ClusterRoleBindings = [
        ("ops".to_owned(), ("1".to_owned(), crb(vec![ops.clone()]))),
        ("ana".to_owned(), ("2".to_owned(), crb(vec![ana.clone()]))),
    ]
    .into();
    assert!(cluster_binding_changes(&old, &old).is_empty());
    let mut new = old.clone();
    new.remove("ana");
    let moved = cluster_binding_changes(&old, &new);
    assert_eq!(moved.everywhere, [ana].into());
    assert!(moved.in_namespace.is_empty());
    assert!(moved.everywhere(&Subject::new("ana", &[])));
    assert!(!moved.everywhere(&Subject::new("bo", &["ops".to_owned()])));
}
