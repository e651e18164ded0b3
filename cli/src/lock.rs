//! The daemon's lock file: an exclusive `flock` held for the daemon's lifetime. It says whether
//! a daemon runs (no guessing from `/proc`), which one (its pid is written in the file), and
//! makes a second concurrent `kwg join` fail instead of racing the first.

use std::io::{Read, Seek, Write};
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

use crate::error::Error;

/// The held lock; released when dropped (or when the process dies).
pub struct DaemonLock {
    _file: Flock<std::fs::File>,
}

/// What the lock file says about a running daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// No daemon holds the lock.
    None,
    /// A daemon holds it; its pid (when it wrote one).
    Running(Option<u32>),
}

fn open(path: &Path) -> Result<std::fs::File, Error> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| Error::io(format!("open the lock file {}", path.display()), e))
}

fn read_pid(file: &mut std::fs::File) -> Option<u32> {
    let mut s = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut s).ok()?;
    s.trim().parse().ok()
}

impl DaemonLock {
    /// Takes the lock for this process and writes its pid, or fails with
    /// [`Error::AlreadyJoined`] naming the daemon that holds it.
    pub fn acquire(path: &Path) -> Result<DaemonLock, Error> {
        let file = open(path)?;
        let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(f) => f,
            Err((mut file, _)) => {
                return Err(Error::AlreadyJoined {
                    pid: read_pid(&mut file),
                });
            }
        };
        let pid = std::process::id().to_string();
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(pid.as_bytes()))
            .map_err(|e| Error::io(format!("write {}", path.display()), e))?;
        Ok(DaemonLock { _file: file })
    }

    /// Whether a daemon holds the lock at `path` (never creates a daemon's lock itself).
    pub fn holder(path: &Path) -> Holder {
        let Ok(file) = open(path) else {
            return Holder::None;
        };
        match Flock::lock(file, FlockArg::LockSharedNonblock) {
            Ok(_) => Holder::None,
            Err((mut file, _)) => Holder::Running(read_pid(&mut file)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("daemon.lock");
        assert_eq!(DaemonLock::holder(&path), Holder::None);
        let lock = DaemonLock::acquire(&path).unwrap();
        let me = std::process::id();
        assert_eq!(DaemonLock::holder(&path), Holder::Running(Some(me)));
        match DaemonLock::acquire(&path) {
            Err(Error::AlreadyJoined { pid }) => assert_eq!(pid, Some(me)),
            other => panic!("{:?}", other.map(drop)),
        }
        drop(lock);
        assert_eq!(DaemonLock::holder(&path), Holder::None);
        assert!(DaemonLock::acquire(&path).is_ok());
    }
}
