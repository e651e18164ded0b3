//! Errors of contract parsing and validation.

/// Why a peer Secret, gateway info or contract value was rejected. Every message says what
/// to change; the peer Secret format is in `docs/contract.md`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContractError {
    #[error("field `{field}` is missing: add it to the Secret's data (see docs/contract.md)")]
    MissingField { field: &'static str },
    #[error("field `{field}` is not part of the peer format: remove it (see docs/contract.md)")]
    UnknownField { field: String },
    #[error("field `{field}` is {len} bytes, more than the allowed {max}: shorten it")]
    FieldTooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("field `{field}` is not valid UTF-8 text: write it as plain text")]
    NotUtf8 { field: &'static str },
    #[error("field `{field}` contains control characters: write it as one plain line")]
    ControlCharacters { field: &'static str },
    #[error(
        "peer name `{name}` is not a DNS label ({reason}): use lower-case letters, digits and '-'"
    )]
    InvalidPeerName { name: String, reason: String },
    #[error(
        "Secret `{secret}` must be named `kwg-peer-{name}` for peer `{name}`: rename it or fix `name`"
    )]
    NameMismatch { secret: String, name: String },
    #[error("public key is invalid ({reason}): use the output of `wg pubkey` (base64 of 32 bytes)")]
    InvalidPublicKey { reason: String },
    #[error("lease `{value}` is not an RFC 3339 time: write it like 2030-01-01T00:00:00Z")]
    InvalidLease { value: String },
    #[error(
        "namespace `{value}` in `namespaces` is not a DNS label: list namespaces separated by commas"
    )]
    InvalidNamespace { value: String },
    #[error(
        "`{value}` is not an IPv4 tunnel address: the gateway writes addresses like 100.77.0.2"
    )]
    InvalidTunnelIp { value: String },
    #[error("`{value}` is not an endpoint: write host:port, like 192.0.2.1:31820")]
    InvalidEndpoint { value: String },
    #[error(
        "gateway info has protocol version {found}, this kwg speaks {expected}: upgrade kwg or the gateway so they match"
    )]
    UnsupportedVersion { found: u32, expected: u32 },
    #[error("gateway info is invalid: {reason}")]
    InvalidGatewayInfo { reason: String },
}

/// Cuts untrusted text for error messages so a huge value never floods a log or an Event.
pub(crate) fn truncate_for_message(s: &str) -> String {
    const MAX: usize = 80;
    if s.len() <= MAX {
        return s.escape_debug().to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", s[..end].escape_debug())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_messages_short() {
        let huge = "é".repeat(10_000);
        let t = truncate_for_message(&huge);
        assert!(t.len() < 100, "{}", t.len());
        assert_eq!(truncate_for_message("a\nb"), "a\\nb");
    }
}
