//! Every session on the machine, without I/O: who owns it, what it changed, and what a request
//! may change. [`Registry::plan`] turns a request into [`Change`]s (each with its [`Undo`]) after
//! the rules and the other sessions had their say; the server journals each undo, makes the
//! change, then [`Registry::applied`] records it.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Component, PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::proto::{ErrorKind, MAX_ROUTES, SessionInfo, VERSION};
use crate::rules::{self, Facts, Policy};
use kwg_session::dns::domains::{LinkConfig, LinkDomain};

/// How many sessions one uid may hold at once, and the machine in all.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub per_uid: usize,
    pub total: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            per_uid: 4,
            total: 32,
        }
    }
}

/// A connection's peer, from SO_PEERCRED.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub pid: Option<u32>,
}

impl Peer {
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }
}

/// A refused request: its kind and one sentence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub kind: ErrorKind,
    pub message: String,
}

fn refuse(kind: ErrorKind, message: impl Into<String>) -> Refusal {
    Refusal {
        kind,
        message: message.into(),
    }
}

/// What `Open` asked for, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenSpec {
    pub interface: String,
    pub state_dir: Option<PathBuf>,
    /// The consent that counts: the user's `--also-proxy`, for root as asked, for others only
    /// where the helper's `--allow-route` covers it.
    pub consent: Vec<IpNet>,
    pub allow_conflicting: Vec<IpNet>,
}

/// A change to the machine, planned for one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    CreateTun {
        name: String,
        mtu: u16,
    },
    AddAddress {
        name: String,
        address: IpNet,
    },
    DeleteAddress {
        name: String,
        address: IpNet,
    },
    AddRoute {
        name: String,
        route: IpNet,
    },
    DeleteRoute {
        name: String,
        route: IpNet,
    },
    InstallFirewall {
        table: String,
        name: String,
    },
    /// Binds the session's DNS forwarder socket (UDP, or a TCP listener) on `listen`: the
    /// descriptor goes to the user side; nothing to undo (it closes with the user's process).
    BindDns {
        listen: SocketAddr,
        tcp: bool,
    },
    /// Rewrites the resolver file in place with `contents`; `original` is what it held.
    WriteResolvConf {
        original: String,
        contents: String,
    },
    /// Sets systemd-resolved's DNS on the session's link (`SetLinkDNS`, `SetLinkDomains`,
    /// `SetLinkDefaultRoute` false, DNSSEC/DoT/LLMNR/mDNS off), as a root join does.
    ConfigureResolved {
        name: String,
        link: LinkConfig,
    },
    /// Replaces the domains of a link configured already (namespaces come and go).
    SetResolvedDomains {
        ifindex: u32,
        domains: Vec<LinkDomain>,
    },
}

/// How a change is undone; what the journal holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "undo", rename_all = "camelCase")]
pub enum Undo {
    /// Deletes the link if it still has this index (a link of the same name made later by
    /// someone else stays). `None` until the link exists.
    DeleteLink {
        name: String,
        ifindex: Option<u32>,
    },
    DeleteAddress {
        name: String,
        address: IpNet,
    },
    DeleteRoute {
        name: String,
        route: IpNet,
    },
    RemoveFirewall {
        table: String,
    },
    /// Puts the resolver file's `original` text back in place, if the file is still kwg's (or
    /// empty: a write cut short). The journal is the backup.
    RestoreResolvConf {
        original: String,
    },
    /// `RevertLink` of the link, if it still has this index (a link that is gone took its DNS
    /// settings with it).
    RevertLink {
        name: String,
        ifindex: u32,
    },
}

impl Change {
    /// What undoes it (journalled before it is made); `None` for a removal.
    pub fn undo(&self) -> Option<Undo> {
        match self {
            Change::CreateTun { name, .. } => Some(Undo::DeleteLink {
                name: name.clone(),
                ifindex: None,
            }),
            Change::AddAddress { name, address } => Some(Undo::DeleteAddress {
                name: name.clone(),
                address: *address,
            }),
            Change::AddRoute { name, route } => Some(Undo::DeleteRoute {
                name: name.clone(),
                route: *route,
            }),
            Change::InstallFirewall { table, .. } => Some(Undo::RemoveFirewall {
                table: table.clone(),
            }),
            Change::WriteResolvConf { original, .. } => Some(Undo::RestoreResolvConf {
                original: original.clone(),
            }),
            Change::ConfigureResolved { name, link } => Some(Undo::RevertLink {
                name: name.clone(),
                ifindex: link.ifindex,
            }),
            Change::DeleteAddress { .. }
            | Change::DeleteRoute { .. }
            | Change::BindDns { .. }
            | Change::SetResolvedDomains { .. } => None,
        }
    }
}

