//! Objects a fresh cluster has: namespaces, the `kubernetes` Service, the ServiceCIDR and the
//! default RBAC roles and bindings.

use chrono::Utc;
use serde_json::{Value, json};

use crate::kinds::{self, CRUD as WRITE, find};
use crate::ops::{self, Env, WriteOpts};
use crate::store::Store;
use crate::validation::first_ip;

const READ: &[&str] = &["get", "list", "watch"];
/// The aggregated admin/edit/view roles grant nothing on admission configuration.
const ADMISSION: &str = "admissionregistration.k8s.io";

/// Rules over the served resources: every group except `exclude_groups`, resources except
/// `exclude` (subresources included).
fn rules(verbs: &[&str], exclude: &[&str], exclude_groups: &[&str]) -> Value {
    let mut out = Vec::new();
    let mut groups: Vec<&str> = vec![""];
    groups.extend(kinds::groups().into_iter().map(|(g, _)| g));
    for g in groups.into_iter().filter(|g| !exclude_groups.contains(g)) {
        let mut resources = Vec::new();
        for k in kinds::all()
            .iter()
            .filter(|k| k.group == g && k.stored() && !exclude.contains(&k.plural))
        {
            resources.push(k.plural.to_string());
            resources.extend(k.subresources.iter().map(|s| format!("{}/{s}", k.plural)));
        }
        if !resources.is_empty() {
            out.push(json!({"apiGroups": [g], "resources": resources, "verbs": verbs}));
        }
    }
    json!(out)
}

/// The real `view` role (`system:aggregate-to-view` in Kubernetes' bootstrap policy), limited
/// to the kinds this server serves: no Secrets, Nodes, Leases, `events.k8s.io`, RBAC or
/// admission objects.
fn view_rules() -> Value {
    json!([
        {"apiGroups": [""], "resources": ["pods", "serviceaccounts", "services", "services/status", "endpoints", "configmaps"], "verbs": READ},
        {"apiGroups": [""], "resources": ["events", "pods/status", "namespaces/status", "pods/log"], "verbs": READ},
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": READ},
        {"apiGroups": ["apps"], "resources": ["deployments", "deployments/status", "deployments/scale", "replicasets", "replicasets/status", "replicasets/scale"], "verbs": READ},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": READ},
        {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets", "poddisruptionbudgets/status"], "verbs": READ},
    ])
}

/// Kinds the aggregated `admin` and `edit` roles only read: since Kubernetes 1.22 (CVE-2021-25740)
/// they write neither Endpoints nor EndpointSlices (`system:aggregate-to-edit` never granted
/// EndpointSlices, and lost Endpoints): whoever writes them sends a Service's traffic anywhere.
const READ_ONLY_IN_EDIT: &[&str] = &["endpoints", "endpointslices"];

/// `admin` or `edit`: writes on every served kind but `exclude_groups` and
/// [`READ_ONLY_IN_EDIT`], which it reads.
fn namespace_writer(exclude_groups: &[&str]) -> Value {
    let mut out = rules(WRITE, READ_ONLY_IN_EDIT, exclude_groups);
    if let Some(rules) = out.as_array_mut() {
        rules.push(json!({"apiGroups": [""], "resources": ["endpoints"], "verbs": READ}));
        rules.push(json!({"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": READ}));
    }
    out
}

fn cluster_role(name: &str, rules: Value) -> Value {
    json!({"metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}}, "rules": rules})
}

fn group_binding(name: &str, role: &str, group: &str) -> Value {
    json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": group}],
    })
}

/// Create the bootstrap objects.
pub fn populate(store: &mut Store, env: &Env) {
    let opts = WriteOpts {
        dry_run: false,
        now: Utc::now(),
        user: None,
        warnings: None,
    };
    let mut put = |group: &str, plural: &str, ns: &str, obj: Value| {
        let kind = find(group, "v1", plural).expect("bootstrap kinds are served");
        if let Err(e) = ops::create(store, env, kind, ns, obj, opts) {
            tracing::error!(error = %e.message, plural, "bootstrap object rejected");
        }
    };
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        put("", "namespaces", "", json!({"metadata": {"name": ns}}));
    }
    let ip = first_ip(&env.service_cidr).to_string();
    put(
        "",
        "services",
        "default",
        json!({
            "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"clusterIP": ip, "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]},
        }),
    );
    put(
        "networking.k8s.io",
        "servicecidrs",
        "",
        json!({"metadata": {"name": "kubernetes"}, "spec": {"cidrs": env.service_cidrs().all().iter().map(ToString::to_string).collect::<Vec<_>>()},
               "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "", "message": "Kubernetes Service CIDR is ready",
                                          "lastTransitionTime": ops::timestamp(opts.now)}]}}),
    );
    let rbac = "rbac.authorization.k8s.io";
    let all = json!([
        {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
        {"nonResourceURLs": ["*"], "verbs": ["*"]}
    ]);
    put(rbac, "clusterroles", "", cluster_role("cluster-admin", all));
    put(
        rbac,
        "clusterroles",
        "",
        cluster_role(
            "admin",
            namespace_writer(&["authorization.k8s.io", "authentication.k8s.io", ADMISSION]),
        ),
    );
    put(
        rbac,
        "clusterroles",
        "",
        cluster_role("edit", namespace_writer(&[rbac, ADMISSION])),
    );
    put(rbac, "clusterroles", "", cluster_role("view", view_rules()));
    let discovery_urls = [
        "/api",
        "/api/*",
        "/apis",
        "/apis/*",
        "/healthz",
        "/livez",
        "/readyz",
        "/version",
        "/version/",
        "/openapi",
        "/openapi/*",
    ];
    put(
        rbac,
        "clusterroles",
        "",
        cluster_role(
            "system:discovery",
            json!([{"nonResourceURLs": discovery_urls, "verbs": ["get"]}]),
        ),
    );
    put(
        rbac,
        "clusterroles",
        "",
        cluster_role(
            "system:basic-user",
            json!([
                {"apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"], "verbs": ["create"]},
                {"apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"], "verbs": ["create"]}
            ]),
        ),
    );
    put(
        rbac,
        "clusterrolebindings",
        "",
        group_binding("cluster-admin", "cluster-admin", "system:masters"),
    );
    put(
        rbac,
        "clusterrolebindings",
        "",
        group_binding(
            "system:discovery",
            "system:discovery",
            "system:authenticated",
        ),
    );
    put(
        rbac,
        "clusterrolebindings",
        "",
        group_binding(
            "system:basic-user",
            "system:basic-user",
            "system:authenticated",
        ),
    );
}
