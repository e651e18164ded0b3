//! A harness for end-to-end tests: one cluster per test, torn down on drop.
//!
//! ```no_run
//! # fn main() -> kwg_sim::Result<()> {
//! use kwg_sim::testing::Cluster;
//! let c = Cluster::up()?;                       // `kwg-sim up --prefix <unique>`
//! let ns = c.kubectl_admin(&["get", "ns", "-o", "name"])?;
//! assert!(ns.contains("namespace/emojivoto"));
//! let web = c.pod_netns("emojivoto", "web-app")?; // the namespace of a pod labelled app=web-app
//! let page = c.exec_ok(&web, &["curl", "-s", "http://web-app/"])?;
//! assert!(page.contains("<title>Emoji Vote</title>"));
//! # Ok(()) }                                      // drop: `kwg-sim down --prefix <unique>`
//! ```
//!
//! Every cluster has its own prefix (`kt<pid % 10000><counter>`), so tests run in parallel.
//! The `kwg-sim` binary is found with [`crate::bin_path`]; build it first (`cargo build -p kwg-sim`).

use crate::names::Names;
pub use crate::net::ClusterNet;
pub use crate::resolved::ResolvedNs;
use crate::{Error, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);
/// Laptops are added one at a time: tests sharing a cluster would otherwise pick the same free
/// address.
static ADDING: Mutex<()> = Mutex::new(());

/// A running one-machine cluster; `kwg-sim down` when dropped.
#[derive(Debug)]
pub struct Cluster {
    names: Names,
    net: ClusterNet,
}

/// A cluster with other addresses than the defaults, from [`Cluster::builder`]:
///
/// ```no_run
/// # fn main() -> kwg_sim::Result<()> {
/// let c = kwg_sim::testing::Cluster::builder()
///     .lan("198.51.100.0/24")
///     .service_cidr("10.43.0.0/16")
///     .pod_cidr("10.42.0.0/16")
///     .domain("corp.internal")
///     .up()?;
/// assert_eq!(c.net().node_ip().to_string(), "198.51.100.1");
/// # Ok(()) }
/// ```
#[derive(Debug, Default, Clone)]
pub struct ClusterBuilder {
    prefix: Option<String>,
    options: Vec<(&'static str, String)>,
}

impl ClusterBuilder {
    fn option(mut self, flag: &'static str, value: &str) -> ClusterBuilder {
        self.options.retain(|(f, _)| *f != flag);
        self.options.push((flag, value.to_string()));
        self
    }
    /// `kwg-sim up --lan CIDR`.
    pub fn lan(self, cidr: &str) -> ClusterBuilder {
        self.option("--lan", cidr)
    }
    /// `kwg-sim up --service-cidr CIDR`.
    pub fn service_cidr(self, cidr: &str) -> ClusterBuilder {
        self.option("--service-cidr", cidr)
    }
    /// `kwg-sim up --pod-cidr CIDR`.
    pub fn pod_cidr(self, cidr: &str) -> ClusterBuilder {
        self.option("--pod-cidr", cidr)
    }
    /// `kwg-sim up --domain DOMAIN`.
    pub fn domain(self, domain: &str) -> ClusterBuilder {
        self.option("--domain", domain)
    }
    /// `kwg-sim up --ip-family FAMILY` (`ipv4`, `dual`, `ipv6`).
    pub fn ip_family(self, family: &str) -> ClusterBuilder {
        self.option("--ip-family", family)
    }
    /// This prefix instead of a unique one.
    pub fn prefix(mut self, prefix: &str) -> ClusterBuilder {
        self.prefix = Some(prefix.to_string());
        self
    }

