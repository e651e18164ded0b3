//! Reach by RBAC, the I/O side: watches Services, their EndpointSlices, Pods and Nodes (what
//! peers may reach) and
//! Roles, ClusterRoles and their bindings (when to ask again), asks SubjectAccessReviews per
//! owner and namespace, and moves the `kwg_reach` nftables sets to what [`sets::desired`]
//! says, element by element.

use crate::core::ActivePeer;
use crate::kube_io::{listed, watch};
use crate::policy::possible::{Needs, Possible};
use crate::policy::reviews::{RETRY, Reviews};
use crate::policy::view::ReachView;
use crate::policy::{grants, inventory, rbac, sets};
use crate::{Config, GatewayError, net, nft};
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use grants::{PeerReach, Question, Subject};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{Node, NodeStatus, Pod, PodSpec, PodStatus, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, PostParams};
use kube::runtime::reflector::Store;
use sets::{NsIds, Sets};
use std::collections::BTreeSet;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Reviews in flight at once.
const REVIEWS_IN_FLIGHT: usize = 16;

/// Keeps the reach sets current until `token`.
pub async fn run(
    client: kube::Client,
    cfg: Config,
    (mut served, reach): (
        watch::Receiver<Arc<Vec<ActivePeer>>>,
        watch::Sender<Arc<ReachView>>,
    ),
    token: CancellationToken,
) {
    let (services, s) = watch(Api::all(client.clone()), None, "Services", trim_service);
    let (pods, p) = watch(Api::all(client.clone()), None, "Pods", trim_pod);
    let (nodes, n) = watch(Api::all(client.clone()), None, "Nodes", trim_node);
    let (slices, e) = watch(Api::all(client.clone()), None, "EndpointSlices", trim_slice);
    let mut objects = futures::stream::select_all([s, p, n, e]);
    let trust_groups = match cfg.trust_peer_groups {
        Some(set) => set,
        None => admission_policy_installed(&client).await,
    };
    let (roles, bindings, mut ns_rbac) = namespaced_rbac(&client);
    let (cluster_role_store, mut cluster_roles, cluster_binding_store, mut cluster_bindings) =
        cluster_rbac(&client);
    let mut rbac_seen = (rbac::Roles::new(), rbac::RoleBindings::new());
    let mut roles_seen = rbac::RoleVersions::new();
    let mut crbs_seen = rbac::ClusterRoleBindings::new();
    let mut reviews = Reviews::new(
        cfg.reach_refresh,
        cfg.reach_reviews_per_second,
        std::time::Instant::now(),
    );
    // What RBAC could grant (rebuilt on every change of the RBAC objects): only those pairs
    // are reviewed, the others denied without a review; everything with --review-all-pairs.
    let mut possible = Possible::all();
    let mut rbac_changed = true;
    let local = !cfg.review_all_pairs;
    if !local {
        tracing::info!("--review-all-pairs: every (owner, namespace) a peer asks for is reviewed");
    }
    let mut applied = Sets::default();
    let mut refused = std::collections::BTreeMap::new();
    let mut refused6 = std::collections::BTreeMap::new();
    let mut departed = inventory::Departed::default();
    let mut removed = inventory::Removed::default();
    let mut ids = NsIds::default();
    // The nftables update failed: try again after RETRY.
    let mut nft_failed = false;
    loop {
        let now = std::time::Instant::now();
        let mut wake = Instant::from_std(reviews.next_wake(now));
        if nft_failed {
            wake = wake.min(Instant::now() + RETRY);
        }
        // A departed pod's address stops counting for the endpoints that still list it.
        // So does an endpoint that left its Service's slices.
        let expiry = [departed.next_expiry(), removed.next_expiry()];
        let wake =
            (expiry.into_iter().flatten().min()).map_or(wake, |at| wake.min(Instant::from_std(at)));
        tokio::select! {
            _ = token.cancelled() => return,
            Some(()) = objects.next() => {
                while let Some(Some(())) = objects.next().now_or_never() {}
            }
            Some(()) = ns_rbac.next() => {
                while let Some(Some(())) = ns_rbac.next().now_or_never() {}
                let now = namespaced_now(&roles, &bindings);
                let affected = rbac::namespaced_changes((&rbac_seen.0, &rbac_seen.1), (&now.0, &now.1));
                tracing::debug!(namespaces = affected.in_namespace.len(), "Roles or RoleBindings changed: asking the grants of their subjects there again");
                reviews.subjects_changed(affected);
                rbac_seen = now;
                rbac_changed = true;
            }
            Some(()) = cluster_roles.next() => {
                while let Some(Some(())) = cluster_roles.next().now_or_never() {}
                let now = cluster_role_versions(&cluster_role_store);
                let changed = rbac::changed_roles(&roles_seen, &now);
                let rbs = bindings.state();
                let crbs = cluster_binding_store.state();
                let all = rbs.iter().map(|b| rbac::Binding::of_role_binding(b));
                let all = all.chain(crbs.iter().map(|b| rbac::Binding::of_cluster_role_binding(b)));
                let affected = rbac::bound_to(&changed, &all.collect::<Vec<_>>());
                tracing::debug!(cluster_roles = changed.len(), bound_everywhere = affected.everywhere.len(),
                    namespaces = affected.in_namespace.len(), "ClusterRoles changed: asking the grants of the subjects bound to them again");
                reviews.subjects_changed(affected);
                roles_seen = now;
                rbac_changed = true;
            }
            Some(()) = cluster_bindings.next() => {
                while let Some(Some(())) = cluster_bindings.next().now_or_never() {}
                let now = cluster_bindings_now(&cluster_binding_store);
                let affected = rbac::cluster_binding_changes(&crbs_seen, &now);
                tracing::debug!(subjects = affected.everywhere.len(), "ClusterRoleBindings changed: asking the cluster-wide grant of their subjects again");
                reviews.subjects_changed(affected);
                crbs_seen = now;
                rbac_changed = true;
            }
            Ok(()) = served.changed() => {}
            _ = tokio::time::sleep_until(wake) => {
                // A tick of the spread with nothing due and nothing waiting costs no pass.
                let busy = reviews.tick(std::time::Instant::now());
                let graces = departed.next_expiry().or(removed.next_expiry());
                if !busy && !nft_failed && graces.is_none() {
                    continue;
                }
            }
        }
        if !(listed(&services) && listed(&pods) && listed(&nodes) && listed(&slices)) {
            continue;
        }
        let rbac_listed = listed(&roles)
            && listed(&bindings)
            && listed(&cluster_role_store)
            && listed(&cluster_binding_store);
        if local && !rbac_listed {
            continue; // what RBAC could grant is not known yet
        }
        if std::mem::take(&mut rbac_changed) {
            possible = rebuild(
                local,
                &roles,
                &bindings,
                &cluster_role_store,
                &cluster_binding_store,
            );
        }
        let started = std::time::Instant::now();
        let inventory = |departed: &inventory::Departed, removed: &inventory::Removed| {
            inventory::inventory(
                services.state().iter().map(|s| s.as_ref()),
                pods.state().iter().map(|p| p.as_ref()),
                nodes.state().iter().map(|n| n.as_ref()),
                slices.state().iter().map(|s| s.as_ref()),
                &cfg.allow_cidr,
                &departed.recent(),
                &removed.recent(),
            )
        };
        let mut inv = inventory(&departed, &removed);
        if departed.update(&inv.pods, &inv.pods6, started) {
            inv = inventory(&departed, &removed); // a pod just went: its endpoints still count
        }
        if removed.update(&inv.endpoints, started) {
            inv = inventory(&departed, &removed); // an endpoint just left: it still counts
        }
        log_refused(&refused, &inv.refused);
        refused = inv.refused.clone();
        log_refused(&refused6, &inv.refused6);
        refused6 = inv.refused6.clone();
        let peers = peer_reach(&served.borrow_and_update(), trust_groups);
        let needs = Needs::of(&inv, &peers, &possible);
        let now = std::time::Instant::now();
        let asked = reviews.to_ask_needs(&needs, now);
        if !asked.is_empty() {
            let n = asked.len();
            review_all(&client, asked, &mut reviews).await;
            for owner in reviews.granted_elsewhere() {
                tracing::warn!(owner = %owner.user, groups = ?owner.groups, "another authorizer grants {} get services in every namespace though no RBAC binding could: reach everywhere granted as by a ClusterRoleBinding; to have its namespaces asked one by one instead, start the gateway with --review-all-pairs", owner.user);
                crate::metrics::REACH_GRANTED_ELSEWHERE.inc();
            }
            tracing::debug!(
                reviews = n,
                waiting = reviews.waiting(),
                "owners' grants asked"
            );
        }
        let allowed = |o: &Subject, ns: &str| needs.allowed(&reviews, o, ns);
        let new = sets::desired(&inv, &peers, allowed, &mut ids);
        let d = sets::diff(&applied, &new);
        nft_failed = false;
        if !d.is_empty() {
            if let Err(e) = apply(&cfg, &d, &new) {
                tracing::error!(error = %e, "cannot update the reach sets");
                nft_failed = true;
                continue;
            }
            tracing::info!(
                elements = d.len(),
                grants_added = d.add_peer.len(),
                grants_removed = d.del_peer.len(),
                destinations = new.dest_ns.len(),
                took_ms = started.elapsed().as_millis() as u64,
                "reach updated"
            );
            applied = new;
        }
        // What is enforced now is what peers are told (`/peers`).
        reach.send_replace(Arc::new(ReachView {
            enforced: true,
            by_peer: grants::reachable(&inv, &peers, |o, ns| needs.answer(&reviews, o, ns)),
            namespaces_of: std::sync::Arc::new(inventory::address_namespaces(&inv)),
        }));
    }
}

