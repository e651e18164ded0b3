//! The cluster's network: namespaces, veths, the LAN bridge, pod plumbing.
//!
//! Everything is created inside the cluster's namespaces with `ip -n`; nothing touches the root
//! namespace.

use crate::names::{self, Names};
use crate::net::ClusterNet;
use crate::sh::{self, ip};
use crate::{Error, Result};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// How the machines' interfaces on the LAN behave (`kwg-sim up --lan-model`).
///
/// `Nic`: each machine's interface (the node's and every laptop's) acts as a NIC on a wire. It
/// sends frames of at most its MTU: `gso_max_segs 1` cuts a GSO super-packet (TCP, or a UDP GSO
/// datagram of up to 64 KB) before it leaves, as a NIC's segmentation offload does. It receives
/// with GRO as a NIC driver does: `gro on` on the machine's veth and TSO off on the bridge port
/// that feeds it, so the frames pass the veth's NAPI one by one and are coalesced there: TCP,
/// and UDP for the machine's own UDP_GRO sockets; UDP the node forwards only with
/// `rx-udp-gro-forwarding on` on its interface (the node tuning of docs/performance.md, off as
/// on a NIC out of the box). docs/architecture.md says which feature models which hardware.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LanModel {
    /// Frames of at most the MTU on the wire, GRO on receive, as NICs do.
    #[default]
    Nic,
    /// The LAN of earlier figures: GSO super-packets cross whole, nothing coalesces.
    Previous,
}

impl LanModel {
    fn name(self) -> &'static str {
        match self {
            LanModel::Nic => "nic",
            LanModel::Previous => "previous",
        }
    }

    /// The model `n` was started with (`<run dir>/lan-model`); a cluster started before there
    /// was a choice has the previous LAN.
    pub fn of(n: &Names) -> LanModel {
        match std::fs::read_to_string(n.run_dir().join("lan-model")) {
            Ok(s) if s.trim() == LanModel::Nic.name() => LanModel::Nic,
            _ => LanModel::Previous,
        }
    }

    fn save(self, n: &Names) -> Result<()> {
        sh::write_file(&n.run_dir().join("lan-model"), self.name())
    }

    /// Fails, naming the fix, when the model needs a tool this machine lacks.
    fn check_tools(self) -> Result<()> {
        if self == LanModel::Nic
            && std::process::Command::new("ethtool")
                .arg("--version")
                .output()
                .is_err()
        {
            return Err(Error::Invalid(
                "--lan-model nic sets the LAN interfaces' offloads with ethtool, which is not installed: apt-get install ethtool (scripts/install-deps.sh does), or use --lan-model previous".into(),
            ));
        }
        Ok(())
    }
}

/// `ethtool ARGS...` inside the network namespace `ns`.
fn ethtool(ns: &str, args: &[&str]) -> Result<()> {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    crate::netns::run_in(ns, move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        sh::run("ethtool", &args).map(drop)
    })
}

