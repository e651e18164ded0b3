//! Sessions per kubeconfig context (issue 27): where a new join keeps its state, which
//! interface and DNS forwarder address it takes, its alias and whether it is the primary
//! session; and which session `status`, `leave` and `peers` mean.

use std::net::SocketAddr;

use crate::args::{JoinArgs, KubeArgs};
use crate::error::Error;
use crate::state::{Session, SessionInfo, StateDir, sessions};
use kwg_session::dns::split::{alias_of, check_alias};

/// The default interface name, the first session's.
const FIRST_INTERFACE: &str = "kwg0";

/// The context a join with these flags serves (`--context`, else the kubeconfig's current
/// context) and that context's API server URL; `None` when the kubeconfig cannot be read (the
/// join then says why) or names none.
pub fn resolve_target(kube: &KubeArgs) -> (Option<String>, Option<String>) {
    let kc = match &kube.kubeconfig {
        Some(p) => kube::config::Kubeconfig::read_from(p),
        None => kube::config::Kubeconfig::read(),
    }
    .ok();
    let context = kube.context.clone().or_else(|| {
        kc.as_ref()?
            .current_context
            .clone()
            .filter(|c| !c.is_empty())
    });
    let server = kc
        .as_ref()
        .and_then(|kc| server_of(kc, context.as_deref()?));
    (context, server)
}

/// The API server URL the kubeconfig's `context` points at.
fn server_of(kc: &kube::config::Kubeconfig, context: &str) -> Option<String> {
    let cluster = &kc
        .contexts
        .iter()
        .find(|c| c.name == context)?
        .context
        .as_ref()?
        .cluster;
    kc.clusters
        .iter()
        .find(|c| &c.name == cluster)?
        .cluster
        .as_ref()?
        .server
        .as_deref()
        .map(|s| s.trim_end_matches('/').to_string())
}

/// Whether a session serves this context of this API server: the same context name of
/// another cluster (k3s calls every context `default`) is another session. A record without
/// a server (an older join) is taken for the same.
fn serves(s: &Session, context: Option<&str>, server: Option<&str>) -> bool {
    let recorded = s.server().map(|u| u.trim_end_matches('/'));
    context.is_some()
        && s.context() == context
        && (server.is_none() || recorded.is_none() || recorded == server)
}

/// Decides where a new join of `args` lives next to the sessions under `base` and sets its
/// context, interface, forwarder address, alias and primary role in `args` (the daemon reads
/// them from its spec); writes the session's record and returns its state directory. A second
/// join to a context (of the same API server) whose daemon runs is refused.
pub fn place(args: &mut JoinArgs, base: &StateDir) -> Result<StateDir, Error> {
    let (context, server) = resolve_target(&args.kube);
    let all = sessions(base)?;
    let same = all
        .iter()
        .find(|s| serves(s, context.as_deref(), server.as_deref()));
    if let Some(s) = same
        && let Some(pid) = s.running
    {
        return Err(Error::AlreadyJoinedContext {
            context: context.clone().unwrap_or_default(),
            pid,
            interface: s.interface().unwrap_or(FIRST_INTERFACE).to_string(),
            name: s.name_in(&all),
        });
    }
    // A context's journal left by a dead daemon stays its own: the join undoes it first.
    let others: Vec<&Session> = all
        .iter()
        .filter(|s| same.is_none_or(|m| m.dir.0 != s.dir.0))
        .collect();
    let taken = |a: &str| others.iter().find(|s| s.alias() == Some(a));
    let alias = match &args.alias {
        Some(a) => {
            check_alias(a).map_err(|why| Error::invalid("--alias", why))?;
            if let Some(o) = taken(a) {
                return Err(Error::invalid(
                    "--alias",
                    format!(
                        "{a} already names the session of {}: pass --alias with another name",
                        o.label()
                    ),
                ));
            }
            a.clone()
        }
        // The same context name on another cluster (or two names with one alias): the next
        // free `<alias>-N`, which `--context` then takes.
        None => free_alias(&alias_of(context.as_deref().unwrap_or("cluster")), |a| {
            taken(a).is_some()
        }),
    };
    let primary_other = others.iter().find(|s| s.running.is_some() && s.primary());
    if let (true, Some(o)) = (args.primary, primary_other) {
        return Err(Error::PrimaryTaken {
            other: o.name_in(&all),
        });
    }
    if args.interface == FIRST_INTERFACE {
        args.interface = free_interface(&others, |n| nix::net::if_::if_nametoindex(n).is_ok());
    }
    if args.dns_listen == default_dns_listen() {
        args.dns_listen = free_dns_listen(&others);
    }
    if args.proxy_listen == default_proxy_listen() {
        args.proxy_listen = free_proxy_listen(&others);
    }
    let dir = match same {
        Some(s) => s.dir.clone(),
        None if all.iter().all(|s| s.dir.0 != base.0) => base.clone(),
        None => free_dir(base, &alias, &all),
    };
    args.kube.context = context.clone().or(args.kube.context.take());
    args.alias = Some(alias.clone());
    args.secondary = primary_other.is_some();
    dir.create()?;
    SessionInfo {
        context,
        alias,
        primary: !args.secondary,
        interface: args.interface.clone(),
        dns_listen: args.dns_listen,
        server,
    }
    .save(&dir)?;
    Ok(dir)
}

