//! Which reviews a change to RBAC can affect (pure): a Role or RoleBinding grants nothing
//! outside its namespace; a ClusterRole grants only to the subjects bound to it, through a
//! RoleBinding (in that binding's namespace) or a ClusterRoleBinding (everywhere).

use super::grants::{Question, Subject};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding, RoleRef};
use std::collections::{BTreeMap, BTreeSet};

/// Who a binding names: a user (a ServiceAccount as its user name,
/// `system:serviceaccount:<namespace>:<name>`) or a group.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Named {
    User(String),
    Group(String),
}

impl Named {
    /// Whether a review about `who` counts this binding subject (its user, or one of the
    /// groups counted for it).
    pub fn names(&self, who: &Subject) -> bool {
        match self {
            Named::User(u) => *u == who.user,
            Named::Group(g) => who.groups.contains(g),
        }
    }
}

/// A RoleBinding or ClusterRoleBinding as reach reads it: where it grants (`None`: every
/// namespace), the ClusterRole it names (`None`: a Role), and whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub namespace: Option<String>,
    pub cluster_role: Option<String>,
    /// The Role it names (a RoleBinding's `roleRef` of kind Role).
    pub role: Option<String>,
    pub subjects: Vec<Named>,
}

fn cluster_role(r: &RoleRef) -> Option<String> {
    (r.kind == "ClusterRole").then(|| r.name.clone())
}

fn role(r: &RoleRef) -> Option<String> {
    (r.kind == "Role").then(|| r.name.clone())
}

/// A binding's subjects; a ServiceAccount without a namespace is the binding's own.
fn named(subjects: &[k8s_openapi::api::rbac::v1::Subject], own: &str) -> Vec<Named> {
    let one = |s: &k8s_openapi::api::rbac::v1::Subject| match s.kind.as_str() {
        "User" => Some(Named::User(s.name.clone())),
        "Group" => Some(Named::Group(s.name.clone())),
        "ServiceAccount" => {
            let ns = s
                .namespace
                .as_deref()
                .filter(|n| !n.is_empty())
                .unwrap_or(own);
            Some(Named::User(format!(
                "system:serviceaccount:{ns}:{}",
                s.name
            )))
        }
        _ => None,
    };
    subjects.iter().filter_map(one).collect()
}

impl Binding {
    pub fn of_role_binding(b: &RoleBinding) -> Binding {
        let ns = b.metadata.namespace.clone().unwrap_or_default();
        let subjects = named(b.subjects.as_deref().unwrap_or_default(), &ns);
        Binding {
            namespace: Some(ns),
            cluster_role: cluster_role(&b.role_ref),
            role: role(&b.role_ref),
            subjects,
        }
    }

    pub fn of_cluster_role_binding(b: &ClusterRoleBinding) -> Binding {
        Binding {
            namespace: None,
            cluster_role: cluster_role(&b.role_ref),
            role: None,
            subjects: named(b.subjects.as_deref().unwrap_or_default(), ""),
        }
    }
}

/// The answers a ClusterRole change can move: those of the subjects bound to it, everywhere
/// (ClusterRoleBindings: their cluster-scope question) or in one namespace (RoleBindings).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Affected {
    pub everywhere: BTreeSet<Named>,
    pub in_namespace: BTreeMap<String, BTreeSet<Named>>,
}

impl Affected {
    /// Whether nothing can have moved.
    pub fn is_empty(&self) -> bool {
        self.everywhere.is_empty() && self.in_namespace.is_empty()
    }

    /// Adds what `other` can move.
    pub fn extend(&mut self, other: Affected) {
        self.everywhere.extend(other.everywhere);
        for (ns, named) in other.in_namespace {
            self.in_namespace.entry(ns).or_default().extend(named);
        }
    }

    /// Whether `who`'s cluster-scope answer can have moved.
    pub fn everywhere(&self, who: &Subject) -> bool {
        self.everywhere.iter().any(|n| n.names(who))
    }

    /// Whether the answer to `q` (a namespace's) can have moved through a RoleBinding there
    /// (a ClusterRoleBinding's moves the cluster-scope answer, whose refusal asks the
    /// namespaces again: [`super::reviews::Reviews::answered`]).
    pub fn touches(&self, q: &Question) -> bool {
        let named = self.in_namespace.get(&q.1).into_iter().flatten();
        named.into_iter().any(|n| n.names(&q.0))
    }
}

/// ClusterRoles: name → resourceVersion.
pub type RoleVersions = BTreeMap<String, String>;