/// What RBAC could grant, from the cached RBAC objects (everything, without `local`).
fn rebuild(
    local: bool,
    roles: &Store<Role>,
    bindings: &Store<RoleBinding>,
    cluster_roles: &Store<ClusterRole>,
    cluster_bindings: &Store<ClusterRoleBinding>,
) -> Possible {
    if !local {
        return Possible::all();
    }
    let (r, b) = (roles.state(), bindings.state());
    let (cr, cb) = (cluster_roles.state(), cluster_bindings.state());
    Possible::build(
        r.iter().map(|o| o.as_ref()),
        cr.iter().map(|o| o.as_ref()),
        b.iter().map(|o| o.as_ref()),
        cb.iter().map(|o| o.as_ref()),
    )
}

/// The admission policy that makes a peer Secret's groups its owner's.
const OWNERSHIP_POLICY: &str = "kwg-peer-ownership";

/// Whether the admission policy `kwg-peer-ownership` and its binding exist (then a peer's
/// groups count in its reviews), said in the log either way.
async fn admission_policy_installed(client: &kube::Client) -> bool {
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    let policy = Api::<ValidatingAdmissionPolicy>::all(client.clone())
        .get_opt(OWNERSHIP_POLICY)
        .await;
    let binding = Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
        .get_opt(OWNERSHIP_POLICY)
        .await;
    match (policy, binding) {
        (Ok(Some(_)), Ok(Some(_))) => {
            tracing::info!(
                policy = OWNERSHIP_POLICY,
                "admission policy installed: peers' groups count in reach by RBAC"
            );
            true
        }
        (Ok(_), Ok(_)) => {
            tracing::warn!(
                policy = OWNERSHIP_POLICY,
                "admission policy or its binding not installed (Kubernetes < 1.30, or manifests/admission-policy.yaml not applied): reach counts user names only, not groups"
            );
            false
        }
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(policy = OWNERSHIP_POLICY, error = %e, "cannot read the admission policy (grant get on validatingadmissionpolicies and validatingadmissionpolicybindings, manifests/rbac-gateway.yaml): reach counts user names only, not groups");
            false
        }
    }
}

