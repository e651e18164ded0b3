//! The gateway's pure core: from the peer Secrets it has seen and the peers the device runs,
//! decide what to change. No I/O, time passed in.
//!
//! Every reconcile looks at the whole set of Secrets (a watcher re-list is a full resync, not
//! a special case) and produces a [`Plan`]: device changes (diff of desired against running),
//! annotations to write, malformed Secrets to report and expired Secrets to delete.

use crate::alloc::Allocator;
use chrono::{DateTime, Utc};
use ipnet::{IpNet, Ipv4Net};
use kwg_contract::keys::PublicKey;
use kwg_contract::{
    self, ContractError, ERROR_ANNOTATION, PeerName, PeerSpec, TUNNEL_IP_ANNOTATION, TunnelIp,
};
use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

/// Why a Secret's content is not a peer spec.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SecretError {
    #[error(transparent)]
    Contract(#[from] ContractError),
    #[error(
        "Secret is {bytes} bytes, more than the gateway's limit of {limit} (--max-secret-bytes): a peer Secret needs well under 1 KiB; remove the extra data or annotations"
    )]
    TooLarge { bytes: usize, limit: usize },
}

/// A peer Secret as the watcher delivered it, parsed once when it arrives.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerSecret {
    pub secret_name: String,
    /// `metadata.uid` (empty when unknown): tells a re-created Secret from the old one.
    pub uid: String,
    /// `metadata.creationTimestamp`, set by the API server: the older Secret keeps a key.
    pub created: Option<DateTime<Utc>>,
    pub spec: Result<PeerSpec, SecretError>,
    /// The `kwg.io/tunnel-ip` annotation, when it holds an address.
    pub tunnel_ip: Option<TunnelIp>,
    /// The `kwg.io/error` annotation.
    pub error: Option<String>,
    /// The `kwg.io/groups` annotation: the owner's groups, as admission verified them.
    pub groups: Vec<String>,
}

impl PeerSecret {
    /// Parses a Secret's name, `data` and annotations.
    pub fn parse(
        secret_name: &str,
        data: &BTreeMap<String, Vec<u8>>,
        annotations: &BTreeMap<String, String>,
    ) -> PeerSecret {
        let spec = PeerSpec::from_secret_data(secret_name, data).map_err(SecretError::from);
        PeerSecret::with_spec(secret_name, spec, annotations)
    }

    /// A Secret too large to parse: only its annotations are read.
    pub fn too_large(
        secret_name: &str,
        bytes: usize,
        limit: usize,
        annotations: &BTreeMap<String, String>,
    ) -> PeerSecret {
        let spec = Err(SecretError::TooLarge { bytes, limit });
        PeerSecret::with_spec(secret_name, spec, annotations)
    }

    fn with_spec(
        secret_name: &str,
        spec: Result<PeerSpec, SecretError>,
        annotations: &BTreeMap<String, String>,
    ) -> PeerSecret {
        PeerSecret {
            secret_name: secret_name.to_owned(),
            uid: String::new(),
            created: None,
            spec,
            tunnel_ip: kwg_contract::tunnel_ip_from_annotations(annotations).and_then(Result::ok),
            error: annotations.get(ERROR_ANNOTATION).cloned(),
            groups: kwg_contract::groups_from_annotations(annotations),
        }
    }

    /// Who holds a key: the Secret, told apart from a re-created one of the same name.
    fn id(&self) -> (String, String) {
        (self.secret_name.clone(), self.uid.clone())
    }

    /// Oldest first (creation time, then uid, then name; unknown creation times last).
    fn age(&self) -> (bool, Option<DateTime<Utc>>, &str, &str) {
        (
            self.created.is_none(),
            self.created,
            &self.uid,
            &self.secret_name,
        )
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

/// Why a peer Secret is not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// Its data does not follow the contract.
    Invalid,
    /// Larger than `--max-secret-bytes`: not parsed at all.
    TooLarge,
    /// Its public key is held by an older Secret.
    DuplicateKey,
    /// Its owner already has `--max-peers-per-owner` peers.
    OwnerLimit,
    /// No address left in the tunnel CIDR.
    CidrFull,
}

impl Problem {
    /// The Event reason (`kubectl describe secret`).
    pub fn event_reason(self) -> &'static str {
        match self {
            Problem::Invalid => "MalformedPeer",
            Problem::TooLarge => "SecretTooLarge",
            Problem::DuplicateKey => "DuplicatePublicKey",
            Problem::OwnerLimit => "PeerLimitReached",
            Problem::CidrFull => "TunnelCidrFull",
        }
    }
}

/// A Secret that is not served, to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    pub secret_name: String,
    pub problem: Problem,
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
    /// The owner's groups from the Secret's `kwg.io/groups` (counted with `--trust-peer-groups`).
    pub groups: Vec<String>,
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

/// Default of `--max-peers-per-owner`.
pub const DEFAULT_PEERS_PER_OWNER: usize = 20;
/// Default of `--max-lease`: 24 h.
pub const DEFAULT_MAX_LEASE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

