//! `sudo kwg join`: the cluster side runs as the user who typed it, only the network side as
//! root. Under sudo (real uid 0, `SUDO_UID`/`SUDO_GID`/`SUDO_USER` set, a uid other than 0),
//! `kwg join` makes sure a kwg-helper serves that user (starting one itself: it is root), then
//! runs the same `kwg join` again as the user (with `--tun`: through the helper, or failing
//! saying why), with the user's groups, home and kubeconfig, and exits with its code. That join goes through the helper like any normal user's, so its daemon,
//! exec credential plugins and state directory are the user's, and the user's plain `kwg status`
//! and `kwg leave` see and end the session. Every other command (`status`, `peers`, `leave`,
//! `version`, `doctor`, `forward`, `exec`, `ci-credentials`, `man`, `completion`) runs again
//! as the user the same way, so nothing the user passes (a kubeconfig and its exec plugin, a
//! file to write, a command to run) runs as root; `sudo kwg daemon` is refused (kwg join
//! starts the daemon). Root's own sessions are those of a root login, without sudo.
//!
//! One exception keeps root: `sudo kwg status|leave` when the user has no session but root
//! does (a root login's join, or one by an older kwg that joined as root where
//! systemd-resolved manages DNS): they act on root's sessions, saying so on stderr, and then
//! refuse `--context` and a `KUBECONFIG` sudo kept (root's session uses root's kubeconfig).
//! `sudo kwg peers` never falls back. Where systemd-resolved manages DNS, the user's join sets
//! the link's DNS through kwg-helper.
//!
//! sudo resets the environment, so what the user's join gets is decided here:
//! - `HOME`, `USER`, `LOGNAME`: the user's, from the user database (never root's);
//! - `KUBECONFIG`: the value sudo kept (`sudo --preserve-env=KUBECONFIG`, or `sudo -E` where
//!   allowed: it is then the user's own), else `--kubeconfig`, else the user's
//!   `~/.kube/config`; with none of them the join fails naming `--preserve-env=KUBECONFIG`;
//! - `XDG_RUNTIME_DIR`: `/run/user/<uid>` when it is the user's (where the user's own `kwg`
//!   looks for the state directory), else unset (`/tmp/kwg-<uid>`, as for the user);
//! - `PATH`, `TERM`, `LANG`, `LC_ALL`, `NO_COLOR` and every `KWG_*` variable as sudo passed them.

use std::ffi::{CString, OsString};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use crate::error::Error;

/// The user who ran `sudo kwg ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invoker {
    pub uid: u32,
    pub gid: u32,
    pub name: String,
    pub home: PathBuf,
}

/// The sudo variables as they were set, when this process is really root (not a setuid binary
/// or a user's own `SUDO_UID`) and the invoker is not root.
pub fn invoker_ids(
    real_root: bool,
    var: impl Fn(&str) -> Option<String>,
) -> Result<Option<(u32, u32, String)>, Error> {
    let (Some(uid), Some(gid), Some(name)) = (var("SUDO_UID"), var("SUDO_GID"), var("SUDO_USER"))
    else {
        return Ok(None);
    };
    if !real_root {
        return Ok(None);
    }
    let num = |what: &str, v: &str| {
        v.parse::<u32>().map_err(|_| Error::Invalid {
            what: what.to_string(),
            reason: format!("{v:?} is not a number (sudo sets it)"),
        })
    };
    let (uid, gid) = (num("SUDO_UID", &uid)?, num("SUDO_GID", &gid)?);
    Ok((uid != 0).then_some((uid, gid, name)))
}

/// The invoker of `sudo kwg`, looked up in the user database, if this is one.
pub fn invoker() -> Result<Option<Invoker>, Error> {
    let real_root = nix::unistd::getuid().is_root();
    let Some((uid, gid, name)) = invoker_ids(real_root, |k| std::env::var(k).ok())? else {
        return Ok(None);
    };
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .ok_or_else(|| Error::Invalid {
            what: "SUDO_UID".into(),
            reason: format!(
                "uid {uid} ({name}) is not in the user database, so kwg cannot find its home: run kwg join as that user without sudo (kwg-helper does the privileged part)"
            ),
        })?;
    Ok(Some(Invoker {
        uid,
        gid,
        name: user.name,
        home: user.dir,
    }))
}

