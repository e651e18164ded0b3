//! Loading and removing a session's own nftables table (family inet): on its interface, only
//! replies come in and nothing is forwarded onward (docs/laptop-trust.md, "Packets from the
//! cluster"). The ruleset is the laptop's (`kwg_session::firewall`), so a normal user's join and
//! root's one-process join protect the machine alike; the CLI's driver loads it with these too.

use tokio::io::AsyncWriteExt;

pub use kwg_session::firewall::{render, table_name};

/// Runs `nft -f -` on `script`; `Ok(false)` when nft is not installed.
async fn nft(script: &str) -> std::io::Result<bool> {
    let mut child = match tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).await?;
    }
    let out = child.wait_with_output().await?;
    if out.status.success() {
        Ok(true)
    } else {
        Err(std::io::Error::other(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

/// Loads the table, replacing a stale one of the same name. `Ok(false)`: nft is not installed.
pub async fn install(table: &str, ifname: &str) -> std::io::Result<bool> {
    let script = format!(
        "table inet {table}\ndelete table inet {table}\n{}",
        render(table, ifname)
    );
    nft(&script).await
}

/// The script loading a new table: `create table` fails when `table` exists already, so a
/// session never replaces (and so never deletes) a table it does not own.
pub fn new_table_script(table: &str, ifname: &str) -> String {
    format!("create table inet {table}\n{}", render(table, ifname))
}

/// Loads the table for the helper, refusing one that exists already. `Ok(false)`: nft is not
/// installed.
pub async fn install_new(table: &str, ifname: &str) -> std::io::Result<bool> {
    nft(&new_table_script(table, ifname)).await
}

/// Deletes the table whether or not it exists (`Ok(false)`: nft is not installed).
pub async fn remove(table: &str) -> std::io::Result<bool> {
    nft(&format!("table inet {table}\ndelete table inet {table}\n")).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_helper_never_replaces_an_existing_table() {
        let s = new_table_script("kwg_kwg_a", "kwg_a");
        assert!(s.starts_with("create table inet kwg_kwg_a\n"), "{s}");
        assert!(!s.contains("delete table"), "{s}");
    }
}
