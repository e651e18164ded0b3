//! Command line of `kwg-sim`.

use crate::names::{self, Names};
use crate::net::{ClusterNet, IpFamily, parse_cidr, parse_cidr6};
use crate::topology::LanModel;
use crate::{Error, Result, sh, topology};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
#[command(
    name = "kwg-sim",
    about = "A one-machine Kubernetes cluster in network namespaces"
)]
pub struct Args {
    /// Prefix of every namespace and file of the cluster (several clusters can run side by side).
    #[arg(long, global = true, env = "KWG_SIM_PREFIX", default_value = names::DEFAULT_PREFIX)]
    pub prefix: String,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Build the cluster (removing a previous one of this prefix) and wait until it is ready.
    Up(UpArgs),
    /// Remove the cluster: processes, namespaces, nftables, files. Idempotent.
    Down,
    /// Say what runs.
    Status,
    /// Print `export` lines for the developer's and the admin's kubeconfigs.
    Env,
    /// Add or remove another machine on the LAN.
    Laptop {
        #[command(subcommand)]
        cmd: LaptopCmd,
    },
    /// (internal) The API server and the node's controllers; started by `up`.
    #[command(hide = true)]
    Daemon,
    /// (internal) Start a container inside its pod; used by the kubelet role.
    #[command(hide = true)]
    PodExec {
        #[arg(long)]
        sa_dir: PathBuf,
        #[arg(last = true, required = true)]
        argv: Vec<String>,
    },
    /// Demo workloads, run as pods.
    Workload {
        #[command(subcommand)]
        kind: WorkloadCmd,
    },
}

/// The addresses of a new cluster; everything else (the API server, kube-dns, pod IPs, ...)
/// follows from them.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// The LAN (/24 or larger): the node and API server are .1, the laptop .10, extra laptops
    /// .11-.50, the resolver .53, the intranet .80.
    #[arg(long, value_name = "CIDR", default_value = names::LAN_CIDR)]
    pub lan: String,
    /// ClusterIPs (/24 or larger): `kubernetes` is .1, kube-dns .10.
    #[arg(long, value_name = "CIDR", default_value = names::SERVICE_CIDR)]
    pub service_cidr: String,
    /// Pod IPs (/24 or larger); the node's podCIDR is its first /24.
    #[arg(long, value_name = "CIDR", default_value = names::POD_CIDR)]
    pub pod_cidr: String,
    /// The cluster domain (names `<svc>.<ns>.svc.<domain>`, pods' search list).
    #[arg(long, default_value = names::CLUSTER_DOMAIN)]
    pub domain: String,
    /// How the machines' interfaces on the LAN behave (docs/architecture.md, the one-machine
    /// cluster).
    #[arg(long, value_enum, value_name = "MODEL", default_value_t = LanModel::Nic)]
    pub lan_model: LanModel,
    /// The cluster's IP families: `dual` adds IPv6 to the LAN, the Services (IPv4 stays the
    /// primary family) and the pods; `ipv6` makes Services, pods, kube-proxy and cluster DNS
    /// IPv6 only (the LAN stays dual-stack: the API server on the node's IPv4 address, the
    /// gateway's NodePort on its IPv6 one).
    #[arg(long, value_enum, value_name = "FAMILY", default_value_t = IpFamily::Ipv4)]
    pub ip_family: IpFamily,
    /// The LAN's IPv6 prefix (with --ip-family dual or ipv6): node ::1, laptop ::10, resolver ::53.
    #[arg(long, value_name = "CIDR", default_value = crate::net::LAN6_CIDR)]
    pub lan6: String,
    /// IPv6 ClusterIPs (with --ip-family dual or ipv6, /108 to /120): `kubernetes` ::1, kube-dns ::10.
    #[arg(long, value_name = "CIDR", default_value = crate::net::SERVICE6_CIDR)]
    pub service_cidr6: String,
    /// IPv6 pod IPs (with --ip-family dual or ipv6, /48 to /64); the node's IPv6 podCIDR is its first /64.
    #[arg(long, value_name = "CIDR", default_value = crate::net::POD6_CIDR)]
    pub pod_cidr6: String,
}

