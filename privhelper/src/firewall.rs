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

/// Deletes the table whether or not it exists (`Ok(false)`: nft is not installed).
pub async fn remove(table: &str) -> std::io::Result<bool> {
    nft(&format!("table inet {table}\ndelete table inet {table}\n")).await
}
