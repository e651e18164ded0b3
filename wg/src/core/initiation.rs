//! Opens a handshake initiation far enough to learn who sent it and its TAI64N timestamp (the
//! WireGuard paper, section 5.4.2), as the responder does.
//!
//! boringtun's `Tunn` rejects an initiation whose timestamp is not newer than the last one it
//! accepted, but it keeps that timestamp only as long as the `Tunn` lives, and the core drops a
//! peer's `Tunn` when its sessions expire. The core keeps the timestamp per peer instead, so a
//! captured initiation replayed after expiry is still refused.

use blake2::{Blake2s256, Digest};
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce, Tag};
use hmac::{Mac, SimpleHmac};

use boringtun::x25519;

use kwg_contract::keys::PublicKey;

/// Noise protocol name and WireGuard identifier (the WireGuard paper, section 5.4).
const CONSTRUCTION: &[u8] = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";
const IDENTIFIER: &[u8] = b"WireGuard v1 zx2c4 Jason@zx2c4.com";

/// Field offsets of a handshake initiation (section 5.4.2): type and sender index (8 bytes),
/// ephemeral key (32), encrypted static key (32 + 16 tag), encrypted timestamp (12 + 16 tag),
/// then mac1 and mac2 (16 each).
const EPHEMERAL: std::ops::Range<usize> = 8..40;
const STATIC: std::ops::Range<usize> = 40..88;
const TIMESTAMP: std::ops::Range<usize> = 88..116;
const INITIATION_LEN: usize = 148;

/// A TAI64N label: 8 bytes of seconds and 4 of nanoseconds, big-endian, so byte order is time
/// order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tai64N([u8; 12]);

/// What the responder learns from an initiation before doing any work of its own.
#[derive(Debug)]
pub struct Opened {
    /// The sender's static public key.
    pub peer: PublicKey,
    /// The sender's timestamp; `None` if it does not authenticate (the sender does not hold
    /// the private key of `peer`).
    pub timestamp: Option<Tai64N>,
}

fn hash(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Blake2s256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut m =
        <SimpleHmac<Blake2s256> as Mac>::new_from_slice(key).expect("HMAC takes any key size");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// KDF2 of the paper: the next chaining key and an AEAD key.
fn kdf2(chaining_key: &[u8; 32], input: &[u8]) -> ([u8; 32], [u8; 32]) {
    let t0 = hmac(chaining_key, &[input]);
    let ck = hmac(&t0, &[&[1]]);
    let key = hmac(&t0, &[&ck, &[2]]);
    (ck, key)
}

/// Opens `sealed` (plaintext + 16-byte tag) with nonce 0 and `aad`.
fn open<const N: usize>(key: &[u8; 32], sealed: &[u8], aad: &[u8]) -> Option<[u8; N]> {
    let (ct, tag) = sealed.split_at(N);
    let mut out: [u8; N] = ct.try_into().ok()?;
    ChaCha20Poly1305::new(key.into())
        .decrypt_in_place_detached(&Nonce::default(), aad, &mut out, Tag::from_slice(tag))
        .ok()?;
    Some(out)
}

/// Opens the initiation `datagram` sent to the holder of `secret`/`public`; `None` if it is not
/// an initiation to this key at all.
pub fn open_initiation(
    secret: &x25519::StaticSecret,
    public: &x25519::PublicKey,
    datagram: &[u8],
) -> Option<Opened> {
    if datagram.len() != INITIATION_LEN {
        return None;
    }
    let ephemeral: [u8; 32] = datagram[EPHEMERAL].try_into().ok()?;
    let ck = hash(&[CONSTRUCTION]);
    let h = hash(&[&hash(&[&ck, IDENTIFIER]), public.as_bytes()]);
    let h = hash(&[&h, &ephemeral]);
    let ck = hmac(&hmac(&ck, &[&ephemeral]), &[&[1]]);
    let shared = secret.diffie_hellman(&x25519::PublicKey::from(ephemeral));
    let (ck, key) = kdf2(&ck, shared.as_bytes());
    let peer: [u8; 32] = open(&key, &datagram[STATIC], &h)?;
    let h = hash(&[&h, &datagram[STATIC]]);
    let static_shared = secret.diffie_hellman(&x25519::PublicKey::from(peer));
    let (_, key) = kdf2(&ck, static_shared.as_bytes());
    let timestamp = open::<12>(&key, &datagram[TIMESTAMP], &h).map(Tai64N);
    Some(Opened {
        peer: PublicKey::from_bytes(peer),
        timestamp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testing::initiation;
    use kwg_contract::keys::PrivateKey;

    #[test]
    fn names_the_sender_and_orders_timestamps() {
        let (a, b) = (PrivateKey::generate(), PrivateKey::generate());
        let (secret, public) = (b.to_secret(), b.public_key().to_x25519());
        let first = open_initiation(&secret, &public, &initiation(&a, &b.public_key())).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = open_initiation(&secret, &public, &initiation(&a, &b.public_key())).unwrap();
        assert_eq!(first.peer, a.public_key());
        assert!(second.timestamp.unwrap() > first.timestamp.unwrap());
    }

    #[test]
    fn tampering_or_another_recipient_is_refused() {
        let (a, b, c) = (
            PrivateKey::generate(),
            PrivateKey::generate(),
            PrivateKey::generate(),
        );
        let (secret, public) = (b.to_secret(), b.public_key().to_x25519());
        let mut init = initiation(&a, &b.public_key());
        init[TIMESTAMP.start] ^= 1;
        let opened = open_initiation(&secret, &public, &init).unwrap();
        assert_eq!((opened.peer, opened.timestamp), (a.public_key(), None));
        init[STATIC.start] ^= 1;
        assert!(open_initiation(&secret, &public, &init).is_none());
        let to_c = initiation(&a, &c.public_key());
        assert!(open_initiation(&secret, &public, &to_c).is_none());
        assert!(open_initiation(&secret, &public, &to_c[..100]).is_none());
    }
}
