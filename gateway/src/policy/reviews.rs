//! Which SubjectAccessReviews to send, and when (pure; time passed in): the cache of answers
//! (one per [`Question`], forgotten when no peer needs it), new questions at once, the pairs a
//! Role or RoleBinding change can affect at once (the subjects it names, or names no more, in
//! its namespace), after a ClusterRole change only the pairs of the subjects bound to it
//! ([`Affected`]: through a RoleBinding, in that binding's namespace; through a
//! ClusterRoleBinding, their cluster-scope question), the periodic safety re-review spread
//! evenly over `--reach-refresh` ([`Spread`]), a failed review again after [`RETRY`], and all
//! of it paced by the global rate limit `--reach-reviews-per-second` ([`Bucket`]; new questions
//! first, the rest wait their turn).
//!
//! A ClusterRoleBinding grants in every namespace or nowhere, so its change is answered by one
//! cluster-scope review per subject (namespace `""`, [`cluster`]) instead of one per namespace:
//! allowed there, the subject reaches every namespace without a review of each; refused, only
//! the namespaces it was allowed in are asked again (a removed cluster-wide grant may have
//! been their reason; a refused one cannot have become allowed by it), except after it was
//! allowed: then every namespace of the subject is asked again at once (the Role and
//! RoleBinding changes there were not reviewed meanwhile).

use super::grants::{Question, Subject};
use super::possible::Needs;
use super::rbac::Affected;
use super::schedule::{Bucket, REREVIEW_SHARE, Spread};
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// How soon a failed review is asked again.
pub const RETRY: Duration = Duration::from_secs(1);

/// The reviews' state: answers, what is stale, what waits for the rate limit.
#[derive(Debug)]
pub struct Reviews {
    /// The last answer per question still needed.
    grants: HashMap<Question, bool>,
    /// The last cluster-scope answer per subject still needed (asked after a
    /// ClusterRoleBinding change).
    cluster: HashMap<Subject, bool>,
    /// A ClusterRoleBinding changed since the last pass.
    bindings_stale: bool,
    /// Due (re-review, change, failure) but held back by the rate limit or a failure.
    pending: BTreeSet<Question>,
    /// Those of `pending` an RBAC change can have moved: they go before the re-reviews.
    changed: BTreeSet<Question>,
    /// Namespaces whose Roles or RoleBindings changed since the last pass.
    stale: BTreeSet<String>,
    /// The answers changed ClusterRoles can have moved since the last pass.
    roles: Affected,
    /// Questions whose review failed, asked again at `retry_at`.
    retry: BTreeSet<Question>,
    retry_at: Option<Instant>,
    /// Answers were dropped (a cluster-wide allowance went): the next pass asks them anew.
    dropped: bool,
    /// When each question was last sent: the periodic re-review skips one sent less than
    /// half a period ago (a first review, a change's), so a question is asked about once a
    /// period, not again right after its first answer.
    sent: HashMap<Question, Instant>,
    spread: Spread,
    bucket: Bucket,
    /// The subjects no RBAC binding could grant ([`super::possible::Needs::probes`]): their
    /// cluster-scope question goes last, when new or due (not after an RBAC change).
    probes: BTreeSet<Subject>,
    /// Those a cluster-scope review allowed anyway (another authorizer grants them): said once.
    elsewhere: BTreeSet<Subject>,
    /// Of those, the ones not said yet ([`Reviews::granted_elsewhere`]).
    found: Vec<Subject>,
}

impl Reviews {
    /// Re-reviews every answer once per `period` (or slower, so that the re-review takes at
    /// most [`REREVIEW_SHARE`] of the rate limit); at most `per_second` reviews a second, in
    /// bursts of up to twice as many.
    pub fn new(period: Duration, per_second: f64, now: Instant) -> Reviews {
        let burst = (per_second * 2.0).ceil() as u32;
        Reviews {
            grants: HashMap::new(),
            cluster: HashMap::new(),
            bindings_stale: false,
            pending: BTreeSet::new(),
            changed: BTreeSet::new(),
            stale: BTreeSet::new(),
            roles: Affected::default(),
            retry: BTreeSet::new(),
            retry_at: None,
            dropped: false,
            sent: HashMap::new(),
            spread: Spread::new(period, per_second * REREVIEW_SHARE, now),
            bucket: Bucket::new(per_second, burst, now),
            probes: BTreeSet::new(),
            elsewhere: BTreeSet::new(),
            found: Vec::new(),
        }
    }

