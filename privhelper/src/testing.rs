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
