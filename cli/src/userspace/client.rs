//! `kwg forward` and `kwg exec`: for programs that cannot be pointed at a proxy, and for
//! running one with the proxy variables set. Both find the proxy in the state of the joined
//! daemon; with the TUN path (no proxy) the cluster is reachable directly, so `forward`
//! connects directly and `exec` sets nothing.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};

use super::owner::{self, Gate};
use super::socks;
use super::target::{Target, parse_port};
use crate::error::Error;
use crate::lock::{DaemonLock, Holder};
use crate::state::{State, StateDir, StateFile};

/// `kwg forward LOCAL_PORT:HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardSpec {
    pub local_port: u16,
    pub target: Target,
}

impl std::str::FromStr for ForwardSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (local, rest) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?} is not LOCAL_PORT:HOST:PORT (e.g. 5432:db.prod:5432)"))?;
        let local_port = parse_port(local).map_err(|e| e.to_string())?;
        let target = Target::parse(rest).map_err(|e| e.to_string())?;
        Ok(ForwardSpec { local_port, target })
    }
}

/// The proxy of the joined daemon: `Ok(None)` when joined with the TUN path.
fn joined_proxy(dir: &StateDir) -> Result<Option<SocketAddr>, Error> {
    let state = State::load(&dir.state())?;
    let running = matches!(DaemonLock::holder(&dir.lock()), Holder::Running(_));
    live_proxy(state.as_ref(), running).map_err(|why| Error::invalid("state", why))
}

/// The proxy to use given the state and whether its daemon runs. A dead daemon's port is
/// not used: after a crash any local user could listen on it and receive the traffic.
fn live_proxy(state: Option<&State>, running: bool) -> Result<Option<SocketAddr>, &'static str> {
    match (state, running) {
        (None, _) => Err("kwg is not joined: run kwg join first"),
        (Some(State { proxy: None, .. }), _) => Ok(None),
        (Some(State { proxy: Some(p), .. }), true) => Ok(Some(*p)),
        (Some(_), false) => {
            Err("not joined (the daemon is not running): run kwg leave, then kwg join")
        }
    }
}

/// Listens on 127.0.0.1:LOCAL_PORT and carries each connection to HOST:PORT through the
/// proxy (or directly on the TUN path) until interrupted.
pub async fn forward(spec: ForwardSpec, dir: StateDir) -> Result<(), Error> {
    let proxy = joined_proxy(&dir)?;
    let listen = SocketAddr::from(([127, 0, 0, 1], spec.local_port));
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| Error::io(format!("listen on {listen} (pick another LOCAL_PORT)"), e))?;
    eprintln!(
        "Forwarding {listen} -> {} through kwg (Ctrl-C to stop)",
        spec.target
    );
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    let gate = Arc::new(Gate::new("kwg forward"));
    loop {
        let (client, from) = tokio::select! {
            a = owner::accept(&listener) => a,
            _ = &mut stop => return Ok(()),
        };
        let (target, gate) = (spec.target.clone(), gate.clone());
        tokio::spawn(async move {
            // Only this user's programs: another local user would reach the cluster as them.
            if !gate.admits(&client, from).await {
                return;
            }
            if let Err(e) = carry(client, proxy, &target).await {
                eprintln!("kwg forward: {target}: {e}");
            }
        });
    }
}

async fn carry(
    mut client: TcpStream,
    proxy: Option<SocketAddr>,
    target: &Target,
) -> Result<(), socks::SocksError> {
    let _ = client.set_nodelay(true);
    let mut server = match proxy {
        Some(p) => socks_open(p, target).await?,
        None => TcpStream::connect(target.to_string()).await?,
    };
    let _ = server.set_nodelay(true);
    tokio::io::copy_bidirectional(&mut client, &mut server).await?;
    Ok(())
}

/// A connection to `target` through the SOCKS5 proxy at `proxy`.
pub async fn socks_open(
    proxy: SocketAddr,
    target: &Target,
) -> Result<TcpStream, socks::SocksError> {
    let mut s = TcpStream::connect(proxy).await?;
    socks::connect(&mut s, target).await?;
    Ok(s)
}

