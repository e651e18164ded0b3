//! Issue 10 against the stand-in with the real kubectl: `manifests/` applied with
//! `kubectl apply -k`, then the attacks of a kwg user (group `kwg:users`) on the gateway's
//! identity and on another user's peer, the token controller for an admin, and
//! SubjectAccessReview / `kubectl auth can-i` for the intended grants.

mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use common::Cluster;

const DENIED: &str = "ValidatingAdmissionPolicy 'kwg-peer-ownership' with binding 'kwg-peer-ownership' denied request: ";

const TOKEN_SECRET: &str = r#"apiVersion: v1
kind: Secret
metadata:
  name: gw-token
  namespace: kwg-system
  annotations:
    kubernetes.io/service-account.name: kwg-gateway
type: kubernetes.io/service-account-token
"#;

/// A cluster with `manifests/` applied and two kwg users, `developer` and `mallory`.
async fn cluster() -> Cluster {
    let c = Cluster::start().await;
    let manifests = concat!(env!("CARGO_MANIFEST_DIR"), "/../../manifests");
    c.kubectl_ok("admin", &["apply", "-k", manifests]).await;
    for user in ["developer", "mallory"] {
        let token = c.server.add_user(user, &["kwg:users"]);
        c.write_kubeconfig(user, &token, "kwg-system");
    }
    c
}

