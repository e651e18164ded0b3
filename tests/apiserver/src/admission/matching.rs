//! Whether a ValidatingAdmissionPolicy's `matchConstraints` (or a binding's
//! `matchResources`) select a request: resource rules, exclusions, namespace and object
//! selectors, as `k8s.io/apiserver/pkg/admission/plugin/policy/matching` decides.

use serde_json::Value;

use super::{Attributes, Operation};
use crate::selectors::LabelSelector;

fn strs(v: &Value) -> impl Iterator<Item = &str> {
    v.as_array().into_iter().flatten().filter_map(Value::as_str)
}

fn any_or(list: &Value, x: &str) -> bool {
    strs(list).any(|v| v == "*" || v == x)
}

/// `resources` entries: `secrets`, `*`, `secrets/*`, `*/status`, `*/*`.
fn resource_matches(list: &Value, resource: &str, subresource: &str) -> bool {
    strs(list).any(|r| {
        let (res, sub) = r.split_once('/').unwrap_or((r, ""));
        let res_ok = res == "*" || res == resource;
        let sub_ok = if r.contains('/') {
            sub == "*" || sub == subresource
        } else {
            // `*` alone means all resources but no subresources.
            subresource.is_empty()
        };
        res_ok && sub_ok
    })
}

/// One `NamedRuleWithOperations`.
fn rule_matches(rule: &Value, a: &Attributes) -> bool {
    let scope = rule["scope"].as_str().unwrap_or("*");
    let scope_ok = match scope {
        "Cluster" => !a.kind.namespaced,
        "Namespaced" => a.kind.namespaced,
        _ => true,
    };
    let names_ok = strs(&rule["resourceNames"]).next().is_none()
        || strs(&rule["resourceNames"]).any(|n| n == a.name);
    any_or(&rule["operations"], a.operation.as_str())
        && any_or(&rule["apiGroups"], a.kind.group)
        && any_or(&rule["apiVersions"], a.kind.version)
        && resource_matches(&rule["resources"], a.kind.plural, a.subresource)
        && scope_ok
        && names_ok
}

fn labels_match(selector: &Value, obj: Option<&Value>) -> Result<bool, String> {
    if selector.is_null() {
        return Ok(true);
    }
    let sel = LabelSelector::from_object(selector)?;
    Ok(obj.is_some_and(|o| sel.matches(o)))
}

/// Whether `constraints` (MatchResources) select the request. `namespace` is the request's
/// Namespace object (None for cluster-scoped resources).
pub fn matches(
    constraints: &Value,
    a: &Attributes,
    namespace: Option<&Value>,
) -> Result<bool, String> {
    let included = constraints["resourceRules"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|r| rule_matches(r, a));
    // A binding without matchResources leaves the choice to its policy.
    let no_rules = constraints.get("resourceRules").is_none();
    if !(included || no_rules) {
        return Ok(false);
    }
    if constraints["excludeResourceRules"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|r| rule_matches(r, a))
    {
        return Ok(false);
    }
    // Cluster-scoped objects match any namespaceSelector, except Namespaces themselves,
    // which are matched on their own labels.
    let ns_selector = &constraints["namespaceSelector"];
    let ns_ok = if a.kind.is("", "namespaces") {
        labels_match(ns_selector, a.object.or(a.old_object))?
    } else if a.kind.namespaced {
        labels_match(ns_selector, namespace)?
    } else {
        true
    };
    let obj_selector = &constraints["objectSelector"];
    let obj_ok = labels_match(obj_selector, a.object)? || labels_match(obj_selector, a.old_object)?;
    Ok(ns_ok && obj_ok)
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::find;
    use crate::rbac::User;
    use serde_json::json;

    #[test]
    fn rules_selectors_and_exclusions() {
        let secrets = find("", "v1", "secrets").unwrap();
        let user = User {
            name: "u".into(),
            groups: vec![],
        };
        let obj = json!({"metadata": {"name": "s", "labels": {"kwg.io/peer": "true"}}});
        let ns = json!({"metadata": {"name": "kwg-system", "labels": {"kubernetes.io/metadata.name": "kwg-system"}}});
        let a = Attributes {
            operation: Operation::Create,
            kind: secrets,
            subresource: "",
            namespace: "kwg-system",
            name: "s",
            object: Some(&obj),
            old_object: None,
            user: &user,
            dry_run: false,
        };
        let c = json!({
            "resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"], "resources": ["secrets"]}],
            "namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["kwg-system"]}]},
        });
        assert_eq!(matches(&c, &a, Some(&ns)), Ok(true));
        let other_ns = json!({"metadata": {"name": "default", "labels": {"kubernetes.io/metadata.name": "default"}}});
        assert_eq!(matches(&c, &a, Some(&other_ns)), Ok(false));
        let del = Attributes {
            operation: Operation::Delete,
            ..a
        };
        assert_eq!(matches(&c, &del, Some(&ns)), Ok(false));
        let status = Attributes {
            subresource: "status",
            ..a
        };
        assert_eq!(matches(&c, &status, Some(&ns)), Ok(false));
        let mut excl = c.clone();
        excl["excludeResourceRules"] = json!([{"apiGroups": ["*"], "apiVersions": ["*"], "operations": ["*"], "resources": ["*"], "resourceNames": ["s"]}]);
        assert_eq!(matches(&excl, &a, Some(&ns)), Ok(false));
        let by_label = json!({"objectSelector": {"matchLabels": {"kwg.io/peer": "false"}}});
        assert_eq!(matches(&by_label, &a, Some(&ns)), Ok(false));
    }
}
