//! ServiceAccount tokens as a test user holds them: filled by the token controller, put in a
//! kubeconfig of the developer's cluster entry.

use anyhow::Result;
use kwg_sim::testing::Cluster;
use std::path::Path;
use std::time::Duration;

use crate::wait_for;

/// Waits for the token controller to fill the token Secret `secret` in `namespace`; its token.
pub fn wait_token(c: &Cluster, namespace: &str, secret: &str) -> Result<String> {
    wait_for("the token controller", Duration::from_secs(10), || {
        let t = c.kubectl_admin(&[
            "-n",
            namespace,
            "get",
            "secret",
            secret,
            "-o",
            "go-template={{.data.token | base64decode}}",
        ])?;
        Ok((!t.is_empty()).then_some(t))
    })
}

/// The developer's kubeconfig with `token` in place of the developer's own.
pub fn developer_kubeconfig_with(c: &Cluster, token: &str) -> Result<String> {
    let dev = c.developer_kubeconfig();
    let dev_token = c.kubectl(
        &dev,
        &[
            "config",
            "view",
            "--raw",
            "-o",
            "jsonpath={.users[0].user.token}",
        ],
    )?;
    Ok(std::fs::read_to_string(&dev)?.replace(dev_token.trim(), token.trim()))
}

/// The user `kubeconfig` authenticates as (`kubectl auth whoami`).
pub fn whoami(c: &Cluster, kubeconfig: &Path) -> Result<String> {
    let user = c.kubectl(
        kubeconfig,
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
    )?;
    Ok(user.trim().to_string())
}
