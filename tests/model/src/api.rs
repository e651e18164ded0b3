//! The API server's data, in memory: the peer Secrets of `kwg-system` (contract data and
//! annotations, with uid, resourceVersion and creation time) and the gateway info. Laptops
//! reach it only while it is not blocked; the gateway, inside the cluster, always does.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use chrono::{DateTime, Utc};
use kwg_contract::keys::PublicKey;
use kwg_contract::{ERROR_ANNOTATION, GatewayInfo, PeerSpec, TUNNEL_IP_ANNOTATION};

use crate::sut::LeaseFailure;

/// One stored peer Secret.
#[derive(Debug, Clone)]
pub struct StoredSecret {
    pub uid: String,
    pub resource_version: u64,
    pub created: DateTime<Utc>,
    pub data: BTreeMap<String, Vec<u8>>,
    pub annotations: BTreeMap<String, String>,
}

impl StoredSecret {
    pub fn spec(&self, name: &str) -> Option<PeerSpec> {
        PeerSpec::from_secret_data(name, &self.data).ok()
    }

    pub fn tunnel_ip(&self) -> Option<Ipv4Addr> {
        self.annotations.get(TUNNEL_IP_ANNOTATION)?.parse().ok()
    }
}

/// Why registering failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterError {
    /// A Secret of that name holds another key or owner: another machine's.
    Taken,
}

#[derive(Debug)]
pub struct Api {
    pub secrets: BTreeMap<String, StoredSecret>,
    pub info: GatewayInfo,
    pub info_version: u64,
    /// Bumped on every write (what a watch would deliver).
    pub version: u64,
    next_uid: u64,
    /// Laptops cannot reach the API server.
    pub blocked: bool,
    /// Every delete of a peer Secret: name, uid, by whom, the key it held.
    pub deletes: Vec<(String, String, String, Option<PublicKey>)>,
}

impl Api {
    pub fn new(info: GatewayInfo) -> Api {
        Api {
            secrets: BTreeMap::new(),
            info,
            info_version: 1,
            version: 1,
            next_uid: 1,
            blocked: false,
            deletes: Vec::new(),
        }
    }

    fn bump(&mut self) -> u64 {
        self.version += 1;
        self.version
    }

    /// `kwg`'s register: create, or overwrite this machine's own Secret (same key and owner).
    pub fn register(
        &mut self,
        spec: &PeerSpec,
        now: DateTime<Utc>,
    ) -> Result<String, RegisterError> {
        let name = spec.secret_name();
        let rv = self.bump();
        if let Some(existing) = self.secrets.get_mut(&name) {
            let ours = existing
                .spec(&name)
                .is_some_and(|s| s.public_key == spec.public_key && s.owner == spec.owner);
            if !ours {
                return Err(RegisterError::Taken);
            }
            existing.data = spec.to_secret_data();
            existing.resource_version = rv;
            return Ok(existing.uid.clone());
        }
        let uid = format!("uid-{}", self.next_uid);
        self.next_uid += 1;
        self.secrets.insert(
            name,
            StoredSecret {
                uid: uid.clone(),
                resource_version: rv,
                created: now,
                data: spec.to_secret_data(),
                annotations: BTreeMap::new(),
            },
        );
        Ok(uid)
    }

    /// The lease merge patch, on the object of `uid` only.
    pub fn renew(
        &mut self,
        name: &str,
        uid: Option<&str>,
        expires: DateTime<Utc>,
    ) -> Result<(), LeaseFailure> {
        let rv = self.bump();
        let Some(s) = self.secrets.get_mut(name) else {
            return Err(LeaseFailure::NotFound);
        };
        if uid.is_some_and(|u| u != s.uid) {
            return Err(LeaseFailure::Replaced);
        }
        s.data.insert(
            "leaseExpires".into(),
            kwg_contract::format_lease(expires).into_bytes(),
        );
        s.resource_version = rv;
        Ok(())
    }

    /// What `wait_tunnel_ip` waits for: the address, or the gateway's error.
    pub fn decided(&self, name: &str) -> Option<Result<Ipv4Addr, String>> {
        let s = self.secrets.get(name)?;
        if let Some(e) = s.annotations.get(ERROR_ANNOTATION) {
            return Some(Err(e.clone()));
        }
        s.tunnel_ip().map(Ok)
    }

    /// `delete_own_peer`: the object of `uid`, else the Secret holding `public_key`; never
    /// another. True when something was deleted.
    pub fn delete_own(
        &mut self,
        name: &str,
        uid: Option<&str>,
        public_key: Option<&str>,
        who: &str,
    ) -> bool {
        let Some(s) = self.secrets.get(name) else {
            return false;
        };
        let ours = match (uid, public_key) {
            (Some(uid), _) => s.uid == uid,
            (None, Some(key)) => s
                .spec(name)
                .is_some_and(|spec| spec.public_key.to_string() == key),
            (None, None) => false,
        };
        if ours {
            self.delete(name, who);
        }
        ours
    }

    pub fn delete(&mut self, name: &str, who: &str) {
        if let Some(s) = self.secrets.remove(name) {
            let key = s.spec(name).map(|p| p.public_key);
            self.deletes.push((name.into(), s.uid, who.into(), key));
            self.bump();
        }
    }

    /// The gateway's annotation patch: its address, no error.
    pub fn annotate(&mut self, name: &str, ip: Ipv4Addr) {
        let rv = self.bump();
        if let Some(s) = self.secrets.get_mut(name) {
            s.annotations
                .insert(TUNNEL_IP_ANNOTATION.into(), ip.to_string());
            s.annotations.remove(ERROR_ANNOTATION);
            s.resource_version = rv;
        }
    }

    /// The gateway's error patch: the reason, no address.
    pub fn annotate_error(&mut self, name: &str, reason: &str) {
        let rv = self.bump();
        if let Some(s) = self.secrets.get_mut(name) {
            s.annotations.insert(ERROR_ANNOTATION.into(), reason.into());
            s.annotations.remove(TUNNEL_IP_ANNOTATION);
            s.resource_version = rv;
        }
    }

    pub fn set_info(&mut self, info: GatewayInfo) {
        self.info = info;
        self.info_version += 1;
        self.bump();
    }
}