/// Creates the node, LAN and laptop namespaces and wires them, with the addresses of `net` and
/// the LAN behaving as `model` says.
pub fn build(n: &Names, net: &ClusterNet, model: LanModel) -> Result<()> {
    model.check_tools()?;
    model.save(n)?;
    let (node, lan, laptop) = (n.node_ns(), n.lan_ns(), n.laptop_ns());
    for ns in [&lan, &node] {
        ip(&format!("netns add {ns}"))?;
        ip(&format!("-n {ns} link set lo up"))?;
    }
    // A fixed MAC: a bridge without one takes the lowest of its ports' MACs, so adding a laptop
    // could change it under the LAN's neighbour caches and silence the resolver (.53) and the
    // intranet (.80) for seconds.
    ip(&format!(
        "-n {lan} link add br0 address 02:6b:00:00:00:fe type bridge"
    ))?;
    ip(&format!("-n {lan} link set br0 up"))?;
    let bits = net.lan.prefix_len();
    for addr in [net.lan_dns_ip(), net.intranet_ip()] {
        ip(&format!("-n {lan} addr add {addr}/{bits} dev br0"))?;
    }
    let bits6 = net.lan6.prefix_len();
    for addr in [net.lan_dns_ip6(), net.intranet_ip6()]
        .into_iter()
        .flatten()
    {
        ip(&format!("-n {lan} addr add {addr}/{bits6} dev br0 nodad"))?;
    }
    let mut sysctls = vec![
        "net.ipv4.ip_forward=1",
        "net.ipv4.conf.all.rp_filter=0",
        "net.ipv4.conf.default.rp_filter=0",
    ];
    if net.has_ipv6() {
        // Addresses usable at once (no duplicate address detection on this wire), and the node
        // routes IPv6 as it routes IPv4.
        sysctls.extend([
            "net.ipv6.conf.all.forwarding=1",
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
        ]);
    }
    let mut args = vec!["netns", "exec", node.as_str(), "sysctl", "-qw"];
    args.extend(sysctls);
    sh::run("ip", &args)?;
    let on_lan = Attach {
        lan_ns: lan.clone(),
        bits,
        bits6,
        model,
    };
    on_lan.attach(&node, "p-node", "eth0", net.node_ip(), net.node_ip6())?;
    // The node's own processes reach ClusterIPs through the output DNAT, which needs a route to
    // exist first; a veth whose peer stays down (a dummy like kube-proxy's kube-ipvs0, without
    // needing the dummy module) drops what no Service matches.
    ip(&format!(
        "-n {node} link add kube-svc type veth peer name kube-svc-down"
    ))?;
    ip(&format!("-n {node} link set kube-svc up"))?;
    ip(&format!(
        "-n {node} route add {} dev kube-svc",
        net.service_cidr
    ))?;
    if net.has_ipv6() {
        let svc6 = net.service_cidr6;
        ip(&format!("-n {node} route add {svc6} dev kube-svc"))?;
    }
    add_machine(&laptop, net)?;
    on_lan.attach(
        &laptop,
        "p-laptop",
        "eth0",
        net.laptop_ip(),
        net.laptop_ip6(),
    )
}

/// Creates a machine namespace with a resolv.conf pointing at the LAN resolver of `net` (its
/// interfaces come after, with [`Attach::attach`]).
fn add_machine(ns: &str, net: &ClusterNet) -> Result<()> {
    ip(&format!("netns add {ns}"))?;
    ip(&format!("-n {ns} link set lo up"))?;
    sh::write_file(
        &Names::etc_netns(ns).join("resolv.conf"),
        &format!(
            "nameserver {}\nsearch {}\n",
            net.lan_dns_ip(),
            names::LAN_ZONE
        ),
    )
}

/// One cluster's LAN: the namespace holding its bridge, its prefix length and how its links
/// behave.
struct Attach {
    lan_ns: String,
    bits: u8,
    /// The LAN's IPv6 prefix length (used by dual-stack clusters).
    bits6: u8,
    model: LanModel,
}

impl Attach {
    fn of(n: &Names, net: &ClusterNet) -> Attach {
        Attach {
            lan_ns: n.lan_ns(),
            bits: net.lan.prefix_len(),
            bits6: net.lan6.prefix_len(),
            model: LanModel::of(n),
        }
    }

