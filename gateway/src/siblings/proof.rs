//! The proof a replica sends with `GET /replica/stats` (pure: time and nonces passed in).
//!
//! The header [`HEADER`] is `<unix ms>.<nonce>.<MAC>`: a keyed BLAKE2s, under a key derived
//! from the gateway's private key (every replica holds it; nothing else in the cluster can
//! read it), of the time, a random 16-byte nonce, the **target replica's pod name** and the
//! path. The target accepts it only with its own name in it, within [`SKEW`] of its clock,
//! made after it started, and only once ([`Seen`]). So a proof read off pod-to-pod traffic
//! cannot be sent to another replica, nor to the same one again (nor to its restarted
//! container, whose cache is new: the proof predates it).

use blake2::Blake2sMac256;
use blake2::digest::{FixedOutput, KeyInit, Mac, Update};
use kwg_contract::keys::PrivateKey;
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The request header carrying the proof.
pub const HEADER: &str = "x-kwg-replica";
/// How far a proof's time may be from the receiver's clock (nodes' clocks differ a little;
/// a replay inside it is refused by [`Seen`]).
pub const SKEW: Duration = Duration::from_secs(30);
/// Domain separation of the derived key (never used for anything else).
const LABEL: &[u8] = b"kwg replica stats v1";
/// Proofs [`Seen`] remembers at most: only holders of the key add one (each sibling about
/// once a second), so a full cache means something is wrong; it refuses until proofs age out.
const MAX_SEEN: usize = 4096;

/// Why a proof was refused (the caller gets 403 either way; this goes to the debug log).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProofRefused {
    #[error("no proof, or not `<unix ms>.<32 hex digits>.<64 hex digits>`")]
    Malformed,
    #[error(
        "the proof's time is more than {} s from this replica's clock: check the nodes' clock sync",
        SKEW.as_secs()
    )]
    Stale,
    #[error("the proof was not made with the gateway's key for this replica's pod name and path")]
    Mac,
    #[error("the proof was made before this replica started")]
    BeforeStart,
    #[error("the proof was used already (a replay)")]
    Replayed,
    #[error("more than {MAX_SEEN} proofs within {} s", SKEW.as_secs())]
    TooMany,
}

/// The key replicas prove themselves with, derived from the shared private key.
#[derive(Clone)]
pub struct ReplicaKey([u8; 32]);

impl std::fmt::Debug for ReplicaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReplicaKey(redacted)")
    }
}

/// What makes each proof unique.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Nonce(pub [u8; 16]);

impl Nonce {
    pub fn random() -> Nonce {
        Nonce(rand::random())
    }
}

/// A proof whose MAC holds, still to be checked against [`Seen`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proven {
    ms: u64,
    nonce: Nonce,
}

impl ReplicaKey {
    pub fn derive(private: &PrivateKey) -> ReplicaKey {
        let mut mac =
            <Blake2sMac256 as KeyInit>::new_from_slice(private.as_bytes()).expect("32-byte key");
        Mac::update(&mut mac, LABEL);
        ReplicaKey(mac.finalize_fixed().into())
    }

    /// The MAC of the fields, each after its length (no two field lists give one input).
    fn mac(&self, ms: u64, nonce: &Nonce, target: &str, path: &str) -> Blake2sMac256 {
        let mut mac = <Blake2sMac256 as KeyInit>::new_from_slice(&self.0).expect("32-byte key");
        let ms = ms.to_be_bytes();
        for field in [&ms[..], &nonce.0, target.as_bytes(), path.as_bytes()] {
            Update::update(&mut mac, &(field.len() as u32).to_be_bytes());
            Update::update(&mut mac, field);
        }
        mac
    }

    /// The header value proving the caller at `now` to the replica whose pod is `target`.
    pub fn proof(&self, target: &str, path: &str, nonce: Nonce, now: SystemTime) -> String {
        let ms = unix_ms(now);
        let tag: [u8; 32] = self.mac(ms, &nonce, target, path).finalize_fixed().into();
        format!("{ms}.{}.{}", hex(&nonce.0), hex(&tag))
    }

    /// Whether `header` proves a replica to this one (pod `me`) at `now`: the MAC (compared
    /// in constant time) and the time; [`Seen::admit`] then refuses a replay.
    pub fn verify(
        &self,
        header: &str,
        me: &str,
        path: &str,
        now: SystemTime,
    ) -> Result<Proven, ProofRefused> {
        let mut parts = header.split('.');
        let (Some(ms), Some(nonce), Some(tag), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(ProofRefused::Malformed);
        };
        let (Ok(ms), Some(nonce), Some(tag)) = (ms.parse::<u64>(), unhex::<16>(nonce), unhex(tag))
        else {
            return Err(ProofRefused::Malformed);
        };
        let tag: [u8; 32] = tag;
        let nonce = Nonce(nonce);
        if unix_ms(now).abs_diff(ms) > SKEW.as_millis() as u64 {
            return Err(ProofRefused::Stale);
        }
        self.mac(ms, &nonce, me, path)
            .verify_slice(&tag)
            .map_err(|_| ProofRefused::Mac)?;
        Ok(Proven { ms, nonce })
    }
}

/// The proofs this replica accepted within [`SKEW`], and when it started.
#[derive(Debug)]
pub struct Seen {
    started_ms: u64,
    nonces: HashMap<Nonce, u64>,
}

impl Seen {
    pub fn new(started: SystemTime) -> Seen {
        Seen {
            started_ms: unix_ms(started),
            nonces: HashMap::new(),
        }
    }

    /// Accepts a proven proof once: not one made before this replica started, nor one seen
    /// already (a proof older than [`SKEW`] is refused by its time, so it is forgotten then).
    pub fn admit(&mut self, p: Proven, now: SystemTime) -> Result<(), ProofRefused> {
        if p.ms < self.started_ms {
            return Err(ProofRefused::BeforeStart);
        }
        let oldest = unix_ms(now).saturating_sub(SKEW.as_millis() as u64);
        self.nonces.retain(|_, ms| *ms >= oldest);
        if self.nonces.contains_key(&p.nonce) {
            return Err(ProofRefused::Replayed);
        }
        if self.nonces.len() >= MAX_SEEN {
            return Err(ProofRefused::TooMany);
        }
        self.nonces.insert(p.nonce, p.ms);
        Ok(())
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests;
