//! The session while serving: lease renewal (with back-off, and registering again when the
//! Secret vanished) and following the gateway info.

use std::net::{Ipv4Addr, SocketAddr};

use ipnet::Ipv4Net;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use kwg_contract::{GatewayInfo, LeaseStatus, RefusedInfo};

use super::health::{Health, Verdict};
use super::stage::{Serving, Stage, Step};
use super::{
    Action, Event, Lease, LeaseFailure, RENEW_BACKOFF, RENEW_CONFLICT_RETRY, Session, plan, serving,
};
use crate::error::{Error, StepKind};
use crate::journal::Undo;

impl Session {
    pub(super) fn serve(&mut self, ip: Ipv4Addr, now: Instant) {
        let lease = Lease {
            next: Some(now + self.renew_every()),
            renewed: Some(now),
            ..Lease::default()
        };
        let address = match self.plan() {
            Some(plan) => crate::mapping::local_address(&plan.routes, ip),
            None => ipnet::IpNet::V4(Ipv4Net::from(ip)),
        };
        let serving = Serving {
            ip,
            address,
            lease,
            health: Health::new(now),
            readdress: None,
        };
        self.step(Step::Serving(Box::new(serving)), Action::Ready);
    }

    /// The device's counters: a stalled session gets a new handshake, then one from a fresh
    /// port when that goes unanswered. Packets held for a handshake count as sending until a
    /// new handshake is forced: without a session (expired after 180 s idle, or a new gateway
    /// key) boringtun keeps them and the byte counters move only with its initiations, 5 s
    /// apart, which never add up to a stall.
    pub(super) fn stats(&mut self, tx: u64, rx: u64, held: u64, now: Instant) {
        let Some(j) = self.joined_mut() else { return };
        let Step::Serving(s) = &mut j.step else {
            return;
        };
        let h = &mut s.health;
        // Each only grows while the peer stays and starts from zero when it is replaced.
        let verdict = h.observe(tx, rx, held, now);
        if verdict == Verdict::Fine {
            return;
        }
        let gateway = j.plan.gateway.clone();
        if verdict == Verdict::Rebind {
            tracing::warn!(
                restarts = h.restarts,
                "the new handshake went unanswered too: rebinding the UDP port"
            );
            self.actions.push_back(Action::Rebind { gateway });
        } else {
            tracing::warn!(
                restarts = h.restarts,
                "packets to the gateway go unanswered: starting a new handshake"
            );
            let since = h.stalled_since.unwrap_or(now);
            self.actions
                .push_back(Action::Rehandshake { gateway, since });
        }
    }

    /// How many times a stalled session was restarted.
    pub fn restarts(&self) -> u32 {
        self.serving().map_or(0, |s| s.health.restarts)
    }

    /// The lease as `kwg status` shows it, in wall-clock time (`wall` is the wall clock at
    /// `now`); `None` before the session serves.
    pub fn lease_status(&self, now: Instant, wall: DateTime<Utc>) -> Option<LeaseStatus> {
        let l = &self.serving()?.lease;
        let at = |t: Instant| {
            wall + chrono::Duration::from_std(t.saturating_duration_since(now)).unwrap_or_default()
                - chrono::Duration::from_std(now.saturating_duration_since(t)).unwrap_or_default()
        };
        let renewed = l.renewed.map(at);
        let error = match l.credentials_rejected_since {
            Some(since) => Some(credentials_rejected(at(since))),
            None => l.last_error.clone(),
        };
        Some(LeaseStatus {
            ttl_secs: self.config.ttl.as_secs(),
            renewed,
            expires: renewed
                .map(|r| r + chrono::Duration::from_std(self.config.ttl).unwrap_or_default()),
            failing_since: l.failing_since.map(at),
            error,
            failures: l.failures,
            next_attempt: l.next.filter(|_| !l.in_flight).map(at),
            reregistering: l.reregistering,
        })
    }

    /// The last changed gateway info this session refused while serving, for `kwg status`
    /// (`wall` is the wall clock at `now`).
    pub fn refused_status(&self, now: Instant, wall: DateTime<Utc>) -> Option<RefusedInfo> {
        let (at, reason) = self.plan()?.refused.as_ref()?;
        let ago =
            chrono::Duration::from_std(now.saturating_duration_since(*at)).unwrap_or_default();
        Some(RefusedInfo {
            at: wall - ago,
            reason: reason.clone(),
        })
    }

    pub(super) fn renew_every(&self) -> Duration {
        (self.config.ttl / 3).max(Duration::from_secs(1))
    }