    /// A veth from the LAN bridge (port `port`) to `ifname` in `ns` with `addr` (and `addr6` on
    /// a dual-stack LAN).
    ///
    /// The interface's MAC address is derived from `addr`: a laptop deleted and added again with
    /// the same address keeps its MAC, so the LAN's neighbour caches (resolver, node) stay right
    /// instead of sending replies to a vanished MAC until their entries expire (seconds of
    /// silence).
    fn attach(
        &self,
        ns: &str,
        port: &str,
        ifname: &str,
        addr: Ipv4Addr,
        addr6: Option<Ipv6Addr>,
    ) -> Result<()> {
        let (lan, bits) = (&self.lan_ns, self.bits);
        let [a, b, c, d] = addr.octets();
        let mac = format!("02:6b:{a:02x}:{b:02x}:{c:02x}:{d:02x}");
        // A port left by a laptop whose namespace was just deleted: the kernel frees a deleted
        // namespace's veths asynchronously, for a few milliseconds after `ip netns del`.
        let _ = ip(&format!("-n {lan} link del {port}"));
        ip(&format!(
            "-n {lan} link add {port} type veth peer name {ifname} address {mac} netns {ns}"
        ))?;
        ip(&format!("-n {lan} link set {port} master br0 up"))?;
        ip(&format!("-n {ns} addr add {addr}/{bits} dev {ifname}"))?;
        if let Some(a6) = addr6 {
            let bits6 = self.bits6;
            ip(&format!("-n {ns} addr add {a6}/{bits6} dev {ifname} nodad"))?;
        }
        if self.model == LanModel::Nic {
            // Transmit as a NIC: frames of at most the MTU leave (see LanModel::Nic).
            ip(&format!("-n {ns} link set {ifname} gso_max_segs 1"))?;
            // Receive as a NIC: the port sends the frames one by one (no TSO) into the
            // interface's NAPI, whose GRO coalesces them.
            ethtool(lan, &["-K", port, "tso", "off"])?;
            ethtool(ns, &["-K", ifname, "gro", "on"])?;
        }
        ip(&format!("-n {ns} link set {ifname} up"))?;
        Ok(())
    }
}

/// Addresses of `n`'s LAN taken by extra laptops: its own (`laptops/NAME`) and those of other
/// clusters attached to it (`guests/<laptop namespace>`), each file holding the address.
fn used_laptop_ips(n: &Names) -> Vec<String> {
    [n.laptops_dir(), guests_dir(n)]
        .iter()
        .flat_map(|dir| std::fs::read_dir(dir).into_iter().flatten().flatten())
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .map(|a| a.trim().to_string())
        .collect()
}

/// `<run dir>/guests`: laptops of other clusters attached to this cluster's LAN.
fn guests_dir(n: &Names) -> std::path::PathBuf {
    n.run_dir().join("guests")
}

/// Laptops of other clusters attached to `n`'s LAN: (namespace, address), sorted.
pub fn guests(n: &Names) -> Vec<(String, String)> {
    let dir = std::fs::read_dir(guests_dir(n))
        .into_iter()
        .flatten()
        .flatten();
    let mut out: Vec<(String, String)> = dir
        .filter_map(|e| {
            let addr = std::fs::read_to_string(e.path()).ok()?;
            Some((
                e.file_name().to_string_lossy().into_owned(),
                addr.trim().to_string(),
            ))
        })
        .collect();
    out.sort();
    out
}

/// A free extra-laptop address on `n`'s LAN.
fn free_laptop_ip(n: &Names, net: &ClusterNet) -> Result<Ipv4Addr> {
    let used = used_laptop_ips(n);
    net.extra_laptop_ips()
        .find(|a| !used.contains(&a.to_string()))
        .ok_or_else(|| {
            Error::Invalid(format!(
                "no free address on the LAN {} of cluster {} for another laptop (40 at most)",
                net.lan,
                n.prefix()
            ))
        })
}

/// A running cluster's addresses; an error naming the fix when it does not run.
fn running(n: &Names) -> Result<ClusterNet> {
    if !sh::netns_list()?.contains(&n.lan_ns()) {
        return Err(Error::Invalid(format!(
            "cluster {p} is not running (no namespace {}); start it with `kwg-sim up --prefix {p}`",
            n.lan_ns(),
            p = n.prefix()
        )));
    }
    ClusterNet::load(n)
}