/// `alias` unless `taken`; then `alias-2`, `alias-3`, ... (still a DNS label).
fn free_alias(alias: &str, taken: impl Fn(&str) -> bool) -> String {
    (1..)
        .map(|n| match n {
            1 => alias.to_string(),
            n => {
                let suffix = format!("-{n}");
                let keep = alias.len().min(63 - suffix.len());
                format!("{}{suffix}", alias[..keep].trim_end_matches('-'))
            }
        })
        .find(|a| !taken(a))
        .expect("a free alias")
}

/// `kwg0` unless another session holds it; then the first `kwgN` no session holds and no
/// link of the machine is called (`exists`).
fn free_interface(others: &[&Session], exists: impl Fn(&str) -> bool) -> String {
    let taken = |n: &str| others.iter().any(|s| s.interface() == Some(n));
    if !taken(FIRST_INTERFACE) {
        return FIRST_INTERFACE.to_string();
    }
    (1..)
        .map(|n| format!("kwg{n}"))
        .find(|n| !taken(n) && !exists(n))
        .expect("a free name")
}

fn default_dns_listen() -> SocketAddr {
    crate::dns::forwarder::DEFAULT_LISTEN
        .parse()
        .expect("an address")
}

fn default_proxy_listen() -> SocketAddr {
    crate::userspace::DEFAULT_PROXY.parse().expect("an address")
}

/// The default forwarder address (127.77.0.53:53) unless another session's forwarder has it;
/// then the next loopback address (127.77.0.54, ...).
fn free_dns_listen(others: &[&Session]) -> SocketAddr {
    let taken = |a: SocketAddr| {
        others.iter().any(|s| {
            s.info.as_ref().map(|i| i.dns_listen) == Some(a)
                || s.state
                    .as_ref()
                    .and_then(|st| st.dns.as_ref())
                    .map(|d| d.forwarder)
                    == Some(a)
        })
    };
    let first = default_dns_listen();
    let std::net::IpAddr::V4(ip) = first.ip() else {
        return first;
    };
    (0u8..200)
        .map(|n| {
            let [a, b, c, d] = ip.octets();
            SocketAddr::new([a, b, c, d.saturating_add(n)].into(), first.port())
        })
        .find(|a| !taken(*a))
        .unwrap_or(first)
}

/// The default userspace proxy port unless another session's proxy has it; then the next.
fn free_proxy_listen(others: &[&Session]) -> SocketAddr {
    let first = default_proxy_listen();
    let taken = |a: SocketAddr| {
        others
            .iter()
            .any(|s| s.state.as_ref().and_then(|st| st.proxy) == Some(a))
    };
    (0u16..100)
        .map(|n| SocketAddr::new(first.ip(), first.port() + n))
        .find(|a| !taken(*a))
        .unwrap_or(first)
}

