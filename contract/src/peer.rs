//! The peer Secret: what a client registers and the gateway reads.

use super::error::truncate_for_message;
use super::{ContractError, PEER_SECRET_PREFIX, PeerName};
use crate::keys::PublicKey;
use chrono::{DateTime, SecondsFormat, Utc};
use std::collections::BTreeMap;
use std::time::SystemTime;

const NAME: &str = "name";
const PUBLIC_KEY: &str = "publicKey";
const OWNER: &str = "owner";
const HOSTNAME: &str = "hostname";
const NAMESPACES: &str = "namespaces";
const LEASE_EXPIRES: &str = "leaseExpires";
/// Every field of the peer format, in the order of docs/contract.md.
const FIELDS: [&str; 6] = [NAME, PUBLIC_KEY, OWNER, HOSTNAME, NAMESPACES, LEASE_EXPIRES];

/// Longest owner (kubeconfig user names can be long e-mail addresses or OIDC subjects).
const MAX_OWNER: usize = 256;
/// Longest hostname (RFC 1035: 253 characters for a full name).
const MAX_HOSTNAME: usize = 253;
/// Longest `namespaces` value: 64 namespaces of 63 characters plus commas.
const MAX_NAMESPACES: usize = 64 * 64;
/// Longest of the other fields (a name, a base64 key, a time).
const MAX_SHORT: usize = 64;

/// A peer as registered in its Secret: validated, ready for the gateway and the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSpec {
    pub name: PeerName,
    pub public_key: PublicKey,
    /// The kubeconfig user that registered the peer.
    pub owner: String,
    /// The registering machine's hostname.
    pub hostname: String,
    /// Namespaces the peer asked for (DNS labels, possibly none).
    pub namespaces: Vec<String>,
    /// When the lease ends; the gateway deletes the Secret after it.
    pub lease_expires: DateTime<Utc>,
}

impl PeerSpec {
    /// Parses and validates a peer Secret's name and `data` (already base64-decoded, as
    /// k8s-openapi's `ByteString` holds it). Exactly the documented keys must be present.
    pub fn from_secret_data(
        secret_name: &str,
        data: &BTreeMap<String, Vec<u8>>,
    ) -> Result<PeerSpec, ContractError> {
        if let Some(unknown) = data.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(ContractError::UnknownField {
                field: truncate_for_message(unknown),
            });
        }
        let field = |field: &'static str, max: usize| -> Result<&str, ContractError> {
            let bytes = data
                .get(field)
                .ok_or(ContractError::MissingField { field })?;
            if bytes.len() > max {
                return Err(ContractError::FieldTooLong {
                    field,
                    len: bytes.len(),
                    max,
                });
            }
            let text = std::str::from_utf8(bytes).map_err(|_| ContractError::NotUtf8 { field })?;
            if text.chars().any(char::is_control) {
                return Err(ContractError::ControlCharacters { field });
            }
            Ok(text)
        };
        let name: PeerName = field(NAME, MAX_SHORT)?.parse()?;
        if secret_name != format!("{PEER_SECRET_PREFIX}{name}") {
            return Err(ContractError::NameMismatch {
                secret: truncate_for_message(secret_name),
                name: name.to_string(),
            });
        }
        // `wg pubkey > file` leaves a trailing newline: accept surrounding whitespace.
        let key_bytes = data
            .get(PUBLIC_KEY)
            .ok_or(ContractError::MissingField { field: PUBLIC_KEY })?;
        let key_text = std::str::from_utf8(key_bytes)
            .map_err(|_| ContractError::NotUtf8 { field: PUBLIC_KEY })?
            .trim();
        if key_text.len() > MAX_SHORT {
            return Err(ContractError::FieldTooLong {
                field: PUBLIC_KEY,
                len: key_text.len(),
                max: MAX_SHORT,
            });
        }
        let public_key =
            key_text
                .parse::<PublicKey>()
                .map_err(|e| ContractError::InvalidPublicKey {
                    reason: e.to_string(),
                })?;
        let namespaces = field(NAMESPACES, MAX_NAMESPACES)?
            .split(',')
            .map(str::trim)
            .filter(|ns| !ns.is_empty())
            .map(|ns| {
                ns.parse::<PeerName>().map(|_| ns.to_owned()).map_err(|_| {
                    ContractError::InvalidNamespace {
                        value: truncate_for_message(ns),
                    }
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PeerSpec {
            name,
            public_key,
            owner: field(OWNER, MAX_OWNER)?.to_owned(),
            hostname: field(HOSTNAME, MAX_HOSTNAME)?.to_owned(),
            namespaces,
            lease_expires: parse_lease(field(LEASE_EXPIRES, MAX_SHORT)?)?,
        })
    }

    /// The Secret's name: `kwg-peer-<name>`.
    pub fn secret_name(&self) -> String {
        format!("{PEER_SECRET_PREFIX}{}", self.name)
    }

    /// The Secret's `data` (raw bytes; k8s-openapi base64-encodes them on the wire).
    pub fn to_secret_data(&self) -> BTreeMap<String, Vec<u8>> {
        let fields = [
            (NAME, self.name.to_string()),
            (PUBLIC_KEY, self.public_key.to_string()),
            (OWNER, self.owner.clone()),
            (HOSTNAME, self.hostname.clone()),
            (NAMESPACES, self.namespaces.join(",")),
            (LEASE_EXPIRES, format_lease(self.lease_expires)),
        ];
        fields
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.into_bytes()))
            .collect()
    }

    /// True once the lease has passed at `now`.
    pub fn lease_expired(&self, now: SystemTime) -> bool {
        DateTime::<Utc>::from(now) >= self.lease_expires
    }
}

