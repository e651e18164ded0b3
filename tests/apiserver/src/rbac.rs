//! RBAC: evaluates the stored Role/ClusterRole/RoleBinding/ClusterRoleBinding objects.

use serde_json::Value;

use crate::kinds::find;
use crate::status::ApiError;
use crate::store::{Store, meta_str};

/// An authenticated user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

/// The group every authenticated user is in.
pub const AUTHENTICATED: &str = "system:authenticated";
/// Members bypass authorization, like the real server's privileged group.
pub const MASTERS: &str = "system:masters";

/// What a request asks to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attrs {
    Resource {
        verb: String,
        group: String,
        resource: String,
        subresource: String,
        namespace: String,
        name: String,
    },
    NonResource {
        verb: String,
        path: String,
    },
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

fn rule_allows(rule: &Value, a: &Attrs) -> bool {
    let verbs = strs(&rule["verbs"]);
    let has = |list: &[&str], x: &str| list.iter().any(|v| *v == "*" || *v == x);
    match a {
        Attrs::Resource {
            verb,
            group,
            resource,
            subresource,
            name,
            ..
        } => {
            if !has(&verbs, verb) || !has(&strs(&rule["apiGroups"]), group) {
                return false;
            }
            let resources = strs(&rule["resources"]);
            let resource_ok = if subresource.is_empty() {
                has(&resources, resource)
            } else {
                let full = format!("{resource}/{subresource}");
                resources
                    .iter()
                    .any(|r| *r == "*" || *r == full || *r == format!("*/{subresource}"))
            };
            let names = strs(&rule["resourceNames"]);
            resource_ok
                && (names.is_empty() || (!name.is_empty() && names.contains(&name.as_str())))
        }
        Attrs::NonResource { verb, path } => {
            has(&verbs, verb)
                && strs(&rule["nonResourceURLs"]).iter().any(|u| {
                    *u == "*"
                        || *u == path
                        || u.strip_suffix('*')
                            .is_some_and(|prefix| path.starts_with(prefix))
                })
        }
    }
}

fn subject_matches(subject: &Value, user: &User, binding_ns: &str) -> bool {
    let name = subject["name"].as_str().unwrap_or("");
    match subject["kind"].as_str().unwrap_or("") {
        "User" => name == user.name,
        "Group" => user.groups.iter().any(|g| g == name),
        "ServiceAccount" => {
            let ns = subject["namespace"]
                .as_str()
                .filter(|n| !n.is_empty())
                .unwrap_or(binding_ns);
            user.name == format!("system:serviceaccount:{ns}:{name}")
        }
        _ => false,
    }
}

/// The rules a binding grants `user` (none when no subject matches). Namespaced bindings
/// never grant non-resource URLs.
fn binding_rules<'a>(store: &'a Store, binding: &Value, user: &User) -> Vec<&'a Value> {
    let ns = meta_str(binding, "namespace");
    if !binding["subjects"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|s| subject_matches(s, user, ns))
    {
        return Vec::new();
    }
    let role_name = binding["roleRef"]["name"].as_str().unwrap_or("");
    let role = match binding["roleRef"]["kind"].as_str() {
        Some("ClusterRole") => {
            find(RBAC, "v1", "clusterroles").and_then(|k| store.get(k, "", role_name))
        }
        Some("Role") if !ns.is_empty() => {
            find(RBAC, "v1", "roles").and_then(|k| store.get(k, ns, role_name))
        }
        _ => None,
    };
    let rules = role
        .and_then(|r| r["rules"].as_array())
        .into_iter()
        .flatten();
    rules
        .filter(|r| ns.is_empty() || r.get("nonResourceURLs").is_none())
        .collect()
}

const RBAC: &str = "rbac.authorization.k8s.io";

/// Every rule granted to `user` cluster-wide and in `namespace` (empty: cluster scope only).
pub fn user_rules<'a>(store: &'a Store, user: &User, namespace: &str) -> Vec<&'a Value> {
    let crb = find(RBAC, "v1", "clusterrolebindings").expect("clusterrolebindings are served");
    let mut rules: Vec<&Value> = store
        .list(crb, None)
        .into_iter()
        .flat_map(|b| binding_rules(store, b, user))
        .collect();
    if !namespace.is_empty() {
        let rb = find(RBAC, "v1", "rolebindings").expect("rolebindings are served");
        rules.extend(
            store
                .list(rb, Some(namespace))
                .into_iter()
                .flat_map(|b| binding_rules(store, b, user)),
        );
    }
    rules
}

