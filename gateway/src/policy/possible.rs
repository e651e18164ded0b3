//! Local RBAC pre-evaluation (pure): which (owner, namespace) pairs some binding COULD grant
//! `get services`, so that only those are asked with a SubjectAccessReview. The review stays
//! the authority: this never grants anything, it only says which pairs need a review (where
//! a RoleBinding could grant), which owners need one cluster-scope review (a
//! ClusterRoleBinding could grant everywhere), and which pairs certainly cannot be granted by
//! RBAC (denied without a review of their own; an owner RBAC could grant nowhere gets one
//! low-priority cluster-scope review, [`Needs::probes`], in case another authorizer does).
//!
//! What could grant, exactly as the RBAC authorizer decides a review of `get services` with no
//! name: a rule with apiGroups `""` or `*`, resources `services` or `*`, verbs `get` or `*`,
//! and no resourceNames (a rule naming objects never allows a request without a name); of a
//! Role named by a RoleBinding in the Role's namespace, or of a ClusterRole named by a
//! RoleBinding (in its namespace) or a ClusterRoleBinding (everywhere), whose subjects name the
//! owner, one of its groups, or it as a ServiceAccount. A ClusterRole with an `aggregationRule`
//! counts with the rules of every ClusterRole its selectors match (the aggregation controller
//! copies them into its rules a moment later; counting them at once is the conservative side),
//! transitively. Members of `system:masters` are allowed everything by the API server before
//! RBAC is asked. Other authorizers (a webhook, ABAC) can allow what RBAC does not: their
//! cluster-wide grants are found by the probes; for grants namespace by namespace
//! `--review-all-pairs` asks every pair ([`Could::all`]).

use super::grants::{PeerReach, Question, Subject};
use super::inventory::Inventory;
use super::rbac::{Binding, Named};
use super::reviews::Reviews;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// The group whose members the API server allows everything, before any authorizer.
const MASTERS: &str = "system:masters";

/// Whether `rule` allows `get` on `services` of the core group, with no object name.
pub fn rule_grants(rule: &PolicyRule) -> bool {
    let has = |list: &[String], x: &str| list.iter().any(|v| v == "*" || v == x);
    let groups = rule.api_groups.as_deref().unwrap_or_default();
    let resources = rule.resources.as_deref().unwrap_or_default();
    let names = rule.resource_names.as_deref().unwrap_or_default();
    has(&rule.verbs, "get") && has(groups, "") && has(resources, "services") && names.is_empty()
}

fn rules_grant(rules: Option<&Vec<PolicyRule>>) -> bool {
    rules.into_iter().flatten().any(rule_grants)
}

/// Whether `labels` match `selector` as Kubernetes' label selectors do (an empty selector
/// matches everything). An operator this code does not know matches (the conservative side:
/// a role counted that the controller would not aggregate costs a review, never a grant).
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labelled = selector.match_labels.iter().flatten();
    let by_labels = labelled.into_iter().all(|(k, v)| labels.get(k) == Some(v));
    let expressions = selector.match_expressions.iter().flatten();
    let by_expressions = expressions.into_iter().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => true,
        }
    });
    by_labels && by_expressions
}

/// The ClusterRoles that grant `get services`, their aggregated rules included.
pub fn granting_cluster_roles<'a>(
    roles: impl IntoIterator<Item = &'a ClusterRole>,
) -> BTreeSet<String> {
    let roles: Vec<&ClusterRole> = roles.into_iter().collect();
    let name = |r: &ClusterRole| r.metadata.name.clone().unwrap_or_default();
    let mut granting: BTreeSet<String> = roles
        .iter()
        .filter(|r| rules_grant(r.rules.as_ref()))
        .map(|r| name(r))
        .collect();
    let empty = BTreeMap::new();
    // An aggregated role grants when a role its selectors match does; repeat until nothing
    // changes (aggregations of aggregations), at most once per role.
    for _ in 0..roles.len() {
        let before = granting.len();
        for r in &roles {
            let Some(selectors) = r.aggregation_rule.as_ref() else {
                continue;
            };
            let selectors = selectors.cluster_role_selectors.iter().flatten();
            let matched = |s: &LabelSelector| {
                roles.iter().any(|o| {
                    granting.contains(&name(o))
                        && selector_matches(s, o.metadata.labels.as_ref().unwrap_or(&empty))
                })
            };
            if selectors.into_iter().any(matched) {
                granting.insert(name(r));
            }
        }
        if granting.len() == before {
            break;
        }
    }
    granting
}

