//! The gateway's pure core: from the peer Secrets it has seen and the peers the device runs,
//! decide what to change. No I/O, time passed in.
//!
//! Every reconcile looks at the whole set of Secrets (a watcher re-list is a full resync, not
//! a special case) and produces a [`Plan`]: device changes (diff of desired against running),
//! annotations to write, malformed Secrets to report and expired Secrets to delete.

use crate::alloc::Allocator;
use chrono::{DateTime, Utc};
use ipnet::{IpNet, Ipv4Net};
use kwg_wg::contract::{
    self, ContractError, ERROR_ANNOTATION, PeerName, PeerSpec, TUNNEL_IP_ANNOTATION, TunnelIp,
};
use kwg_wg::keys::PublicKey;
use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

/// A peer Secret as the watcher delivered it, parsed once when it arrives.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerSecret {
    pub secret_name: String,
    pub spec: Result<PeerSpec, ContractError>,
    /// The `kwg.io/tunnel-ip` annotation, when it holds an address.
    pub tunnel_ip: Option<TunnelIp>,
    /// The `kwg.io/error` annotation.
    pub error: Option<String>,
}

impl PeerSecret {
    /// Parses a Secret's name, `data` and annotations.
    pub fn parse(
        secret_name: &str,
        data: &BTreeMap<String, Vec<u8>>,
        annotations: &BTreeMap<String, String>,
    ) -> PeerSecret {
        PeerSecret {
            secret_name: secret_name.to_owned(),
            spec: PeerSpec::from_secret_data(secret_name, data),
            tunnel_ip: contract::tunnel_ip_from_annotations(annotations).and_then(Result::ok),
            error: annotations.get(ERROR_ANNOTATION).cloned(),
        }
    }
}

/// A change to the WireGuard device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceOp {
    /// Add the peer, or update its AllowedIPs to its tunnel address.
    Upsert {
        name: PeerName,
        key: PublicKey,
        ip: TunnelIp,
        new: bool,
    },
    /// Remove a peer the device runs but no Secret asks for.
    Remove { key: PublicKey },
}

/// A malformed Secret to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    pub secret_name: String,
    pub reason: String,
    /// First time this reason is seen for this Secret: log it and emit an Event.
    pub first_report: bool,
    /// The Secret's `kwg.io/error` annotation differs from the reason: write it.
    pub write_annotation: bool,
}

/// A valid peer with its address (what `/peers` and the metrics show).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivePeer {
    pub spec: PeerSpec,
    pub ip: TunnelIp,
}

/// What one reconcile decided.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub device: Vec<DeviceOp>,
    /// Secrets whose `kwg.io/tunnel-ip` must be (re)written, clearing any `kwg.io/error`.
    pub annotate: Vec<(String, TunnelIp)>,
    pub malformed: Vec<Malformed>,
    /// Secrets whose lease has passed: delete them.
    pub expired: Vec<String>,
    pub active: Vec<ActivePeer>,
    /// The earliest lease end among active peers: reconcile again then.
    pub next_expiry: Option<DateTime<Utc>>,
}

/// The state the core keeps between reconciles.
#[derive(Debug)]
pub struct Core {
    alloc: Allocator,
    /// Reason last reported per malformed Secret (one log line and Event per reason).
    reported: HashMap<String, String>,
}

impl Core {
    pub fn new(alloc: Allocator) -> Core {
        Core {
            alloc,
            reported: HashMap::new(),
        }
    }

    pub fn gateway_ip(&self) -> TunnelIp {
        self.alloc.gateway_ip()
    }

