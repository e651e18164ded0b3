use super::*;
use crate::policy::rbac::{self, Named};

fn q(user: &str, ns: &str) -> Question {
    (Subject::new(user, &[]), ns.to_owned())
}

/// `users` × `namespaces`.
fn needed(users: &[&str], namespaces: &[&str]) -> BTreeSet<Question> {
    users
        .iter()
        .flat_map(|u| namespaces.iter().map(move |n| q(u, n)))
        .collect()
}

/// What a ClusterRole change moves: `users` bound to it by RoleBindings in `namespaces`, and
/// `everywhere` by ClusterRoleBindings.
fn bound(users: &[&str], namespaces: &[&str], everywhere: &[&str]) -> Affected {
    let user = |u: &&str| Named::User(u.to_string());
    let named: BTreeSet<Named> = users.iter().map(user).collect();
    Affected {
        everywhere: everywhere.iter().map(user).collect(),
        in_namespace: namespaces
            .iter()
            .map(|n| (n.to_string(), named.clone()))
            .collect(),
    }
}

/// A pass where every question asked is answered `allowed(q)`; what was asked.
fn pass(
    r: &mut Reviews,
    need: &BTreeSet<Question>,
    now: Instant,
    allowed: impl Fn(&Question) -> bool,
) -> BTreeSet<Question> {
    let asked = r.to_ask(need, now);
    for a in &asked {
        r.answered(a.clone(), allowed(a));
    }
    asked
}

/// Runs the loop from `from` to `to` as reach_watch does (wake, tick, pass); every review
/// asked, with its time.
fn run(
    r: &mut Reviews,
    need: &BTreeSet<Question>,
    from: Instant,
    to: Instant,
) -> Vec<(Instant, Question)> {
    let mut asked = Vec::new();
    let mut now = from;
    loop {
        now = r.next_wake(now).max(now);
        if now > to {
            return asked;
        }
        if r.tick(now) {
            asked.extend(pass(r, need, now, |_| true).into_iter().map(|q| (now, q)));
        }
    }
}

#[test]
fn new_questions_are_asked_at_once_and_answers_are_kept() {
    let t0 = Instant::now();
    let mut r = Reviews::new(Duration::from_secs(60), 100.0, t0);
    let need = needed(&["alice", "bob"], &["emo", "default"]);
    assert_eq!(pass(&mut r, &need, t0, |q| q.1 == "emo"), need);
    assert_eq!(r.answer(&Subject::new("alice", &[]), "emo"), Some(true));
    assert!(!r.allowed(&Subject::new("alice", &[]), "default"));
    assert_eq!(r.answer(&Subject::new("carol", &[]), "emo"), None);
    // Answered: a pass (a peer or an object changed) asks nothing again.
    assert!(r.to_ask(&need, t0).is_empty());
    // A new peer's questions go at once; the known ones stay cached.
    let more = needed(&["alice", "bob", "carol"], &["emo", "default"]);
    assert_eq!(r.to_ask(&more, t0), needed(&["carol"], &["emo", "default"]));
}

#[test]
fn each_answer_is_reviewed_again_once_per_period_spread_over_it() {
    let t0 = Instant::now();
    let period = Duration::from_secs(60);
    let users: Vec<String> = (0..100).map(|i| format!("u{i}")).collect();
    let users: Vec<&str> = users.iter().map(String::as_str).collect();
    let need = needed(&users, &["a", "b", "c"]);
    let mut r = Reviews::new(period, 1000.0, t0);
    assert_eq!(pass(&mut r, &need, t0, |_| true).len(), 300);
    let asked = run(&mut r, &need, t0, t0 + 3 * period + period / 2);
    // Not again within half a period of the first review; from then on twice each in two
    // periods, never all at once: 300 over 60 s is 5 a second.
    let from = t0 + period + period / 2;
    let asked: Vec<(Instant, Question)> = asked
        .into_iter()
        .filter(|(at, _)| *at >= from && *at < from + 2 * period)
        .collect();
    assert_eq!(asked.len(), 600);
    let mut per_q: HashMap<&Question, usize> = HashMap::new();
    let mut per_second: HashMap<u64, usize> = HashMap::new();
    for (at, q) in &asked {
        *per_q.entry(q).or_default() += 1;
        *per_second.entry((*at - t0).as_secs()).or_default() += 1;
    }
    assert!(per_q.values().all(|&n| n == 2), "{per_q:?}");
    let max = per_second.values().max().copied().unwrap_or(0);
    assert!(max <= 15, "a burst of {max} in one second");
}

