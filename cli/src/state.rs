//! The state directory and the state file: what `join` changed on this machine, as an undo
//! journal written before each change is made, so `leave` can undo it even after the daemon
//! was killed.

use std::path::{Path, PathBuf};

use crate::error::Error;

/// Default state directory (`$KWG_STATE_DIR` overrides it).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/kwg";

/// Files of the state directory.
#[derive(Debug, Clone)]
pub struct StateDir(pub PathBuf);

impl StateDir {
    /// `$KWG_STATE_DIR`; else [`DEFAULT_STATE_DIR`] for root, and for other users (userspace
    /// mode) their runtime directory: `$XDG_RUNTIME_DIR/kwg`, or `/tmp/kwg-<uid>`.
    pub fn from_env() -> Self {
        let explicit = std::env::var_os("KWG_STATE_DIR").map(PathBuf::from);
        let runtime = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from);
        let uid = nix::unistd::geteuid();
        StateDir(default_dir(explicit, uid.is_root(), runtime, uid.as_raw()))
    }

    /// Creates the directory, readable by its owner only (it holds the private key and the
    /// control socket), and checks an existing one is this user's and closed to others (a
    /// directory in /tmp may have been made by someone else first).
    pub fn create(&self) -> Result<(), Error> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.0)
            .map_err(|e| {
                Error::io(
                    format!("create the state directory {}", self.0.display()),
                    e,
                )
            })?;
        self.check()
    }

    /// Refuses a state directory another local user could have planted or can change (a
    /// symlink, not this user's, or open to group/others): every command trusts what it reads
    /// there (the kubeconfig, the daemon's pid, the proxy's address). A missing one is fine.
    pub fn check(&self) -> Result<(), Error> {
        use std::os::unix::fs::MetadataExt;
        let meta = match std::fs::symlink_metadata(&self.0) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(format!("inspect {}", self.0.display()), e)),
        };
        let uid = nix::unistd::geteuid().as_raw();
        let found = if meta.is_symlink() {
            "a symlink".to_string()
        } else if !meta.is_dir() {
            "not a directory".to_string()
        } else if meta.uid() == 0 && uid != 0 && meta.mode() & 0o022 == 0 {
            // Root's (another user cannot plant that): the commands that need it fail on
            // its permissions with their own message ("run as root").
            return Ok(());
        } else if meta.uid() != uid {
            format!("owned by uid {}", meta.uid())
        } else if meta.mode() & 0o077 != 0 {
            format!("mode {:04o}", meta.mode() & 0o7777)
        } else {
            return Ok(());
        };
        Err(Error::invalid(
            format!("state directory {}", self.0.display()),
            format!(
                "it is {found}, but must be a directory of uid {uid} that only its owner can open (mode 0700): remove it, or set KWG_STATE_DIR"
            ),
        ))
    }

    pub fn key(&self) -> PathBuf {
        self.0.join("private.key")
    }
    pub fn state(&self) -> PathBuf {
        self.0.join("state.json")
    }
    pub fn socket(&self) -> PathBuf {
        self.0.join("kwg.sock")
    }
    /// Held (flock) by the daemon for its lifetime; holds its pid.
    pub fn lock(&self) -> PathBuf {
        self.0.join("daemon.lock")
    }
    pub fn resolv_backup(&self) -> PathBuf {
        self.0.join("resolv.conf.orig")
    }
    pub fn uapi_dir(&self) -> PathBuf {
        self.0.join("uapi")
    }
    pub fn log(&self) -> PathBuf {
        self.0.join("daemon.log")
    }
    /// The session's record ([`SessionInfo`]), written by `kwg join` before the daemon starts.
    pub fn session_info(&self) -> PathBuf {
        self.0.join("session.json")
    }
    /// Where the sessions after the first live: `<state dir>/sessions/<alias>`.
    pub fn sessions_dir(&self) -> PathBuf {
        self.0.join("sessions")
    }
}

