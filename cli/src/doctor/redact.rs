//! Redaction of what goes into a `--bundle`: private keys, tokens, passwords and certificates
//! (PEM or base64), wherever they appear: kubeconfig, state, logs. Public keys named by the
//! caller stay (they identify peers and are no secret).

use std::sync::LazyLock;

use regex::Regex;

/// What replaces a secret.
pub const REDACTED: &str = "REDACTED";

static PEM: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?s)-----BEGIN ([A-Z0-9 ]+)-----.*?(-----END [A-Z0-9 ]+-----|\z)").unwrap()
});
/// `key: value`, `key=value`, `"key": "value"` for the names secrets go by.
static FIELD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)("?[a-z0-9_-]*(?:token|password|passwd|secret|private[_-]?key|preshared[_-]?key|client-key-data|client-certificate-data|certificate-authority-data|cookie)"?\s*[:=]\s*)("?)([^"\s,}]+)"#,
    )
    .unwrap()
});
static AUTH_HEADER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9\-._~+/]+=*").unwrap());
static JWT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*").unwrap()
});
/// Base64 of `-----BEGIN` (certificate or key data without its field name).
static PEM_B64: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"LS0tLS1C[A-Za-z0-9+/=]+").unwrap());
/// A 32-byte key in base64 (WireGuard's format) or hex (its UAPI's).
static KEY32: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=|\b[0-9a-fA-F]{64}\b").unwrap()
});

/// Redacts `text`, keeping the keys of `public` (base64) readable.
pub fn redact(text: &str, public: &[String]) -> String {
    let s = PEM.replace_all(text, "-----REDACTED $1-----");
    let s = FIELD.replace_all(&s, format!("${{1}}${{2}}{REDACTED}").as_str());
    let s = AUTH_HEADER.replace_all(&s, format!("${{1}}${{2}}{REDACTED}").as_str());
    let s = JWT.replace_all(&s, REDACTED);
    let s = PEM_B64.replace_all(&s, REDACTED);
    KEY32
        .replace_all(&s, |c: &regex::Captures| {
            let k = &c[0];
            match public.iter().any(|p| p == k) {
                true => k.to_string(),
                false => REDACTED.to_string(),
            }
        })
        .into_owned()
}

#[cfg(test)]
#[path = "redact_tests.rs"]
mod tests;