impl UpArgs {
    /// The validated choices; errors name the option to change.
    pub fn net(&self) -> Result<ClusterNet> {
        let net = ClusterNet {
            lan: parse_cidr("--lan", &self.lan)?,
            service_cidr: parse_cidr("--service-cidr", &self.service_cidr)?,
            pod_cidr: parse_cidr("--pod-cidr", &self.pod_cidr)?,
            domain: self.domain.trim_end_matches('.').to_string(),
            ip_family: self.ip_family,
            lan6: parse_cidr6("--lan6", &self.lan6)?,
            service_cidr6: parse_cidr6("--service-cidr6", &self.service_cidr6)?,
            pod_cidr6: parse_cidr6("--pod-cidr6", &self.pod_cidr6)?,
        };
        net.validate()?;
        Ok(net)
    }
}

#[derive(Debug, Subcommand)]
pub enum LaptopCmd {
    /// A new machine `<owner>-laptop-NAME` on the LAN of the --prefix cluster, or on the LANs of
    /// every --cluster (the first owns it: it goes when that cluster goes down).
    Add {
        name: String,
        /// Attach to this running cluster's LAN (its prefix); repeat for several clusters, whose
        /// LANs must differ (`kwg-sim up --lan`). The laptop's interfaces are eth0, eth1, ... in
        /// this order.
        #[arg(long = "cluster", value_name = "PREFIX")]
        clusters: Vec<String>,
    },
    /// Remove it.
    Del { name: String },
}

#[derive(Debug, Subcommand)]
pub enum WorkloadCmd {
    /// An HTTP server whose page has `<title>TITLE</title>` (optionally a UDP echo port too).
    Http {
        #[arg(long, default_value_t = 80)]
        port: u16,
        #[arg(long, default_value = "kwg-sim")]
        title: String,
        #[arg(long)]
        udp_echo: Option<u16>,
    },
    /// The cluster DNS server (CoreDNS's role) on port 53, from the in-cluster API.
    ClusterDns {
        #[arg(long, default_value_t = 53)]
        port: u16,
        /// The cluster domain served.
        #[arg(long, default_value = names::CLUSTER_DOMAIN)]
        domain: String,
        /// Where names outside the cluster domain go (the LAN resolver).
        #[arg(long, default_value = "192.0.2.53:53")]
        upstream: std::net::SocketAddr,
    },
}