/// Where RBAC could grant `get services`, by binding subject.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Possible {
    /// Ask every pair (`--review-all-pairs`).
    all: bool,
    /// Subjects of a ClusterRoleBinding to a granting ClusterRole.
    everywhere: HashSet<Named>,
    /// Subjects of a RoleBinding to a granting Role or ClusterRole, and its namespace.
    in_namespace: HashMap<Named, BTreeSet<String>>,
}

/// What RBAC could grant one subject.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Could {
    /// Every pair may be granted (`--review-all-pairs`): ask them all.
    pub all: bool,
    /// A ClusterRoleBinding could grant it every namespace: one cluster-scope review.
    pub everywhere: bool,
    /// The namespaces where a RoleBinding could grant it: one review each.
    pub namespaces: BTreeSet<String>,
}

impl Could {
    /// Whether a review could allow `namespace` (else it is denied without one).
    pub fn may(&self, namespace: &str) -> bool {
        self.all || self.everywhere || self.namespaces.contains(namespace)
    }

    /// Whether no RBAC binding could grant it anywhere (then only another authorizer can:
    /// one low-priority cluster-scope review finds out, [`Needs::probes`]).
    pub fn nowhere(&self) -> bool {
        !self.all && !self.everywhere && self.namespaces.is_empty()
    }

    /// Whether `namespace` is asked by a review of its own (not only by the cluster-scope one).
    pub fn asks(&self, namespace: &str) -> bool {
        self.all || self.namespaces.contains(namespace)
    }
}

impl Possible {
    /// Every pair could be granted: reviews decide all (`--review-all-pairs`).
    pub fn all() -> Possible {
        Possible {
            all: true,
            ..Possible::default()
        }
    }

    /// From the cluster's RBAC objects.
    pub fn build<'a>(
        roles: impl IntoIterator<Item = &'a Role>,
        cluster_roles: impl IntoIterator<Item = &'a ClusterRole>,
        role_bindings: impl IntoIterator<Item = &'a RoleBinding>,
        cluster_bindings: impl IntoIterator<Item = &'a ClusterRoleBinding>,
    ) -> Possible {
        let granting = granting_cluster_roles(cluster_roles);
        let role_key = |r: &Role| {
            let m = &r.metadata;
            (
                m.namespace.clone().unwrap_or_default(),
                m.name.clone().unwrap_or_default(),
            )
        };
        let roles: HashSet<(String, String)> = roles
            .into_iter()
            .filter(|r| rules_grant(r.rules.as_ref()))
            .map(role_key)
            .collect();
        let mut out = Possible::default();
        for b in cluster_bindings
            .into_iter()
            .map(Binding::of_cluster_role_binding)
        {
            if b.cluster_role
                .as_ref()
                .is_some_and(|r| granting.contains(r))
            {
                out.everywhere.extend(b.subjects);
            }
        }
        for b in role_bindings.into_iter().map(Binding::of_role_binding) {
            let ns = b.namespace.clone().unwrap_or_default();
            let by_cluster_role = b
                .cluster_role
                .as_ref()
                .is_some_and(|r| granting.contains(r));
            let by_role = b
                .role
                .as_ref()
                .is_some_and(|r| roles.contains(&(ns.clone(), r.clone())));
            if by_cluster_role || by_role {
                for s in b.subjects {
                    out.in_namespace.entry(s).or_default().insert(ns.clone());
                }
            }
        }
        out
    }

    /// What RBAC could grant `who` (its user name and each of its groups).
    pub fn of(&self, who: &Subject) -> Could {
        if self.all {
            return Could {
                all: true,
                ..Could::default()
            };
        }
        let named = std::iter::once(Named::User(who.user.clone()))
            .chain(who.groups.iter().map(|g| Named::Group(g.clone())));
        let mut could = Could {
            everywhere: who.groups.iter().any(|g| g == MASTERS),
            ..Could::default()
        };
        for n in named {
            could.everywhere |= self.everywhere.contains(&n);
            if let Some(ns) = self.in_namespace.get(&n) {
                could.namespaces.extend(ns.iter().cloned());
            }
        }
        could
    }
}

