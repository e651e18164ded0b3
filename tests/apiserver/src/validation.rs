//! Validation with the real server's messages: object names and Service IPs and ports.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::Value;

use crate::kinds::NameRule;
use crate::status::{FieldError, go_str, go_str_slice};

/// The NodePort range of a default API server.
pub const NODE_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;

const SUBDOMAIN_RE: &str = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const LABEL_RE: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1035_RE: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";

/// apimachinery's `RegexError`.
fn regex_error(msg: &str, re: &str, examples: &[&str]) -> String {
    let ex: String = examples
        .iter()
        .enumerate()
        .map(|(i, e)| format!("{}'{e}', ", if i > 0 { " or " } else { "" }))
        .collect();
    format!("{msg} (e.g. {ex}regex used for validation is '{re}')")
}

fn is_label(s: &str, first_alpha: bool) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && (if first_alpha {
            b[0].is_ascii_lowercase()
        } else {
            b[0] != b'-'
        })
        && b[b.len() - 1] != b'-'
}

/// Errors for `metadata.name` under `rule` (empty when valid).
pub fn name_errors(rule: NameRule, name: &str) -> Vec<FieldError> {
    let field = "metadata.name";
    let mut details = Vec::new();
    match rule {
        NameRule::Subdomain => {
            if name.len() > 253 {
                details.push("must be no more than 253 characters".to_string());
            }
            if !name.split('.').all(|p| is_label(p, false)) {
                details.push(regex_error(
                    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
                    SUBDOMAIN_RE,
                    &["example.com"],
                ));
            }
        }
        NameRule::Label | NameRule::Dns1035 => {
            if name.len() > 63 {
                details.push("must be no more than 63 characters".to_string());
            }
            if rule == NameRule::Label && !is_label(name, false) {
                details.push(regex_error(
                    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
                    LABEL_RE,
                    &["my-name", "123-abc"],
                ));
            }
            if rule == NameRule::Dns1035 && !is_label(name, true) {
                details.push(regex_error(
                    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character",
                    DNS1035_RE,
                    &["my-name", "abc-123"],
                ));
            }
        }
        NameRule::PathSegment => {
            if name == "." || name == ".." {
                details.push(format!("may not be '{name}'"));
            }
            for bad in ["/", "%"] {
                if name.contains(bad) {
                    details.push(format!("may not contain '{bad}'"));
                }
            }
        }
    }
    details
        .into_iter()
        .map(|d| FieldError::invalid(field, go_str(name), d))
        .collect()
}

/// Keys of Secret and ConfigMap data.
pub fn config_key_errors(field: &str, key: &str) -> Option<FieldError> {
    let ok = !key.is_empty()
        && key
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-._".contains(&c));
    (!ok).then(|| {
        FieldError::invalid(
            format!("{field}[{key}]"),
            go_str(key),
            regex_error(
                "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
                "[-._a-zA-Z0-9]+",
                &["key.name", "KEY_NAME", "key-name"],
            ),
        )
    })
}

/// Check a requested ClusterIP against the service CIDR and the IPs in use.
pub fn check_cluster_ip(
    ip_text: &str,
    cidr: &IpNet,
    used: &HashSet<IpAddr>,
) -> Result<IpAddr, FieldError> {
    let ip: IpAddr = ip_text.parse().map_err(|_| {
        FieldError::invalid(
            "spec.clusterIPs[0]",
            go_str(ip_text),
            "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
        )
    })?;
    let value = go_str_slice(&[ip_text.to_string()]);
    if !cidr.contains(&ip) || ip == cidr.network() || ip == cidr.broadcast() {
        return Err(FieldError::invalid(
            "spec.clusterIPs",
            value,
            format!(
                "failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {cidr}"
            ),
        ));
    }
    if used.contains(&ip) {
        return Err(FieldError::invalid(
            "spec.clusterIPs",
            value,
            format!("failed to allocate IP {ip}: provided IP is already allocated"),
        ));
    }
    Ok(ip)
}

fn nth_host(cidr: &IpNet, n: u128) -> Option<IpAddr> {
    match cidr {
        IpNet::V4(n4) => {
            let base = u32::from(n4.network()) as u128;
            u32::try_from(base + n)
                .ok()
                .map(|v| IpAddr::V4(v.into()))
                .filter(|ip| cidr.contains(ip))
        }
        IpNet::V6(n6) => {
            Some(IpAddr::V6((u128::from(n6.network()) + n).into())).filter(|ip| cidr.contains(ip))
        }
    }
}

/// The first address of the range (the `kubernetes` Service's ClusterIP).
pub fn first_ip(cidr: &IpNet) -> IpAddr {
    nth_host(cidr, 1).unwrap_or(cidr.network())
}