#[test]
fn idle_with_nothing_due_costs_no_pass() {
    let t0 = Instant::now();
    let mut r = Reviews::new(Duration::from_secs(60), 100.0, t0);
    let need = needed(&["alice"], &["emo"]);
    pass(&mut r, &need, t0, |_| true);
    // One answer, due once a minute: at most one tick in sixty asks for a pass.
    let mut now = t0;
    let mut passes = 0;
    while now < t0 + Duration::from_secs(150) {
        now = r.next_wake(now);
        if r.tick(now) {
            assert_eq!(r.to_ask(&need, now), need);
            if now >= t0 + Duration::from_secs(90) {
                passes += 1;
            }
        }
    }
    assert_eq!(passes, 1, "one in a minute");
}

#[test]
fn a_role_binding_change_asks_only_its_namespace_again() {
    let t0 = Instant::now();
    let mut r = Reviews::new(Duration::from_secs(3600), 100.0, t0);
    let need = needed(&["alice", "bob"], &["emo", "default", "kube-system"]);
    pass(&mut r, &need, t0, |_| false);
    r.namespaces_changed(["emo".to_owned()]);
    let again = pass(&mut r, &need, t0, |q| q.0.user == "alice");
    assert_eq!(again, needed(&["alice", "bob"], &["emo"]));
    assert!(r.allowed(&Subject::new("alice", &[]), "emo"));
    assert!(r.to_ask(&need, t0).is_empty(), "once");
    // A namespace no peer needs asks nothing.
    r.namespaces_changed(["elsewhere".to_owned()]);
    assert!(r.to_ask(&need, t0).is_empty());
}

#[test]
fn a_cluster_role_change_asks_only_the_pairs_of_the_subjects_bound_to_it() {
    let t0 = Instant::now();
    let mut r = Reviews::new(Duration::from_secs(3600), 100.0, t0);
    // alice is in group team; carol is not; bob is named by a ClusterRoleBinding.
    let alice = Subject::new("alice", &["team".to_owned()]);
    let (bob, carol) = (Subject::new("bob", &[]), Subject::new("carol", &[]));
    let need: BTreeSet<Question> = [&alice, &bob, &carol]
        .into_iter()
        .flat_map(|s| ["emo", "default"].map(|n| (s.clone(), n.to_owned())))
        .collect();
    pass(&mut r, &need, t0, |_| false);
    // The ClusterRole `edit` changed: a RoleBinding in emo binds it to group team, a
    // ClusterRoleBinding to bob.
    let rbs = [
        rbac::Binding {
            namespace: Some("emo".into()),
            cluster_role: Some("edit".into()),
            role: None,
            subjects: vec![Named::Group("team".into())],
        },
        rbac::Binding {
            namespace: Some("default".into()),
            cluster_role: Some("view".into()),
            role: None,
            subjects: vec![Named::Group("team".into()), Named::User("carol".into())],
        },
        rbac::Binding {
            namespace: None,
            cluster_role: Some("edit".into()),
            role: None,
            subjects: vec![Named::User("bob".into())],
        },
    ];
    let affected = rbac::bound_to(&["edit".to_owned()].into(), &rbs);
    r.subjects_changed(affected);
    assert_eq!(
        r.to_ask(&need, t0),
        [(alice, "emo".to_owned()), cluster(&bob)].into(),
        "alice in emo, bob's cluster-wide grant; nothing of carol's, nothing in default"
    );
    assert!(r.to_ask(&need, t0).is_empty(), "once");
    // A ClusterRole no binding names asks nothing.
    r.subjects_changed(rbac::bound_to(&["unbound".to_owned()].into(), &rbs));
    assert!(r.to_ask(&need, t0).is_empty());
}

