//! `/etc/resolv.conf`: the pure reading and rendering are `kwg_session::dns::resolvconf`'s;
//! here the write, in place (it may be a bind mount, where a rename fails with EBUSY).

use std::path::Path;

pub use kwg_session::dns::resolvconf::{
    MARKER, after_leave, is_ours, nameservers, render, upstreams,
};

use crate::error::Error;

/// Overwrites `path` in place (truncate + write, no rename) with `bytes`.
pub fn write_in_place(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    write_in_place_until(path, bytes, || Ok(()))
}

/// [`write_in_place`], calling `truncated` once the file is empty and before `bytes` are
/// written: an error from it stops the write there (a test's kill at that point).
pub fn write_in_place_until(
    path: &Path,
    bytes: &[u8],
    truncated: impl FnOnce() -> Result<(), Error>,
) -> Result<(), Error> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(|e| Error::io(format!("open {} for writing", path.display()), e))?;
    truncated()?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io(format!("write {}", path.display()), e))
}

/// Undoes one session's resolver file ([`after_leave`]): its forwarder and search list come
/// from the journal next to its backup (`state.json`); without them, the backup is put back
/// if the file is still kwg's or empty, as before sessions stacked. Deletes the backup; says
/// whether the file was changed.
pub fn restore(path: &Path, backup: &Path) -> Result<bool, Error> {
    use crate::state::StateFile;
    let original = match crate::state::read_no_follow(backup) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => {
            return Err(Error::io(
                format!("read the resolv.conf backup {}", backup.display()),
                e,
            ));
        }
    };
    let current = std::fs::read_to_string(path).unwrap_or_default();
    let own = crate::state::State::load(&backup.with_file_name("state.json"))
        .ok()
        .flatten()
        .and_then(|s| s.dns);
    let next = match own {
        Some(d) => after_leave(
            &current,
            &String::from_utf8_lossy(&original),
            d.forwarder.ip(),
            &d.search,
            |ip| forwarder_live(backup, ip),
        )
        .map(String::into_bytes),
        None => (is_ours(&current) || current.is_empty()).then(|| original.clone()),
    };
    let restored = match next {
        Some(bytes) => {
            write_in_place(path, &bytes)?;
            true
        }
        None => {
            tracing::warn!(path = %path.display(), "resolv.conf was changed by someone else since kwg join: leaving it as it is");
            false
        }
    };
    let _ = std::fs::remove_file(backup);
    Ok(restored)
}

/// Whether another kwg session of this machine's state directory still serves a DNS
/// forwarder at `ip`: its daemon holds its lock and its journal records that forwarder. Not
/// whether something answers there (another user's program may have bound the address since).
/// `backup` is the leaving session's, in `<base>` or `<base>/sessions/<alias>`.
fn forwarder_live(backup: &Path, ip: std::net::IpAddr) -> bool {
    let Some(own) = backup.parent() else {
        return false;
    };
    let base = match own.parent() {
        Some(p) if p.file_name() == Some(std::ffi::OsStr::new("sessions")) => {
            p.parent().unwrap_or(own)
        }
        _ => own,
    };
    let Ok(all) = crate::state::sessions(&crate::state::StateDir(base.to_path_buf())) else {
        return false;
    };
    all.iter().any(|s| {
        s.dir.0 != own
            && s.running.is_some()
            && s.state
                .as_ref()
                .and_then(|st| st.dns.as_ref())
                .is_some_and(|d| d.forwarder.ip() == ip)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGINAL: &str = "# lan\nsearch corp.example\nnameserver 192.0.2.53\noptions edns0\n";

    #[test]
    fn writes_in_place_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("resolv.conf");
        std::fs::write(&p, "a much longer original text\n\n").unwrap();
        let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&p).unwrap());
        write_in_place(&p, ORIGINAL.as_bytes()).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), ORIGINAL.as_bytes());
        assert_eq!(
            ino,
            std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&p).unwrap())
        );
    }

    #[test]
    fn a_forwarder_is_live_only_as_another_running_session_of_kwg() {
        use crate::state::{DnsModeUsed, DnsState, StateDir, StateFile};
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let base = StateDir(tmp.path().join("kwg"));
        let second = StateDir(base.sessions_dir().join("default-2"));
        base.create().unwrap();
        second.create().unwrap();
        std::fs::set_permissions(base.sessions_dir(), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        let (a, b): (std::net::IpAddr, std::net::IpAddr) = (
            "127.77.0.53".parse().unwrap(),
            "127.77.0.54".parse().unwrap(),
        );
        let with_dns = |ip| {
            let mut st = crate::state::tests::sample();
            st.dns = Some(DnsState {
                mode: DnsModeUsed::ResolvConf,
                forwarder: std::net::SocketAddr::new(ip, 53),
                cluster_dns: None,
                upstreams: vec![],
                include_suffixes: vec![],
                exclude_suffixes: vec![],
                timeout_secs: 4,
                search: vec![],
            });
            st
        };
        with_dns(a).save(&base.state()).unwrap();
        with_dns(b).save(&second.state()).unwrap();
        // The first session's daemon is gone: whatever answers at its address is not it.
        assert!(!forwarder_live(&second.resolv_backup(), a));
        let lock = crate::lock::DaemonLock::acquire(&base.lock()).unwrap();
        assert!(forwarder_live(&second.resolv_backup(), a));
        assert!(!forwarder_live(&second.resolv_backup(), b), "not its own");
        assert!(!forwarder_live(
            &second.resolv_backup(),
            "127.77.0.55".parse().unwrap()
        ));
        drop(lock);
        let lock = crate::lock::DaemonLock::acquire(&second.lock()).unwrap();
        assert!(forwarder_live(&base.resolv_backup(), b));
        assert!(!forwarder_live(&base.resolv_backup(), a), "not its own");
        drop(lock);
    }
}
