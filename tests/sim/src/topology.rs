//! The cluster's network: namespaces, veths, the LAN bridge, pod plumbing.
//!
//! Everything is created inside the cluster's namespaces with `ip -n`; nothing touches the root
//! namespace.

use crate::names::{self, Names};
use crate::sh::{self, ip};
use crate::{Error, Result};
use std::net::Ipv4Addr;

/// Creates the node, LAN and laptop namespaces and wires them.
pub fn build(n: &Names) -> Result<()> {
    let (node, lan, laptop) = (n.node_ns(), n.lan_ns(), n.laptop_ns());
    for ns in [&lan, &node] {
        ip(&format!("netns add {ns}"))?;
        ip(&format!("-n {ns} link set lo up"))?;
    }
    // A fixed MAC: a bridge without one takes the lowest of its ports' MACs, so adding a laptop
    // could change it under the LAN's neighbour caches and silence 192.0.2.53/.80 for seconds.
    ip(&format!(
        "-n {lan} link add br0 address 02:6b:00:00:00:fe type bridge"
    ))?;
    ip(&format!("-n {lan} link set br0 up"))?;
    for addr in [names::LAN_DNS_IP, names::INTRANET_IP] {
        ip(&format!("-n {lan} addr add {addr}/24 dev br0"))?;
    }
    sh::run(
        "ip",
        &[
            "netns",
            "exec",
            &node,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
        ],
    )?;
    attach_to_lan(n, &node, "p-node", names::NODE_IP)?;
    // The node's own processes reach ClusterIPs through the output DNAT, which needs a route to
    // exist first; a veth whose peer stays down (a dummy like kube-proxy's kube-ipvs0, without
    // needing the dummy module) drops what no Service matches.
    ip(&format!(
        "-n {node} link add kube-svc type veth peer name kube-svc-down"
    ))?;
    ip(&format!("-n {node} link set kube-svc up"))?;
    ip(&format!(
        "-n {node} route add {} dev kube-svc",
        names::SERVICE_CIDR
    ))?;
    add_machine(n, &laptop, "p-laptop", names::LAPTOP_IP)
}

/// Creates a machine namespace on the LAN with `addr` and a resolv.conf pointing at the LAN resolver.
fn add_machine(n: &Names, ns: &str, port: &str, addr: Ipv4Addr) -> Result<()> {
    ip(&format!("netns add {ns}"))?;
    ip(&format!("-n {ns} link set lo up"))?;
    attach_to_lan(n, ns, port, addr)?;
    sh::write_file(
        &Names::etc_netns(ns).join("resolv.conf"),
        &format!(
            "nameserver {}\nsearch {}\n",
            names::LAN_DNS_IP,
            names::LAN_ZONE
        ),
    )
}

/// A veth from the LAN bridge (port `port`) to `eth0` in `ns` with `addr/24`.
///
/// `eth0`'s MAC address is derived from `addr`: a laptop deleted and added again with the same
/// address keeps its MAC, so the LAN's neighbour caches (resolver, node) stay right instead of
/// sending replies to a vanished MAC until their entries expire (seconds of silence).
fn attach_to_lan(n: &Names, ns: &str, port: &str, addr: Ipv4Addr) -> Result<()> {
    let lan = n.lan_ns();
    let [a, b, c, d] = addr.octets();
    let mac = format!("02:6b:{a:02x}:{b:02x}:{c:02x}:{d:02x}");
    ip(&format!(
        "-n {lan} link add {port} type veth peer name eth0 address {mac} netns {ns}"
    ))?;
    ip(&format!("-n {lan} link set {port} master br0 up"))?;
    ip(&format!("-n {ns} addr add {addr}/24 dev eth0"))?;
    ip(&format!("-n {ns} link set eth0 up"))?;
    Ok(())
}

/// `kwg-sim laptop add NAME`: another machine on the LAN; returns its address.
pub fn add_laptop(n: &Names, name: &str) -> Result<Ipv4Addr> {
    let ok = !name.is_empty()
        && name.len() <= 12
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !ok {
        return Err(Error::Invalid(format!(
            "laptop name {name:?} must be 1-12 characters of a-z and 0-9"
        )));
    }
    let dir = n.laptops_dir();
    if dir.join(name).exists() {
        return Err(Error::Invalid(format!(
            "laptop {name} exists already (kwg-sim laptop del {name})"
        )));
    }
    let used: Vec<String> = std::fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .collect()
        })
        .unwrap_or_default();
    let addr = (11..=50u8)
        .map(|i| Ipv4Addr::new(192, 0, 2, i))
        .find(|a| !used.iter().any(|u| u.trim() == a.to_string()))
        .ok_or_else(|| {
            Error::Invalid("no free LAN address for another laptop (40 at most)".into())
        })?;
    sh::write_file(&dir.join(name), &addr.to_string())?;
    add_machine(n, &n.extra_laptop_ns(name), &format!("l-{name}"), addr)?;
    Ok(addr)
}

/// `kwg-sim laptop del NAME`.
pub fn del_laptop(n: &Names, name: &str) -> Result<()> {
    delete_ns(&n.extra_laptop_ns(name));
    let _ = std::fs::remove_file(n.laptops_dir().join(name));
    Ok(())
}

