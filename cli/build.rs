//! Records the git commit kwg is built from, for `kwg version` and `kwg --version`:
//! `KWG_GIT_COMMIT` when set (a release build from a source tarball), else `git rev-parse`,
//! else `unknown` (no git, or not a checkout).

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=KWG_GIT_COMMIT");
    let commit = std::env::var("KWG_GIT_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=KWG_GIT_COMMIT={}", commit.trim());
}

fn git_commit() -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    // Rebuild when HEAD moves: HEAD itself (a checkout) and the ref it names (a commit).
    let dir = Command::new("git")
        .args(["rev-parse", "--git-dir"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if let Some(dir) = dir {
        println!("cargo:rerun-if-changed={dir}/HEAD");
        if let Ok(head) = std::fs::read_to_string(format!("{dir}/HEAD"))
            && let Some(r) = head.strip_prefix("ref: ")
        {
            println!("cargo:rerun-if-changed={dir}/{}", r.trim());
        }
    }
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