/// The `KUBECONFIG` the user's join gets: what sudo kept, else none when `--kubeconfig` is
/// given or the user's `~/.kube/config` exists; else the error naming the fix.
pub fn kubeconfig(
    kept: Option<OsString>,
    flag: Option<&Path>,
    inv: &Invoker,
    exists: impl Fn(&Path) -> bool,
) -> Result<Option<OsString>, Error> {
    if let Some(k) = kept.filter(|k| !k.is_empty()) {
        return Ok(Some(k));
    }
    let default = inv.home.join(".kube/config");
    if flag.is_some() || exists(&default) {
        return Ok(None);
    }
    Err(Error::Kubeconfig(format!(
        "sudo kwg join runs the cluster side as {}, but sudo reset KUBECONFIG and {} does not exist: keep it with sudo --preserve-env=KUBECONFIG kwg join ..., pass --kubeconfig, or run kwg join without sudo (kwg-helper does the privileged part)",
        inv.name,
        default.display()
    )))
}

/// The environment of the user's join (see the module's documentation).
pub fn environment(
    inv: &Invoker,
    kubeconfig: Option<OsString>,
    vars: impl Iterator<Item = (OsString, OsString)>,
    runtime_dir: Option<PathBuf>,
) -> Vec<(OsString, OsString)> {
    const KEPT: &[&str] = &["PATH", "TERM", "LANG", "LC_ALL", "NO_COLOR"];
    let mut env: Vec<(OsString, OsString)> = vars
        .filter(|(k, _)| {
            let k = k.to_string_lossy();
            KEPT.contains(&k.as_ref()) || k.starts_with("KWG_")
        })
        .collect();
    env.push(("HOME".into(), inv.home.clone().into()));
    env.push(("USER".into(), inv.name.clone().into()));
    env.push(("LOGNAME".into(), inv.name.clone().into()));
    if let Some(k) = kubeconfig {
        env.push(("KUBECONFIG".into(), k));
    }
    if let Some(r) = runtime_dir {
        env.push(("XDG_RUNTIME_DIR".into(), r.into()));
    }
    env
}

/// `/run/user/<uid>` when it is the user's directory.
fn runtime_dir(uid: u32) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let d = PathBuf::from(format!("/run/user/{uid}"));
    let m = std::fs::symlink_metadata(&d).ok()?;
    (m.is_dir() && m.uid() == uid).then_some(d)
}

/// Under `sudo kwg join`: a helper serving the invoker, then this same join run as the invoker;
/// exits with its code. Returns when this is no sudo invocation.
pub async fn join_as_invoker(args: &crate::args::JoinArgs) -> Result<(), Error> {
    let Some(inv) = invoker()? else {
        return Ok(());
    };
    let kubeconfig = kubeconfig(
        std::env::var_os("KUBECONFIG"),
        args.kube.kubeconfig.as_deref(),
        &inv,
        Path::exists,
    )?;
    // The user's join is a TUN-mode join (what sudo was typed for): through the helper, or
    // it fails saying why; never the userspace mode a user's join without a helper that serves
    // it falls back to (with a helper started for another user it did, silently).
    let mut extra = Vec::new();
    if !args.userspace {
        super::ensure_for(&super::socket(), inv.uid).await?;
        if !args.tun {
            extra.push(OsString::from("--tun"));
        }
    }
    rerun_as(&inv, kubeconfig, &extra)
}

/// What `sudo kwg COMMAND` does for an invoker who is not root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnderSudo {
    /// `join`: root makes sure a helper serves the invoker, then runs the join as the invoker.
    Join,
    /// Run again as the invoker, whatever root has.
    AsInvoker,
    /// `status`, `leave`: as the invoker, or on root's own sessions when only root has one.
    AsInvokerElseRoot,
    /// Not run at all: why, and what to do instead.
    Refused(String),
}

