//! Which reviews a change to namespaced RBAC can affect (pure): a Role or RoleBinding grants
//! nothing outside its namespace.

use std::collections::{BTreeMap, BTreeSet};

/// Namespaced RBAC objects (Roles and RoleBindings): (kind, namespace, name) → resourceVersion.
pub type RbacVersions = BTreeMap<(&'static str, String, String), String>;

/// The namespaces where a Role or RoleBinding was added, changed or deleted between `old` and
/// `new`: only grants there can have changed (a RoleBinding grants nothing elsewhere), so only
/// those reviews are asked again at once.
pub fn changed_namespaces(old: &RbacVersions, new: &RbacVersions) -> BTreeSet<String> {
    let gone = old.iter().filter(|(k, v)| new.get(*k) != Some(*v));
    let came = new.iter().filter(|(k, v)| old.get(*k) != Some(*v));
    gone.chain(came).map(|((_, ns, _), _)| ns.clone()).collect()
}

#[cfg(test)]
#[path = "rbac_tests.rs"]
mod tests;
