//! The laptop's own firewall: nothing in the cluster may open a connection to this machine
//! through the tunnel (the gateway peer's AllowedIPs cover the cluster CIDRs), nor through it
//! to anything the machine forwards to (containers, VMs, bridges, the LAN: any machine running
//! Docker or libvirt has forwarding on); replies to connections opened from this side pass.
//! One nftables table of kwg's own (family inet: IPv4 and IPv6), removed on leave.

use tokio::io::AsyncWriteExt;

use crate::error::Error;

/// The table for interface `ifname` (one per interface, so two joins never share one).
pub fn table_name(ifname: &str) -> String {
    let safe: String = ifname
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("kwg_{safe}")
}

/// The ruleset creating the table.
pub fn render(table: &str, ifname: &str) -> String {
    format!(
        "table inet {table} {{\n\
         \tchain input {{\n\
         \t\ttype filter hook input priority filter; policy accept;\n\
         \t\tiifname \"{ifname}\" ct state established,related accept\n\
         \t\tiifname \"{ifname}\" counter drop comment \"new connections from the cluster\"\n\
         \t}}\n\
         \tchain forward {{\n\
         \t\ttype filter hook forward priority filter; policy accept;\n\
         \t\tiifname \"{ifname}\" ct state established,related accept\n\
         \t\tiifname \"{ifname}\" counter drop comment \"forwarding from the cluster\"\n\
         \t}}\n\
         }}\n"
    )
}

async fn nft(input: &str) -> Result<Option<String>, std::io::Error> {
    let mut child = match tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes()).await?;
    }
    let out = child.wait_with_output().await?;
    if out.status.success() {
        Ok(Some(String::new()))
    } else {
        Err(std::io::Error::other(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

/// Loads the table (replacing a stale one of the same name). `Ok(false)` when `nft` is not
/// installed: the caller warns.
pub async fn install(table: &str, ifname: &str) -> Result<bool, Error> {
    let script = format!(
        "table inet {table}\ndelete table inet {table}\n{}",
        render(table, ifname)
    );
    nft(&script)
        .await
        .map(|r| r.is_some())
        .map_err(|e| Error::io(format!("load the nftables table {table} (nft -f)"), e))
}

/// Deletes the table; `Ok(false)` when it was not there.
pub async fn remove(table: &str) -> Result<bool, Error> {
    // Creating it first makes the delete succeed whether or not it exists.
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
    nft(&format!("delete table inet {table}\n"))
        .await
        .map(|_| true)
        .map_err(|e| Error::io(format!("delete the nftables table {table}"), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_drops_only_new_connections_arriving_on_the_tunnel_to_here_or_beyond() {
        assert_eq!(table_name("kwg0"), "kwg_kwg0");
        assert_eq!(table_name("wg.0-a"), "kwg_wg_0_a");
        let r = render("kwg_kwg0", "kwg0");
        assert!(r.contains("iifname \"kwg0\" ct state established,related accept"));
        assert!(r.contains("iifname \"kwg0\" counter drop"));
        for hook in ["input", "forward"] {
            let chain = r.split(&format!("chain {hook} {{")).nth(1).unwrap();
            let chain = &chain[..chain.find('}').unwrap()];
            assert!(
                chain.contains(&format!(
                    "type filter hook {hook} priority filter; policy accept;"
                )) && chain.contains("iifname \"kwg0\" ct state established,related accept")
                    && chain.contains("iifname \"kwg0\" counter drop"),
                "{r}"
            );
        }
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
