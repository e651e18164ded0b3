//! TokenRequest (`serviceaccounts/token`) with the real `kubectl create token` and kube-rs.

mod common;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};

use common::Cluster;

const WHOAMI: &[&str] = &[
    "auth",
    "whoami",
    "-o",
    "jsonpath={.status.userInfo.username} {.status.userInfo.groups}",
];

/// `kubectl create token` as admin; the token is written as the kubeconfig of `user`.
async fn token_for(c: &Cluster, user: &str, args: &[&str]) {
    let mut argv = vec!["create", "token", "runner"];
    argv.extend_from_slice(args);
    let token = c.kubectl_ok("admin", &argv).await;
    assert_eq!(token.trim().len(), 32, "{token}");
    c.write_kubeconfig(user, token.trim(), "default");
}

#[tokio::test]
async fn kubectl_create_token_authenticates_as_the_service_account() {
    let c = Cluster::start().await;
    c.kubectl_ok("admin", &["create", "serviceaccount", "runner"])
        .await;
    token_for(&c, "runner", &["--duration", "1h"]).await;
    assert_eq!(
        c.kubectl_ok("runner", WHOAMI).await,
        "system:serviceaccount:default:runner [\"system:serviceaccounts\",\"system:serviceaccounts:default\",\"system:authenticated\"]"
    );

    let short = c
        .kubectl("admin", &["create", "token", "runner", "--duration", "5m"])
        .await;
    assert_eq!(
        short.stderr,
        "error: failed to create token: TokenRequest.authentication.k8s.io \"\" is invalid: spec.expirationSeconds: Invalid value: 300: may not specify a duration less than 10 minutes\n"
    );
    let missing = c.kubectl("admin", &["create", "token", "missing"]).await;
    assert_eq!(
        missing.stderr,
        "error: failed to create token: serviceaccounts \"missing\" not found\n"
    );
    let denied = c.kubectl("nobody", &["create", "token", "runner"]).await;
    assert_eq!(
        denied.stderr,
        "error: failed to create token: serviceaccounts \"runner\" is forbidden: User \"nobody\" cannot create resource \"serviceaccounts/token\" in API group \"\" in the namespace \"default\"\n"
    );

    // Deleting the ServiceAccount ends its tokens, also when one of the name is created again.
    c.kubectl_ok("admin", &["delete", "serviceaccount", "runner"])
        .await;
    c.kubectl_ok("admin", &["create", "serviceaccount", "runner"])
        .await;
    let after = c.kubectl("runner", WHOAMI).await;
    assert_eq!(
        after.stderr,
        "error: You must be logged in to the server (Unauthorized)\n"
    );
}

#[tokio::test]
async fn bound_tokens_end_with_their_object_and_foreign_audiences_are_refused() {
    let c = Cluster::start().await;
    c.kubectl_ok("admin", &["create", "serviceaccount", "runner"])
        .await;
    c.kubectl_ok("admin", &["create", "secret", "generic", "anchor"])
        .await;
    token_for(
        &c,
        "bound",
        &[
            "--bound-object-kind",
            "Secret",
            "--bound-object-name",
            "anchor",
        ],
    )
    .await;
    token_for(&c, "vault", &["--audience", "vault"]).await;
    assert!(
        c.kubectl_ok("bound", WHOAMI)
            .await
            .starts_with("system:serviceaccount:default:runner ")
    );
    let unauthorized = "error: You must be logged in to the server (Unauthorized)\n";
    assert_eq!(c.kubectl("vault", WHOAMI).await.stderr, unauthorized);
    c.kubectl_ok("admin", &["delete", "secret", "anchor"]).await;
    assert_eq!(c.kubectl("bound", WHOAMI).await.stderr, unauthorized);
    let pod = c
        .kubectl(
            "admin",
            &[
                "create",
                "token",
                "runner",
                "--bound-object-kind",
                "Pod",
                "--bound-object-name",
                "nope",
            ],
        )
        .await;
    assert_eq!(
        pod.stderr,
        "error: failed to create token: pods \"nope\" not found\n"
    );
}

#[tokio::test]
async fn kube_rs_token_request_answers_the_expiry() {
    let c = Cluster::start().await;
    let client = c.client("admin").await;
    let sas: Api<ServiceAccount> = Api::namespaced(client, "default");
    let request = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(7200),
            ..Default::default()
        },
        ..Default::default()
    };
    let before = chrono::Utc::now();
    let issued = sas
        .create_token_request("default", &PostParams::default(), &request)
        .await
        .expect("TokenRequest for default/default");
    assert_eq!(
        issued.spec.audiences,
        ["https://kubernetes.default.svc.cluster.local"]
    );
    let status = issued.status.expect("a status");
    let lifetime = status.expiration_timestamp.0.as_second() - before.timestamp();
    assert!((7199..=7201).contains(&lifetime), "{lifetime}");
    c.write_kubeconfig("default-sa", &status.token, "default");
    assert!(
        c.kubectl_ok("default-sa", WHOAMI)
            .await
            .starts_with("system:serviceaccount:default:default ")
    );
}
