//! Shared helpers for the end-to-end tests in `tests/`, on the one-machine cluster of
//! [`kwg_sim::testing::Cluster`]: installing the gateway from
//! `manifests/`, registering peers by writing Secrets with `kubectl`, and WireGuard peers
//! (`kwg-wg` or `wireguard-go`, configured with `wg`) in laptop namespaces.
//!
//! Every test needs root; names carry a per-process unique prefix, so tests run in parallel.

pub mod firewall;
pub mod laptop;
pub mod requests;
pub mod sudo;
pub mod tokens;

use anyhow::{Context, Result, bail};
use kwg_contract::keys::{PrivateKey, PublicKey};
use kwg_contract::{GatewayInfo, GatewayPeer, TunnelIp};
use kwg_sim::sh;
use kwg_sim::testing::{Cluster, exec, exec_ok, unique};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The namespace the gateway runs in (its pods, Deployment, Service, Lease and key).
pub const GATEWAY_NS: &str = kwg_contract::DEFAULT_GATEWAY_NAMESPACE;

/// Runs the rest of an argv as user and group 65534 (nobody), no supplementary groups and no
/// capabilities: another local user, or a user without privilege.
pub const AS_NOBODY: [&str; 5] = [
    "setpriv",
    "--reuid=65534",
    "--regid=65534",
    "--clear-groups",
    "--inh-caps=-all",
];

/// The repository root (for `manifests/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Polls `f` every 100 ms until it returns `Some`, or fails after `timeout`.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let start = Instant::now();
    let mut last_err = None;
    loop {
        match f() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what} (last error: {last_err:?})");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Installs the gateway with `kubectl apply -k manifests/` as admin, scaled to one replica
/// (for tests that read one replica's state: `/peers`, counters, its pod), and waits until it
/// is ready and has published its info.
pub fn install_gateway(c: &Cluster) -> Result<GatewayInfo> {
    install_gateway_replicas(c, 1)
}

/// Installs the gateway (the manifests run 2 replicas) scaled to `replicas`, and waits until
/// exactly that many pods are Ready and the info is published.
pub fn install_gateway_replicas(c: &Cluster, replicas: usize) -> Result<GatewayInfo> {
    // manifests/ with the tunnel CIDR the tests name (a new install picks one at random).
    install_gateway_from(c, "tests/e2e/manifests", replicas)
}

/// [`install_gateway_replicas`] from the kustomization in `overlay` (relative to the repository).
pub fn install_gateway_from(c: &Cluster, overlay: &str, replicas: usize) -> Result<GatewayInfo> {
    let manifests = repo_root().join(overlay);
    c.kubectl_admin(&["apply", "-k", manifests.to_str().context("path")?])?;
    let n = format!("--replicas={replicas}");
    c.kubectl_admin(&["-n", GATEWAY_NS, "scale", "deployment/kwg-gateway", &n])?;
    wait_for("the gateway replicas", Duration::from_secs(30), || {
        let pods = gateway_pods(c)?;
        Ok((pods.len() == replicas && pods.iter().all(|p| p.1)).then_some(()))
    })?;
    wait_for("gateway info", Duration::from_secs(30), || {
        gateway_info(c).map(Some)
    })
}

/// Has `c`'s web-app serve a page titled `title` (one cluster's page told from another's), and
/// waits for its rollout.
pub fn title_web_app(c: &Cluster, title: &str) -> Result<()> {
    let patch = serde_json::json!([{
        "op": "replace",
        "path": "/spec/template/spec/containers/0/args",
        "value": ["workload", "http", "--port", "80", "--title", title],
    }])
    .to_string();
    let deploy = [
        "-n",
        "emojivoto",
        "patch",
        "deployment/web-app",
        "--type=json",
        "-p",
    ];
    c.kubectl_admin(&[&deploy[..], &[patch.as_str()]].concat())?;
    let status = ["-n", "emojivoto", "rollout", "status", "deployment/web-app"];
    c.kubectl_admin(&[&status[..], &["--timeout=30s"]].concat())?;
    Ok(())
}

/// The `<title>` of an HTML page.
pub fn page_title(page: &str) -> Option<&str> {
    let (_, rest) = page.split_once("<title>")?;
    Some(rest.split_once("</title>")?.0)
}

