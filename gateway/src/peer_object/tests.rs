use super::*;
use crate::core::SecretError;
use k8s_openapi::ByteString;

fn secret(extra: usize) -> Secret {
    let mut s = Secret::default();
    s.metadata.name = Some("kwg-peer-big".into());
    s.metadata.uid = Some("u1".into());
    s.metadata.annotations = Some(BTreeMap::from([(
        "kwg.io/tunnel-ip".to_owned(),
        "100.77.0.9".to_owned(),
    )]));
    s.data = Some(BTreeMap::from([(
        "blob".to_owned(),
        ByteString(vec![b'x'; extra]),
    )]));
    s
}

#[test]
fn oversized_secret_is_not_parsed() {
    let p = PeerObject::from_secret(&secret(20_000), DEFAULT_MAX_SECRET_BYTES);
    let Err(SecretError::TooLarge { bytes, limit }) = &p.secret.spec else {
        panic!("{:?}", p.secret.spec)
    };
    assert_eq!((*bytes, *limit), (20_000 + 4 + 16 + 10, 16_384));
    assert!(
        p.secret
            .spec
            .as_ref()
            .unwrap_err()
            .to_string()
            .contains("--max-secret-bytes")
    );
    assert_eq!(p.secret.uid, "u1");
    assert_eq!(
        p.secret.tunnel_ip.map(|i| i.to_string()).as_deref(),
        Some("100.77.0.9")
    );
}

#[test]
fn small_secret_is_parsed() {
    let p = PeerObject::from_secret(&secret(10), DEFAULT_MAX_SECRET_BYTES);
    assert!(
        matches!(p.secret.spec, Err(SecretError::Contract(_))),
        "{:?}",
        p.secret.spec
    );
}
