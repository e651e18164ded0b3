//! ValidatingAdmissionPolicy (admissionregistration.k8s.io/v1): the stored policies and
//! bindings are evaluated on every create, update and delete a user makes, with CEL, and a
//! denial is answered as `k8s.io/apiserver/pkg/admission/plugin/policy/validating` does.
//!
//! Supported: matchConstraints/matchResources (resourceRules, excludeResourceRules,
//! namespaceSelector, objectSelector), matchConditions, variables, validations (expression,
//! message, messageExpression, reason), failurePolicy, validationActions (Deny; Warn as a
//! response warning; Audit accepted, no audit log), paramKind with a binding's paramRef.name. The variables
//! `object`, `oldObject`, `request`, `params`, `namespaceObject`, `variables`. Not supported:
//! `authorizer`, the CEL cost budget, type-checking warnings in the policy status.

mod matching;

use serde_json::{Value, json};

use crate::cel::{self, Activation};
use crate::kinds::{Kind, find};
use crate::rbac::User;
use crate::status::{ApiError, FieldError, go_str};
use crate::store::{Store, meta_str};

/// What admission is asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
}

/// One request, as the admission chain sees it (after defaulting and validation).
#[derive(Debug, Clone, Copy)]
pub struct Attributes<'a> {
    pub operation: Operation,
    pub kind: &'static Kind,
    pub subresource: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    /// The new object (None on delete).
    pub object: Option<&'a Value>,
    /// The stored object (None on create).
    pub old_object: Option<&'a Value>,
    pub user: &'a User,
    pub dry_run: bool,
}

const GROUP: &str = "admissionregistration.k8s.io";

/// The largest `messageExpression` result the real server shows (celconfig).
const MAX_MESSAGE_BYTES: usize = 5 * 1024;

/// One denial: the policy, binding, message and reason.
struct Denial {
    policy: String,
    binding: String,
    message: String,
    reason: &'static str,
}

/// Run every matching policy; the first denial is the request's answer. Ok holds the
/// warnings of bindings with `validationActions: [Warn]`.
pub fn validate(store: &Store, a: &Attributes) -> Result<Vec<String>, ApiError> {
    let (Some(policies), Some(bindings)) = (
        find(GROUP, "v1", "validatingadmissionpolicies"),
        find(GROUP, "v1", "validatingadmissionpolicybindings"),
    ) else {
        return Ok(Vec::new());
    };
    let mut warnings = Vec::new();
    let namespace = if a.kind.namespaced && !a.namespace.is_empty() {
        find("", "v1", "namespaces").and_then(|k| store.get(k, "", a.namespace))
    } else {
        None
    };
    let bindings = store.list(bindings, None);
    for policy in store.list(policies, None) {
        let name = meta_str(policy, "name");
        let spec = &policy["spec"];
        let fail = spec["failurePolicy"].as_str() != Some("Ignore");
        let deny_on = |message: String| Denial {
            policy: name.to_string(),
            binding: String::new(),
            message,
            reason: "Invalid",
        };
        match matching::matches(&spec["matchConstraints"], a, namespace) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) if fail => return Err(denied(a, &deny_on(e))),
            Err(_) => continue,
        }
        for binding in bindings
            .iter()
            .filter(|b| b["spec"]["policyName"].as_str() == Some(name))
        {
            let bspec = &binding["spec"];
            let binding_matches = bspec
                .get("matchResources")
                .filter(|m| m.is_object())
                .map_or(Ok(true), |m| matching::matches(m, a, namespace));
            if !binding_matches.unwrap_or(fail) {
                continue;
            }
            let verdict = match params(store, spec, bspec, a.namespace) {
                Ok(p) => evaluate(spec, fail, a, namespace, p.as_ref(), name),
                Err(None) => continue,
                Err(Some(message)) => Some(deny_on(message)),
            };
            let Some(mut d) = verdict else { continue };
            let actions: Vec<&str> = bspec["validationActions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            d.binding = meta_str(binding, "name").to_string();
            if actions.contains(&"Deny") {
                return Err(denied(a, &d));
            }
            if actions.contains(&"Warn") {
                warnings.push(format!(
                    "Validation failed for ValidatingAdmissionPolicy '{}' with binding '{}': {}",
                    d.policy, d.binding, d.message
                ));
            }
        }
    }
    Ok(warnings)
}

