//! The user side's end of the socket: one connection, one session, requests answered in order.
//! Dropping the client (or the process dying) ends the session: the helper reverts it.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::UnixStream;

use crate::proto::{self, ErrorKind, LineBuf, Reply, Request, SessionInfo};

/// How long a request may take (the helper answers in milliseconds; nft a little more).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What went wrong talking to the helper; each names the fix.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "no kwg-helper answers on {socket}: {reason} (run kwg helper install once, or join as root)"
    )]
    NotRunning { socket: PathBuf, reason: String },
    #[error("kwg-helper refused: {message}")]
    Refused { kind: ErrorKind, message: String },
    #[error("kwg-helper's connection failed: {0}")]
    Io(#[from] io::Error),
    #[error("kwg-helper answered something unexpected: {0}")]
    Protocol(String),
}

/// A TUN the helper made for this session.
#[derive(Debug)]
pub struct HelperTun {
    pub fd: OwnedFd,
    pub name: String,
    pub ifindex: u32,
    /// IFF_VNET_HDR is on: packets carry a virtio-net header (TSO/USO).
    pub offload: bool,
}

/// A connection to the helper.
pub struct Client {
    stream: UnixStream,
    lines: LineBuf,
}

impl Client {
    /// Connects to the helper at `socket`.
    pub async fn connect(socket: &Path) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(|e| ClientError::NotRunning {
                socket: socket.to_path_buf(),
                reason: e.to_string(),
            })?;
        Ok(Client {
            stream,
            lines: LineBuf::default(),
        })
    }

    /// A client on a stream already connected to the helper.
    pub fn from_stream(stream: UnixStream) -> Client {
        Client {
            stream,
            lines: LineBuf::default(),
        }
    }

    /// Begins the session on `interface`.
    pub async fn open(
        &mut self,
        interface: &str,
        state_dir: Option<&Path>,
        also_proxy: &[IpNet],
        allow_conflicting: &[IpNet],
    ) -> Result<u64, ClientError> {
        let req = Request::Open {
            version: proto::VERSION,
            interface: interface.to_string(),
            state_dir: state_dir.map(Path::to_path_buf),
            also_proxy: also_proxy.to_vec(),
            allow_conflicting: allow_conflicting.to_vec(),
        };
        match self.call(&req).await? {
            (Reply::Opened { session }, _) => Ok(session),
            (other, _) => Err(unexpected(&other)),
        }
    }

    /// Has the helper create the session's TUN and takes its descriptor.
    pub async fn create_tun(&mut self, mtu: u16) -> Result<HelperTun, ClientError> {
        match self.call(&Request::CreateTun { mtu }).await? {
            (
                Reply::Tun {
                    name,
                    ifindex,
                    offload,
                },
                Some(fd),
            ) => Ok(HelperTun {
                fd,
                name,
                ifindex,
                offload,
            }),
            (other, _) => Err(unexpected(&other)),
        }
    }

    pub async fn set_address(&mut self, address: IpNet) -> Result<(), ClientError> {
        self.done(&Request::SetAddress { address }).await
    }

    /// Removes `address` from the session's link (one the helper gave it).
    pub async fn remove_address(&mut self, address: IpNet) -> Result<(), ClientError> {
        self.done(&Request::RemoveAddress { address }).await
    }

    pub async fn routes(&mut self, add: &[IpNet], remove: &[IpNet]) -> Result<(), ClientError> {
        self.done(&Request::Routes {
            add: add.to_vec(),
            remove: remove.to_vec(),
        })
        .await
    }

    /// Has the helper force the buffers of `sock` (the session's WireGuard UDP socket) to a
    /// root join's size; the sizes the kernel reports (receive, send).
    pub async fn udp_buffers(
        &mut self,
        sock: std::os::fd::BorrowedFd<'_>,
    ) -> Result<(u64, u64), ClientError> {
        let raw = sock.as_raw_fd();
        match self.call_with(&Request::UdpBuffers {}, Some(raw)).await? {
            (Reply::Buffers { receive, send }, _) => Ok((receive, send)),
            (other, _) => Err(unexpected(&other)),
        }
    }

    pub async fn firewall(&mut self) -> Result<(), ClientError> {
        self.done(&Request::Firewall {}).await
    }

    /// Has the helper bind the session's DNS forwarder on `listen` (port 53 is privileged) and
    /// takes the socket: the UDP one, then (`tcp`) the TCP listener.
    pub async fn dns_socket(
        &mut self,
        listen: SocketAddr,
        tcp: bool,
    ) -> Result<OwnedFd, ClientError> {
        match self.call(&Request::DnsSocket { listen, tcp }).await? {
            (Reply::Socket { .. }, Some(fd)) => Ok(fd),
            (other, _) => Err(unexpected(&other)),
        }
    }

    /// Has the helper point the resolver file at `forwarder` (this session's), `search` first.
    pub async fn resolv_conf(
        &mut self,
        forwarder: IpAddr,
        search: &[String],
    ) -> Result<(), ClientError> {
        self.done(&Request::ResolvConf {
            forwarder,
            search: search.to_vec(),
        })
        .await
    }

    /// Has systemd-resolved send `domains` to this session's forwarder on its link (a second
    /// call replaces the domains); the namespaces the helper left out, with why.
    pub async fn resolved_link(
        &mut self,
        domains: &[kwg_session::dns::domains::LinkDomain],
    ) -> Result<Vec<proto::LeftOut>, ClientError> {
        let req = Request::ResolvedLink {
            domains: domains.iter().map(Into::into).collect(),
        };
        match self.call(&req).await? {
            (Reply::Done, _) => Ok(Vec::new()),
            (Reply::LinkDomains { left_out }, _) => Ok(left_out),
            (other, _) => Err(unexpected(&other)),
        }
    }

    /// Has the helper put the resolver file back now.
    pub async fn revert_dns(&mut self) -> Result<(), ClientError> {
        self.done(&Request::RevertDns {}).await
    }

    /// Reverts the session; the helper then closes the connection.
    pub async fn close(&mut self) -> Result<(), ClientError> {
        self.done(&Request::Close {}).await
    }

    /// Ends the session on `interface` (the caller's own; root: any).
    pub async fn end(&mut self, interface: &str) -> Result<(), ClientError> {
        self.done(&Request::End {
            interface: interface.to_string(),
        })
        .await
    }

    pub async fn list(&mut self) -> Result<Vec<SessionInfo>, ClientError> {
        match self.call(&Request::List {}).await? {
            (Reply::Sessions { sessions }, _) => Ok(sessions),
            (other, _) => Err(unexpected(&other)),
        }
    }

    /// Whether the helper closed the connection (it exited or was killed, and with it the
    /// session it held): a peek, without waiting, finds the connection's end.
    pub fn is_closed(&self) -> bool {
        use nix::sys::socket::{MsgFlags, recv};
        let mut b = [0u8; 1];
        let flags = MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT;
        matches!(
            recv(self.stream.as_raw_fd(), &mut b, flags),
            Ok(0) | Err(nix::errno::Errno::ECONNRESET)
        )
    }

    async fn done(&mut self, req: &Request) -> Result<(), ClientError> {
        match self.call(req).await? {
            (Reply::Done, _) => Ok(()),
            (other, _) => Err(unexpected(&other)),
        }
    }

    /// Sends `req` and reads its reply (and a descriptor that came with it).
    pub async fn call(&mut self, req: &Request) -> Result<(Reply, Option<OwnedFd>), ClientError> {
        self.call_with(req, None).await
    }

    /// [`Client::call`] with `fd` passed on the request's first byte (SCM_RIGHTS).
    pub async fn call_with(
        &mut self,
        req: &Request,
        fd: Option<RawFd>,
    ) -> Result<(Reply, Option<OwnedFd>), ClientError> {
        let fut = async {
            match fd {
                None => self.stream.write_all(&proto::encode(req)).await?,
                Some(_) => crate::server::send(&self.stream, req, fd).await?,
            }
            self.reply().await
        };
        let (reply, fd) = tokio::time::timeout(REQUEST_TIMEOUT, fut)
            .await
            .map_err(|_| ClientError::Io(io::ErrorKind::TimedOut.into()))??;
        match reply {
            Reply::Error { kind, message } => Err(ClientError::Refused { kind, message }),
            r => Ok((r, fd)),
        }
    }

    async fn reply(&mut self) -> Result<(Reply, Option<OwnedFd>), ClientError> {
        let mut fd = None;
        let mut buf = vec![0u8; 4096];
        loop {
            if let Some(line) = self
                .lines
                .next_line()
                .map_err(|e| ClientError::Protocol(e.to_string()))?
            {
                let reply = proto::decode::<Reply>(&line)
                    .map_err(|e| ClientError::Protocol(e.to_string()))?;
                return Ok((reply, fd));
            }
            self.stream.readable().await?;
            let raw = self.stream.as_raw_fd();
            match self
                .stream
                .try_io(Interest::READABLE, || recv_some(raw, &mut buf))
            {
                Ok((0, _)) => {
                    return Err(ClientError::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "kwg-helper closed the connection",
                    )));
                }
                Ok((n, mut got)) => {
                    self.lines.push(&buf[..n]);
                    if got.len() > 1 || (fd.is_some() && !got.is_empty()) {
                        return Err(ClientError::Protocol(format!(
                            "kwg-helper passed {} descriptors with one reply (one at most)",
                            got.len() + usize::from(fd.is_some())
                        )));
                    }
                    if let Some(f) = got.pop() {
                        fd = Some(f);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// The most descriptors one message can carry (the kernel's SCM_MAX_FD).
const SCM_MAX_FD: usize = 253;

/// One `recvmsg`: the bytes and every descriptor that came with them, each owned (so closed
/// when dropped). The control buffer has room for the most a message can carry, and it is
/// walked by hand, so that even a truncated one (MSG_CTRUNC) leaves no descriptor open.
pub(crate) fn recv_some(sock: RawFd, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE((SCM_MAX_FD * std::mem::size_of::<RawFd>()) as u32) };
    // u64s: aligned as a cmsghdr needs.
    let mut control = vec![0u64; (space as usize).div_ceil(8) + 1];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: a zeroed msghdr is valid; the pointers below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = control.len() * 8;
    // SAFETY: msg points at live buffers of the lengths given.
    let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: the kernel filled msg_control with msg_controllen bytes of whole cmsghdrs; the
    // CMSG_* walk stays within them, and each SCM_RIGHTS entry is a descriptor it installed in
    // our table for us (owned here, and nowhere else).
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c);
                let len = (*c).cmsg_len as usize - (data as usize - c as usize);
                for i in 0..len / std::mem::size_of::<RawFd>() {
                    let f = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                    fds.push(OwnedFd::from_raw_fd(f));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n as usize, fds))
}

fn unexpected(r: &Reply) -> ClientError {
    ClientError::Protocol(format!("{r:?}"))
}
