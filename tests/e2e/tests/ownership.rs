//! Issue 10 on the one-machine cluster: the developer (a kwg user) attacks the gateway's
//! identity and a peer owned by another user; the admission policy of `manifests/` refuses
//! each attack with the real server's message and the victim keeps reaching the cluster.
//! The developer and a second kwg user have no rights next to the gateway (namespace
//! `kwg-gateway`: RBAC refuses with the real server's message), while an admin's token Secret
//! for the gateway still works. Needs root (network namespaces).

use anyhow::Result;
use kwg_e2e::{
    GATEWAY_NS, Implementation, WgPeer, install_gateway, peer_annotations, peer_secret_json,
    tokens, wait_for, wait_tunnel_ip,
};
use kwg_sim::testing::Cluster;
use std::path::{Path, PathBuf};
use std::time::Duration;

const DENIED: &str = "ValidatingAdmissionPolicy 'kwg-peer-ownership' with binding 'kwg-peer-ownership' denied request: ";

/// kubectl as the developer from the laptop; its stderr (it must fail).
fn developer_refused(c: &Cluster, args: &[&str]) -> Result<String> {
    refused(c, &c.developer_kubeconfig(), args)
}

/// kubectl as `kubeconfig` from the laptop, which must be refused; its stderr.
fn refused(c: &Cluster, kubeconfig: &Path, args: &[&str]) -> Result<String> {
    let out = c.kubectl_output(kubeconfig, args)?;
    anyhow::ensure!(!out.status.success(), "kubectl {args:?} was allowed");
    Ok(String::from_utf8_lossy(&out.stderr).trim_end().to_owned())
}

/// `kubectl apply -f -` as the developer; the error text (it must fail).
fn developer_apply_refused(c: &Cluster, doc: &serde_json::Value) -> Result<String> {
    apply_refused(c, &c.developer_kubeconfig(), &doc.to_string())
}

