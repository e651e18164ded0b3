//! The session while serving: lease renewal (with back-off, and registering again when the
//! Secret vanished) and following the gateway info.

use std::net::{Ipv4Addr, SocketAddr};

use ipnet::Ipv4Net;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use kwg_contract::{GatewayInfo, LeaseStatus, RefusedInfo};

use super::health::{Health, Verdict};
use super::{
    Action, Event, LeaseFailure, Phase, RENEW_BACKOFF, RENEW_CONFLICT_RETRY, Session, plan,
};
use crate::error::{Error, StepKind};
use crate::journal::Undo;

impl Session {
    pub(super) fn serve(&mut self, now: Instant) {
        self.phase = Phase::Serving;
        self.lease.next = Some(now + self.renew_every());
        self.lease.renewed = Some(now);
        self.health = Some(Health::new(now));
        self.actions.push_back(Action::Ready);
    }

    /// The device's counters: a stalled session gets a new handshake, then one from a fresh
    /// port when that goes unanswered.
    pub(super) fn stats(&mut self, tx: u64, rx: u64, now: Instant) {
        let Some(h) = self.health.as_mut() else {
            return;
        };
        let verdict = h.observe(tx, rx, now);
        if verdict == Verdict::Fine {
            return;
        }
        let gateway = self.plan.as_ref().expect("planned").gateway.clone();
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
        self.health.as_ref().map_or(0, |h| h.restarts)
    }

    /// The lease as `kwg status` shows it, in wall-clock time (`wall` is the wall clock at
    /// `now`); `None` before the session serves.
    pub fn lease_status(&self, now: Instant, wall: DateTime<Utc>) -> Option<LeaseStatus> {
        if self.phase != Phase::Serving {
            return None;
        }
        let at = |t: Instant| {
            wall + chrono::Duration::from_std(t.saturating_duration_since(now)).unwrap_or_default()
                - chrono::Duration::from_std(now.saturating_duration_since(t)).unwrap_or_default()
        };
        let l = &self.lease;
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
        let (at, reason) = self.plan.as_ref()?.refused.as_ref()?;
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
        self.lease.in_flight = true;
        self.in_flight = true;
        self.actions.push_back(Action::RenewLease {
            namespace: self.config.kwg_namespace.clone(),
            secret: self.plan.as_ref().expect("planned").secret(),
            uid: self.state().and_then(|s| {
                s.undo.iter().find_map(|u| match u {
                    Undo::DeletePeer { uid, .. } => uid.clone(),
                    _ => None,
                })
            }),
            ttl: self.config.ttl,
        });
    }

    pub(super) fn lease_result(&mut self, event: Event, now: Instant) {
        self.lease.in_flight = false;
        self.in_flight = false;
        let every = self.renew_every();
        match event {
            Event::LeaseRenewed(expires) => {
                self.journal(|s| {
                    for u in &mut s.undo {
                        if let Undo::DeletePeer { lease_expires, .. } = u {
                            *lease_expires = Some(expires);
                        }
                    }
                });
                self.lease.failures = 0;
                self.lease.last_error = None;
                self.lease.failing_since = None;
                self.lease.credentials_rejected_since = None;
                self.lease.renewed = Some(now);
                self.lease.next = Some(now + every);
            }
            Event::LeaseFailed(LeaseFailure::Conflict) => {
                self.lease.next = Some(now + RENEW_CONFLICT_RETRY);
            }
            Event::LeaseFailed(f @ (LeaseFailure::NotFound | LeaseFailure::Replaced)) => {
                if matches!(f, LeaseFailure::Replaced) {
                    tracing::warn!(peer = %self.peer(), "the peer Secret of this name is another object now (ours was deleted): registering again");
                } else {
                    tracing::warn!(peer = %self.peer(), "the peer Secret is gone (lease expired?): registering again");
                }
                self.lease.reregistering = true;
                self.lease.next = None;
                let spec = Box::new(self.plan.as_ref().expect("planned").peer.clone());
                self.in_flight = true;
                let ttl = self.config.ttl;
                self.actions.push_back(Action::Register { spec, ttl });
            }
            Event::LeaseFailed(LeaseFailure::Other(e)) => {
                // At most a tenth of the ttl apart, so that several attempts fall between a
                // missed renewal and the lease's end (capped at the interval alone, the last
                // attempt came as the lease ended).
                let backoff = RENEW_BACKOFF
                    .saturating_mul(1 << self.lease.failures.min(16))
                    .min(every)
                    .min((self.config.ttl / 10).max(RENEW_BACKOFF));
                self.lease.failures += 1;
                tracing::warn!(error = %e, retry_in = ?backoff, "lease renewal failed; the tunnel keeps working");
                match &e {
                    Error::Step(s) if s.kind == StepKind::CredentialsRejected => {
                        self.lease.credentials_rejected_since.get_or_insert(now);
                    }
                    _ => self.lease.credentials_rejected_since = None,
                }
                self.lease.last_error = Some(e.summary());
                self.lease.failing_since.get_or_insert(now);
                self.lease.next = Some(now + backoff);
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
                self.lease.reregistering = false;
                if let Some(h) = self.health.as_mut() {
                    h.registered_again();
                }
                self.lease.renewed = Some(now);
                self.lease.failing_since = None;
                self.lease.last_error = None;
                self.lease.failures = 0;
                self.lease.next = Some(now + self.renew_every());
                let _ = self.adopt_tunnel_ip(ip, now);
                // A new gateway's address read along the way counts for it too.
                if self.readdress.is_some_and(|r| r.within.contains(&ip)) {
                    self.readdress = None;
                }
                self.follow_tunnel_ip();
            }
            other => tracing::debug!(?other, "event ignored while registering again"),
        }
    }