    pub(super) fn renew(&mut self) {
        let namespace = self.config.kwg_namespace.clone();
        let Some(j) = self.joined_mut() else { return };
        let Step::Serving(s) = &mut j.step else {
            return;
        };
        s.lease.in_flight = true;
        let action = Action::RenewLease {
            namespace,
            secret: j.plan.secret(),
            uid: j.journal.undo.iter().find_map(|u| match u {
                Undo::DeletePeer { uid, .. } => uid.clone(),
                _ => None,
            }),
            ttl: self.config.ttl,
        };
        self.in_flight = true;
        self.actions.push_back(action);
    }

    pub(super) fn lease_result(&mut self, event: Event, now: Instant) {
        self.in_flight = false;
        let every = self.renew_every();
        let (ttl, peer) = (self.config.ttl, self.peer());
        if let Event::LeaseRenewed(expires) = event {
            self.journal(|s| {
                for u in &mut s.undo {
                    if let Undo::DeletePeer { lease_expires, .. } = u {
                        *lease_expires = Some(expires);
                    }
                }
            });
        }
        let Some(j) = self.joined_mut() else { return };
        let Step::Serving(s) = &mut j.step else {
            return;
        };
        let lease = &mut s.lease;
        lease.in_flight = false;
        match event {
            Event::LeaseRenewed(_) => {
                lease.failures = 0;
                lease.last_error = None;
                lease.failing_since = None;
                lease.credentials_rejected_since = None;
                lease.renewed = Some(now);
                lease.next = Some(now + every);
            }
            Event::LeaseFailed(LeaseFailure::Conflict) => {
                lease.next = Some(now + RENEW_CONFLICT_RETRY);
            }
            Event::LeaseFailed(f @ (LeaseFailure::NotFound | LeaseFailure::Replaced)) => {
                if matches!(f, LeaseFailure::Replaced) {
                    tracing::warn!(%peer, "the peer Secret of this name is another object now (ours was deleted): registering again");
                } else {
                    tracing::warn!(%peer, "the peer Secret is gone (lease expired?): registering again");
                }
                lease.reregistering = true;
                lease.next = None;
                let spec = Box::new(j.plan.peer.clone());
                self.in_flight = true;
                self.actions.push_back(Action::Register { spec, ttl });
            }
            Event::LeaseFailed(LeaseFailure::Other(e)) => {
                // At most a tenth of the ttl apart, so that several attempts fall between a
                // missed renewal and the lease's end (capped at the interval alone, the last
                // attempt came as the lease ended).
                let backoff = RENEW_BACKOFF
                    .saturating_mul(1 << lease.failures.min(16))
                    .min(every)
                    .min((ttl / 10).max(RENEW_BACKOFF));
                lease.failures += 1;
                tracing::warn!(error = %e, retry_in = ?backoff, "lease renewal failed; the tunnel keeps working");
                match &e {
                    Error::Step(s) if s.kind == StepKind::CredentialsRejected => {
                        lease.credentials_rejected_since.get_or_insert(now);
                    }
                    _ => lease.credentials_rejected_since = None,
                }
                lease.last_error = Some(e.summary());
                lease.failing_since.get_or_insert(now);
                lease.next = Some(now + backoff);
            }
            _ => {}
        }
        self.follow_tunnel_ip();
    }

    /// Events while registering again after the Secret vanished.
    pub(super) fn reregistered(&mut self, event: Event, now: Instant) {
        self.in_flight = false;
        match event {
            Event::Registered(r) => {
                self.registered(r);
                self.in_flight = true;
                let action = self.wait_tunnel_ip(None);
                self.actions.push_back(action);
            }
            Event::TunnelIp(ip) => {
                let every = self.renew_every();
                let Some(s) = serving(&mut self.stage) else {
                    return;
                };
                s.health.registered_again();
                s.lease = Lease {
                    renewed: Some(now),
                    next: Some(now + every),
                    credentials_rejected_since: s.lease.credentials_rejected_since,
                    ..Lease::default()
                };
                // A new gateway's address read along the way counts for it too.
                if s.readdress.is_some_and(|r| r.within.contains(&ip)) {
                    s.readdress = None;
                }
                let _ = self.adopt_tunnel_ip(ip, now);
                self.follow_tunnel_ip();
            }
            other => tracing::debug!(?other, "event ignored while registering again"),
        }
    }

