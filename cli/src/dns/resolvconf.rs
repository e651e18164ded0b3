//! `/etc/resolv.conf`: the pure reading and rendering are `kwg_session::dns::resolvconf`'s;
//! here the write, in place (it may be a bind mount, where a rename fails with EBUSY).

use std::path::Path;

pub use kwg_session::dns::resolvconf::{MARKER, is_ours, nameservers, render, upstreams};

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