/// Which user runs `sudo kwg COMMAND` (see the module's documentation): every command but
/// `join` runs as the invoker, so nothing the invoker passes (a kubeconfig and its exec
/// plugin, a file to write, a command to run) runs as root.
pub fn under_sudo(command: &crate::args::Command) -> UnderSudo {
    use crate::args::Command as C;
    match command {
        C::Join(_) => UnderSudo::Join,
        C::Status(_) | C::Leave(_) => UnderSudo::AsInvokerElseRoot,
        C::Daemon(_) => UnderSudo::Refused(
            "kwg daemon is started by kwg join, never through sudo: run kwg join (kwg-helper does the privileged part)".into(),
        ),
        C::Peers(_)
        | C::Version(_)
        | C::Completion(_)
        | C::Man(_)
        | C::CiCredentials(_)
        | C::Forward(_)
        | C::Exec(_)
        | C::Doctor(_) => UnderSudo::AsInvoker,
    }
}

/// Why `sudo kwg status|leave` acting on root's own sessions refuses what the invoker passed
/// that chooses a cluster or session (`--context`, a `KUBECONFIG` sudo kept): root's session
/// uses root's own kubeconfig, and an exec plugin of the invoker's would run as root.
pub fn root_fallback_refusal(name: &str, context: bool, kubeconfig_kept: bool) -> Option<String> {
    let passed = match (context, kubeconfig_kept) {
        (false, false) => return None,
        (true, false) => "--context",
        (false, true) => "KUBECONFIG",
        (true, true) => "--context and KUBECONFIG",
    };
    Some(format!(
        "{name} has no kwg session, so sudo kwg would act on root's, which takes no {passed} from {name}: run it without them, or in a root login (sudo su -)"
    ))
}

/// Under sudo with an invoker who is not root (see [`under_sudo`]): runs this command again as
/// the invoker and exits with its code, or refuses it; returns for `join` (which runs as the
/// invoker itself, after starting the helper) and for `status`/`leave` acting on root's
/// sessions, and when this is no sudo invocation.
pub fn dispatch(command: &crate::args::Command) -> Result<(), Error> {
    use crate::args::Command as C;
    let Some(inv) = invoker()? else {
        return Ok(());
    };
    match under_sudo(command) {
        UnderSudo::Join => Ok(()),
        UnderSudo::Refused(reason) => Err(Error::Invalid {
            what: "use of sudo".into(),
            reason,
        }),
        UnderSudo::AsInvoker => rerun_as(&inv, kept_kubeconfig(), &[]),
        UnderSudo::AsInvokerElseRoot => {
            let context = match command {
                C::Status(a) => a.context.is_some(),
                C::Leave(a) => a.context.is_some(),
                _ => false,
            };
            as_invoker(&inv, context)
        }
    }
}

/// The `KUBECONFIG` sudo kept, if any.
fn kept_kubeconfig() -> Option<OsString> {
    std::env::var_os("KUBECONFIG").filter(|k| !k.is_empty())
}

/// Under `sudo kwg status|leave`: this same command run as the invoker, so it acts on the
/// invoker's sessions (the ones `sudo kwg join` made); exits with its code. Returns when the
/// invoker has no session but root has (then the command acts on root's, as the note on stderr
/// says), unless the invoker passed `--context` or a `KUBECONFIG`: refused.
fn as_invoker(inv: &Invoker, context: bool) -> Result<(), Error> {
    let root_dir = crate::state::StateDir::from_env();
    let user_dir = crate::state::StateDir(crate::state::default_dir(
        std::env::var_os("KWG_STATE_DIR").map(PathBuf::from),
        false,
        runtime_dir(inv.uid),
        inv.uid,
    ));
    if has_sessions(&root_dir, 0) && !has_sessions(&user_dir, inv.uid) {
        if let Some(reason) = root_fallback_refusal(&inv.name, context, kept_kubeconfig().is_some())
        {
            return Err(Error::Invalid {
                what: "use of sudo".into(),
                reason,
            });
        }
        eprintln!(
            "kwg: {} has no kwg session, root has one (in {}): acting on root's",
            inv.name,
            root_dir.0.display()
        );
        return Ok(());
    }
    rerun_as(inv, kept_kubeconfig(), &[])
}

/// Whether `dir` is `uid`'s state directory and holds a session (an unreadable one counts:
/// the command run as its owner says what is wrong).
fn has_sessions(dir: &crate::state::StateDir, uid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    let owned = std::fs::symlink_metadata(&dir.0).is_ok_and(|m| m.uid() == uid);
    owned && crate::state::sessions(dir).map_or(true, |s| !s.is_empty())
}