/// `kwg-sim laptop add NAME [--cluster P]...`: another machine `<owner>-laptop-NAME`, on the LAN
/// of `clusters[0]` (its owner: the laptop goes when it goes) as `eth0` and on the LAN of each
/// further cluster as `eth1`, `eth2`, ... Returns its address on each LAN, in that order.
pub fn add_laptop(clusters: &[Names], name: &str) -> Result<Vec<Ipv4Addr>> {
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
    let Some(owner) = clusters.first() else {
        return Err(Error::Invalid("a laptop needs a cluster".into()));
    };
    let mut nets: Vec<ClusterNet> = Vec::new();
    for (i, c) in clusters.iter().enumerate() {
        if clusters[..i].contains(c) {
            return Err(Error::Invalid(format!(
                "cluster {} is named twice; name each cluster once",
                c.prefix()
            )));
        }
        let net = running(c)?;
        if let Some((j, other)) = nets
            .iter()
            .enumerate()
            .find(|(_, o)| o.lan.contains(&net.lan.network()) || net.lan.contains(&o.lan.network()))
        {
            return Err(Error::Invalid(format!(
                "clusters {} and {} share LAN addresses ({} and {}), so one laptop cannot be on both; start one with another LAN (`kwg-sim up --lan 198.51.100.0/24`)",
                clusters[j].prefix(),
                c.prefix(),
                other.lan,
                net.lan
            )));
        }
        nets.push(net);
    }
    if owner.laptops_dir().join(name).exists() {
        return Err(Error::Invalid(format!(
            "laptop {name} exists already (kwg-sim laptop del {name} --prefix {})",
            owner.prefix()
        )));
    }
    for c in clusters {
        LanModel::of(c).check_tools()?;
    }
    let ns = owner.extra_laptop_ns(name);
    let addrs = clusters
        .iter()
        .zip(&nets)
        .map(|(c, net)| free_laptop_ip(c, net))
        .collect::<Result<Vec<_>>>()?;
    sh::write_file(&owner.laptops_dir().join(name), &addrs[0].to_string())?;
    for (c, addr) in clusters.iter().zip(&addrs).skip(1) {
        sh::write_file(&guests_dir(c).join(&ns), &addr.to_string())?;
    }
    add_machine(&ns, &nets[0])?;
    for (i, ((c, net), addr)) in clusters.iter().zip(&nets).zip(&addrs).enumerate() {
        let port = match i {
            0 => format!("l-{name}"),
            // Unique on that LAN: the address is.
            _ => format!("g-{}", addr.octets()[3]),
        };
        let addr6 = net.lan_ip6_of(*addr);
        Attach::of(c, net).attach(&ns, &port, &format!("eth{i}"), *addr, addr6)?;
    }
    Ok(addrs)
}

/// `kwg-sim laptop del NAME`: the laptop, and its records on other clusters' LANs.
pub fn del_laptop(n: &Names, name: &str) -> Result<()> {
    let ns = n.extra_laptop_ns(name);
    delete_ns(&ns);
    let _ = std::fs::remove_file(n.laptops_dir().join(name));
    forget_guests(|g| g == ns);
    Ok(())
}

