//! The WireGuard UDP socket's buffer size, one for every path: a root daemon forces it itself
//! (`kwg_wg`'s socket), and kwg-helper forces it on the socket of a normal user's daemon, which
//! could not exceed `net.core.rmem_max`/`wmem_max` (208 KiB on a stock laptop).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Receive and send buffer size of the WireGuard UDP socket: room for a few GSO batches in
/// flight. The kernel reports (and charges) twice this (`socket(7)`, `SO_RCVBUF`).
pub const UDP_SOCKET_BUFFER: usize = 4 << 20;

/// Sets `fd`'s receive and send buffers to `size` past `net.core.{r,w}mem_max`
/// (`SO_RCVBUFFORCE`/`SO_SNDBUFFORCE`: CAP_NET_ADMIN).
pub fn force(fd: BorrowedFd<'_>, size: usize) -> io::Result<()> {
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_SNDBUFFORCE] {
        set_int(fd, opt, size)?;
    }
    Ok(())
}

/// Sets `fd`'s receive and send buffers to `size` within `net.core.{r,w}mem_max` (what any
/// process may do).
pub fn set(fd: BorrowedFd<'_>, size: usize) -> io::Result<()> {
    for opt in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        set_int(fd, opt, size)?;
    }
    Ok(())
}

/// The receive and send buffer sizes as the kernel reports them (twice what was asked).
pub fn sizes(fd: BorrowedFd<'_>) -> io::Result<(usize, usize)> {
    let get = |opt| get_int(fd, libc::SOL_SOCKET, opt).map(|v| v.max(0) as usize);
    Ok((get(libc::SO_RCVBUF)?, get(libc::SO_SNDBUF)?))
}

fn set_int(fd: BorrowedFd<'_>, opt: libc::c_int, size: usize) -> io::Result<()> {
    let v = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
    // SAFETY: `fd` is open (borrowed), the value is a c_int of the length given.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// An integer socket option of `fd`.
pub fn get_int(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    opt: libc::c_int,
) -> io::Result<libc::c_int> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `fd` is open (borrowed), `v` and `len` are valid for the kernel to write.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r == 0 {
        Ok(v)
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn forced_buffers_are_the_size_asked_twice_over_past_the_sysctl_for_root() {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let fd = sock.as_fd();
        set(fd, 64 << 10).unwrap();
        assert_eq!(sizes(fd).unwrap(), (128 << 10, 128 << 10));
        if nix::unistd::geteuid().is_root() {
            force(fd, UDP_SOCKET_BUFFER).unwrap();
            let want = 2 * UDP_SOCKET_BUFFER;
            assert_eq!(sizes(fd).unwrap(), (want, want));
        }
    }
}
