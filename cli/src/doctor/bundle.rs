//! `kwg doctor --bundle FILE`: a tar.gz of versions, status, logs and the checks for a bug
//! report, every file redacted (private keys, tokens, certificates).

use std::io::Write as _;
use std::path::Path;

use super::gather::Findings;
use super::redact;
use crate::error::Error;
use crate::state::StateDir;

/// The largest tail of the daemon log that goes in.
const MAX_LOG: usize = 4 << 20;

/// The files of the bundle, already redacted: (name, contents).
pub fn contents(f: &Findings, dir: &StateDir) -> Vec<(String, String)> {
    // Public keys identify peers and are no secret: they stay readable.
    let public: Vec<String> = f
        .info
        .iter()
        .map(|i| i.public_key.to_string())
        .chain(f.status.iter().filter_map(|s| s.gateway_key.clone()))
        .collect();
    let mut files: Vec<(String, String)> = Vec::new();
    let uname = nix::sys::utsname::uname()
        .map(|u| {
            format!(
                "{} {} {}",
                u.sysname().to_string_lossy(),
                u.release().to_string_lossy(),
                u.machine().to_string_lossy()
            )
        })
        .unwrap_or_default();
    let os = std::fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("PRETTY_NAME=")
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_default();
    files.push((
        "versions.txt".into(),
        format!(
            "kwg {}\nkernel {uname}\nos {os}\nkubernetes {}\ngateway contract {}\n",
            env!("CARGO_PKG_VERSION"),
            f.server_version.as_deref().unwrap_or("unknown"),
            f.info
                .as_ref()
                .map_or("unknown".into(), |i| i.version.to_string()),
        ),
    ));
    files.push(("checks.txt".into(), super::check::text(&f.checks)));
    files.push((
        "checks.json".into(),
        serde_json::to_string_pretty(&super::check::json(&f.checks)).expect("serializes"),
    ));
    if let Some(s) = &f.status {
        files.push((
            "status.json".into(),
            serde_json::to_string_pretty(s).expect("serializes"),
        ));
    }
    if let Some(s) = &f.state {
        files.push((
            "state.json".into(),
            serde_json::to_string_pretty(s).expect("serializes"),
        ));
    }
    if let Ok(log) = std::fs::read(dir.log()) {
        let tail = &log[log.len().saturating_sub(MAX_LOG)..];
        files.push((
            "daemon.log".into(),
            String::from_utf8_lossy(tail).into_owned(),
        ));
    }
    let kubeconfig = f.kubeconfig_path.clone().or_else(|| {
        std::env::var_os("KUBECONFIG")
            .and_then(|k| std::env::split_paths(&k).next())
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".kube/config")))
    });
    if let Some(text) = kubeconfig.and_then(|p| std::fs::read_to_string(p).ok()) {
        files.push(("kubeconfig.yaml".into(), redact::kubeconfig(&text, &public)));
    }
    if let Ok(text) = std::fs::read_to_string("/etc/resolv.conf") {
        files.push(("resolv.conf".into(), text));
    }
    files
        .into_iter()
        .map(|(name, text)| match name.as_str() {
            "kubeconfig.yaml" => (name, text),
            _ => (name, redact::redact(&text, &public)),
        })
        .collect()
}

/// Writes `files` as a tar.gz to `path` (0600: it describes this machine).
pub fn write(path: &Path, files: &[(String, String)]) -> Result<(), Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |e| Error::io(format!("write the bundle {}", path.display()), e);
    // A new file only: never through a symlink, never an old file keeping its old mode.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => Error::invalid(
                format!("--bundle {}", path.display()),
                "it already exists (or is a symlink): remove it or name a new file",
            ),
            _ => io(e),
        })?;
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let mtime = chrono::Utc::now().timestamp().max(0) as u64;
    for (name, text) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(text.len() as u64);
        header.set_mode(0o600);
        header.set_mtime(mtime);
        header.set_cksum();
        tar.append_data(&mut header, format!("kwg-doctor/{name}"), text.as_bytes())
            .map_err(io)?;
    }
    tar.into_inner()
        .map_err(io)?
        .finish()
        .map_err(io)?
        .flush()
        .map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundle_is_a_tar_gz_of_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.tar.gz");
        let files = vec![
            ("checks.txt".to_string(), "ok  api  answers\n".to_string()),
            ("versions.txt".to_string(), "kwg 0.1.0\n".to_string()),
        ];
        write(&path, &files).unwrap();
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(
            std::fs::File::open(&path).unwrap(),
        ));
        let mut seen = Vec::new();
        for e in archive.entries().unwrap() {
            let mut e = e.unwrap();
            let mut text = String::new();
            std::io::Read::read_to_string(&mut e, &mut text).unwrap();
            seen.push((e.path().unwrap().display().to_string(), text));
        }
        assert_eq!(
            seen,
            [
                ("kwg-doctor/checks.txt".to_string(), files[0].1.clone()),
                ("kwg-doctor/versions.txt".to_string(), files[1].1.clone()),
            ]
        );
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn an_existing_file_or_a_symlink_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old.tar.gz");
        std::fs::write(&old, "keep me").unwrap();
        let err = write(&old, &[]).unwrap_err().to_string();
        assert!(err.contains("already exists"), "{err}");
        assert!(err.contains("remove it or name a new file"), "{err}");
        assert_eq!(std::fs::read_to_string(&old).unwrap(), "keep me");
        let link = dir.path().join("link.tar.gz");
        std::os::unix::fs::symlink(dir.path().join("target"), &link).unwrap();
        let err = write(&link, &[]).unwrap_err().to_string();
        assert!(err.contains("remove it or name a new file"), "{err}");
        assert!(!dir.path().join("target").exists());
    }
}
