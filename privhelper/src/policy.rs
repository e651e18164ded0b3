//! The helper's [`Policy`]: the laptop's own trust rule on address space (`kwg_session::trust`,
//! docs/laptop-trust.md), the one copy of it.

use ipnet::IpNet;

use crate::rules::Policy;

/// Private or shared space (RFC 1918, RFC 6598, RFC 4193), not reserved, not wider than /8
/// (IPv4) or /32 (IPv6).
pub struct TrustRules;

impl Policy for TrustRules {
    fn address_space(&self, net: &IpNet) -> Result<(), String> {
        kwg_session::trust::address_space(net)
    }
}

/// The laptop's cluster-domain rule (`kwg_session::trust::check_cluster_domain`) with no consent:
/// a user's `--cluster-domain` or `--dns-include-suffix` does not count in the helper (the user
/// side may be compromised); the default exclude suffixes do.
pub fn cluster_domain(domain: &str) -> Result<(), String> {
    let exclude: Vec<String> = kwg_session::dns::split::DEFAULT_EXCLUDE_SUFFIXES
        .iter()
        .map(|s| s.to_string())
        .collect();
    let consent = kwg_session::trust::Consent {
        also_proxy: &[],
        never_proxy: &[],
        cluster_domain: None,
        exclude: &exclude,
        include: &[],
    };
    kwg_session::trust::check_cluster_domain(domain, &consent).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trust_rule_is_the_laptops() {
        let p = TrustRules;
        assert_eq!(p.address_space(&"10.96.0.0/12".parse().unwrap()), Ok(()));
        assert_eq!(p.address_space(&"fd00::/48".parse().unwrap()), Ok(()));
        for bad in [
            "8.8.8.0/24",
            "0.0.0.0/0",
            "169.254.169.254/32",
            "10.0.0.0/7",
        ] {
            assert!(p.address_space(&bad.parse().unwrap()).is_err(), "{bad}");
        }
    }
}