type Rejected<'a> = (&'a PeerSecret, Problem, String);

/// The state the core keeps between reconciles.
#[derive(Debug)]
pub struct Core {
    alloc: Allocator,
    /// Reason last reported per malformed Secret (one log line and Event per reason).
    reported: HashMap<String, String>,
    /// The Secret (name, uid) serving each public key: it keeps the key while it lives.
    holders: HashMap<PublicKey, (String, String)>,
    peers_per_owner: usize,
    /// Leader: assigns addresses. Follower (another replica leads): serves only the
    /// addresses the leader wrote into the annotations, assigns none.
    assigning: bool,
    /// The longest lease honoured, from when this gateway first saw the lease's value.
    max_lease: chrono::Duration,
    /// Per Secret (name, uid): its `leaseExpires` and when it was first seen with it.
    lease_seen: HashMap<(String, String), (DateTime<Utc>, DateTime<Utc>)>,
}

impl Core {
    pub fn new(alloc: Allocator) -> Core {
        Core {
            alloc,
            reported: HashMap::new(),
            holders: HashMap::new(),
            peers_per_owner: DEFAULT_PEERS_PER_OWNER,
            assigning: true,
            max_lease: chrono::Duration::from_std(DEFAULT_MAX_LEASE)
                .unwrap_or(chrono::Duration::MAX),
            lease_seen: HashMap::new(),
        }
    }

    /// Honours a lease for at most `max` after the gateway first saw its `leaseExpires`
    /// (`--max-lease`): a farther one ends there.
    pub fn with_max_lease(mut self, max: std::time::Duration) -> Core {
        self.max_lease = chrono::Duration::from_std(max).unwrap_or(chrono::Duration::MAX);
        self
    }