/// Allocate a free ClusterIP, preferring the upper band like the real allocator so that
/// statically chosen low addresses (kube-dns at .10) stay free.
pub fn allocate_cluster_ip(cidr: &IpNet, used: &HashSet<IpAddr>) -> Result<IpAddr, FieldError> {
    let size: u128 = 1u128 << (cidr.max_prefix_len() - cidr.prefix_len()).min(64);
    let band = (size / 16).clamp(16, 256);
    let start = if size > 2 * band { band } else { 1 };
    (start..size - 1)
        .chain(1..start)
        .filter_map(|n| nth_host(cidr, n))
        .find(|ip| !used.contains(ip) && *ip != cidr.broadcast())
        .ok_or_else(|| {
            FieldError::invalid(
                "spec.clusterIPs",
                "[]string{}".into(),
                format!("failed to allocate a serviceIP: range is full ({cidr})"),
            )
        })
}

/// Check a requested NodePort.
pub fn check_node_port(index: usize, port: i64, used: &HashSet<u16>) -> Result<u16, FieldError> {
    let field = format!("spec.ports[{index}].nodePort");
    match u16::try_from(port).ok().filter(|p| NODE_PORTS.contains(p)) {
        None => Err(FieldError::invalid(
            field,
            port.to_string(),
            format!(
                "provided port is not in the valid range. The range of valid ports is {}-{}",
                NODE_PORTS.start(),
                NODE_PORTS.end()
            ),
        )),
        Some(p) if used.contains(&p) => Err(FieldError::invalid(
            field,
            port.to_string(),
            "provided port is already allocated",
        )),
        Some(p) => Ok(p),
    }
}

pub fn allocate_node_port(used: &HashSet<u16>) -> Option<u16> {
    NODE_PORTS.clone().find(|p| !used.contains(p))
}

