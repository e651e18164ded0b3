//! `kwg-helper install`: a systemd socket unit (the socket, group-owned, 0660) and a service it
//! activates, written under `--root` (default `/`), and how to remove them.

use std::io;
use std::path::{Path, PathBuf};

/// Where the units go, relative to the root.
pub const UNIT_DIR: &str = "etc/systemd/system";

/// The socket unit.
pub fn socket_unit(socket: &Path, group: &str) -> String {
    format!(
        "[Unit]\n\
         Description=kwg helper socket (TUN, routes and firewall for kwg join as a normal user)\n\
         \n\
         [Socket]\n\
         ListenStream={}\n\
         SocketMode=0660\n\
         SocketUser=root\n\
         SocketGroup={group}\n\
         RemoveOnStop=yes\n\
         \n\
         [Install]\n\
         WantedBy=sockets.target\n",
        socket.display()
    )
}

/// The service unit, started by the socket. CAP_NET_BIND_SERVICE: the helper binds the
/// session's DNS forwarder on port 53 (without it the join failed: EACCES). `/etc/resolv.conf`
/// writable under `ProtectSystem=strict`: resolv-conf mode rewrites it in place (it failed:
/// read-only file system).
pub fn service_unit(binary: &Path, socket: &Path, group: &str) -> String {
    format!(
        "[Unit]\n\
         Description=kwg helper (the privileged part of kwg join)\n\
         Requires=kwg-helper.socket\n\
         After=kwg-helper.socket\n\
         \n\
         [Service]\n\
         ExecStart={} serve --socket {} --group {group}\n\
         RuntimeDirectory=kwg-helper\n\
         RuntimeDirectoryPreserve=yes\n\
         CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_BIND_SERVICE CAP_CHOWN\n\
         NoNewPrivileges=yes\n\
         ProtectHome=yes\n\
         ProtectSystem=strict\n\
         ReadWritePaths=/run/kwg-helper -/etc/resolv.conf\n",
        binary.display(),
        socket.display()
    )
}

/// Refuses a value with a control character (a newline would add lines to a unit).
fn plain(what: &str, value: &str) -> io::Result<()> {
    match value.chars().any(char::is_control) {
        true => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "the {what} {value:?} holds a control character (a newline would add lines to the unit): pass one without"
            ),
        )),
        false => Ok(()),
    }
}

/// Writes `text` to `path` without following a symlink: a new file beside it (never an
/// existing one), renamed over it (a symlink there is replaced, not written through).
fn write_new(path: &Path, text: &str) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension(format!("kwg-new-{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)?;
    let written = f.write_all(text.as_bytes()).and_then(|()| f.sync_all());
    match written.and_then(|()| std::fs::rename(&tmp, path)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Writes both units under `root`; the paths written. Refuses control characters in the group
/// and the paths, and a unit directory that is a symlink; never writes through a symlink.
pub fn install(root: &Path, binary: &Path, socket: &Path, group: &str) -> io::Result<Vec<PathBuf>> {
    plain("group", group)?;
    for (what, p) in [("root", root), ("binary", binary), ("socket", socket)] {
        plain(what, &p.to_string_lossy())?;
    }
    let dir = root.join(UNIT_DIR);
    std::fs::create_dir_all(&dir)?;
    if std::fs::symlink_metadata(&dir)?.file_type().is_symlink() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is a symlink: kwg-helper install writes only into a real directory",
                dir.display()
            ),
        ));
    }
    let files = [
        ("kwg-helper.socket", socket_unit(socket, group)),
        ("kwg-helper.service", service_unit(binary, socket, group)),
    ];
    let mut out = Vec::new();
    for (name, text) in files {
        let path = dir.join(name);
        write_new(&path, &text)?;
        out.push(path);
    }
    Ok(out)
}

/// What to run next, and how to remove it all again.
pub fn instructions(group: &str, written: &[PathBuf]) -> String {
    let files: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
    format!(
        "Wrote {}.\n\
         Enable it:  sudo groupadd -f {group} && sudo usermod -aG {group} $USER && sudo systemctl daemon-reload && sudo systemctl enable --now kwg-helper.socket\n\
         (log in again for the group to apply; then kwg join runs as you, without sudo)\n\
         Remove it:  sudo systemctl disable --now kwg-helper.socket kwg-helper.service && sudo rm {} && sudo systemctl daemon-reload",
        files.join(" and "),
        files.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_written_under_the_root_and_say_how_to_remove_them() {
        let d = tempfile::tempdir().unwrap();
        let sock = Path::new("/run/kwg-helper/helper.sock");
        let w = install(d.path(), Path::new("/usr/bin/kwg-helper"), sock, "kwg").unwrap();
        assert_eq!(w.len(), 2);
        let s = std::fs::read_to_string(&w[0]).unwrap();
        assert!(
            s.contains("ListenStream=/run/kwg-helper/helper.sock\nSocketMode=0660"),
            "{s}"
        );
        assert!(s.contains("SocketGroup=kwg"));
        let svc = std::fs::read_to_string(&w[1]).unwrap();
        assert!(svc.contains(
            "ExecStart=/usr/bin/kwg-helper serve --socket /run/kwg-helper/helper.sock --group kwg"
        ));
        let how = instructions("kwg", &w);
        assert!(how.contains("systemctl enable --now kwg-helper.socket"));
        assert!(how.contains(&format!("sudo rm {} {}", w[0].display(), w[1].display())));
    }

    #[test]
    fn control_characters_and_symlinks_are_refused_and_never_written_through() {
        let d = tempfile::tempdir().unwrap();
        let (bin, sock) = (
            Path::new("/usr/bin/kwg-helper"),
            Path::new("/run/kwg-helper/helper.sock"),
        );
        let e = install(d.path(), bin, sock, "kwg\nExecStartPre=+/tmp/evil.sh").unwrap_err();
        assert!(e.to_string().contains("control character"), "{e}");
        let e = install(d.path(), Path::new("/x\n[Service]"), sock, "kwg").unwrap_err();
        assert!(e.to_string().contains("binary"), "{e}");
        assert!(!d.path().join(UNIT_DIR).exists());

        // A unit that is a symlink to another file: replaced, the file it named untouched.
        let dir = d.path().join(UNIT_DIR);
        std::fs::create_dir_all(&dir).unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, "untouched").unwrap();
        std::os::unix::fs::symlink(&victim, dir.join("kwg-helper.service")).unwrap();
        install(d.path(), bin, sock, "kwg").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
        let meta = std::fs::symlink_metadata(dir.join("kwg-helper.service")).unwrap();
        assert!(meta.is_file());

        // A unit directory that is a symlink: refused.
        let other = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(other.path().join("etc/systemd")).unwrap();
        std::os::unix::fs::symlink(d.path(), other.path().join(UNIT_DIR)).unwrap();
        let e = install(other.path(), bin, sock, "kwg").unwrap_err();
        assert!(e.to_string().contains("is a symlink"), "{e}");
    }
}