/// Runs a command; `main` maps the result to an exit code.
pub fn run(args: Args) -> Result<()> {
    let n = Names::new(&args.prefix)?;
    let needs_root = matches!(
        args.cmd,
        Cmd::Up(_) | Cmd::Down | Cmd::Laptop { .. } | Cmd::Daemon
    );
    if needs_root && !nix::unistd::geteuid().is_root() {
        return Err(Error::Invalid(
            "kwg-sim builds network namespaces: run it as root (sudo kwg-sim ...)".into(),
        ));
    }
    match args.cmd {
        Cmd::Up(up_args) => up(&n, &up_args.net()?, up_args.lan_model),
        Cmd::Down => topology::teardown(&n),
        Cmd::Status => status(&n),
        Cmd::Env => {
            println!("export KUBECONFIG={}", n.kubeconfig("developer").display());
            println!(
                "export KWG_SIM_ADMIN_KUBECONFIG={}",
                n.kubeconfig("admin").display()
            );
            Ok(())
        }
        Cmd::Laptop {
            cmd: LaptopCmd::Add { name, clusters },
        } => {
            let clusters = if clusters.is_empty() {
                vec![n]
            } else {
                clusters
                    .iter()
                    .map(|p| Names::new(p))
                    .collect::<Result<Vec<_>>>()?
            };
            let addrs = topology::add_laptop(&clusters, &name)?;
            let addrs: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
            println!("{} {}", clusters[0].extra_laptop_ns(&name), addrs.join(" "));
            Ok(())
        }
        Cmd::Laptop {
            cmd: LaptopCmd::Del { name },
        } => topology::del_laptop(&n, &name),
        Cmd::Daemon => {
            crate::netns::enter(&n.node_ns())?;
            runtime()?.block_on(crate::daemon::run(n))
        }
        Cmd::PodExec { sa_dir, argv } => crate::podexec::run(&sa_dir, &argv),
        Cmd::Workload { kind } => runtime()?.block_on(workload(kind)),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(Error::io("starting tokio"))
}

async fn workload(kind: WorkloadCmd) -> Result<()> {
    match kind {
        WorkloadCmd::Http {
            port,
            title,
            udp_echo,
        } => crate::workload::http(port, title, udp_echo).await,
        WorkloadCmd::ClusterDns {
            port,
            domain,
            upstream,
        } => crate::workload::cluster_dns(port, domain, upstream).await,
    }
}

/// `up`: clean, build the network, start the daemon, wait for its ready file.
fn up(n: &Names, net: &ClusterNet, model: LanModel) -> Result<()> {
    let start = Instant::now();
    topology::teardown(n)?;
    let dir = n.run_dir();
    std::fs::create_dir_all(&dir).map_err(Error::io(format!("creating {}", dir.display())))?;
    net.save(n)?;
    topology::build(n, net, model)?;
    let log =
        std::fs::File::create(n.daemon_log()).map_err(Error::io("creating the daemon log"))?;
    let log2 = log
        .try_clone()
        .map_err(Error::io("cloning the daemon log"))?;
    let exe = std::env::current_exe().map_err(Error::io("finding the kwg-sim executable"))?;
    use std::os::unix::process::CommandExt;
    let mut child = std::process::Command::new(&exe)
        .args(["daemon", "--prefix", n.prefix()])
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(log2)
        .process_group(0)
        .spawn()
        .map_err(|source| Error::Spawn {
            cmd: format!("{} daemon", exe.display()),
            source,
        })?;
    std::fs::write(n.daemon_pid(), child.id().to_string())
        .map_err(Error::io("writing the pid file"))?;
    let limit = Duration::from_secs(60);
    while start.elapsed() < limit {
        if n.ready_file().exists() {
            println!(
                "cluster {} ready in {:.1} s; eval \"$(kwg-sim env --prefix {})\"",
                n.prefix(),
                start.elapsed().as_secs_f64(),
                n.prefix()
            );
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(n.daemon_log()).unwrap_or_default();
            let tail: Vec<&str> = log
                .lines()
                .rev()
                .take(15)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            return Err(Error::NotReady {
                prefix: n.prefix().into(),
                secs: start.elapsed().as_secs(),
                what: format!("daemon exited ({status}):\n{}", tail.join("\n")),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let what = std::fs::read_to_string(n.run_dir().join("waiting"))
        .unwrap_or_else(|_| "the daemon did not report".into());
    Err(Error::NotReady {
        prefix: n.prefix().into(),
        secs: limit.as_secs(),
        what,
    })
}

fn status(n: &Names) -> Result<()> {
    let pid = std::fs::read_to_string(n.daemon_pid())
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok());
    let running = pid.is_some_and(|p| sh::is_daemon(p, n.prefix()));
    let mut namespaces: Vec<String> = sh::netns_list()?
        .into_iter()
        .filter(|ns| n.owns_ns(ns))
        .collect();
    namespaces.sort();
    if !running && namespaces.is_empty() {
        println!(
            "cluster {} is not running; start it with `kwg-sim up --prefix {}`",
            n.prefix(),
            n.prefix()
        );
        return Err(Error::Invalid(format!(
            "cluster {} is not running",
            n.prefix()
        )));
    }
    let ready = n.ready_file().exists();
    println!("cluster     {}", n.prefix());
    println!(
        "daemon      {}",
        match (running, pid) {
            (true, Some(p)) => format!(
                "running (pid {p}){}",
                if ready { ", ready" } else { ", starting" }
            ),
            _ => "not running (run `kwg-sim up`)".into(),
        }
    );
    let net = ClusterNet::load(n)?;
    println!("API server  {}", net.api_server());
    if net.ipv6_only() {
        println!(
            "addresses   LAN {} and {}, Services {}, pods {} (IPv6 only), domain {}",
            net.lan, net.lan6, net.service_cidr6, net.pod_cidr6, net.domain
        );
    } else {
        println!(
            "addresses   LAN {}, Services {}, pods {}, domain {}",
            net.lan, net.service_cidr, net.pod_cidr, net.domain
        );
    }
    if net.dual() {
        println!(
            "IPv6        LAN {}, Services {}, pods {}",
            net.lan6, net.service_cidr6, net.pod_cidr6
        );
    }
    println!(
        "kubeconfig  {} (developer), {} (admin)",
        n.kubeconfig("developer").display(),
        n.kubeconfig("admin").display()
    );
    println!("log         {}", n.daemon_log().display());
    println!("namespaces  {}", namespaces.len());
    for ns in namespaces {
        println!("  {ns}");
    }
    let guests = topology::guests(n);
    if !guests.is_empty() {
        println!("laptops of other clusters on this LAN");
        for (ns, addr) in guests {
            println!("  {ns} {addr}");
        }
    }
    Ok(())
}
