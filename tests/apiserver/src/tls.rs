//! The server's own CA (kept in the state directory) and its serving certificate.

use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::Error;

pub struct Tls {
    pub ca_pem: String,
    pub config: Arc<rustls::ServerConfig>,
}

fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name
        .push(DnType::CommonName, "kwg-apiserver-ca");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

fn write_private(path: &Path, contents: &str) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::state(path, e))?;
    f.write_all(contents.as_bytes())
        .map_err(|e| Error::state(path, e))
}

/// Load `ca.crt`/`ca.key` from `state_dir` (or create them) and issue a serving cert for `sans`.
pub fn load_or_create(state_dir: &Path, sans: &[String]) -> Result<Tls, Error> {
    std::fs::create_dir_all(state_dir).map_err(|e| Error::state(state_dir, e))?;
    let (crt_path, key_path) = (state_dir.join("ca.crt"), state_dir.join("ca.key"));
    let (ca_pem, ca_key) = if crt_path.exists() && key_path.exists() {
        let pem = std::fs::read_to_string(&crt_path).map_err(|e| Error::state(&crt_path, e))?;
        let key_pem = std::fs::read_to_string(&key_path).map_err(|e| Error::state(&key_path, e))?;
        (pem, KeyPair::from_pem(&key_pem)?)
    } else {
        let key = KeyPair::generate()?;
        let cert = ca_params().self_signed(&key)?;
        write_private(&key_path, &key.serialize_pem())?;
        std::fs::write(&crt_path, cert.pem()).map_err(|e| Error::state(&crt_path, e))?;
        (cert.pem(), key)
    };
    let issuer = Issuer::new(ca_params(), ca_key);
    let mut leaf = CertificateParams::new(sans.to_vec())?;
    leaf.distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = KeyPair::generate()?;
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer)?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(leaf_cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Tls {
        ca_pem,
        config: Arc::new(config),
    })
}