/// One session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: u64,
    pub peer: Peer,
    pub spec: OpenSpec,
    pub ifindex: Option<u32>,
    pub addresses: Vec<IpNet>,
    pub routes: Vec<IpNet>,
    pub firewall: bool,
    /// Where the helper bound the session's DNS forwarder.
    pub dns_listen: Option<SocketAddr>,
    /// The forwarder sockets the helper bound, by kind (`true`: the TCP listener).
    pub dns_sockets: Vec<bool>,
    /// Whether the resolver file is this session's (rewritten to its forwarder).
    pub resolv_conf: bool,
    /// Whether systemd-resolved sends names to the session's forwarder (its link configured).
    pub resolved: bool,
    /// The domains systemd-resolved routes to the session's link (while `resolved`).
    pub link_domains: Vec<LinkDomain>,
    /// What undoes this session's changes, oldest first (the journal's content).
    pub undo: Vec<Undo>,
}

impl Session {
    pub fn info(&self) -> SessionInfo {
        SessionInfo {
            session: self.id,
            uid: self.peer.uid,
            pid: self.peer.pid,
            interface: self.spec.interface.clone(),
            state_dir: self.spec.state_dir.clone(),
            addresses: self.addresses.clone(),
            routes: self.routes.clone(),
            firewall: self.firewall,
            dns: self.resolv_conf || self.resolved,
        }
    }
}

/// A namespace a `resolvedLink` left out, and why (the rule's sentence).
pub type LeftOut = (LinkDomain, Refusal);

/// A session-scoped request, after `Open`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    CreateTun {
        mtu: u16,
    },
    SetAddress {
        address: IpNet,
    },
    /// Removes an address the session's link got from the helper.
    RemoveAddress {
        address: IpNet,
    },
    Routes {
        add: Vec<IpNet>,
        remove: Vec<IpNet>,
    },
    Firewall,
    /// A DNS forwarder socket on `listen` (UDP, or TCP with `tcp`).
    DnsSocket {
        listen: SocketAddr,
        tcp: bool,
    },
    /// Points the resolver file at the session's forwarder, with `search` first.
    ResolvConf {
        forwarder: IpAddr,
        search: Vec<String>,
    },
    /// systemd-resolved's DNS on the session's link: its forwarder, `domains`.
    ResolvedLink {
        domains: Vec<LinkDomain>,
    },
}

#[derive(Debug, Default)]
pub struct Registry {
    sessions: BTreeMap<u64, Session>,
    next: u64,
    limits: Limits,
    /// The helper's `--allow-route`: public prefixes members may route with their consent.
    allow_routes: Vec<IpNet>,
    /// The forwarder addresses the helper bound for each uid: the descriptors outlive the
    /// sessions, so an address counts until a probe finds it free ([`Registry::forget_dns`]).
    dns_bound: crate::journal::DnsBound,
}

/// Forwarder addresses of `127.77.0.0/24` one uid (other than root) may hold at once: each
/// session has one, and a user's sessions are at most [`Limits::per_uid`].
pub const MAX_DNS_ADDRESSES_PER_UID: usize = 8;

impl Registry {
    pub fn new(limits: Limits, allow_routes: Vec<IpNet>) -> Registry {
        Registry {
            sessions: BTreeMap::new(),
            next: 1,
            limits,
            allow_routes,
            dns_bound: BTreeMap::new(),
        }
    }

    /// Numbers new sessions after `last` (the highest a journal holds), so that a session never
    /// takes the journal file of one a previous helper could not fully revert.
    pub fn numbering_after(mut self, last: u64) -> Registry {
        self.next = self.next.max(last.saturating_add(1));
        self
    }

