//! `metav1.Status` errors with the real API server's reasons and message shapes.

use serde_json::{Value, json};

use crate::kinds::Kind;

/// An error answered to a client as a `Status` object.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// The generic 404 for paths and resources the server does not serve.
    pub fn unknown_path() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with_details(json!({}))
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    pub fn not_found(kind: &Kind, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} {:?} not found", kind.group_resource(), name),
        )
        .with_details(details(kind, name))
    }

    pub fn namespace_not_found(namespace: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("namespaces {namespace:?} not found"),
        )
        .with_details(json!({"name": namespace, "kind": "namespaces"}))
    }

    pub fn already_exists(kind: &Kind, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} {:?} already exists", kind.group_resource(), name),
        )
        .with_details(details(kind, name))
    }

    pub fn conflict(kind: &Kind, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} {:?}: the object has been modified; please apply your changes to the latest version and try again",
                kind.group_resource(),
                name
            ),
        )
        .with_details(details(kind, name))
    }

    /// 403 in the shape of the real authorizer's denial.
    pub fn forbidden(group_resource: &str, name: &str, reason: String) -> Self {
        let message = match (group_resource.is_empty(), name.is_empty()) {
            (true, _) => format!("forbidden: {reason}"),
            (false, true) => format!("{group_resource} is forbidden: {reason}"),
            (false, false) => format!("{group_resource} {name:?} is forbidden: {reason}"),
        };
        let (resource, group) = group_resource
            .split_once('.')
            .unwrap_or((group_resource, ""));
        let mut d = json!({"kind": resource});
        if !group.is_empty() {
            d["group"] = json!(group);
        }
        if !name.is_empty() {
            d["name"] = json!(name);
        }
        Self::new(403, "Forbidden", message).with_details(d)
    }

    /// 422 listing field errors, e.g. `Service "x" is invalid: spec.clusterIPs: Invalid value: ...`.
    pub fn invalid(kind: &Kind, name: &str, causes: Vec<FieldError>) -> Self {
        let joined = causes.iter().map(FieldError::to_string).collect::<Vec<_>>();
        let body = if joined.len() == 1 {
            joined[0].clone()
        } else {
            format!("[{}]", joined.join(", "))
        };
        let mut d = json!({"name": name, "kind": kind.kind});
        if !kind.group.is_empty() {
            d["group"] = json!(kind.group);
        }
        d["causes"] = causes
            .iter()
            .map(|c| json!({"reason": c.reason, "message": c.detail_message(), "field": c.field}))
            .collect();
        Self::new(
            422,
            "Invalid",
            format!("{} {:?} is invalid: {}", kind.group_kind(), name, body),
        )
        .with_details(d)
    }

    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

fn details(kind: &Kind, name: &str) -> Value {
    let mut d = json!({"name": name, "kind": kind.plural});
    if !kind.group.is_empty() {
        d["group"] = json!(kind.group);
    }
    d
}

/// One field error of a 422, formatted like apimachinery's `field.Error`.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub field: String,
    pub reason: &'static str,
    /// `Invalid value: "x"` / `Required value` / ... part, without the field.
    pub kind_text: String,
    pub detail: String,
}

impl FieldError {
    /// `Invalid value: <go-syntax value>: detail`.
    pub fn invalid(field: impl Into<String>, value_go: String, detail: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            reason: "FieldValueInvalid",
            kind_text: format!("Invalid value: {value_go}"),
            detail: detail.into(),
        }
    }

    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            reason: "FieldValueRequired",
            kind_text: "Required value".into(),
            detail: detail.into(),
        }
    }

    pub fn not_supported(field: impl Into<String>, value_go: String, supported: &[&str]) -> Self {
        let list = supported
            .iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        FieldError {
            field: field.into(),
            reason: "FieldValueNotSupported",
            kind_text: format!("Unsupported value: {value_go}"),
            detail: format!("supported values: {list}"),
        }
    }

    fn detail_message(&self) -> String {
        if self.detail.is_empty() {
            self.kind_text.clone()
        } else {
            format!("{}: {}", self.kind_text, self.detail)
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.detail_message())
    }
}

/// A Go `%#v`-like rendering of a string (Go quotes like Rust's `{:?}` for plain ASCII).
pub fn go_str(s: &str) -> String {
    format!("{s:?}")
}

/// Go's rendering of a `[]string{...}`.
pub fn go_str_slice(items: &[String]) -> String {
    format!(
        "[]string{{{}}}",
        items
            .iter()
            .map(|s| go_str(s))
            .collect::<Vec<_>>()
            .join(", ")
    )
}
