use super::*;

const PATH: &str = crate::siblings::PATH;
const A: &str = "kwg-gateway-7d9f8c6b5-abcde";
const B: &str = "kwg-gateway-7d9f8c6b5-fghij";

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn nonce(n: u8) -> Nonce {
    Nonce([n; 16])
}

#[test]
fn only_a_holder_of_the_key_proves_itself_to_the_replica_named() {
    let key = PrivateKey::generate();
    let k = ReplicaKey::derive(&key);
    let proof = k.proof(A, PATH, nonce(1), now());
    assert!(k.verify(&proof, A, PATH, now()).is_ok());
    assert_eq!(
        k.verify(&proof, B, PATH, now()),
        Err(ProofRefused::Mac),
        "a proof for replica A is refused by replica B"
    );
    assert_eq!(
        k.verify(&proof, A, "/peers", now()),
        Err(ProofRefused::Mac),
        "bound to the path"
    );
    let other = ReplicaKey::derive(&PrivateKey::generate());
    assert_eq!(other.verify(&proof, A, PATH, now()), Err(ProofRefused::Mac));
    let forged = other.proof(A, PATH, nonce(1), now());
    assert_eq!(k.verify(&forged, A, PATH, now()), Err(ProofRefused::Mac));
    // Another nonce under the same MAC: refused (the nonce is in the MAC input).
    let (ms, rest) = proof.split_once('.').unwrap();
    let swapped = format!("{ms}.{}{}", "02".repeat(16), &rest[32..]);
    assert_eq!(k.verify(&swapped, A, PATH, now()), Err(ProofRefused::Mac));
    for bad in [
        "",
        "1800000000000",
        "1800000000000.zz",
        "x.00.00",
        &proof[..proof.len() - 2],
        &format!("{proof}.00"),
        &proof.replacen('.', ".+", 1)[..proof.len()],
    ] {
        assert_eq!(
            k.verify(bad, A, PATH, now()),
            Err(ProofRefused::Malformed),
            "{bad:?}"
        );
    }
    // The derived key is not the private key, and its Debug is redacted.
    assert_ne!(&k.0, key.as_bytes());
    assert_eq!(format!("{k:?}"), "ReplicaKey(redacted)");
}

#[test]
fn a_proof_counts_within_the_skew_of_the_clock_only() {
    let k = ReplicaKey::derive(&PrivateKey::generate());
    let proof = k.proof(A, PATH, nonce(1), now());
    assert!(k.verify(&proof, A, PATH, now() + SKEW).is_ok());
    assert!(
        k.verify(&proof, A, PATH, now() - SKEW).is_ok(),
        "a clock ahead"
    );
    let late = now() + SKEW + Duration::from_millis(1);
    assert_eq!(k.verify(&proof, A, PATH, late), Err(ProofRefused::Stale));
}

#[test]
fn a_replica_accepts_each_proof_once_and_none_made_before_it_started() {
    let k = ReplicaKey::derive(&PrivateKey::generate());
    let started = now() - Duration::from_secs(60);
    let mut seen = Seen::new(started);
    let admit = |seen: &mut Seen, proof: &str, at: SystemTime| {
        seen.admit(k.verify(proof, A, PATH, at)?, at)
    };
    let first = k.proof(A, PATH, nonce(1), now());
    assert_eq!(admit(&mut seen, &first, now()), Ok(()));
    let again = now() + Duration::from_secs(5);
    assert_eq!(
        admit(&mut seen, &first, again),
        Err(ProofRefused::Replayed),
        "an old proof replayed within the window"
    );
    assert_eq!(
        admit(&mut seen, &first, now() + SKEW * 2),
        Err(ProofRefused::Stale),
        "and after it"
    );
    // A new proof (new nonce) at the same millisecond is fine.
    let second = k.proof(A, PATH, nonce(2), now());
    assert_eq!(admit(&mut seen, &second, again), Ok(()));
    // A restarted replica (empty cache) still refuses a proof made before it started.
    let mut restarted = Seen::new(now() + Duration::from_secs(1));
    let at = now() + Duration::from_secs(2);
    assert_eq!(
        admit(&mut restarted, &first, at),
        Err(ProofRefused::BeforeStart)
    );
    let fresh = k.proof(A, PATH, nonce(3), at);
    assert_eq!(admit(&mut restarted, &fresh, at), Ok(()));
}

#[test]
fn the_cache_forgets_proofs_out_of_the_window_and_is_bounded() {
    let k = ReplicaKey::derive(&PrivateKey::generate());
    let mut seen = Seen::new(now());
    let mut t = now();
    for i in 0..MAX_SEEN as u32 {
        let mut n = [0u8; 16];
        n[..4].copy_from_slice(&i.to_be_bytes());
        let p = k.proof(A, PATH, Nonce(n), t);
        seen.admit(k.verify(&p, A, PATH, t).unwrap(), t).unwrap();
    }
    let one_more = k.proof(A, PATH, nonce(0xff), t);
    let proven = k.verify(&one_more, A, PATH, t).unwrap();
    assert_eq!(seen.admit(proven, t), Err(ProofRefused::TooMany));
    // Once those proofs are out of the window they are forgotten, and new ones fit.
    t += SKEW + Duration::from_millis(1);
    let later = k.proof(A, PATH, nonce(0xff), t);
    let proven = k.verify(&later, A, PATH, t).unwrap();
    assert_eq!(seen.admit(proven, t), Ok(()));
    assert_eq!(seen.nonces.len(), 1);
}