#[test]
fn the_rate_limit_paces_a_burst_changes_first() {
    let t0 = Instant::now();
    // 10 a second, bursts of 20.
    let mut r = Reviews::new(Duration::from_secs(3600), 10.0, t0);
    let old = needed(&["old"], &["a", "b", "c", "d", "e"]);
    assert_eq!(pass(&mut r, &old, t0, |_| true).len(), 5);
    let t1 = t0 + Duration::from_secs(10); // the bucket is full again
    r.subjects_changed(bound(&["old"], &["a", "b", "c", "d", "e"], &[]));
    let users: Vec<String> = (0..10).map(|i| format!("new{i}")).collect();
    let users: Vec<&str> = users.iter().map(String::as_str).collect();
    let mut need = needed(&users, &["a", "b", "c", "d", "e"]);
    need.extend(old.iter().cloned());
    let first = pass(&mut r, &need, t1, |_| true);
    assert_eq!(first.len(), 20, "the burst");
    // What the RBAC change can have moved goes before the new peers' questions.
    assert_eq!(
        first.iter().filter(|q| q.0.user == "old").count(),
        5,
        "changes first"
    );
    assert_eq!(r.waiting(), 35);
    // The rest go at 10 a second, woken for each token.
    r.tick(t1);
    assert_eq!(r.next_wake(t1), t1 + Duration::from_millis(100));
    let rest = run(&mut r, &need, t1, t1 + Duration::from_secs(4));
    let asked: BTreeSet<&Question> = first.iter().chain(rest.iter().map(|(_, q)| q)).collect();
    assert_eq!(asked.len(), need.len(), "every one asked once");
    assert_eq!(rest.len(), 35);
    let last = rest.iter().map(|(at, _)| *at).max().unwrap();
    assert!(
        last >= t1 + Duration::from_millis(3400),
        "paced: {:?}",
        last - t1
    );
    assert_eq!(r.waiting(), 0);
}

#[test]
fn a_failed_review_keeps_its_last_answer_and_is_asked_again_after_the_retry() {
    let t0 = Instant::now();
    let mut r = Reviews::new(Duration::from_secs(3600), 100.0, t0);
    let need = needed(&["alice"], &["emo", "default"]);
    pass(&mut r, &need, t0, |_| true);
    r.subjects_changed(bound(&["alice"], &["emo", "default"], &[]));
    let asked = r.to_ask(&need, t0);
    assert_eq!(asked, need);
    r.answered(q("alice", "default"), false);
    r.failed(q("alice", "emo"), t0);
    assert!(r.allowed(&Subject::new("alice", &[]), "emo"), "kept");
    // Not again before the retry, though the rate limit has tokens to spare.
    assert_eq!(r.next_wake(t0), t0 + RETRY);
    assert!(!r.tick(t0 + RETRY / 2));
    assert!(r.to_ask(&need, t0 + RETRY / 2).is_empty());
    let t1 = t0 + RETRY;
    assert!(r.tick(t1));
    assert_eq!(
        r.to_ask(&need, t1),
        needed(&["alice"], &["emo"]),
        "only the failed one"
    );
    assert!(r.to_ask(&need, t1).is_empty());
}

#[test]
fn answers_no_peer_needs_are_forgotten() {
    let t0 = Instant::now();
    let mut r = Reviews::new(Duration::from_secs(60), 100.0, t0);
    let both = needed(&["alice", "bob"], &["emo"]);
    pass(&mut r, &both, t0, |_| true);
    let alice = needed(&["alice"], &["emo"]);
    assert!(r.to_ask(&alice, t0).is_empty());
    assert_eq!(r.answer(&Subject::new("bob", &[]), "emo"), None, "bob left");
    // Bob back: asked afresh, not answered from a stale cache.
    assert_eq!(r.to_ask(&both, t0), needed(&["bob"], &["emo"]));
}