/// ClusterIPs and NodePorts held by Services other than `except` (namespace, name).
pub fn services_in_use<'a>(
    services: impl Iterator<Item = &'a Value>,
    except: (&str, &str),
) -> (HashSet<IpAddr>, HashSet<u16>) {
    let (mut ips, mut ports) = (HashSet::new(), HashSet::new());
    for s in services {
        let m = &s["metadata"];
        if m["namespace"].as_str() == Some(except.0) && m["name"].as_str() == Some(except.1) {
            continue;
        }
        for ip in s["spec"]["clusterIPs"].as_array().into_iter().flatten() {
            if let Some(ip) = ip.as_str().and_then(|t| t.parse().ok()) {
                ips.insert(ip);
            }
        }
        for p in s["spec"]["ports"].as_array().into_iter().flatten() {
            if let Some(np) = p["nodePort"].as_u64().and_then(|n| u16::try_from(n).ok()) {
                ports.insert(np);
            }
        }
    }
    (ips, ports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(name_errors(NameRule::Subdomain, "a.b-c").is_empty());
        let e = name_errors(NameRule::Subdomain, "Bad_Name");
        assert_eq!(
            e[0].to_string(),
            "metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        );
        let e = name_errors(NameRule::Label, "a.b");
        assert!(
            e[0].to_string()
                .contains("(e.g. 'my-name',  or '123-abc', regex"),
            "{}",
            e[0]
        );
        assert!(!name_errors(NameRule::Dns1035, "1abc").is_empty());
        assert!(name_errors(NameRule::PathSegment, "system:masters").is_empty());
    }

    #[test]
    fn cluster_ips() {
        let cidr: IpNet = "10.96.0.0/12".parse().unwrap();
        let e = check_cluster_ip("1.2.3.4", &cidr, &HashSet::new()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "spec.clusterIPs: Invalid value: []string{\"1.2.3.4\"}: failed to allocate IP 1.2.3.4: the provided IP (1.2.3.4) is not in the valid range. The range of valid IPs is 10.96.0.0/12"
        );
        let mut used = HashSet::new();
        used.insert(first_ip(&cidr));
        assert_eq!(first_ip(&cidr).to_string(), "10.96.0.1");
        assert!(
            check_cluster_ip("10.96.0.1", &cidr, &used)
                .unwrap_err()
                .to_string()
                .ends_with("provided IP is already allocated")
        );
        let a = allocate_cluster_ip(&cidr, &used).unwrap();
        assert!(cidr.contains(&a) && a.to_string() != "10.96.0.10");
        let small: IpNet = "10.0.0.0/30".parse().unwrap();
        assert_eq!(
            allocate_cluster_ip(&small, &HashSet::new())
                .unwrap()
                .to_string(),
            "10.0.0.1"
        );
    }

    #[test]
    fn node_ports() {
        let mut used = HashSet::new();
        used.insert(30000);
        assert_eq!(allocate_node_port(&used), Some(30001));
        assert!(check_node_port(0, 30000, &used).is_err());
        assert!(
            check_node_port(0, 80, &used)
                .unwrap_err()
                .to_string()
                .contains("30000-32767")
        );
    }
}

/// Kubernetes' EndpointSlice validation (`pkg/apis/discovery/validation`), the parts that
/// decide where traffic may go: a known and unchanged `addressType`, at least one address
/// per endpoint, valid IPv4 addresses that are not special (unspecified, loopback,
/// link-local, link-local multicast: `ValidateNonSpecialIP`), port names used once. IPv4
/// addresses are parsed as the API server does without the `StrictIPCIDRValidation` feature
/// gate (alpha in 1.33, off by default): leniently, so `010.244.001.007` and `::ffff:10.244.1.7`
/// pass ([`parse_ipv4_sloppy`]).
pub fn endpoint_slice_errors(old: Option<&Value>, obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let types = ["FQDN", "IPv4", "IPv6"];
    let addr_type = obj["addressType"].as_str().unwrap_or_default();
    if addr_type.is_empty() {
        errs.push(FieldError::required("addressType", ""));
    } else if !types.contains(&addr_type) {
        errs.push(FieldError::not_supported(
            "addressType",
            go_str(addr_type),
            &types,
        ));
    }
    if let Some(was) = old.and_then(|o| o["addressType"].as_str())
        && was != addr_type
    {
        errs.push(FieldError::invalid(
            "addressType",
            go_str(addr_type),
            "field is immutable",
        ));
    }
    for (i, ep) in obj["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let field = format!("endpoints[{i}].addresses");
        let addrs = ep["addresses"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        if addrs.is_empty() {
            errs.push(FieldError::required(
                &field,
                "must contain at least 1 address",
            ));
        }
        for (j, a) in addrs.iter().enumerate() {
            let a = a.as_str().unwrap_or_default();
            let field = format!("{field}[{j}]");
            if addr_type != "IPv4" {
                continue;
            }
            let Some(ip) = parse_ipv4_sloppy(a) else {
                errs.push(FieldError::invalid(
                    field,
                    go_str(a),
                    "must be a valid IPv4 address",
                ));
                continue;
            };
            let special = if ip.is_unspecified() {
                Some("may not be unspecified (0.0.0.0)")
            } else if ip.is_loopback() {
                Some("may not be in the loopback range (127.0.0.0/8, ::1/128)")
            } else if ip.is_link_local() {
                Some("may not be in the link-local range (169.254.0.0/16, fe80::/10)")
            } else if ip.octets()[..3] == [224, 0, 0] {
                Some("may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)")
            } else {
                None
            };
            errs.extend(special.map(|why| FieldError::invalid(field, go_str(a), why)));
        }
    }
    let mut names = HashSet::new();
    for (i, p) in obj["ports"].as_array().into_iter().flatten().enumerate() {
        let name = p["name"].as_str().unwrap_or_default();
        if !names.insert(name) {
            errs.push(FieldError {
                field: format!("ports[{i}].name"),
                reason: "FieldValueDuplicate",
                kind_text: format!("Duplicate value: {}", go_str(name)),
                detail: String::new(),
            });
        }
    }
    errs
}

/// An IPv4 address as Kubernetes' `netutils.ParseIPSloppy` reads it for an IPv4 field
/// (`IsValidIPv4Address`): four decimal octets, leading zeros allowed and ignored (`010` is
/// ten, not octal eight), or an IPv4-mapped IPv6 address (`::ffff:10.244.1.7`).
pub fn parse_ipv4_sloppy(s: &str) -> Option<std::net::Ipv4Addr> {
    if let Ok(v6) = s.parse::<std::net::Ipv6Addr>() {
        return v6.to_ipv4_mapped();
    }
    let octets = s.split('.').map(|o| {
        let digits = !o.is_empty() && o.bytes().all(|b| b.is_ascii_digit());
        digits.then(|| o.parse::<u8>().ok()).flatten()
    });
    let octets: Vec<u8> = octets.collect::<Option<_>>()?;
    <[u8; 4]>::try_from(octets)
        .ok()
        .map(std::net::Ipv4Addr::from)
}

#[cfg(test)]
mod sloppy_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ipv4_endpoints_are_parsed_as_leniently_as_kubernetes_does() {
        let ip = |s: &str| parse_ipv4_sloppy(s).map(|a| a.to_string());
        assert_eq!(ip("010.244.001.007").as_deref(), Some("10.244.1.7"));
        assert_eq!(ip("::ffff:10.244.1.7").as_deref(), Some("10.244.1.7"));
        assert_eq!(ip("10.244.0.5").as_deref(), Some("10.244.0.5"));
        for bad in [
            "256.1.1.1",
            "10.244.0",
            "10.244.0.5.1",
            "+1.2.3.4",
            " 1.2.3.4",
            "fd00::1",
        ] {
            assert_eq!(ip(bad), None, "{bad}");
        }
        let slice = |a: &str| json!({"addressType": "IPv4", "endpoints": [{"addresses": [a]}]});
        assert!(endpoint_slice_errors(None, &slice("010.244.001.007")).is_empty());
        let errs = endpoint_slice_errors(None, &slice("0127.0.0.1"));
        assert!(errs[0].to_string().contains("loopback"), "{}", errs[0]);
        let errs = endpoint_slice_errors(None, &slice("10.244.0.256"));
        assert!(errs[0].to_string().contains("must be a valid IPv4 address"));
    }
}