/// Every gateway pod: (name, Ready).
pub fn gateway_pods(c: &Cluster) -> Result<Vec<(String, bool)>> {
    let out = c.kubectl_admin(&[
        "-n",
        GATEWAY_NS,
        "get",
        "pods",
        "-l",
        "app.kubernetes.io/name=kwg-gateway",
        "-o",
        "json",
    ])?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    Ok(v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter_map(|p| {
            let ready = p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            Some((p["metadata"]["name"].as_str()?.to_owned(), ready))
        })
        .collect())
}

/// The ready gateway pod's name.
pub fn wait_gateway_ready(c: &Cluster, timeout: Duration) -> Result<String> {
    wait_for("a ready gateway pod", timeout, || {
        let out = c.kubectl_admin(&["-n", GATEWAY_NS, "get", "pods", "-o", "json"])?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        let ready = v["items"].as_array().into_iter().flatten().find(|p| {
            p["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("kwg-gateway-"))
                && p["metadata"]["deletionTimestamp"].is_null()
                && p["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
        });
        Ok(ready.and_then(|p| p["metadata"]["name"].as_str().map(str::to_owned)))
    })
}

/// Restarts the gateway by deleting its pod; waits for the new one to be ready.
pub fn restart_gateway(c: &Cluster) -> Result<String> {
    let old = wait_gateway_ready(c, Duration::from_secs(5))?;
    c.kubectl_admin(&["-n", GATEWAY_NS, "delete", "pod", &old, "--wait=true"])?;
    wait_for("a new gateway pod", Duration::from_secs(30), || {
        let name = wait_gateway_ready(c, Duration::from_secs(1)).ok();
        Ok(name.filter(|n| *n != old))
    })
}

/// The gateway info as a kwg user reads it: `info.json` with the `ipv6.json` next to it, if
/// any (an IPv6-only cluster's `info.json` is valid only with it).
pub fn gateway_info(c: &Cluster) -> Result<GatewayInfo> {
    let json = gateway_info_key(c, kwg_contract::GATEWAY_INFO_KEY)?;
    let six = gateway_info_key(c, kwg_contract::GATEWAY_INFO6_KEY)?;
    let info6 = match six.trim() {
        "" => None,
        six => Some(kwg_contract::GatewayInfo6::from_json(six.as_bytes())?),
    };
    Ok(GatewayInfo::from_json_with6(json.as_bytes(), info6)?)
}

/// One key of the gateway info ConfigMap as a kwg user reads it (empty when absent).
pub fn gateway_info_key(c: &Cluster, key: &str) -> Result<String> {
    let path = format!("jsonpath={{.data.{}}}", key.replace('.', "\\."));
    Ok(c.kubectl_developer(&[
        "-n",
        kwg_contract::DEFAULT_NAMESPACE,
        "get",
        "configmap",
        kwg_contract::GATEWAY_INFO_CONFIGMAP,
        "-o",
        &path,
    ])?)
}

/// Writes the gateway info ConfigMap of namespace `ns` as the admin, with any JSON (how a
/// hostile cluster, or one whoever may write that ConfigMap, changes what laptops read).
pub fn put_gateway_info(c: &Cluster, ns: &str, info: &serde_json::Value) -> Result<()> {
    let cm = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": kwg_contract::GATEWAY_INFO_CONFIGMAP, "namespace": ns},
        "data": {(kwg_contract::GATEWAY_INFO_KEY): info.to_string()},
    });
    c.kubectl_apply(&c.admin_kubeconfig(), &cm.to_string())?;
    Ok(())
}

/// The gateway pod's network namespace.
pub fn gateway_netns(c: &Cluster) -> Result<String> {
    let pod = wait_gateway_ready(c, Duration::from_secs(10))?;
    Ok(c.names().pod_ns(GATEWAY_NS, &pod))
}

/// The gateway's `/peers`, read inside its pod.
pub fn gateway_peers(c: &Cluster) -> Result<Vec<GatewayPeer>> {
    let out = c.exec_ok(
        &gateway_netns(c)?,
        &[
            "curl",
            "-sf",
            "--max-time",
            "3",
            "http://127.0.0.1:8080/peers",
        ],
    )?;
    Ok(serde_json::from_str(&out)?)
}

