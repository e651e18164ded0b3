//! `kwg-sim pod-exec`: the last step of starting a container, already inside the pod's network
//! namespace and the private mount namespace `ip netns exec` made. Gives the pod its own `/run`
//! (a tmpfs, like a container) holding the ServiceAccount files where in-cluster clients look,
//! then execs the container's command.

use crate::{Error, Result};
use std::ffi::CString;
use std::path::Path;

/// Where in-cluster clients read the ServiceAccount token, CA and namespace.
pub const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
const SA_FILES: [&str; 3] = ["token", "ca.crt", "namespace"];

/// Mounts the files from `sa_dir` at [`SA_DIR`] and execs `argv` (returns only on failure).
pub fn run(sa_dir: &Path, argv: &[String]) -> Result<()> {
    use nix::mount::{MsFlags, mount};
    let files: Vec<(&str, Vec<u8>)> = SA_FILES
        .iter()
        .map(|f| std::fs::read(sa_dir.join(f)).map(|b| (*f, b)))
        .collect::<std::io::Result<_>>()
        .map_err(Error::io(format!(
            "reading service account files in {}",
            sa_dir.display()
        )))?;
    let none: Option<&str> = None;
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none).map_err(|e| {
        Error::Invalid(format!(
            "making / private in the pod's mount namespace: {e}"
        ))
    })?;
    mount(
        Some("tmpfs"),
        "/run",
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=755"),
    )
    .map_err(|e| Error::Invalid(format!("mounting the pod's /run: {e}")))?;
    let dir = Path::new(SA_DIR);
    std::fs::create_dir_all(dir).map_err(Error::io(format!("creating {SA_DIR}")))?;
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes)
            .map_err(Error::io(format!("writing {SA_DIR}/{name}")))?;
    }
    let args: Vec<CString> = argv
        .iter()
        .map(|a| {
            CString::new(a.as_str())
                .map_err(|_| Error::Invalid(format!("argument {a:?} contains NUL")))
        })
        .collect::<Result<_>>()?;
    let first = args
        .first()
        .ok_or_else(|| Error::Invalid("pod-exec needs a command".into()))?;
    let e = nix::unistd::execvp(first, &args).unwrap_err();
    Err(Error::Invalid(format!("exec {}: {e}", argv[0])))
}
