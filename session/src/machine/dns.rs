//! Pointing the machine's resolver at the forwarder: the resolver file or systemd-resolved's
//! per-link DNS, and mode auto's fall-back from resolved to the file when queries do not
//! arrive through resolved.

use std::net::SocketAddr;
use std::time::Instant;

use super::stage::{Step, Tun};
use super::{Action, DnsPlan, DnsTarget, Session};
use crate::dns::domains::LinkConfig;
use crate::journal::{DnsModeUsed, DnsState, Undo};

impl Session {
    pub(super) fn forwarder_started(&mut self, tun: Tun, addr: SocketAddr, now: Instant) {
        let Some(dns) = self.plan().and_then(|p| p.dns.clone()) else {
            return self.verify(tun.ip, Some(tun.ifindex), now);
        };
        let config = &self.config;
        let state = DnsState {
            mode: mode_of(&dns.target),
            forwarder: addr,
            cluster_dns: Some(dns.forwarder.cluster),
            upstreams: dns.forwarder.upstreams.clone(),
            include_suffixes: config.include_suffixes.clone(),
            exclude_suffixes: dns.forwarder.split.exclude_suffixes.clone(),
            timeout_secs: config.dns_timeout.as_secs(),
            search: dns.search.clone(),
        };
        self.journal(|s| s.dns = Some(state));
        self.point_dns(tun, dns.target, addr, &dns.search);
    }

    fn point_dns(&mut self, tun: Tun, target: DnsTarget, addr: SocketAddr, search: &[String]) {
        match target {
            DnsTarget::ResolvConf {
                path,
                backup,
                original,
            } => {
                self.record(Undo::RestoreResolvConf {
                    path: path.clone(),
                    backup: backup.clone(),
                });
                let contents = DnsPlan::rendered(&original, addr, search);
                let action = Action::WriteResolvConf {
                    path,
                    backup,
                    original,
                    contents,
                };
                self.step(Step::WritingResolvConf(tun), action);
            }
            DnsTarget::Resolved { domains } => {
                let name = self.config.interface.clone();
                self.record(Undo::RevertLink {
                    name,
                    ifindex: tun.ifindex,
                });
                let link = LinkConfig {
                    ifindex: tun.ifindex,
                    server: addr,
                    domains,
                };
                self.step(
                    Step::ConfiguringResolved(tun),
                    Action::ConfigureResolved(link),
                );
            }
        }
    }

    /// The probe through resolved's stub did not get an answer in time: revert the link, then
    /// rewrite the resolver file instead (with a warning).
    pub(super) fn fall_back(&mut self) {
        let Some(j) = self.joined_mut() else { return };
        let Step::ProbingDns {
            ip,
            check: Some(check),
        } = std::mem::replace(&mut j.step, Step::Registering)
        else {
            return;
        };
        let ifindex = check.ifindex;
        j.step = Step::RevertingResolved { ip, check };
        if std::mem::take(&mut self.in_flight) {
            self.actions.push_back(Action::Cancel);
        }
        self.actions.push_back(Action::Progress(
            "Warning: queries through systemd-resolved did not reach kwg within 2 s: falling back to rewriting the resolver file".into(),
        ));
        self.actions.push_back(Action::RevertResolved { ifindex });
    }

    pub(super) fn resolved_reverted(&mut self) {
        let Some(j) = self.joined_mut() else { return };
        let Step::RevertingResolved { ip, check } =
            std::mem::replace(&mut j.step, Step::Registering)
        else {
            return;
        };
        let plan = &mut j.plan;
        let mut search = Vec::new();
        if let Some(dns) = plan.dns.as_mut() {
            dns.target = check.fallback.clone();
            dns.fallback = None;
            search = dns.search.clone();
        }
        plan.probe_dns = plan.cluster_dns;
        self.journal(|s| {
            s.undo.retain(|u| !matches!(u, Undo::RevertLink { .. }));
            if let Some(d) = s.dns.as_mut() {
                d.mode = DnsModeUsed::ResolvConf;
            }
        });
        let tun = Tun {
            ip,
            ifindex: check.ifindex,
        };
        self.point_dns(tun, check.fallback, check.forwarder, &search);
    }
}

fn mode_of(target: &DnsTarget) -> DnsModeUsed {
    match target {
        DnsTarget::ResolvConf { .. } => DnsModeUsed::ResolvConf,
        DnsTarget::Resolved { .. } => DnsModeUsed::Resolved,
    }
}