/// Applies the element changes; when nft refuses them (the sets were changed behind the
/// gateway's back), reloads the reach table whole with `new`.
fn apply(cfg: &Config, d: &sets::Diff, new: &Sets) -> Result<(), GatewayError> {
    net::nft_apply(&d.render(nft::REACH_TABLE)).or_else(|e| {
        tracing::warn!(error = %e, "element update refused: reloading the reach table");
        let full = sets::diff(&Sets::default(), new).render(nft::REACH_TABLE);
        net::nft_apply(&(nft::render_reach(&cfg.interface, &cfg.allow_cidr) + &full))
    })
}

/// Logs each ClusterIP (IPv4, or IPv6: its Service refused, or an endpoint of its IPv6 slices
/// no pod of the namespaces the Service needs) that became refused to every peer, or stopped
/// being.
fn log_refused<K: Ord + std::fmt::Display>(
    old: &std::collections::BTreeMap<K, inventory::Refused>,
    new: &std::collections::BTreeMap<K, inventory::Refused>,
) {
    for (ip, r) in new.iter().filter(|(ip, r)| old.get(ip) != Some(r)) {
        tracing::warn!(cluster_ip = %ip, service = %r.service, endpoint = %r.endpoint,
            "ClusterIP refused to every peer: an endpoint of its Service is no pod (a node, an address outside the pod network, or one not in canonical form)");
    }
    for (ip, r) in old.iter().filter(|(ip, _)| !new.contains_key(ip)) {
        tracing::info!(cluster_ip = %ip, service = %r.service, "ClusterIP no longer refused");
    }
}

