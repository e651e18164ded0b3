use super::*;

fn now() -> DateTime<Utc> {
    "2025-03-01T10:00:00Z".parse().unwrap()
}

fn store() -> Store {
    let mut s = Store::default();
    let obj =
        |name: &str, uid: &str| json!({"metadata": {"name": name, "namespace": "ci", "uid": uid}});
    s.put(kind("serviceaccounts"), obj("runner", "sa-1"));
    s.put(kind("secrets"), obj("anchor", "secret-1"));
    let mut pod = obj("web", "pod-1");
    pod["spec"] = json!({"serviceAccountName": "default"});
    s.put(kind("pods"), pod);
    s
}

fn issue_with(s: &Store, spec: Value) -> Result<(Value, BoundToken), ApiError> {
    issue(s, "ci", "runner", &json!({"spec": spec}), now(), "tok")
}

#[test]
fn issues_a_token_with_the_real_defaults() {
    let (answer, record) = issue_with(&store(), json!({})).unwrap();
    assert_eq!(answer["kind"], "TokenRequest");
    assert_eq!(answer["apiVersion"], "authentication.k8s.io/v1");
    assert_eq!(answer["metadata"]["name"], "runner");
    assert_eq!(answer["metadata"]["namespace"], "ci");
    assert_eq!(
        answer["metadata"]["creationTimestamp"],
        "2025-03-01T10:00:00Z"
    );
    assert_eq!(answer["spec"]["audiences"], json!([API_AUDIENCE]));
    assert_eq!(answer["spec"]["expirationSeconds"], 3600);
    assert_eq!(answer["status"]["token"], "tok");
    assert_eq!(
        answer["status"]["expirationTimestamp"],
        "2025-03-01T11:00:00Z"
    );
    assert_eq!(record.expires, now() + chrono::Duration::hours(1));
}

#[test]
fn refuses_what_the_real_server_refuses() {
    let s = store();
    let e = issue_with(&s, json!({"expirationSeconds": 300})).unwrap_err();
    assert_eq!((e.code, e.reason), (422, "Invalid"));
    assert_eq!(
        e.message,
        "TokenRequest.authentication.k8s.io \"\" is invalid: spec.expirationSeconds: Invalid value: 300: may not specify a duration less than 10 minutes"
    );
    let e = issue_with(&s, json!({"expirationSeconds": (1i64 << 32) + 1})).unwrap_err();
    assert!(
        e.message
            .ends_with("may not specify a duration larger than 2^32 seconds")
    );
    let e = issue(&s, "ci", "nope", &json!({}), now(), "t").unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (404, "serviceaccounts \"nope\" not found")
    );
    let body = json!({"metadata": {"name": "other"}});
    let e = issue(&s, "ci", "runner", &body, now(), "t").unwrap_err();
    assert_eq!(
        e.message,
        "TokenRequest.authentication.k8s.io \"runner\" is invalid: metadata.name: Invalid value: \"other\": must match the service account name if specified"
    );
    let bind = |r: Value| issue_with(&s, json!({"boundObjectRef": r})).unwrap_err();
    let e = bind(json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "x"}));
    assert_eq!(
        (e.code, e.message.as_str()),
        (
            400,
            "cannot bind token to object of type apps/v1, Kind=Deployment"
        )
    );
    let e = bind(json!({"apiVersion": "v1", "kind": "Pod", "name": "web"}));
    assert_eq!(
        e.message,
        "cannot bind token for serviceaccount \"runner\" to pod running with different serviceaccount name."
    );
    let e = bind(json!({"apiVersion": "v1", "kind": "Secret", "name": "gone"}));
    assert_eq!(
        (e.code, e.message.as_str()),
        (404, "secrets \"gone\" not found")
    );
    let e = bind(json!({"apiVersion": "v1", "kind": "Secret", "name": "anchor", "uid": "old"}));
    assert_eq!(
        (e.code, e.message.as_str()),
        (
            409,
            "Operation cannot be fulfilled on Secret \"anchor\": the UID in the bound object reference (old) does not match the UID in record. The object might have been deleted and then recreated"
        )
    );
}

#[test]
fn authenticates_until_expiry_plus_the_leeway() {
    let s = store();
    let (_, t) = issue_with(&s, json!({"expirationSeconds": 600})).unwrap();
    let user = authenticate(&s, &t, now()).unwrap();
    assert_eq!(user.name, "system:serviceaccount:ci:runner");
    assert_eq!(
        user.groups,
        [
            "system:serviceaccounts",
            "system:serviceaccounts:ci",
            "system:authenticated"
        ]
    );
    let at = |secs| now() + chrono::Duration::seconds(secs);
    assert!(authenticate(&s, &t, at(600 + 60)).is_some());
    assert!(authenticate(&s, &t, at(600 + 61)).is_none());
}

#[test]
fn stops_with_the_service_account_the_bound_object_or_a_foreign_audience() {
    let mut s = store();
    let bound = json!({"boundObjectRef": {"apiVersion": "v1", "kind": "Secret", "name": "anchor"}});
    let (_, to_secret) = issue_with(&s, bound).unwrap();
    let (_, plain) = issue_with(&s, json!({})).unwrap();
    let (_, vault) = issue_with(&s, json!({"audiences": ["vault"]})).unwrap();
    assert!(authenticate(&s, &vault, now()).is_none());
    assert!(authenticate(&s, &to_secret, now()).is_some());
    s.remove(kind("secrets"), "ci", "anchor");
    assert!(authenticate(&s, &to_secret, now()).is_none());
    assert!(authenticate(&s, &plain, now()).is_some());
    let recreated = json!({"metadata": {"name": "runner", "namespace": "ci", "uid": "sa-2"}});
    s.put(kind("serviceaccounts"), recreated);
    assert!(authenticate(&s, &plain, now()).is_none());
}
