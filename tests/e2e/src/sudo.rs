//! A real `sudo` (Debian's package) and a private `/run/kwg-helper` for tests, without touching
//! the machine's configuration: every command runs in a network namespace and in a private
//! mount namespace (`unshare --mount --propagation private`) where the test's files are
//! bind-mounted over `/etc/sudoers` (Debian bookworm's default `Defaults` and the test's rules;
//! root-owned, 0440, or sudo refuses it), `/etc/passwd`, `/etc/shadow` and `/etc/group` (the
//! machine's entries plus the test users: sudo's PAM account check wants a shadow entry), and
//! `/run` is a tmpfs holding the machine's `/run` entries (bind-mounted back) plus the test's
//! own `/run/sudo` (sudo's timestamps) and `/run/kwg-helper` (where kwg and kwg-helper look
//! for the helper's socket and journal by default; nothing of the machine's is there).
//! A helper started in one such namespace is reached from the next one through the same
//! directory; it lives in its namespace until it is killed ([`Sudo::helpers`]).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// A test user: name, uid (also its primary gid, a group of the same name), home.
#[derive(Clone, Debug)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub home: PathBuf,
}

/// Debian bookworm's `/etc/sudoers`, without `@includedir /etc/sudoers.d` (the machine's) and
/// `%sudo` (no test user is in it); the test's rules follow it.
pub const DEBIAN_DEFAULTS: &str = "Defaults\tenv_reset\n\
Defaults\tmail_badpass\n\
Defaults\tsecure_path=\"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\"\n\
Defaults\tuse_pty\n\
root\tALL=(ALL:ALL) ALL\n";