/// A TCP connection to `to` in the cluster the way this machine reaches it: through the
/// userspace proxy of the joined daemon (in `$KWG_STATE_DIR` or the default), else directly
/// (the TUN path routes it).
pub async fn dial_cluster(to: SocketAddr) -> std::io::Result<TcpStream> {
    let dir = StateDir::from_env();
    let proxy = match dir.check().and_then(|()| joined_proxy(&dir)) {
        Ok(p) => p,
        Err(e) => return Err(std::io::Error::other(e.to_string())),
    };
    match proxy {
        Some(p) => socks_open(p, &Target::from(to))
            .await
            .map_err(|e| std::io::Error::other(e.to_string())),
        None => TcpStream::connect(to).await,
    }
}

/// The variables `kwg exec` sets for the proxy at `proxy` (curl reads the lower-case ones,
/// most others either).
pub fn proxy_env(proxy: SocketAddr) -> Vec<(&'static str, String)> {
    let socks = format!("socks5h://{proxy}");
    let http = format!("http://{proxy}");
    let none = "localhost,127.0.0.1,::1".to_string();
    vec![
        ("ALL_PROXY", socks.clone()),
        ("all_proxy", socks),
        ("HTTP_PROXY", http.clone()),
        ("http_proxy", http.clone()),
        ("HTTPS_PROXY", http.clone()),
        ("https_proxy", http),
        ("NO_PROXY", none.clone()),
        ("no_proxy", none),
    ]
}

/// `kwg exec -- CMD...`: replaces this process with CMD, the proxy variables set.
pub fn exec(cmd: &[String], dir: StateDir) -> Result<(), Error> {
    use std::os::unix::process::CommandExt;
    let (program, args) = cmd
        .split_first()
        .ok_or_else(|| Error::invalid("kwg exec", "no command: kwg exec -- CMD [ARGS...]"))?;
    let mut c = std::process::Command::new(program);
    c.args(args);
    if let Some(proxy) = joined_proxy(&dir)? {
        c.envs(proxy_env(proxy));
    }
    let e = c.exec();
    Err(Error::io(format!("run {program}"), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_specs() {
        let s: ForwardSpec = "5432:db.prod:5432".parse().unwrap();
        assert_eq!(s.local_port, 5432);
        assert_eq!(s.target.to_string(), "db.prod:5432");
        let s: ForwardSpec = "8080:[fd00::1]:80".parse().unwrap();
        assert_eq!(s.target.to_string(), "[fd00::1]:80");
        for bad in ["5432", "0:db:1", "x:db:1", "1:db", "1:db:0", "1:a b:2"] {
            assert!(bad.parse::<ForwardSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_dead_daemons_proxy_port_is_never_used() {
        let mut state = crate::state::tests::sample();
        state.proxy = Some("127.0.0.1:1080".parse().unwrap());
        assert_eq!(live_proxy(Some(&state), true), Ok(state.proxy));
        let e = live_proxy(Some(&state), false).unwrap_err();
        assert!(
            e.contains("daemon is not running") && e.contains("kwg leave"),
            "{e}"
        );
        assert!(live_proxy(None, true).unwrap_err().contains("kwg join"));
        state.proxy = None;
        assert_eq!(live_proxy(Some(&state), false), Ok(None));
    }

    #[tokio::test]
    async fn with_a_dead_daemon_exec_and_forward_refuse_the_recorded_proxy() {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir(dir.path().into());
        let mut state = crate::state::tests::sample();
        state.proxy = Some("127.0.0.1:1".parse().unwrap());
        state.save(&sd.state()).unwrap();
        let e = joined_proxy(&sd).unwrap_err().to_string();
        assert!(e.contains("the daemon is not running"), "{e}");
        let _lock = DaemonLock::acquire(&sd.lock()).unwrap();
        assert_eq!(joined_proxy(&sd).unwrap(), state.proxy);
    }

    #[test]
    fn exec_sets_socks5h_and_http_in_both_cases() {
        let env = proxy_env("127.0.0.1:1080".parse().unwrap());
        let get = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("ALL_PROXY"), Some("socks5h://127.0.0.1:1080"));
        assert_eq!(get("http_proxy"), Some("http://127.0.0.1:1080"));
        assert_eq!(get("HTTPS_PROXY"), Some("http://127.0.0.1:1080"));
        assert_eq!(get("no_proxy"), Some("localhost,127.0.0.1,::1"));
    }
}
