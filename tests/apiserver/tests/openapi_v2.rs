//! `/openapi/v2`: kubectl falls back to it for kinds without a PATCH operation (create-only
//! reviews) and must not fail on it.

mod common;

use common::Cluster;

fn review(verb: &str) -> String {
    format!(
        "apiVersion: authorization.k8s.io/v1
kind: SubjectAccessReview
spec:
  user: alice
  groups: [team]
  resourceAttributes: {{verb: {verb}, resource: pods, namespace: default}}
"
    )
}

#[tokio::test]
async fn kubectl_create_f_of_a_subject_access_review() {
    let c = Cluster::start().await;
    let role = "apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: team-view, namespace: default}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}
subjects: [{kind: Group, name: team, apiGroup: rbac.authorization.k8s.io}]
";
    let f = c.write_file("binding.yaml", role);
    c.kubectl_ok("admin", &["create", "-f", f.to_str().unwrap()])
        .await;
    for (verb, allowed) in [("get", "true"), ("delete", "false")] {
        let f = c.write_file(&format!("{verb}.yaml"), &review(verb));
        let args = [
            "create",
            "-f",
            f.to_str().unwrap(),
            "-o",
            "jsonpath={.status.allowed}",
        ];
        assert_eq!(c.kubectl_ok("admin", &args).await, allowed, "{verb}");
    }
}
