//! The gateway on the one-machine cluster, installed with `kubectl apply -k manifests/`.
//! Needs root (network namespaces); every test builds its own cluster.

use anyhow::Result;
use kwg_contract::TunnelIp;
use kwg_contract::keys::PrivateKey;
use kwg_e2e::{
    Implementation, WgPeer, gateway_info, gateway_netns, gateway_peers, install_gateway,
    peer_annotations, register_peer, restart_gateway, wait_for, wait_tunnel_ip,
};
use kwg_sim::testing::Cluster;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

const LEASE: Duration = Duration::from_secs(3600);
/// Everything a joined peer routes into the tunnel in these tests: the tunnel, the cluster
/// CIDRs and destinations the gateway must refuse (the LAN intranet server, cloud metadata).
const ROUTES: [&str; 5] = [
    "100.77.0.0/16",
    "10.96.0.0/12",
    "10.244.0.0/16",
    "192.0.2.80/32",
    "169.254.169.254/32",
];

/// `kubectl auth can-i` as the developer: its answer on stdout (it exits 1 for "no").
fn can_i(c: &Cluster, args: &[&str]) -> Result<String> {
    let mut all = vec!["auth", "can-i"];
    all.extend_from_slice(args);
    Ok(
        String::from_utf8_lossy(&c.kubectl_output(&c.developer_kubeconfig(), &all)?.stdout)
            .trim()
            .to_owned(),
    )
}