/// `base/sessions/<alias>`, or `<alias>-2`, ... when a session lives there.
fn free_dir(base: &StateDir, alias: &str, all: &[Session]) -> StateDir {
    (1..)
        .map(|n| match n {
            1 => alias.to_string(),
            n => format!("{alias}-{n}"),
        })
        .map(|name| StateDir(base.sessions_dir().join(name)))
        .find(|d| all.iter().all(|s| s.dir.0 != d.0))
        .expect("a free directory")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(interface: &str, listen: &str) -> Session {
        Session {
            dir: StateDir("/nowhere".into()),
            info: Some(SessionInfo {
                context: Some("a".into()),
                alias: "a".into(),
                primary: true,
                interface: interface.into(),
                dns_listen: listen.parse().unwrap(),
                server: None,
            }),
            state: None,
            running: Some(Some(1)),
        }
    }

    fn join_args(argv: &[&str]) -> JoinArgs {
        use clap::Parser;
        let mut all = vec!["kwg", "join", "--kubeconfig", "/nonexistent"];
        all.extend_from_slice(argv);
        match crate::args::Cli::try_parse_from(all).unwrap().command {
            crate::args::Command::Join(a) => *a,
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_join_next_to_a_running_session_gets_its_own_place_and_is_secondary() {
        let tmp = tempfile::tempdir().unwrap();
        let base = StateDir(tmp.path().join("kwg"));
        base.create().unwrap();
        SessionInfo {
            context: Some("dev".into()),
            alias: "dev".into(),
            primary: true,
            interface: "kwg0".into(),
            dns_listen: "127.77.0.53:53".parse().unwrap(),
            server: None,
        }
        .save(&base)
        .unwrap();
        let _running = crate::lock::DaemonLock::acquire(&base.lock()).unwrap();

        let again = place(&mut join_args(&["--context", "dev"]), &base).unwrap_err();
        assert!(
            again.to_string().contains("already joined to context dev"),
            "{again}"
        );
        let primary = place(&mut join_args(&["--context", "stage", "--primary"]), &base);
        assert!(matches!(primary, Err(Error::PrimaryTaken { ref other }) if other == "dev"));
        let taken = place(&mut join_args(&["--context", "x", "--alias", "dev"]), &base);
        assert!(taken.unwrap_err().to_string().contains("--alias"));

        let mut args = join_args(&["--context", "Stage.1"]);
        let dir = place(&mut args, &base).unwrap();
        assert_eq!(dir.0, base.sessions_dir().join("stage-1"));
        assert_eq!(args.interface, "kwg1");
        assert_eq!(args.dns_listen, "127.77.0.54:53".parse().unwrap());
        assert_eq!(args.alias.as_deref(), Some("stage-1"));
        assert!(args.secondary);
        let info = SessionInfo::load(&dir).unwrap();
        assert_eq!(
            (info.context.as_deref(), info.primary),
            (Some("Stage.1"), false)
        );
    }

    #[test]
    fn a_second_session_takes_the_next_interface_and_forwarder_address() {
        assert_eq!(free_interface(&[], |_| false), "kwg0");
        let a = session("kwg0", "127.77.0.53:53");
        let b = session("kwg1", "127.77.0.54:53");
        assert_eq!(free_interface(&[&a], |_| false), "kwg1");
        // A link of that name that is no session's is passed over.
        assert_eq!(free_interface(&[&a], |n| n == "kwg1"), "kwg2");
        assert_eq!(free_interface(&[&a, &b], |_| false), "kwg2");
        assert_eq!(free_interface(&[&b], |_| false), "kwg0");
        assert_eq!(free_dns_listen(&[]), "127.77.0.53:53".parse().unwrap());
        assert_eq!(free_dns_listen(&[&a]), "127.77.0.54:53".parse().unwrap());
        assert_eq!(
            free_dns_listen(&[&a, &b]),
            "127.77.0.55:53".parse().unwrap()
        );
    }

    /// A kubeconfig whose one context is called `default` (as k3s names it) on `server`.
    fn k3s_kubeconfig(dir: &std::path::Path, name: &str, server: &str) -> String {
        let path = dir.join(name);
        let text = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: default\nclusters:\n- name: default\n  cluster:\n    server: {server}\ncontexts:\n- name: default\n  context:\n    cluster: default\n    user: default\nusers:\n- name: default\n  user:\n    token: t\n"
        );
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    #[test]
    fn two_clusters_that_both_call_their_context_default_are_two_sessions() {
        let tmp = tempfile::tempdir().unwrap();
        let base = StateDir(tmp.path().join("kwg"));
        let ka = k3s_kubeconfig(tmp.path(), "a", "https://192.0.2.1:6443");
        let kb = k3s_kubeconfig(tmp.path(), "b", "https://198.51.100.1:6443/");
        let mut args = join_args(&[]);
        args.kube.kubeconfig = Some(ka.clone().into());
        let first = place(&mut args, &base).unwrap();
        let _a = crate::lock::DaemonLock::acquire(&first.lock()).unwrap();
        args = join_args(&[]);
        args.kube.kubeconfig = Some(kb.clone().into());
        let second = place(&mut args, &base).unwrap();
        let _b = crate::lock::DaemonLock::acquire(&second.lock()).unwrap();
        assert_eq!(second.0, base.sessions_dir().join("default-2"));
        assert_eq!(
            (
                args.alias.as_deref(),
                args.interface.as_str(),
                args.secondary
            ),
            (Some("default-2"), "kwg1", true)
        );
        let info = SessionInfo::load(&second).unwrap();
        assert_eq!(info.server.as_deref(), Some("https://198.51.100.1:6443"));

        // The same cluster again is refused, naming what --context takes.
        for (kc, name) in [(&ka, "default"), (&kb, "default-2")] {
            let mut again = join_args(&[]);
            again.kube.kubeconfig = Some(kc.into());
            let e = place(&mut again, &base).unwrap_err().to_string();
            assert!(
                e.contains("already joined to context default")
                    && e.contains(&format!("kwg leave --context {name} first")),
                "{e}"
            );
        }
        // Each is found by the name kwg lists it by.
        let all = sessions(&base).unwrap();
        let names = crate::state::pick(&all, None).unwrap_err();
        assert_eq!(names, ["default", "default-2"]);
        for (name, dir) in names.iter().zip([&first, &second]) {
            let s = crate::state::pick(&all, Some(name)).unwrap().unwrap();
            assert_eq!(s.dir.0, dir.0, "{name}");
        }
    }

    #[test]
    fn a_session_without_a_context_is_named_by_its_api_server() {
        let mut a = session("kwg0", "127.77.0.53:53");
        let mut b = session("kwg1", "127.77.0.54:53");
        b.dir = StateDir("/elsewhere".into());
        for (s, alias, server) in [
            (&mut a, "one", "https://a:6443"),
            (&mut b, "two", "https://b:6443"),
        ] {
            let info = s.info.as_mut().unwrap();
            (info.context, info.alias, info.server) = (None, alias.into(), Some(server.into()));
        }
        let all = [a, b];
        let names = crate::state::pick(&all, None).unwrap_err();
        assert_eq!(names, ["https://a:6443", "https://b:6443"]);
        for (name, s) in names.iter().zip(&all) {
            let found = crate::state::pick(&all, Some(name)).unwrap().unwrap();
            assert_eq!(found.dir.0, s.dir.0);
        }
        // Its alias names it too.
        let two = crate::state::pick(&all, Some("two")).unwrap().unwrap();
        assert_eq!(two.dir.0, all[1].dir.0);
    }
}
