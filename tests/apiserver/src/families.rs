//! A Service's IP families as the real API server defaults and checks them
//! (`pkg/registry/core/service/storage/alloc.go` `initIPFamilyFields`, and
//! `ValidateServiceClusterIPsRelatedFields` in `pkg/apis/core/validation`), and its ClusterIPs
//! allocated per family from the cluster's Service CIDRs (`--service-cluster-ip-range`, one or
//! two ranges, the first the default family).

use crate::status::{FieldError, go_str, go_str_slice};
use crate::validation::{allocate_cluster_ip, check_cluster_ip};
use ipnet::IpNet;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::net::IpAddr;

const POLICIES: &[&str] = &["PreferDualStack", "RequireDualStack", "SingleStack"];
const FAMILIES: &[&str] = &["IPv4", "IPv6"];

/// The cluster's Service CIDRs: the primary (the default family) and an optional second one of
/// the other family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceCidrs {
    pub primary: IpNet,
    pub secondary: Option<IpNet>,
}

fn family_of_net(net: &IpNet) -> &'static str {
    match net {
        IpNet::V4(_) => "IPv4",
        IpNet::V6(_) => "IPv6",
    }
}

fn family_of_ip(ip: &str) -> Option<&'static str> {
    match ip.parse::<IpAddr>().ok()? {
        IpAddr::V4(_) => Some("IPv4"),
        IpAddr::V6(_) => Some("IPv6"),
    }
}

impl ServiceCidrs {
    /// The range of `family` (`IPv4`/`IPv6`), when the cluster has one.
    pub fn of(&self, family: &str) -> Option<IpNet> {
        std::iter::once(self.primary)
            .chain(self.secondary)
            .find(|n| family_of_net(n) == family)
    }

    /// Both ranges, primary first (what the ServiceCIDR `kubernetes` lists).
    pub fn all(&self) -> Vec<IpNet> {
        std::iter::once(self.primary)
            .chain(self.secondary)
            .collect()
    }

