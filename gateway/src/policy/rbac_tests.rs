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
