//! While joined: keeps the forwarder's split decision and systemd-resolved's routing domains
//! in step with the cluster's namespaces (created and deleted while joined) and with the
//! reach the gateway grants this peer (names of namespaces it cannot reach are NXDOMAIN).
//! [`apply`], [`Namespaces`] and [`GatewayPoll`] decide without I/O; [`run`] asks the API
//! server and the gateway.
//!
//! Cheap at a thousand laptops: namespaces come from one watch per daemon (a list only at its
//! start and on a resync), not a list every few seconds; the gateway is asked for this peer's
//! own `/peers/self` entry, not every peer's. Older installs: a list every [`SLOW`] when the
//! user may not watch namespaces, all of `/peers` every [`SLOW`] from a gateway without
//! `/peers/self`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::api::core::v1::Namespace;
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kwg_contract::{GatewayPeer, ReachStatus};
use tokio::time::Instant;

use super::forwarder::SplitHandle;
use super::resolved::{self, LinkDomain};
use crate::cluster::Kube;
use crate::privileged::LinkDns;
use crate::reach::Own;
use kwg_session::dns::split::SplitDns;

/// How often the gateway is asked for this peer's reach: a RoleBinding given while joined
/// makes its namespace's names resolve within about this long after the gateway enforces it.
pub const EVERY: Duration = Duration::from_secs(3);
/// How often what older installs allow is asked instead: namespaces listed when the user
/// may not watch them, all of `/peers` from a gateway without `/peers/self`.
pub const SLOW: Duration = Duration::from_secs(30);
/// How long the gateway's `/peers/self` may take through the tunnel.
const GATEWAY_WAIT: Duration = Duration::from_secs(2);

/// What the loop needs.
pub struct Follow {
    pub split: SplitHandle,
    pub kube: Kube,
    /// systemd-resolved and kwg's link index, in mode resolved.
    pub resolved: Option<(LinkDns, u32)>,
    /// The gateway's admin address (through the tunnel) and this peer's name.
    pub gateway: Option<(SocketAddr, String)>,
    /// This session's state directory, while another session answers the short names: it
    /// takes them over when that one leaves ([`super::primary`]).
    pub secondary: Option<crate::state::StateDir>,
}

/// The split with what was read: `namespaces` (`None`: nothing new, keep the last list) and
/// this peer's reach from the gateway (`None`: no answer, keep the last reach; `Some(None)`:
/// not decided yet).
pub fn apply(
    split: &mut SplitDns,
    namespaces: Option<BTreeSet<String>>,
    reach: Option<Option<&ReachStatus>>,
) {
    if let Some(n) = namespaces {
        split.cluster_namespaces = n;
    }
    if let Some(reach) = reach {
        split.reachable = reach
            .filter(|r| r.enforced)
            .map(|r| r.namespaces.iter().cloned().collect());
    }
}

/// Peer `me`'s reach in all of a gateway's `/peers` (a gateway without `/peers/self`).
pub fn reach_of<'a>(peers: &'a [GatewayPeer], me: &str) -> Option<&'a ReachStatus> {
    peers
        .iter()
        .find(|p| p.name.as_str() == me)
        .and_then(|p| p.reach.as_ref())
}

/// The cluster's namespace names as a watch reports them, with kube's reflector semantics:
/// `Init` … `InitDone` (the watch's list, at its start and again after a desync) replaces
/// the whole set; `Apply` and `Delete` change one name.
#[derive(Debug, Default)]
pub struct Namespaces {
    known: BTreeSet<String>,
    /// The names of a list under way (between `Init` and `InitDone`).
    listing: Option<BTreeSet<String>>,
}

impl Namespaces {
    pub fn new(known: BTreeSet<String>) -> Namespaces {
        Namespaces {
            known,
            listing: None,
        }
    }

    /// Takes one event; the whole set when it changed.
    pub fn event(&mut self, event: Event<String>) -> Option<BTreeSet<String>> {
        let changed = match event {
            Event::Init => {
                self.listing = Some(BTreeSet::new());
                false
            }
            Event::InitApply(name) => match &mut self.listing {
                Some(l) => {
                    l.insert(name);
                    false
                }
                None => self.known.insert(name),
            },
            Event::InitDone => match self.listing.take() {
                Some(l) if l != self.known => {
                    self.known = l;
                    true
                }
                _ => false,
            },
            Event::Apply(name) => self.known.insert(name),
            Event::Delete(name) => self.known.remove(&name),
        };
        changed.then(|| self.known.clone())
    }
}

