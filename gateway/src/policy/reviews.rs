//! Which SubjectAccessReviews to send, and when (pure; time passed in): the cache of answers
//! (one per [`Question`], forgotten when no peer needs it), new questions at once, the pairs a
//! Role or RoleBinding change can affect at once (those of its namespace), every pair after a
//! ClusterRole or ClusterRoleBinding change, the periodic safety re-review spread evenly over
//! `--reach-refresh` ([`Spread`]), a failed review again after [`RETRY`], and all of it paced by
//! the global rate limit `--reach-reviews-per-second` ([`Bucket`]; new questions first, the
//! rest wait their turn).

use super::grants::{Question, Subject};
use super::schedule::{Bucket, Spread};
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// How soon a failed review is asked again.
pub const RETRY: Duration = Duration::from_secs(1);

/// The reviews' state: answers, what is stale, what waits for the rate limit.
#[derive(Debug)]
pub struct Reviews {
    /// The last answer per question still needed.
    grants: HashMap<Question, bool>,
    /// Due (re-review, change, failure) but held back by the rate limit or a failure.
    pending: BTreeSet<Question>,
    /// Namespaces whose Roles or RoleBindings changed since the last pass.
    stale: BTreeSet<String>,
    /// A ClusterRole or ClusterRoleBinding changed since the last pass.
    all_stale: bool,
    /// Questions whose review failed, asked again at `retry_at`.
    retry: BTreeSet<Question>,
    retry_at: Option<Instant>,
    spread: Spread,
    bucket: Bucket,
}

impl Reviews {
    /// Re-reviews every answer once per `period`; at most `per_second` reviews a second, in
    /// bursts of up to twice as many.
    pub fn new(period: Duration, per_second: f64, now: Instant) -> Reviews {
        let burst = (per_second * 2.0).ceil() as u32;
        Reviews {
            grants: HashMap::new(),
            pending: BTreeSet::new(),
            stale: BTreeSet::new(),
            all_stale: false,
            retry: BTreeSet::new(),
            retry_at: None,
            spread: Spread::new(period, now),
            bucket: Bucket::new(per_second, burst, now),
        }
    }

    /// Roles or RoleBindings changed in `namespaces`: only answers there can have changed.
    pub fn namespaces_changed(&mut self, namespaces: impl IntoIterator<Item = String>) {
        self.stale.extend(namespaces);
    }

    /// A ClusterRole or ClusterRoleBinding changed: any answer can have.
    pub fn cluster_changed(&mut self) {
        self.all_stale = true;
    }

    /// When the reviews want a pass (a retry, the next slice of the re-review, a token for
    /// what waits), if nothing else happens before.
    pub fn next_wake(&self, now: Instant) -> Instant {
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
        let due = self.spread.due(self.grants.keys(), now);
        self.pending.extend(due);
        if self.retry_at.is_some_and(|at| at <= now) {
            self.retry_at = None;
            self.pending.append(&mut self.retry);
        }
        !self.pending.is_empty()
    }

    /// A pass: of the questions the peers `needed` now, those to ask at once, as many as the
    /// rate limit lets go, new ones first; the others wait. Answers no peer needs are dropped.
    #[must_use]
    pub fn to_ask(&mut self, needed: &BTreeSet<Question>, now: Instant) -> BTreeSet<Question> {
        self.grants.retain(|q, _| needed.contains(q));
        let all = std::mem::take(&mut self.all_stale);
        let stale = std::mem::take(&mut self.stale);
        let (new, known): (Vec<&Question>, Vec<&Question>) =
            needed.iter().partition(|q| !self.grants.contains_key(*q));
        let again = known
            .into_iter()
            .filter(|q| all || stale.contains(&q.1) || self.pending.contains(*q));
        let mut want: Vec<Question> = new.into_iter().chain(again).cloned().collect();
        let later = want.split_off(self.bucket.take(want.len(), now));
        self.pending = later.into_iter().collect();
        want.into_iter().collect()
    }

    /// The API server answered `q`; whether the answer changed (or is the first).
    pub fn answered(&mut self, q: Question, allowed: bool) -> bool {
        self.grants.insert(q, allowed) != Some(allowed)
    }

    /// Asking `q` failed at `now`: its last answer (if any) stands, and it is asked again
    /// after [`RETRY`] (not at once, even with tokens to spare: an API server refusing reviews
    /// is not asked in a loop).
    pub fn failed(&mut self, q: Question, now: Instant) {
        self.retry.insert(q);
        self.retry_at.get_or_insert(now + RETRY);
    }

    /// The last answer to whether `who` may reach `namespace` (`None`: never answered).
    pub fn answer(&self, who: &Subject, namespace: &str) -> Option<bool> {
        self.grants
            .get(&(who.clone(), namespace.to_owned()))
            .copied()
    }

    /// Whether `who` may reach `namespace`; never answered counts as no.
    pub fn allowed(&self, who: &Subject, namespace: &str) -> bool {
        self.answer(who, namespace) == Some(true)
    }

    /// Questions waiting for the rate limit or a retry.
    pub fn waiting(&self) -> usize {
        self.pending.len() + self.retry.len()
    }
}

#[cfg(test)]
#[path = "reviews_tests.rs"]
mod tests;