    /// Counts `bound` (what a previous helper handed out, from its record) as held; the next
    /// `dnsSocket` of a uid probes them and forgets the free ones.
    pub fn with_dns_bound(mut self, bound: crate::journal::DnsBound) -> Registry {
        self.dns_bound = bound;
        self
    }

    /// The forwarder addresses each uid holds, for the record a new helper reads.
    pub fn dns_bound(&self) -> &crate::journal::DnsBound {
        &self.dns_bound
    }

    pub fn get(&self, id: u64) -> Option<&Session> {
        self.sessions.get(&id)
    }

    /// The interfaces of every session and their addresses (left out of the machine's facts).
    pub fn links(&self) -> Vec<(String, Vec<IpNet>)> {
        self.sessions
            .values()
            .map(|s| (s.spec.interface.clone(), s.addresses.clone()))
            .collect()
    }

    /// The sessions `peer` may see: root all, others their own.
    pub fn visible(&self, peer: Peer) -> Vec<SessionInfo> {
        self.sessions
            .values()
            .filter(|s| peer.is_root() || s.peer.uid == peer.uid)
            .map(Session::info)
            .collect()
    }

    /// The session on `interface` that `peer` may end (its own, or any for root). Another
    /// user's session is "not found": others do not learn that it exists.
    pub fn endable(&self, peer: Peer, interface: &str) -> Result<u64, Refusal> {
        self.sessions
            .values()
            .find(|s| s.spec.interface == interface && (peer.is_root() || s.peer.uid == peer.uid))
            .map(|s| s.id)
            .ok_or_else(|| {
                refuse(
                    ErrorKind::NotFound,
                    format!(
                        "no session of yours on {} (kwg-helper list shows yours)",
                        rules::printable(interface)
                    ),
                )
            })
    }

