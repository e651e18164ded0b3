//! The helper's journal: one file per session under its state directory (`/run/kwg-helper`),
//! holding what undoes each change, written (temporary file, fsync, rename, fsync of the
//! directory) before the change is made. A helper that starts reverts whatever the journal holds:
//! the sessions of a helper that was killed (their user daemons lost their link with it).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::registry::{Session, Undo};

/// A session's journal entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub session: u64,
    pub uid: u32,
    pub interface: String,
    /// Oldest first.
    pub undo: Vec<Undo>,
}

impl Entry {
    pub fn of(s: &Session) -> Entry {
        Entry {
            session: s.id,
            uid: s.peer.uid,
            interface: s.spec.interface.clone(),
            undo: s.undo.clone(),
        }
    }
}

/// The forwarder addresses each uid holds (see [`crate::registry::Registry`]).
pub type DnsBound =
    std::collections::BTreeMap<u32, std::collections::BTreeSet<std::net::SocketAddr>>;

/// The file (`<name>.json` in the journal directory) recording [`DnsBound`].
const DNS_BOUND: &str = "dns-bound";

/// The journal directory.
#[derive(Debug, Clone)]
pub struct Journal {
    dir: PathBuf,
}

/// Refuses a journal directory `uid` does not own or that its group or others may write.
fn check_owner(dir: &Path, meta: &fs::Metadata, uid: u32) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    if meta.uid() != uid || meta.mode() & 0o022 != 0 {
        return Err(io::Error::other(format!(
            "the journal directory {} belongs to uid {} with mode {:o}: it must be uid {uid}'s and writable by nobody else (remove it, or use the default /run/kwg-helper/journal)",
            dir.display(),
            meta.uid(),
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

impl Journal {
    /// Opens (creating, 0700) `dir`. It must not be a symlink, and must be the helper's own
    /// (its effective uid: root) and writable by nobody else: its entries are replayed as
    /// root (a user's directory would have the helper delete links and run nft as told).
    pub fn open(dir: &Path) -> io::Result<Journal> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let meta = fs::symlink_metadata(dir)?;
        if !meta.is_dir() {
            return Err(io::Error::other(format!(
                "{} is not a directory",
                dir.display()
            )));
        }
        check_owner(dir, &meta, nix::unistd::geteuid().as_raw())?;
        Ok(Journal {
            dir: dir.to_path_buf(),
        })
    }

    /// Takes the journal's lock (an exclusive `flock` on `lock` in the directory), held while
    /// the returned file is open: one helper per journal, so a second never reverts the live
    /// sessions of the first.
    pub fn lock(&self) -> io::Result<File> {
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(self.dir.join("lock"))?;
        // SAFETY: flock on a descriptor this function owns; no memory is shared.
        let r = unsafe {
            libc::flock(
                std::os::fd::AsRawFd::as_raw_fd(&f),
                libc::LOCK_EX | libc::LOCK_NB,
            )
        };
        if r == 0 {
            return Ok(f);
        }
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::WouldBlock {
            return Err(io::Error::other(format!(
                "another kwg-helper is serving with the journal {} (starting would revert its sessions): stop that one first",
                self.dir.display()
            )));
        }
        Err(e)
    }

    fn path(&self, session: u64) -> PathBuf {
        self.dir.join(format!("session-{session}.json"))
    }

    /// Writes `entry` durably, replacing the session's previous one.
    pub fn write(&self, entry: &Entry) -> io::Result<()> {
        let name = format!("session-{}", entry.session);
        self.write_json(
            &name,
            &serde_json::to_vec_pretty(entry).map_err(io::Error::other)?,
        )
    }

    /// Writes `<name>.json` durably (temporary file, fsync, rename, fsync of the directory).
    fn write_json(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let path = self.dir.join(format!("{name}.json"));
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let _ = fs::remove_file(&tmp);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        File::open(&self.dir)?.sync_all()
    }

    /// Records the forwarder addresses each uid holds (the descriptors outlive the sessions and
    /// a restart of the helper), so a new helper keeps counting them against the per-uid cap.
    pub fn write_dns_bound(&self, bound: &DnsBound) -> io::Result<()> {
        self.write_json(
            DNS_BOUND,
            &serde_json::to_vec_pretty(bound).map_err(io::Error::other)?,
        )
    }

    /// The forwarder addresses a previous helper recorded (none when there is no record; an
    /// unreadable one is reported and counts as none).
    pub fn dns_bound(&self) -> DnsBound {
        let path = self.dir.join(format!("{DNS_BOUND}.json"));
        match fs::read(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => DnsBound::new(),
            r => r
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
                .unwrap_or_else(|e| {
                    tracing::warn!(path = %path.display(), error = %e, "unreadable record of forwarder addresses: counting none");
                    DnsBound::new()
                }),
        }
    }

    /// Forgets session `session` (after its changes were reverted).
    pub fn remove(&self, session: u64) -> io::Result<()> {
        match fs::remove_file(self.path(session)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => File::open(&self.dir)?.sync_all(),
        }
    }

    /// Every entry the journal holds (unreadable ones are reported and skipped), and the
    /// highest session id seen.
    pub fn entries(&self) -> io::Result<Vec<Entry>> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.dir)? {
            let path = e?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if !(name.starts_with("session-") && name.ends_with(".json")) {
                continue;
            }
            match fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Entry>(&b).map_err(|e| e.to_string()))
            {
                Ok(entry) => out.push(entry),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "unreadable journal entry left alone")
                }
            }
        }
        out.sort_by_key(|e| e.session);
        Ok(out)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::rules::tests::n;

    /// A session's entry with a link and a route to undo.
    pub(crate) fn entry(session: u64) -> Entry {
        Entry {
            session,
            uid: 1000,
            interface: "kwg0".into(),
            undo: vec![
                Undo::DeleteLink {
                    name: "kwg0".into(),
                    ifindex: Some(9),
                },
                Undo::DeleteRoute {
                    name: "kwg0".into(),
                    route: n("10.96.0.0/12"),
                },
            ],
        }
    }

    #[test]
    fn entries_survive_as_written_and_go_when_removed() {
        let d = tempfile::tempdir().unwrap();
        let j = Journal::open(&d.path().join("kwg-helper")).unwrap();
        j.write(&entry(1)).unwrap();
        let mut e2 = entry(2);
        j.write(&e2).unwrap();
        e2.undo.pop();
        j.write(&e2).unwrap();
        std::fs::write(d.path().join("kwg-helper/session-9.json"), "{garbage").unwrap();
        std::fs::write(d.path().join("kwg-helper/other"), "x").unwrap();
        let j = Journal::open(&d.path().join("kwg-helper")).unwrap();
        assert_eq!(j.entries().unwrap(), vec![entry(1), e2]);
        j.remove(1).unwrap();
        j.remove(1).unwrap();
        assert_eq!(j.entries().unwrap().len(), 1);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.path().join("kwg-helper/session-2.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_journal_directory_of_another_user_or_writable_by_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let me = nix::unistd::geteuid().as_raw();
        let meta = std::fs::symlink_metadata(d.path()).unwrap();
        assert!(check_owner(d.path(), &meta, me).is_ok());
        let e = check_owner(d.path(), &meta, me.wrapping_add(1)).unwrap_err();
        assert!(e.to_string().contains("writable by nobody else"), "{e}");
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let Err(e) = Journal::open(d.path()) else {
            panic!("a world-writable journal opens");
        };
        assert!(e.to_string().contains("mode 777"), "{e}");
    }
}
