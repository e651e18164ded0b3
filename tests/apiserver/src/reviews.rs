//! Access reviews: SelfSubjectAccessReview, SubjectAccessReview and SelfSubjectRulesReview,
//! answered by the RBAC engine.

use http::Response;
use serde_json::{Value, json};

use crate::Shared;
use crate::http::{Body, Req, json_response};
use crate::kinds::Kind;
use crate::rbac::{self, Attrs, User};
use crate::status::{ApiError, FieldError};

/// SelfSubjectAccessReview (`subject` = the caller) and SubjectAccessReview (the subject is
/// `spec.user`/`spec.groups`, exactly as given: no implicit `system:authenticated`).
pub(crate) fn access_review(
    shared: &Shared,
    req: &Req,
    subject: Option<&User>,
    kind: &Kind,
) -> Result<Response<Body>, ApiError> {
    let mut review = req.json_body()?;
    let spec = &review["spec"];
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    let resource = spec.get("resourceAttributes").filter(|r| r.is_object());
    let non_resource = spec.get("nonResourceAttributes").filter(|r| r.is_object());
    let mut errs = Vec::new();
    if resource.is_some() && non_resource.is_some() {
        errs.push(FieldError::invalid(
            "spec.nonResourceAttributes",
            "&authorization.NonResourceAttributes{...}".into(),
            "cannot be specified in combination with resourceAttributes",
        ));
    }
    let subject = match subject {
        Some(u) => u.clone(),
        None => {
            let groups: Vec<String> = spec["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|g| g.as_str().map(str::to_string))
                .collect();
            if s(&spec["user"]).is_empty() && groups.is_empty() {
                errs.push(FieldError::invalid(
                    "spec.user",
                    "\"\"".into(),
                    "at least one of user or group must be specified",
                ));
            }
            User {
                name: s(&spec["user"]),
                groups,
            }
        }
    };
    let attrs = match (resource, non_resource) {
        (Some(r), _) => Attrs::Resource {
            verb: s(&r["verb"]),
            group: s(&r["group"]),
            resource: s(&r["resource"]),
            subresource: s(&r["subresource"]),
            namespace: s(&r["namespace"]),
            name: s(&r["name"]),
        },
        (None, Some(n)) => Attrs::NonResource {
            verb: s(&n["verb"]),
            path: s(&n["path"]),
        },
        (None, None) => {
            errs.push(FieldError::invalid(
                "spec.resourceAttributes",
                "nil".into(),
                "exactly one of nonResourceAttributes or resourceAttributes must be specified",
            ));
            Attrs::NonResource {
                verb: String::new(),
                path: String::new(),
            }
        }
    };
    if !errs.is_empty() {
        return Err(ApiError::invalid(kind, "", errs));
    }
    let allowed = rbac::allowed(&shared.store(), &subject, &attrs);
    review["apiVersion"] = json!(kind.api_version());
    review["kind"] = json!(kind.kind);
    if !review["metadata"].is_object() {
        review["metadata"] = json!({});
    }
    review["metadata"]["creationTimestamp"] = Value::Null;
    review["status"] = json!({"allowed": allowed});
    Ok(json_response(201, &review))
}

/// `kubectl auth can-i --list`: the rules granted to the caller in a namespace.
pub(crate) fn self_subject_rules_review(
    shared: &Shared,
    req: &Req,
    user: &User,
    kind: &Kind,
) -> Result<Response<Body>, ApiError> {
    let body = req.json_body()?;
    let namespace = body["spec"]["namespace"].as_str().unwrap_or("").to_string();
    let store = shared.store();
    let (mut resource_rules, mut non_resource_rules) = (Vec::new(), Vec::new());
    for rule in rbac::user_rules(&store, user, &namespace) {
        let pick = |fields: &[&str]| -> Value {
            fields
                .iter()
                .filter_map(|f| rule.get(*f).map(|v| (f.to_string(), v.clone())))
                .collect()
        };
        if rule.get("nonResourceURLs").is_some() {
            non_resource_rules.push(pick(&["verbs", "nonResourceURLs"]));
        } else {
            resource_rules.push(pick(&["verbs", "apiGroups", "resources", "resourceNames"]));
        }
    }
    let review = json!({
        "apiVersion": kind.api_version(),
        "kind": kind.kind,
        "metadata": {"creationTimestamp": null},
        "spec": {"namespace": namespace},
        "status": {"resourceRules": resource_rules, "nonResourceRules": non_resource_rules, "incomplete": false},
    });
    Ok(json_response(201, &review))
}
