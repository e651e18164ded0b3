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
mod stage;
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
pub use plan::{DnsPlan, DnsTarget, Facts, Plan};
pub use serving::credentials_rejected;
use stage::{Joined, Serving, Stage, Step, Tun};
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
    /// Where the session is, with what exists there.
    stage: Stage,
    deadline: Instant,
    actions: VecDeque<Action>,
    /// A long action is in flight.
    in_flight: bool,
    /// Why the session ends badly (the first error); `None` after a clean `leave`.
    error: Option<Error>,
    undo_error: Option<Error>,
    /// Undo steps that failed, kept in the journal for `kwg leave`.
    kept: Vec<Undo>,
    removed: Vec<String>,
    /// The peer Secret teardown could not delete (the lease collects it).
    left_behind: Option<LeftBehind>,
}

/// The serving part of a stage, if it serves (a function of the field alone, so the rest of
/// the session stays free to use meanwhile).
fn serving(stage: &mut Stage) -> Option<&mut Serving> {
    match stage {
        Stage::Joined(j) => match &mut j.step {
            Step::Serving(s) => Some(s),
            _ => None,
        },
        _ => None,
    }
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
            stage: Stage::Inspecting,
            deadline,
            actions: VecDeque::from([Action::Inspect]),
            in_flight: true,
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
        self.stage.phase()
    }
    /// The journal, once planned.
    pub fn state(&self) -> Option<&State> {
        match &self.stage {
            Stage::Inspecting => None,
            Stage::Joined(j) => Some(&j.journal),
            Stage::TearingDown(s) | Stage::Done(s) => s.as_ref(),
        }
    }
    /// The lease, while serving.
    pub fn lease(&self) -> Option<&Lease> {
        self.serving().map(|s| &s.lease)
    }
    /// The plan, from planning until teardown.
    pub fn plan(&self) -> Option<&Plan> {
        self.joined().map(|j| &j.plan)
    }

    fn joined(&self) -> Option<&Joined> {
        match &self.stage {
            Stage::Joined(j) => Some(j),
            _ => None,
        }
    }
    fn joined_mut(&mut self) -> Option<&mut Joined> {
        match &mut self.stage {
            Stage::Joined(j) => Some(j),
            _ => None,
        }
    }
    fn step_ref(&self) -> Option<&Step> {
        self.joined().map(|j| &j.step)
    }
    fn serving(&self) -> Option<&Serving> {
        match self.step_ref() {
            Some(Step::Serving(s)) => Some(s),
            _ => None,
        }
    }

    /// The next action to execute.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Session::handle_timeout`] must be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.stage {
            Stage::TearingDown(_) | Stage::Done(_) => None,
            Stage::Inspecting => Some(self.deadline),
            Stage::Joined(j) => match &j.step {
                Step::Serving(s) => {
                    let lease = s.lease.next.filter(|_| !s.lease.in_flight);
                    lease.into_iter().chain([s.health.next]).min()
                }
                Step::AwaitingHandshake { rebind, .. } => Some((*rebind).min(self.deadline)),
                Step::ProbingDns { check, .. } => Some(
                    check
                        .as_ref()
                        .map_or(self.deadline, |c| c.at.min(self.deadline)),
                ),
                _ => Some(self.deadline),
            },
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
        match self.phase() {
            Phase::Serving => self.serving_timeout(now),
            Phase::TearingDown | Phase::Done => {}
            phase if now >= self.deadline => {
                let err = self.timeout_error(phase);
                self.fail(err);
            }
            Phase::AwaitingHandshake => {
                let Some(j) = self.joined_mut() else { return };
                if let Step::AwaitingHandshake { rebind, .. } = &mut j.step
                    && now >= *rebind
                {
                    *rebind += REBIND_EVERY;
                    let gateway = j.plan.gateway.clone();
                    self.actions.push_back(Action::Rebind { gateway });
                }
            }
            Phase::ProbingDns => {
                if let Some(Step::ProbingDns { check: Some(c), .. }) = self.step_ref()
                    && now >= c.at
                {
                    self.fall_back();
                }
            }
            _ => {}
        }
    }

    fn serving_timeout(&mut self, now: Instant) {
        let Some(s) = serving(&mut self.stage) else {
            return;
        };
        let renew = s.lease.next.is_some_and(|t| now >= t) && !s.lease.in_flight;
        // The lease comes first: a wait for the new tunnel IP in flight is dropped, and
        // started again once the renewal is answered.
        let cancel = match s.readdress.as_mut().filter(|r| r.waiting && renew) {
            Some(r) => {
                r.waiting = false;
                true
            }
            None => false,
        };
        let check = now >= s.health.next;
        if check {
            s.health.next = now + health::CHECK_EVERY;
        }
        if cancel {
            self.actions.push_back(Action::Cancel);
        }
        if renew {
            self.renew();
        }
        if check {
            self.actions.push_back(Action::ReadStats);
        }
    }

    fn timeout_error(&self, phase: Phase) -> Error {
        let secs = self.config.timeout.as_secs();
        match (phase, self.plan()) {
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
        let is_serving = self.serving().is_some();
        match event {
            Event::Leave | Event::Signal => return self.teardown(),
            Event::Failed(e) => {
                self.in_flight = false;
                let Some(s) = serving(&mut self.stage) else {
                    return self.fail(e);
                };
                if let Some(r) = s.readdress.as_mut().filter(|r| r.waiting) {
                    r.waiting = false;
                    return tracing::error!(error = %e, "reading the tunnel IP the new gateway assigned failed; trying again after the next lease renewal");
                }
                if s.lease.reregistering || s.lease.in_flight {
                    s.lease.reregistering = false;
                    return self.lease_result(Event::LeaseFailed(LeaseFailure::Other(e)), now);
                }
                // A change while serving (routes, gateway peer) failed: keep the tunnel.
                return tracing::error!(error = %e, "a change while serving failed");
            }
            Event::Undone(what) => return self.undone(what, None),
            Event::UndoFailed(e) => return self.undone(None, Some(e)),
            Event::LeaseRenewed(_) | Event::LeaseFailed(_) if is_serving => {
                return self.lease_result(event, now);
            }
            Event::Stats {
                tx_bytes,
                rx_bytes,
                held_packets,
            } if is_serving => {
                return self.stats(tx_bytes, rx_bytes, held_packets, now);
            }
            Event::GatewayInfo(info) if is_serving => {
                return self.gateway_changed(*info, now);
            }
            Event::TunnelIp(ip)
                if self
                    .serving()
                    .is_some_and(|s| s.readdress.is_some_and(|r| r.waiting)) =>
            {
                return self.readdressed(ip, now);
            }
            _ => {}
        }
        if self.serving().is_some_and(|s| s.lease.reregistering) {
            return self.reregistered(event, now);
        }
        self.in_flight = false;
        let inspecting = matches!(self.stage, Stage::Inspecting);
        match (self.step_ref(), event) {
            (None, Event::Inspected(facts)) if inspecting => self.inspected(*facts),
            (Some(Step::Registering), Event::Registered(r)) => {
                self.registered(r);
                self.long(Step::WaitingTunnelIp, self.wait_tunnel_ip(None));
                let msg = format!("Registered peer {}, waiting for its tunnel IP", self.peer());
                self.actions.push_front(Action::Progress(msg));
            }
            (Some(Step::WaitingTunnelIp), Event::TunnelIp(ip)) => self.tunnel_ip(ip),
            (Some(&Step::CreatingDevice { ip }), Event::DeviceCreated { ifindex }) => {
                self.device_created(Tun { ip, ifindex })
            }
            (Some(&Step::ConfiguringNetwork(tun)), Event::NetworkConfigured) => {
                let interface = self.config.interface.clone();
                let table = crate::firewall::table_name(&interface);
                self.record(Undo::RemoveFirewall {
                    table: table.clone(),
                });
                self.step(
                    Step::InstallingFirewall(tun),
                    Action::InstallFirewall { table, interface },
                );
            }
            (Some(&Step::InstallingFirewall(tun)), Event::FirewallInstalled) => {
                self.network_configured(tun, now)
            }
            (Some(&Step::CreatingDevice { ip }), Event::UserspaceStarted(proxy)) => {
                self.userspace_started(ip, proxy, now)
            }
            (Some(&Step::StartingDns(tun)), Event::ForwarderStarted(addr)) => {
                self.forwarder_started(tun, addr, now)
            }
            (Some(&Step::WritingResolvConf(tun)), Event::ResolvConfWritten)
            | (Some(&Step::ConfiguringResolved(tun)), Event::ResolvedConfigured) => {
                self.verify(tun.ip, Some(tun.ifindex), now)
            }
            (Some(&Step::AwaitingHandshake { ip, link, .. }), Event::Handshake) => {
                self.handshake_done(ip, link, now)
            }
            (Some(&Step::ProbingDns { ip, .. }), Event::DnsAnswered) => self.serve(ip, now),
            (Some(Step::RevertingResolved { .. }), Event::ResolvedReverted) => {
                self.resolved_reverted()
            }
            (step, event) => tracing::debug!(?step, ?event, "event ignored in this phase"),
        }
    }

    fn peer(&self) -> String {
        self.plan()
            .map(|p| p.peer.name.to_string())
            .unwrap_or_default()
    }

    fn inspected(&mut self, facts: Facts) {
        // IPv6 unusable here: this join (and every change while serving) carries IPv4 only.
        let ipv4_only = plan::machine_ipv4_only(&self.config, &facts);
        if let Some(why) = ipv4_only {
            self.config.ipv4_only = Some(why);
            if !facts.info.ipv6_only() {
                self.actions.push_back(Action::Progress(format!(
                    "{}: joining IPv4 only",
                    capitalized(why)
                )));
            }
        }
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
        state.tunnel_cidr6 = plan.info.ipv6.as_ref().map(|i| i.tunnel_cidr);
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
        self.stage = Stage::Joined(Box::new(Joined {
            plan,
            journal: state,
            step: Step::Registering,
        }));
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
            Step::Registering,
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
            secret: self.plan().map(Plan::secret).unwrap_or_default(),
            within,
        }
    }

    /// The gateway assigned `ip`: once the trust rules allow it, create the device.
    fn tunnel_ip(&mut self, ip: std::net::Ipv4Addr) {
        let Some(plan) = self.plan() else { return };
        if let Err(e) = crate::mapping::check_tunnel_ip(&plan.routes, ip, &plan.info, &plan.machine)
        {
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
        self.step(Step::CreatingDevice { ip }, Action::CreateDevice { name });
    }

    fn device_created(&mut self, tun: Tun) {
        self.journal(|s| {
            for u in &mut s.undo {
                if let Undo::DeleteInterface { ifindex: i, .. } = u {
                    *i = Some(tun.ifindex);
                }
            }
        });
        let Some(plan) = self.plan() else { return };
        let action = Action::ConfigureNetwork {
            name: self.config.interface.clone(),
            address: crate::mapping::local_address(&plan.routes, tun.ip),
            address6: plan::tunnel_address6(&plan.info, tun.ip),
            routes: plan.routes.iter().map(|r| r.subnet).collect(),
            gateway: plan.gateway.clone(),
        };
        self.step(Step::ConfiguringNetwork(tun), action);
    }

    fn network_configured(&mut self, tun: Tun, now: Instant) {
        let Some(plan) = self.plan() else { return };
        // A dual-stack join: both tunnel addresses.
        let six = plan::tunnel_address6(&plan.info, tun.ip).map(|a| format!(", {}", a.addr()));
        let msg = format!(
            "Tunnel {} up as {}{} to gateway {}, {} routes",
            self.config.interface,
            tun.ip,
            six.unwrap_or_default(),
            plan.gateway
                .endpoint
                .map(|e| e.to_string())
                .unwrap_or_default(),
            plan.routes.len()
        );
        let dns = plan.dns.clone();
        self.actions.push_back(Action::Progress(msg));
        match dns {
            Some(dns) => {
                self.record(Undo::StopForwarder);
                self.step(
                    Step::StartingDns(tun),
                    Action::StartForwarder {
                        listen: dns.listen,
                        config: Box::new(dns.forwarder),
                    },
                );
            }
            None => self.verify(tun.ip, Some(tun.ifindex), now),
        }
    }

    /// Waits for the handshake with the gateway, the tunnel at `ip` (on link `link`, none in
    /// userspace mode) set up.
    pub(super) fn verify(&mut self, ip: std::net::Ipv4Addr, link: Option<u32>, now: Instant) {
        let Some(plan) = self.plan() else { return };
        let poke = match plan.cluster_dns {
            Some(dns) => dns,
            None => plan.gateway_admin,
        };
        let action = Action::AwaitHandshake {
            gateway: plan.gateway.clone(),
            poke,
        };
        let rebind = now + REBIND_FIRST;
        self.long(Step::AwaitingHandshake { ip, link, rebind }, action);
    }

    fn handshake_done(&mut self, ip: std::net::Ipv4Addr, link: Option<u32>, now: Instant) {
        let Some(j) = self.joined() else { return };
        let plan = &j.plan;
        // In mode auto with resolved: the check that queries arrive through resolved, with
        // the resolver file to fall back to.
        let check = match (&plan.dns, link, &j.journal.dns) {
            (Some(d), Some(ifindex), Some(used)) => match (&d.target, &d.fallback) {
                (DnsTarget::Resolved { .. }, Some(fallback)) => Some(stage::ResolvedCheck {
                    at: now + RESOLVED_CHECK,
                    ifindex,
                    forwarder: used.forwarder,
                    fallback: fallback.clone(),
                }),
                _ => None,
            },
            _ => None,
        };
        match plan.probe_dns {
            Some(server) => {
                let name = plan.probe_name.clone();
                self.long(
                    Step::ProbingDns { ip, check },
                    Action::ProbeDns { server, name },
                );
            }
            None => self.serve(ip, now),
        }
    }

    /// Records `undo` in the journal and saves it: before the change it undoes is asked for.
    fn record(&mut self, undo: Undo) {
        self.journal(|s| s.undo.push(undo));
    }

    /// Changes the journal and saves it.
    fn journal(&mut self, change: impl FnOnce(&mut State)) {
        let journal = match &mut self.stage {
            Stage::Joined(j) => Some(&mut j.journal),
            Stage::TearingDown(s) | Stage::Done(s) => s.as_mut(),
            Stage::Inspecting => None,
        };
        if let Some(s) = journal {
            change(s);
            self.actions.push_back(Action::Save(Box::new(s.clone())));
        }
    }

    /// Moves on to `step` (the session is planned) and asks for `action`.
    fn step(&mut self, step: Step, action: Action) {
        if let Some(j) = self.joined_mut() {
            j.step = step;
        }
        self.actions.push_back(action);
    }

    fn long(&mut self, step: Step, action: Action) {
        self.in_flight = true;
        self.step(step, action);
    }
}

/// `why` as the start of a sentence.
fn capitalized(why: &str) -> String {
    let mut c = why.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}
