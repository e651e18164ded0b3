//! Debian's systemd-resolved, unpacked (never installed: installing it takes over the machine's
//! `/etc/resolv.conf`) into `/var/cache/kwg-test/resolved-<version>` and reused across runs.

use crate::{Error, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where unpacked packages are kept between runs.
pub const CACHE_DIR: &str = "/var/cache/kwg-test";
/// The packages resolved needs that a machine without systemd-resolved lacks (same version).
const PACKAGES: [&str; 2] = ["systemd-resolved", "libsystemd-shared"];
/// Written last: a folder without it is a download that did not finish.
const COMPLETE: &str = ".complete";

/// An unpacked systemd-resolved.
#[derive(Debug, Clone)]
pub struct Package {
    root: PathBuf,
    version: String,
}

impl Package {
    /// The unpacked package of the version apt would install, downloading it on first use
    /// (`apt-get download` + `dpkg-deb -x`). Safe from parallel tests (a lock file).
    pub fn get() -> Result<Package> {
        let cache = Path::new(CACHE_DIR);
        std::fs::create_dir_all(cache).map_err(Error::io(format!("creating {CACHE_DIR}")))?;
        let lock = std::fs::File::create(cache.join(".lock"))
            .map_err(Error::io(format!("creating {CACHE_DIR}/.lock")))?;
        let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| Error::Invalid(format!("locking {CACHE_DIR}/.lock: {e}")))?;
        let version = match candidate_version() {
            Some(v) => v,
            // apt knows no version (no package lists): use what an earlier run unpacked.
            None => newest_cached(cache).ok_or_else(|| {
                Error::Invalid(
                    "apt knows no systemd-resolved package and none is unpacked in /var/cache/kwg-test: run apt-get update (scripts/install-deps.sh does)".into(),
                )
            })?,
        };
        let root = cache.join(format!("resolved-{version}"));
        if !root.join(COMPLETE).exists() {
            download(cache, &version, &root)?;
        }
        let pkg = Package { root, version };
        for file in [pkg.daemon(), pkg.resolvectl(), pkg.policy_dir()] {
            if !file.exists() {
                return Err(Error::Invalid(format!(
                    "{} is missing from the unpacked package: remove {} and run again",
                    file.display(),
                    pkg.root.display()
                )));
            }
        }
        Ok(pkg)
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    /// The daemon, `lib/systemd/systemd-resolved`.
    pub fn daemon(&self) -> PathBuf {
        self.root.join("lib/systemd/systemd-resolved")
    }

    /// `usr/bin/resolvectl` (run it with [`Package::lib_dir`] on `LD_LIBRARY_PATH`).
    pub fn resolvectl(&self) -> PathBuf {
        self.root.join("usr/bin/resolvectl")
    }

    /// Where `libsystemd-shared-<major>.so` is.
    pub fn lib_dir(&self) -> PathBuf {
        self.root.join("usr/lib/x86_64-linux-gnu/systemd")
    }

    /// The package's D-Bus policy (who may own and call `org.freedesktop.resolve1`).
    pub fn policy_dir(&self) -> PathBuf {
        self.root.join("usr/share/dbus-1/system.d")
    }
}

/// The version `apt-get install systemd-resolved` would pick, if apt knows the package.
fn candidate_version() -> Option<String> {
    let out = Command::new("apt-cache")
        .args(["show", "--no-all-versions", PACKAGES[0]])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("Version: "))
        .map(|v| v.trim().to_string())
        .filter(|v| is_safe_version(v))
}

/// A Debian version is safe in a path and an apt argument (`252.39-1~deb12u2`).
fn is_safe_version(v: &str) -> bool {
    !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".+-~:".contains(&b))
}

fn newest_cached(cache: &Path) -> Option<String> {
    let mut found: Vec<String> = std::fs::read_dir(cache)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join(COMPLETE).exists())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("resolved-").map(str::to_string)
        })
        .collect();
    found.sort();
    found.pop()
}

/// Downloads both packages of `version` and unpacks them into `root`.
fn download(cache: &Path, version: &str, root: &Path) -> Result<()> {
    let work = cache.join(format!(".download-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let _ = std::fs::remove_dir_all(root);
    std::fs::create_dir_all(&work).map_err(Error::io(format!("creating {}", work.display())))?;
    let specs: Vec<String> = PACKAGES.iter().map(|p| format!("{p}={version}")).collect();
    let mut argv = vec!["download", "-q"];
    argv.extend(specs.iter().map(String::as_str));
    let out = Command::new("apt-get")
        .args(&argv)
        .current_dir(&work)
        .output()
        .map_err(|source| Error::Spawn {
            cmd: "apt-get download".into(),
            source,
        })?;
    if !out.status.success() {
        return Err(Error::Command {
            cmd: format!("apt-get {} (run apt-get update first)", argv.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let unpacked = work.join("root");
    for entry in std::fs::read_dir(&work).map_err(Error::io("listing the downloads"))? {
        let deb = entry.map_err(Error::io("listing the downloads"))?.path();
        if deb.extension().is_some_and(|e| e == "deb") {
            let (deb, dest) = (deb.to_string_lossy(), unpacked.to_string_lossy());
            crate::sh::run("dpkg-deb", &["-x", &deb, &dest])?;
        }
    }
    crate::sh::write_file(&unpacked.join(COMPLETE), version)?;
    std::fs::rename(&unpacked, root)
        .map_err(Error::io(format!("moving into {}", root.display())))?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_debian_versions_become_paths() {
        assert!(is_safe_version("252.39-1~deb12u2"));
        assert!(is_safe_version("1:2.3+b1"));
        assert!(!is_safe_version("1/../../etc"));
        assert!(!is_safe_version(""));
    }
}