/// `kubectl apply -f -` as `kubeconfig`, which must be refused; the error text.
fn apply_refused(c: &Cluster, kubeconfig: &Path, doc: &str) -> Result<String> {
    match c.kubectl_apply(kubeconfig, doc) {
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

/// The real API server's RBAC denial, as kubectl prints it.
fn forbidden(user: &str, verb: &str, what: &str, resource: &str, group: &str) -> String {
    format!(
        "Error from server (Forbidden): {what} is forbidden: User \"{user}\" cannot {verb} resource \"{resource}\" in API group \"{group}\" in the namespace \"{GATEWAY_NS}\""
    )
}

/// A second kwg user, as an admin makes one: `kwg ci-credentials mallory` (a ServiceAccount in
/// kwg-ci bound to the kwg-user roles); its kubeconfig and user name.
fn second_user(c: &Cluster) -> Result<(PathBuf, String)> {
    let file = c.names().run_dir().join("mallory.kubeconfig");
    let admin = format!("KUBECONFIG={}", c.admin_kubeconfig().display());
    let kwg = kwg_sim::bin_path("kwg");
    let argv = [
        "env",
        &admin,
        kwg.to_str().unwrap_or("kwg"),
        "ci-credentials",
        "mallory",
        "--out",
        file.to_str().unwrap_or_default(),
    ];
    c.exec_ok(&c.netns("laptop"), &argv)?;
    Ok((file, "system:serviceaccount:kwg-ci:mallory".into()))
}

#[test]
fn kwg_users_have_no_rights_next_to_the_gateway() -> Result<()> {
    let c = Cluster::up()?;
    install_gateway(&c)?;
    let gw_pod = kwg_e2e::wait_gateway_ready(&c, Duration::from_secs(10))?;
    let (mallory, mallory_name) = second_user(&c)?;
    let dev = c.developer_kubeconfig();
    // A token Secret next to the gateway's ServiceAccount, and a pod running as it.
    let dir = c.names().run_dir();
    let token_file = dir.join("gw-token.json");
    std::fs::write(
        &token_file,
        serde_json::json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
            "metadata": {"name": "gw-token", "namespace": GATEWAY_NS,
                         "annotations": {"kubernetes.io/service-account.name": "kwg-gateway"}}})
        .to_string(),
    )?;
    let token_file = token_file.to_str().unwrap_or_default();
    let pod_overrides = r#"{"spec": {"serviceAccountName": "kwg-gateway"}}"#;
    let ns = ["-n", GATEWAY_NS];
    for (kubeconfig, user) in [(&dev, "developer"), (&mallory, mallory_name.as_str())] {
        let attempts: [(Vec<&str>, String); 7] = [
            (
                vec!["get", "secrets"],
                forbidden(user, "list", "secrets", "secrets", ""),
            ),
            (
                vec!["get", "secret", "kwg-gateway-key"],
                forbidden(user, "get", "secrets \"kwg-gateway-key\"", "secrets", ""),
            ),
            (
                vec!["create", "-f", token_file],
                format!(
                    "Error from server (Forbidden): error when creating \"{token_file}\": {}",
                    forbidden(user, "create", "secrets", "secrets", "")
                        .trim_start_matches("Error from server (Forbidden): ")
                ),
            ),
            (
                vec!["create", "token", "kwg-gateway"],
                format!(
                    "error: failed to create token: {}",
                    forbidden(
                        user,
                        "create",
                        "serviceaccounts \"kwg-gateway\"",
                        "serviceaccounts/token",
                        ""
                    )
                    .trim_start_matches("Error from server (Forbidden): ")
                ),
            ),
            (
                vec![
                    "run",
                    "thief",
                    "--image=kwg-sim:dev",
                    "--overrides",
                    pod_overrides,
                ],
                forbidden(user, "create", "pods", "pods", ""),
            ),
            (
                vec!["delete", "lease", "kwg-gateway"],
                forbidden(
                    user,
                    "delete",
                    "leases.coordination.k8s.io \"kwg-gateway\"",
                    "leases",
                    "coordination.k8s.io",
                ),
            ),
            (
                vec!["delete", "pod", &gw_pod],
                forbidden(user, "delete", &format!("pods \"{gw_pod}\""), "pods", ""),
            ),
        ];
        for (args, want) in attempts {
            let args = [&ns[..], &args].concat();
            assert_eq!(
                refused(&c, kubeconfig, &args)?,
                want,
                "{user}: kubectl {args:?}"
            );
        }
    }
    // What a kwg user may do there, as the API server lists it: read the gateway Deployment
    // by name (readiness), the cluster-wide reads of kwg-user and what every authenticated
    // user may. The port-forward fallback's rules (get pods, create pods/portforward) are
    // the only others allowed.
    let list = c.kubectl(&mallory, &["auth", "can-i", "--list", "-n", GATEWAY_NS])?;
    let mut rules: Vec<String> = list
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        // Non-resource URLs: discovery, /healthz and the like, for every user.
        .filter(|l| !l.starts_with("[/"))
        .filter(|l| !l.starts_with("pods/portforward ") && !l.starts_with("pods "))
        .collect();
    rules.sort();
    assert_eq!(rules, EXPECTED_RULES, "{list}");
    // In kwg-system the second user, like the developer, may neither take the developer's
    // peer nor make a token Secret.
    let key = kwg_contract::keys::PrivateKey::generate().public_key();
    kwg_e2e::register_peer(&c, "devbox", &key, Duration::from_secs(3600))?;
    let del = ["-n", "kwg-system", "delete", "secret", "kwg-peer-devbox"];
    assert_eq!(
        refused(&c, &mallory, &del)?,
        format!(
            "Error from server (Forbidden): secrets \"kwg-peer-devbox\" is forbidden: {DENIED}you may change or delete only your own peer Secrets: this one is not owned by {mallory_name}"
        )
    );
    let in_kwg_system = std::fs::read_to_string(token_file)?.replace(GATEWAY_NS, "kwg-system");
    let err = apply_refused(&c, &mallory, &in_kwg_system)?;
    assert!(
        err.contains(&format!("{DENIED}in kwg-system you may only write Secrets of type kwg.io/peer (a kwg peer), not kubernetes.io/service-account-token")),
        "{err}"
    );
    // Nothing a kwg user did touched the gateway: the same pod still serves.
    assert_eq!(
        kwg_e2e::wait_gateway_ready(&c, Duration::from_secs(5))?,
        gw_pod
    );

    // The token controller still serves an admin: a token Secret for the gateway's
    // ServiceAccount, created by the admin in kwg-gateway, is filled and authenticates as it.
    c.kubectl_admin(&["create", "-f", token_file])?;
    let token = tokens::wait_token(&c, GATEWAY_NS, "gw-token")?;
    let as_gateway = dir.join("gw-token.kubeconfig");
    std::fs::write(&as_gateway, tokens::developer_kubeconfig_with(&c, &token)?)?;
    assert_eq!(
        tokens::whoami(&c, &as_gateway)?,
        "system:serviceaccount:kwg-gateway:kwg-gateway"
    );
    let key = c.kubectl(
        &as_gateway,
        &[&ns[..], &["get", "secret", "kwg-gateway-key", "-o", "name"]].concat(),
    )?;
    assert_eq!(key.trim(), "secret/kwg-gateway-key");
    c.kubectl_admin(&[&ns[..], &["delete", "secret", "gw-token"]].concat())?;
    Ok(())
}

/// `kubectl auth can-i --list -n kwg-gateway` of a kwg user (no other grant): its resource
/// rows, sorted, columns joined by one space.
const EXPECTED_RULES: [&str; 5] = [
    "deployments.apps [] [kwg-gateway] [get]",
    "namespaces [] [] [get list watch]",
    "selfsubjectaccessreviews.authorization.k8s.io [] [] [create]",
    "selfsubjectreviews.authentication.k8s.io [] [] [create]",
    "selfsubjectrulesreviews.authorization.k8s.io [] [] [create]",
];