/// The params object of a binding: Ok(None) without paramKind; Err(None) to skip the binding
/// (params not found, `parameterNotFoundAction: Allow`); Err(Some(msg)) to deny.
fn params(
    store: &Store,
    spec: &Value,
    bspec: &Value,
    request_ns: &str,
) -> Result<Option<Value>, Option<String>> {
    let Some(kind) = spec.get("paramKind").filter(|k| k.is_object()) else {
        return Ok(None);
    };
    let api_version = kind["apiVersion"].as_str().unwrap_or("");
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let pk = crate::kinds::all().iter().find(|k| {
        k.group == group && k.version == version && Some(k.kind) == kind["kind"].as_str()
    });
    let r = &bspec["paramRef"];
    let name = r["name"].as_str().unwrap_or("");
    let found = pk.and_then(|pk| {
        let ns = if pk.namespaced {
            r["namespace"]
                .as_str()
                .filter(|n| !n.is_empty())
                .unwrap_or(request_ns)
        } else {
            ""
        };
        store.get(pk, ns, name).cloned()
    });
    match (found, r["parameterNotFoundAction"].as_str()) {
        (Some(p), _) => Ok(Some(p)),
        (None, Some("Allow")) => Err(None),
        (None, _) => Err(Some(
            "no params found for policy binding with `Deny` parameterNotFoundAction".into(),
        )),
    }
}

/// The real server's error for a denial: 422 Invalid unless the validation set a reason.
fn denied(a: &Attributes, d: &Denial) -> ApiError {
    let message = if d.binding.is_empty() {
        format!(
            "ValidatingAdmissionPolicy '{}' denied request: {}",
            d.policy, d.message
        )
    } else {
        format!(
            "ValidatingAdmissionPolicy '{}' with binding '{}' denied request: {}",
            d.policy, d.binding, d.message
        )
    };
    let name = if !a.name.is_empty() {
        a.name.to_string()
    } else {
        a.object
            .map(|o| meta_str(o, "name"))
            .filter(|n| !n.is_empty())
            .or_else(|| a.object.map(|o| meta_str(o, "generateName")))
            .filter(|n| !n.is_empty())
            .unwrap_or("Unknown")
            .to_string()
    };
    let mut e = ApiError::forbidden(&a.kind.group_resource(), &name, message.clone());
    e.reason = d.reason;
    e.code = match d.reason {
        "Forbidden" => 403,
        "Unauthorized" => 401,
        "RequestEntityTooLarge" => 413,
        _ => 422,
    };
    if let Some(details) = e.details.as_mut() {
        details["causes"] = json!([{"message": message}]);
    }
    e
}