/// Parses an RFC 3339 time (any offset; converted to UTC).
pub fn parse_lease(value: &str) -> Result<DateTime<Utc>, ContractError> {
    DateTime::parse_from_rfc3339(value.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| ContractError::InvalidLease {
            value: truncate_for_message(value),
        })
}

/// Formats a lease as RFC 3339 UTC with a `Z` suffix, like `2030-01-01T00:00:00Z`.
pub fn format_lease(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::PrivateKey;
    use proptest::prelude::*;
    use std::time::Duration;

    fn valid_data() -> BTreeMap<String, Vec<u8>> {
        let key = PrivateKey::generate().public_key().to_string();
        [
            (NAME, "mybox"),
            (PUBLIC_KEY, key.as_str()),
            (OWNER, "me"),
            (HOSTNAME, "mybox"),
            (NAMESPACES, "default, emojivoto"),
            (LEASE_EXPIRES, "2030-01-01T00:00:00Z"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.as_bytes().to_vec()))
        .collect()
    }

    fn with(field: &str, value: &[u8]) -> BTreeMap<String, Vec<u8>> {
        let mut d = valid_data();
        d.insert(field.to_owned(), value.to_vec());
        d
    }

    #[test]
    fn parses_the_documented_example() {
        let mut d = valid_data();
        let key = String::from_utf8(d[PUBLIC_KEY].clone()).unwrap();
        d.insert(PUBLIC_KEY.to_owned(), format!("{key}\n").into_bytes()); // as `wg pubkey > f`
        let p = PeerSpec::from_secret_data("kwg-peer-mybox", &d).unwrap();
        assert_eq!(p.name.as_str(), "mybox");
        assert_eq!(p.public_key.to_string(), key);
        assert_eq!(p.namespaces, ["default", "emojivoto"]);
        assert_eq!(format_lease(p.lease_expires), "2030-01-01T00:00:00Z");
        assert_eq!(p.secret_name(), "kwg-peer-mybox");
    }

    #[test]
    fn empty_namespaces_allowed() {
        let p = PeerSpec::from_secret_data("kwg-peer-mybox", &with(NAMESPACES, b"")).unwrap();
        assert!(p.namespaces.is_empty());
    }

    #[test]
    fn rejects_malformed_secrets() {
        let cases: Vec<(BTreeMap<String, Vec<u8>>, &str)> = vec![
            (with(PUBLIC_KEY, b"not a key"), "public key is invalid"),
            (with(PUBLIC_KEY, b"AAAA"), "public key is invalid"),
            (with(PUBLIC_KEY, &[b'A'; 5000]), "more than the allowed"),
            (with(NAME, b"My_Box"), "not a DNS label"),
            (with(NAME, b"other"), "must be named `kwg-peer-other`"),
            (
                with("extra", b"x"),
                "`extra` is not part of the peer format",
            ),
            (with(OWNER, &[b'x'; 1 << 20]), "more than the allowed"),
            (with(HOSTNAME, &[0xff, 0xfe]), "not valid UTF-8"),
            (with(HOSTNAME, b"a\nb"), "control characters"),
            (with(LEASE_EXPIRES, b"tomorrow"), "not an RFC 3339 time"),
            (with(NAMESPACES, b"default,Bad_NS"), "namespace `Bad_NS`"),
            (
                {
                    let mut d = valid_data();
                    d.remove(OWNER);
                    d
                },
                "`owner` is missing",
            ),
        ];
        for (data, expected) in cases {
            let err = PeerSpec::from_secret_data("kwg-peer-mybox", &data).unwrap_err();
            assert!(
                err.to_string().contains(expected),
                "{err} does not contain {expected}"
            );
        }
    }

    #[test]
    fn lease_expiry_uses_given_time() {
        let p = PeerSpec::from_secret_data("kwg-peer-mybox", &valid_data()).unwrap();
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(p.lease_expires.timestamp() as u64);
        assert!(!p.lease_expired(at - Duration::from_secs(1)));
        assert!(p.lease_expired(at));
        assert!(p.lease_expired(at + Duration::from_secs(1)));
    }

    #[test]
    fn lease_offsets_are_normalized() {
        let t = parse_lease("2030-01-01T02:00:00+02:00").unwrap();
        assert_eq!(format_lease(t), "2030-01-01T00:00:00Z");
        assert!(parse_lease("2030-01-01").is_err());
    }

    proptest! {
        #[test]
        fn roundtrip(
            name in "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?",
            owner in "[ -~]{0,100}",
            hostname in "[a-zA-Z0-9.-]{0,100}",
            namespaces in proptest::collection::vec("[a-z0-9]{1,20}", 0..5),
            secs in 0i64..4_000_000_000,
        ) {
            let spec = PeerSpec {
                name: name.parse().unwrap(),
                public_key: PrivateKey::generate().public_key(),
                owner,
                hostname,
                namespaces,
                lease_expires: DateTime::from_timestamp(secs, 0).unwrap(),
            };
            let back = PeerSpec::from_secret_data(&spec.secret_name(), &spec.to_secret_data());
            prop_assert_eq!(back, Ok(spec));
        }

        #[test]
        fn garbage_never_panics(
            entries in proptest::collection::btree_map(
                prop_oneof![Just(NAME.to_owned()), Just(PUBLIC_KEY.to_owned()), ".{0,12}"],
                proptest::collection::vec(any::<u8>(), 0..200),
                0..8,
            ),
            secret in ".{0,80}",
        ) {
            let _ = PeerSpec::from_secret_data(&secret, &entries);
        }
    }
}