/// Enters the namespace: `$1` the test's directory, the rest the command.
const ENTER: &str = r#"set -e
d=$1; shift
for f in sudoers passwd shadow group; do mount --bind "$d/$f" "/etc/$f"; done
r="$d/run"
mount -t tmpfs -o mode=0755 kwg-e2e-run "$r"
for e in /run/* /run/.[!.]*; do
  [ -e "$e" ] || [ -L "$e" ] || continue
  n=${e#/run/}
  case "$n" in kwg-helper|sudo) continue ;; esac
  if [ -L "$e" ]; then cp -P "$e" "$r/$n"
  elif [ -d "$e" ]; then mkdir "$r/$n" && mount --rbind "$e" "$r/$n"
  else touch "$r/$n" && mount --bind "$e" "$r/$n"; fi
done
mkdir -m 0711 "$r/sudo"
mkdir -m 0755 "$r/kwg-helper"
mount --bind "$d/kwg-helper" "$r/kwg-helper"
mount --rbind "$r" /run
exec "$@"
"#;

/// The test's sudo configuration and user database, in `dir`.
pub struct Sudo {
    pub dir: PathBuf,
    pub netns: String,
}

impl Sudo {
    /// Writes the files into `dir` (created, root's, 0755): sudoers = [`DEBIAN_DEFAULTS`] +
    /// `rules`, the user database with `users`, and `groups` (`name`, gid, member names) added.
    pub fn new(
        dir: &Path,
        netns: &str,
        users: &[User],
        groups: &[(&str, u32, &[&str])],
        rules: &str,
    ) -> Sudo {
        std::fs::create_dir_all(dir.join("run")).unwrap();
        std::fs::create_dir_all(dir.join("kwg-helper")).unwrap();
        for d in [dir, &dir.join("kwg-helper")] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let etc = |name: &str, extra: String, mode: u32| {
            let mut text = std::fs::read_to_string(Path::new("/etc").join(name)).unwrap();
            text += &extra;
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        let line = |f: &dyn Fn(&User) -> String| users.iter().map(f).collect::<String>();
        etc(
            "passwd",
            line(&|u| {
                format!(
                    "{}:x:{}:{}::{}:/bin/sh\n",
                    u.name,
                    u.uid,
                    u.uid,
                    u.home.display()
                )
            }),
            0o644,
        );
        etc(
            "shadow",
            line(&|u| format!("{}:*:20000:0:99999:7:::\n", u.name)),
            0o640,
        );
        let mut extra = line(&|u| format!("{}:x:{}:\n", u.name, u.uid));
        for (name, gid, members) in groups {
            extra += &format!("{name}:x:{gid}:{}\n", members.join(","));
        }
        etc("group", extra, 0o644);
        let sudoers = dir.join("sudoers");
        std::fs::write(&sudoers, format!("{DEBIAN_DEFAULTS}{rules}")).unwrap();
        std::fs::set_permissions(&sudoers, std::fs::Permissions::from_mode(0o440)).unwrap();
        std::fs::write(dir.join("enter.sh"), ENTER).unwrap();
        Sudo {
            dir: dir.to_path_buf(),
            netns: netns.to_string(),
        }
    }

    /// What the namespace sees as `/run/kwg-helper`.
    pub fn helper_dir(&self) -> PathBuf {
        self.dir.join("kwg-helper")
    }

    /// `argv` as root in the namespace.
    pub fn root(&self, argv: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.netns])
            .args(["unshare", "--mount", "--propagation", "private", "sh"])
            .arg(self.dir.join("enter.sh"))
            .arg(&self.dir)
            .args(argv);
        c
    }

    /// `argv` as `user` (its uid and gid, the supplementary groups the test's group file gives
    /// it) in the namespace, with only the environment a login gives (`HOME`, `USER`,
    /// `LOGNAME`, `PATH` = `path`) and `env` (`NAME=value`).
    pub fn user(&self, user: &User, path: &str, env: &[String], argv: &[&str]) -> Command {
        let uid = user.uid.to_string();
        let mut a: Vec<String> = ["setpriv", "--reuid", &uid, "--regid", &uid, "--init-groups"]
            .map(String::from)
            .to_vec();
        a.extend(["env", "-i"].map(String::from));
        a.push(format!("HOME={}", user.home.display()));
        a.push(format!("USER={}", user.name));
        a.push(format!("LOGNAME={}", user.name));
        a.push(format!("PATH={path}"));
        a.extend(env.iter().cloned());
        a.extend(argv.iter().map(|s| s.to_string()));
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        self.root(&a)
    }

    /// The kwg-helper processes serving in this network namespace other than `except`:
    /// (pid, command line with spaces).
    pub fn helpers(&self, except: &[u32]) -> Vec<(u32, String)> {
        let out = Command::new("ip")
            .args(["netns", "pids", &self.netns])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
            .filter(|p| !except.contains(p))
            .filter_map(|p| {
                let cmd = std::fs::read(format!("/proc/{p}/cmdline")).ok()?;
                let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                let exe = cmd.split(' ').next()?;
                (exe.ends_with("/kwg-helper") && cmd.contains(" serve ")).then(|| (p, cmd))
            })
            .collect()
    }

    /// Stops the helpers [`Sudo::helpers`] finds (SIGTERM: each reverts its sessions), waiting
    /// up to 10 s for them to exit.
    pub fn stop_helpers(&self, except: &[u32]) {
        let pids = self.helpers(except);
        for (p, _) in &pids {
            let _ = Command::new("kill").arg(p.to_string()).status();
        }
        let t = std::time::Instant::now();
        while pids
            .iter()
            .any(|(p, _)| Path::new(&format!("/proc/{p}")).exists())
            && t.elapsed() < std::time::Duration::from_secs(10)
        {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

/// Stops the helpers sudo started in the namespace (all but `except`) and removes `paths` when
/// dropped, so a failed assertion leaves no root kwg-helper or state directory behind.
pub struct HelperGuard<'a> {
    sudo: &'a Sudo,
    except: Vec<u32>,
    paths: Vec<PathBuf>,
}

impl Sudo {
    /// A [`HelperGuard`] for this namespace.
    pub fn guard(&self, except: &[u32], paths: &[PathBuf]) -> HelperGuard<'_> {
        HelperGuard {
            sudo: self,
            except: except.to_vec(),
            paths: paths.to_vec(),
        }
    }
}

impl Drop for HelperGuard<'_> {
    fn drop(&mut self) {
        self.sudo.stop_helpers(&self.except);
        for p in &self.paths {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

/// Runs `cmd` to the end of its output, as a script reading it does (`$(kwg join 2>&1)`);
/// panics when that takes over `limit`: a process it started (a helper through `sudo -b`)
/// holding its stdout or stderr open keeps such a script waiting.
pub fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap(),
        Err(_) => panic!(
            "{cmd:?}: its output was still open after {limit:?} (a process it started holds it?)"
        ),
    }
}
