//! The laptop's own firewall: nothing in the cluster may open a connection to this machine
//! through the tunnel (the gateway peer's AllowedIPs cover the cluster CIDRs), nor through it
//! to anything the machine forwards to (containers, VMs, bridges, the LAN: any machine running
//! Docker or libvirt has forwarding on); replies to connections opened from this side pass.
//! One nftables table of kwg's own (family inet: IPv4 and IPv6), removed on leave; the CLI's
//! `driver::firewall` loads it with `nft`.

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
    }
}
