//! The service-account token controller (kube-controller-manager's `TokensController`) and
//! the legacy token authenticator: a Secret of type `kubernetes.io/service-account-token`
//! annotated `kubernetes.io/service-account.name` gets `token`, `ca.crt` and `namespace`
//! filled and the `kubernetes.io/service-account.uid` annotation; the token authenticates as
//! the ServiceAccount while the Secret holds it and the ServiceAccount (same uid) exists.
//! A Secret naming a ServiceAccount that does not exist (or another uid) is deleted.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use crate::Shared;
use crate::kinds::{Kind, find};
use crate::rbac::{AUTHENTICATED, User};
use crate::store::{Store, meta_str};

pub const TOKEN_TYPE: &str = "kubernetes.io/service-account-token";
pub const NAME_ANNOTATION: &str = "kubernetes.io/service-account.name";
pub const UID_ANNOTATION: &str = "kubernetes.io/service-account.uid";

/// Where a legacy token came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSecret {
    pub namespace: String,
    pub secret: String,
}

fn secrets() -> &'static Kind {
    find("", "v1", "secrets").expect("secrets are served")
}

fn service_accounts() -> &'static Kind {
    find("", "v1", "serviceaccounts").expect("serviceaccounts are served")
}

fn annotation<'a>(obj: &'a Value, key: &str) -> &'a str {
    obj["metadata"]["annotations"][key].as_str().unwrap_or("")
}

fn data_len(obj: &Value, key: &str) -> usize {
    obj["data"][key].as_str().map_or(0, str::len)
}

/// What the controller does with a token Secret after a write.
#[derive(Debug, PartialEq)]
enum Action {
    Nothing,
    /// The ServiceAccount is missing or has another uid.
    Delete,
    /// Fill the Secret; `mint` when it needs a new token.
    Fill {
        mint: bool,
        sa_uid: String,
    },
}

fn decide(store: &Store, secret: &Value, ca_pem: &str) -> Action {
    if secret["type"].as_str() != Some(TOKEN_TYPE) {
        return Action::Nothing;
    }
    let ns = meta_str(secret, "namespace");
    let sa = store.get(service_accounts(), ns, annotation(secret, NAME_ANNOTATION));
    let uid = annotation(secret, UID_ANNOTATION);
    let Some(sa) = sa.filter(|sa| uid.is_empty() || meta_str(sa, "uid") == uid) else {
        return Action::Delete;
    };
    let needs_ca = secret["data"]["ca.crt"].as_str() != Some(&B64.encode(ca_pem));
    let needs_token = data_len(secret, "token") == 0;
    if !needs_ca && !needs_token && data_len(secret, "namespace") > 0 {
        return Action::Nothing;
    }
    Action::Fill {
        mint: needs_token,
        sa_uid: meta_str(sa, "uid").to_string(),
    }
}

/// Run the controller for the Secret `ns/name` (after any write to it).
pub fn reconcile(shared: &Shared, ns: &str, name: &str) {
    let mut store = shared.store();
    let Some(secret) = store.get(secrets(), ns, name).cloned() else {
        return;
    };
    match decide(&store, &secret, &shared.env.ca_pem) {
        Action::Nothing => {}
        Action::Delete => {
            tracing::info!(
                namespace = ns,
                secret = name,
                "deleting a token Secret of a missing ServiceAccount"
            );
            store.remove(secrets(), ns, name);
        }
        Action::Fill { mint, sa_uid } => {
            let mut filled = secret;
            if mint {
                let token = crate::new_token();
                shared.add_secret_token(
                    &token,
                    TokenSecret {
                        namespace: ns.to_string(),
                        secret: name.to_string(),
                    },
                );
                filled["data"]["token"] = json!(B64.encode(&token));
            }
            filled["data"]["ca.crt"] = json!(B64.encode(&shared.env.ca_pem));
            filled["data"]["namespace"] = json!(B64.encode(ns));
            filled["metadata"]["annotations"][UID_ANNOTATION] = json!(sa_uid);
            tracing::info!(
                namespace = ns,
                secret = name,
                "filled a service-account token Secret"
            );
            store.put(secrets(), filled);
        }
    }
}

/// The ServiceAccount a legacy token authenticates as: only while its Secret still holds the
/// token and the ServiceAccount it names exists with the annotated uid.
pub fn authenticate(store: &Store, token: &str, from: &TokenSecret) -> Option<User> {
    let secret = store.get(secrets(), &from.namespace, &from.secret)?;
    let held = secret["data"]["token"].as_str()?;
    if secret["type"].as_str() != Some(TOKEN_TYPE) || B64.decode(held).ok()? != token.as_bytes() {
        return None;
    }
    let sa_name = annotation(secret, NAME_ANNOTATION);
    let sa = store.get(service_accounts(), &from.namespace, sa_name)?;
    if meta_str(sa, "uid") != annotation(secret, UID_ANNOTATION) {
        return None;
    }
    Some(service_account_user(&from.namespace, sa_name))
}

/// The user a ServiceAccount's token (legacy or TokenRequest) authenticates as.
pub fn service_account_user(ns: &str, name: &str) -> User {
    User {
        name: format!("system:serviceaccount:{ns}:{name}"),
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{ns}"),
            AUTHENTICATED.into(),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decides_like_the_tokens_controller() {
        let mut s = Store::default();
        s.put(
            service_accounts(),
            json!({"metadata": {"name": "gw", "namespace": "x", "uid": "u1"}}),
        );
        let secret = |sa: &str, uid: Option<&str>, data: Value| {
            let mut ann = json!({NAME_ANNOTATION: sa});
            if let Some(u) = uid {
                ann[UID_ANNOTATION] = json!(u);
            }
            json!({"metadata": {"name": "t", "namespace": "x", "annotations": ann}, "type": TOKEN_TYPE, "data": data})
        };
        let fill = |mint| Action::Fill {
            mint,
            sa_uid: "u1".into(),
        };
        assert_eq!(decide(&s, &secret("gw", None, json!({})), "CA"), fill(true));
        assert_eq!(
            decide(&s, &secret("nope", None, json!({})), "CA"),
            Action::Delete
        );
        assert_eq!(
            decide(&s, &secret("gw", Some("u0"), json!({})), "CA"),
            Action::Delete
        );
        let full = json!({"token": "dA==", "ca.crt": B64.encode("CA"), "namespace": "eA=="});
        assert_eq!(
            decide(&s, &secret("gw", Some("u1"), full.clone()), "CA"),
            Action::Nothing
        );
        assert_eq!(
            decide(&s, &secret("gw", Some("u1"), full), "CA2"),
            fill(false)
        );
        let opaque = json!({"metadata": {"name": "o", "namespace": "x"}, "type": "Opaque"});
        assert_eq!(decide(&s, &opaque, "CA"), Action::Nothing);
    }
}
