//! For tests of the helper's authorization: a connection made with another uid's credentials.

use std::os::unix::net::UnixStream;
use std::path::Path;

/// Connects to `socket` from a thread that switched to `uid` alone (the raw `setresuid`
/// syscall changes only the calling thread, unlike glibc's wrapper), so the helper sees `uid`
/// in SO_PEERCRED. Needs root; panics otherwise.
pub fn connect_as(socket: &Path, uid: u32) -> UnixStream {
    let socket = socket.to_path_buf();
    std::thread::spawn(move || {
        let u = libc::c_long::from(uid);
        // SAFETY: setresuid on this thread only; it ends right after connecting.
        let r = unsafe { libc::syscall(libc::SYS_setresuid, u, u, u) };
        assert_eq!(r, 0, "setresuid({uid}) needs root");
        UnixStream::connect(&socket)
            .unwrap_or_else(|e| panic!("connect to {} as uid {uid}: {e}", socket.display()))
    })
    .join()
    .unwrap()
}

/// Starts `kwg-helper serve` (`binary`) in network namespace `netns`, its socket
/// (`dir/helper.sock`) and journal (`dir/journal`) in `dir`, serving `allow_uids` (and root),
/// its log to `log`; waits up to 5 s for the socket and opens it to every uid (in real use it
/// is 0660 and group-owned; these test uids have no group).
pub fn serve_in(
    netns: &str,
    binary: &Path,
    dir: &Path,
    allow_uids: &[u32],
    log: std::process::Stdio,
) -> std::process::Child {
    use std::os::unix::fs::PermissionsExt;
    let socket = dir.join("helper.sock");
    let _ = std::fs::remove_file(&socket);
    let mut cmd = std::process::Command::new("ip");
    cmd.args(["netns", "exec", netns])
        .arg(binary)
        .arg("serve")
        .arg("--socket")
        .arg(&socket)
        .arg("--journal")
        .arg(dir.join("journal"))
        .args(["--group", "kwg-test-no-such-group"]);
    for uid in allow_uids {
        cmd.args(["--allow-uid", &uid.to_string()]);
    }
    let child = cmd.stderr(log).spawn().expect("start kwg-helper");
    let t = std::time::Instant::now();
    while !socket.exists() {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(5),
            "kwg-helper did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666))
        .expect("open the test socket");
    child
}