fn kubectl_says(c: &Cluster, kubeconfig: &Path, args: &[&str]) -> Result<String> {
    let out = c.kubectl_output(kubeconfig, args)?;
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

#[test]
fn install_publishes_info_keeps_key_and_protects_it() -> Result<()> {
    let c = Cluster::up()?;
    let info = install_gateway(&c)?;
    assert_eq!(
        info.endpoints
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["192.0.2.1:31820"]
    );
    assert_eq!(info.service_cidrs, ["10.96.0.0/12".parse()?]);
    assert_eq!(info.pod_cidrs, ["10.244.0.0/24".parse()?]);
    assert_eq!(info.dns_ip, Some("10.96.0.10".parse()?));
    assert_eq!(info.gateway_ip.to_string(), "100.77.0.1");
    assert_eq!(info.cluster_domain, "cluster.local");

    // The developer (group kwg:users) cannot read the private key, by name or by listing.
    let ns = kwg_contract::DEFAULT_GATEWAY_NAMESPACE;
    let get = kubectl_says(
        &c,
        &c.developer_kubeconfig(),
        &["-n", ns, "get", "secret", kwg_contract::GATEWAY_KEY_SECRET],
    )?;
    assert!(
        get.contains(&format!(
            "Error from server (Forbidden): secrets \"{}\" is forbidden: User \"developer\" cannot get resource \"secrets\"",
            kwg_contract::GATEWAY_KEY_SECRET
        )),
        "{get}"
    );
    let list = kubectl_says(&c, &c.developer_kubeconfig(), &["-n", ns, "get", "secrets"])?;
    assert!(list.to_lowercase().contains("forbidden"), "{list}");
    // ... and may do what kwg-user grants.
    for (verb, res, ns) in [
        ("create", "secrets", kwg_contract::DEFAULT_NAMESPACE),
        ("watch", "secrets", kwg_contract::DEFAULT_NAMESPACE),
        ("delete", "secrets", kwg_contract::DEFAULT_NAMESPACE),
        (
            "get",
            "configmaps/kwg-gateway-info",
            kwg_contract::DEFAULT_NAMESPACE,
        ),
        ("list", "namespaces", "default"),
    ] {
        assert_eq!(
            can_i(&c, &[verb, res, "-n", ns])?,
            "yes",
            "developer can-i {verb} {res} -n {ns}"
        );
    }
    assert_eq!(
        can_i(&c, &["get", "secrets/kwg-gateway-key", "-n", ns])?,
        "no"
    );

    // A peer registered by hand, exactly as docs/contract.md shows (`wg genkey`, kubectl).
    let dir = std::env::temp_dir().join(kwg_sim::testing::unique("kwgdoc"));
    std::fs::create_dir_all(&dir)?;
    let script = format!(
        "set -e; cd {dir}; export KUBECONFIG={kc}
         wg genkey | tee peer.key | wg pubkey > peer.pub
         kubectl -n kwg-system create secret generic kwg-peer-mybox --type=kwg.io/peer \\
           --from-literal=name=mybox --from-file=publicKey=peer.pub \\
           --from-literal=owner=\"$(kubectl auth whoami -o jsonpath='{{.status.userInfo.username}}')\" \\
           --from-literal=hostname=mybox --from-literal=namespaces=default \\
           --from-literal=leaseExpires=2030-01-01T00:00:00Z
         kubectl -n kwg-system label secret kwg-peer-mybox kwg.io/peer=true",
        dir = dir.display(),
        kc = c.developer_kubeconfig().display()
    );
    c.exec_ok(&c.netns("laptop"), &["sh", "-c", &script])?;
    let ip = kwg_e2e::wait_tunnel_ip(&c, "mybox", Duration::from_secs(10))?;
    let key = std::fs::read_to_string(dir.join("peer.pub"))?;
    std::fs::remove_dir_all(&dir)?;
    let listed = gateway_peers(&c)?;
    assert!(
        listed.iter().any(|p| p.name.as_str() == "mybox"
            && p.tunnel_ip == Some(ip)
            && p.public_key.to_string() == key.trim()),
        "{listed:?}"
    );

    // A restart keeps the key.
    restart_gateway(&c)?;
    let again = wait_for(
        "gateway info after restart",
        Duration::from_secs(20),
        || gateway_info(&c).map(Some),
    )?;
    assert_eq!(again.public_key, info.public_key);
    Ok(())
}

#[test]
fn peer_reaches_the_cluster_and_nothing_else() -> Result<()> {
    let c = Cluster::up()?;
    let info = install_gateway(&c)?;
    let laptop = c.netns("laptop");
    // Control: the intranet answers on the LAN directly before any tunnel routes exist.
    let direct = c.exec_ok(
        &laptop,
        &["curl", "-sf", "--max-time", "3", "http://192.0.2.80/"],
    )?;
    assert!(direct.contains("Corp Intranet"));

    // Peer A: the kwg-wg binary, configured with `wg`, registered with a Secret.
    let mut a = WgPeer::start(&laptop, Implementation::KwgWg)?;
    register_peer(&c, "peer-a", &a.public_key(), LEASE)?;
    let a_ip = wait_tunnel_ip(&c, "peer-a", Duration::from_secs(10))?;
    a.connect(&info, a_ip, &ROUTES)?;

    let page = wait_for(
        "web-app through the tunnel",
        Duration::from_secs(10),
        || a.http_get("http://10.96.1.0/", 2),
    )?;
    // The ClusterIP of web-app, looked up rather than assumed.
    let web_ip = c.kubectl_developer(&[
        "-n",
        "emojivoto",
        "get",
        "svc",
        "web-app",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ])?;
    let page2 = a
        .http_get(&format!("http://{web_ip}/"), 3)?
        .unwrap_or_default();
    assert!(
        page.contains("Emoji Vote") && page2.contains("Emoji Vote"),
        "{page2}"
    );
    assert!(a.handshaked()?);

    // A pod IP directly.
    let pods = c.kubectl_developer(&["-n", "emojivoto", "get", "pods", "-o", "json"])?;
    let pods: serde_json::Value = serde_json::from_str(&pods)?;
    let web_pod_ip = pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| {
            p["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("web-app-"))
        })
        .and_then(|p| p["status"]["podIP"].as_str())
        .map(str::to_owned)
        .expect("a web-app pod");
    let direct = a
        .http_get(&format!("http://{web_pod_ip}/"), 3)?
        .unwrap_or_default();
    assert!(
        direct.contains("Emoji Vote"),
        "pod IP {web_pod_ip}: {direct}"
    );

    // Cluster DNS through the tunnel.
    let dns = a.exec(&[
        "dig",
        "+short",
        "+time=2",
        "+tries=2",
        "@10.96.0.10",
        "web-app.emojivoto.svc.cluster.local",
    ])?;
    assert_eq!(String::from_utf8_lossy(&dns.stdout).trim(), web_ip);

    // The gateway's admin port on its tunnel IP.
    let peers = a
        .http_get("http://100.77.0.1:8080/peers", 3)?
        .expect("/peers through the tunnel");
    assert!(peers.contains("\"name\":\"peer-a\""), "{peers}");

    // Refused: a LAN address outside the allowed CIDRs, cloud metadata, the gateway pod's
    // other ports. Controls show each destination answers when asked from elsewhere.
    // The node does not masquerade tunnel addresses, so a missing answer alone does not show
    // that the gateway dropped the packets: its firewall's drop counters must have grown.
    let gw_ns = gateway_netns(&c)?;
    let drops_before = tunnel_drops(&c, &gw_ns, "counter")?;
    assert_eq!(
        a.http_get("http://192.0.2.80/", 2)?,
        None,
        "the LAN intranet through the tunnel"
    );
    assert!(
        tunnel_drops(&c, &gw_ns, "counter")? > drops_before,
        "LAN not dropped by the gateway"
    );
    let node = c.netns("node");
    kwg_sim::sh::run(
        "ip",
        &[
            "-n",
            &node,
            "addr",
            "add",
            "169.254.169.254/32",
            "dev",
            "lo",
        ],
    )?;
    // A stand-in for a cloud metadata service, on the node.
    let metadata = HttpServer::start(&node, "169.254.169.254")?;
    let from_pod = c.exec_ok(
        &gw_ns,
        &[
            "curl",
            "-sf",
            "--max-time",
            "3",
            "http://169.254.169.254:8000/",
        ],
    );
    assert!(
        from_pod.is_ok(),
        "control: metadata answers the gateway pod itself: {from_pod:?}"
    );
    assert_eq!(
        a.http_get("http://169.254.169.254:8000/", 2)?,
        None,
        "cloud metadata through the tunnel"
    );
    assert!(
        tunnel_drops(&c, &gw_ns, "169.254.0.0/16 counter")? > 0,
        "metadata not dropped"
    );
    drop(metadata);

    // Peer B (wireguard-go, another laptop) serves HTTP on its tunnel IP; A cannot reach it.
    let other = c.add_laptop(&kwg_sim::testing::unique("b"))?;
    let mut b = WgPeer::start(&other, Implementation::WireguardGo)?;
    register_peer(&c, "peer-b", &b.public_key(), LEASE)?;
    let b_ip = wait_tunnel_ip(&c, "peer-b", Duration::from_secs(10))?;
    assert_ne!(a_ip, b_ip);
    b.connect(&info, b_ip, &["100.77.0.0/16", "10.96.0.0/12"])?;
    let b_server = HttpServer::start(&other, &b_ip.to_string())?;
    wait_for("peer B through its tunnel", Duration::from_secs(10), || {
        b.http_get("http://10.96.1.0/", 2)
    })?;
    let control = c.exec_ok(
        &gw_ns,
        &[
            "curl",
            "-sf",
            "--max-time",
            "3",
            &format!("http://{b_ip}:8000/"),
        ],
    );
    assert!(
        control.is_ok(),
        "control: the gateway reaches peer B: {control:?}"
    );
    // A's packets to B are dropped by the gateway's rule toward peers (not lost on the way).
    let to_peers = || chain_drops(&c, &gw_ns, "forward", "oifname \"kwg0\" counter");
    let before = to_peers()?;
    assert_eq!(
        a.http_get(&format!("http://{b_ip}:8000/"), 2)?,
        None,
        "peer A reached peer B"
    );
    assert!(
        to_peers()? > before,
        "A's packets to B not dropped by the gateway"
    );
    drop(b_server);

    // The gateway pod's other ports: its WireGuard-over-TCP port on the tunnel address and
    // its admin port on the pod address answer inside the pod (controls), not through the
    // tunnel, where the input chain's last rule drops them.
    let pod_ip = c.kubectl_admin(&[
        "-n",
        kwg_e2e::GATEWAY_NS,
        "get",
        "pod",
        &kwg_e2e::wait_gateway_ready(&c, Duration::from_secs(5))?,
        "-o",
        "jsonpath={.status.podIP}",
    ])?;
    let to_gateway = || chain_drops(&c, &gw_ns, "input", "iifname \"kwg0\" counter");
    for (host, port) in [("100.77.0.1", "51820"), (pod_ip.as_str(), "8080")] {
        assert!(
            tcp_connects(&gw_ns, host, port)?,
            "control: {host}:{port} takes a connection inside the gateway pod"
        );
        let before = to_gateway()?;
        assert!(
            !tcp_connects(&a.netns, host, port)?,
            "{host}:{port} of the gateway pod took a connection through the tunnel"
        );
        assert!(
            to_gateway()? > before,
            "{host}:{port} through the tunnel not dropped by the gateway"
        );
    }

    // A malformed Secret next to A: reported, A undisturbed.
    let bad = serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "kwg-peer-broken", "namespace": "kwg-system",
        "labels": {"kwg.io/peer": "true"}}, "type": "kwg.io/peer",
        "stringData": {"name": "broken", "publicKey": "not-a-key", "owner": "developer"}});
    c.kubectl_apply(&c.developer_kubeconfig(), &bad.to_string())?;
    let err = wait_for("the error annotation", Duration::from_secs(10), || {
        Ok(peer_annotations(&c, "broken")?.and_then(|a| {
            a[kwg_contract::ERROR_ANNOTATION]
                .as_str()
                .map(str::to_owned)
        }))
    })?;
    assert!(
        err.contains("public key is invalid") && err.contains("wg pubkey"),
        "{err}"
    );
    // The gateway records events.k8s.io/v1 Events. A real API server also lists them as
    // core/v1 Events (what the developer's role reads); the stand-in keeps the two apart.
    let events = c.kubectl_admin(&[
        "-n",
        "kwg-system",
        "get",
        "events.v1.events.k8s.io",
        "-o",
        "json",
    ])?;
    assert!(
        events.contains("MalformedPeer") && events.contains("kwg-peer-broken"),
        "{events}"
    );
    assert!(
        a.http_get("http://10.96.1.0/", 3)?
            .is_some_and(|p| p.contains("Emoji Vote")),
        "A disturbed by a malformed Secret"
    );
    assert_eq!(
        peer_annotations(&c, "peer-a")?.unwrap()[kwg_contract::TUNNEL_IP_ANNOTATION],
        a_ip.to_string()
    );

    // Deleting A's Secret removes A from the gateway within 1 s; its traffic stops, B keeps
    // working.
    c.kubectl_developer(&["-n", "kwg-system", "delete", "secret", "kwg-peer-peer-a"])?;
    let deleted = std::time::Instant::now();
    wait_for("A gone from the gateway", Duration::from_secs(5), || {
        let peers = gateway_peers(&c)?;
        Ok((!peers.iter().any(|p| p.name.as_str() == "peer-a")).then_some(()))
    })?;
    let removed = deleted.elapsed();
    assert!(
        removed < Duration::from_secs(1),
        "A left the gateway {removed:?} after its Secret was deleted"
    );
    assert_eq!(
        a.http_get("http://10.96.1.0/", 2)?,
        None,
        "A still reaches the cluster after leaving the gateway"
    );
    assert!(
        b.http_get("http://10.96.1.0/", 3)?.is_some(),
        "B lost its tunnel when A left"
    );
    Ok(())
}

