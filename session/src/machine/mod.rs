//! The laptop daemon's session core, sans I/O: events and `now` in, actions out, the next
//! deadline from [`Session::poll_timeout`]. Bring-up is a fixed sequence of states; every
//! change to the machine or the cluster has its [`Undo`] recorded (and saved, action
//! [`Action::Save`]) before the change is asked for, so a failure, a timeout or a signal at any
//! step undoes exactly the steps already taken, in reverse. The driver (the CLI's
//! `driver`) executes the actions and feeds their results back, its failures as
//! [`Error::Step`].

mod dns;
pub mod health;
pub mod plan;
mod serving;
mod teardown;
#[cfg(test)]
mod tests;
mod types;
mod userspace;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::SessionConfig;
use crate::error::Error;
use crate::journal::{LeftBehind, State, Undo};
use crate::trust;
pub use plan::{DnsPlan, DnsTarget, Facts, Plan};
pub use serving::credentials_rejected;
pub use types::{Action, Event, Lease, LeaseFailure, Phase, Registration};

/// While there is no handshake: when to move to a new UDP source port and restart the
/// handshake (a stale conntrack entry for the old 5-tuple can swallow every retry). A handshake
/// answer takes one round trip, far below these.
pub const REBIND_FIRST: Duration = Duration::from_millis(1000);
pub const REBIND_EVERY: Duration = Duration::from_millis(2000);
/// How long queries through systemd-resolved's stub may take to reach kwg before mode auto
/// falls back to the resolver file (Telepresence waits 2 s too).
pub const RESOLVED_CHECK: Duration = Duration::from_secs(2);
/// Retry of a lease renewal that hit a conflict (someone else wrote the Secret meanwhile).
pub const RENEW_CONFLICT_RETRY: Duration = Duration::from_secs(1);
/// First back-off after a failed renewal (doubles up to a tenth of the ttl).
pub const RENEW_BACKOFF: Duration = Duration::from_secs(2);

pub struct Session {
    config: SessionConfig,
    template: State,
    /// Where the resolver file's original is kept.
    resolv_backup: std::path::PathBuf,
    phase: Phase,
    deadline: Instant,
    actions: VecDeque<Action>,
    /// A long action is in flight.
    in_flight: bool,
    plan: Option<Plan>,
    state: Option<State>,
    next_rebind: Option<Instant>,
    /// The tunnel interface's index, once created.
    ifindex: Option<u32>,
    lease: Lease,
    health: Option<health::Health>,
    /// Following a new gateway: its tunnel IP for this machine is to be read again.
    readdress: Option<serving::Readdress>,
    /// In mode auto with resolved: when the probe through resolved's stub gives up and the
    /// resolver file is used instead.
    resolved_check: Option<Instant>,
    /// Why the session ends badly (the first error); `None` after a clean `leave`.
    error: Option<Error>,
    undo_error: Option<Error>,
    /// Undo steps that failed, kept in the journal for `kwg leave`.
    kept: Vec<Undo>,
    removed: Vec<String>,
    /// The peer Secret teardown could not delete (the lease collects it).
    left_behind: Option<LeftBehind>,
}

impl Session {
    /// A session for `config`, starting at `now`. `template` is the state file's fixed part
    /// (kubeconfig, pid, time); its `undo` must be empty.
    pub fn new(
        config: SessionConfig,
        template: State,
        resolv_backup: std::path::PathBuf,
        now: Instant,
    ) -> Session {
        let deadline = now + config.timeout;
        Session {
            config,
            template,
            resolv_backup,
            phase: Phase::Inspecting,
            deadline,
            actions: VecDeque::from([Action::Inspect]),
            in_flight: true,
            plan: None,
            state: None,
            next_rebind: None,
            ifindex: None,
            lease: Lease::default(),
            health: None,
            readdress: None,
            resolved_check: None,
            error: None,
            undo_error: None,
            kept: Vec::new(),
            removed: Vec::new(),
            left_behind: None,
        }
    }

    /// After teardown: the peer Secret that could not be deleted, if any.
    pub fn left_behind(&self) -> Option<&LeftBehind> {
        self.left_behind.as_ref()
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }
    pub fn state(&self) -> Option<&State> {
        self.state.as_ref()
    }
    pub fn lease(&self) -> &Lease {
        &self.lease
    }
    pub fn plan(&self) -> Option<&Plan> {
        self.plan.as_ref()
    }

