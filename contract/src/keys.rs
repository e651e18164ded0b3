//! WireGuard keys, printed and parsed exactly like `wg genkey` / `wg pubkey` (base64 of 32 bytes).

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use x25519_dalek as x25519;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// What can go wrong reading a WireGuard key: its text, or the file that holds it.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("invalid WireGuard key: {0} (expected 44 characters of base64 as `wg genkey` prints)")]
    InvalidKey(String),
    #[error(
        "private key file {path} is readable by group or others (mode {mode:o}): run `chmod 600 {path}`",
        path = .path.display()
    )]
    KeyFileTooOpen { path: std::path::PathBuf, mode: u32 },
    #[error("cannot {action} {path}: {source}", path = .path.display())]
    File {
        action: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

type Error = KeyError;

fn decode32(s: &str) -> Result<[u8; 32], Error> {
    let s = s.trim();
    let mut out = [0u8; 32];
    match STANDARD.decode(s) {
        Ok(mut v) if v.len() == 32 => {
            out.copy_from_slice(&v);
            v.zeroize();
            Ok(out)
        }
        Ok(mut v) => {
            // Read the length before zeroize, which also clears the vector.
            let len = v.len();
            v.zeroize();
            Err(Error::InvalidKey(format!("{len} bytes instead of 32")))
        }
        Err(e) => Err(Error::InvalidKey(e.to_string())),
    }
}

/// A Curve25519 private key; zeroized on drop, redacted in `Debug`.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct PrivateKey([u8; 32]);

impl PrivateKey {
    /// A fresh random key, clamped like `wg genkey`.
    pub fn generate() -> PrivateKey {
        let mut b = [0u8; 32];
        rand::fill(&mut b);
        // Clamp like `wg genkey` (RFC 7748 section 5).
        b[0] &= 248;
        b[31] = (b[31] & 127) | 64;
        PrivateKey(b)
    }

    pub fn from_bytes(bytes: [u8; 32]) -> PrivateKey {
        PrivateKey(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(x25519::PublicKey::from(&self.to_secret()).to_bytes())
    }

    /// The x25519 secret boringtun's `Tunn` takes.
    pub fn to_secret(&self) -> x25519::StaticSecret {
        x25519::StaticSecret::from(self.0)
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

/// Prints the base64 form, as `wg genkey` does. Only for writing key files and UAPI.
impl fmt::Display for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&STANDARD.encode(self.0))
    }
}

impl FromStr for PrivateKey {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        decode32(s).map(PrivateKey)
    }
}

impl PartialEq for PrivateKey {
    fn eq(&self, other: &Self) -> bool {
        // Not secret-timing sensitive: only used by configuration code.
        self.public_key() == other.public_key()
    }
}

/// A Curve25519 public key, the identity of a peer.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    pub fn from_bytes(bytes: [u8; 32]) -> PublicKey {
        PublicKey(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first 8 characters of the base64 form, for logs.
    pub fn short(&self) -> String {
        let mut s = self.to_string();
        s.truncate(8);
        s
    }

    pub fn to_x25519(&self) -> x25519::PublicKey {
        x25519::PublicKey::from(self.0)
    }

    /// Lowercase hex, as the UAPI protocol writes keys.
    pub fn to_hex(&self) -> String {
        hex32(&self.0)
    }
}

/// 32 bytes as lowercase hex (UAPI's key format).
pub fn hex32(b: &[u8; 32]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// UAPI's 64 hex digits back to 32 bytes; `None` for anything else.
pub fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&STANDARD.encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl FromStr for PublicKey {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        decode32(s).map(PublicKey)
    }
}

impl serde::Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A 32-byte preshared key (`wg genpsk`); zeroized, redacted in `Debug`.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct PresharedKey([u8; 32]);

impl PresharedKey {
    pub fn generate() -> PresharedKey {
        let mut b = [0u8; 32];
        rand::fill(&mut b);
        PresharedKey(b)
    }
    pub fn from_bytes(bytes: [u8; 32]) -> PresharedKey {
        PresharedKey(bytes)
    }
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for PresharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PresharedKey(<redacted>)")
    }
}

impl fmt::Display for PresharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&STANDARD.encode(self.0))
    }
}

impl FromStr for PresharedKey {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        decode32(s).map(PresharedKey)
    }
}

/// Reads a private key file as `wg genkey` writes it; refuses files readable by group or others.
pub fn read_private_key_file(path: &Path) -> Result<PrivateKey, Error> {
    let file_err = |action, source| Error::File {
        action,
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(|e| file_err("read", e))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::KeyFileTooOpen {
            path: path.to_owned(),
            mode,
        });
    }
    let mut text = std::fs::read_to_string(path).map_err(|e| file_err("read", e))?;
    let key = text.parse();
    text.zeroize();
    key
}

/// Writes `key` (base64 and a newline, like `wg genkey`) to a new or truncated file with mode 0600.
pub fn write_private_key_file(path: &Path, key: &PrivateKey) -> Result<(), Error> {
    let file_err = |source| Error::File {
        action: "write",
        path: path.to_owned(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(file_err)?;
    // An existing file keeps its mode on open: tighten it.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(file_err)?;
    let mut text = format!("{key}\n");
    let res = f.write_all(text.as_bytes()).map_err(file_err);
    text.zeroize();
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_wg_compat() {
        // A pair produced by `wg genkey | tee k | wg pubkey`.
        let k: PrivateKey = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
            .parse()
            .unwrap();
        assert_eq!(
            k.public_key().to_string(),
            "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="
        );
        assert_eq!(
            k.to_string(),
            "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
        );
        assert_eq!(format!("{k:?}"), "PrivateKey(<redacted>)");
        let p = k.public_key();
        assert_eq!(p.short(), "HIgo9xNz");
        let j = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<PublicKey>(&j).unwrap(), p);
        assert!("abc".parse::<PublicKey>().is_err());
        assert_eq!(unhex32(&p.to_hex()), Some(*p.as_bytes()));
    }

    #[test]
    fn wrong_length_names_the_length() {
        // 16 bytes of base64: a well-formed string, but not a key.
        let err = "AAAAAAAAAAAAAAAAAAAAAA==".parse::<PublicKey>().unwrap_err();
        assert!(err.to_string().contains("16 bytes instead of 32"), "{err}");
        let err = "AAAA".parse::<PrivateKey>().unwrap_err();
        assert!(err.to_string().contains("3 bytes instead of 32"), "{err}");
    }

    #[test]
    fn generated_keys_differ() {
        let a = PrivateKey::generate();
        let b = PrivateKey::generate();
        assert_ne!(a.public_key(), b.public_key());
        assert_eq!(a.to_string().len(), 44);
    }

    #[test]
    fn key_file_mode_is_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let k = PrivateKey::generate();
        write_private_key_file(&path, &k).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read_private_key_file(&path).unwrap(), k);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_private_key_file(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }
}
