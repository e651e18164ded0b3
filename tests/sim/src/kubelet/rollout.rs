//! The Deployment controller's replica decisions (pure): scaling, and template changes rolled
//! out as the real controller does (`RollingUpdate` honouring `maxSurge`/`maxUnavailable`,
//! gated by readiness; `Recreate` removes every old pod before creating new ones).

use super::plan::{TEMPLATE_HASH_LABEL, pod_ready, template_hash};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// What to do about one Deployment's pods.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplicaPlan {
    /// How many pods of the current template to create.
    pub create: usize,
    /// Names of pods to delete: unready old pods first, then ready old ones, then surplus.
    pub delete: Vec<String>,
}

/// `maxSurge`/`maxUnavailable` of a rolling update, resolved against `replicas` like the
/// real controller (percent: surge rounds up, unavailable down; both 0 means unavailable 1).
/// `None` for the `Recreate` strategy.
pub fn rolling_limits(d: &Deployment, replicas: usize) -> Option<(usize, usize)> {
    let strategy = d.spec.as_ref().and_then(|s| s.strategy.as_ref());
    if strategy.and_then(|s| s.type_.as_deref()) == Some("Recreate") {
        return None;
    }
    let ru = strategy.and_then(|s| s.rolling_update.as_ref());
    let resolve = |v: Option<&IntOrString>, round_up: bool| -> usize {
        match v {
            None => {
                let pct = 25 * replicas;
                if round_up {
                    pct.div_ceil(100)
                } else {
                    pct / 100
                }
            }
            Some(IntOrString::Int(n)) => (*n).max(0) as usize,
            Some(IntOrString::String(s)) => {
                let pct: usize = s.trim_end_matches('%').parse().unwrap_or(25);
                if round_up {
                    (pct * replicas).div_ceil(100)
                } else {
                    pct * replicas / 100
                }
            }
        }
    };
    let surge = resolve(ru.and_then(|r| r.max_surge.as_ref()), true);
    let mut unavailable = resolve(ru.and_then(|r| r.max_unavailable.as_ref()), false);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    Some((surge, unavailable))
}

fn name(p: &Pod) -> String {
    p.metadata.name.clone().unwrap_or_default()
}

/// The next step for `d`, given the pods it owns (`owned`, without those already being
/// deleted) and `pending` pods created but not seen yet (counted as new, not ready).
pub fn replica_plan(d: &Deployment, owned: &[&Pod], pending: usize) -> ReplicaPlan {
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1).max(0) as usize;
    let hash = template_hash(d);
    let live = owned
        .iter()
        .copied()
        .filter(|p| p.metadata.deletion_timestamp.is_none());
    let (mut current, mut old): (Vec<&Pod>, Vec<&Pod>) = live.partition(|p| {
        p.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(TEMPLATE_HASH_LABEL))
            == Some(&hash)
    });
    // Unready first, then by name: the order pods are given up in.
    let order = |p: &&Pod| (pod_ready(p), name(p));
    current.sort_by_key(order);
    old.sort_by_key(order);
    let new_count = current.len() + pending;
    let mut plan = ReplicaPlan::default();
    let Some((surge, unavailable)) = rolling_limits(d, want) else {
        // Recreate: every old pod goes before a new one is created.
        if !old.is_empty() {
            plan.delete = old.iter().map(|p| name(p)).collect();
            return plan;
        }
        plan.create = want.saturating_sub(new_count);
        plan.delete = surplus(&current, want, pending);
        return plan;
    };
    if old.is_empty() {
        plan.create = want.saturating_sub(new_count);
        plan.delete = surplus(&current, want, pending);
        return plan;
    }
    // Scale up the new template within want + maxSurge pods in all.
    let total = new_count + old.len();
    plan.create = want
        .saturating_sub(new_count)
        .min((want + surge).saturating_sub(total));
    // Scale down old pods as the real controller does: at most
    // all - (want - maxUnavailable) - unready new pods, unready old pods first.
    let ready_new = current.iter().filter(|p| pod_ready(p)).count();
    let unready_new = new_count - ready_new;
    let removable = total
        .saturating_sub(want.saturating_sub(unavailable))
        .saturating_sub(unready_new);
    plan.delete = old.iter().take(removable).map(|p| name(p)).collect();
    plan
}

/// Pods of the current template beyond `want` (unready first).
fn surplus(current: &[&Pod], want: usize, pending: usize) -> Vec<String> {
    let extra = (current.len() + pending).saturating_sub(want);
    current.iter().take(extra).map(|p| name(p)).collect()
}

#[cfg(test)]
mod tests;