    /// Begins a session for `peer`.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        &mut self,
        peer: Peer,
        version: u32,
        interface: String,
        state_dir: Option<PathBuf>,
        also_proxy: Vec<IpNet>,
        allow_conflicting: Vec<IpNet>,
    ) -> Result<u64, Refusal> {
        if version != VERSION {
            return Err(refuse(
                ErrorKind::Version,
                format!(
                    "kwg-helper speaks protocol version {VERSION}, the client {version}: install kwg and kwg-helper of the same release"
                ),
            ));
        }
        rules::check_interface(&interface).map_err(|m| refuse(ErrorKind::BadRequest, m))?;
        if let Some(dir) = &state_dir {
            let plain = dir.is_absolute()
                && dir.as_os_str().len() <= 256
                && dir
                    .components()
                    .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
            if !plain {
                return Err(refuse(
                    ErrorKind::BadRequest,
                    "the state directory must be an absolute path without . or .. of at most 256 bytes",
                ));
            }
        }
        if also_proxy.len() + allow_conflicting.len() > MAX_ROUTES {
            return Err(refuse(
                ErrorKind::Limit,
                format!(
                    "at most {MAX_ROUTES} prefixes of --also-proxy and --allow-conflicting-subnets"
                ),
            ));
        }
        if let Some(other) = self
            .sessions
            .values()
            .find(|s| s.spec.interface == interface)
        {
            return Err(refuse(
                ErrorKind::Conflict,
                format!(
                    "interface {interface} is in use by another kwg session (uid {}): pass --interface with another name, e.g. kwg{}",
                    other.peer.uid,
                    self.sessions.len()
                ),
            ));
        }
        let mine = self
            .sessions
            .values()
            .filter(|s| s.peer.uid == peer.uid)
            .count();
        if mine >= self.limits.per_uid || self.sessions.len() >= self.limits.total {
            return Err(refuse(
                ErrorKind::Limit,
                format!(
                    "too many kwg sessions (at most {} per user, {} in all): kwg leave one first",
                    self.limits.per_uid, self.limits.total
                ),
            ));
        }
        let allowed = &self.allow_routes;
        let consent = also_proxy
            .into_iter()
            .filter(|p| peer.is_root() || allowed.iter().any(|a| a.contains(p)))
            .collect();
        let id = self.next;
        self.next += 1;
        let spec = OpenSpec {
            interface,
            state_dir,
            consent,
            allow_conflicting,
        };
        self.sessions.insert(
            id,
            Session {
                id,
                peer,
                spec,
                ifindex: None,
                addresses: Vec::new(),
                routes: Vec::new(),
                firewall: false,
                dns_listen: None,
                dns_sockets: Vec::new(),
                resolv_conf: false,
                resolved: false,
                link_domains: Vec::new(),
                undo: Vec::new(),
            },
        );
        Ok(id)
    }

    /// The changes `op` makes for session `id`, or why not.
    pub fn plan(
        &self,
        id: u64,
        op: &Op,
        facts: &Facts,
        policy: &dyn Policy,
    ) -> Result<Vec<Change>, Refusal> {
        let s = self
            .sessions
            .get(&id)
            .ok_or_else(|| refuse(ErrorKind::BadRequest, "no session: send open first"))?;
        let name = s.spec.interface.clone();
        let need_link = || {
            if s.ifindex.is_none() {
                Err(refuse(
                    ErrorKind::BadRequest,
                    "the session has no link yet: send createTun first",
                ))
            } else {
                Ok(())
            }
        };
        match op {
            Op::CreateTun { mtu } => {
                if s.ifindex.is_some() {
                    return Err(refuse(
                        ErrorKind::BadRequest,
                        "the session has its link already",
                    ));
                }
                if !(576..=9000).contains(mtu) {
                    return Err(refuse(
                        ErrorKind::BadRequest,
                        "the MTU must be within 576..9000",
                    ));
                }
                // The firewall is loaded before the descriptor is handed over (the server sends
                // it once every change is made): no packet passes the link unfiltered.
                Ok(vec![
                    Change::CreateTun {
                        name: name.clone(),
                        mtu: *mtu,
                    },
                    Change::InstallFirewall {
                        table: crate::firewall::table_name(&name),
                        name,
                    },
                ])
            }
            Op::SetAddress { address } => {
                need_link()?;
                rules::check_address(address, facts, policy)
                    .map_err(|m| refuse(ErrorKind::Refused, m))?;
                rules::check_address_routes(address, &name, &self.others(id), facts)
                    .map_err(|m| refuse(ErrorKind::Conflict, m))?;
                if let Some(o) = self.holder(id, |o| {
                    o.addresses.iter().any(|a| a.addr() == address.addr())
                        || o.routes.iter().any(|r| r.contains(&address.addr()))
                }) {
                    return Err(self.conflict(o, format!("address {address}")));
                }
                let mut out = vec![Change::AddAddress {
                    name: name.clone(),
                    address: *address,
                }];
                // One tunnel address per family (a dual-stack session has an IPv6 one too):
                // the new one replaces the session's address of its own family only.
                let same_family = |a: &IpNet| a.addr().is_ipv4() == address.addr().is_ipv4();
                let replaced = s
                    .addresses
                    .iter()
                    .filter(|a| *a != address && same_family(a));
                out.extend(replaced.map(|a| Change::DeleteAddress {
                    name: name.clone(),
                    address: *a,
                }));
                Ok(out)
            }
            Op::RemoveAddress { address } => {
                need_link()?;
                // Only an address this session's link got from the helper (journalled with
                // it): never the machine's, nor another session's.
                if !s.addresses.contains(address) {
                    return Err(refuse(
                        ErrorKind::NotFound,
                        format!(
                            "refused to remove address {address}: kwg-helper did not give it to this session's link {name} (kwg-helper list shows the session's addresses)"
                        ),
                    ));
                }
                Ok(vec![Change::DeleteAddress {
                    name,
                    address: *address,
                }])
            }
            Op::Routes { add, remove } => {
                need_link()?;
                let after = s.routes.len() + add.len();
                if add.len() + remove.len() > MAX_ROUTES || after > MAX_ROUTES {
                    return Err(refuse(
                        ErrorKind::Limit,
                        format!("at most {MAX_ROUTES} routes per session"),
                    ));
                }
                let sessions = self.others(id);
                for r in add {
                    let r = r.trunc();
                    rules::check_route(&r, facts, policy, &s.spec.consent)
                        .map_err(|m| refuse(ErrorKind::Refused, m))?;
                    if let Some(o) = self.holder(id, |o| {
                        o.routes.iter().any(|x| x.contains(&r) || r.contains(x))
                    }) {
                        return Err(self.conflict(o, format!("route {r}")));
                    }
                    rules::check_machine_routes(
                        &r,
                        &name,
                        &sessions,
                        facts,
                        // A normal user's exemption is ignored: only root may route over
                        // the machine's own networks.
                        s.peer
                            .is_root()
                            .then_some(s.spec.allow_conflicting.as_slice()),
                    )
                    .map_err(|m| refuse(ErrorKind::Conflict, m))?;
                }
                let mut out: Vec<Change> = remove
                    .iter()
                    .map(|r| r.trunc())
                    .filter(|r| s.routes.contains(r))
                    .map(|route| Change::DeleteRoute {
                        name: name.clone(),
                        route,
                    })
                    .collect();
                out.extend(add.iter().map(|r| Change::AddRoute {
                    name: name.clone(),
                    route: r.trunc(),
                }));
                Ok(out)
            }
            Op::DnsSocket { listen, tcp } => {
                need_link()?;
                self.plan_dns_socket(s, *listen, *tcp, facts)
            }
            Op::ResolvConf { forwarder, search } => {
                need_link()?;
                self.plan_resolv_conf(s, *forwarder, search, facts, policy)
            }
            Op::ResolvedLink { domains } => {
                need_link()?;
                self.plan_resolved_link(s, domains, facts, policy)
            }
            Op::Firewall => {
                need_link()?;
                if s.firewall {
                    return Ok(Vec::new());
                }
                Ok(vec![Change::InstallFirewall {
                    table: crate::firewall::table_name(&name),
                    name,
                }])
            }
        }
    }

    /// The forwarder's sockets: port 53 of an address of 127.77.0.0/24 (the rule), one
    /// address per session and one UDP socket and one TCP listener on it, no more (each
    /// descriptor outlives the session: nothing would undo a hoard of them).
    fn plan_dns_socket(
        &self,
        s: &Session,
        listen: SocketAddr,
        tcp: bool,
        facts: &Facts,
    ) -> Result<Vec<Change>, Refusal> {
        rules::check_dns_listen(listen, facts).map_err(|m| refuse(ErrorKind::Refused, m))?;
        if s.dns_listen.is_some_and(|l| l != listen) {
            return Err(refuse(
                ErrorKind::BadRequest,
                "the session's DNS forwarder listens on one address",
            ));
        }
        if s.dns_sockets.contains(&tcp) {
            return Err(refuse(
                ErrorKind::BadRequest,
                format!(
                    "the session already has its DNS forwarder's {} socket on {listen} (one per session)",
                    if tcp { "TCP" } else { "UDP" }
                ),
            ));
        }
        if let Some(o) = self.holder(s.id, |o| o.dns_listen == Some(listen)) {
            return Err(self.conflict(o, format!("DNS listen address {listen}")));
        }
        let held = self.dns_bound.get(&s.peer.uid);
        let count = held.map_or(0, |h| h.len());
        let new = !held.is_some_and(|h| h.contains(&listen));
        if !s.peer.is_root() && new && count >= MAX_DNS_ADDRESSES_PER_UID {
            return Err(refuse(
                ErrorKind::Limit,
                format!(
                    "refused DNS listen address {listen}: uid {} holds the forwarder sockets of {count} addresses of 127.77.0.0/24 already (at most {MAX_DNS_ADDRESSES_PER_UID} per user): end one of your kwg sessions, or the process still holding a forwarder's sockets",
                    s.peer.uid
                ),
            ));
        }
        Ok(vec![Change::BindDns { listen, tcp }])
    }

    /// The forwarder addresses recorded for `uid` that no live session of that uid holds: the
    /// server probes whether something still holds them (the descriptors it handed out).
    pub fn dns_to_probe(&self, uid: u32) -> Vec<SocketAddr> {
        let live: Vec<SocketAddr> = self
            .sessions
            .values()
            .filter(|s| s.peer.uid == uid)
            .filter_map(|s| s.dns_listen)
            .collect();
        self.dns_bound
            .get(&uid)
            .into_iter()
            .flatten()
            .filter(|a| !live.contains(a))
            .copied()
            .collect()
    }

    /// Forgets `free` (addresses a probe found nobody holding) from `uid`'s forwarder addresses.
    pub fn forget_dns(&mut self, uid: u32, free: &[SocketAddr]) {
        if let Some(set) = self.dns_bound.get_mut(&uid) {
            set.retain(|a| !free.contains(a));
            if set.is_empty() {
                self.dns_bound.remove(&uid);
            }
        }
    }

    /// The resolver file pointed at the session's own forwarder, with search domains the
    /// rules accept; one session at a time, never over another kwg's version of the file.
    fn plan_resolv_conf(
        &self,
        s: &Session,
        forwarder: IpAddr,
        search: &[String],
        facts: &Facts,
        policy: &dyn Policy,
    ) -> Result<Vec<Change>, Refusal> {
        if s.dns_listen.map(|l| l.ip()) != Some(forwarder) {
            return Err(refuse(
                ErrorKind::Refused,
                format!(
                    "refused nameserver {forwarder}: the resolver file points only at the forwarder kwg-helper bound for this session (send dnsSocket first)"
                ),
            ));
        }
        if s.resolv_conf {
            return Err(refuse(
                ErrorKind::BadRequest,
                "the session holds the resolver file already",
            ));
        }
        if search.len() > rules::MAX_SEARCH {
            return Err(refuse(
                ErrorKind::Limit,
                format!("at most {} search domains", rules::MAX_SEARCH),
            ));
        }
        for d in search {
            rules::check_search(d, &facts.resolv_conf, policy)
                .map_err(|m| refuse(ErrorKind::Refused, m))?;
        }
        if let Some(o) = self.holder(s.id, |o| o.resolv_conf) {
            return Err(self.conflict(o, "the resolver file".into()));
        }
        if kwg_session::dns::resolvconf::is_ours(&facts.resolv_conf) {
            return Err(refuse(
                ErrorKind::Conflict,
                "the resolver file is already rewritten by another kwg join (a root one?): kwg leave that one first",
            ));
        }
        let contents = kwg_session::dns::resolvconf::render(&facts.resolv_conf, forwarder, search);
        Ok(vec![Change::WriteResolvConf {
            original: facts.resolv_conf.clone(),
            contents,
        }])
    }

    /// systemd-resolved's DNS on the session's own link only, pointed at the forwarder the
    /// helper bound for it, with domains the rules accept ([`crate::linkdns`]); never the
    /// default route. A session whose link is configured already gets its domains replaced.
    fn plan_resolved_link(
        &self,
        s: &Session,
        domains: &[LinkDomain],
        facts: &Facts,
        policy: &dyn Policy,
    ) -> Result<Vec<Change>, Refusal> {
        let (Some(ifindex), Some(server)) = (s.ifindex, s.dns_listen) else {
            return Err(refuse(
                ErrorKind::Refused,
                "refused systemd-resolved DNS: the link's server is only the forwarder kwg-helper bound for this session (send dnsSocket first)",
            ));
        };
        if domains.is_empty() {
            return Err(refuse(
                ErrorKind::BadRequest,
                "no domains for the link: without them systemd-resolved would send no query to kwg",
            ));
        }
        if domains.len() > crate::linkdns::MAX_LINK_DOMAINS {
            return Err(refuse(
                ErrorKind::Limit,
                format!(
                    "at most {} domains on a link",
                    crate::linkdns::MAX_LINK_DOMAINS
                ),
            ));
        }
        for d in domains {
            crate::linkdns::check_link_domain(d, &s.routes, policy)
                .map_err(|m| refuse(ErrorKind::Refused, m))?;
        }
        self.check_link_overlap(s, domains, facts)?;
        let domains = domains.to_vec();
        Ok(vec![match s.resolved {
            true => Change::SetResolvedDomains { ifindex, domains },
            false => Change::ConfigureResolved {
                name: s.spec.interface.clone(),
                link: LinkConfig {
                    ifindex,
                    server,
                    domains,
                },
            },
        }])
    }

    /// Splits the domains of a `resolvedLink` for session `id` into those to plan and the
    /// namespaces (single-label routing domains, `~box`) the rules refuse, each with why: such
    /// a namespace is left out rather than refusing the request, which would cost the session
    /// every domain (a namespace `box` next to the LAN's `fritz.box`). Any other domain the
    /// rules refuse still refuses the request ([`Registry::plan`]), and so does a request whose
    /// every domain would be left out.
    pub fn leave_out_namespaces(
        &self,
        id: u64,
        domains: Vec<LinkDomain>,
        facts: &Facts,
        policy: &dyn Policy,
    ) -> (Vec<LinkDomain>, Vec<LeftOut>) {
        let Some(s) = self.sessions.get(&id) else {
            return (domains, Vec::new());
        };
        let (mut keep, mut out) = (Vec::new(), Vec::new());
        for d in domains {
            let namespace = d.routing_only && !d.name.trim_end_matches('.').contains('.');
            let why = crate::linkdns::check_link_domain(&d, &s.routes, policy)
                .map_err(|m| refuse(ErrorKind::Refused, m))
                .and_then(|()| self.check_link_overlap(s, std::slice::from_ref(&d), facts));
            match why {
                Err(r) if namespace => out.push((d, r)),
                _ => keep.push(d),
            }
        }
        if keep.is_empty() {
            keep.extend(out.drain(..).map(|(d, _)| d));
        }
        (keep, out)
    }

    /// Refuses a domain equal to, under or above one on another session's link: systemd-resolved
    /// routes a name to the link with the longest matching domain, so `~emojivoto.svc.cluster.local`
    /// on one link would take those names from the session whose link has `~cluster.local`.
    /// Other links of systemd-resolved (a VPN's `~eng.corp.internal`, the LAN's `home.arpa`,
    /// resolved's global domains) count the same: a session never takes their names.
    fn check_link_overlap(
        &self,
        s: &Session,
        domains: &[LinkDomain],
        facts: &Facts,
    ) -> Result<(), Refusal> {
        let norm = |d: &LinkDomain| d.name.trim_matches('.').to_ascii_lowercase();
        let related = |a: &str, b: &str| {
            !a.is_empty()
                && !b.is_empty()
                && (a == b || a.ends_with(&format!(".{b}")) || b.ends_with(&format!(".{a}")))
        };
        let kwg_links: Vec<u32> = self.sessions.values().filter_map(|o| o.ifindex).collect();
        for d in domains {
            let name = norm(d);
            let other = facts
                .resolved_domains
                .iter()
                .filter(|(i, _)| !kwg_links.contains(i))
                .find(|(_, x)| related(&name, &norm(x)));
            if let Some((i, theirs)) = other {
                let whose = match i {
                    0 => "systemd-resolved's global domains".to_string(),
                    _ => format!("link {i} in systemd-resolved (resolvectl domain lists it)"),
                };
                return Err(refuse(
                    ErrorKind::Conflict,
                    format!(
                        "refused link domain {}: it overlaps {theirs} of {whose}, whose names systemd-resolved would send to kwg instead (the longest matching domain wins); join as root for a cluster domain that overlaps the machine's own",
                        crate::rules::printable(&d.to_string()),
                    ),
                ));
            }
        }
        for d in domains {
            let name = norm(d);
            let found = self
                .sessions
                .values()
                .filter(|o| o.id != s.id && o.resolved)
                .find_map(|o| {
                    o.link_domains
                        .iter()
                        .find(|x| related(&name, &norm(x)))
                        .map(|x| (o, x))
                });
            if let Some((o, theirs)) = found {
                return Err(refuse(
                    ErrorKind::Conflict,
                    format!(
                        "refused link domain {}: it overlaps {theirs} on the link of the kwg session on {} (uid {}), whose names systemd-resolved would send to one forwarder only; that session must leave first (kwg leave by its user, or sudo kwg leave)",
                        crate::rules::printable(&d.to_string()),
                        o.spec.interface,
                        o.peer.uid
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The interfaces of the sessions other than `id`.
    fn others(&self, id: u64) -> Vec<&str> {
        self.sessions
            .values()
            .filter(|o| o.id != id)
            .map(|o| o.spec.interface.as_str())
            .collect()
    }

    fn holder(&self, id: u64, f: impl Fn(&Session) -> bool) -> Option<&Session> {
        self.sessions.values().find(|o| o.id != id && f(o))
    }

    fn conflict(&self, other: &Session, what: String) -> Refusal {
        refuse(
            ErrorKind::Conflict,
            format!(
                "refused {what}: it overlaps what the kwg session on {} (uid {}) holds; leave that session first or route another subnet",
                other.spec.interface, other.peer.uid
            ),
        )
    }

    /// Records the undo of `change` before it is made (the caller journals the session first).
    pub fn journalled(&mut self, id: u64, change: &Change) {
        if let (Some(s), Some(u)) = (self.sessions.get_mut(&id), change.undo())
            && !s.undo.contains(&u)
        {
            s.undo.push(u);
        }
    }

    /// Records that `change` was made (`ifindex` for a new link).
    pub fn applied(&mut self, id: u64, change: &Change, ifindex: Option<u32>) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        match change {
            Change::CreateTun { name, .. } => {
                s.ifindex = ifindex;
                for u in &mut s.undo {
                    if let Undo::DeleteLink {
                        name: n,
                        ifindex: i,
                    } = u
                        && n == name
                    {
                        *i = ifindex;
                    }
                }
            }
            Change::AddAddress { address, .. } => {
                if !s.addresses.contains(address) {
                    s.addresses.push(*address)
                }
            }
            Change::DeleteAddress { name, address } => {
                s.addresses.retain(|a| a != address);
                let u = Undo::DeleteAddress {
                    name: name.clone(),
                    address: *address,
                };
                s.undo.retain(|x| *x != u);
            }
            Change::AddRoute { route, .. } => {
                if !s.routes.contains(route) {
                    s.routes.push(*route)
                }
            }
            Change::DeleteRoute { name, route } => {
                s.routes.retain(|r| r != route);
                let u = Undo::DeleteRoute {
                    name: name.clone(),
                    route: *route,
                };
                s.undo.retain(|x| *x != u);
            }
            Change::InstallFirewall { .. } => s.firewall = true,
            Change::BindDns { listen, tcp } => {
                s.dns_listen = Some(*listen);
                s.dns_sockets.push(*tcp);
                let uid = s.peer.uid;
                self.dns_bound.entry(uid).or_default().insert(*listen);
            }
            Change::WriteResolvConf { .. } => s.resolv_conf = true,
            Change::ConfigureResolved { link, .. } => {
                s.resolved = true;
                s.link_domains = link.domains.clone();
            }
            Change::SetResolvedDomains { domains, .. } => s.link_domains = domains.clone(),
        }
    }

    /// Takes the session's DNS undo (the resolver file's, systemd-resolved's link) out of it
    /// (the user side ends DNS before the rest of the session), to be done now.
    pub fn take_dns_undo(&mut self, id: u64) -> Vec<Undo> {
        let Some(s) = self.sessions.get_mut(&id) else {
            return Vec::new();
        };
        s.resolv_conf = false;
        s.resolved = false;
        let (dns, rest) = std::mem::take(&mut s.undo)
            .into_iter()
            .partition(|u| matches!(u, Undo::RestoreResolvConf { .. } | Undo::RevertLink { .. }));
        s.undo = rest;
        dns
    }

    /// Gives back the part of a taken resolver-file undo that failed: the file stays this
    /// session's, so a later journal write keeps the undo and the session's end retries it.
    pub fn return_dns_undo(&mut self, id: u64, left: Vec<Undo>) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        for u in &left {
            match u {
                Undo::RevertLink { .. } => s.resolved = true,
                _ => s.resolv_conf = true,
            }
        }
        for u in left {
            if !s.undo.contains(&u) {
                s.undo.push(u);
            }
        }
    }

    /// Ends session `id`: its undo steps, newest first.
    pub fn close(&mut self, id: u64) -> Vec<Undo> {
        let mut undo = self
            .sessions
            .remove(&id)
            .map(|s| s.undo)
            .unwrap_or_default();
        undo.reverse();
        undo
    }
}

#[cfg(test)]
mod tests;
