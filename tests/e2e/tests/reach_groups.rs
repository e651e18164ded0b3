//! Reach by RBAC through the user's groups, on a cluster of its own with the shipped manifests
//! (groups count by default where the admission policy is installed): the client writes the
//! groups the API server gives it into its peer Secret, the admission policy holds them to the
//! user's own, and a grant to one of them opens a namespace.

use anyhow::Result;
use kwg_e2e::laptop::{laptop, text};
use kwg_e2e::{wait_for, wait_gateway_ready};
use kwg_sim::testing::Cluster;
use std::sync::Arc;
use std::time::Duration;

/// `carol` (group `kwg:viewers`, see kwg-sim) as a kwg user: the kwg-user Roles and
/// ClusterRole (which opens no namespace: it holds no `get services`).
fn kwg_user_carol(c: &Cluster) -> Result<()> {
    let crb = serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "carol-kwg-user"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "kwg-user"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "carol"}]});
    c.kubectl_apply(&c.admin_kubeconfig(), &crb.to_string())?;
    for ns in ["kwg-system", "kwg-gateway"] {
        let rb = serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "carol-kwg-user", "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "kwg-user"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "carol"}]});
        c.kubectl_apply(&c.admin_kubeconfig(), &rb.to_string())?;
    }
    Ok(())
}

/// Whether a gateway pod's log holds `line`.
fn gateway_logged(c: &Cluster, line: &str) -> Result<bool> {
    for pod in std::fs::read_dir(c.names().run_dir().join("pods"))? {
        let dir = pod?.path();
        let gateway = dir
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("kwg-gateway_"));
        if gateway
            && std::fs::read_to_string(dir.join("gateway.log"))
                .unwrap_or_default()
                .contains(line)
        {
            return Ok(true);
        }
    }
    Ok(false)
}

#[test]
fn a_grant_to_the_users_group_opens_a_namespace_until_it_goes() -> Result<()> {
    let c = Arc::new(Cluster::up()?);
    kwg_e2e::install_gateway(&c)?;
    kwg_user_carol(&c)?;
    wait_gateway_ready(&c, Duration::from_secs(60))?;
    // The gateway found the admission policy at start and says groups count.
    assert!(gateway_logged(
        &c,
        "admission policy installed: peers' groups count"
    )?);
    let carol = c.names().kubeconfig("carol");
    let l = laptop(&c, "groups");
    let join = l.run_as("carol", &["kwg", "join", "--name", "groups"]);
    assert!(
        join.status.success(),
        "{}{}",
        text(&join.stdout),
        text(&join.stderr)
    );
    // Her groups as the API server gives them, one a line.
    let jp = r"jsonpath={.metadata.annotations.kwg\.io/groups}";
    let secret = [
        "-n",
        "kwg-system",
        "get",
        "secret",
        "kwg-peer-groups",
        "-o",
        jp,
    ];
    assert_eq!(
        c.kubectl_admin(&secret)?.trim(),
        "kwg:viewers\nsystem:authenticated"
    );
    // She may not claim another group, nor change hers.
    let forge = c.kubectl_output(
        &carol,
        &[
            "-n",
            "kwg-system",
            "annotate",
            "--overwrite",
            "secret",
            "kwg-peer-groups",
            "kwg.io/groups=system:masters",
        ],
    )?;
    assert!(!forge.status.success());
    assert!(
        text(&forge.stderr).contains("secrets \"kwg-peer-groups\" is forbidden: ValidatingAdmissionPolicy 'kwg-peer-ownership' with binding 'kwg-peer-ownership' denied request: the annotation kwg.io/groups of a peer Secret must list your groups exactly, one a line, in the order the API server gives them (kwg:viewers, system:authenticated); kwg join writes them, or leave the annotation out"),
        "{}",
        text(&forge.stderr)
    );

    let echo = kwg_e2e::cluster_ip(&c, "default", "echo")?;
    let url = format!("http://{echo}/");
    let answers = || {
        l.run_as("carol", &["curl", "-sf", "--max-time", "2", &url])
            .status
            .success()
    };
    assert!(!answers(), "carol has no grant in default yet");

    // `view` in `default` for her group, not for her: default opens without re-joining.
    let grant = serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "viewers-view", "namespace": "default"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "kwg:viewers"}]});
    c.kubectl_apply(&c.admin_kubeconfig(), &grant.to_string())?;
    wait_for(
        "echo.default through the group",
        Duration::from_secs(60),
        || Ok(answers().then_some(())),
    )?;
    let status = l.run_as("carol", &["kwg", "status", "-o", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&status.stdout)?;
    assert_eq!(json["reach"]["namespaces"], serde_json::json!(["default"]));

    c.kubectl_admin(&["-n", "default", "delete", "rolebinding", "viewers-view"])?;
    wait_for(
        "echo.default dropped again",
        Duration::from_secs(60),
        || Ok((!answers()).then_some(())),
    )?;
    Ok(())
}