/// A peer Secret as a client writes it (see docs/contract.md).
pub fn peer_secret_json(
    name: &str,
    key: &PublicKey,
    lease_expires: chrono::DateTime<chrono::Utc>,
) -> serde_json::Value {
    use std::collections::BTreeMap;
    let data: BTreeMap<String, String> = [
        ("name", name.to_owned()),
        ("publicKey", key.to_string()),
        ("owner", "developer".into()),
        ("hostname", format!("{name}-host")),
        ("namespaces", "emojivoto".into()),
        ("leaseExpires", kwg_contract::format_lease(lease_expires)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "type": kwg_contract::PEER_SECRET_TYPE,
        "metadata": {"name": format!("{}{name}", kwg_contract::PEER_SECRET_PREFIX), "namespace": kwg_contract::DEFAULT_NAMESPACE,
                     "labels": {kwg_contract::PEER_LABEL: kwg_contract::PEER_LABEL_VALUE}},
        "stringData": data,
    })
}

/// The developer's groups as the API server gives them (kwg-sim): what `kwg join` writes into
/// its peer Secret's `kwg.io/groups`, and what its reach comes through (`developers` edits
/// emojivoto and views default).
pub const DEVELOPER_GROUPS: [&str; 3] = ["kwg:users", "developers", "system:authenticated"];

/// Registers a peer as the developer, with a lease of `lease` from now, and the developer's
/// groups as `kwg join` writes them (its reach comes through the group `developers`).
pub fn register_peer(c: &Cluster, name: &str, key: &PublicKey, lease: Duration) -> Result<()> {
    let expires = chrono::Utc::now() + chrono::Duration::from_std(lease)?;
    let mut doc = peer_secret_json(name, key, expires);
    doc["metadata"]["annotations"] =
        serde_json::json!({kwg_contract::GROUPS_ANNOTATION: DEVELOPER_GROUPS.join("\n")});
    c.kubectl_apply(&c.developer_kubeconfig(), &doc.to_string())?;
    Ok(())
}

/// The peer Secret's annotations; `None` only when the API server says NotFound (any other
/// kubectl failure is an error, never "gone").
pub fn peer_annotations(c: &Cluster, name: &str) -> Result<Option<serde_json::Value>> {
    let secret = format!("{}{name}", kwg_contract::PEER_SECRET_PREFIX);
    let out = c.kubectl(
        &c.developer_kubeconfig(),
        &[
            "-n",
            kwg_contract::DEFAULT_NAMESPACE,
            "get",
            "secret",
            &secret,
            "--ignore-not-found",
            "-o",
            "json",
        ],
    )?;
    if out.trim().is_empty() {
        return Ok(None);
    }
    let v: serde_json::Value = serde_json::from_str(&out)?;
    Ok(Some(v["metadata"]["annotations"].clone()))
}

/// Waits for the gateway to write the peer's tunnel IP.
pub fn wait_tunnel_ip(c: &Cluster, name: &str, timeout: Duration) -> Result<TunnelIp> {
    wait_for(&format!("tunnel IP of {name}"), timeout, || {
        let ann = peer_annotations(c, name)?.unwrap_or_default();
        Ok(ann[kwg_contract::TUNNEL_IP_ANNOTATION]
            .as_str()
            .and_then(|s| s.parse().ok()))
    })
}

/// Which WireGuard implementation a test peer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Implementation {
    /// The `kwg-wg` binary of this workspace.
    KwgWg,
    /// Debian's `wireguard-go`.
    WireguardGo,
}

/// A WireGuard peer in a network namespace, configured with `wg` like any user would.
pub struct WgPeer {
    pub netns: String,
    pub ifname: String,
    pub key: PrivateKey,
    pub ip: Option<TunnelIp>,
    child: Child,
}

impl WgPeer {
    /// Starts the interface (no peer configured yet).
    pub fn start(netns: &str, imp: Implementation) -> Result<WgPeer> {
        let ifname = unique("kp");
        let bin = match imp {
            Implementation::KwgWg => kwg_sim::bin_path("kwg-wg").to_string_lossy().into_owned(),
            Implementation::WireguardGo => "wireguard-go".into(),
        };
        let child = Command::new("ip")
            .args(["netns", "exec", netns, &bin, "-f", &ifname])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {bin}"))?;
        let peer = WgPeer {
            netns: netns.to_owned(),
            ifname,
            key: PrivateKey::generate(),
            ip: None,
            child,
        };
        wait_for("the WireGuard interface", Duration::from_secs(10), || {
            Ok(
                Path::new(&format!("/var/run/wireguard/{}.sock", peer.ifname))
                    .exists()
                    .then_some(()),
            )
        })?;
        Ok(peer)
    }