    /// The next action to execute.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Session::handle_timeout`] must be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::TearingDown | Phase::Done => None,
            Phase::Serving => {
                let lease = self.lease.next.filter(|_| !self.lease.in_flight);
                let health = self.health.as_ref().map(|h| h.next);
                lease.into_iter().chain(health).min()
            }
            Phase::AwaitingHandshake => Some(
                self.next_rebind
                    .map_or(self.deadline, |r| r.min(self.deadline)),
            ),
            Phase::ProbingDns => Some(
                self.resolved_check
                    .map_or(self.deadline, |r| r.min(self.deadline)),
            ),
            _ => Some(self.deadline),
        }
    }

    /// How the session ended: `Ok(removed)` after a clean leave, else the first error.
    pub fn outcome(&mut self) -> Result<Vec<String>, Error> {
        match (self.error.take(), self.undo_error.take()) {
            (Some(e), _) | (None, Some(e)) => Err(e),
            (None, None) => Ok(std::mem::take(&mut self.removed)),
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        match self.phase {
            Phase::Serving => {
                if self.lease.next.is_some_and(|t| now >= t) && !self.lease.in_flight {
                    // The lease comes first: a wait for the new tunnel IP in flight is
                    // dropped, and started again once the renewal is answered.
                    if let Some(r) = self.readdress.as_mut().filter(|r| r.waiting) {
                        r.waiting = false;
                        self.actions.push_back(Action::Cancel);
                    }
                    self.renew();
                }
                if let Some(h) = self.health.as_mut().filter(|h| now >= h.next) {
                    h.next = now + health::CHECK_EVERY;
                    self.actions.push_back(Action::ReadStats);
                }
            }
            Phase::TearingDown | Phase::Done => {}
            phase if now >= self.deadline => {
                let err = self.timeout_error(phase);
                self.fail(err);
            }
            Phase::AwaitingHandshake => {
                if let (Some(t), Some(plan)) = (self.next_rebind, &self.plan)
                    && now >= t
                {
                    self.actions.push_back(Action::Rebind {
                        gateway: plan.gateway.clone(),
                    });
                    self.next_rebind = Some(t + REBIND_EVERY);
                }
            }
            Phase::ProbingDns if self.resolved_check.is_some_and(|t| now >= t) => {
                self.fall_back();
            }
            _ => {}
        }
    }

    fn timeout_error(&self, phase: Phase) -> Error {
        let secs = self.config.timeout.as_secs();
        match (phase, &self.plan) {
            (Phase::WaitingTunnelIp, Some(p)) => Error::NoTunnelIp {
                peer: p.secret(),
                secs,
                detail: String::new(),
            },
            (Phase::AwaitingHandshake, Some(p)) => Error::GatewayUdp {
                endpoints: p
                    .gateway
                    .endpoint
                    .map(|e| e.to_string())
                    .unwrap_or_default(),
                secs,
            },
            (Phase::ProbingDns, Some(p)) => Error::DnsCheck {
                name: p.probe_name.clone(),
                secs,
            },
            (phase, _) => Error::JoinTimeout {
                step: format!("{phase:?}"),
                secs,
            },
        }
    }

    pub fn handle(&mut self, event: Event, now: Instant) {
        match event {
            Event::Leave | Event::Signal => return self.teardown(),
            Event::Failed(e) => {
                self.in_flight = false;
                if self.phase != Phase::Serving {
                    return self.fail(e);
                }
                if let Some(r) = self.readdress.as_mut().filter(|r| r.waiting) {
                    r.waiting = false;
                    return tracing::error!(error = %e, "reading the tunnel IP the new gateway assigned failed; trying again after the next lease renewal");
                }
                if self.lease.reregistering || self.lease.in_flight {
                    self.lease.reregistering = false;
                    return self.lease_result(Event::LeaseFailed(LeaseFailure::Other(e)), now);
                }
                // A change while serving (routes, gateway peer) failed: keep the tunnel.
                return tracing::error!(error = %e, "a change while serving failed");
            }
            Event::Undone(what) => return self.undone(what, None),
            Event::UndoFailed(e) => return self.undone(None, Some(e)),
            Event::LeaseRenewed(_) | Event::LeaseFailed(_) if self.phase == Phase::Serving => {
                return self.lease_result(event, now);
            }
            Event::Stats { tx_bytes, rx_bytes } if self.phase == Phase::Serving => {
                return self.stats(tx_bytes, rx_bytes, now);
            }
            Event::GatewayInfo(info) if self.phase == Phase::Serving => {
                return self.gateway_changed(*info, now);
            }
            Event::TunnelIp(ip)
                if self.phase == Phase::Serving
                    && self.readdress.as_ref().is_some_and(|r| r.waiting) =>
            {
                return self.readdressed(ip, now);
            }
            _ => {}
        }
        if self.lease.reregistering && self.phase == Phase::Serving {
            return self.reregistered(event, now);
        }
        self.in_flight = false;
        match (self.phase, event) {
            (Phase::Inspecting, Event::Inspected(facts)) => self.inspected(*facts),
            (Phase::Registering, Event::Registered(r)) => {
                self.registered(r);
                self.long(Phase::WaitingTunnelIp, self.wait_tunnel_ip(None));
                let msg = format!("Registered peer {}, waiting for its tunnel IP", self.peer());
                self.actions.push_front(Action::Progress(msg));
            }
            (Phase::WaitingTunnelIp, Event::TunnelIp(ip)) => {
                let plan = self.plan.as_ref().expect("planned");
                if let Err(e) = trust::check_tunnel_ip(ip, &plan.info, &plan.machine) {
                    return self.fail(e);
                }
                self.journal(|s| s.tunnel_ip = Some(ip));
                if self.config.userspace {
                    return self.start_userspace(ip);
                }
                let name = self.config.interface.clone();
                self.record(Undo::DeleteInterface {
                    name: name.clone(),
                    ifindex: None,
                });
                self.step(Phase::CreatingDevice, Action::CreateDevice { name });
            }
            (Phase::CreatingDevice, Event::DeviceCreated { ifindex }) => {
                self.ifindex = Some(ifindex);
                self.journal(|s| {
                    for u in &mut s.undo {
                        if let Undo::DeleteInterface { ifindex: i, .. } = u {
                            *i = Some(ifindex);
                        }
                    }
                });
                let (plan, state) = (self.plan.as_ref().expect("planned"), self.state());
                let action = Action::ConfigureNetwork {
                    name: self.config.interface.clone(),
                    address: plan::tunnel_address(
                        state.and_then(|s| s.tunnel_ip).expect("assigned"),
                    ),
                    routes: plan.routes.iter().map(|r| r.subnet).collect(),
                    gateway: plan.gateway.clone(),
                };
                self.step(Phase::ConfiguringNetwork, action);
            }
            (Phase::ConfiguringNetwork, Event::NetworkConfigured) => {
                let interface = self.config.interface.clone();
                let table = crate::firewall::table_name(&interface);
                self.record(Undo::RemoveFirewall {
                    table: table.clone(),
                });
                self.step(
                    Phase::InstallingFirewall,
                    Action::InstallFirewall { table, interface },
                );
            }
            (Phase::InstallingFirewall, Event::FirewallInstalled) => self.network_configured(now),
            (Phase::CreatingDevice, Event::UserspaceStarted(proxy)) => {
                self.userspace_started(proxy, now)
            }
            (Phase::StartingDns, Event::ForwarderStarted(addr)) => self.forwarder_started(addr),
            (Phase::WritingResolvConf, Event::ResolvConfWritten) => self.verify(now),
            (Phase::ConfiguringResolved, Event::ResolvedConfigured) => self.verify(now),
            (Phase::AwaitingHandshake, Event::Handshake) => self.handshake_done(now),
            (Phase::ProbingDns, Event::DnsAnswered) => self.serve(now),
            (Phase::RevertingResolved, Event::ResolvedReverted) => self.resolved_reverted(),
            (phase, event) => tracing::debug!(?phase, ?event, "event ignored in this phase"),
        }
    }

    fn peer(&self) -> String {
        self.plan
            .as_ref()
            .map(|p| p.peer.name.to_string())
            .unwrap_or_default()
    }

    fn inspected(&mut self, facts: Facts) {
        let plan = match plan::plan(&self.config, &facts, self.resolv_backup.clone()) {
            Ok(p) => p,
            Err(e) => return self.fail(e),
        };
        let mut state = self.template.clone();
        state.peer = plan.peer.name.clone();
        state.context = facts.context.clone();
        state.server = facts.server.clone();
        state.user = facts.user.clone();
        state.namespace = plan.namespace.clone();
        state.gateway_endpoint = Some(facts.endpoint.to_string());
        state.gateway_key = Some(facts.info.public_key.to_string());
        state.gateway_admin = Some(plan.gateway_admin);
        state.routes = plan.routes.clone();
        if facts.namespaces.is_none() {
            self.actions.push_back(Action::Progress(format!(
                "Could not check that namespace {} exists: you may not list namespaces",
                plan.namespace
            )));
        }
        self.actions.push_back(Action::Progress(format!(
            "Connected to context {}, namespace {} ({})",
            facts.context.as_deref().unwrap_or("(current)"),
            plan.namespace,
            facts.server
        )));
        let spec = plan.peer.clone();
        self.state = Some(state);
        self.plan = Some(plan);
        self.record(Undo::DeletePeer {
            namespace: self.config.kwg_namespace.clone(),
            secret: spec.secret_name(),
            uid: None,
            public_key: Some(spec.public_key.to_string()),
            // Known once the driver wrote the Secret (`Registered`).
            lease_expires: None,
        });
        let ttl = self.config.ttl;
        self.long(
            Phase::Registering,
            Action::Register {
                spec: Box::new(spec),
                ttl,
            },
        );
    }

    /// Journals the registered Secret's uid and lease end: from now on undo deletes that very
    /// object, never another machine's Secret of the same name.
    pub(super) fn registered(&mut self, r: Registration) {
        self.journal(|s| {
            for u in &mut s.undo {
                if let Undo::DeletePeer {
                    uid, lease_expires, ..
                } = u
                {
                    *uid = Some(r.uid.clone()).filter(|u| !u.is_empty()).or(uid.take());
                    *lease_expires = Some(r.lease_expires);
                }
            }
        });
    }

    fn wait_tunnel_ip(&self, within: Option<ipnet::Ipv4Net>) -> Action {
        Action::WaitTunnelIp {
            namespace: self.config.kwg_namespace.clone(),
            secret: self.plan.as_ref().expect("planned").secret(),
            within,
        }
    }

    fn network_configured(&mut self, now: Instant) {
        let plan = self.plan.as_ref().expect("planned");
        let ip = self.state().and_then(|s| s.tunnel_ip).expect("assigned");
        let msg = format!(
            "Tunnel {} up as {ip} to gateway {}, {} routes",
            self.config.interface,
            plan.gateway
                .endpoint
                .map(|e| e.to_string())
                .unwrap_or_default(),
            plan.routes.len()
        );
        self.actions.push_back(Action::Progress(msg));
        match plan.dns.clone() {
            Some(dns) => {
                self.record(Undo::StopForwarder);
                self.step(
                    Phase::StartingDns,
                    Action::StartForwarder {
                        listen: dns.listen,
                        config: Box::new(dns.forwarder),
                    },
                );
            }
            None => self.verify(now),
        }
    }

    pub(super) fn verify(&mut self, now: Instant) {
        let plan = self.plan.as_ref().expect("planned");
        let poke = match plan.cluster_dns {
            Some(dns) => dns,
            None => plan.gateway_admin,
        };
        let action = Action::AwaitHandshake {
            gateway: plan.gateway.clone(),
            poke,
        };
        self.next_rebind = Some(now + REBIND_FIRST);
        self.long(Phase::AwaitingHandshake, action);
    }

    fn handshake_done(&mut self, now: Instant) {
        self.next_rebind = None;
        let plan = self.plan.as_ref().expect("planned");
        let resolved = plan.dns.as_ref().is_some_and(|d| {
            matches!(d.target, DnsTarget::Resolved { .. }) && d.fallback.is_some()
        });
        self.resolved_check = resolved.then_some(now + RESOLVED_CHECK);
        match plan.probe_dns {
            Some(server) => {
                let name = plan.probe_name.clone();
                self.long(Phase::ProbingDns, Action::ProbeDns { server, name });
            }
            None => self.serve(now),
        }
    }

    /// Records `undo` in the journal and saves it: before the change it undoes is asked for.
    fn record(&mut self, undo: Undo) {
        self.journal(|s| s.undo.push(undo));
    }

    /// Changes the state and saves it.
    fn journal(&mut self, change: impl FnOnce(&mut State)) {
        if let Some(s) = self.state.as_mut() {
            change(s);
            self.actions.push_back(Action::Save(Box::new(s.clone())));
        }
    }

    fn step(&mut self, phase: Phase, action: Action) {
        self.phase = phase;
        self.actions.push_back(action);
    }

    fn long(&mut self, phase: Phase, action: Action) {
        self.in_flight = true;
        self.step(phase, action);
    }
}
