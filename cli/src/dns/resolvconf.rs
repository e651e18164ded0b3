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
            forwarder_answers,
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

/// Whether a DNS forwarder (another session's) still holds `ip`:53: binding it fails with
/// "address in use" (a LAN resolver's address is not this machine's: not a forwarder).
fn forwarder_answers(ip: std::net::IpAddr) -> bool {
    matches!(std::net::UdpSocket::bind((ip, 53)), Err(e) if e.kind() == std::io::ErrorKind::AddrInUse)
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
}