    /// When `secret`'s lease ends for the gateway: its `leaseExpires`, or `--max-lease` after
    /// the gateway first saw that value, whichever is sooner. A renewal (a new value) starts
    /// again from `now`.
    fn lease_end(
        &mut self,
        secret: &PeerSecret,
        stated: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> DateTime<Utc> {
        let seen = self.lease_seen.entry(secret.id()).or_insert((stated, now));
        if seen.0 != stated {
            *seen = (stated, now);
        }
        stated.min(seen.1.checked_add_signed(self.max_lease).unwrap_or(stated))
    }

    /// Serves at most `n` peers per `owner` (those already served, then the oldest).
    pub fn with_peers_per_owner(mut self, n: usize) -> Core {
        self.peers_per_owner = n;
        self
    }

    /// Whether this replica assigns addresses (it leads) or follows the annotations.
    pub fn set_assigning(&mut self, assigning: bool) {
        self.assigning = assigning;
    }

    pub fn gateway_ip(&self) -> TunnelIp {
        self.alloc.gateway_ip()
    }

    /// Decides what to change, given every peer Secret and the device's peers with their
    /// AllowedIPs.
    pub fn reconcile<'a>(
        &mut self,
        secrets: impl IntoIterator<Item = &'a PeerSecret>,
        running: &BTreeMap<PublicKey, Vec<IpNet>>,
        now: SystemTime,
    ) -> Plan {
        let mut plan = Plan::default();
        let mut errors: Vec<Rejected<'a>> = Vec::new();
        let mut valid: Vec<(&PeerSecret, &PeerSpec)> = Vec::new();
        let at = DateTime::<Utc>::from(now);
        let mut ends = HashMap::new();
        for secret in secrets {
            match &secret.spec {
                Err(e @ SecretError::TooLarge { .. }) => {
                    errors.push((secret, Problem::TooLarge, e.to_string()))
                }
                Err(e) => errors.push((secret, Problem::Invalid, e.to_string())),
                Ok(spec) => {
                    let end = self.lease_end(secret, spec.lease_expires, at);
                    ends.insert(secret.id(), end);
                    if at >= end {
                        plan.expired.push(secret.secret_name.clone())
                    } else {
                        valid.push((secret, spec))
                    }
                }
            }
        }
        // Secrets gone are forgotten.
        self.lease_seen.retain(|id, _| ends.contains_key(id));
        let live = self.select(valid, &mut errors);
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
            let want = IpNet::V4(Ipv4Net::from(ip.addr()));
            // The IPv4 address first; the peer loop adds its IPv6 twin after it.
            match running.get(&spec.public_key) {
                Some(have) if have.first() == Some(&want) => {}
                have => plan.device.push(DeviceOp::Upsert {
                    name: spec.name.clone(),
                    key: spec.public_key,
                    ip,
                    new: have.is_none(),
                }),
            }
            let lease = ends
                .get(&secret.id())
                .copied()
                .unwrap_or(spec.lease_expires);
            plan.next_expiry = Some(plan.next_expiry.map_or(lease, |e| e.min(lease)));
            let mut spec = spec.clone();
            spec.lease_expires = lease; // what /peers shows: when the gateway collects it
            plan.active.push(ActivePeer {
                spec,
                ip,
                groups: secret.groups.clone(),
            });
        }
        for key in running.keys().filter(|k| !desired.contains_key(*k)) {
            plan.device.push(DeviceOp::Remove { key: *key });
        }
        plan
    }

    /// Picks the valid peers to serve, oldest first: one Secret per public key (the one
    /// holding it, else the oldest) and at most `peers_per_owner` per owner (those already
    /// served first, then the oldest). The rest are rejected.
    fn select<'a>(
        &mut self,
        mut valid: Vec<(&'a PeerSecret, &'a PeerSpec)>,
        errors: &mut Vec<Rejected<'a>>,
    ) -> Vec<(&'a PeerSecret, &'a PeerSpec)> {
        let holds = |h: &HashMap<PublicKey, (String, String)>, s: &PeerSecret, k| {
            h.get(k)
                .is_some_and(|id| id.0 == s.secret_name && id.1 == s.uid)
        };
        valid.sort_by(|(a, ka), (b, kb)| {
            let (ha, hb) = (
                holds(&self.holders, a, &ka.public_key),
                holds(&self.holders, b, &kb.public_key),
            );
            hb.cmp(&ha).then_with(|| a.age().cmp(&b.age()))
        });
        let mut key_owner: HashMap<PublicKey, &PeerName> = HashMap::new();
        let mut unique = Vec::with_capacity(valid.len());
        for (secret, spec) in valid {
            match key_owner.get(&spec.public_key) {
                Some(owner) => errors.push((
                    secret,
                    Problem::DuplicateKey,
                    format!("public key is already used by peer `{owner}`: give every machine its own key (`wg genkey`)"),
                )),
                None => {
                    key_owner.insert(spec.public_key, &spec.name);
                    unique.push((secret, spec));
                }
            }
        }
        self.holders = unique
            .iter()
            .map(|(s, spec)| (spec.public_key, s.id()))
            .collect();
        // Served: holding an address, or (after a restart) annotated with one and no error.
        // An owner's annotations only reorder that owner's own peers.
        let served = |s: &PeerSecret, spec: &PeerSpec| {
            self.alloc.get(&spec.name).is_some() || (s.tunnel_ip.is_some() && s.error.is_none())
        };
        unique.sort_by_key(|(s, spec)| (!served(s, spec), s.age()));
        let mut per_owner: HashMap<&str, usize> = HashMap::new();
        let mut live = Vec::with_capacity(unique.len());
        for (secret, spec) in unique {
            let n = per_owner.entry(spec.owner.as_str()).or_default();
            if *n >= self.peers_per_owner {
                errors.push((secret, Problem::OwnerLimit, format!(
                    "owner `{}` already has {} peers, the gateway's limit (--max-peers-per-owner): remove a peer no longer used (`kwg leave` on that machine, or delete its Secret)",
                    spec.owner, self.peers_per_owner
                )));
            } else {
                *n += 1;
                live.push((secret, spec));
            }
        }
        live
    }

    /// Frees addresses of peers that are gone, then keeps, reclaims (after a restart, from
    /// the annotation) or assigns an address for every live peer, in that order so a new
    /// peer never takes an address an annotated peer holds.
    fn allocate<'a>(
        &mut self,
        live: &[(&'a PeerSecret, &PeerSpec)],
        errors: &mut Vec<Rejected<'a>>,
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
        if !self.assigning {
            self.follow(live);
            return;
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
                errors.push((secret, Problem::CidrFull, e.to_string()));
            }
        }
    }

    /// A follower's addresses: exactly the annotated ones (without an error); a peer the
    /// leader has not annotated yet is not served until it has.
    fn follow(&mut self, live: &[(&PeerSecret, &PeerSpec)]) {
        for (secret, spec) in live {
            let annotated = secret.tunnel_ip.filter(|_| secret.error.is_none());
            if annotated.is_none() || self.alloc.get(&spec.name) != annotated {
                self.alloc.release(&spec.name);
            }
        }
        for (secret, spec) in live {
            if let Some(ip) = secret.tunnel_ip.filter(|_| secret.error.is_none()) {
                self.alloc.claim(&spec.name, ip);
            }
        }
    }

    fn report(&mut self, errors: Vec<Rejected<'_>>, plan: &mut Plan) {
        let names: std::collections::HashSet<&str> = errors
            .iter()
            .map(|(s, _, _)| s.secret_name.as_str())
            .collect();
        self.reported.retain(|k, _| names.contains(k.as_str()));
        for (secret, problem, reason) in errors {
            let first_report = self.reported.get(&secret.secret_name) != Some(&reason);
            let write_annotation = secret.error.as_deref() != Some(reason.as_str());
            if first_report {
                self.reported
                    .insert(secret.secret_name.clone(), reason.clone());
            }
            if first_report || write_annotation {
                plan.malformed.push(Malformed {
                    secret_name: secret.secret_name.clone(),
                    problem,
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
mod tests;