    /// Takes `ip` as this machine's tunnel address when the trust rules allow it (else the
    /// old address stays and `kwg status` says why): the address is changed in place.
    /// Whether it changed.
    fn adopt_tunnel_ip(&mut self, ip: Ipv4Addr, now: Instant) -> bool {
        let Some(j) = self.joined_mut() else {
            return false;
        };
        let Step::Serving(s) = &mut j.step else {
            return false;
        };
        let plan = &mut j.plan;
        if let Err(e) = crate::mapping::check_tunnel_ip(&plan.routes, ip, &plan.info, &plan.machine)
        {
            tracing::error!(error = %e, "keeping the old tunnel address");
            plan.refused = Some((now, e.to_string()));
            return false;
        }
        let old = std::mem::replace(&mut s.ip, ip);
        // The address on the interface, not the old IP under the new routes: a gateway
        // change may have removed (or moved) the mapping it was set under.
        let new4 = crate::mapping::local_address(&plan.routes, ip);
        let old4 = std::mem::replace(&mut s.address, new4);
        if old == ip && old4 == new4 {
            return false;
        }
        tracing::info!(%old, new = %ip, "the gateway assigned another tunnel IP: changing the address");
        // The IPv6 tunnel address embeds the IPv4 one: it moves with it.
        let six = (
            plan::tunnel_address6(&plan.info, old),
            plan::tunnel_address6(&plan.info, ip),
        );
        if old4 != new4 {
            self.actions.push_back(Action::ChangeAddress {
                name: self.config.interface.clone(),
                old: old4,
                new: new4,
            });
        }
        if let (Some(old), Some(new)) = six
            && old != new
        {
            let name = self.config.interface.clone();
            self.actions
                .push_back(Action::ChangeAddress { name, old, new });
        }
        self.journal(|s| s.tunnel_ip = Some(ip));
        true
    }

    /// Starts reading the tunnel IP a new gateway assigned, once no other long action is in
    /// flight (the driver runs one at a time).
    pub(super) fn follow_tunnel_ip(&mut self) {
        if self.in_flight {
            return;
        }
        let Some(s) = serving(&mut self.stage) else {
            return;
        };
        if s.lease.reregistering {
            return;
        }
        let Some(r) = s.readdress.as_mut().filter(|r| !r.waiting) else {
            return;
        };
        r.waiting = true;
        let within = Some(r.within);
        self.in_flight = true;
        let action = self.wait_tunnel_ip(within);
        self.actions.push_back(action);
    }

    /// The tunnel IP the new gateway assigned.
    pub(super) fn readdressed(&mut self, ip: Ipv4Addr, now: Instant) {
        self.in_flight = false;
        let Some(s) = serving(&mut self.stage) else {
            return;
        };
        let Some(r) = s.readdress.take() else {
            return;
        };
        if !r.within.contains(&ip) {
            // The driver waits for an address in `within`; a stale one is read again later.
            tracing::warn!(%ip, cidr = %r.within, "the tunnel IP read is outside the gateway's tunnel CIDR");
            s.readdress = Some(Readdress {
                waiting: false,
                ..r
            });
            return;
        }
        // The packets sent from the old address were dropped: restart the stall detection
        // at its first pace.
        if self.adopt_tunnel_ip(ip, now)
            && let Some(s) = serving(&mut self.stage)
        {
            s.health.peer_replaced(now);
        }
    }