/// One session's record next to its journal (issue 27): which context it serves, its name in
/// DNS, whether it answers the short names, and what it holds on the machine that another
/// session must not take (the interface and the DNS forwarder's address).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionInfo {
    /// The kubeconfig context (`None`: the kubeconfig has none, the API server alone).
    pub context: Option<String>,
    pub alias: String,
    pub primary: bool,
    pub interface: String,
    pub dns_listen: std::net::SocketAddr,
    /// The API server URL of the context as the kubeconfig gives it (`None` in records of
    /// older joins): two clusters may both call their context `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
}

impl SessionInfo {
    pub fn load(dir: &StateDir) -> Option<SessionInfo> {
        let bytes = read_no_follow(&dir.session_info()).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
    pub fn save(&self, dir: &StateDir) -> Result<(), Error> {
        let json = serde_json::to_vec_pretty(self).expect("session info serializes");
        write_atomic(&dir.session_info(), &json)
    }
}

/// A session found on this machine: a state directory with a journal, a running daemon, or
/// both.
#[derive(Debug, Clone)]
pub struct Session {
    pub dir: StateDir,
    pub info: Option<SessionInfo>,
    pub state: Option<State>,
    /// The daemon's pid when one holds the directory's lock.
    pub running: Option<Option<u32>>,
}

impl Session {
    /// The context it serves (its record's, else its journal's).
    pub fn context(&self) -> Option<&str> {
        self.info
            .as_ref()
            .and_then(|i| i.context.as_deref())
            .or_else(|| self.state.as_ref().and_then(|s| s.context.as_deref()))
    }
    /// A label for lists: the context, else the API server.
    pub fn label(&self) -> String {
        self.context()
            .or_else(|| self.server())
            .map(str::to_string)
            .unwrap_or_else(|| self.dir.0.display().to_string())
    }
    /// The API server it reaches (its record's, else its journal's).
    pub fn server(&self) -> Option<&str> {
        self.info
            .as_ref()
            .and_then(|i| i.server.as_deref())
            .or_else(|| self.state.as_ref().map(|s| s.server.as_str()))
            .filter(|s| !s.is_empty())
    }
    /// The name that `--context` finds this session by among `all` alone: its label when
    /// that names no other session, else its alias (two clusters whose contexts share a
    /// name), else its state directory.
    pub fn name_in(&self, all: &[Session]) -> String {
        let label = self.label();
        let alone = |n: &str| matches!(select(all, n).as_slice(), [one] if one.dir.0 == self.dir.0);
        if alone(&label) {
            return label;
        }
        match self.alias() {
            Some(a) if alone(a) => a.to_string(),
            _ => self.dir.0.display().to_string(),
        }
    }
    pub fn interface(&self) -> Option<&str> {
        self.state
            .as_ref()
            .map(|s| s.interface.as_str())
            .or_else(|| self.info.as_ref().map(|i| i.interface.as_str()))
    }
    pub fn primary(&self) -> bool {
        self.info.as_ref().is_none_or(|i| i.primary)
    }
    pub fn alias(&self) -> Option<&str> {
        self.info.as_ref().map(|i| i.alias.as_str())
    }
    /// A daemon runs, or a journal waits for `kwg leave`.
    pub fn exists(&self) -> bool {
        self.running.is_some() || self.state.is_some()
    }