/// Which of the gateway's routes the reach poll asks, and how often.
#[derive(Debug, Default)]
pub struct GatewayPoll {
    /// When the gateway last answered that it has no `/peers/self` (older than this kwg).
    older_at: Option<Instant>,
    said: bool,
}

impl GatewayPoll {
    /// Whether to ask at `now`: every tick, but only every [`SLOW`] once the gateway proved
    /// older (all of `/peers` is every peer's entry).
    pub fn due(&self, now: Instant) -> bool {
        self.older_at.is_none_or(|t| now >= t + SLOW)
    }

    /// The gateway answered `/peers/self` (`older`: with no such route) at `now`; `true` the
    /// first time it proved older (to say so once).
    pub fn answered(&mut self, older: bool, now: Instant) -> bool {
        self.older_at = older.then_some(now);
        let first = older && !self.said;
        self.said |= older;
        first
    }
}

/// Whether a watch failed because the user may not watch (RBAC from before `watch namespaces`).
/// A list refused is not that: the watch retries it, backing off to 30 s, as a list would.
fn forbidden(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => s.is_forbidden(),
        watcher::Error::WatchError(s) => s.is_forbidden(),
        _ => false,
    }
}

type NamespaceEvents = BoxStream<'static, Result<Event<String>, watcher::Error>>;

/// Namespace names as they change, from one watch (names only).
fn namespace_watch(kube: &Kube) -> NamespaceEvents {
    let api: kube::Api<PartialObjectMeta<Namespace>> = kube::Api::all(kube.client.clone());
    watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .map(|r| {
            r.map(|e| match e {
                Event::Apply(n) => Event::Apply(n.metadata.name.unwrap_or_default()),
                Event::Delete(n) => Event::Delete(n.metadata.name.unwrap_or_default()),
                Event::Init => Event::Init,
                Event::InitApply(n) => Event::InitApply(n.metadata.name.unwrap_or_default()),
                Event::InitDone => Event::InitDone,
            })
        })
        .boxed()
}

/// The next namespace event (never, without a watch).
async fn next_event(
    watch: &mut Option<NamespaceEvents>,
) -> Option<Result<Event<String>, watcher::Error>> {
    match watch {
        Some(w) => w.next().await,
        None => std::future::pending().await,
    }
}

/// This peer's reach from the gateway when due (`None`: not asked, or no answer).
async fn ask_gateway(
    (admin, me): (SocketAddr, &str),
    poll: &mut GatewayPoll,
    now: Instant,
) -> Option<Option<ReachStatus>> {
    if !poll.due(now) {
        return None;
    }
    match crate::reach::fetch_own(admin, GATEWAY_WAIT).await {
        Ok(Own::Entry(p)) => {
            poll.answered(false, now);
            Some(p.reach)
        }
        Ok(Own::NoRoute) => {
            if poll.answered(true, now) {
                tracing::info!(
                    every_secs = SLOW.as_secs(),
                    "the gateway has no /peers/self (older than this kwg): its reach is read from all of /peers, less often"
                );
            }
            let peers = crate::reach::fetch(admin, GATEWAY_WAIT).await.ok()?;
            Some(reach_of(&peers, me).cloned())
        }
        Err(e) => {
            tracing::debug!(error = %e, "no reach from the gateway");
            None
        }
    }
}

/// What woke the loop.
enum Woke {
    Watch(Option<Result<Event<String>, watcher::Error>>),
    Tick,
}