/// Kills every process inside `ns`, deletes it and its `/etc/netns` directory. Never fails.
pub fn delete_ns(ns: &str) {
    for _ in 0..50 {
        let pids = sh::netns_pids(ns);
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            sh::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = ip(&format!("netns del {ns}"));
    let _ = std::fs::remove_dir_all(Names::etc_netns(ns));
}

/// A pod's network: namespace, routed veth with a /32 route in the node, resolv.conf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNet {
    /// The pod's network namespace.
    pub ns: String,
    /// The node-side interface name.
    pub host_if: String,
    pub ip: Ipv4Addr,
}

impl PodNet {
    /// The plumbing for a pod at `ip` (in the node's /24): interface `pod<last octet>`.
    pub fn new(n: &Names, namespace: &str, pod: &str, ip: Ipv4Addr) -> PodNet {
        PodNet {
            ns: n.pod_ns(namespace, pod),
            host_if: format!("pod{}", ip.octets()[3]),
            ip,
        }
    }

    /// Creates the namespace and veth, routes and the kubelet-style resolv.conf.
    pub fn create(&self, n: &Names, namespace: &str) -> Result<()> {
        let (node, ns, hif, ip4, gw) = (
            n.node_ns(),
            &self.ns,
            &self.host_if,
            self.ip,
            names::POD_GATEWAY,
        );
        delete_ns(ns);
        let _ = ip(&format!("-n {node} link del {hif}"));
        ip(&format!("netns add {ns}"))?;
        ip(&format!(
            "-n {node} link add {hif} type veth peer name eth0 netns {ns}"
        ))?;
        ip(&format!("-n {node} addr add {gw}/32 dev {hif}"))?;
        ip(&format!("-n {node} link set {hif} up"))?;
        ip(&format!("-n {node} route replace {ip4}/32 dev {hif}"))?;
        ip(&format!("-n {ns} link set lo up"))?;
        ip(&format!("-n {ns} addr add {ip4}/32 dev eth0"))?;
        ip(&format!("-n {ns} link set eth0 up"))?;
        ip(&format!("-n {ns} route add {gw} dev eth0 scope link"))?;
        ip(&format!("-n {ns} route add default via {gw} dev eth0"))?;
        sh::write_file(
            &Names::etc_netns(ns).join("resolv.conf"),
            &pod_resolv_conf(namespace),
        )
    }

    /// Removes the namespace (killing what runs in it) and the node-side interface.
    pub fn delete(&self, n: &Names) {
        delete_ns(&self.ns);
        let _ = ip(&format!("-n {} link del {}", n.node_ns(), self.host_if));
    }
}

/// resolv.conf as a kubelet writes it for a pod in `namespace` (dnsPolicy ClusterFirst).
pub fn pod_resolv_conf(namespace: &str) -> String {
    let d = names::CLUSTER_DOMAIN;
    format!(
        "nameserver {}\nsearch {namespace}.svc.{d} svc.{d} {d}\noptions ndots:5\n",
        names::DNS_SVC_IP
    )
}

/// Removes everything of cluster `n`: daemon, processes, namespaces, files. Idempotent.
pub fn teardown(n: &Names) -> Result<()> {
    // Only a process that is this cluster's daemon (a stale pid file may name a reused PID).
    let pid = std::fs::read_to_string(n.daemon_pid())
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok());
    if let Some(pid) = pid.filter(|p| sh::is_daemon(*p, n.prefix())) {
        sh::kill(pid, nix::sys::signal::Signal::SIGTERM);
        for _ in 0..100 {
            if !sh::alive(pid) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        sh::kill(pid, nix::sys::signal::Signal::SIGKILL);
    }
    // Pods first, then the machines, the node last (the daemon lives there).
    let mut all: Vec<String> = sh::netns_list()?
        .into_iter()
        .filter(|ns| n.owns_ns(ns))
        .collect();
    all.sort_by_key(|ns| (ns == &n.node_ns(), !ns.starts_with(&n.pod_ns_prefix())));
    for ns in all {
        delete_ns(&ns);
    }
    // resolv.conf directories of namespaces that went away by other means.
    for entry in std::fs::read_dir("/etc/netns")
        .into_iter()
        .flatten()
        .flatten()
    {
        if n.owns_ns(&entry.file_name().to_string_lossy()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let dir = n.run_dir();
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(Error::io(format!("removing {}", dir.display())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_is_what_a_kubelet_writes() {
        assert_eq!(
            pod_resolv_conf("emojivoto"),
            "nameserver 10.96.0.10\nsearch emojivoto.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
        );
    }

    #[test]
    fn pod_interfaces_fit_in_15_characters() {
        let n = Names::new("kwg").unwrap();
        let p = PodNet::new(
            &n,
            "emojivoto",
            "web-app-abc",
            Ipv4Addr::new(10, 244, 0, 254),
        );
        assert_eq!(p.host_if, "pod254");
        assert_eq!(p.ns, "kwg-pod-emojivoto-web-app-abc");
    }
}
