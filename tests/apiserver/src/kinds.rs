//! The table of resources the server knows: one generic code path, kind-specific hooks only
//! where needed (see `hooks`).

/// Which name validation the real server applies to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// RFC 1123 subdomain (most kinds).
    Subdomain,
    /// RFC 1123 label (namespaces).
    Label,
    /// RFC 1035 label (services).
    Dns1035,
    /// Any path segment (RBAC objects).
    PathSegment,
}

/// One served resource.
#[derive(Debug)]
pub struct Kind {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub verbs: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Subresources served (`status`).
    pub subresources: &'static [&'static str],
    pub name_rule: NameRule,
    /// Whether `metadata.generation` tracks spec changes.
    pub generation: bool,
}

/// The verbs of an ordinary resource.
pub const CRUD: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
const CREATE_ONLY: &[&str] = &["create"];
const ALL: &[&str] = &["all"];
const STATUS: &[&str] = &["status"];
const STATUS_LOG: &[&str] = &["status", "log"];
const STATUS_SCALE: &[&str] = &["status", "scale"];
const NONE: &[&str] = &[];

/// Namespaced or not.
const NS: bool = true;
const CLUSTER: bool = false;

#[allow(clippy::too_many_arguments)]
const fn k(
    group: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
    subresources: &'static [&'static str],
    name_rule: NameRule,
) -> Kind {
    Kind {
        group,
        version: "v1",
        plural,
        singular,
        kind,
        namespaced,
        short_names,
        verbs: CRUD,
        categories,
        subresources,
        name_rule,
        generation: false,
    }
}

const fn with_generation(mut kind: Kind) -> Kind {
    kind.generation = true;
    kind
}

const fn create_only(mut kind: Kind) -> Kind {
    kind.verbs = CREATE_ONLY;
    kind
}

use NameRule::*;

const RBAC: &str = "rbac.authorization.k8s.io";
const ADMISSION: &str = "admissionregistration.k8s.io";
const API_EXTENSIONS: &[&str] = &["api-extensions"];

#[rustfmt::skip]
static KINDS: &[Kind] = &[
    k("", "namespaces", "namespace", "Namespace", CLUSTER, &["ns"], NONE, STATUS, Label),
    k("", "secrets", "secret", "Secret", NS, NONE, NONE, NONE, Subdomain),
    k("", "configmaps", "configmap", "ConfigMap", NS, &["cm"], NONE, NONE, Subdomain),
    k("", "services", "service", "Service", NS, &["svc"], ALL, STATUS, Dns1035),
    k("", "endpoints", "endpoints", "Endpoints", NS, &["ep"], NONE, NONE, Subdomain),
    k("", "pods", "pod", "Pod", NS, &["po"], ALL, STATUS_LOG, Subdomain),
    k("", "nodes", "node", "Node", CLUSTER, &["no"], NONE, STATUS, Subdomain),
    k("", "serviceaccounts", "serviceaccount", "ServiceAccount", NS, &["sa"], NONE, &["token"], Subdomain),
    k("", "events", "event", "Event", NS, &["ev"], NONE, NONE, Subdomain),
    k("discovery.k8s.io", "endpointslices", "endpointslice", "EndpointSlice", NS, NONE, NONE, NONE, Subdomain),
    with_generation(k("apps", "deployments", "deployment", "Deployment", NS, &["deploy"], ALL, STATUS_SCALE, Subdomain)),
    with_generation(k("apps", "replicasets", "replicaset", "ReplicaSet", NS, &["rs"], ALL, STATUS_SCALE, Subdomain)),
    k(RBAC, "roles", "role", "Role", NS, NONE, NONE, NONE, PathSegment),
    k(RBAC, "rolebindings", "rolebinding", "RoleBinding", NS, NONE, NONE, NONE, PathSegment),
    k(RBAC, "clusterroles", "clusterrole", "ClusterRole", CLUSTER, NONE, NONE, NONE, PathSegment),
    k(RBAC, "clusterrolebindings", "clusterrolebinding", "ClusterRoleBinding", CLUSTER, NONE, NONE, NONE, PathSegment),
    k("networking.k8s.io", "servicecidrs", "servicecidr", "ServiceCIDR", CLUSTER, NONE, NONE, STATUS, Subdomain),
    k("coordination.k8s.io", "leases", "lease", "Lease", NS, NONE, NONE, NONE, Subdomain),
    with_generation(k("policy", "poddisruptionbudgets", "poddisruptionbudget", "PodDisruptionBudget", NS, &["pdb"], NONE, STATUS, Subdomain)),
    k("events.k8s.io", "events", "event", "Event", NS, &["ev"], NONE, NONE, Subdomain),
    create_only(k("authentication.k8s.io", "selfsubjectreviews", "selfsubjectreview", "SelfSubjectReview", CLUSTER, NONE, NONE, NONE, Subdomain)),
    create_only(k("authorization.k8s.io", "selfsubjectrulesreviews", "selfsubjectrulesreview", "SelfSubjectRulesReview", CLUSTER, NONE, NONE, NONE, Subdomain)),
    create_only(k("authorization.k8s.io", "subjectaccessreviews", "subjectaccessreview", "SubjectAccessReview", CLUSTER, NONE, NONE, NONE, Subdomain)),
    with_generation(k(ADMISSION, "validatingadmissionpolicies", "validatingadmissionpolicy", "ValidatingAdmissionPolicy", CLUSTER, NONE, API_EXTENSIONS, STATUS, Subdomain)),
    k(ADMISSION, "validatingadmissionpolicybindings", "validatingadmissionpolicybinding", "ValidatingAdmissionPolicyBinding", CLUSTER, NONE, API_EXTENSIONS, NONE, Subdomain),
    create_only(k("authorization.k8s.io", "selfsubjectaccessreviews", "selfsubjectaccessreview", "SelfSubjectAccessReview", CLUSTER, NONE, NONE, NONE, Subdomain)),
];

/// The resources of one group/version (None when it is not served).
pub fn in_group_version(group: &str, version: &str) -> Option<Vec<&'static Kind>> {
    let ks: Vec<&Kind> = KINDS
        .iter()
        .filter(|k| k.group == group && k.version == version)
        .collect();
    (!ks.is_empty()).then_some(ks)
}

/// Every served resource.
pub fn all() -> &'static [Kind] {
    KINDS
}

/// The resource `plural` in `group/version`.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Kind> {
    KINDS
        .iter()
        .find(|k| k.group == group && k.version == version && k.plural == plural)
}

/// The served group/versions, in discovery order (core excluded).
pub fn groups() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for k in KINDS.iter().filter(|k| !k.group.is_empty()) {
        if !out.contains(&(k.group, k.version)) {
            out.push((k.group, k.version));
        }
    }
    out
}

impl Kind {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// `secrets`, `deployments.apps`: how the real server names a resource in messages.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `Secret`, `Deployment.apps`: how the real server names a kind in 422 messages.
    pub fn group_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_string()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    pub fn has_status(&self) -> bool {
        self.subresources.contains(&"status")
    }

    pub fn is(&self, group: &str, plural: &str) -> bool {
        self.group == group && self.plural == plural
    }

    /// Whether the resource is stored (virtual resources like reviews are not).
    pub fn stored(&self) -> bool {
        self.verbs.contains(&"get")
    }
}