    pub(super) fn gateway_changed(&mut self, info: GatewayInfo, now: Instant) {
        let config = &self.config;
        let Some(Stage::Joined(j)) = Some(&mut self.stage) else {
            return;
        };
        let Step::Serving(serving) = &mut j.step else {
            return;
        };
        let plan = &mut j.plan;
        // A gateway that starts publishing ipv6.json while joined adds the IPv6 side (address,
        // routes, AllowedIPs) after the same checks as at join; a withdrawn one removes it.
        let info = plan::carried(config, &info);
        // The same checks as at join, against the machine as it was then: a refused change
        // leaves the whole last good configuration in place, and `kwg status` says why.
        let routes = match plan::check_cluster(config, &info, &plan.machine, &plan.machine_routes) {
            Ok(routes) => routes,
            Err(e) => {
                tracing::error!(error = %e, "ignoring the changed gateway info; keeping the last good one");
                plan.refused = Some((now, e.to_string()));
                return;
            }
        };
        plan.refused = None;
        let old_cidr = plan.info.tunnel_cidr;
        // A new IPv6 prefix (/96) moves the IPv6 tunnel address, the IPv4 one staying.
        let six = (
            plan::tunnel_address6(&plan.info, serving.ip),
            plan::tunnel_address6(&info, serving.ip),
        );
        let moved6 = match six {
            (Some(old), Some(new)) if old != new => Some((old, new)),
            _ => None,
        };
        let (added6, removed6) = match six {
            (None, Some(new)) => (Some(new), None),
            (Some(old), None) => (None, Some(old)),
            _ => (None, None),
        };
        // A new IPv6 tunnel address meets the join's rules for it (none of the machine's own
        // addresses, gateways, DNS servers or API server).
        if (added6.is_some() || moved6.is_some())
            && let Err(e) =
                crate::mapping::check_tunnel_ip(&routes, serving.ip, &info, &plan.machine)
        {
            tracing::error!(error = %e, "ignoring the changed gateway info; keeping the last good one");
            plan.refused = Some((now, e.to_string()));
            return;
        }
        plan.info = info.clone();
        let Some(endpoint) = info
            .endpoints
            .iter()
            .find_map(|e| e.ip().map(|ip| SocketAddr::new(ip, e.port)))
            .or(plan.gateway.endpoint)
        else {
            return;
        };
        let gateway = plan::gateway_peer(&info, endpoint, &routes);
        let (add, remove) = plan::diff_routes(&plan.routes, &routes);
        // A reinstall with another tunnel CIDR moves the gateway's admin address with it.
        let admin = plan::gateway_admin(&info, &routes);
        let admin_changed = admin != plan.gateway_admin;
        plan.gateway_admin = admin;
        let same6 = moved6.is_none() && added6.is_none() && removed6.is_none();
        if gateway == plan.gateway && add.is_empty() && remove.is_empty() && same6 {
            if admin_changed {
                self.journal(|s| s.gateway_admin = Some(admin));
            }
            return;
        }
        tracing::info!(key = %info.public_key, %endpoint, ?add, ?remove, "the gateway info changed: following it");
        let old_key = plan.gateway.public_key;
        let key_changed = old_key != gateway.public_key;
        let cidr_changed = old_cidr != info.tunnel_cidr;
        plan.gateway = gateway.clone();
        plan.routes = routes.clone();
        if key_changed {
            serving.health.peer_replaced(now);
        }
        // Another gateway (a reinstall lost the key Secret) or another tunnel CIDR may assign
        // this machine another tunnel IP: read it again, as after registering again. Without,
        // the old source address is dropped by the new gateway until leave and join.
        let outside = !info.tunnel_cidr.contains(&serving.ip);
        let readdress = key_changed || cidr_changed || outside;
        let mut cancel = false;
        if readdress {
            match serving.readdress.filter(|r| r.waiting) {
                Some(r) if r.within == info.tunnel_cidr => {}
                waiting => {
                    // Waiting for an address in the CIDR before: wait again for the new one.
                    cancel = waiting.is_some();
                    serving.readdress = Some(Readdress {
                        within: info.tunnel_cidr,
                        waiting: false,
                    });
                }
            }
        }
        let mut moved4 = None;
        // The same IP under another mapping (or none any more): the interface's address
        // follows now; a tunnel IP being read again moves it when it comes.
        let local = crate::mapping::local_address(&routes, serving.ip);
        if !readdress && local != serving.address {
            let old = std::mem::replace(&mut serving.address, local);
            moved4 = Some((old, local));
        }
        self.journal(|s| {
            s.gateway_key = Some(info.public_key.to_string());
            s.gateway_endpoint = Some(endpoint.to_string());
            s.routes = routes;
            s.tunnel_cidr6 = info.ipv6.as_ref().map(|i| i.tunnel_cidr);
            s.gateway_admin = Some(admin);
        });
        for (old, new) in moved4.into_iter().chain(moved6) {
            let name = self.config.interface.clone();
            self.actions
                .push_back(Action::ChangeAddress { name, old, new });
        }
        if let Some(address) = added6 {
            let name = self.config.interface.clone();
            self.actions.push_back(Action::AddAddress { name, address });
        }
        if let Some(address) = removed6 {
            let name = self.config.interface.clone();
            self.actions
                .push_back(Action::RemoveAddress { name, address });
        }
        if !add.is_empty() || !remove.is_empty() {
            self.actions.push_back(Action::SetRoutes {
                name: self.config.interface.clone(),
                add,
                remove,
            });
        }
        self.actions.push_back(Action::UpdateGateway {
            old_key,
            peer: gateway,
        });
        if cancel {
            self.actions.push_back(Action::Cancel);
            self.in_flight = false;
        }
        if readdress {
            self.follow_tunnel_ip();
        }
    }
}

/// A tunnel IP to read again, in the gateway's current tunnel CIDR.
#[derive(Debug, Clone, Copy)]
pub(super) struct Readdress {
    pub within: Ipv4Net,
    /// The wait is in flight.
    pub waiting: bool,
}

/// What `kwg status` says while the API server rejects the daemon's credentials (each retry
/// loads the kubeconfig again, so logging in is all it takes).
pub fn credentials_rejected(since: DateTime<Utc>) -> String {
    format!(
        "credentials rejected since {}: log in again (kwg reloads the kubeconfig at each retry)",
        since.format("%Y-%m-%d %H:%M:%S UTC")
    )
}
