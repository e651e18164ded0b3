use super::*;

#[test]
fn a_role_binding_change_names_only_its_namespace() {
    let v = |items: &[(&'static str, &str, &str, &str)]| -> RbacVersions {
        items
            .iter()
            .map(|(k, ns, n, rv)| ((*k, ns.to_string(), n.to_string()), rv.to_string()))
            .collect()
    };
    let old = v(&[
        ("RoleBinding", "emojivoto", "view", "1"),
        ("Role", "default", "r", "2"),
        ("RoleBinding", "kwg-system", "kwg", "3"),
    ]);
    let new = v(&[
        ("RoleBinding", "emojivoto", "view", "1"),
        ("Role", "default", "r", "5"),       // changed
        ("RoleBinding", "bench", "rb", "6"), // added
    ]); // kwg-system's deleted
    let changed: Vec<String> = changed_namespaces(&old, &new).into_iter().collect();
    assert_eq!(changed, ["bench", "default", "kwg-system"]);
    assert!(changed_namespaces(&new, &new).is_empty());
}

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
