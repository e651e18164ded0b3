//! Pointing the machine's resolver at the forwarder: the resolver file or systemd-resolved's
//! per-link DNS, and mode auto's fall-back from resolved to the file when queries do not
//! arrive through resolved.

use std::net::SocketAddr;

use super::{Action, DnsPlan, DnsTarget, Phase, Session};
use crate::dns::domains::LinkConfig;
use crate::journal::{DnsModeUsed, DnsState, Undo};

impl Session {
    pub(super) fn forwarder_started(&mut self, addr: SocketAddr) {
        let dns = self
            .plan
            .as_ref()
            .and_then(|p| p.dns.clone())
            .expect("dns planned");
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
        self.point_dns(dns.target, addr, &dns.search);
    }

    fn point_dns(&mut self, target: DnsTarget, addr: SocketAddr, search: &[String]) {
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
                self.step(Phase::WritingResolvConf, action);
            }
            DnsTarget::Resolved { domains } => {
                let ifindex = self.ifindex.expect("device created");
                let name = self.config.interface.clone();
                self.record(Undo::RevertLink { name, ifindex });
                let link = LinkConfig {
                    ifindex,
                    server: addr,
                    domains,
                };
                self.step(Phase::ConfiguringResolved, Action::ConfigureResolved(link));
            }
        }
    }

    /// The probe through resolved's stub did not get an answer in time: revert the link, then
    /// rewrite the resolver file instead (with a warning).
    pub(super) fn fall_back(&mut self) {
        self.resolved_check = None;
        if std::mem::take(&mut self.in_flight) {
            self.actions.push_back(Action::Cancel);
        }
        self.actions.push_back(Action::Progress(
            "Warning: queries through systemd-resolved did not reach kwg within 2 s: falling back to rewriting the resolver file".into(),
        ));
        let ifindex = self.ifindex.expect("device created");
        self.step(Phase::RevertingResolved, Action::RevertResolved { ifindex });
    }

    pub(super) fn resolved_reverted(&mut self) {
        let plan = self.plan.as_mut().expect("planned");
        let dns = plan.dns.as_mut().expect("dns planned");
        let target = dns.fallback.take().expect("a fallback");
        dns.target = target.clone();
        plan.probe_dns = plan.cluster_dns;
        let search = dns.search.clone();
        self.journal(|s| {
            s.undo.retain(|u| !matches!(u, Undo::RevertLink { .. }));
            if let Some(d) = s.dns.as_mut() {
                d.mode = DnsModeUsed::ResolvConf;
            }
        });
        let addr = self
            .state()
            .and_then(|s| s.dns.as_ref())
            .map(|d| d.forwarder)
            .expect("forwarder");
        self.point_dns(target, addr, &search);
    }
}

fn mode_of(target: &DnsTarget) -> DnsModeUsed {
    match target {
        DnsTarget::ResolvConf { .. } => DnsModeUsed::ResolvConf,
        DnsTarget::Resolved { .. } => DnsModeUsed::Resolved,
    }
}