    /// Roles or RoleBindings changed in `namespaces`: only answers there can have changed.
    pub fn namespaces_changed(&mut self, namespaces: impl IntoIterator<Item = String>) {
        self.stale.extend(namespaces);
    }

    /// RBAC changed: the answers of these subjects can have, in these namespaces or everywhere
    /// (a ClusterRole's bound subjects, [`super::rbac::bound_to`]; a Role's or RoleBinding's,
    /// [`super::rbac::namespaced_changes`]).
    pub fn subjects_changed(&mut self, affected: Affected) {
        self.roles.extend(affected);
    }

    /// A ClusterRoleBinding changed: only cluster-wide grants can have.
    pub fn cluster_bindings_changed(&mut self) {
        self.bindings_stale = true;
    }

    /// When the reviews want a pass (a retry, the next slice of the re-review, a token for
    /// what waits), if nothing else happens before.
    pub fn next_wake(&self, now: Instant) -> Instant {
        if self.dropped {
            return now;
        }
        let spread = self.spread.next_wake();
        let wake = self.retry_at.map_or(spread, |at| at.min(spread));
        match self.pending.is_empty() {
            true => wake,
            false => wake.min(self.bucket.next_token(now)),
        }
    }

    /// The wake came: the answers whose re-review fell due, and the failed ones whose retry
    /// came, join what waits. Whether a pass has anything to ask (a tick with nothing due
    /// costs no pass).
    pub fn tick(&mut self, now: Instant) -> bool {
        let scoped: Vec<Question> = self.cluster.keys().map(cluster).collect();
        let count = self.grants.len() + scoped.len();
        let due = self
            .spread
            .due(self.grants.keys().chain(&scoped), count, now);
        let recent = self.spread.current() / 2;
        let sent = &self.sent;
        let stale = |q: &Question| {
            sent.get(q)
                .is_none_or(|at| now.duration_since(*at) >= recent)
        };
        self.pending.extend(due.into_iter().filter(stale));
        if self.retry_at.is_some_and(|at| at <= now) {
            self.retry_at = None;
            self.pending.append(&mut self.retry);
        }
        self.dropped || !self.pending.is_empty()
    }

    /// A pass: of the questions the peers `needed` now, those to ask at once, as many as the
    /// rate limit lets go, new ones first; the others wait. Answers no peer needs are dropped.
    /// The cluster-scope questions are asked after a ClusterRoleBinding change
    /// ([`Reviews::to_ask_with`] without local RBAC).
    #[must_use]
    pub fn to_ask(&mut self, needed: &BTreeSet<Question>, now: Instant) -> BTreeSet<Question> {
        self.to_ask_with(needed, None, now)
    }

    /// A pass, as [`Reviews::to_ask`]; with `scoped` (the local RBAC evaluation,
    /// [`super::possible`]), exactly the subjects a ClusterRoleBinding could grant everywhere
    /// have a cluster-scope question (asked when new, changed or due), and the others none.
    /// What a change can have moved goes first, then new questions, then the re-reviews.
    #[must_use]
    pub fn to_ask_with(
        &mut self,
        needed: &BTreeSet<Question>,
        scoped: Option<&BTreeSet<Subject>>,
        now: Instant,
    ) -> BTreeSet<Question> {
        self.to_ask_probing(needed, scoped, &BTreeSet::new(), now)
    }