    /// `kwg-sim up` with these options; waits until the cluster is ready.
    pub fn up(self) -> Result<Cluster> {
        let prefix = self.prefix.unwrap_or_else(unique_prefix);
        let mut args = vec!["up"];
        for (flag, value) in &self.options {
            args.extend([*flag, value.as_str()]);
        }
        let names = Names::new(&prefix)?;
        let mut cluster = Cluster {
            names,
            net: ClusterNet::default(),
        };
        let out = cluster.kwg_sim(&args)?;
        if !out.status.success() {
            return Err(Error::Command {
                cmd: format!("kwg-sim {} --prefix {prefix}", args.join(" ")),
                stderr: output_text(&out),
            });
        }
        cluster.net = ClusterNet::load(&cluster.names)?;
        Ok(cluster)
    }
}

/// A name no other test of this machine uses at the same time: `<letters><pid % 10000>x<counter>`
/// (for prefixes, laptop and interface names).
pub fn unique(letters: &str) -> String {
    format!(
        "{letters}{}x{}",
        std::process::id() % 10000,
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// A cluster prefix no other test of this machine uses at the same time.
pub fn unique_prefix() -> String {
    unique("kt")
}

/// The `kwg-sim` executable.
pub fn kwg_sim_bin() -> Result<PathBuf> {
    let bin = crate::bin_path("kwg-sim");
    if bin.exists() {
        Ok(bin)
    } else {
        Err(Error::NoBinary {
            name: "kwg-sim".into(),
            dir: crate::bin_dir().display().to_string(),
        })
    }
}

fn output_text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs `cmd` inside network namespace `netns` (`ip netns exec`, so the namespace's
/// `/etc/netns/<ns>/resolv.conf` applies).
pub fn exec(netns: &str, cmd: &[&str]) -> Result<Output> {
    Command::new("ip")
        .args(["netns", "exec", netns])
        .args(cmd)
        .output()
        .map_err(|source| Error::Spawn {
            cmd: cmd.join(" "),
            source,
        })
}

/// Like [`exec`]; a non-zero exit is an error with the output; returns stdout.
pub fn exec_ok(netns: &str, cmd: &[&str]) -> Result<String> {
    let out = exec(netns, cmd)?;
    if !out.status.success() {
        return Err(Error::Command {
            cmd: format!("ip netns exec {netns} {}", cmd.join(" ")),
            stderr: output_text(&out),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Cluster {
    /// Starts a cluster with a unique prefix and waits until it is ready.
    pub fn up() -> Result<Cluster> {
        Cluster::up_with_prefix(&unique_prefix())
    }

    /// Starts a cluster with this prefix (removing a previous one of the same prefix).
    pub fn up_with_prefix(prefix: &str) -> Result<Cluster> {
        Cluster::builder().prefix(prefix).up()
    }

    /// A cluster with other addresses or domain than the defaults: [`ClusterBuilder`].
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder::default()
    }

    /// The cluster's addresses (LAN, Service and pod CIDRs, domain and what follows from them).
    pub fn net(&self) -> &ClusterNet {
        &self.net
    }

    /// Runs `kwg-sim <args> --prefix <prefix>`.
    pub fn kwg_sim(&self, args: &[&str]) -> Result<Output> {
        let bin = kwg_sim_bin()?;
        Command::new(&bin)
            .args(args)
            .args(["--prefix", self.prefix()])
            .output()
            .map_err(|source| Error::Spawn {
                cmd: bin.display().to_string(),
                source,
            })
    }

    pub fn prefix(&self) -> &str {
        self.names.prefix()
    }

    /// All names of this cluster.
    pub fn names(&self) -> &Names {
        &self.names
    }

    /// The network namespace of a role: `node`, `laptop`, `lan` (or an extra laptop's name).
    pub fn netns(&self, role: &str) -> String {
        match role {
            "node" => self.names.node_ns(),
            "laptop" => self.names.laptop_ns(),
            "lan" => self.names.lan_ns(),
            other => self.names.extra_laptop_ns(other),
        }
    }

    pub fn developer_kubeconfig(&self) -> PathBuf {
        self.names.kubeconfig("developer")
    }

    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.names.kubeconfig("admin")
    }

    /// Adds another machine on the LAN (`kwg-sim laptop add <name>`); its network namespace.
    /// It goes with the cluster.
    pub fn add_laptop(&self, name: &str) -> Result<String> {
        let _one = ADDING.lock().unwrap_or_else(|e| e.into_inner());
        crate::topology::add_laptop(std::slice::from_ref(&self.names), name)?;
        Ok(self.names.extra_laptop_ns(name))
    }

    /// Adds a machine on this cluster's LAN (`eth0`, it goes with this cluster) and on each of
    /// `others`' LANs (`eth1`, ...): `kwg-sim laptop add <name> --cluster <this> --cluster
    /// <other>...`. Returns its network namespace and its address on each LAN, this one first.
    pub fn add_laptop_on(
        &self,
        name: &str,
        others: &[&Cluster],
    ) -> Result<(String, Vec<std::net::Ipv4Addr>)> {
        let _one = ADDING.lock().unwrap_or_else(|e| e.into_inner());
        let mut clusters = vec![self.names.clone()];
        clusters.extend(others.iter().map(|c| c.names.clone()));
        let addrs = crate::topology::add_laptop(&clusters, name)?;
        Ok((self.names.extra_laptop_ns(name), addrs))
    }

    /// Starts the real systemd-resolved in `netns` (a laptop's), the LAN resolver as its
    /// upstream: [`ResolvedNs::start`].
    pub fn start_resolved(&self, netns: &str) -> Result<ResolvedNs> {
        ResolvedNs::start(netns, self.net.lan_dns_ip().into())
    }

    /// A user without any RoleBinding.
    pub fn nobody_kubeconfig(&self) -> PathBuf {
        self.names.kubeconfig("nobody")
    }

    /// Runs `cmd` inside network namespace `netns`: [`exec`].
    pub fn exec(&self, netns: &str, cmd: &[&str]) -> Result<Output> {
        exec(netns, cmd)
    }

    /// [`exec_ok`]: a non-zero exit is an error with the output; returns stdout.
    pub fn exec_ok(&self, netns: &str, cmd: &[&str]) -> Result<String> {
        exec_ok(netns, cmd)
    }

    /// `kubectl` as the admin, run from the laptop; returns stdout, errors carry stderr.
    pub fn kubectl_admin(&self, args: &[&str]) -> Result<String> {
        self.kubectl(&self.admin_kubeconfig(), args)
    }

    /// `kubectl` as the developer (group `developers`: `edit` in emojivoto, `view` in default), run from the laptop.
    pub fn kubectl_developer(&self, args: &[&str]) -> Result<String> {
        self.kubectl(&self.developer_kubeconfig(), args)
    }

    /// `kubectl --kubeconfig <kubeconfig> <args>` from the laptop.
    pub fn kubectl(&self, kubeconfig: &Path, args: &[&str]) -> Result<String> {
        let kc = kubeconfig.to_string_lossy();
        self.exec_ok(&self.names.laptop_ns(), &kubectl_argv(&kc, args))
    }

    /// Like [`Cluster::kubectl`], its output whatever the exit status (e.g. to read a "no").
    pub fn kubectl_output(&self, kubeconfig: &Path, args: &[&str]) -> Result<Output> {
        let kc = kubeconfig.to_string_lossy();
        self.exec(&self.names.laptop_ns(), &kubectl_argv(&kc, args))
    }

    /// `kubectl apply -f -` of a JSON or YAML document from the laptop; returns stdout.
    pub fn kubectl_apply(&self, kubeconfig: &Path, doc: &str) -> Result<String> {
        let (laptop, kc) = (self.names.laptop_ns(), kubeconfig.to_string_lossy());
        let mut argv = vec!["netns", "exec", &laptop];
        argv.extend(kubectl_argv(&kc, &["apply", "-f", "-"]));
        crate::sh::run_stdin("ip", &argv, Some(doc))
    }

    /// Network namespaces of the Running pods in `namespace` labelled `app=<app>` (or
    /// `k8s-app=<app>`), sorted.
    pub fn pod_netnses(&self, namespace: &str, app: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for label in ["app", "k8s-app"] {
            let sel = format!("{label}={app}");
            let rows = self.kubectl_admin(&[
                "get",
                "pods",
                "-n",
                namespace,
                "-l",
                &sel,
                "-o",
                "jsonpath={range .items[*]}{.metadata.name} {.status.phase}{\"\\n\"}{end}",
            ])?;
            let running = rows.lines().filter_map(|l| l.strip_suffix(" Running"));
            out.extend(running.map(|p| self.names.pod_ns(namespace, p)));
        }
        out.sort();
        Ok(out)
    }

    /// A field of the first pod labelled `app=<app>` in `namespace`, e.g. `{.status.podIP}`.
    pub fn pod_field(&self, namespace: &str, app: &str, jsonpath: &str) -> Result<String> {
        let sel = format!("app={app}");
        let path = format!("jsonpath={{.items[0]{jsonpath}}}");
        self.kubectl_admin(&["get", "pods", "-n", namespace, "-l", &sel, "-o", &path])
    }

    /// The IP of the first pod labelled `app=<app>` in `namespace`.
    pub fn pod_ip(&self, namespace: &str, app: &str) -> Result<String> {
        self.pod_field(namespace, app, ".status.podIP")
    }

    /// The network namespace of one Running pod labelled `app=<app>` in `namespace`.
    pub fn pod_netns(&self, namespace: &str, app: &str) -> Result<String> {
        self.pod_netnses(namespace, app)?
            .into_iter()
            .next()
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "no Running pod with app={app} in namespace {namespace}"
                ))
            })
    }

    /// Runs `f` on a thread inside network namespace `netns` (sockets it opens live there), e.g.
    /// a current-thread tokio runtime with a kube client reaching the API server (by default
    /// `https://192.0.2.1:6443`):
    ///
    /// ```no_run
    /// # fn main() -> kwg_sim::Result<()> {
    /// # let c = kwg_sim::testing::Cluster::up()?;
    /// let kubeconfig = std::fs::read_to_string(c.admin_kubeconfig()).unwrap();
    /// let n = c.run_in(&c.netns("laptop"), move || {
    ///     let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    ///     rt.block_on(async {
    ///         let client = kwg_sim::daemon::client_from_kubeconfig(&kubeconfig).await?;
    ///         let api: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client);
    ///         Ok(api.list(&Default::default()).await?.items.len())
    ///     })
    /// })?;
    /// # Ok(()) }
    /// ```
    pub fn run_in<T: Send + 'static>(
        &self,
        netns: &str,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        crate::netns::run_in(netns, f)
    }

    /// `kwg-sim down`, also run on drop.
    pub fn down(&self) -> Result<()> {
        crate::topology::teardown(&self.names)
    }
}

/// `kubectl --kubeconfig <kubeconfig> <args>`.
fn kubectl_argv<'a>(kubeconfig: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut argv = vec!["kubectl", "--kubeconfig", kubeconfig];
    argv.extend_from_slice(args);
    argv
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // KWG_E2E_KEEP_LOGS=DIR keeps the cluster's state and pod logs for debugging.
        if let Some(dir) = std::env::var_os("KWG_E2E_KEEP_LOGS") {
            let dest = Path::new(&dir).join(self.prefix());
            let _ = Command::new("cp")
                .arg("-r")
                .args([self.names.run_dir(), dest])
                .status();
        }
        if let Err(e) = self.down() {
            eprintln!("kwg-sim down --prefix {}: {e}", self.prefix());
        }
    }
}