    /// Decides what to change, given every peer Secret (by name) and the device's peers
    /// with their AllowedIPs.
    pub fn reconcile(
        &mut self,
        secrets: &BTreeMap<String, PeerSecret>,
        running: &BTreeMap<PublicKey, Vec<IpNet>>,
        now: SystemTime,
    ) -> Plan {
        let mut plan = Plan::default();
        let mut errors: Vec<(&PeerSecret, String)> = Vec::new();
        let mut live: Vec<(&PeerSecret, &PeerSpec)> = Vec::new();
        let mut key_owner: HashMap<PublicKey, &PeerName> = HashMap::new();
        for secret in secrets.values() {
            match &secret.spec {
                Err(e) => errors.push((secret, e.to_string())),
                Ok(spec) if spec.lease_expired(now) => plan.expired.push(secret.secret_name.clone()),
                Ok(spec) => match key_owner.get(&spec.public_key) {
                    Some(owner) => errors.push((
                        secret,
                        format!("public key is already used by peer `{owner}`: give every machine its own key (`wg genkey`)"),
                    )),
                    None => {
                        key_owner.insert(spec.public_key, &spec.name);
                        live.push((secret, spec));
                    }
                },
            }
        }

        self.allocate(&live, &mut errors);
        self.report(errors, &mut plan);

        let mut desired: HashMap<PublicKey, TunnelIp> = HashMap::new();
        for (secret, spec) in live {
            let Some(ip) = self.alloc.get(&spec.name) else {
                continue; // CIDR full: reported as malformed above
            };
            desired.insert(spec.public_key, ip);
            if secret.tunnel_ip != Some(ip) || secret.error.is_some() {
                plan.annotate.push((secret.secret_name.clone(), ip));
            }
            let want = [IpNet::V4(Ipv4Net::from(ip.addr()))];
            match running.get(&spec.public_key) {
                Some(have) if have.as_slice() == want => {}
                have => plan.device.push(DeviceOp::Upsert {
                    name: spec.name.clone(),
                    key: spec.public_key,
                    ip,
                    new: have.is_none(),
                }),
            }
            let lease = spec.lease_expires;
            plan.next_expiry = Some(plan.next_expiry.map_or(lease, |e| e.min(lease)));
            plan.active.push(ActivePeer {
                spec: spec.clone(),
                ip,
            });
        }
        for key in running.keys().filter(|k| !desired.contains_key(*k)) {
            plan.device.push(DeviceOp::Remove { key: *key });
        }
        plan
    }

    /// Frees addresses of peers that are gone, then keeps, reclaims (after a restart, from
    /// the annotation) or assigns an address for every live peer, in that order so a new
    /// peer never takes an address an annotated peer holds.
    fn allocate<'a>(
        &mut self,
        live: &[(&'a PeerSecret, &PeerSpec)],
        errors: &mut Vec<(&'a PeerSecret, String)>,
    ) {
        let keep: std::collections::HashSet<&PeerName> =
            live.iter().map(|(_, s)| &s.name).collect();
        let gone: Vec<PeerName> = self
            .alloc
            .peers()
            .filter(|p| !keep.contains(p))
            .cloned()
            .collect();
        for peer in gone {
            self.alloc.release(&peer);
        }
        for (secret, spec) in live {
            if self.alloc.get(&spec.name).is_none()
                && let Some(ip) = secret.tunnel_ip
            {
                self.alloc.claim(&spec.name, ip);
            }
        }
        for (secret, spec) in live {
            if let Err(e) = self.alloc.assign(&spec.name) {
                errors.push((secret, e.to_string()));
            }
        }
    }

    fn report(&mut self, errors: Vec<(&PeerSecret, String)>, plan: &mut Plan) {
        let names: std::collections::HashSet<&str> =
            errors.iter().map(|(s, _)| s.secret_name.as_str()).collect();
        self.reported.retain(|k, _| names.contains(k.as_str()));
        for (secret, reason) in errors {
            let first_report = self.reported.get(&secret.secret_name) != Some(&reason);
            let write_annotation = secret.error.as_deref() != Some(reason.as_str());
            if first_report {
                self.reported
                    .insert(secret.secret_name.clone(), reason.clone());
            }
            if first_report || write_annotation {
                plan.malformed.push(Malformed {
                    secret_name: secret.secret_name.clone(),
                    reason,
                    first_report,
                    write_annotation,
                });
            }
        }
    }
}

/// The annotation patch for a valid peer: its address, no error.
pub fn tunnel_ip_patch(ip: TunnelIp) -> serde_json::Value {
    serde_json::json!({"metadata": {"annotations": {TUNNEL_IP_ANNOTATION: ip.to_string(), ERROR_ANNOTATION: null}}})
}

/// The annotation patch for a malformed Secret: the reason, no address.
pub fn error_patch(reason: &str) -> serde_json::Value {
    serde_json::json!({"metadata": {"annotations": {ERROR_ANNOTATION: reason, TUNNEL_IP_ANNOTATION: null}}})
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