    pub fn public_key(&self) -> PublicKey {
        self.key.public_key()
    }

    /// Points the interface at the gateway with `wg set`, gives it its tunnel address and
    /// routes `routes` through it.
    pub fn connect(&mut self, info: &GatewayInfo, ip: TunnelIp, routes: &[&str]) -> Result<()> {
        let key_file = std::env::temp_dir().join(format!("{}.key", self.ifname));
        kwg_contract::keys::write_private_key_file(&key_file, &self.key)?;
        let endpoint = info
            .endpoints
            .first()
            .context("gateway has no endpoint")?
            .to_string();
        let allowed = routes.join(",");
        let r = exec_ok(
            &self.netns,
            &[
                "wg",
                "set",
                &self.ifname,
                "private-key",
                key_file.to_str().context("path")?,
                "peer",
                &info.public_key.to_string(),
                "endpoint",
                &endpoint,
                "allowed-ips",
                &allowed,
                "persistent-keepalive",
                "5",
            ],
        );
        let _ = std::fs::remove_file(&key_file);
        r?;
        let addr = format!("{ip}/32");
        let ns = self.netns.as_str();
        sh::run("ip", &["-n", ns, "addr", "add", &addr, "dev", &self.ifname])?;
        sh::run("ip", &["-n", ns, "link", "set", &self.ifname, "up"])?;
        for r in routes {
            sh::run("ip", &["-n", ns, "route", "add", r, "dev", &self.ifname])?;
        }
        self.ip = Some(ip);
        Ok(())
    }

    /// Runs a command in the peer's namespace.
    pub fn exec(&self, args: &[&str]) -> Result<Output> {
        Ok(exec(&self.netns, args)?)
    }

    /// `curl` through the tunnel; the body, or `None` when it fails.
    pub fn http_get(&self, url: &str, timeout_secs: u32) -> Result<Option<String>> {
        let t = timeout_secs.to_string();
        let out = self.exec(&["curl", "-sf", "--max-time", &t, url])?;
        Ok(out
            .status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned()))
    }

    /// `wg show <if> latest-handshakes` says there was a handshake.
    pub fn handshaked(&self) -> Result<bool> {
        let out = exec_ok(
            &self.netns,
            &["wg", "show", &self.ifname, "latest-handshakes"],
        )?;
        Ok(out.split_whitespace().nth(1).is_some_and(|t| t != "0"))
    }
}

impl Drop for WgPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = sh::run("ip", &["-n", &self.netns, "link", "del", &self.ifname]);
        let _ = std::fs::remove_file(format!("/var/run/wireguard/{}.sock", self.ifname));
    }
}

/// The ClusterIP of Service `ns/name`, as an admin reads it.
pub fn cluster_ip(c: &Cluster, ns: &str, name: &str) -> anyhow::Result<String> {
    let jp = "jsonpath={.spec.clusterIP}";
    Ok(c.kubectl_admin(&["-n", ns, "get", "svc", name, "-o", jp])?)
}

/// The address of the given family (`index` into `status.podIPs`: 0 the cluster's first
/// family, 1 the second of a dual-stack one) of cluster DNS's pod in kube-system: a pod of a
/// namespace the developer may not see.
pub fn kube_dns_pod_ip(c: &Cluster, index: usize) -> anyhow::Result<String> {
    let jp = format!("jsonpath={{.items[0].status.podIPs[{index}].ip}}");
    let args = [
        "-n",
        "kube-system",
        "get",
        "pods",
        "-l",
        "k8s-app=kube-dns",
        "-o",
        &jp,
    ];
    Ok(c.kubectl_admin(&args)?)
}

/// `kubectl` as the admin, its output; panics naming the command when it fails.
pub fn kubectl(c: &Cluster, args: &[&str]) -> String {
    c.kubectl_admin(args)
        .unwrap_or_else(|e| panic!("kubectl {args:?}: {e}"))
}

/// The developer's kubeconfig of `c` with its context called `context`, written to
/// `<run dir>/<file>.kubeconfig`: one kubeconfig per cluster, as a user with several has.
pub fn kubeconfig_as(c: &Cluster, context: &str, file: &str) -> String {
    let text = std::fs::read_to_string(c.developer_kubeconfig()).expect("kubeconfig");
    let path = c.names().run_dir().join(format!("{file}.kubeconfig"));
    std::fs::write(&path, text.replace("developer@kwg", context)).expect("write kubeconfig");
    path.display().to_string()
}
