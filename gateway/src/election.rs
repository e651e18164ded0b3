//! Leader election over a `coordination.k8s.io/v1` Lease, the pure part (time passed in).
//!
//! The rules of client-go's `leaderelection`: a replica takes the Lease when it does not
//! exist, when its holder released it (no holder), or when the record has not changed for
//! `lease_duration` *as this replica observed it* (its own clock, so clock skew between
//! nodes does not matter). The leader renews every `retry`; it acts as leader only while its
//! last successful renew is younger than `renew_deadline` (< `lease_duration`), so it stops
//! before anyone else may take over. Writes carry the resourceVersion read: of two replicas
//! racing, one gets 409 and stays a follower.

use std::time::{Duration, SystemTime};

/// The Lease's spec as the election sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// `holderIdentity`; `None` (or empty) when released.
    pub holder: Option<String>,
    pub lease_duration: Duration,
    pub acquire_time: Option<SystemTime>,
    pub renew_time: Option<SystemTime>,
    pub transitions: i32,
}

/// Election timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long followers wait, after the record last changed, before taking over.
    pub lease_duration: Duration,
    /// The leader stops acting when its last renew is older than this.
    pub renew_deadline: Duration,
    /// How often to read (followers) or renew (leader).
    pub retry: Duration,
}

impl Default for Timing {
    /// client-go's defaults are 15 s / 10 s / 2 s; the gateway's leader work (lease
    /// collection, Events, the info ConfigMap) is small, so it hands over faster.
    fn default() -> Timing {
        Timing {
            lease_duration: Duration::from_secs(10),
            renew_deadline: Duration::from_secs(6),
            retry: Duration::from_secs(1),
        }
    }
}

/// What to do after reading the Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Create (when there was no Lease) or update (with the resourceVersion read) the Lease
    /// with this record; report success with [`Elector::written`] (a failed write changes
    /// nothing: a leader keeps acting only until its renew deadline).
    Write(Record),
    /// Another replica leads: read again after `retry`.
    Follow { holder: String },
}

/// One replica's view of the election.
#[derive(Debug, Clone)]
pub struct Elector {
    identity: String,
    timing: Timing,
    /// The record last read or written and when this replica first saw it.
    observed: Option<(Record, SystemTime)>,
    /// When this replica last wrote the Lease as its holder.
    renewed: Option<SystemTime>,
}

impl Elector {
    pub fn new(identity: impl Into<String>, timing: Timing) -> Elector {
        Elector {
            identity: identity.into(),
            timing,
            observed: None,
            renewed: None,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    pub fn timing(&self) -> Timing {
        self.timing
    }

    fn observe(&mut self, current: Option<&Record>, now: SystemTime) {
        match (current, &self.observed) {
            (Some(r), Some((seen, _))) if seen == r => {}
            (Some(r), _) => self.observed = Some((r.clone(), now)),
            (None, _) => self.observed = None,
        }
    }

    /// Decides what to do with the Lease as read at `now` (`None`: it does not exist).
    pub fn decide(&mut self, current: Option<&Record>, now: SystemTime) -> Step {
        self.observe(current, now);
        let mine = |holder: &str| holder == self.identity;
        let take = |transitions: i32| Record {
            holder: Some(self.identity.clone()),
            lease_duration: self.timing.lease_duration,
            acquire_time: Some(now),
            renew_time: Some(now),
            transitions,
        };
        let Some(r) = current else {
            return Step::Write(take(0));
        };
        match r.holder.as_deref().filter(|h| !h.is_empty()) {
            Some(h) if mine(h) => Step::Write(Record {
                renew_time: Some(now),
                lease_duration: self.timing.lease_duration,
                ..r.clone()
            }),
            None => Step::Write(take(r.transitions + 1)),
            Some(h) => {
                let since = self.observed.as_ref().map_or(now, |(_, at)| *at);
                let expired = now.duration_since(since).unwrap_or_default() >= r.lease_duration;
                if expired {
                    Step::Write(take(r.transitions + 1))
                } else {
                    Step::Follow {
                        holder: h.to_owned(),
                    }
                }
            }
        }
    }

    /// The write of `record` succeeded at `now`.
    pub fn written(&mut self, record: Record, now: SystemTime) {
        let holds = record.holder.as_deref() == Some(self.identity.as_str());
        self.observed = Some((record, now));
        self.renewed = holds.then_some(now);
    }

    /// Whether this replica may do the leader's work at `now`.
    pub fn is_leader(&self, now: SystemTime) -> bool {
        let holds = self
            .observed
            .as_ref()
            .is_some_and(|(r, _)| r.holder.as_deref() == Some(self.identity.as_str()));
        holds
            && self.renewed.is_some_and(|at| {
                now.duration_since(at).unwrap_or_default() < self.timing.renew_deadline
            })
    }

    /// The record that hands the Lease over at shutdown (holder cleared, as client-go's
    /// `ReleaseOnCancel`), when this replica leads.
    pub fn release(&self, now: SystemTime) -> Option<Record> {
        if !self.is_leader(now) {
            return None;
        }
        let (r, _) = self.observed.as_ref()?;
        Some(Record {
            holder: None,
            lease_duration: Duration::from_secs(1),
            renew_time: Some(now),
            ..r.clone()
        })
    }
}

#[cfg(test)]
mod tests;