    /// Takes `ip` as this machine's tunnel address when the trust rules allow it (else the
    /// old address stays and `kwg status` says why): the address is changed in place.
    /// Whether it changed.
    fn adopt_tunnel_ip(&mut self, ip: Ipv4Addr, now: Instant) -> bool {
        let plan = self.plan.as_mut().expect("planned");
        if let Err(e) = crate::trust::check_tunnel_ip(ip, &plan.info, &plan.machine) {
            tracing::error!(error = %e, "keeping the old tunnel address");
            plan.refused = Some((now, e.to_string()));
            return false;
        }
        let old = self.state().and_then(|s| s.tunnel_ip);
        if old == Some(ip) {
            return false;
        }
        if let Some(old) = old {
            tracing::info!(%old, new = %ip, "the gateway assigned another tunnel IP: changing the address");
            self.actions.push_back(Action::ChangeAddress {
                name: self.config.interface.clone(),
                old: plan::tunnel_address(old),
                new: plan::tunnel_address(ip),
            });
        }
        self.journal(|s| s.tunnel_ip = Some(ip));
        true
    }

    /// Starts reading the tunnel IP a new gateway assigned, once no other long action is in
    /// flight (the driver runs one at a time).
    pub(super) fn follow_tunnel_ip(&mut self) {
        if self.phase != Phase::Serving || self.in_flight || self.lease.reregistering {
            return;
        }
        let Some(r) = self.readdress.as_mut().filter(|r| !r.waiting) else {
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
        let Some(r) = self.readdress.take() else {
            return;
        };
        if !r.within.contains(&ip) {
            // The driver waits for an address in `within`; a stale one is read again later.
            tracing::warn!(%ip, cidr = %r.within, "the tunnel IP read is outside the gateway's tunnel CIDR");
            self.readdress = Some(Readdress {
                waiting: false,
                ..r
            });
            return;
        }
        // The packets sent from the old address were dropped: restart the stall detection
        // at its first pace.
        if self.adopt_tunnel_ip(ip, now)
            && let Some(h) = self.health.as_mut()
        {
            h.peer_replaced(now);
        }
    }

    pub(super) fn gateway_changed(&mut self, info: GatewayInfo, now: Instant) {
        let Some(plan) = self.plan.as_mut() else {
            return;
        };
        // The same checks as at join, against the machine as it was then: a refused change
        // leaves the whole last good configuration in place, and `kwg status` says why.
        let routes = match plan::check_cluster(
            &self.config,
            &info,
            &plan.machine,
            &plan.machine_routes,
        ) {
            Ok(routes) => routes,
            Err(e) => {
                tracing::error!(error = %e, "ignoring the changed gateway info; keeping the last good one");
                plan.refused = Some((now, e.to_string()));
                return;
            }
        };
        plan.refused = None;
        let old_cidr = plan.info.tunnel_cidr;
        plan.info = info.clone();
        let endpoint = info
            .endpoints
            .iter()
            .find_map(|e| e.ip().map(|ip| SocketAddr::new(ip, e.port)))
            .or(plan.gateway.endpoint)
            .expect("an endpoint");
        let gateway = plan::gateway_peer(&info, endpoint, &routes);
        let (add, remove) = plan::diff_routes(&plan.routes, &routes);
        if gateway == plan.gateway && add.is_empty() && remove.is_empty() {
            return;
        }
        tracing::info!(key = %info.public_key, %endpoint, ?add, ?remove, "the gateway info changed: following it");
        let old_key = plan.gateway.public_key;
        let cidr_changed = old_cidr != info.tunnel_cidr;
        plan.gateway = gateway.clone();
        plan.routes = routes.clone();
        self.journal(|s| {
            s.gateway_key = Some(info.public_key.to_string());
            s.gateway_endpoint = Some(endpoint.to_string());
            s.routes = routes;
        });
        if !add.is_empty() || !remove.is_empty() {
            self.actions.push_back(Action::SetRoutes {
                name: self.config.interface.clone(),
                add,
                remove,
            });
        }
        if old_key != gateway.public_key
            && let Some(h) = self.health.as_mut()
        {
            h.peer_replaced(now);
        }
        let key_changed = old_key != gateway.public_key;
        self.actions.push_back(Action::UpdateGateway {
            old_key,
            peer: gateway,
        });
        // Another gateway (a reinstall lost the key Secret) or another tunnel CIDR may assign
        // this machine another tunnel IP: read it again, as after registering again. Without,
        // the old source address is dropped by the new gateway until leave and join.
        let outside = self
            .state()
            .and_then(|s| s.tunnel_ip)
            .is_some_and(|ip| !info.tunnel_cidr.contains(&ip));
        if key_changed || cidr_changed || outside {
            if let Some(r) = self.readdress.filter(|r| r.waiting) {
                if r.within == info.tunnel_cidr {
                    return;
                }
                // Waiting for an address in the CIDR before: wait again for the new one.
                self.actions.push_back(Action::Cancel);
                self.in_flight = false;
            }
            self.readdress = Some(Readdress {
                within: info.tunnel_cidr,
                waiting: false,
            });
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