/// Starts `serve` (kwg-helper's command line) as root through `sudo -b`, for a normal user's
/// `kwg join`; `Err` is why not, with sudo's own words. `sudo -l` first asks for the password
/// (on the terminal, as sudo does) and checks the rule without starting anything: its refusal
/// ("not allowed to execute", "a terminal is required to read the password") is read in full.
/// `sudo -b` then starts the helper with its input and output on /dev/null: the command keeps the
/// caller's descriptors, and a helper holding kwg join's stderr printed its log into the
/// user's terminal after the join and kept a pipe reading it open (`$(kwg join 2>&1)`, a
/// step's captured output) until the helper exited.
pub fn start_in_background(serve: &std::process::Command) -> Result<(), String> {
    use std::process::{Command, Stdio};
    let sudo = |first: &str| {
        let mut c = Command::new("sudo");
        c.arg(first)
            .arg(serve.get_program())
            .args(serve.get_args())
            .stdout(Stdio::null());
        c
    };
    let checked = sudo("-l")
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("sudo cannot run ({e})"))?;
    if !checked.status.success() {
        let said = String::from_utf8_lossy(&checked.stderr);
        let said: Vec<&str> = said
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        return Err(match said.is_empty() {
            true => "sudo does not allow it".to_string(),
            false => format!("sudo does not allow it ({})", said.join("; ")),
        });
    }
    let started = sudo("-b")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match started {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("sudo -b did not start it ({s})")),
        Err(e) => Err(format!("sudo cannot run ({e})")),
    }
}