    fn dual(&self) -> bool {
        self.secondary.is_some()
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

/// Defaults `ipFamilyPolicy` and `ipFamilies` of a Service's `spec` (not ExternalName) and
/// checks them against the cluster; `clusterIPs` must already be normalised (`[clusterIP]`
/// when only that was given, the old object's when neither was).
pub fn init_ip_families(
    spec: &mut Value,
    old_spec: Option<&Value>,
    cidrs: &ServiceCidrs,
) -> Vec<FieldError> {
    let ips = strings(&spec["clusterIPs"]);
    let headless = ips.first().map(String::as_str) == Some("None");
    let selectorless = spec["selector"].as_object().is_none_or(|m| m.is_empty());
    if spec["ipFamilyPolicy"].as_str().is_none() {
        let policy = match old_spec.and_then(|o| o["ipFamilyPolicy"].as_str()) {
            Some(old) => old,
            // Headless and selectorless: dual when the cluster can.
            None if headless && selectorless => "RequireDualStack",
            None => "SingleStack",
        };
        spec["ipFamilyPolicy"] = json!(policy);
    }
    let policy = spec["ipFamilyPolicy"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut families = strings(&spec["ipFamilies"]);
    let mut errs = Vec::new();
    // The loose pre-validation.
    let mut seen = HashSet::new();
    for (i, f) in families.iter().enumerate() {
        if !FAMILIES.contains(&f.as_str()) {
            errs.push(FieldError::not_supported(
                format!("spec.ipFamilies[{i}]"),
                go_str(f),
                FAMILIES,
            ));
        }
        if !seen.insert(f.clone()) {
            errs.push(FieldError {
                field: format!("spec.ipFamilies[{i}]"),
                reason: "FieldValueDuplicate",
                kind_text: format!("Duplicate value: {}", go_str(f)),
                detail: String::new(),
            });
        }
    }
    if !POLICIES.contains(&policy.as_str()) {
        errs.push(FieldError::not_supported(
            "spec.ipFamilyPolicy",
            go_str(&policy),
            POLICIES,
        ));
    }
    if ips.len() > 2 {
        errs.push(FieldError::invalid(
            "spec.clusterIPs",
            go_str_slice(&ips),
            "may only hold up to 2 values",
        ));
    }
    if ips.len() == 2
        && family_of_ip(&ips[0]).is_some()
        && family_of_ip(&ips[0]) == family_of_ip(&ips[1])
    {
        errs.push(FieldError::invalid(
            "spec.clusterIPs",
            go_str_slice(&ips),
            "may specify no more than one IP for each IP family",
        ));
    }
    if !headless {
        for (i, (ip, f)) in ips.iter().zip(&families).enumerate() {
            match (family_of_ip(ip), f.as_str()) {
                (Some("IPv6"), "IPv4") | (Some("IPv4"), "IPv6") => errs.push(FieldError::invalid(
                    format!("spec.clusterIPs[{i}]"),
                    go_str(ip),
                    format!("expected an {f} value as indicated by `ipFamilies[{i}]`"),
                )),
                _ => {}
            }
        }
    }
    if !errs.is_empty() {
        return errs;
    }
    if policy == "SingleStack" {
        if ips.len() == 2 {
            errs.push(FieldError::invalid(
                "spec.ipFamilyPolicy",
                go_str(&policy),
                "must be 'RequireDualStack' or 'PreferDualStack' when multiple cluster IPs are specified",
            ));
        }
        if families.len() == 2 {
            errs.push(FieldError::invalid(
                "spec.ipFamilyPolicy",
                go_str(&policy),
                "must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are specified",
            ));
        }
    }
    // Families inferred from the requested ClusterIPs.
    for (i, ip) in ips.iter().enumerate() {
        let Some(fam) = family_of_ip(ip) else { break };
        if i >= families.len() {
            if cidrs.of(fam).is_none() {
                errs.push(FieldError::invalid(
                    format!("spec.clusterIPs[{i}]"),
                    go_str_slice(&ips),
                    format!("{fam} is not configured on this cluster"),
                ));
            } else {
                families.push(fam.to_string());
            }
        }
    }
    if !errs.is_empty() {
        return errs;
    }
    let other = |f: &str| if f == "IPv4" { "IPv6" } else { "IPv4" };
    if headless && selectorless {
        if families.is_empty() {
            families.push(family_of_net(&cidrs.primary).into());
        }
        if families.len() < 2 && policy != "SingleStack" {
            let alt = other(&families[0]).to_string();
            families.push(alt);
        }
        spec["ipFamilies"] = json!(families);
        return errs;
    }
    if policy == "RequireDualStack" && !cidrs.dual() {
        errs.push(FieldError::invalid(
            "spec.ipFamilyPolicy",
            go_str(&policy),
            "this cluster is not configured for dual-stack services",
        ));
    }
    for (i, f) in families.iter().enumerate() {
        if cidrs.of(f).is_none() {
            errs.push(FieldError::invalid(
                format!("spec.ipFamilies[{i}]"),
                go_str(f),
                "not configured on this cluster",
            ));
        }
    }
    if !errs.is_empty() {
        return errs;
    }
    if families.is_empty() {
        families.push(family_of_net(&cidrs.primary).into());
    }
    if policy != "SingleStack" && families.len() == 1 && cidrs.dual() {
        let alt = other(&families[0]).to_string();
        families.push(alt);
    }
    spec["ipFamilies"] = json!(families);
    errs
}

/// The ClusterIPs of a Service whose families [`init_ip_families`] set: each family's requested
/// address checked (one the old object already held is kept), the missing ones allocated.
pub fn allocate_cluster_ips(
    spec: &Value,
    old_ips: &[String],
    cidrs: &ServiceCidrs,
    used: &mut HashSet<IpAddr>,
) -> Result<Vec<String>, FieldError> {
    let requested = strings(&spec["clusterIPs"]);
    let mut out = Vec::new();
    for (i, fam) in strings(&spec["ipFamilies"]).iter().enumerate() {
        let Some(cidr) = cidrs.of(fam) else { continue };
        let ip = match requested.get(i).filter(|s| !s.is_empty()) {
            Some(ip) if old_ips.get(i) == Some(ip) => ip.clone(),
            Some(ip) => check_cluster_ip(ip, &cidr, used)?.to_string(),
            None => allocate_cluster_ip(&cidr, used)?.to_string(),
        };
        if let Ok(a) = ip.parse() {
            used.insert(a);
        }
        out.push(ip);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dual() -> ServiceCidrs {
        ServiceCidrs {
            primary: "10.96.0.0/12".parse().unwrap(),
            secondary: Some("fd00:10:96::/112".parse().unwrap()),
        }
    }

    fn single() -> ServiceCidrs {
        ServiceCidrs {
            primary: "10.96.0.0/12".parse().unwrap(),
            secondary: None,
        }
    }

    fn init(spec: Value, cidrs: &ServiceCidrs) -> Result<Value, Vec<String>> {
        let mut spec = spec;
        let errs = init_ip_families(&mut spec, None, cidrs);
        if errs.is_empty() {
            Ok(spec)
        } else {
            Err(errs.iter().map(ToString::to_string).collect())
        }
    }

    #[test]
    fn defaults_follow_the_policy_and_the_cluster() {
        let s = init(json!({"selector": {"app": "a"}}), &dual()).unwrap();
        assert_eq!(s["ipFamilyPolicy"], "SingleStack");
        assert_eq!(s["ipFamilies"], json!(["IPv4"]));
        let s = init(json!({"ipFamilyPolicy": "PreferDualStack"}), &dual()).unwrap();
        assert_eq!(s["ipFamilies"], json!(["IPv4", "IPv6"]));
        let s = init(json!({"ipFamilyPolicy": "PreferDualStack"}), &single()).unwrap();
        assert_eq!(s["ipFamilies"], json!(["IPv4"]));
        let s = init(
            json!({"ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv6"]}),
            &dual(),
        )
        .unwrap();
        assert_eq!(s["ipFamilies"], json!(["IPv6", "IPv4"]));
        let s = init(json!({"clusterIPs": ["fd00:10:96::99"]}), &dual()).unwrap();
        assert_eq!(s["ipFamilies"], json!(["IPv6"]));
        // Headless without selector: dual when the cluster can, whatever the cluster.
        let s = init(json!({"clusterIPs": ["None"]}), &single()).unwrap();
        assert_eq!(s["ipFamilyPolicy"], "RequireDualStack");
        assert_eq!(s["ipFamilies"], json!(["IPv4", "IPv6"]));
    }

    #[test]
    fn refusals_say_what_the_real_api_server_says() {
        let e = init(json!({"ipFamilyPolicy": "RequireDualStack"}), &single()).unwrap_err();
        assert_eq!(
            e,
            [
                "spec.ipFamilyPolicy: Invalid value: \"RequireDualStack\": this cluster is not configured for dual-stack services"
            ]
        );
        let e = init(json!({"ipFamilies": ["IPv6"]}), &single()).unwrap_err();
        assert_eq!(
            e,
            ["spec.ipFamilies[0]: Invalid value: \"IPv6\": not configured on this cluster"]
        );
        let e = init(json!({"ipFamilies": ["IPv4", "IPv6"]}), &dual()).unwrap_err();
        assert_eq!(
            e,
            [
                "spec.ipFamilyPolicy: Invalid value: \"SingleStack\": must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are specified"
            ]
        );
        let e = init(json!({"ipFamilyPolicy": "Dual"}), &dual()).unwrap_err();
        assert_eq!(
            e,
            [
                "spec.ipFamilyPolicy: Unsupported value: \"Dual\": supported values: \"PreferDualStack\", \"RequireDualStack\", \"SingleStack\""
            ]
        );
        let e = init(
            json!({"ipFamilies": ["IPv4", "IPv4"], "ipFamilyPolicy": "PreferDualStack"}),
            &dual(),
        )
        .unwrap_err();
        assert_eq!(e, ["spec.ipFamilies[1]: Duplicate value: \"IPv4\""]);
        let e = init(
            json!({"clusterIPs": ["10.96.0.50"], "ipFamilies": ["IPv6"]}),
            &dual(),
        )
        .unwrap_err();
        assert_eq!(
            e,
            [
                "spec.clusterIPs[0]: Invalid value: \"10.96.0.50\": expected an IPv6 value as indicated by `ipFamilies[0]`"
            ]
        );
        let e = init(json!({"clusterIPs": ["fd00::5"]}), &single()).unwrap_err();
        assert_eq!(
            e,
            [
                "spec.clusterIPs[0]: Invalid value: []string{\"fd00::5\"}: IPv6 is not configured on this cluster"
            ]
        );
    }

    #[test]
    fn each_family_gets_an_address_of_its_range() {
        let spec = init(json!({"ipFamilyPolicy": "PreferDualStack"}), &dual()).unwrap();
        let mut used = HashSet::new();
        let ips = allocate_cluster_ips(&spec, &[], &dual(), &mut used).unwrap();
        assert_eq!(ips.len(), 2);
        assert!(dual().primary.contains(&ips[0].parse::<IpAddr>().unwrap()));
        assert!(
            dual()
                .secondary
                .unwrap()
                .contains(&ips[1].parse::<IpAddr>().unwrap())
        );
        // The next Service gets other addresses.
        let again = allocate_cluster_ips(&spec, &[], &dual(), &mut used).unwrap();
        assert_ne!(again, ips);
        // A requested IPv6 address outside the range is refused as the real server does.
        let spec =
            json!({"clusterIPs": ["10.96.0.40", "fd00:99::1"], "ipFamilies": ["IPv4", "IPv6"]});
        let e = allocate_cluster_ips(&spec, &[], &dual(), &mut HashSet::new()).unwrap_err();
        assert!(
            e.to_string()
                .contains("The range of valid IPs is fd00:10:96::/112"),
            "{e}"
        );
    }
}
