//! TokenRequest: `POST /api/v1/namespaces/NS/serviceaccounts/NAME/token`
//! (authentication.k8s.io/v1, `kubectl create token`), as kube-apiserver's
//! pkg/registry/core/serviceaccount/storage/token.go answers it, and the authenticator of the
//! tokens it issues (pkg/serviceaccount/claims.go): a token authenticates as the
//! ServiceAccount until it expires (with go-jose's 60 s leeway), while the ServiceAccount (same
//! uid) and the bound object (same uid) exist, and only when one of its audiences is the API
//! server's. Tokens are opaque, not JWTs.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use http::Response;
use serde_json::{Value, json};

use crate::Shared;
use crate::http::{Body, Req, json_response};
use crate::kinds::{Kind, NameRule, find};
use crate::rbac::User;
use crate::status::{ApiError, FieldError, go_str};
use crate::store::{Store, meta_str};

/// The API server's audience (`--api-audiences`, by default the issuer of kubeadm and kind).
pub const API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";
/// `SetDefaults_TokenRequestSpec`: one hour.
const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// `ValidateTokenRequest`'s bounds.
const MIN_EXPIRATION_SECONDS: i64 = 10 * 60;
const MAX_EXPIRATION_SECONDS: i64 = 1 << 32;
/// go-jose's `jwt.DefaultLeeway`: a token is refused once the clock is past `exp` + 1 minute.
const LEEWAY: Duration = Duration::from_secs(60);

/// The kind named in TokenRequest errors (`TokenRequest.authentication.k8s.io "" is invalid`).
static TOKEN_REQUEST: Kind = Kind {
    group: "authentication.k8s.io",
    version: "v1",
    plural: "tokenrequests",
    singular: "tokenrequest",
    kind: "TokenRequest",
    namespaced: true,
    short_names: &[],
    verbs: &["create"],
    categories: &[],
    subresources: &[],
    name_rule: NameRule::Subdomain,
    generation: false,
};

fn kind(plural: &str) -> &'static Kind {
    find("", "v1", plural).expect("core kinds are served")
}

/// The object a token is bound to (`spec.boundObjectRef`): Pod, Secret or Node.
#[derive(Debug, Clone)]
pub struct BoundObject {
    kind: &'static Kind,
    namespace: String,
    name: String,
    uid: String,
}