    /// A pass, as [`Reviews::to_ask_with`], for what the peers need now
    /// ([`super::possible::Needs`]), its probes included.
    #[must_use]
    pub fn to_ask_needs(&mut self, needs: &Needs, now: Instant) -> BTreeSet<Question> {
        self.to_ask_probing(&needs.questions, needs.scoped.as_ref(), &needs.probes, now)
    }

    /// A pass, as [`Reviews::to_ask_with`]; `probes` (subjects no binding could grant) have a
    /// cluster-scope question too, asked last: when new (a first answer), waiting, or due on
    /// the periodic re-review, never because RBAC changed (their bindings are counted locally).
    #[must_use]
    pub fn to_ask_probing(
        &mut self,
        needed: &BTreeSet<Question>,
        scoped: Option<&BTreeSet<Subject>>,
        probes: &BTreeSet<Subject>,
        now: Instant,
    ) -> BTreeSet<Question> {
        let probes: BTreeSet<Subject> = match scoped {
            Some(scoped) => probes.difference(scoped).cloned().collect(),
            None => BTreeSet::new(),
        };
        self.elsewhere.retain(|s| probes.contains(s));
        self.found.retain(|s| probes.contains(s));
        self.grants.retain(|q, _| needed.contains(q));
        let (grants, cluster_qs) = (&self.grants, &self.cluster);
        self.sent.retain(|q, _| {
            grants.contains_key(q) || (q.1.is_empty() && cluster_qs.contains_key(&q.0))
        });
        let subjects: BTreeSet<&Subject> = needed.iter().map(|q| &q.0).collect();
        match scoped {
            Some(scoped) => self
                .cluster
                .retain(|s, _| scoped.contains(s) || probes.contains(s)),
            None => self.cluster.retain(|s, _| subjects.contains(s)),
        }
        self.dropped = false;
        let roles = std::mem::take(&mut self.roles);
        let bindings = std::mem::take(&mut self.bindings_stale);
        let stale = std::mem::take(&mut self.stale);
        // Cluster-scope questions. Without local RBAC: every subject after a binding change;
        // those bound to a changed ClusterRole by a ClusterRoleBinding, when due again, or
        // waiting. With it: those a ClusterRoleBinding could grant, when new (not after a
        // failure before its retry), changed, due or waiting.
        let pending = &self.pending;
        let scope_changed =
            |s: &Subject| bindings || roles.everywhere(s) || self.changed.contains(&cluster(s));
        let (scoped_changed, scoped_other): (Vec<Question>, Vec<Question>) = match scoped {
            None => subjects
                .iter()
                .filter(|s| scope_changed(s) || pending.contains(&cluster(s)))
                .map(|s| cluster(s))
                .partition(|q| scope_changed(&q.0)),
            Some(scoped) => scoped
                .iter()
                .map(cluster)
                .filter(|q| !self.retry.contains(q) || pending.contains(q))
                .filter(|q| {
                    scope_changed(&q.0) || !self.cluster.contains_key(&q.0) || pending.contains(q)
                })
                .partition(|q| scope_changed(&q.0)),
        };
        // A subject allowed everywhere needs no question per namespace, except those a
        // changed ClusterRole can have moved (a RoleBinding there names it).
        let everywhere = |q: &Question| self.cluster.get(&q.0) == Some(&true);
        let (new, known): (Vec<&Question>, Vec<&Question>) = needed
            .iter()
            .filter(|q| roles.touches(q) || !everywhere(q))
            .partition(|q| !self.grants.contains_key(*q));
        // A new question that failed waits for its retry like any other.
        let new = new.into_iter().filter(|q| !self.retry.contains(*q));
        // What a change can have moved goes before the rest (with more answers than the rate
        // limit lets through, the rest waits).
        let changed =
            |q: &Question| roles.touches(q) || stale.contains(&q.1) || self.changed.contains(q);
        let (new_changed, new): (Vec<&Question>, Vec<&Question>) = new.partition(|q| changed(q));
        let (known_changed, due): (Vec<&Question>, Vec<&Question>) = known
            .into_iter()
            .filter(|q| changed(q) || self.pending.contains(*q))
            .partition(|q| changed(q));
        let mut want: Vec<Question> = scoped_changed;
        want.extend(new_changed.into_iter().cloned());
        want.extend(known_changed.into_iter().cloned());
        let changed: BTreeSet<Question> = want.iter().cloned().collect();
        want.extend(scoped_other);
        want.extend(new.into_iter().cloned());
        want.extend(due.into_iter().cloned());
        // Last, the probes: asked when new (not after a failure before its retry) or waiting.
        let cluster_answers = &self.cluster;
        let probing = probes.iter().map(cluster).filter(|q| {
            (!cluster_answers.contains_key(&q.0) && !self.retry.contains(q)) || pending.contains(q)
        });
        want.extend(probing);
        self.probes = probes;
        let later = want.split_off(self.bucket.take(want.len(), now));
        self.changed = later
            .iter()
            .filter(|q| changed.contains(*q))
            .cloned()
            .collect();
        self.pending = later.into_iter().collect();
        for q in &want {
            self.sent.insert(q.clone(), now);
        }
        want.into_iter().collect()
    }