/// Runs until the task is aborted (at leave).
pub async fn run(f: Follow) {
    let mut domains: Option<Vec<LinkDomain>> = resolved::split_domains(&f.split.split()).ok();
    let mut retry = false;
    // Mapped namespaces are fixed; a user who could not list them at join (none known)
    // cannot now either.
    let current = f.split.split();
    let follow = current.mapped.is_none() && !current.cluster_namespaces.is_empty();
    let mut names = Namespaces::new(current.cluster_namespaces.clone());
    let mut watch = follow.then(|| namespace_watch(&f.kube));
    // Without a watch (not allowed): when the next list is due.
    let mut list_at: Option<Instant> = None;
    let mut poll = GatewayPoll::default();
    let mut tick = tokio::time::interval_at(Instant::now() + EVERY, EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let woke = tokio::select! {
            ev = next_event(&mut watch) => Woke::Watch(ev),
            _ = tick.tick() => Woke::Tick,
        };
        let (mut namespaces, mut reach, mut primary) = (None, None, false);
        match woke {
            Woke::Watch(Some(Ok(ev))) => namespaces = names.event(ev),
            Woke::Watch(Some(Err(e))) if forbidden(&e) => {
                tracing::info!(error = %e, every_secs = SLOW.as_secs(), "may not watch namespaces (a kwg-user role from before `watch namespaces`): listing them instead, less often");
                watch = None;
                list_at = Some(Instant::now());
            }
            Woke::Watch(Some(Err(e))) => {
                tracing::debug!(error = %e, "namespace watch failed; it starts again");
            }
            Woke::Watch(None) => watch = None,
            Woke::Tick => {
                let now = Instant::now();
                if list_at.is_some_and(|t| now >= t) {
                    list_at = Some(now + SLOW);
                    namespaces = f.kube.namespaces().await;
                }
                if let Some((admin, me)) = &f.gateway {
                    reach = ask_gateway((*admin, me), &mut poll, now).await;
                }
                if let Some(own) = &f.secondary
                    && f.split.split().naming.secondary
                {
                    primary = super::primary::take_over(own);
                }
            }
        }
        let changed = f.split.update(|s| {
            apply(s, namespaces, reach.as_ref().map(Option::as_ref));
            s.naming.secondary &= !primary;
        });
        let Some((client, ifindex)) = &f.resolved else {
            continue;
        };
        // A failed update is tried again on the next wake even when nothing changed.
        if !changed && !retry {
            continue;
        }
        let want = match resolved::split_domains(&f.split.split()) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "cannot compute the link's domains");
                continue;
            }
        };
        if domains.as_ref() == Some(&want) {
            continue;
        }
        match client.set_domains(*ifindex, &want).await {
            Ok(()) => {
                let list: Vec<String> = want.iter().map(ToString::to_string).collect();
                tracing::info!(domains = %list.join(" "), "systemd-resolved's domains follow the cluster's namespaces");
                domains = Some(want);
                retry = false;
            }
            Err(e) => {
                if !retry {
                    tracing::warn!(error = %e, "cannot update systemd-resolved's domains");
                }
                retry = true;
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use kwg_contract::ReachStatus;

    fn split() -> SplitDns {
        SplitDns {
            cluster_domain: "cluster.local".into(),
            namespace: "emojivoto".into(),
            cluster_namespaces: ["emojivoto", "default"].map(String::from).into(),
            mapped: None,
            include_suffixes: vec![],
            exclude_suffixes: vec![".com".into()],
            reverse_subnets: vec![],
            machine_search: vec![],
            reachable: None,
            naming: Default::default(),
        }
    }

    /// A `/peers` entry as the gateway writes it (also for the reach tests).
    pub(crate) fn peer(name: &str, reach: Option<ReachStatus>) -> GatewayPeer {
        let mut p: GatewayPeer = serde_json::from_value(serde_json::json!({
            "name": name,
            "publicKey": "p0DgqXpMPbxjtgkBYpjGFK6fJVGdjwi3mv3ZCw5qQV0=",
            "tunnelIp": "100.77.0.2",
            "owner": "developer",
            "namespaces": [],
            "leaseExpires": "2026-01-01T00:00:00Z",
            "endpoint": null,
            "lastHandshake": null,
            "rxBytes": 0,
            "txBytes": 0,
        }))
        .unwrap();
        p.reach = reach;
        p
    }

    fn names(domains: &[LinkDomain]) -> Vec<String> {
        domains.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_namespace_created_while_joined_gets_its_routing_domain_and_a_deleted_one_loses_it() {
        let mut s = split();
        let before = names(&resolved::split_domains(&s).unwrap());
        assert!(before.contains(&"~default".to_string()), "{before:?}");
        apply(
            &mut s,
            Some(["emojivoto", "late"].map(String::from).into()),
            None,
        );
        let after = names(&resolved::split_domains(&s).unwrap());
        assert!(after.contains(&"~late".to_string()), "{after:?}");
        assert!(!after.contains(&"~default".to_string()), "{after:?}");
        // Not allowed to list: the last list stays.
        apply(&mut s, None, None);
        assert!(s.cluster_namespaces.contains("late"));
    }

    #[test]
    fn the_gateways_reach_decides_which_names_are_nxdomain() {
        use kwg_session::dns::split::Decision;
        let mut s = split();
        let reach = ReachStatus {
            enforced: true,
            namespaces: vec!["emojivoto".into()],
            dropped_packets: 0,
            last_refused: None,
        };
        let peers = [peer("other", None), peer("me", Some(reach))];
        apply(&mut s, None, Some(reach_of(&peers, "me")));
        assert_eq!(s.reachable, Some(["emojivoto".to_string()].into()));
        assert_eq!(s.decide("echo.default.svc.cluster.local"), Decision::Hidden);
        assert_eq!(s.decide("echo.default"), Decision::UpstreamElseHidden);
        assert_eq!(
            s.decide("web-app.emojivoto"),
            Decision::ClusterThenUpstream("web-app.emojivoto.svc.cluster.local".into())
        );
        // --reach=all on the gateway, or not decided yet: nothing hidden.
        let open = ReachStatus {
            enforced: false,
            namespaces: vec![],
            dropped_packets: 0,
            last_refused: None,
        };
        apply(&mut s, None, Some(Some(&open)));
        assert_eq!(s.reachable, None);
        // No answer from the gateway: the last reach stays.
        s.reachable = Some(BTreeSet::new());
        apply(&mut s, None, None);
        assert_eq!(s.reachable, Some(BTreeSet::new()));
    }

    #[test]
    fn a_namespace_watch_changes_names_one_by_one_and_a_relist_replaces_them_all() {
        let mut n = Namespaces::new(["default", "emojivoto"].map(String::from).into());
        let set = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        // The watch's first list: the same names, nothing to do.
        assert_eq!(n.event(Event::Init), None);
        assert_eq!(n.event(Event::InitApply("default".into())), None);
        assert_eq!(n.event(Event::InitApply("emojivoto".into())), None);
        assert_eq!(n.event(Event::InitDone), None);
        assert_eq!(
            n.event(Event::Apply("late".into())),
            Some(set(&["default", "emojivoto", "late"]))
        );
        // A namespace's status changing (Terminating) is no new name.
        assert_eq!(n.event(Event::Apply("late".into())), None);
        assert_eq!(
            n.event(Event::Delete("emojivoto".into())),
            Some(set(&["default", "late"]))
        );
        // A relist after a desync (410 Gone): a deletion the watch missed goes, and not
        // before the list is complete.
        assert_eq!(n.event(Event::Init), None);
        assert_eq!(n.event(Event::InitApply("default".into())), None);
        assert_eq!(n.event(Event::InitDone), Some(set(&["default"])));
    }

    #[test]
    fn an_older_gateway_is_asked_for_all_peers_every_30_s_and_said_once() {
        let t0 = Instant::now();
        let mut p = GatewayPoll::default();
        assert!(p.due(t0));
        p.answered(false, t0);
        assert!(p.due(t0 + EVERY));
        assert!(p.answered(true, t0 + EVERY), "said the first time");
        assert!(!p.due(t0 + EVERY * 2));
        assert!(!p.due(t0 + EVERY + SLOW - Duration::from_millis(1)));
        assert!(p.due(t0 + EVERY + SLOW));
        assert!(!p.answered(true, t0 + EVERY + SLOW), "said once");
        // Upgraded: every tick again.
        p.answered(false, t0 + EVERY * 2 + SLOW);
        assert!(p.due(t0 + EVERY * 3 + SLOW));
    }

    #[test]
    fn only_a_watch_refused_by_rbac_falls_back_to_listing() {
        use kube::core::Status;
        let api = |code: u16, reason: &str| {
            kube::Error::Api(Box::new(
                Status::failure("namespaces is forbidden", reason).with_code(code),
            ))
        };
        assert!(forbidden(&watcher::Error::WatchStartFailed(api(
            403,
            "Forbidden"
        ))));
        assert!(forbidden(&watcher::Error::WatchFailed(api(
            403,
            "Forbidden"
        ))));
        assert!(!forbidden(&watcher::Error::WatchStartFailed(api(
            500,
            "InternalError"
        ))));
        assert!(!forbidden(&watcher::Error::InitialListFailed(api(
            403,
            "Forbidden"
        ))));
        assert!(!forbidden(&watcher::Error::NoResourceVersion));
    }
}
