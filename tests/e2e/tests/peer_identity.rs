//! Issues 23 and 24 on the one-machine cluster: a join never deletes what it did not create,
//! `leave` always cleans up the machine, squatting a key blocks nobody, and credentials that
//! change (revoked, renewed) are followed. One cluster; the cases that share default names run
//! in one test, the others under names of their own. Needs root (network namespaces).

use std::path::{Path, PathBuf};
use std::time::Duration;

use kwg_e2e::laptop::{Laptop, laptop, shared, text};
use kwg_e2e::wait_for;
use kwg_sim::testing::Cluster;

/// The Secret's uid, or `None` when it is gone (the API server's NotFound; any other kubectl
/// failure panics with its error).
fn secret_uid(sim: &Cluster, secret: &str) -> Option<String> {
    let uid = sim
        .kubectl_admin(&[
            "-n",
            "kwg-system",
            "get",
            "secret",
            secret,
            "--ignore-not-found",
            "-o",
            "jsonpath={.metadata.uid}",
        ])
        .unwrap_or_else(|e| panic!("cannot read Secret {secret}: {e}"));
    Some(uid.trim().to_string()).filter(|u| !u.is_empty())
}

/// `kwg ci-credentials NAME --reach emojivoto --out FILE` as the admin: a ServiceAccount's
/// kubeconfig.
fn ci_credentials(l: &Laptop, name: &str, file: &Path) {
    let out = l.ci_credentials(name, &["emojivoto"], &["--duration", "1h"], file);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// Deletes the ServiceAccount `name` in kwg-ci: its tokens stop working (401).
fn revoke(sim: &Cluster, name: &str) {
    sim.kubectl_admin(&["-n", "kwg-ci", "delete", "serviceaccount", name])
        .expect("delete the ServiceAccount");
}

/// What is left on the laptop of a join: the interface, the firewall table, the state file.
fn leftovers(l: &Laptop) -> Vec<String> {
    let mut left = Vec::new();
    if l.run(&["ip", "link", "show", "kwg0"]).status.success() {
        left.push("interface kwg0".to_string());
    }
    let nft = text(&l.run(&["nft", "list", "tables"]).stdout);
    if nft.contains("kwg") {
        left.push(format!("nft: {nft}"));
    }
    if l.state.join("state.json").exists() {
        left.push("state.json".to_string());
    }
    left
}

fn reaches_web_app(l: &Laptop) -> bool {
    text(&l.curl("http://web-app.emojivoto/").stdout).contains("Emoji Vote")
}

fn kwg_with(l: &Laptop, kubeconfig: &Path, args: &[&str]) -> std::process::Output {
    let kc = kubeconfig.display().to_string();
    let mut argv = vec!["kwg"];
    argv.extend_from_slice(args);
    argv.extend(["--kubeconfig", kc.as_str()]);
    l.run(&argv)
}

#[test]
fn a_second_machine_of_the_same_hostname_is_told_and_deletes_nothing() {
    let sim = shared();
    let (a, b) = (laptop(&sim, "twina"), laptop(&sim, "twinb"));
    // The sim's laptops share the hostname and /etc/machine-id: the same default name, as two
    // CI legs on one image.
    // A short lease: renewals every 3 s (the name-taken-while-joined case below).
    let first = a.kwg(&["join", "-n", "emojivoto", "--ttl", "9s"]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.state.join("state.json")).unwrap()).unwrap();
    let name = state["peer"].as_str().unwrap().to_string();
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let tag = name.rsplit('-').next().unwrap();
    assert!(
        name.starts_with(
            &kwg_contract::PeerName::sanitize(hostname.trim())
                .unwrap()
                .to_string()
        ) && tag.len() == 6,
        "default name {name}: hostname and a six-digit machine tag"
    );
    let machine_id = std::fs::read_to_string("/etc/machine-id").unwrap_or_default();
    assert!(!machine_id.contains(tag), "the tag is a hash, not the id");
    let secret = format!("kwg-peer-{name}");
    let uid = secret_uid(&sim, &secret).expect("the first machine's Secret");

    let second = b.kwg(&["join", "-n", "emojivoto"]);
    let err = text(&second.stderr);
    eprintln!("SAID (second machine): {err}");
    assert_eq!(second.status.code(), Some(11), "{err}");
    assert!(
        err.contains(&format!(
            "peer name {name} is taken by another machine's peer (Secret {secret}, owner developer"
        )) && err.contains("pass --name"),
        "{err}"
    );
    assert!(!err.contains("ApiError"), "{err}");
    assert_eq!(leftovers(&b), Vec::<String>::new());
    // The first machine's Secret is the same object, and it still works.
    assert_eq!(secret_uid(&sim, &secret), Some(uid.clone()));
    assert!(reaches_web_app(&a));
    // With a name of its own the second machine joins next to the first.
    let own = b.kwg(&["join", "-n", "emojivoto", "--name", "twinb"]);
    assert!(own.status.success(), "{}", text(&own.stderr));
    assert!(reaches_web_app(&b) && reaches_web_app(&a));
    assert!(b.kwg(&["leave"]).status.success());

    // The first machine's Secret deleted and the name registered by another machine of the
    // same owner (one `kubectl replace --force`: deleted and created at once, again if the
    // first machine registered in between): its renewal leaves that Secret alone and says
    // the name is taken.
    let theirs = chrono::Utc::now() + chrono::Duration::hours(1);
    let key = kwg_contract::keys::PrivateKey::generate().public_key();
    let doc = kwg_e2e::peer_secret_json(&name, &key, theirs).to_string();
    let dev = sim.developer_kubeconfig().display().to_string();
    wait_for(
        "the name registered by another machine",
        Duration::from_secs(10),
        || {
            let argv = [
                "netns",
                "exec",
                &sim.names().laptop_ns(),
                "kubectl",
                "--kubeconfig",
                &dev,
                "replace",
                "--force",
                "-f",
                "-",
            ];
            Ok(kwg_sim::sh::run_stdin("ip", &argv, Some(&doc))
                .ok()
                .map(drop))
        },
    )
    .unwrap();
    let replaced = secret_uid(&sim, &secret).expect("their Secret");
    assert_ne!(replaced, uid);
    let said = wait_for("the first machine told", Duration::from_secs(10), || {
        let e = lease_error(&a);
        Ok(e.contains("is taken").then_some(e))
    })
    .unwrap();
    eprintln!("SAID (status of the first machine): {said}");
    let lease = || {
        let template = "go-template={{.data.leaseExpires | base64decode}}";
        sim.kubectl_admin(&["-n", "kwg-system", "get", "secret", &secret, "-o", template])
            .unwrap()
    };
    // Renewals every 3 s: two have come and gone, and their lease is still theirs.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(lease(), kwg_contract::format_lease(theirs));
    assert_eq!(secret_uid(&sim, &secret), Some(replaced.clone()));
    assert!(a.kwg(&["leave"]).status.success());
    assert_eq!(secret_uid(&sim, &secret), Some(replaced));
    sim.kubectl_admin(&["-n", "kwg-system", "delete", "secret", &secret])
        .unwrap();
}