#[test]
fn a_cluster_binding_change_costs_one_review_per_subject_not_per_namespace() {
    let t0 = Instant::now();
    let users: Vec<String> = (0..200).map(|i| format!("u{i}")).collect();
    let users: Vec<&str> = users.iter().map(String::as_str).collect();
    let namespaces: Vec<String> = (0..100).map(|i| format!("ns{i}")).collect();
    let namespaces: Vec<&str> = namespaces.iter().map(String::as_str).collect();
    let need = needed(&users, &namespaces);
    let mut r = Reviews::new(Duration::from_secs(3600), 1e9, t0);
    assert_eq!(pass(&mut r, &need, t0, |q| q.1 == "ns0").len(), 20_000);
    r.cluster_bindings_changed();
    let asked = pass(&mut r, &need, t0, |_| false);
    assert_eq!(asked.len(), 200, "one cluster-scope review per subject");
    assert!(asked.iter().all(|q| q.1.is_empty()));
    // Refused cluster-wide: only the namespace each was allowed in is asked again.
    let again = pass(&mut r, &need, t0, |q| q.1 == "ns0");
    assert_eq!(again.len(), 200);
    assert!(again.iter().all(|q| q.1 == "ns0"));
    assert!(r.to_ask(&need, t0).is_empty());
}

#[test]
fn a_cluster_wide_grant_answers_every_namespace_until_it_goes() {
    let t0 = Instant::now();
    let mut r = Reviews::new(Duration::from_secs(3600), 100.0, t0);
    let alice = Subject::new("alice", &[]);
    let need = needed(&["alice", "bob"], &["a", "b"]);
    pass(&mut r, &need, t0, |q| q.1 == "a" && q.0.user == "alice");
    r.cluster_bindings_changed();
    assert_eq!(
        r.to_ask(&need, t0),
        [cluster(&alice), cluster(&Subject::new("bob", &[]))].into()
    );
    // A ClusterRoleBinding now grants alice everywhere, bob nothing (he had nothing).
    r.answered(cluster(&alice), true);
    r.answered(cluster(&Subject::new("bob", &[])), false);
    assert_eq!(r.answer(&alice, "b"), Some(true));
    assert!(r.to_ask(&need, t0).is_empty(), "bob had no grant to lose");
    // A namespace that appears needs no review for alice, one for bob.
    let more = needed(&["alice", "bob"], &["a", "b", "c"]);
    assert_eq!(pass(&mut r, &more, t0, |_| false), needed(&["bob"], &["c"]));
    assert!(r.allowed(&alice, "c"));
    // The binding goes: alice is asked again in every namespace (b's RoleBindings may have
    // changed meanwhile, unreviewed); bob, refused before too, in none.
    r.cluster_bindings_changed();
    assert_eq!(
        pass(&mut r, &more, t0, |_| false),
        [cluster(&alice), cluster(&Subject::new("bob", &[]))].into()
    );
    assert_eq!(r.answer(&alice, "b"), None);
    assert_eq!(r.to_ask(&more, t0), needed(&["alice"], &["a", "b", "c"]));
}

#[test]
fn cluster_wide_answers_are_reviewed_again_each_period() {
    let t0 = Instant::now();
    let period = Duration::from_secs(60);
    let mut r = Reviews::new(period, 100.0, t0);
    let alice = Subject::new("alice", &[]);
    let need = needed(&["alice"], &["a", "b"]);
    pass(&mut r, &need, t0, |_| false);
    r.cluster_bindings_changed();
    pass(&mut r, &need, t0, |_| true);
    assert!(r.allowed(&alice, "b"));
    // Within a period the cluster-scope answer is asked again (and nothing per namespace:
    // the per-namespace answers are not needed while it allows).
    let asked = run(&mut r, &need, t0, t0 + 2 * period);
    let asked: Vec<&Question> = asked.iter().map(|(_, q)| q).collect();
    assert!(asked.contains(&&cluster(&alice)), "{asked:?}");
}