/// `kubectl create secret generic kwg-peer-NAME` as a kwg client registers one.
async fn create_peer(
    c: &Cluster,
    user: &str,
    name: &str,
    owner: &str,
    key: &str,
) -> common::Output {
    let lit = |k: &str, v: &str| format!("--from-literal={k}={v}");
    let args = [
        "create".to_string(),
        "secret".into(),
        "generic".into(),
        format!("kwg-peer-{name}"),
        "--type=kwg.io/peer".into(),
        lit("name", name),
        lit("publicKey", key),
        lit("owner", owner),
        lit("hostname", "box"),
        lit("namespaces", ""),
        lit("leaseExpires", "2030-01-01T00:00:00Z"),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    c.kubectl(user, &args).await
}

/// A field of Secret `ns/name`, as the admin reads it.
async fn secret_field(c: &Cluster, ns: &str, name: &str, field: &str) -> String {
    let jsonpath = format!("jsonpath={{{field}}}");
    c.kubectl_ok("admin", &["-n", ns, "get", "secret", name, "-o", &jsonpath])
        .await
}

fn assert_denied(out: &common::Output, want: &str) {
    assert!(!out.ok, "expected a denial, got: {}", out.stdout);
    assert_eq!(out.stderr.trim_end(), want);
}

#[tokio::test]
async fn token_secret_for_the_gateway_is_refused_and_the_controller_fills_an_admins() {
    let c = cluster().await;
    // In kwg-system (where kwg users may create Secrets) admission refuses it.
    let file = c.write_file("token.yaml", TOKEN_SECRET);
    let file = file.to_str().unwrap();
    let out = c.kubectl("developer", &["create", "-f", file]).await;
    assert_denied(
        &out,
        &format!(
            "Error from server (Forbidden): error when creating \"{file}\": secrets \"gw-token\" is forbidden: {DENIED}in kwg-system you may only write Secrets of type kwg.io/peer (a kwg peer), not kubernetes.io/service-account-token: other Secrets there are reserved to the gateway and admins"
        ),
    );
    let gone = c
        .kubectl("admin", &["-n", "kwg-system", "get", "secret", "gw-token"])
        .await;
    assert_eq!(
        gone.stderr.trim_end(),
        "Error from server (NotFound): secrets \"gw-token\" not found"
    );
    // Next to the gateway's ServiceAccount, in kwg-gateway, RBAC refuses it.
    let in_gateway_ns = TOKEN_SECRET.replace("namespace: kwg-system", "namespace: kwg-gateway");
    let gw_file = c.write_file("token-gw.yaml", &in_gateway_ns);
    let gw_file = gw_file.to_str().unwrap();
    for user in ["developer", "mallory"] {
        let out = c.kubectl(user, &["create", "-f", gw_file]).await;
        assert_denied(
            &out,
            &format!(
                "Error from server (Forbidden): error when creating \"{gw_file}\": secrets is forbidden: User \"{user}\" cannot create resource \"secrets\" in API group \"\" in the namespace \"kwg-gateway\""
            ),
        );
    }
    // An admin's token Secret in kwg-system names no ServiceAccount there (the gateway's is
    // in kwg-gateway): the controller deletes it.
    c.kubectl_ok("admin", &["create", "-f", file]).await;
    wait_gone(&c, "kwg-system", "gw-token").await;

    // An admin's token Secret in kwg-gateway is filled by the token controller and
    // authenticates as the gateway's ServiceAccount.
    c.kubectl_ok("admin", &["create", "-f", gw_file]).await;
    let field = |f: &'static str| secret_field(&c, "kwg-gateway", "gw-token", f);
    let token = String::from_utf8(B64.decode(field(".data.token").await).unwrap()).unwrap();
    let uid = field(".metadata.annotations.kubernetes\\.io/service-account\\.uid").await;
    let sa_uid = c
        .kubectl_ok(
            "admin",
            &[
                "-n",
                "kwg-gateway",
                "get",
                "sa",
                "kwg-gateway",
                "-o",
                "jsonpath={.metadata.uid}",
            ],
        )
        .await;
    assert_eq!(uid, sa_uid);
    assert_eq!(
        B64.decode(field(".data.namespace").await).unwrap(),
        b"kwg-gateway"
    );
    assert_eq!(
        B64.decode(field(".data.ca\\.crt").await).unwrap(),
        c.server.ca_pem().as_bytes()
    );
    c.write_kubeconfig("from-secret", &token, "kwg-system");
    let whoami = c
        .kubectl_ok(
            "from-secret",
            &["auth", "whoami", "-o", "jsonpath={.status.userInfo}"],
        )
        .await;
    assert_eq!(
        whoami,
        r#"{"groups":["system:serviceaccounts","system:serviceaccounts:kwg-gateway","system:authenticated"],"username":"system:serviceaccount:kwg-gateway:kwg-gateway"}"#
    );
    // The gateway's RBAC applies to it: it may read the private key, the developer may not.
    let can_key = [
        "auth",
        "can-i",
        "get",
        "secrets/kwg-gateway-key",
        "-n",
        "kwg-gateway",
    ];
    assert_eq!(c.kubectl_ok("from-secret", &can_key).await.trim(), "yes");
    assert_eq!(c.kubectl("developer", &can_key).await.stdout.trim(), "no");
    c.kubectl_ok("from-secret", &["get", "secrets"]).await;
    // Deleting the Secret revokes the token.
    c.kubectl_ok(
        "admin",
        &["-n", "kwg-gateway", "delete", "secret", "gw-token"],
    )
    .await;
    let out = c.kubectl("from-secret", &["get", "secrets"]).await;
    assert_eq!(
        out.stderr.trim_end(),
        "error: You must be logged in to the server (Unauthorized)"
    );
    // A token Secret without the annotation is invalid; one for a missing SA is deleted.
    let bare = c.write_file(
        "bare.yaml",
        &in_gateway_ns.replace("kubernetes.io/service-account.name: kwg-gateway", "a: b"),
    );
    let out = c
        .kubectl("admin", &["create", "-f", bare.to_str().unwrap()])
        .await;
    assert!(out.stderr.contains("Secret \"gw-token\" is invalid: metadata.annotations[kubernetes.io/service-account.name]: Required value"), "{}", out.stderr);
    let ghost = c.write_file(
        "ghost.yaml",
        &in_gateway_ns.replace("name: kwg-gateway", "name: ghost"),
    );
    c.kubectl_ok("admin", &["create", "-f", ghost.to_str().unwrap()])
        .await;
    wait_gone(&c, "kwg-gateway", "gw-token").await;
}

/// Waits (up to 5 s) until the token controller has deleted Secret `ns/name`.
async fn wait_gone(c: &Cluster, ns: &str, name: &str) {
    for _ in 0..50 {
        if !c
            .kubectl("admin", &["-n", ns, "get", "secret", name])
            .await
            .ok
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!(
        "the controller did not delete the token Secret {ns}/{name} of a missing ServiceAccount"
    );
}

#[tokio::test]
async fn only_the_owner_changes_or_deletes_a_peer_and_nobody_swaps_its_key() {
    let c = cluster().await;
    let key = "Vk1BQ0xXR0FMWVdHR1JMQUdZTFdHVkxBV0dZTFdBRz0=";
    let created = create_peer(&c, "developer", "devbox", "developer", key).await;
    assert!(created.ok, "{}", created.stderr);
    let not_yours = format!(
        "Error from server (Forbidden): secrets \"kwg-peer-devbox\" is forbidden: {DENIED}you may change or delete only your own peer Secrets: this one is not owned by mallory"
    );
    let out = c
        .kubectl("mallory", &["delete", "secret", "kwg-peer-devbox"])
        .await;
    assert_denied(&out, &not_yours);
    let swap =
        r#"{"stringData": {"publicKey": "bWFsbG9yeXNrZXltYWxsb3J5c2tleW1hbGxvcnlza2V5MTI="}}"#;
    let out = c
        .kubectl(
            "mallory",
            &["patch", "secret", "kwg-peer-devbox", "-p", swap],
        )
        .await;
    assert_denied(&out, &not_yours);
    let out = c
        .kubectl("mallory", &["annotate", "secret", "kwg-peer-devbox", "x=y"])
        .await;
    assert_denied(&out, &not_yours);
    // The owner renews, but cannot move the key or the owner either.
    c.kubectl_ok(
        "developer",
        &[
            "patch",
            "secret",
            "kwg-peer-devbox",
            "-p",
            r#"{"stringData": {"leaseExpires": "2031-01-01T00:00:00Z"}}"#,
        ],
    )
    .await;
    let out = c
        .kubectl(
            "developer",
            &["patch", "secret", "kwg-peer-devbox", "-p", swap],
        )
        .await;
    assert_denied(
        &out,
        &format!(
            "Error from server (Forbidden): secrets \"kwg-peer-devbox\" is forbidden: {DENIED}the publicKey and owner of a peer Secret never change: delete it and register the peer again"
        ),
    );
    // A peer claiming the victim as owner, or a forged tunnel address, is refused.
    let out = create_peer(&c, "mallory", "0", "developer", key).await;
    assert_denied(
        &out,
        &format!(
            "error: failed to create secret secrets \"kwg-peer-0\" is forbidden: {DENIED}a peer Secret you create must name you as its owner: data.owner must be mallory"
        ),
    );
    // The victim's Secret is untouched.
    let held = secret_field(&c, "kwg-system", "kwg-peer-devbox", ".data.publicKey").await;
    assert_eq!(B64.decode(held).unwrap(), key.as_bytes());
    // mallory's `delete --all` removes her own peer and none of the others (kwg-user has no
    // deletecollection: kubectl deletes one by one, each through admission).
    assert!(create_peer(&c, "mallory", "mbox", "mallory", key).await.ok);
    let out = c.kubectl("mallory", &["delete", "secrets", "--all"]).await;
    assert!(out.stderr.contains(&not_yours), "{}", out.stderr);
    let left = c
        .kubectl_ok(
            "admin",
            &["-n", "kwg-system", "get", "secrets", "-o", "name"],
        )
        .await;
    assert!(
        !left.contains("kwg-peer-mbox") && left.contains("kwg-peer-devbox"),
        "{left}"
    );
    c.kubectl_ok("developer", &["delete", "secret", "kwg-peer-devbox"])
        .await;
}

#[tokio::test]
async fn a_one_mebibyte_peer_secret_is_refused() {
    let c = cluster().await;
    let big = c.write_file("big.txt", &"x".repeat(1 << 20));
    let out = c
        .kubectl(
            "developer",
            &[
                "create",
                "secret",
                "generic",
                "kwg-peer-big",
                "--type=kwg.io/peer",
                "--from-literal=owner=developer",
                &format!("--from-file=hostname={}", big.display()),
            ],
        )
        .await;
    assert_denied(
        &out,
        &format!(
            "error: failed to create secret secrets \"kwg-peer-big\" is forbidden: {DENIED}a peer Secret holds only the keys name, publicKey, owner, hostname, namespaces and leaseExpires, each at most 8 KiB encoded, and at most 8 labels and 8 annotations of at most 16 KiB each"
        ),
    );
}

/// A SubjectAccessReview by kube-rs (as the gateway makes them): Ok(allowed) or the error text.
async fn review(
    c: &Cluster,
    caller: &str,
    user: &str,
    groups: &[&str],
    namespace: &str,
) -> Result<bool, String> {
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
    };
    let sar = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.into()).filter(|u: &String| !u.is_empty()),
            groups: Some(groups.iter().map(|g| g.to_string()).collect()),
            resource_attributes: Some(ResourceAttributes {
                verb: Some("create".into()),
                resource: Some("secrets".into()),
                namespace: Some(namespace.into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: kube::Api<SubjectAccessReview> = kube::Api::all(c.client(caller).await);
    match api.create(&Default::default(), &sar).await {
        Ok(r) => Ok(r.status.expect("a review has a status").allowed),
        Err(kube::Error::Api(s)) => Err(format!("{} {}", s.code, s.message)),
        Err(e) => Err(e.to_string()),
    }
}

#[tokio::test]
async fn subject_access_reviews_answer_from_rbac_for_the_gateway_only() {
    let c = cluster().await;
    let gw = c.server.service_account_token("kwg-gateway", "kwg-gateway");
    c.write_kubeconfig("gateway", &gw, "kwg-system");
    let users = ["kwg:users"];
    assert_eq!(
        review(&c, "gateway", "developer", &users, "kwg-system").await,
        Ok(true)
    );
    assert_eq!(
        review(&c, "gateway", "developer", &users, "kwg-gateway").await,
        Ok(false)
    );
    // Exactly the subject given: without the group, developer has no grant.
    assert_eq!(
        review(&c, "gateway", "developer", &[], "kwg-system").await,
        Ok(false)
    );
    assert_eq!(
        review(&c, "developer", "developer", &users, "kwg-system").await,
        Err("403 subjectaccessreviews.authorization.k8s.io is forbidden: User \"developer\" cannot create resource \"subjectaccessreviews\" in API group \"authorization.k8s.io\" at the cluster scope".into())
    );
    assert_eq!(
        review(&c, "gateway", "", &[], "kwg-system").await,
        Err("422 SubjectAccessReview.authorization.k8s.io \"\" is invalid: spec.user: Invalid value: \"\": at least one of user or group must be specified".into())
    );
}

#[tokio::test]
async fn can_i_shows_the_intended_grants() {
    let c = cluster().await;
    let gw = c.server.service_account_token("kwg-gateway", "kwg-gateway");
    c.write_kubeconfig("gateway", &gw, "kwg-system");
    // user, answer, then `kubectl auth can-i` arguments.
    let cases = [
        "developer yes create secrets -n kwg-system",
        "developer yes delete secrets -n kwg-system",
        "developer yes get configmaps/kwg-gateway-info -n kwg-system",
        "developer no update configmaps/kwg-gateway-info -n kwg-system",
        "developer no get secrets -n kwg-gateway",
        "developer no create secrets -n kwg-gateway",
        "developer no create pods -n kwg-gateway",
        "developer no create serviceaccounts/token -n kwg-gateway",
        "developer yes get deployments.apps/kwg-gateway -n kwg-gateway",
        "developer no list deployments.apps -n kwg-gateway",
        "developer no update deployments.apps/kwg-gateway -n kwg-gateway",
        "developer no update leases.coordination.k8s.io/kwg-gateway -n kwg-gateway",
        "developer no create secrets -n default",
        "developer no create subjectaccessreviews.authorization.k8s.io",
        "developer no delete validatingadmissionpolicies.admissionregistration.k8s.io",
        "gateway yes create subjectaccessreviews.authorization.k8s.io",
        "gateway yes get secrets/kwg-gateway-key -n kwg-gateway",
        "gateway no list secrets -n kwg-gateway",
        "gateway yes update leases.coordination.k8s.io/kwg-gateway -n kwg-gateway",
        "gateway no update leases.coordination.k8s.io/kwg-gateway -n kwg-system",
        "gateway yes update configmaps/kwg-gateway-info -n kwg-system",
        "gateway no update configmaps/other -n kwg-system",
        "gateway no create secrets -n kwg-system",
    ];
    for case in cases {
        let words: Vec<&str> = case.split(' ').collect();
        let mut args = vec!["auth", "can-i"];
        args.extend_from_slice(&words[2..]);
        let out = c.kubectl(words[0], &args).await;
        assert_eq!(out.stdout.trim(), words[1], "{case}: {}", out.stderr);
    }
    // Applying the manifests again changes nothing.
    let manifests = concat!(env!("CARGO_MANIFEST_DIR"), "/../../manifests");
    let again = c.kubectl_ok("admin", &["apply", "-k", manifests]).await;
    assert!(
        again.contains(
            "validatingadmissionpolicy.admissionregistration.k8s.io/kwg-peer-ownership unchanged"
        ),
        "{again}"
    );
    let table = c
        .kubectl_ok(
            "admin",
            &[
                "get",
                "validatingadmissionpolicies,validatingadmissionpolicybindings",
            ],
        )
        .await;
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        ["NAME", "VALIDATIONS", "PARAMKIND", "AGE"],
        "{table}"
    );
    assert_eq!(
        rows[1][..3],
        [
            "validatingadmissionpolicy.admissionregistration.k8s.io/kwg-peer-ownership",
            "9",
            "<unset>"
        ]
    );
    assert_eq!(
        rows[4][..3],
        [
            "validatingadmissionpolicybinding.admissionregistration.k8s.io/kwg-peer-ownership",
            "kwg-peer-ownership",
            "<unset>"
        ],
        "{table}"
    );
    // The policy is installed (what an admin checks on a real cluster).
    let out = c
        .kubectl_ok(
            "admin",
            &[
                "get",
                "validatingadmissionpolicybindings",
                "-o",
                "jsonpath={.items[*].spec.policyName}",
            ],
        )
        .await;
    assert_eq!(out, "kwg-peer-ownership");
}