#[test]
fn a_squatted_public_key_gets_a_new_key_pair_and_the_join_works() {
    let sim = shared();
    let l = laptop(&sim, "squatted");
    // The machine's key, made by a first join.
    l.join(&["-n", "emojivoto"]);
    assert!(l.kwg(&["leave"]).status.success());
    let key = kwg_contract::keys::read_private_key_file(&l.state.join("private.key"))
        .unwrap()
        .public_key();
    // Another user copies it into a peer of their own, which the gateway serves.
    let squatter_kc = l.state.with_extension("squatter.kubeconfig");
    ci_credentials(&l, "squatter", &squatter_kc);
    let owner = kwg_e2e::tokens::whoami(&sim, &squatter_kc).unwrap();
    let expires = chrono::Utc::now() + chrono::Duration::hours(1);
    let mut doc = kwg_e2e::peer_secret_json("squat", &key, expires);
    doc["stringData"]["owner"] = owner.clone().into();
    sim.kubectl_apply(&squatter_kc, &doc.to_string()).unwrap();
    kwg_e2e::wait_tunnel_ip(&sim, "squat", Duration::from_secs(10)).unwrap();

    let join = l.join(&["-n", "emojivoto"]);
    let err = text(&join.stderr);
    let said = format!(
        "This machine's public key is held by peer Secret kwg-peer-squat (owner {owner}): made a new key pair"
    );
    assert_eq!(err.matches(&said).count(), 1, "{err}");
    assert!(reaches_web_app(&l));
    let now = kwg_contract::keys::read_private_key_file(&l.state.join("private.key"))
        .unwrap()
        .public_key();
    assert_ne!(now, key);
    // The squatter's Secret is theirs, untouched.
    assert!(secret_uid(&sim, "kwg-peer-squat").is_some());
    assert!(l.kwg(&["leave"]).status.success());
}