#[test]
fn many_registrations_restart_and_lease_expiry() -> Result<()> {
    let c = Cluster::up()?;
    let info = install_gateway(&c)?;
    // 50 Secrets of one owner in one apply: they arrive at the gateway together.
    let items: Vec<serde_json::Value> = (0..50)
        .map(|i| {
            let expires = chrono::Utc::now() + chrono::Duration::hours(1);
            kwg_e2e::peer_secret_json(
                &format!("many-{i}"),
                &PrivateKey::generate().public_key(),
                expires,
            )
        })
        .collect();
    c.kubectl_apply(
        &c.developer_kubeconfig(),
        // One YAML stream of 50 JSON documents.
        &items
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n---\n"),
    )?;
    // One owner: the first 20 get distinct addresses, the other 30 the limit's error.
    let mut ips: BTreeMap<String, TunnelIp> = BTreeMap::new();
    let mut refused = Vec::new();
    for i in 0..50 {
        let name = format!("many-{i}");
        let a = wait_for(&format!("{name} answered"), Duration::from_secs(20), || {
            Ok(peer_annotations(&c, &name)?.filter(|a| {
                a.get(kwg_contract::TUNNEL_IP_ANNOTATION).is_some()
                    || a.get(kwg_contract::ERROR_ANNOTATION).is_some()
            }))
        })?;
        match a[kwg_contract::TUNNEL_IP_ANNOTATION].as_str() {
            Some(ip) => {
                ips.insert(name, ip.parse()?);
            }
            None => refused.push(a[kwg_contract::ERROR_ANNOTATION].to_string()),
        }
    }
    assert_eq!((ips.len(), refused.len()), (20, 30), "{ips:?}");
    assert!(
        refused
            .iter()
            .all(|e| e.contains("owner `developer` already has 20 peers")),
        "{refused:?}"
    );
    let distinct: HashSet<_> = ips.values().collect();
    assert_eq!(distinct.len(), 20, "{ips:?}");
    assert!(!distinct.contains(&info.gateway_ip));

    // A restarted gateway serves the same 20 peers at the same addresses.
    restart_gateway(&c)?;
    let peers = wait_for("20 peers after restart", Duration::from_secs(20), || {
        Ok(gateway_peers(&c).ok().filter(|p| p.len() == 20))
    })?;
    for p in peers {
        assert_eq!(
            ips.get(p.name.as_str()),
            p.tunnel_ip.as_ref(),
            "{} moved",
            p.name
        );
    }
    c.kubectl_developer(&[
        "-n",
        "kwg-system",
        "delete",
        "secret",
        "-l",
        "kwg.io/peer=true",
    ])?;

    // A lease that ends is collected, and its address freed for the next peer.
    let short = PrivateKey::generate().public_key();
    register_peer(&c, "short-lived", &short, Duration::from_secs(3))?;
    wait_tunnel_ip(&c, "short-lived", Duration::from_secs(10))?;
    wait_for(
        "the expired Secret to be deleted",
        Duration::from_secs(20),
        || Ok(peer_annotations(&c, "short-lived")?.is_none().then_some(())),
    )?;
    assert!(
        !gateway_peers(&c)?
            .iter()
            .any(|p| p.name.as_str() == "short-lived")
    );
    Ok(())
}