    /// The API server answered `q`; whether the answer changed (or is the first). A refused
    /// cluster-scope question puts the namespaces its subject was allowed in up for asking
    /// again; one that allowed before drops all of its subject's answers (asked anew at once).
    pub fn answered(&mut self, q: Question, allowed: bool) -> bool {
        if !q.1.is_empty() {
            return self.grants.insert(q, allowed) != Some(allowed);
        }
        if allowed && self.probes.contains(&q.0) && self.elsewhere.insert(q.0.clone()) {
            self.found.push(q.0.clone());
        }
        let before = self.cluster.insert(q.0.clone(), allowed);
        if !allowed && before == Some(true) {
            self.grants.retain(|g, _| g.0 != q.0);
            self.dropped = true;
        } else if !allowed {
            let granted = self.grants.iter().filter(|(g, yes)| **yes && g.0 == q.0);
            let again: Vec<Question> = granted.map(|(g, _)| g.clone()).collect();
            self.pending.extend(again);
        }
        before != Some(allowed)
    }

    /// Asking `q` failed at `now`: its last answer (if any) stands, and it is asked again
    /// after [`RETRY`] (not at once, even with tokens to spare or never answered: an API
    /// server refusing reviews is not asked in a loop).
    pub fn failed(&mut self, q: Question, now: Instant) {
        self.retry.insert(q);
        self.retry_at.get_or_insert(now + RETRY);
    }

    /// The last answer to whether `who` may reach `namespace` (`None`: never answered); a
    /// cluster-scope allowance answers every namespace.
    pub fn answer(&self, who: &Subject, namespace: &str) -> Option<bool> {
        if self.cluster.get(who) == Some(&true) {
            return Some(true);
        }
        self.grants
            .get(&(who.clone(), namespace.to_owned()))
            .copied()
    }

    /// The last cluster-scope answer about `who` (`None`: not asked, or not answered yet).
    pub fn cluster_answer(&self, who: &Subject) -> Option<bool> {
        self.cluster.get(who).copied()
    }

    /// Whether `who` may reach `namespace`; never answered counts as no.
    pub fn allowed(&self, who: &Subject, namespace: &str) -> bool {
        self.answer(who, namespace) == Some(true)
    }

    /// The subjects no RBAC binding could grant whom a cluster-scope review allowed since the
    /// last call (another authorizer grants them every namespace), each once while it stays
    /// one: to say so (`--review-all-pairs` asks their pairs one by one).
    pub fn granted_elsewhere(&mut self) -> Vec<Subject> {
        std::mem::take(&mut self.found)
    }

    /// Questions waiting for the rate limit or a retry.
    pub fn waiting(&self) -> usize {
        self.pending.len() + self.retry.len()
    }
}

/// The cluster-scope question of `who`: may it get Services in every namespace (a
/// SubjectAccessReview with no namespace).
pub fn cluster(who: &Subject) -> Question {
    (who.clone(), String::new())
}

#[cfg(test)]
mod tests;