/// The served peers as reach sees them; their Secrets' groups count only with
/// `--trust-peer-groups` (the admission policy verified them).
fn peer_reach(peers: &[ActivePeer], trust_groups: bool) -> Vec<PeerReach> {
    peers
        .iter()
        .map(|p| PeerReach {
            ip: p.ip.addr(),
            subject: Subject::new(&p.spec.owner, if trust_groups { &p.groups } else { &[] }),
            asked: p.spec.namespaces.clone(),
        })
        .collect()
}

/// Asks every question; records the answers (a failed one keeps its last answer and is asked
/// again after [`RETRY`]).
async fn review_all(client: &kube::Client, asked: BTreeSet<Question>, reviews: &mut Reviews) {
    let api = Api::<SubjectAccessReview>::all(client.clone());
    let mut answers = futures::stream::iter(asked)
        .map(|q| {
            let api = api.clone();
            async move {
                let r = may_get_services(&api, &q.0, &q.1).await;
                (q, r)
            }
        })
        .buffer_unordered(REVIEWS_IN_FLIGHT);
    while let Some((q, r)) = answers.next().await {
        match r {
            Ok(allowed) => {
                let (owner, groups, namespace) =
                    (q.0.user.clone(), q.0.groups.clone(), q.1.clone());
                let scope = if namespace.is_empty() {
                    "every namespace"
                } else {
                    "namespace"
                };
                if reviews.answered(q, allowed) {
                    tracing::info!(%owner, ?groups, %namespace, scope, allowed, "owner's reach");
                }
            }
            Err(e) => {
                tracing::warn!(owner = %q.0.user, namespace = %q.1, error = %e, "SubjectAccessReview failed; retrying");
                reviews.failed(q, std::time::Instant::now());
            }
        }
    }
}