/// Removes the records of laptops attached to other clusters' LANs whose namespace `gone` says
/// went away.
fn forget_guests(gone: impl Fn(&str) -> bool) {
    let runs = std::fs::read_dir("/run/kwg-sim")
        .into_iter()
        .flatten()
        .flatten();
    for run in runs {
        let guests = run.path().join("guests");
        for e in std::fs::read_dir(&guests).into_iter().flatten().flatten() {
            if gone(&e.file_name().to_string_lossy()) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
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
    /// The pod's IPv4 address; in an IPv6-only cluster (`ipv4` false) only the kubelet's
    /// allocation index, never given to the pod.
    pub ip: Ipv4Addr,
    /// The pod's IPv6 address in a dual-stack or IPv6-only cluster.
    pub ip6: Option<Ipv6Addr>,
    /// Whether the pod has `ip` (false in an IPv6-only cluster).
    pub ipv4: bool,
}

impl PodNet {
    /// The plumbing for a pod at `ip` (in the node's /24): interface `pod<last octet>`.
    pub fn new(n: &Names, namespace: &str, pod: &str, ip: Ipv4Addr) -> PodNet {
        PodNet {
            ns: n.pod_ns(namespace, pod),
            host_if: format!("pod{}", ip.octets()[3]),
            ip,
            ip6: None,
            ipv4: true,
        }
    }

    /// The pod's addresses as `status.podIPs` lists them, the primary first.
    pub fn addrs(&self) -> Vec<IpAddr> {
        let v4 = self.ipv4.then_some(IpAddr::V4(self.ip));
        v4.into_iter().chain(self.ip6.map(IpAddr::V6)).collect()
    }

    /// The pod's primary address (`status.podIP`).
    pub fn primary(&self) -> IpAddr {
        self.addrs()[0]
    }

    /// Creates the namespace and veth, routes and the kubelet-style resolv.conf.
    pub fn create(&self, n: &Names, namespace: &str, net: &ClusterNet) -> Result<()> {
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
        ip(&format!("-n {node} link set {hif} up"))?;
        ip(&format!("-n {ns} link set lo up"))?;
        ip(&format!("-n {ns} link set eth0 up"))?;
        if self.ipv4 {
            ip(&format!("-n {node} addr add {gw}/32 dev {hif}"))?;
            ip(&format!("-n {node} route replace {ip4}/32 dev {hif}"))?;
            ip(&format!("-n {ns} addr add {ip4}/32 dev eth0"))?;
            ip(&format!("-n {ns} route add {gw} dev eth0 scope link"))?;
            ip(&format!("-n {ns} route add default via {gw} dev eth0"))?;
        }
        if let Some(ip6) = self.ip6 {
            // As IPv4: the node's side answers a fixed link-local gateway, a /128 route to the
            // pod; no duplicate address detection, so the addresses work at once.
            let gw6 = names::POD_GATEWAY6;
            ip(&format!("-n {node} addr add {gw6}/64 dev {hif} nodad"))?;
            ip(&format!("-n {node} route replace {ip6}/128 dev {hif}"))?;
            ip(&format!("-n {ns} addr add {ip6}/128 dev eth0 nodad"))?;
            ip(&format!("-n {ns} route add default via {gw6} dev eth0"))?;
        }
        sh::write_file(
            &Names::etc_netns(ns).join("resolv.conf"),
            &pod_resolv_conf(namespace, net),
        )
    }

    /// Removes the namespace (killing what runs in it) and the node-side interface.
    pub fn delete(&self, n: &Names) {
        delete_ns(&self.ns);
        let _ = ip(&format!("-n {} link del {}", n.node_ns(), self.host_if));
    }
}

/// resolv.conf as a kubelet writes it for a pod in `namespace` (dnsPolicy ClusterFirst).
pub fn pod_resolv_conf(namespace: &str, net: &ClusterNet) -> String {
    let d = &net.domain;
    format!(
        "nameserver {}\nsearch {namespace}.svc.{d} svc.{d} {d}\noptions ndots:5\n",
        net.dns_svc_addr()
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
    forget_guests(|ns| n.owns_ns(ns));
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
            pod_resolv_conf("emojivoto", &ClusterNet::default()),
            "nameserver 10.96.0.10\nsearch emojivoto.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
        );
        let other = ClusterNet {
            service_cidr: "10.43.0.0/16".parse().unwrap(),
            domain: "corp.internal".into(),
            ..ClusterNet::default()
        };
        assert_eq!(
            pod_resolv_conf("web", &other),
            "nameserver 10.43.0.10\nsearch web.svc.corp.internal svc.corp.internal corp.internal\noptions ndots:5\n"
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