#[test]
fn a_cluster_role_change_asks_the_bound_pairs_even_of_a_subject_allowed_everywhere() {
    let t0 = Instant::now();
    let mut r = Reviews::new(Duration::from_secs(3600), 100.0, t0);
    let alice = Subject::new("alice", &[]);
    let need = needed(&["alice"], &["a", "b"]);
    pass(&mut r, &need, t0, |_| false);
    r.cluster_bindings_changed();
    pass(&mut r, &need, t0, |_| true);
    // The ClusterRole it was bound to changed: its cluster-wide answer and those of the
    // namespaces whose RoleBindings name the ClusterRole are asked again.
    r.subjects_changed(bound(&["alice"], &["a", "b"], &["alice"]));
    let mut want = need.clone();
    want.insert(cluster(&alice));
    assert_eq!(pass(&mut r, &need, t0, |q| q.1 == "b"), want);
    assert_eq!(
        (r.answer(&alice, "a"), r.answer(&alice, "b")),
        (Some(false), Some(true))
    );
}

#[test]
fn a_namespace_changed_while_allowed_everywhere_is_asked_at_once_when_that_goes() {
    let t0 = Instant::now();
    let mut r = Reviews::new(Duration::from_secs(3600), 100.0, t0);
    let alice = Subject::new("alice", &[]);
    let need = needed(&["alice"], &["x"]);
    pass(&mut r, &need, t0, |_| false);
    r.cluster_bindings_changed();
    pass(&mut r, &need, t0, |_| true);
    // A RoleBinding in x now allows alice: no review while the cluster-wide grant stands.
    r.namespaces_changed(["x".to_owned()]);
    assert!(pass(&mut r, &need, t0, |_| true).is_empty());
    // The ClusterRoleBinding goes: x is asked again at once, not at the next re-review.
    r.cluster_bindings_changed();
    assert_eq!(
        pass(&mut r, &need, t0, |q| !q.1.is_empty()),
        [cluster(&alice)].into()
    );
    let t1 = t0 + Duration::from_millis(10);
    assert!(r.next_wake(t1) <= t1);
    assert!(r.tick(t1));
    assert_eq!(pass(&mut r, &need, t1, |q| !q.1.is_empty()), need);
    assert!(r.allowed(&alice, "x"));
    assert!(!r.tick(t1), "once");
}

#[test]
fn a_new_question_that_failed_waits_for_the_retry() {
    let t0 = Instant::now();
    let mut r = Reviews::new(Duration::from_secs(3600), 100.0, t0);
    let need = needed(&["alice"], &["emo"]);
    assert_eq!(r.to_ask(&need, t0), need);
    r.failed(q("alice", "emo"), t0);
    let t1 = t0 + Duration::from_millis(100);
    assert!(r.to_ask(&need, t1).is_empty(), "not before the retry");
    assert_eq!(r.next_wake(t1), t0 + RETRY);
    assert!(r.tick(t0 + RETRY));
    assert_eq!(r.to_ask(&need, t0 + RETRY), need);
}

#[test]
fn a_change_goes_before_the_re_reviews_waiting_for_the_rate_limit() {
    let t0 = Instant::now();
    // 2 a second, bursts of 4; 200 answers re-reviewed each minute: more than it lets through.
    let mut r = Reviews::new(Duration::from_secs(60), 2.0, t0);
    let users: Vec<String> = (0..10).map(|i| format!("u{i}")).collect();
    let users: Vec<&str> = users.iter().map(String::as_str).collect();
    let namespaces: Vec<String> = (0..20).map(|i| format!("ns{i:02}")).collect();
    let namespaces: Vec<&str> = namespaces.iter().map(String::as_str).collect();
    let need = needed(&users, &namespaces);
    pass(&mut r, &need, t0, |_| true); // the peers appear: the first 4 go, the rest wait
    let _ = run(&mut r, &need, t0, t0 + Duration::from_secs(10));
    // A RoleBinding in ns09 changes: its 10 pairs go first (before the new questions still
    // waiting for the rate limit), in the next 5 s.
    let t1 = t0 + Duration::from_secs(10);
    r.namespaces_changed(["ns09".to_owned()]);
    let asked = run(&mut r, &need, t1, t1 + Duration::from_secs(5));
    let first: Vec<&Question> = asked.iter().map(|(_, q)| q).take(10).collect();
    assert!(first.iter().all(|q| q.1 == "ns09"), "{first:?}");
}
