//! ValidatingAdmissionPolicy beyond kwg's own policy, with the real kubectl: Warn answers a
//! warning, Deny a denial, and failurePolicy decides what a failing expression does.

mod common;

use common::Cluster;

const POLICY: &str = r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: small-configmaps
spec:
  failurePolicy: FAILURE
  matchConstraints:
    resourceRules:
    - apiGroups: [""]
      apiVersions: ["v1"]
      operations: ["CREATE"]
      resources: ["configmaps"]
  validations:
  - expression: "EXPRESSION"
    messageExpression: "'at most one key, not ' + string(size(object.data))"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: small-configmaps
spec:
  policyName: small-configmaps
  validationActions: [ACTION]
"#;

async fn apply_policy(c: &Cluster, expression: &str, action: &str, failure: &str) {
    let doc = POLICY
        .replace("EXPRESSION", expression)
        .replace("ACTION", action)
        .replace("FAILURE", failure);
    let file = c.write_file("policy.yaml", &doc);
    c.kubectl_ok("admin", &["apply", "-f", file.to_str().unwrap()])
        .await;
}

async fn create_configmap(c: &Cluster, name: &str) -> common::Output {
    let args = [
        "create",
        "configmap",
        name,
        "--from-literal=a=1",
        "--from-literal=b=2",
    ];
    c.kubectl("admin", &args).await
}

#[tokio::test]
async fn warn_deny_and_failure_policy() {
    let c = Cluster::start().await;
    let prefix = "ValidatingAdmissionPolicy 'small-configmaps' with binding 'small-configmaps'";
    apply_policy(&c, "size(object.data) < 2", "Warn", "Fail").await;
    let out = create_configmap(&c, "one").await;
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(
        out.stderr.trim_end(),
        format!("Warning: Validation failed for {prefix}: at most one key, not 2")
    );
    apply_policy(&c, "size(object.data) < 2", "Deny", "Fail").await;
    let out = create_configmap(&c, "two").await;
    assert_eq!(
        out.stderr.trim_end(),
        format!(
            "error: failed to create configmap: configmaps \"two\" is forbidden: {prefix} denied request: at most one key, not 2"
        )
    );
    // An expression that fails at run time denies with failurePolicy Fail, admits with Ignore.
    apply_policy(&c, "object.missing == 1", "Deny", "Fail").await;
    let out = create_configmap(&c, "three").await;
    assert!(
        out.stderr.contains(&format!(
            "{prefix} denied request: expression 'object.missing == 1' resulted in error: "
        )),
        "{}",
        out.stderr
    );
    apply_policy(&c, "object.missing == 1", "Deny", "Ignore").await;
    assert!(create_configmap(&c, "four").await.ok);
    // A policy whose CEL does not compile is refused.
    let bad = POLICY
        .replace("EXPRESSION", "object.(")
        .replace("ACTION", "Deny")
        .replace("FAILURE", "Fail");
    let file = c.write_file("bad.yaml", &bad);
    let out = c
        .kubectl("admin", &["apply", "-f", file.to_str().unwrap()])
        .await;
    assert!(
        out.stderr.contains("The ValidatingAdmissionPolicy \"small-configmaps\" is invalid: spec.validations[0].expression: Invalid value: \"object.(\": compilation failed: ERROR: <input>:1:8: Syntax error: no viable alternative at input '.('"),
        "{}",
        out.stderr
    );
}

const KEEP: &str = r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: keep
spec:
  matchConstraints:
    resourceRules:
    - apiGroups: [""]
      apiVersions: ["v1"]
      operations: ["DELETE"]
      resources: ["configmaps"]
  validations:
  - expression: "oldObject.metadata.name != 'keep'"
    message: this one stays
    reason: Forbidden
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: keep
spec:
  policyName: keep
  validationActions: [Deny]
"#;

#[tokio::test]
async fn deletecollection_tries_every_item_and_answers_the_first_denial() {
    use k8s_openapi::api::core::v1::ConfigMap;
    let c = Cluster::start().await;
    let file = c.write_file("keep.yaml", KEEP);
    c.kubectl_ok("admin", &["apply", "-f", file.to_str().unwrap()])
        .await;
    for name in ["a-first", "keep", "z-last"] {
        c.kubectl_ok("admin", &["create", "configmap", name]).await;
    }
    let api: kube::Api<ConfigMap> = kube::Api::namespaced(c.client("admin").await, "default");
    let err = api
        .delete_collection(&Default::default(), &Default::default())
        .await
        .expect_err("keep is kept");
    assert!(
        err.to_string().contains("configmaps \"keep\" is forbidden: ValidatingAdmissionPolicy 'keep' with binding 'keep' denied request: this one stays"),
        "{err}"
    );
    let left = c
        .kubectl_ok("admin", &["get", "configmaps", "-o", "name"])
        .await;
    assert_eq!(left, "configmap/keep\n");
}