    /// A session of context `context` (its alias too) in `dir`, without a journal, for tests.
    #[cfg(test)]
    pub fn example(dir: PathBuf, context: &str, primary: bool, running: bool) -> Session {
        Session {
            dir: StateDir(dir),
            info: Some(SessionInfo {
                context: Some(context.into()),
                alias: context.into(),
                primary,
                interface: "kwg0".into(),
                dns_listen: "127.77.0.53:53".parse().unwrap(),
                server: None,
            }),
            state: None,
            running: running.then_some(Some(1)),
        }
    }
}

/// Every session under the state directory `base`: `base` itself (the first session, where
/// a single join has always kept its state) and each `base/sessions/<alias>`, oldest first.
pub fn sessions(base: &StateDir) -> Result<Vec<Session>, Error> {
    let mut dirs = vec![base.clone()];
    if let Ok(entries) = std::fs::read_dir(base.sessions_dir()) {
        let mut more: Vec<(std::time::SystemTime, PathBuf)> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| {
                let made = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                (made, e.path())
            })
            .collect();
        more.sort();
        dirs.extend(more.into_iter().map(|(_, p)| StateDir(p)));
    }
    let mut out = Vec::new();
    for dir in dirs {
        dir.check()?;
        let running = match crate::lock::DaemonLock::holder(&dir.lock()) {
            crate::lock::Holder::Running(pid) => Some(pid),
            crate::lock::Holder::None => None,
        };
        let session = Session {
            info: SessionInfo::load(&dir),
            state: State::load(&dir.state())?,
            running,
            dir,
        };
        if session.exists() {
            out.push(session);
        }
    }
    // The first joined first (a journal's join time; a daemon still joining last).
    out.sort_by_key(|s| s.state.as_ref().map(|st| st.joined_at));
    out.sort_by_key(|s| s.state.is_none());
    Ok(out)
}

/// The sessions `--context NAME` names: the one whose alias it is (aliases are unique), else
/// every one whose context (or, without a context, API server URL) it is: two clusters whose
/// kubeconfigs both call their context `default` are two.
pub fn select<'a>(sessions: &'a [Session], name: &str) -> Vec<&'a Session> {
    if let Some(s) = sessions.iter().find(|s| s.alias() == Some(name)) {
        return vec![s];
    }
    sessions
        .iter()
        .filter(|s| {
            s.context() == Some(name) || (s.context().is_none() && s.server() == Some(name))
        })
        .collect()
}

/// Which of `sessions` a command means: the one `context` names, else the only one; several
/// (without a context, or a context two sessions share) is `Err` with names `--context`
/// takes (the caller asks, or refuses).
pub fn pick<'a>(
    sessions: &'a [Session],
    context: Option<&str>,
) -> Result<Option<&'a Session>, Vec<String>> {
    let names = |some: &[&Session]| some.iter().map(|s| s.name_in(sessions)).collect();
    match context {
        Some(c) => match select(sessions, c).as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(one)),
            several => Err(names(several)),
        },
        None if sessions.len() <= 1 => Ok(sessions.first()),
        None => Err(names(&sessions.iter().collect::<Vec<_>>())),
    }
}

/// The state directory when `$KWG_STATE_DIR` is not set.
pub(crate) fn default_dir(
    explicit: Option<PathBuf>,
    root: bool,
    runtime: Option<PathBuf>,
    uid: u32,
) -> PathBuf {
    match (explicit, root, runtime) {
        (Some(d), _, _) => d,
        (None, true, _) => PathBuf::from(DEFAULT_STATE_DIR),
        (None, false, Some(r)) if r.is_absolute() => r.join("kwg"),
        (None, false, _) => PathBuf::from(format!("/tmp/kwg-{uid}")),
    }
}

pub use kwg_session::journal::{DnsModeUsed, DnsState, LeftBehind, State, Undo};

/// The state file on disk (the journal's type is `kwg_session::journal::State`).
pub trait StateFile: Sized {
    fn load(path: &Path) -> Result<Option<Self>, Error>;
    fn save(&self, path: &Path) -> Result<(), Error>;
    fn remove(path: &Path) -> Result<(), Error>;
}

