//! The shipped policy (`manifests/admission-policy.yaml`) evaluated in memory.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use super::*;
use crate::kinds::find;

const POLICY: &str = include_str!("../../../../manifests/admission-policy.yaml");

fn store_with_policy() -> Store {
    let mut s = Store::default();
    let ns = find("", "v1", "namespaces").unwrap();
    for name in ["kwg-system", "default"] {
        s.put(
            ns,
            json!({"metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}}}),
        );
    }
    for doc in serde_yaml_ng::Deserializer::from_str(POLICY) {
        let obj: Value = serde::Deserialize::deserialize(doc).unwrap();
        let plural = match obj["kind"].as_str().unwrap() {
            "ValidatingAdmissionPolicy" => "validatingadmissionpolicies",
            _ => "validatingadmissionpolicybindings",
        };
        s.put(find(GROUP, "v1", plural).unwrap(), obj);
    }
    s
}

fn user(name: &str) -> User {
    User {
        name: name.into(),
        groups: vec!["kwg:users".into(), "system:authenticated".into()],
    }
}

fn peer(owner: &str, key: &str) -> Value {
    let d = |s: &str| json!(B64.encode(s));
    json!({"metadata": {"name": "kwg-peer-box", "namespace": "kwg-system", "labels": {"kwg.io/peer": "true"}},
           "type": "kwg.io/peer",
           "data": {"name": d("box"), "publicKey": d(key), "owner": d(owner), "hostname": d("h"),
                    "namespaces": d(""), "leaseExpires": d("2030-01-01T00:00:00Z")}})
}

fn check(
    s: &Store,
    op: Operation,
    who: &User,
    obj: Option<&Value>,
    old: Option<&Value>,
) -> Result<(), String> {
    let name = obj.or(old).map(|o| meta_str(o, "name")).unwrap_or("");
    let a = Attributes {
        operation: op,
        kind: find("", "v1", "secrets").unwrap(),
        subresource: "",
        namespace: "kwg-system",
        name,
        object: obj,
        old_object: old,
        user: who,
        dry_run: false,
    };
    validate(s, &a)
        .map(drop)
        .map_err(|e| format!("{} {}", e.code, e.message))
}

#[test]
fn owners_create_change_and_delete_only_their_own_peers() {
    let s = store_with_policy();
    // Every length modulo 3, so every padding case of the encoding is exercised.
    for name in [
        "dev",
        "deve",
        "devel",
        "alice@example.com",
        "system:serviceaccount:ci:runner",
    ] {
        let me = user(name);
        let mine = peer(name, "key1");
        assert_eq!(
            check(&s, Operation::Create, &me, Some(&mine), None),
            Ok(()),
            "{name}"
        );
        let mut renewed = mine.clone();
        renewed["data"]["leaseExpires"] = json!(B64.encode("2031-01-01T00:00:00Z"));
        assert_eq!(
            check(&s, Operation::Update, &me, Some(&renewed), Some(&mine)),
            Ok(())
        );
        assert_eq!(check(&s, Operation::Delete, &me, None, Some(&mine)), Ok(()));
    }
    let victim = peer("alice", "key1");
    let mallory = user("mallory");
    let prefix = "403 secrets \"kwg-peer-box\" is forbidden: ValidatingAdmissionPolicy 'kwg-peer-ownership' with binding 'kwg-peer-ownership' denied request: ";
    let not_yours = format!(
        "{prefix}you may change or delete only your own peer Secrets: this one is not owned by mallory"
    );
    assert_eq!(
        check(&s, Operation::Delete, &mallory, None, Some(&victim)),
        Err(not_yours.clone())
    );
    let mut swapped = victim.clone();
    swapped["data"]["publicKey"] = json!(B64.encode("key2"));
    assert_eq!(
        check(
            &s,
            Operation::Update,
            &mallory,
            Some(&swapped),
            Some(&victim)
        ),
        Err(not_yours)
    );
    assert_eq!(
        check(
            &s,
            Operation::Update,
            &user("alice"),
            Some(&swapped),
            Some(&victim)
        ),
        Err(format!(
            "{prefix}the publicKey and owner of a peer Secret never change: delete it and register the peer again"
        ))
    );
    assert_eq!(
        check(&s, Operation::Create, &mallory, Some(&victim), None),
        Err(format!(
            "{prefix}a peer Secret you create must name you as its owner: data.owner must be mallory"
        ))
    );
    let mut forged = peer("mallory", "k");
    forged["metadata"]["annotations"] = json!({"kwg.io/tunnel-ip": "100.77.0.2"});
    assert_eq!(
        check(&s, Operation::Create, &mallory, Some(&forged), None),
        Err(format!(
            "{prefix}the annotations kwg.io/tunnel-ip and kwg.io/error are written by the gateway only"
        ))
    );
}

#[test]
fn token_secrets_and_big_secrets_are_refused_and_the_gateway_is_exempt() {
    let s = store_with_policy();
    let token = json!({"metadata": {"name": "gw-token", "namespace": "kwg-system",
        "annotations": {"kubernetes.io/service-account.name": "kwg-gateway"}},
        "type": "kubernetes.io/service-account-token"});
    let e = check(
        &s,
        Operation::Create,
        &user("developer"),
        Some(&token),
        None,
    );
    assert_eq!(e, Err("403 secrets \"gw-token\" is forbidden: ValidatingAdmissionPolicy 'kwg-peer-ownership' with binding 'kwg-peer-ownership' denied request: in kwg-system you may only write Secrets of type kwg.io/peer (a kwg peer), not kubernetes.io/service-account-token: other Secrets there are reserved to the gateway and admins".into()));
    let mut big = peer("developer", "k");
    big["data"]["hostname"] = json!(B64.encode("x".repeat(1 << 20)));
    let e = check(&s, Operation::Create, &user("developer"), Some(&big), None).unwrap_err();
    assert!(e.starts_with("422 secrets \"kwg-peer-box\" is forbidden: ValidatingAdmissionPolicy 'kwg-peer-ownership' with binding 'kwg-peer-ownership' denied request: a peer Secret holds only the keys"), "{e}");
    let gateway = User {
        name: "system:serviceaccount:kwg-gateway:kwg-gateway".into(),
        groups: vec![],
    };
    // A ServiceAccount of that name in kwg-system (not the gateway's) is not exempt.
    let impostor = user("system:serviceaccount:kwg-system:kwg-gateway");
    assert!(check(&s, Operation::Create, &impostor, Some(&token), None).is_err());
    let admin = User {
        name: "admin".into(),
        groups: vec!["system:masters".into()],
    };
    for exempt in [&gateway, &admin] {
        assert_eq!(
            check(&s, Operation::Create, exempt, Some(&token), None),
            Ok(())
        );
    }
    let e = check(
        &s,
        Operation::Create,
        &user("dév"),
        Some(&peer("dév", "k")),
        None,
    );
    assert!(e.unwrap_err().contains("printable ASCII"));
}

#[test]
fn policies_with_missing_fields_or_bad_cel_are_invalid() {
    let vap = find(GROUP, "v1", "validatingadmissionpolicies").unwrap();
    let bad = json!({"spec": {"validations": [{"expression": "object.("}, {"message": "m"}]}});
    let errs: Vec<String> = config_errors(vap, &bad)
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert_eq!(errs[0], "spec.matchConstraints: Required value");
    assert!(
        errs[1].starts_with(
            "spec.validations[0].expression: Invalid value: \"object.(\": compilation failed: "
        ),
        "{}",
        errs[1]
    );
    assert_eq!(
        errs[2],
        "spec.validations[1].expression: Required value: expression is not specified"
    );
    let store = store_with_policy();
    for policy in store.list(vap, None) {
        assert_eq!(
            config_errors(vap, policy),
            vec![],
            "the shipped policy compiles"
        );
    }
    let binding = find(GROUP, "v1", "validatingadmissionpolicybindings").unwrap();
    let errs = config_errors(binding, &json!({"spec": {"policyName": "p"}}));
    assert_eq!(
        errs[0].to_string(),
        "spec.validationActions: Required value: at least one validation action is required"
    );
}

#[test]
fn groups_are_the_users_own_exactly_and_never_change() {
    let s = store_with_policy();
    let dev = user("developer"); // kwg:users, system:authenticated
    let with = |groups: &str| {
        let mut p = peer("developer", "k");
        p["metadata"]["annotations"] = json!({"kwg.io/groups": groups});
        p
    };
    let mine = with("kwg:users\nsystem:authenticated");
    assert_eq!(
        check(&s, Operation::Create, &dev, Some(&mine), None),
        Ok(())
    );
    let mut renewed = mine.clone();
    renewed["data"]["leaseExpires"] = json!(B64.encode("2031-01-01T00:00:00Z"));
    assert_eq!(
        check(&s, Operation::Update, &dev, Some(&renewed), Some(&mine)),
        Ok(())
    );
    let prefix = "403 secrets \"kwg-peer-box\" is forbidden: ValidatingAdmissionPolicy 'kwg-peer-ownership' with binding 'kwg-peer-ownership' denied request: ";
    let forged_msg = format!(
        "{prefix}the annotation kwg.io/groups of a peer Secret must list your groups exactly, one a line, in the order the API server gives them (kwg:users, system:authenticated); kwg join writes them, or leave the annotation out"
    );
    for forged in [
        "kwg:users\nsystem:authenticated\nsystem:masters",
        "system:masters",
        "system:authenticated\nkwg:users",
        "kwg:users",
        "",
    ] {
        assert_eq!(
            check(&s, Operation::Create, &dev, Some(&with(forged)), None),
            Err(forged_msg.clone()),
            "{forged:?}"
        );
    }
    // A group holding the separator could pass for two groups: refused, not split.
    let odd = User {
        name: "developer".into(),
        groups: vec!["kwg:users\nsystem:masters".into()],
    };
    let e = check(
        &s,
        Operation::Create,
        &odd,
        Some(&with("kwg:users\nsystem:masters")),
        None,
    );
    let e = e.unwrap_err();
    assert!(e.contains("must list your groups exactly"), "{e}");
    // Without the annotation the peer has no groups: allowed.
    let plain = peer("developer", "k");
    assert_eq!(
        check(&s, Operation::Create, &dev, Some(&plain), None),
        Ok(())
    );
    let never = format!(
        "{prefix}the annotation kwg.io/groups of a peer Secret never changes: delete the peer and register it again"
    );
    // Added, removed or changed later: refused, even to the user's own groups.
    for (new, old) in [(&mine, &plain), (&plain, &mine)] {
        assert_eq!(
            check(&s, Operation::Update, &dev, Some(new), Some(old)),
            Err(never.clone())
        );
    }
    let moved = User {
        name: "developer".into(),
        groups: vec!["kwg:admins".into(), "system:authenticated".into()],
    };
    let now = with("kwg:admins\nsystem:authenticated");
    assert_eq!(
        check(&s, Operation::Update, &moved, Some(&now), Some(&mine)),
        Err(never)
    );
    // The user's groups changed since the peer registered: renewing it is refused.
    assert!(
        check(&s, Operation::Update, &moved, Some(&renewed), Some(&mine))
            .unwrap_err()
            .contains("(kwg:admins, system:authenticated)")
    );
}
