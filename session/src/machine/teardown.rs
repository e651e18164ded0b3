//! Failing and tearing down: the recorded undo steps, newest first, each exactly once; a
//! failed step stays in the journal for the next `kwg leave`.

use super::stage::Stage;
use super::{Action, Phase, Session};
use crate::error::{Error, StepError, StepKind};

impl Session {
    pub(super) fn fail(&mut self, e: Error) {
        if matches!(self.phase(), Phase::TearingDown | Phase::Done) {
            tracing::warn!(error = %e, "error while tearing down");
            return;
        }
        if self.phase() == Phase::Serving {
            tracing::error!(error = %e, "the session failed while serving");
        }
        self.error.get_or_insert(e);
        self.teardown();
    }

    pub(super) fn teardown(&mut self) {
        let journal = match std::mem::replace(&mut self.stage, Stage::Done(None)) {
            Stage::Inspecting => None,
            Stage::Joined(j) => Some(j.journal),
            done @ (Stage::TearingDown(_) | Stage::Done(_)) => {
                self.stage = done;
                return;
            }
        };
        self.stage = Stage::TearingDown(journal);
        self.actions.clear();
        if std::mem::take(&mut self.in_flight) {
            self.actions.push_back(Action::Cancel);
        }
        self.next_undo();
    }

    fn next_undo(&mut self) {
        let undo = match &self.stage {
            Stage::TearingDown(Some(s)) => s.undo.last().cloned(),
            _ => None,
        };
        match undo {
            Some(u) => self.actions.push_back(Action::Undo(u)),
            None => self.finish(),
        }
    }

    pub(super) fn undone(&mut self, what: Option<String>, err: Option<Error>) {
        let Stage::TearingDown(Some(state)) = &mut self.stage else {
            return;
        };
        let undo = state.undo.pop();
        if let Some(w) = what {
            self.removed.push(w);
        }
        // A peer Secret that cannot be deleted is the lease's to collect: the rest of the
        // machine is cleaned up and the state removed all the same.
        let err = match err {
            Some(Error::Step(StepError {
                kind: StepKind::PeerLeftBehind(l),
                ..
            })) => {
                tracing::warn!(secret = %l.secret, reason = %l.reason, "could not delete the peer Secret; its lease collects it");
                self.left_behind = Some(l);
                None
            }
            e => e,
        };
        // Keep a failed step in the journal, so `kwg leave` can try it again.
        if let Some(e) = err {
            tracing::warn!(error = %e, ?undo, "undo step failed; kwg leave retries it");
            self.kept.extend(undo);
            self.undo_error.get_or_insert(e);
        }
        self.next_undo();
    }

    fn finish(&mut self) {
        let mut journal = match std::mem::replace(&mut self.stage, Stage::Done(None)) {
            Stage::TearingDown(s) | Stage::Done(s) => s,
            Stage::Inspecting | Stage::Joined(_) => None,
        };
        match journal.as_mut() {
            // Nothing was changed, nothing was saved.
            None => {}
            Some(_) if self.kept.is_empty() => self.actions.push_back(Action::RemoveState),
            Some(s) => {
                s.undo = std::mem::take(&mut self.kept);
                s.undo.reverse();
                self.actions.push_back(Action::Save(Box::new(s.clone())));
            }
        }
        self.stage = Stage::Done(journal);
        self.actions.push_back(Action::Exit);
    }
}
