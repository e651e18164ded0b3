//! What ends a `kwg-wg` process besides a signal, checked about once a second: its interface
//! deleted (`ip link del`, what `wg-quick down` does), its UAPI socket removed or replaced
//! (wireguard-go exits then too; scripts clean up that way), or the named network namespace it
//! was started in deleted (`ip netns del`: the namespace and the TUN in it would otherwise live
//! on, held by this very process, with nothing left to reach them).

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Where `ip netns` keeps its named namespaces.
const NETNS_DIR: &str = "/run/netns";

/// A file's identity: a path that now names another file (or none) counts as gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

fn file_id(path: &Path) -> Option<FileId> {
    std::fs::metadata(path).ok().map(|m| FileId {
        dev: m.dev(),
        ino: m.ino(),
    })
}

/// Why the process stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    InterfaceDeleted,
    SocketRemoved(PathBuf),
    NamespaceDeleted(PathBuf),
}

impl fmt::Display for Ended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ended::InterfaceDeleted => write!(f, "the interface was deleted"),
            Ended::SocketRemoved(p) => write!(f, "the UAPI socket {} was removed", p.display()),
            Ended::NamespaceDeleted(p) => {
                write!(f, "the network namespace {} was deleted", p.display())
            }
        }
    }
}

pub struct Lifeline {
    interface: PathBuf,
    socket: (PathBuf, Option<FileId>),
    netns: Option<(PathBuf, FileId)>,
}

impl Lifeline {
    /// Call once the interface and its UAPI socket exist.
    pub fn new(ifname: &str, socket: PathBuf) -> Lifeline {
        Lifeline::with_netns_dir(ifname, socket, Path::new(NETNS_DIR))
    }

    fn with_netns_dir(ifname: &str, socket: PathBuf, netns_dir: &Path) -> Lifeline {
        let id = file_id(&socket);
        Lifeline {
            interface: PathBuf::from(format!("/sys/class/net/{ifname}")),
            socket: (socket, id),
            netns: own_named_netns(netns_dir),
        }
    }

    pub fn ended(&self) -> Option<Ended> {
        if !self.interface.exists() {
            return Some(Ended::InterfaceDeleted);
        }
        let (path, id) = &self.socket;
        if id.is_some() && file_id(path) != *id {
            return Some(Ended::SocketRemoved(path.clone()));
        }
        match &self.netns {
            Some((path, id)) if file_id(path) != Some(*id) => {
                Some(Ended::NamespaceDeleted(path.clone()))
            }
            _ => None,
        }
    }
}

/// The entry of `dir` (`/run/netns`) that is this process's network namespace, if it was
/// started in a named one.
fn own_named_netns(dir: &Path) -> Option<(PathBuf, FileId)> {
    let own = file_id(Path::new("/proc/self/ns/net"))?;
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| file_id(p) == Some(own))
        .map(|p| (p, own))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removed_or_replaced_socket_ends_it() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("x.sock");
        std::fs::write(&socket, "").unwrap();
        let mut l = Lifeline::with_netns_dir("lo", socket.clone(), dir.path());
        l.netns = None;
        assert_eq!(l.ended(), None);
        // A second name keeps the old inode alive so the new file cannot get its number (ext4
        // hands a removed file's inode to the next new file; the old "other" file did not
        // always take it, and CI then saw the same identity).
        std::fs::hard_link(&socket, dir.path().join("old")).unwrap();
        std::fs::remove_file(&socket).unwrap();
        std::fs::write(&socket, "").unwrap();
        assert_eq!(l.ended(), Some(Ended::SocketRemoved(socket.clone())));
        std::fs::remove_file(&socket).unwrap();
        assert_eq!(l.ended(), Some(Ended::SocketRemoved(socket)));
    }

    #[test]
    fn a_missing_interface_ends_it() {
        let dir = tempfile::tempdir().unwrap();
        let l = Lifeline::with_netns_dir("kwg-no-such0", dir.path().join("x.sock"), dir.path());
        assert_eq!(l.ended(), Some(Ended::InterfaceDeleted));
    }
}