/// Runs this process's command line again as `inv` (its groups, then gid, then uid), `extra`
/// arguments after it, with the environment of [`environment`], and exits with its code.
fn rerun_as(inv: &Invoker, kubeconfig: Option<OsString>, extra: &[OsString]) -> Result<(), Error> {
    let exe = std::env::current_exe().map_err(|e| Error::io("find the kwg executable", e))?;
    let env = environment(inv, kubeconfig, std::env::vars_os(), runtime_dir(inv.uid));
    let groups = nix::unistd::getgrouplist(
        &CString::new(inv.name.clone()).map_err(|_| Error::Invalid {
            what: "SUDO_USER".into(),
            reason: "it holds a NUL byte".into(),
        })?,
        nix::unistd::Gid::from_raw(inv.gid),
    )
    .unwrap_or_else(|_| vec![nix::unistd::Gid::from_raw(inv.gid)]);
    let groups: Vec<libc::gid_t> = groups.into_iter().map(|g| g.as_raw()).collect();
    let (uid, gid) = (inv.uid, inv.gid);
    let mut cmd = std::process::Command::new(exe);
    cmd.args(std::env::args_os().skip(1))
        .args(extra)
        .env_clear()
        .envs(env);
    // SAFETY: only async-signal-safe syscalls between fork and exec; groups, then gid, then
    // uid (after setuid the others are no longer allowed).
    unsafe {
        cmd.pre_exec(move || {
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setresgid(gid, gid, gid) != 0
                || libc::setresuid(uid, uid, uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let status = cmd
        .status()
        .map_err(|e| Error::io(format!("run kwg as {} (uid {uid})", inv.name), e))?;
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Invoker {
        Invoker {
            uid: 1000,
            gid: 1000,
            name: "alice".into(),
            home: "/home/alice".into(),
        }
    }

    #[test]
    fn only_real_root_with_all_three_variables_and_another_uid_is_a_sudo_invocation() {
        let vars = |uid: &'static str| {
            move |k: &str| match k {
                "SUDO_UID" => Some(uid.to_string()),
                "SUDO_GID" => Some("1000".to_string()),
                "SUDO_USER" => Some("alice".to_string()),
                _ => None,
            }
        };
        assert_eq!(
            invoker_ids(true, vars("1000")).unwrap(),
            Some((1000, 1000, "alice".into()))
        );
        assert_eq!(invoker_ids(false, vars("1000")).unwrap(), None);
        assert_eq!(invoker_ids(true, vars("0")).unwrap(), None);
        assert_eq!(invoker_ids(true, |_| None).unwrap(), None);
        assert!(invoker_ids(true, vars("x")).is_err());
    }

    #[test]
    fn under_sudo_every_command_but_join_runs_as_the_invoker_and_daemon_is_refused() {
        use crate::args::Cli;
        use clap::Parser;
        let plan = |argv: &[&str]| {
            let cli =
                Cli::try_parse_from(std::iter::once("kwg").chain(argv.iter().copied())).unwrap();
            under_sudo(&cli.command)
        };
        assert_eq!(plan(&["join"]), UnderSudo::Join);
        for argv in [
            &["version", "--kubeconfig", "/tmp/f"][..],
            &["doctor", "--bundle", "/etc/shadow"],
            &["man", "--dir", "/etc"],
            &["completion", "bash"],
            &["peers", "--kubeconfig", "/tmp/f"],
            &["exec", "--", "sh"],
            &["forward", "5432:db:5432"],
            &["ci-credentials", "ci", "--kubeconfig", "/tmp/f"],
        ] {
            assert_eq!(plan(argv), UnderSudo::AsInvoker, "{argv:?}");
        }
        assert_eq!(plan(&["status"]), UnderSudo::AsInvokerElseRoot);
        assert_eq!(plan(&["leave", "--all"]), UnderSudo::AsInvokerElseRoot);
        let UnderSudo::Refused(why) = plan(&["daemon", "--spec", "{}"]) else {
            panic!("daemon under sudo runs");
        };
        assert!(why.contains("run kwg join"), "{why}");
    }

    #[test]
    fn acting_on_roots_sessions_takes_no_context_or_kubeconfig_from_the_invoker() {
        assert_eq!(root_fallback_refusal("alice", false, false), None);
        let why = root_fallback_refusal("alice", true, false).unwrap();
        assert!(why.contains("no --context from alice"), "{why}");
        let why = root_fallback_refusal("alice", false, true).unwrap();
        assert!(why.contains("KUBECONFIG"), "{why}");
        assert!(why.contains("sudo su -"), "{why}");
    }

    #[test]
    fn the_kubeconfig_is_what_sudo_kept_else_the_users_own_else_an_error_naming_the_fix() {
        let inv = alice();
        let kept = Some(OsString::from("/home/alice/eks.yaml"));
        assert_eq!(
            kubeconfig(kept.clone(), None, &inv, |_| false).unwrap(),
            kept
        );
        assert_eq!(kubeconfig(None, None, &inv, |_| true).unwrap(), None);
        let flag = Path::new("/x");
        assert_eq!(kubeconfig(None, Some(flag), &inv, |_| false).unwrap(), None);
        let e = kubeconfig(Some("".into()), None, &inv, |_| false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("sudo reset KUBECONFIG"), "{e}");
        assert!(e.contains("sudo --preserve-env=KUBECONFIG kwg join"), "{e}");
        assert!(e.contains("/home/alice/.kube/config"), "{e}");
    }

    #[test]
    fn the_users_join_gets_the_users_home_and_no_root_variables() {
        let root = [
            ("HOME", "/root"),
            ("PATH", "/usr/sbin:/usr/bin"),
            ("SUDO_COMMAND", "/usr/bin/kwg join"),
            ("MAIL", "/var/mail/root"),
            ("KWG_LOG", "debug"),
        ]
        .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let env = environment(
            &alice(),
            Some("/home/alice/eks.yaml".into()),
            root.into_iter(),
            None,
        );
        let get = |k: &str| {
            env.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.to_string_lossy().into_owned())
        };
        assert_eq!(get("HOME").as_deref(), Some("/home/alice"));
        assert_eq!(get("USER").as_deref(), Some("alice"));
        assert_eq!(get("KUBECONFIG").as_deref(), Some("/home/alice/eks.yaml"));
        assert_eq!(get("PATH").as_deref(), Some("/usr/sbin:/usr/bin"));
        assert_eq!(get("KWG_LOG").as_deref(), Some("debug"));
        assert_eq!(get("SUDO_COMMAND"), None);
        assert_eq!(get("MAIL"), None);
        assert_eq!(env.iter().filter(|(n, _)| n == "HOME").count(), 1);
    }
}
