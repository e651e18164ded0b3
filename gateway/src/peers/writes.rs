//! Which API writes the leader sends for a reconcile's [`Plan`] (pure; time passed in).
//!
//! A write is sent once and not repeated while it is under way or until the watch brings the
//! Secret's next version (the plan asks for the same write on every reconcile until then).
//! A failed write is sent again after a backoff (1 s doubling to 30 s), or at once when the
//! Secret changes meanwhile (its next version is decided afresh). A follower sends nothing;
//! a replica that starts leading, or a watch that lists again, decides every write anew.

use crate::core::{Plan, Problem};
use kwg_contract::TunnelIp;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// The first wait before a failed write is sent again.
pub const RETRY_FIRST: Duration = Duration::from_secs(1);
/// The longest wait before a failed write is sent again.
pub const RETRY_MAX: Duration = Duration::from_secs(30);

/// Tells a write's outcome apart from a later write to the same Secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WriteId(u64);

/// What a write does to a peer Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    /// Set `kwg.io/tunnel-ip` (clearing `kwg.io/error`) at the version read: a Secret changed
    /// meanwhile (by a client, or a replica that led a moment ago) gets 409 and is decided
    /// again from its watch event.
    Annotate { ip: TunnelIp },
    /// Set `kwg.io/error` to the reason it is not served.
    MarkError { reason: String },
    /// Delete the Secret whose lease ended, only at the version read (a renewal wins).
    Delete,
}

/// One write to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub id: WriteId,
    pub secret: String,
    /// The version the decision was made from (the store's).
    pub resource_version: Option<String>,
    pub op: WriteOp,
}

/// A Warning Event on a Secret that is not served (once per reason: the core says when).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub secret: String,
    /// `metadata.uid`, when known.
    pub uid: Option<String>,
    pub problem: Problem,
    pub reason: String,
}

/// What a write needs of a Secret as the store holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Known {
    pub resource_version: Option<String>,
    /// Empty when unknown.
    pub uid: String,
}

/// What one reconcile asks to send.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sends {
    pub writes: Vec<Write>,
    pub reports: Vec<Report>,
}

/// The same write again: the operation, and for a deletion the version it deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Signature(WriteOp, Option<String>);

#[derive(Debug, Clone)]
struct Sent {
    signature: Signature,
    id: WriteId,
    /// Failures in a row of this write.
    failures: u32,
    /// Failed: may be sent again at this instant.
    retry_at: Option<Instant>,
}

/// The leader's ledger of writes to peer Secrets.
#[derive(Debug, Default)]
pub struct Writes {
    leading: bool,
    /// The last write sent per Secret name.
    sent: HashMap<String, Sent>,
    next_id: u64,
}

impl Writes {
    pub fn new() -> Writes {
        Writes::default()
    }

    pub fn leading(&self) -> bool {
        self.leading
    }

    /// This replica starts or stops leading: nothing sent before counts.
    pub fn set_leading(&mut self, leading: bool) {
        self.leading = leading;
        self.sent.clear();
    }

    /// The watch listed every Secret again: every write is decided anew.
    pub fn resynced(&mut self) {
        self.sent.clear();
    }

    /// The watch brought a new version of `secret` (or its deletion): what was sent to the
    /// old one is decided again from it.
    pub fn observed(&mut self, secret: &str) {
        self.sent.remove(secret);
    }

    /// A write failed at `now`: it is sent again after a backoff, unless a newer write to
    /// the Secret was decided meanwhile.
    pub fn failed(&mut self, id: WriteId, now: Instant) {
        let Some(s) = self.sent.values_mut().find(|s| s.id == id) else {
            return;
        };
        let wait = RETRY_FIRST
            .saturating_mul(1 << s.failures.min(16))
            .min(RETRY_MAX);
        s.failures += 1;
        s.retry_at = Some(now + wait);
    }

    /// When a failed write may be sent again (reconcile then).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.sent.values().filter_map(|s| s.retry_at).min()
    }

    /// The writes and Events `plan` asks for that are not under way, or failed and due again;
    /// `known` looks a Secret up in the store. Nothing while following. A failed write due
    /// again that `plan` no longer asks for is dropped (no retry waits for it).
    #[must_use]
    pub fn decide(
        &mut self,
        plan: &Plan,
        known: impl Fn(&str) -> Option<Known>,
        now: Instant,
    ) -> Sends {
        let mut out = Sends::default();
        if !self.leading {
            return out;
        }
        let version = |name: &str| known(name).and_then(|k| k.resource_version);
        for (name, ip) in &plan.annotate {
            let op = WriteOp::Annotate { ip: *ip };
            self.send(&mut out, name, op, version(name), now);
        }
        for m in &plan.malformed {
            if m.first_report {
                out.reports.push(Report {
                    secret: m.secret_name.clone(),
                    uid: known(&m.secret_name)
                        .map(|k| k.uid)
                        .filter(|u| !u.is_empty()),
                    problem: m.problem,
                    reason: m.reason.clone(),
                });
            }
            if m.write_annotation {
                let op = WriteOp::MarkError {
                    reason: m.reason.clone(),
                };
                self.send(&mut out, &m.secret_name, op, version(&m.secret_name), now);
            }
        }
        for name in &plan.expired {
            self.send(&mut out, name, WriteOp::Delete, version(name), now);
        }
        // A failed write due again that the plan no longer asks for is forgotten: nothing
        // would send it, and its retry instant, past, would wake the loop without end.
        let asked: HashSet<&str> = (plan.annotate.iter().map(|(n, _)| n.as_str()))
            .chain(
                plan.malformed
                    .iter()
                    .filter(|m| m.write_annotation)
                    .map(|m| m.secret_name.as_str()),
            )
            .chain(plan.expired.iter().map(String::as_str))
            .collect();
        self.sent
            .retain(|n, s| s.retry_at.is_none_or(|at| at > now) || asked.contains(n.as_str()));
        out
    }

    fn send(
        &mut self,
        out: &mut Sends,
        secret: &str,
        op: WriteOp,
        resource_version: Option<String>,
        now: Instant,
    ) {
        let signature = match op {
            WriteOp::Delete => Signature(op.clone(), resource_version.clone()),
            _ => Signature(op.clone(), None),
        };
        let failures = match self.sent.get(secret) {
            Some(s) if s.signature == signature => match s.retry_at {
                Some(at) if at <= now => s.failures,
                _ => return, // under way, or failed and not due yet
            },
            _ => 0,
        };
        let id = WriteId(self.next_id);
        self.next_id += 1;
        self.sent.insert(
            secret.to_owned(),
            Sent {
                signature,
                id,
                failures,
                retry_at: None,
            },
        );
        out.writes.push(Write {
            id,
            secret: secret.to_owned(),
            resource_version,
            op,
        });
    }
}

#[cfg(test)]
mod tests;