/// The ClusterRoles added, changed or deleted between `old` and `new`.
pub fn changed_roles(old: &RoleVersions, new: &RoleVersions) -> BTreeSet<String> {
    let gone = old.iter().filter(|(k, v)| new.get(*k) != Some(*v));
    let came = new.iter().filter(|(k, v)| old.get(*k) != Some(*v));
    gone.chain(came).map(|(k, _)| k.clone()).collect()
}

/// What a change to the ClusterRoles `roles` can move: the subjects of every binding naming
/// one of them, in that binding's namespace (a RoleBinding) or everywhere (a
/// ClusterRoleBinding). A ClusterRole no binding names moves nothing.
pub fn bound_to<'a>(
    roles: &BTreeSet<String>,
    bindings: impl IntoIterator<Item = &'a Binding>,
) -> Affected {
    let mut out = Affected::default();
    let naming = bindings
        .into_iter()
        .filter(|b| b.cluster_role.as_ref().is_some_and(|r| roles.contains(r)));
    for b in naming {
        let named = b.subjects.iter().cloned();
        match &b.namespace {
            None => out.everywhere.extend(named),
            Some(ns) => out
                .in_namespace
                .entry(ns.clone())
                .or_default()
                .extend(named),
        }
    }
    out
}

/// RoleBindings by (namespace, name): resourceVersion and what reach reads of it.
pub type RoleBindings = BTreeMap<(String, String), (String, Binding)>;
/// Roles by (namespace, name): resourceVersion.
pub type Roles = BTreeMap<(String, String), String>;

/// What a change of Roles and RoleBindings from `old` to `new` can move: for a RoleBinding
/// added, changed or deleted, the subjects it named before and names now, in its namespace;
/// for a Role, the subjects of the RoleBindings naming it (before and now), in its namespace.
/// Nobody else's answers (a RoleBinding grants only its subjects, only in its namespace).
pub fn namespaced_changes(
    (old_roles, old): (&Roles, &RoleBindings),
    (new_roles, new): (&Roles, &RoleBindings),
) -> Affected {
    let mut out = Affected::default();
    let mut add = |b: &Binding| {
        let ns = b.namespace.clone().unwrap_or_default();
        let named = out.in_namespace.entry(ns).or_default();
        named.extend(b.subjects.iter().cloned());
    };
    let version = |m: &RoleBindings, k: &(String, String)| m.get(k).map(|(v, _)| v.clone());
    for (k, (v, b)) in old {
        if version(new, k).as_ref() != Some(v) {
            add(b);
        }
    }
    for (k, (v, b)) in new {
        if version(old, k).as_ref() != Some(v) {
            add(b);
        }
    }
    let roles = changed_roles_in(old_roles, new_roles);
    let naming = |b: &&Binding| {
        let ns = b.namespace.clone().unwrap_or_default();
        b.role
            .as_ref()
            .is_some_and(|r| roles.contains(&(ns, r.clone())))
    };
    let all = old.values().chain(new.values()).map(|(_, b)| b);
    for b in all.filter(naming) {
        add(b);
    }
    out
}

/// ClusterRoleBindings by name: resourceVersion and what reach reads of it.
pub type ClusterRoleBindings = BTreeMap<String, (String, Binding)>;

/// What a change of ClusterRoleBindings from `old` to `new` can move: the cluster-scope answers
/// of the subjects each added, changed or deleted one named before or names now.
pub fn cluster_binding_changes(old: &ClusterRoleBindings, new: &ClusterRoleBindings) -> Affected {
    let mut out = Affected::default();
    let version = |m: &ClusterRoleBindings, k: &String| m.get(k).map(|(v, _)| v.clone());
    let gone = old
        .iter()
        .filter(|(k, (v, _))| version(new, k).as_ref() != Some(v));
    let came = new
        .iter()
        .filter(|(k, (v, _))| version(old, k).as_ref() != Some(v));
    for (_, (_, b)) in gone.chain(came) {
        out.everywhere.extend(b.subjects.iter().cloned());
    }
    out
}

fn changed_roles_in(old: &Roles, new: &Roles) -> BTreeSet<(String, String)> {
    let gone = old.iter().filter(|(k, v)| new.get(*k) != Some(*v));
    let came = new.iter().filter(|(k, v)| old.get(*k) != Some(*v));
    gone.chain(came).map(|(k, _)| k.clone()).collect()
}

#[cfg(test)]
mod tests;
