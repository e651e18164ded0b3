//! Who may reach which namespace (pure): a peer reaches the ClusterIPs and pod IPs of a
//! namespace when its owner may `get` Services there (a SubjectAccessReview, answered by the
//! I/O side and passed in) and the peer asked for it (the peer Secret's `namespaces`; empty
//! asks for every namespace), plus cluster DNS. Reviews are asked per [`Subject`] (owner and
//! verified groups) and namespace.

use super::inventory::Inventory;
use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;

/// Who a review asks about: a peer's owner and the groups counted for it. Reviews are keyed
/// by it, so two peers of one owner with other groups get their own answers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Subject {
    pub user: String,
    /// Sorted, without repeats: [`owner_groups`] and the verified groups of the peer's Secret.
    pub groups: Vec<String>,
}

impl Subject {
    /// `owner` with `verified` groups (the Secret's `kwg.io/groups` when the gateway trusts
    /// them, see `--trust-peer-groups`; none otherwise). A `system:` group of the Secret never
    /// counts (`system:masters` would grant everything, and principals exempt from the
    /// admission policy can write any groups): the `system:` groups of a review are only the
    /// ones [`owner_groups`] derives from the owner.
    pub fn new(owner: &str, verified: &[String]) -> Subject {
        let mut groups = owner_groups(owner);
        groups.extend(
            verified
                .iter()
                .filter(|g| !g.is_empty() && !g.starts_with("system:"))
                .cloned(),
        );
        groups.sort();
        groups.dedup();
        Subject {
            user: owner.to_owned(),
            groups,
        }
    }
}

/// A served peer as reach sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerReach {
    pub ip: Ipv4Addr,
    pub subject: Subject,
    /// The namespaces it asked for; empty: every namespace.
    pub asked: Vec<String>,
}

impl PeerReach {
    /// The namespaces of `inv` this peer asked for.
    pub(super) fn wanted<'a>(&'a self, inv: &'a Inventory) -> impl Iterator<Item = &'a str> + 'a {
        let all = self.asked.is_empty();
        inv.by_namespace
            .keys()
            .map(String::as_str)
            .filter(move |ns| all || self.asked.iter().any(|a| a == ns))
    }
}

/// A subject and a namespace: one SubjectAccessReview (`get services` there).
pub type Question = (Subject, String);

/// The reviews needed to decide every peer's reach that `known` does not answer yet.
pub fn questions(
    inv: &Inventory,
    peers: &[PeerReach],
    known: impl Fn(&Subject, &str) -> bool,
) -> BTreeSet<Question> {
    peers
        .iter()
        .flat_map(|p| p.wanted(inv).map(move |ns| (&p.subject, ns)))
        .filter(|(o, ns)| !known(o, ns))
        .map(|(o, ns)| (o.clone(), ns.to_owned()))
        .collect()
}

/// The namespaces each peer reaches, by name (what `/peers` tells the peer itself), for the
/// peers whose every review is answered (`answer` is `None` while one is not): a peer whose
/// reach is not decided yet is left out rather than shown less than it will get.
pub fn reachable(
    inv: &Inventory,
    peers: &[PeerReach],
    answer: impl Fn(&Subject, &str) -> Option<bool>,
) -> HashMap<Ipv4Addr, Vec<String>> {
    peers
        .iter()
        .filter_map(|p| {
            let mut granted = Vec::new();
            for ns in p.wanted(inv) {
                if answer(&p.subject, ns)? {
                    granted.push(ns.to_owned());
                }
            }
            Some((p.ip, granted))
        })
        .collect()
}

/// The groups a review names for `owner`: every user is `system:authenticated`; a
/// ServiceAccount (`system:serviceaccount:<ns>:<name>`) also has its two ServiceAccount groups.
/// Other groups (from the cluster's authenticator) count only as the peer Secret's verified
/// `kwg.io/groups` ([`Subject::new`]).
pub fn owner_groups(owner: &str) -> Vec<String> {
    let mut groups = vec!["system:authenticated".to_owned()];
    if let Some(rest) = owner.strip_prefix("system:serviceaccount:")
        && let Some((ns, name)) = rest.split_once(':')
        && !ns.is_empty()
        && !name.is_empty()
    {
        groups.push("system:serviceaccounts".into());
        groups.push(format!("system:serviceaccounts:{ns}"));
    }
    groups
}

/// The command creating the RoleBinding that lets `owner` reach `namespace`: ClusterRole
/// `view` (which holds `get services`) bound there to the user or ServiceAccount.
pub fn allow_command(owner: &str, namespace: &str) -> String {
    let subject = match owner.strip_prefix("system:serviceaccount:") {
        Some(sa) => format!("--serviceaccount={}", shell_word(sa)),
        None => format!("--user={}", shell_word(owner)),
    };
    // A RoleBinding's name is a DNS subdomain: lower case, digits, '-' and '.'.
    let label: String = owner
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-' | '.') => c,
            _ => '-',
        })
        .take(200)
        .collect();
    let label = label.trim_matches(|c| c == '-' || c == '.');
    format!(
        "kubectl -n {namespace} create rolebinding kwg-reach-{label} --clusterrole=view {subject}"
    )
}

/// `word` as one shell word: as is when it holds only safe characters, else single-quoted.
fn shell_word(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "@%+=:,./_-".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests;