/// Whether `user` may do `a`.
pub fn allowed(store: &Store, user: &User, a: &Attrs) -> bool {
    if user.groups.iter().any(|g| g == MASTERS) {
        return true;
    }
    let namespace = match a {
        Attrs::Resource { namespace, .. } => namespace.as_str(),
        Attrs::NonResource { .. } => "",
    };
    user_rules(store, user, namespace)
        .into_iter()
        .any(|rule| rule_allows(rule, a))
}

/// The real server's 403 for a denied request.
pub fn forbidden(user: &User, a: &Attrs) -> ApiError {
    match a {
        Attrs::NonResource { verb, path } => ApiError::forbidden(
            "",
            "",
            format!("User {:?} cannot {verb} path {path:?}", user.name),
        ),
        Attrs::Resource {
            verb,
            group,
            resource,
            subresource,
            namespace,
            name,
        } => {
            let res = if subresource.is_empty() {
                resource.clone()
            } else {
                format!("{resource}/{subresource}")
            };
            let scope = if namespace.is_empty() {
                "at the cluster scope".to_string()
            } else {
                format!("in the namespace {namespace:?}")
            };
            let reason = format!(
                "User {:?} cannot {verb} resource {res:?} in API group {group:?} {scope}",
                user.name
            );
            let gr = if group.is_empty() {
                resource.clone()
            } else {
                format!("{resource}.{group}")
            };
            ApiError::forbidden(&gr, name, reason)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn res(verb: &str, resource: &str, ns: &str, name: &str) -> Attrs {
        Attrs::Resource {
            verb: verb.into(),
            group: "".into(),
            resource: resource.into(),
            subresource: "".into(),
            namespace: ns.into(),
            name: name.into(),
        }
    }

    #[test]
    fn role_binding_with_resource_names() {
        let mut s = Store::default();
        let role = find("rbac.authorization.k8s.io", "v1", "roles").unwrap();
        let rb = find("rbac.authorization.k8s.io", "v1", "rolebindings").unwrap();
        s.put(role, json!({"metadata": {"name": "r", "namespace": "x"}, "rules": [
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["one"]},
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["*"]}
        ]}));
        s.put(rb, json!({"metadata": {"name": "b", "namespace": "x"}, "roleRef": {"kind": "Role", "name": "r"},
            "subjects": [{"kind": "ServiceAccount", "name": "gw"}, {"kind": "Group", "name": "devs"}]}));
        let sa = User {
            name: "system:serviceaccount:x:gw".into(),
            groups: vec![],
        };
        let dev = User {
            name: "d".into(),
            groups: vec!["devs".into()],
        };
        let other = User {
            name: "o".into(),
            groups: vec![AUTHENTICATED.into()],
        };
        assert!(allowed(&s, &sa, &res("get", "secrets", "x", "one")));
        assert!(!allowed(&s, &sa, &res("get", "secrets", "x", "two")));
        assert!(!allowed(&s, &sa, &res("list", "secrets", "x", "")));
        assert!(allowed(&s, &dev, &res("create", "configmaps", "x", "")));
        assert!(!allowed(&s, &dev, &res("create", "configmaps", "y", "")));
        assert!(!allowed(&s, &other, &res("get", "configmaps", "x", "a")));
        assert_eq!(
            forbidden(&other, &res("create", "secrets", "kwg-system", "")).message,
            "secrets is forbidden: User \"o\" cannot create resource \"secrets\" in API group \"\" in the namespace \"kwg-system\""
        );
        assert_eq!(
            forbidden(&other, &res("list", "namespaces", "", "")).message,
            "namespaces is forbidden: User \"o\" cannot list resource \"namespaces\" in API group \"\" at the cluster scope"
        );
    }

    #[test]
    fn non_resource_urls() {
        let rule = json!({"nonResourceURLs": ["/api", "/apis/*"], "verbs": ["get"]});
        let get = |p: &str| Attrs::NonResource {
            verb: "get".into(),
            path: p.into(),
        };
        assert!(rule_allows(&rule, &get("/api")));
        assert!(rule_allows(&rule, &get("/apis/apps/v1")));
        assert!(!rule_allows(&rule, &get("/api/v1")));
    }
}