impl StateFile for State {
    /// Reads the state file; `Ok(None)` when there is none.
    fn load(path: &Path) -> Result<Option<State>, Error> {
        match read_no_follow(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                Error::invalid(
                    format!("state file {}", path.display()),
                    format!("{e}; delete it after checking /etc/resolv.conf by hand"),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("read {}", path.display()), e)),
        }
    }

    /// Writes the state file atomically (temporary file + fsync + rename).
    fn save(&self, path: &Path) -> Result<(), Error> {
        let json = serde_json::to_vec_pretty(self).expect("state serializes");
        write_atomic(path, &json)
    }

    fn remove(path: &Path) -> Result<(), Error> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io(format!("remove {}", path.display()), e))
            }
            _ => Ok(()),
        }
    }
}

/// Reads a file without following a symlink at its last component.
pub fn read_no_follow(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let mut out = Vec::new();
    f.read_to_end(&mut out)?;
    Ok(out)
}

/// Writes `bytes` to a fresh temporary file next to `path` (never following a symlink), syncs
/// it and renames it over `path`: a crash leaves either the old or the new content. Only a
/// regular file, a symlink (replaced itself, its target untouched) or nothing is replaced:
/// renaming over `/dev/null` or a FIFO would destroy what the name stood for. The temporary
/// name is this process's own, so no file of the user's (say `kubeconfig.tmp` next to
/// `kubeconfig`) is removed on the way.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Ok(meta) = std::fs::symlink_metadata(path)
        && !meta.file_type().is_file()
        && !meta.file_type().is_symlink()
    {
        return Err(Error::invalid(
            format!("file {}", path.display()),
            "it exists and is not a regular file (a device, directory or FIFO): name a new or regular file",
        ));
    }
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    // One left by a killed process that had this pid would fail every later write: the name
    // is this process's own, so it goes (a symlink itself, not what it points to).
    let _ = std::fs::remove_file(&tmp);
    let result = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|e| Error::io(format!("write {}", path.display()), e))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_only_regular_files_and_spares_neighbours() {
        let dir = std::env::temp_dir().join(format!("kwg-write-atomic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("kubeconfig");
        let neighbour = dir.join("kubeconfig.tmp");
        std::fs::write(&neighbour, "the user's").unwrap();
        write_atomic(&file, b"one").unwrap();
        // A temporary file a killed process with this pid left behind, as a file and as a
        // symlink to the neighbour: the write goes through and the neighbour is untouched.
        let stale = dir.join(format!(".kubeconfig.{}.tmp", std::process::id()));
        std::fs::write(&stale, "stale").unwrap();
        write_atomic(&file, b"two").unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "two");
        std::os::unix::fs::symlink(&neighbour, &stale).unwrap();
        write_atomic(&file, b"two").unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "two");
        assert_eq!(std::fs::read_to_string(&neighbour).unwrap(), "the user's");
        let refused = write_atomic(Path::new("/dev/null"), b"x")
            .unwrap_err()
            .to_string();
        assert!(refused.contains("is not a regular file"), "{refused}");
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            2,
            "no temporary file left"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    pub(crate) fn sample() -> State {
        State {
            peer: "laptop".parse().unwrap(),
            kwg_namespace: "kwg-system".into(),
            kubeconfig: None,
            context: Some("dev".into()),
            server: "https://192.0.2.1:6443".into(),
            user: "developer".into(),
            namespace: "emojivoto".into(),
            mapped_namespaces: None,
            interface: "kwg0".into(),
            tunnel_ip: Some("100.77.0.2".parse().unwrap()),
            tunnel_cidr6: None,
            gateway_endpoint: Some("192.0.2.1:31820".into()),
            gateway_key: Some("k".into()),
            gateway_admin: Some("100.77.0.1:8080".parse().unwrap()),
            routes: vec![],
            dns: None,
            daemon_pid: Some(std::process::id()),
            proxy: None,
            joined_at: "2026-01-01T00:00:00Z".parse().unwrap(),
            ttl_secs: 3600,
            undo: vec![Undo::DeletePeer {
                namespace: "kwg-system".into(),
                secret: "kwg-peer-laptop".into(),
                uid: Some("3f1c".into()),
                public_key: None,
                lease_expires: None,
            }],
        }
    }

    #[test]
    fn users_other_than_root_keep_state_in_their_runtime_directory() {
        let p = |s: &str| Some(PathBuf::from(s));
        assert_eq!(
            default_dir(p("/x"), false, p("/run/user/1000"), 1000),
            PathBuf::from("/x")
        );
        assert_eq!(
            default_dir(None, true, p("/run/user/0"), 0),
            PathBuf::from(DEFAULT_STATE_DIR)
        );
        assert_eq!(
            default_dir(None, false, p("/run/user/1000"), 1000),
            PathBuf::from("/run/user/1000/kwg")
        );
        assert_eq!(
            default_dir(None, false, p("relative"), 1000),
            PathBuf::from("/tmp/kwg-1000")
        );
        assert_eq!(
            default_dir(None, false, None, 1000),
            PathBuf::from("/tmp/kwg-1000")
        );
    }

    #[test]
    fn a_state_directory_open_to_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir(dir.path().join("kwg"));
        sd.create().unwrap();
        std::fs::set_permissions(&sd.0, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = sd.create().unwrap_err().to_string();
        assert!(
            e.contains("mode 0700") && e.contains("KWG_STATE_DIR"),
            "{e}"
        );
    }

    #[test]
    fn a_planted_state_directory_is_refused_before_anything_is_read() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let missing = StateDir(dir.path().join("none"));
        missing.check().unwrap();
        let real = StateDir(dir.path().join("real"));
        real.create().unwrap();
        real.check().unwrap();
        let link = StateDir(dir.path().join("link"));
        std::os::unix::fs::symlink(&real.0, &link.0).unwrap();
        let e = link.check().unwrap_err().to_string();
        assert!(e.contains("a symlink") && e.contains("remove it"), "{e}");
        std::fs::set_permissions(&real.0, std::fs::Permissions::from_mode(0o770)).unwrap();
        let e = real.check().unwrap_err().to_string();
        assert!(e.contains("mode 0770") && e.contains("remove it"), "{e}");
    }

    /// Another user's directory is refused whoever runs the test: as root (CI) one of ours
    /// is given to nobody (65534); another user finds one root made and others may write,
    /// `/tmp` (a root-owned directory only root may write is accepted, see `check`).
    #[test]
    fn a_state_directory_of_another_user_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (foreign, owner) = if nix::unistd::geteuid().is_root() {
            let d = StateDir(dir.path().join("nobodys"));
            d.create().unwrap();
            std::fs::set_permissions(&d.0, std::fs::Permissions::from_mode(0o700)).unwrap();
            std::os::unix::fs::chown(&d.0, Some(65534), None).unwrap();
            (d, 65534)
        } else {
            (StateDir(PathBuf::from("/tmp")), 0)
        };
        let e = foreign.check().unwrap_err().to_string();
        assert!(
            e.contains(&format!("it is owned by uid {owner}")) && e.contains("remove it"),
            "{e}"
        );
    }

    #[test]
    fn round_trips_and_missing_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir(dir.path().into());
        assert_eq!(State::load(&sd.state()).unwrap(), None);
        sample().save(&sd.state()).unwrap();
        assert_eq!(State::load(&sd.state()).unwrap(), Some(sample()));
        State::remove(&sd.state()).unwrap();
        State::remove(&sd.state()).unwrap();
    }

    #[test]
    fn state_files_are_never_read_or_written_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, b"precious").unwrap();
        let link = dir.path().join("state.json");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(State::load(&link).is_err());
        sample().save(&link).unwrap();
        // The link itself was replaced; its target is untouched.
        assert_eq!(std::fs::read(&target).unwrap(), b"precious");
        assert!(!std::fs::symlink_metadata(&link).unwrap().is_symlink());
    }
}