/// What the served peers need asked, given what RBAC could grant their owners.
#[derive(Debug, Clone, Default)]
pub struct Needs {
    /// The (subject, namespace) reviews: a peer asked for the namespace and a RoleBinding
    /// there could grant its owner (every pair a peer asked for with [`Possible::all`]).
    pub questions: BTreeSet<Question>,
    /// The subjects with a cluster-scope review (a ClusterRoleBinding could grant them);
    /// `None` with [`Possible::all`] (then asked after a ClusterRoleBinding change only).
    pub scoped: Option<BTreeSet<Subject>>,
    /// The subjects no RBAC binding could grant anywhere: one cluster-scope review each, at
    /// the lowest priority and on the periodic period only, in case another authorizer (a
    /// webhook: EKS access entries, GKE IAM, AKS Azure RBAC) grants them. Its yes grants
    /// every namespace, as a ClusterRoleBinding's does. Empty with [`Possible::all`].
    pub probes: BTreeSet<Subject>,
    could: HashMap<Subject, Could>,
}

impl Needs {
    pub fn of(inv: &Inventory, peers: &[PeerReach], possible: &Possible) -> Needs {
        let mut needs = Needs {
            scoped: (!possible.all).then(BTreeSet::new),
            ..Needs::default()
        };
        for p in peers {
            let could = needs
                .could
                .entry(p.subject.clone())
                .or_insert_with(|| possible.of(&p.subject));
            if could.everywhere
                && let Some(scoped) = needs.scoped.as_mut()
            {
                scoped.insert(p.subject.clone());
            }
            if could.nowhere() {
                needs.probes.insert(p.subject.clone());
            }
            let wanted = |ns: &str| {
                inv.by_namespace.contains_key(ns)
                    && (p.asked.is_empty() || p.asked.iter().any(|a| a == ns))
            };
            let asked: Vec<&str> = match could.all {
                true => p.wanted(inv).collect(),
                false => (could.namespaces.iter().map(String::as_str))
                    .filter(|ns| wanted(ns))
                    .collect(),
            };
            let asked = asked
                .into_iter()
                .map(|ns| (p.subject.clone(), ns.to_owned()));
            needs.questions.extend(asked);
        }
        needs
    }

    /// Whether `who` may reach `namespace`: a review allowed it, and RBAC could still grant it
    /// (a binding deleted since denies at once).
    pub fn allowed(&self, reviews: &Reviews, who: &Subject, namespace: &str) -> bool {
        self.answer(reviews, who, namespace) == Some(true)
    }

    /// The answer about `who` in `namespace` (`None`: its review is not answered yet): no
    /// without a review where no binding could grant it.
    pub fn answer(&self, reviews: &Reviews, who: &Subject, namespace: &str) -> Option<bool> {
        let Some(could) = self.could.get(who) else {
            return Some(false);
        };
        if !could.may(namespace) {
            // No binding could grant it here; where none could anywhere, another authorizer's
            // cluster-wide yes (its probe) grants every namespace, as a ClusterRoleBinding's.
            return Some(could.nowhere() && reviews.cluster_answer(who) == Some(true));
        }
        let cluster = match could.everywhere {
            true => reviews.cluster_answer(who),
            false => Some(false),
        };
        if cluster == Some(true) {
            return Some(true);
        }
        if !could.asks(namespace) {
            // Only the cluster-scope review could allow it: its answer.
            return cluster;
        }
        // A namespace's yes stands while the cluster-scope review is not answered yet.
        match (reviews.answer(who, namespace), cluster) {
            (Some(true), _) => Some(true),
            (_, None) => None,
            (own, Some(_)) => own,
        }
    }
}

#[cfg(test)]
mod tests;
