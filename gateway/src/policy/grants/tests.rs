use super::*;
use crate::policy::fixtures::*;

#[test]
fn reachable_names_only_decided_peers() {
    let peers = [
        peer("100.77.0.2", "alice", &[]),
        peer("100.77.0.3", "alice", &["emojivoto", "default", "gone"]),
        peer("100.77.0.4", "bob", &[]),
    ];
    // bob's review in `default` is not answered yet.
    let answer = |o: &Subject, ns: &str| (o.user != "bob" || ns != "default").then(|| rbac(o, ns));
    let r = reachable(&inv(), &peers, answer);
    // Namespaces in inventory order (sorted); a mapped namespace that does not exist is not reached.
    assert_eq!(r[&ip("100.77.0.2")], ["emojivoto"]);
    assert_eq!(r[&ip("100.77.0.3")], ["emojivoto"]);
    assert!(!r.contains_key(&ip("100.77.0.4")), "undecided: left out");
    let root = [peer("100.77.0.5", "root", &[])];
    assert_eq!(
        reachable(&inv(), &root, |o, ns| Some(rbac(o, ns)))[&ip("100.77.0.5")],
        ["default", "emojivoto"]
    );
}

#[test]
fn questions_are_owner_namespace_pairs_not_known() {
    let peers = [
        peer("100.77.0.2", "alice", &[]),
        peer("100.77.0.3", "alice", &["default", "gone"]),
        peer("100.77.0.4", "bob", &["emojivoto"]),
    ];
    let q = questions(&inv(), &peers, |o, ns| {
        o.user == "alice" && ns == "emojivoto"
    });
    let q: Vec<(&str, &str)> = q
        .iter()
        .map(|(o, n)| (o.user.as_str(), n.as_str()))
        .collect();
    // A namespace with nothing to reach (`gone`) needs no review.
    assert_eq!(q, [("alice", "default"), ("bob", "emojivoto")]);
}

#[test]
fn service_accounts_get_their_groups() {
    assert_eq!(owner_groups("alice"), ["system:authenticated"]);
    assert_eq!(
        owner_groups("system:serviceaccount:emo:bot"),
        [
            "system:authenticated",
            "system:serviceaccounts",
            "system:serviceaccounts:emo"
        ]
    );
    assert_eq!(
        owner_groups("system:serviceaccount:bad"),
        ["system:authenticated"]
    );
}

#[test]
fn reviews_are_keyed_by_owner_and_verified_groups() {
    let dev = |groups: &[&str]| {
        let g: Vec<String> = groups.iter().map(|s| s.to_string()).collect();
        Subject::new("dev", &g)
    };
    // Sorted and without repeats: the Secret's order and system:authenticated do not matter.
    assert_eq!(
        dev(&["system:authenticated", "kwg:users", ""]).groups,
        ["kwg:users", "system:authenticated"]
    );
    assert_eq!(
        dev(&["kwg:users"]),
        dev(&["system:authenticated", "kwg:users"])
    );
    assert_eq!(dev(&[]).groups, ["system:authenticated"]);
    // A `system:` group of the Secret never counts (an exempt writer could put any there).
    assert_eq!(
        dev(&[
            "system:masters",
            "system:serviceaccounts:kube-system",
            "kwg:users"
        ])
        .groups,
        ["kwg:users", "system:authenticated"]
    );
    let sa = Subject::new(
        "system:serviceaccount:emo:bot",
        &["ci".to_owned(), "system:masters".to_owned()],
    );
    assert_eq!(
        sa.groups,
        [
            "ci",
            "system:authenticated",
            "system:serviceaccounts",
            "system:serviceaccounts:emo"
        ]
    );
    // Two peers of one owner, one with a group: two reviews per namespace, each answered
    // for its own peer (the group grants `default`).
    let mut with = peer("100.77.0.2", "dev", &[]);
    with.subject = dev(&["kwg:users"]);
    let peers = [with, peer("100.77.0.3", "dev", &[])];
    let q = questions(&inv(), &peers, |_, _| false);
    assert_eq!(q.len(), 4);
    assert!(q.contains(&(dev(&["kwg:users"]), "default".to_owned())));
    assert!(q.contains(&(dev(&[]), "default".to_owned())));
    let by_group =
        |o: &Subject, ns: &str| ns == "emojivoto" || o.groups.iter().any(|g| g == "kwg:users");
    let got = reachable(&inv(), &peers, |o, ns| Some(by_group(o, ns)));
    assert_eq!(got[&ip("100.77.0.2")], ["default", "emojivoto"]);
    assert_eq!(got[&ip("100.77.0.3")], ["emojivoto"]);
    let known = |o: &Subject, ns: &str| o == &dev(&[]) && ns == "default";
    assert_eq!(questions(&inv(), &peers, known).len(), 3);
}

#[test]
fn allow_command_names_the_user_or_service_account() {
    assert_eq!(
        allow_command("developer", "kube-system"),
        "kubectl -n kube-system create rolebinding kwg-reach-developer --clusterrole=view --user=developer"
    );
    assert_eq!(
        allow_command("system:serviceaccount:kwg-ci:deploy", "emojivoto"),
        "kubectl -n emojivoto create rolebinding kwg-reach-system-serviceaccount-kwg-ci-deploy --clusterrole=view --serviceaccount=kwg-ci:deploy"
    );
    assert!(
        allow_command("Jane Doe", "a")
            .ends_with("kwg-reach-jane-doe --clusterrole=view --user='Jane Doe'")
    );
}