/// What the server remembers of an issued token (the claims of the real JWT).
#[derive(Debug, Clone)]
pub struct BoundToken {
    namespace: String,
    service_account: String,
    service_account_uid: String,
    audiences: Vec<String>,
    expires: DateTime<Utc>,
    bound: Option<BoundObject>,
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn metadata_mismatch(name: &str, field: &str, value: &str, what: &str) -> ApiError {
    let detail = format!("must match the service account {what} if specified");
    let err = FieldError::invalid(format!("metadata.{field}"), go_str(value), detail);
    ApiError::invalid(&TOKEN_REQUEST, name, vec![err])
}

fn expiration_seconds(spec: &Value) -> Result<i64, ApiError> {
    let secs = match &spec["expirationSeconds"] {
        Value::Null => DEFAULT_EXPIRATION_SECONDS,
        v => v.as_i64().ok_or_else(|| {
            ApiError::bad_request(format!(
                "spec.expirationSeconds: {v} is not an integer number of seconds"
            ))
        })?,
    };
    let detail = if secs < MIN_EXPIRATION_SECONDS {
        "may not specify a duration less than 10 minutes"
    } else if secs > MAX_EXPIRATION_SECONDS {
        "may not specify a duration larger than 2^32 seconds"
    } else {
        return Ok(secs);
    };
    let err = FieldError::invalid("spec.expirationSeconds", secs.to_string(), detail);
    Err(ApiError::invalid(&TOKEN_REQUEST, "", vec![err]))
}

/// `spec.boundObjectRef` checked against the store, as token.go does.
fn bound_object(store: &Store, ns: &str, sa: &str, r: &Value) -> Result<BoundObject, ApiError> {
    let s = |f: &str| r[f].as_str().unwrap_or("").to_string();
    let (api_version, kind_name, name, uid) = (s("apiVersion"), s("kind"), s("name"), s("uid"));
    // schema.FromAPIVersionAndKind: "v1" is the core group; an unparsable version is dropped.
    let (group, version) = match api_version.split('/').collect::<Vec<_>>()[..] {
        [v] => ("", v),
        [g, v] => (g, v),
        _ => ("", ""),
    };
    let (plural, namespace) = match (group, kind_name.as_str()) {
        ("", "Pod") => ("pods", ns),
        ("", "Secret") => ("secrets", ns),
        ("", "Node") => ("nodes", ""),
        _ => {
            return Err(ApiError::bad_request(format!(
                "cannot bind token to object of type {group}/{version}, Kind={kind_name}"
            )));
        }
    };
    let kind = kind(plural);
    let obj = store
        .get(kind, namespace, &name)
        .ok_or_else(|| ApiError::not_found(kind, &name))?;
    if plural == "pods" && obj["spec"]["serviceAccountName"].as_str().unwrap_or("") != sa {
        return Err(ApiError::bad_request(format!(
            "cannot bind token for serviceaccount {} to pod running with different serviceaccount name.",
            go_str(sa)
        )));
    }
    let actual = meta_str(obj, "uid");
    if !uid.is_empty() && uid != actual {
        return Err(ApiError {
            code: 409,
            reason: "Conflict",
            message: format!(
                "Operation cannot be fulfilled on {kind_name} {}: the UID in the bound object reference ({uid}) does not match the UID in record. The object might have been deleted and then recreated",
                go_str(&name)
            ),
            details: Some(json!({"name": name, "kind": kind_name})),
        });
    }
    Ok(BoundObject {
        kind,
        namespace: namespace.to_string(),
        name,
        uid: actual.to_string(),
    })
}

/// The answer to a TokenRequest for ServiceAccount `ns/name` carrying `token`, and the
/// token's record. Checks in token.go's order: metadata, ServiceAccount (404), validation
/// (422), bound object.
pub fn issue(
    store: &Store,
    ns: &str,
    name: &str,
    body: &Value,
    now: DateTime<Utc>,
    token: &str,
) -> Result<(Value, BoundToken), ApiError> {
    let meta = &body["metadata"];
    let (body_name, body_ns) = (meta_str(body, "name"), meta_str(body, "namespace"));
    if !body_name.is_empty() && body_name != name {
        return Err(metadata_mismatch(name, "name", body_name, "name"));
    }
    if !body_ns.is_empty() && body_ns != ns {
        return Err(metadata_mismatch(name, "namespace", body_ns, "namespace"));
    }
    let sa_kind = kind("serviceaccounts");
    let sa = store
        .get(sa_kind, ns, name)
        .ok_or_else(|| ApiError::not_found(sa_kind, name))?;
    let spec = &body["spec"];
    let mut audiences: Vec<String> = spec["audiences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect();
    if audiences.is_empty() {
        audiences.push(API_AUDIENCE.to_string());
    }
    let secs = expiration_seconds(spec)?;
    let reference = spec.get("boundObjectRef").filter(|r| r.is_object());
    let bound = reference
        .map(|r| bound_object(store, ns, name, r))
        .transpose()?;
    let expires = now + chrono::Duration::seconds(secs);
    let mut out_meta = if meta.is_object() {
        meta.clone()
    } else {
        json!({})
    };
    out_meta["name"] = json!(name);
    out_meta["namespace"] = json!(ns);
    out_meta["creationTimestamp"] = json!(time(now));
    let mut out_spec = json!({"audiences": audiences, "expirationSeconds": secs});
    if let Some(r) = reference {
        out_spec["boundObjectRef"] = r.clone();
    }
    let answer = json!({
        "kind": TOKEN_REQUEST.kind,
        "apiVersion": TOKEN_REQUEST.api_version(),
        "metadata": out_meta,
        "spec": out_spec,
        "status": {"token": token, "expirationTimestamp": time(expires)},
    });
    let record = BoundToken {
        namespace: ns.to_string(),
        service_account: name.to_string(),
        service_account_uid: meta_str(sa, "uid").to_string(),
        audiences,
        expires,
        bound,
    };
    Ok((answer, record))
}

/// The ServiceAccount an issued token authenticates as at `now`, or None (401).
pub fn authenticate(store: &Store, t: &BoundToken, now: DateTime<Utc>) -> Option<User> {
    if now > t.expires + LEEWAY || !t.audiences.iter().any(|a| a == API_AUDIENCE) {
        return None;
    }
    let sa = store.get(kind("serviceaccounts"), &t.namespace, &t.service_account)?;
    if meta_str(sa, "uid") != t.service_account_uid {
        return None;
    }
    if let Some(b) = &t.bound {
        let obj = store.get(b.kind, &b.namespace, &b.name)?;
        if meta_str(obj, "uid") != b.uid {
            return None;
        }
    }
    Some(crate::tokens::service_account_user(
        &t.namespace,
        &t.service_account,
    ))
}

/// Serve a TokenRequest (authorized by the caller as `create` on `serviceaccounts/token`).
pub(crate) fn create(
    shared: &Shared,
    req: &Req,
    ns: &str,
    name: &str,
) -> Result<Response<Body>, ApiError> {
    let body = req.json_body()?;
    let token = crate::new_token();
    let (answer, record) = issue(&shared.store(), ns, name, &body, req.now, &token)?;
    tracing::info!(
        namespace = ns,
        service_account = name,
        expires = %record.expires,
        "issued a TokenRequest token"
    );
    shared.add_bound_token(&token, record);
    Ok(json_response(201, &answer))
}

#[cfg(test)]
mod tests;