#[test]
fn leave_after_a_refused_delete_cleans_the_machine_and_names_the_lease_end() {
    let sim = shared();
    let l = laptop(&sim, "refused");
    let kc = l.state.with_extension("refused.kubeconfig");
    ci_credentials(&l, "refused", &kc);
    let join = kwg_with(&l, &kc, &["join", "-n", "emojivoto", "--name", "refused"]);
    assert!(join.status.success(), "{}", text(&join.stderr));
    assert!(reaches_web_app(&l));
    let uid = secret_uid(&sim, "kwg-peer-refused").expect("registered");
    // RBAC now refuses the ServiceAccount everything in kwg-system (its delete too).
    sim.kubectl_admin(&[
        "-n",
        "kwg-system",
        "delete",
        "rolebinding",
        "kwg-ci-kwg-ci-refused",
    ])
    .expect("delete the RoleBinding");
    let leave = l.kwg(&["leave"]);
    let err = text(&leave.stderr);
    eprintln!("SAID (leave): {err}");
    assert_eq!(leave.status.code(), Some(12), "{err}");
    assert!(
        err.contains("could not delete peer Secret kwg-system/kwg-peer-refused")
            && err.contains("the gateway removes it when its lease ends at 20"),
        "{err}"
    );
    assert_eq!(leftovers(&l), Vec::<String>::new());
    assert_eq!(secret_uid(&sim, "kwg-peer-refused"), Some(uid));
    // The next join works without touching any file.
    let again = l.kwg(&["join", "-n", "emojivoto", "--name", "refused-2"]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(reaches_web_app(&l));
    assert!(l.kwg(&["leave"]).status.success());
}

/// The lease line of `kwg status -o json`.
fn lease_error(l: &Laptop) -> String {
    let out = l.kwg(&["status", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["lease"]["error"].as_str().unwrap_or_default().to_string()
}

#[test]
fn revoked_credentials_are_shown_followed_when_renewed_and_never_wedge_the_machine() {
    let sim = shared();
    let l = laptop(&sim, "revoked");
    let kc: PathBuf = l.state.with_extension("revoked.kubeconfig");
    ci_credentials(&l, "revoked", &kc);
    let argv = [
        "join",
        "-n",
        "emojivoto",
        "--name",
        "revoked",
        "--ttl",
        "9s",
    ];
    let join = kwg_with(&l, &kc, &argv);
    assert!(join.status.success(), "{}", text(&join.stderr));

    // Revoked while joined: status says so, with the time, and the tunnel keeps working.
    revoke(&sim, "revoked");
    let error = wait_for("credentials rejected", Duration::from_secs(10), || {
        let e = lease_error(&l);
        Ok(e.starts_with("credentials rejected since ").then_some(e))
    })
    .unwrap();
    assert!(error.contains(": log in again"), "{error}");
    let text_status = text(&l.kwg(&["status"]).stdout);
    assert!(
        text_status.contains("credentials rejected since"),
        "{text_status}"
    );
    assert!(reaches_web_app(&l));
    // Logged in again (a new token in the same kubeconfig): the daemon renews with it.
    ci_credentials(&l, "revoked", &kc);
    wait_for(
        "renewal with the new token",
        Duration::from_secs(10),
        || Ok(lease_error(&l).is_empty().then_some(())),
    )
    .unwrap();

    // Revoked again, then leave: the machine is cleaned, the peer left to its lease.
    revoke(&sim, "revoked");
    let leave = l.kwg(&["leave"]);
    let err = text(&leave.stderr);
    eprintln!("SAID (leave): {err}");
    assert_eq!(leave.status.code(), Some(12), "{err}");
    assert!(
        err.contains("could not delete peer Secret kwg-system/kwg-peer-revoked")
            && err.contains("rejected the credentials")
            && err.contains("when its lease ends at 20"),
        "{err}"
    );
    assert_eq!(leftovers(&l), Vec::<String>::new());

    // A join with new credentials works, no file touched by hand.
    let fresh = l.state.with_extension("fresh.kubeconfig");
    ci_credentials(&l, "revoked", &fresh);
    let join = kwg_with(&l, &fresh, &argv);
    assert!(join.status.success(), "{}", text(&join.stderr));
    assert!(reaches_web_app(&l));

    // A daemon that died with a journal, credentials revoked since: the next join cleans it
    // up with the kubeconfig it is given now, not the dead session's.
    l.kill_daemon();
    revoke(&sim, "revoked");
    let newest = l.state.with_extension("newest.kubeconfig");
    ci_credentials(&l, "revoked", &newest);
    let join = kwg_with(&l, &newest, &argv);
    assert!(join.status.success(), "{}", text(&join.stderr));
    assert!(reaches_web_app(&l));
    assert!(l.kwg(&["leave"]).status.success());
    assert_eq!(leftovers(&l), Vec::<String>::new());
}