/// Packets the gateway's firewall (its tables `kwg` and `kwg_reach`) dropped on rules from
/// the tunnel containing `rule`.
fn tunnel_drops(c: &Cluster, gw_ns: &str, rule: &str) -> Result<u64> {
    let table = c.exec_ok(gw_ns, &["nft", "list", "ruleset"])?;
    let pattern = format!(" {rule} packets ");
    Ok(table
        .lines()
        // Dropped, or refused (answered with a reset or ICMP admin-prohibited: reach by RBAC).
        .filter(|l| l.contains("iifname \"kwg0\""))
        .filter(|l| l.trim_end().ends_with("drop") || l.trim_end().ends_with("goto refuse"))
        .filter_map(|l| {
            l.split_once(&pattern)?
                .1
                .split(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum())
}

/// The packet counter of the rule of table `inet kwg`'s `chain` that starts with `rule`
/// (e.g. `oifname "kwg0" counter`); an error when there is no such rule.
fn chain_drops(c: &Cluster, gw_ns: &str, chain: &str, rule: &str) -> Result<u64> {
    let table = c.exec_ok(gw_ns, &["nft", "list", "table", "inet", "kwg"])?;
    let mut current = "";
    for line in table.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("chain ") {
            current = name.trim_end_matches(" {");
        } else if current == chain && line.starts_with(rule) {
            let n = line
                .split_once(" packets ")
                .and_then(|(_, rest)| rest.split(' ').next()?.parse().ok());
            return n.ok_or_else(|| anyhow::anyhow!("no packet count in {line:?}"));
        }
    }
    anyhow::bail!("no rule {rule:?} in chain {chain} of table inet kwg:\n{table}")
}

/// Whether a TCP connection from `netns` to `host:port` is accepted within 2 s.
fn tcp_connects(netns: &str, host: &str, port: &str) -> Result<bool> {
    let open = format!("exec 3<>/dev/tcp/{host}/{port}");
    let out = kwg_sim::testing::exec(netns, &["timeout", "2", "bash", "-c", &open])?;
    Ok(out.status.success())
}

/// `python3 -m http.server` bound to one address in a namespace; killed on drop.
struct HttpServer(std::process::Child);

impl HttpServer {
    fn start(netns: &str, ip: &str) -> Result<HttpServer> {
        let child = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                netns,
                "python3",
                "-m",
                "http.server",
                "--bind",
                ip,
                "8000",
                "--directory",
                "/tmp",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let s = HttpServer(child);
        let url = format!("http://{ip}:8000/");
        wait_for("the test HTTP server", Duration::from_secs(10), || {
            Ok(
                kwg_sim::testing::exec(netns, &["curl", "-sf", "--max-time", "1", &url])?
                    .status
                    .success()
                    .then_some(()),
            )
        })?;
        Ok(s)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `curl` from `netns`: the HTTP status and the body.
fn http_status(c: &Cluster, netns: &str, url: &str) -> Result<(String, String)> {
    let out = c.exec_ok(
        netns,
        &["curl", "-s", "--max-time", "3", "-w", "\n%{http_code}", url],
    )?;
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", &out));
    Ok((code.trim().to_owned(), body.to_owned()))
}

#[test]
fn admin_port_serves_pods_only_health_and_peers_only_themselves() -> Result<()> {
    let c = Cluster::up()?;
    let info = install_gateway(&c)?;
    let pod = kwg_e2e::wait_gateway_ready(&c, Duration::from_secs(10))?;
    let gw_ip = c.kubectl_admin(&[
        "-n",
        kwg_e2e::GATEWAY_NS,
        "get",
        "pod",
        &pod,
        "-o",
        "jsonpath={.status.podIP}",
    ])?;
    let mut a = WgPeer::start(&c.netns("laptop"), Implementation::KwgWg)?;
    register_peer(&c, "peer-a", &a.public_key(), LEASE)?;
    register_peer(&c, "peer-b", &PrivateKey::generate().public_key(), LEASE)?;
    let a_ip = wait_tunnel_ip(&c, "peer-a", Duration::from_secs(10))?;
    wait_tunnel_ip(&c, "peer-b", Duration::from_secs(10))?;

    // Another pod: the probes answer, the rest is refused with a sentence naming the way in.
    let web = c.pod_netns("emojivoto", "web-app")?;
    let base = format!("http://{gw_ip}:8080");
    assert_eq!(
        http_status(&c, &web, &format!("{base}/healthz"))?,
        ("200".into(), "ok\n".into())
    );
    assert_eq!(http_status(&c, &web, &format!("{base}/readyz"))?.0, "200");
    for path in ["/metrics", "/peers", "/peers/self"] {
        let (code, body) = http_status(&c, &web, &format!("{base}{path}"))?;
        assert_eq!(code, "403", "{path} from a pod: {body}");
        assert!(body.contains("only through the kwg tunnel"), "{body}");
        assert!(
            !body.contains("peer-a") && !body.contains("kwg_gateway"),
            "{body}"
        );
    }
    // Inside the gateway pod both answer.
    let gw_ns = gateway_netns(&c)?;
    let (code, metrics) = http_status(&c, &gw_ns, "http://127.0.0.1:8080/metrics")?;
    assert_eq!(code, "200");
    assert!(
        metrics.lines().any(|l| l == "kwg_gateway_peers 2"),
        "{metrics}"
    );
    // /peers/self names no peer from loopback: it is told by the tunnel address asking.
    let (code, body) = http_status(&c, &gw_ns, "http://127.0.0.1:8080/peers/self")?;
    assert_eq!(code, "404", "{body}");
    assert!(
        body.starts_with("not found: /peers/self answers only a peer"),
        "{body}"
    );
    // Loopback is also where a kwg user's port-forward arrives: nobody's endpoint or hostname.
    let all = gateway_peers(&c)?;
    assert!(
        all.len() == 2
            && all
                .iter()
                .all(|p| p.hostname.is_none() && p.endpoint.is_none()),
        "{all:?}"
    );

    // Through the tunnel: a peer sees itself in full, the other without its hostname.
    a.connect(&info, a_ip, &ROUTES)?;
    let peers = wait_for("/peers through the tunnel", Duration::from_secs(10), || {
        a.http_get("http://100.77.0.1:8080/peers", 2)
    })?;
    let peers: Vec<kwg_contract::GatewayPeer> = serde_json::from_str(&peers)?;
    let me = peers
        .iter()
        .find(|p| p.name.as_str() == "peer-a")
        .expect("peer-a");
    let other = peers
        .iter()
        .find(|p| p.name.as_str() == "peer-b")
        .expect("peer-b");
    assert_eq!(me.hostname.as_deref(), Some("peer-a-host"));
    assert!(
        me.endpoint.is_some() && me.last_handshake.is_some(),
        "{me:?}"
    );
    assert_eq!(
        (other.hostname.as_ref(), other.endpoint),
        (None, None),
        "{other:?}"
    );
    assert!(other.tunnel_ip.is_some());
    // What the joined laptop polls: its own entry alone, in full, by its tunnel address.
    let own = a
        .http_get("http://100.77.0.1:8080/peers/self", 2)?
        .expect("/peers/self through the tunnel");
    let own: kwg_contract::GatewayPeer = serde_json::from_str(&own)?;
    assert_eq!(
        (own.name.as_str(), own.hostname.as_deref()),
        ("peer-a", Some("peer-a-host"))
    );
    let metrics = a
        .http_get("http://100.77.0.1:8080/metrics", 2)?
        .expect("/metrics through the tunnel");
    assert!(
        metrics.contains("kwg_gateway_peers_connected 1"),
        "{metrics}"
    );
    // The UDP receive's counters (docs/performance.md): the handshakes and this request came
    // in over UDP, one datagram per message on this LAN (nothing coalesces them).
    let counter = |name: &str| -> u64 {
        let prefix = format!("{name} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str())?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics:\n{metrics}"))
    };
    let calls = counter("kwg_gateway_udp_receive_calls_total");
    let messages = counter("kwg_gateway_udp_receive_messages_total");
    let datagrams = counter("kwg_gateway_udp_datagrams_received_total");
    assert!(
        calls >= 1 && messages >= calls && datagrams >= messages,
        "calls {calls}, messages {messages}, datagrams {datagrams}"
    );
    Ok(())
}
