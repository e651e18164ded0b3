//! Issue 10 on the one-machine cluster: the developer (a kwg user) attacks the gateway's
//! identity and a peer owned by another user; the admission policy of `manifests/` refuses
//! each attack with the real server's message and the victim keeps reaching the cluster.
//! Needs root (network namespaces).

use anyhow::Result;
use kwg_e2e::{
    Implementation, WgPeer, install_gateway, peer_annotations, peer_secret_json, wait_for,
    wait_tunnel_ip,
};
use kwg_sim::testing::Cluster;
use std::time::Duration;

const DENIED: &str = "ValidatingAdmissionPolicy 'kwg-peer-ownership' with binding 'kwg-peer-ownership' denied request: ";

/// kubectl as the developer from the laptop; its stderr (it must fail).
fn developer_refused(c: &Cluster, args: &[&str]) -> Result<String> {
    let out = c.kubectl_output(&c.developer_kubeconfig(), args)?;
    anyhow::ensure!(!out.status.success(), "kubectl {args:?} was allowed");
    Ok(String::from_utf8_lossy(&out.stderr).trim_end().to_owned())
}

/// `kubectl apply -f -` as the developer; the error text (it must fail).
fn developer_apply_refused(c: &Cluster, doc: &serde_json::Value) -> Result<String> {
    match c.kubectl_apply(&c.developer_kubeconfig(), &doc.to_string()) {
        Ok(out) => anyhow::bail!("apply was allowed: {out}"),
        Err(e) => Ok(e.to_string()),
    }
}

#[test]
fn a_kwg_user_takes_neither_the_gateways_identity_nor_another_users_peer() -> Result<()> {
    let c = Cluster::up()?;
    let info = install_gateway(&c)?;
    // The victim: alice's peer (registered for her by an admin), connected and working; alice
    // may view emojivoto (the gateway forwards a peer only where its owner may get Services).
    c.kubectl_admin(&[
        "-n",
        "emojivoto",
        "create",
        "rolebinding",
        "alice-view",
        "--clusterrole=view",
        "--user=alice",
    ])?;
    let mut victim = WgPeer::start(&c.netns("laptop"), Implementation::KwgWg)?;
    let expires = chrono::Utc::now() + chrono::Duration::hours(1);
    let mut doc = peer_secret_json("victim", &victim.public_key(), expires);
    doc["stringData"]["owner"] = "alice".into();
    c.kubectl_apply(&c.admin_kubeconfig(), &doc.to_string())?;
    let ip = wait_tunnel_ip(&c, "victim", Duration::from_secs(10))?;
    victim.connect(
        &info,
        ip,
        &["100.77.0.0/16", "10.96.0.0/12", "10.244.0.0/16"],
    )?;
    let works = |v: &WgPeer| -> Result<bool> {
        Ok(v.http_get("http://10.96.1.0/", 3)?
            .is_some_and(|p| p.contains("Emoji Vote")))
    };
    wait_for(
        "the victim through the tunnel",
        Duration::from_secs(10),
        || Ok(works(&victim)?.then_some(())),
    )?;

    // A token Secret for the gateway's ServiceAccount.
    let token = serde_json::json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
        "metadata": {"name": "gw-token", "namespace": "kwg-system",
                     "annotations": {"kubernetes.io/service-account.name": "kwg-gateway"}}});
    let err = developer_apply_refused(&c, &token)?;
    assert!(
        err.contains(&format!("secrets \"gw-token\" is forbidden: {DENIED}in kwg-system you may only write Secrets of type kwg.io/peer (a kwg peer), not kubernetes.io/service-account-token")),
        "{err}"
    );
    let ns = ["-n", "kwg-system"];
    let not_yours = format!(
        "Error from server (Forbidden): secrets \"kwg-peer-victim\" is forbidden: {DENIED}you may change or delete only your own peer Secrets: this one is not owned by developer"
    );
    // Deleting, key-swapping, relabelling the victim's peer.
    let del = [&ns[..], &["delete", "secret", "kwg-peer-victim"]].concat();
    assert_eq!(developer_refused(&c, &del)?, not_yours);
    let swap =
        r#"{"stringData": {"publicKey": "bWFsbG9yeXNrZXltYWxsb3J5c2tleW1hbGxvcnlza2V5MTI="}}"#;
    let patch = [&ns[..], &["patch", "secret", "kwg-peer-victim", "-p", swap]].concat();
    assert_eq!(developer_refused(&c, &patch)?, not_yours);
    let label = [
        &ns[..],
        &["label", "secret", "kwg-peer-victim", "kwg.io/peer-"],
    ]
    .concat();
    assert_eq!(developer_refused(&c, &label)?, not_yours);
    // Taking over the victim's name for the owner: a peer claiming alice.
    let mut claim = peer_secret_json("0", &victim.public_key(), expires);
    claim["stringData"]["owner"] = "alice".into();
    let err = developer_apply_refused(&c, &claim)?;
    assert!(err.contains(&format!("{DENIED}a peer Secret you create must name you as its owner: data.owner must be developer")), "{err}");
    // A 1 MiB Secret.
    let mut big = peer_secret_json("big", &victim.public_key(), expires);
    big["stringData"]["owner"] = "developer".into();
    big["stringData"]["hostname"] = "x".repeat(1 << 20).into();
    let err = developer_apply_refused(&c, &big)?;
    assert!(
        err.contains(&format!("{DENIED}a peer Secret holds only the keys")),
        "{err}"
    );

    // The victim's key in a Secret of the developer's own: admission lets it in (it sees one
    // object), the gateway keeps the key with its holder and marks the newcomer.
    let mut dup = peer_secret_json("0", &victim.public_key(), expires);
    dup["stringData"]["owner"] = "developer".into();
    c.kubectl_apply(&c.developer_kubeconfig(), &dup.to_string())?;
    let err = wait_for(
        "the duplicate's error annotation",
        Duration::from_secs(10),
        || {
            Ok(peer_annotations(&c, "0")?
                .and_then(|a| a["kwg.io/error"].as_str().map(str::to_owned)))
        },
    )?;
    assert!(err.contains("public key"), "{err}");

    // The victim's Secret is untouched and it still reaches the cluster.
    let owner = c.kubectl_admin(
        &[
            &ns[..],
            &[
                "get",
                "secret",
                "kwg-peer-victim",
                "-o",
                "jsonpath={.data.owner}",
            ],
        ]
        .concat(),
    )?;
    assert_eq!(owner, "YWxpY2U="); // alice
    assert!(works(&victim)?, "the victim lost the cluster");
    Ok(())
}
