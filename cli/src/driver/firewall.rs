//! The laptop's own firewall: nothing in the cluster may open a connection to this machine
//! through the tunnel (the gateway peer's AllowedIPs cover the cluster CIDRs), nor through it
//! to anything the machine forwards to (containers, VMs, bridges, the LAN: any machine running
//! Docker or libvirt has forwarding on); replies to connections opened from this side pass.
//! One nftables table of kwg's own (family inet: IPv4 and IPv6), removed on leave.

use crate::error::Error;
pub use kwg_session::firewall::{render, table_name};

/// Loads the table (replacing a stale one of the same name). `Ok(false)` when `nft` is not
/// installed: the caller warns. The same loading kwg-helper does for a normal user's join.
pub async fn install(table: &str, ifname: &str) -> Result<bool, Error> {
    kwg_privhelper::firewall::install(table, ifname)
        .await
        .map_err(|e| Error::io(format!("load the nftables table {table} (nft -f)"), e))
}

/// Deletes the table; `Ok(false)` when it was not there.
pub async fn remove(table: &str) -> Result<bool, Error> {
    let exists = tokio::process::Command::new("nft")
        .args(["list", "table", "inet", table])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success());
    if !exists {
        return Ok(false);
    }
    kwg_privhelper::firewall::remove(table)
        .await
        .map(|_| true)
        .map_err(|e| Error::io(format!("delete the nftables table {table}"), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nft_accepts_the_ruleset() {
        let r = render(&table_name("kwg0"), "kwg0");
        // nft's own syntax check, where nft is installed (scripts/install-deps.sh installs it).
        if let Ok(out) = std::process::Command::new("nft")
            .args(["-c", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(r.as_bytes())?;
                c.wait_with_output()
            })
        {
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