/// Whether `who` may `get` Services in `namespace` (a SubjectAccessReview).
async fn may_get_services(
    api: &Api<SubjectAccessReview>,
    who: &Subject,
    namespace: &str,
) -> Result<bool, GatewayError> {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(who.user.clone()),
            groups: Some(who.groups.clone()),
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(namespace.to_owned()),
                verb: Some("get".into()),
                group: Some(String::new()),
                resource: Some("services".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let done = api
        .create(&PostParams::default(), &review)
        .await
        .map_err(GatewayError::kube("create a SubjectAccessReview"))?;
    Ok(done.status.is_some_and(|s| s.allowed))
}

fn strip<K: kube::Resource>(o: &mut K) {
    o.meta_mut().managed_fields = None;
    o.meta_mut().annotations = None;
}

/// Caches of Roles and RoleBindings and a stream that yields whenever one changes (and after
/// each re-list).
fn namespaced_rbac(
    client: &kube::Client,
) -> (Store<Role>, Store<RoleBinding>, BoxStream<'static, ()>) {
    let (roles, a) = watch::<Role>(Api::all(client.clone()), None, "Roles", strip);
    let (bindings, b) = watch::<RoleBinding>(Api::all(client.clone()), None, "RoleBindings", strip);
    (roles, bindings, futures::stream::select_all([a, b]).boxed())
}

/// Caches of ClusterRoles and ClusterRoleBindings, each with a stream that yields whenever
/// one changes.
fn cluster_rbac(
    client: &kube::Client,
) -> (
    Store<ClusterRole>,
    BoxStream<'static, ()>,
    Store<ClusterRoleBinding>,
    BoxStream<'static, ()>,
) {
    let (role_store, roles) =
        watch::<ClusterRole>(Api::all(client.clone()), None, "ClusterRoles", strip);
    let (binding_store, bindings) =
        watch::<ClusterRoleBinding>(Api::all(client.clone()), None, "ClusterRoleBindings", strip);
    (role_store, roles, binding_store, bindings)
}

/// The cached ClusterRoleBindings (version and what reach reads of each).
fn cluster_bindings_now(bindings: &Store<ClusterRoleBinding>) -> rbac::ClusterRoleBindings {
    let all = bindings.state();
    let one = |b: &ClusterRoleBinding| {
        let m = &b.metadata;
        let version = m.resource_version.clone().unwrap_or_default();
        let name = m.name.clone().unwrap_or_default();
        (name, (version, rbac::Binding::of_cluster_role_binding(b)))
    };
    all.iter().map(|b| one(b)).collect()
}

/// The cached ClusterRoles' versions.
fn cluster_role_versions(roles: &Store<ClusterRole>) -> rbac::RoleVersions {
    let version = |r: &ClusterRole| {
        let m = &r.metadata;
        let name = m.name.clone().unwrap_or_default();
        (name, m.resource_version.clone().unwrap_or_default())
    };
    roles.state().iter().map(|r| version(r)).collect()
}

/// The cached Roles' versions and RoleBindings (version and what reach reads of each).
fn namespaced_now(
    roles: &Store<Role>,
    bindings: &Store<RoleBinding>,
) -> (rbac::Roles, rbac::RoleBindings) {
    fn key(m: &kube::api::ObjectMeta) -> (String, String) {
        let ns = m.namespace.clone().unwrap_or_default();
        (ns, m.name.clone().unwrap_or_default())
    }
    let version = |m: &kube::api::ObjectMeta| m.resource_version.clone().unwrap_or_default();
    let r = roles
        .state()
        .iter()
        .map(|o| (key(&o.metadata), version(&o.metadata)))
        .collect();
    let all = bindings.state();
    let b = all.iter().map(|o| {
        let binding = rbac::Binding::of_role_binding(o);
        (key(&o.metadata), (version(&o.metadata), binding))
    });
    (r, b.collect())
}

/// Keeps what reach reads of a Pod: namespace, hostNetwork, phase and addresses.
fn trim_pod(p: &mut Pod) {
    p.metadata.managed_fields = None;
    p.metadata.annotations = None;
    p.metadata.labels = None;
    p.metadata.owner_references = None;
    p.spec = p.spec.take().map(|s| PodSpec {
        host_network: s.host_network,
        ..Default::default()
    });
    p.status = p.status.take().map(|s| PodStatus {
        phase: s.phase,
        pod_ip: s.pod_ip,
        pod_ips: s.pod_ips,
        ..Default::default()
    });
}

/// Keeps what reach reads of an EndpointSlice: namespace, Service label, address type and
/// addresses (not `targetRef`: its writer chooses it, the Pods say whose an address is).
fn trim_slice(s: &mut EndpointSlice) {
    s.metadata.managed_fields = None;
    s.metadata.annotations = None;
    s.metadata.owner_references = None;
    s.metadata.labels = s.metadata.labels.take().map(|l| {
        l.into_iter()
            .filter(|(k, _)| k == inventory::SERVICE_NAME_LABEL)
            .collect()
    });
    s.ports = None;
    for e in &mut s.endpoints {
        *e = Endpoint {
            addresses: std::mem::take(&mut e.addresses),
            ..Default::default()
        };
    }
}

fn trim_service(s: &mut Service) {
    s.metadata.managed_fields = None;
    s.metadata.annotations = None;
    s.metadata.labels = None;
    s.status = None;
    s.spec = s
        .spec
        .take()
        .map(|sp| k8s_openapi::api::core::v1::ServiceSpec {
            cluster_ip: sp.cluster_ip,
            cluster_ips: sp.cluster_ips,
            ..Default::default()
        });
}

fn trim_node(n: &mut Node) {
    n.metadata.managed_fields = None;
    n.metadata.annotations = None;
    n.metadata.labels = None;
    n.spec = None;
    n.status = n.status.take().map(|s| NodeStatus {
        addresses: s.addresses,
        ..Default::default()
    });
}