/// The `request` variable: the AdmissionRequest without its objects.
fn request(a: &Attributes) -> Value {
    let k = a.kind;
    let options = match a.operation {
        Operation::Create => json!({"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}),
        Operation::Update => json!({"kind": "UpdateOptions", "apiVersion": "meta.k8s.io/v1"}),
        Operation::Delete => json!({"kind": "DeleteOptions", "apiVersion": "meta.k8s.io/v1"}),
    };
    json!({
        "kind": {"group": k.group, "version": k.version, "kind": k.kind},
        "resource": {"group": k.group, "version": k.version, "resource": k.plural},
        "subResource": a.subresource,
        "requestKind": {"group": k.group, "version": k.version, "kind": k.kind},
        "requestResource": {"group": k.group, "version": k.version, "resource": k.plural},
        "requestSubResource": a.subresource,
        "name": a.name,
        "namespace": a.namespace,
        "operation": a.operation.as_str(),
        "userInfo": {"username": a.user.name, "groups": a.user.groups},
        "dryRun": a.dry_run,
        "options": options,
    })
}

/// Evaluate matchConditions, variables and validations; Some(denial) when denied.
fn evaluate(
    spec: &Value,
    fail: bool,
    a: &Attributes,
    namespace: Option<&Value>,
    params: Option<&Value>,
    policy: &str,
) -> Option<Denial> {
    let mut act = Activation::default();
    act.bind("object", a.object.unwrap_or(&Value::Null));
    act.bind("oldObject", a.old_object.unwrap_or(&Value::Null));
    act.bind("request", &request(a));
    act.bind("params", params.unwrap_or(&Value::Null));
    let mut ns = namespace.cloned().unwrap_or(Value::Null);
    if let Some(m) = ns["metadata"].as_object_mut() {
        m.remove("managedFields");
    }
    act.bind("namespaceObject", &ns);
    let deny = |message: String, reason: &'static str| Denial {
        policy: policy.to_string(),
        binding: String::new(),
        message,
        reason,
    };
    let on_error = |message: String| fail.then(|| deny(message, "Invalid"));
    let run = |expr: &str, act: &Activation| {
        cel::compile(expr)
            .and_then(|p| p.eval(act))
            .map_err(|e| format!("expression '{expr}' resulted in error: {}", e.0))
    };
    for cond in spec["matchConditions"].as_array().into_iter().flatten() {
        let expr = cond["expression"].as_str().unwrap_or("");
        match run(expr, &act).map(|v| cel::as_bool(&v)) {
            Ok(Some(true)) => {}
            Ok(Some(false)) => return None,
            Ok(None) => return on_error(format!("matchCondition '{expr}' must evaluate to bool")),
            Err(e) => return on_error(e),
        }
    }
    let mut vars = std::collections::HashMap::new();
    for v in spec["variables"].as_array().into_iter().flatten() {
        let expr = v["expression"].as_str().unwrap_or("");
        act.bind_value("variables", vars.clone().into());
        // A variable that fails is left out: expressions that read it fail in turn.
        if let Ok(value) = run(expr, &act) {
            vars.insert(v["name"].as_str().unwrap_or("").to_string(), value);
        }
    }
    act.bind_value("variables", vars.into());
    for v in spec["validations"].as_array().into_iter().flatten() {
        let expr = v["expression"].as_str().unwrap_or("");
        match run(expr, &act) {
            Err(e) => {
                if let Some(d) = on_error(e) {
                    return Some(d);
                }
            }
            Ok(r) if cel::as_bool(&r) == Some(true) => {}
            Ok(_) => {
                let from_expr = v["messageExpression"]
                    .as_str()
                    .and_then(|m| run(m, &act).ok())
                    .and_then(|r| cel::as_string(&r))
                    .map(|m| m.trim().to_string())
                    .filter(|m| m.len() <= MAX_MESSAGE_BYTES && !m.contains('\n'));
                let message = from_expr
                    .filter(|m| !m.is_empty())
                    .or_else(|| v["message"].as_str().map(|m| m.trim().to_string()))
                    .filter(|m| !m.is_empty())
                    .unwrap_or_else(|| format!("failed expression: {}", expr.trim()));
                let reason = match v["reason"].as_str() {
                    Some("Forbidden") => "Forbidden",
                    Some("Unauthorized") => "Unauthorized",
                    Some("RequestEntityTooLarge") => "RequestEntityTooLarge",
                    _ => "Invalid",
                };
                return Some(deny(message, reason));
            }
        }
    }
    None
}

/// The real server's 422 checks of a policy or binding: required fields, and CEL that
/// compiles (the compiler's own wording follows `compilation failed: `).
pub fn config_errors(kind: &Kind, obj: &Value) -> Vec<FieldError> {
    let spec = &obj["spec"];
    let mut errs = Vec::new();
    if kind.plural == "validatingadmissionpolicybindings" {
        if spec["policyName"].as_str().is_none_or(str::is_empty) {
            errs.push(FieldError::required("spec.policyName", ""));
        }
        if spec["validationActions"]
            .as_array()
            .is_none_or(Vec::is_empty)
        {
            errs.push(FieldError::required(
                "spec.validationActions",
                "at least one validation action is required",
            ));
        }
        return errs;
    }
    if !spec["matchConstraints"].is_object() {
        errs.push(FieldError::required("spec.matchConstraints", ""));
    }
    let count = |f: &str| spec[f].as_array().map_or(0, Vec::len);
    if count("validations") == 0 && count("auditAnnotations") == 0 {
        errs.push(FieldError::required(
            "spec.validations",
            "validations or auditAnnotations must contain at least one item",
        ));
    }
    for (list, field) in [
        ("matchConditions", "expression"),
        ("variables", "expression"),
        ("validations", "expression"),
        ("validations", "messageExpression"),
    ] {
        for (i, item) in spec[list].as_array().into_iter().flatten().enumerate() {
            let path = format!("spec.{list}[{i}].{field}");
            match item[field].as_str() {
                None if field == "expression" => {
                    errs.push(FieldError::required(path, "expression is not specified"));
                }
                None => {}
                Some(src) => {
                    if let Err(e) = cel::compile(src) {
                        errs.push(FieldError::invalid(path, go_str(src), e.0));
                    }
                }
            }
        }
    }
    errs
}

#[cfg(test)]
mod tests;
