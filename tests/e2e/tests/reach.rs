//! Reach by RBAC on the one-machine cluster: a peer reaches only the namespaces whose Services
//! its owner may get (and that it asked for), never the node's address in the pod CIDR, and
//! nothing in the cluster can open a connection to a laptop. Laptops run the real `kwg`.

use anyhow::Result;
use kwg_e2e::laptop::{Laptop, laptop, shared, text};
use kwg_e2e::{gateway_netns, tokens, wait_for, wait_tunnel_ip};
use kwg_sim::testing::{Cluster, unique};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A ServiceAccount in `emojivoto` with `view` there and the kwg-user Role, as a kubeconfig
/// user of the run directory (what `Laptop::run_as` takes); its name and user name.
fn view_only_user(c: &Cluster) -> Result<(String, String)> {
    let sa = unique("reach");
    let user = format!("system:serviceaccount:emojivoto:{sa}");
    let docs = [
        serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa, "namespace": "emojivoto"}}),
        serde_json::json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
         "metadata": {"name": format!("{sa}-token"), "namespace": "emojivoto",
                      "annotations": {"kubernetes.io/service-account.name": sa}}}),
        binding(&sa, "emojivoto", "ClusterRole", "view"),
        binding(&sa, "kwg-system", "Role", "kwg-user"),
    ];
    for doc in docs {
        c.kubectl_apply(&c.admin_kubeconfig(), &doc.to_string())?;
    }
    let token = tokens::wait_token(c, "emojivoto", &format!("{sa}-token"))?;
    // `kwg join` names the owner after the kubeconfig's user entry: name it as the API
    // server knows the user (the admission policy compares the two).
    let config = tokens::developer_kubeconfig_with(c, &token)?.replace("developer", &user);
    std::fs::write(c.names().kubeconfig(&sa), config)?;
    assert_eq!(tokens::whoami(c, &c.names().kubeconfig(&sa))?, user);
    Ok((sa, user))
}

fn binding(sa: &str, ns: &str, kind: &str, role: &str) -> serde_json::Value {
    serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": format!("{sa}-{role}"), "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": "emojivoto"}]})
}

/// The gateway's `/metrics` as an admin reads it inside the gateway pod.
fn metrics(c: &Cluster) -> Result<String> {
    let url = "http://127.0.0.1:8080/metrics";
    Ok(c.exec_ok(&gateway_netns(c)?, &["curl", "-sf", "--max-time", "3", url])?)
}

/// `kwg_gateway_peer_dropped_packets_total` of one peer (0 before its first drop).
fn drops(c: &Cluster, peer: &str) -> Result<u64> {
    let prefix = format!("kwg_gateway_peer_dropped_packets_total{{peer=\"{peer}\",");
    Ok(metrics(c)?
        .lines()
        .find(|l| l.starts_with(&prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0))
}

/// `curl` from the laptop as `user`: whether it got an answer in 2 s.
fn answers(l: &Laptop, user: &str, url: &str) -> bool {
    l.run_as(user, &["curl", "-sf", "--max-time", "2", url])
        .status
        .success()
}

/// The namespaces `kwg status -o json` says the gateway forwards this laptop to.
fn reachable(l: &Laptop, user: &str) -> Result<Vec<String>> {
    let out = l.run_as(user, &["kwg", "status", "-o", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(serde_json::from_value(json["reach"]["namespaces"].clone()).unwrap_or_default())
}

fn svc_ip(c: &Cluster, ns: &str, name: &str) -> Result<String> {
    let jp = "jsonpath={.spec.clusterIP}";
    Ok(c.kubectl_admin(&["-n", ns, "get", "svc", name, "-o", jp])?)
}

#[test]
fn a_view_only_user_reaches_its_namespace_and_what_a_new_binding_grants() -> Result<()> {
    let c = shared();
    let (sa, _user) = view_only_user(&c)?;
    let l = laptop(&c, "rbac");
    let join = l.run_as(
        &sa,
        &[
            "kwg",
            "join",
            "--name",
            "rbac",
            "--namespace",
            "emojivoto",
            "--mapped-namespaces",
            "emojivoto,default",
        ],
    );
    assert!(
        join.status.success(),
        "{}{}",
        text(&join.stdout),
        text(&join.stderr)
    );
    // The join names the mapped namespace the gateway will not forward to, and only that one.
    let said = text(&join.stderr);
    assert!(
        said.contains("Namespace default is not reachable") && said.contains("--clusterrole=view"),
        "{said}"
    );
    assert!(!said.contains("Namespace emojivoto is not"), "{said}");
    assert_eq!(reachable(&l, &sa)?, ["emojivoto"]);
    let (web, echo) = (
        svc_ip(&c, "emojivoto", "web-app")?,
        svc_ip(&c, "default", "echo")?,
    );
    let echo_pod = c.pod_ip("default", "echo")?;
    assert!(text(&l.curl("web-app:80").stdout).contains("Emoji Vote"));
    assert!(answers(&l, &sa, &format!("http://{web}/")));
    // Names of the namespace it cannot reach are NXDOMAIN (kwg's DNS follows the gateway's
    // reach), not a ClusterIP the gateway would drop; its own namespace's names resolve.
    wait_for("echo.default NXDOMAIN", Duration::from_secs(10), || {
        let out = l.run(&["dig", "+time=3", "echo.default.svc.cluster.local"]);
        Ok(text(&out.stdout).contains("status: NXDOMAIN").then_some(()))
    })?;
    assert_eq!(l.dig_status("echo.default"), "NXDOMAIN");
    assert_eq!(l.dig("web-app.emojivoto"), web);

    // `default` was asked for but the owner may not get Services there: dropped, counted.
    let before = drops(&c, "rbac")?;
    assert!(!answers(&l, &sa, &format!("http://{echo}/")));
    assert!(!answers(&l, &sa, &format!("http://{echo_pod}:8080/")));
    // Refused at once now, so within the second `/metrics` serves its cached counts.
    wait_for("the refusals counted", Duration::from_secs(3), || {
        Ok((drops(&c, "rbac")? > before).then_some(()))
    })?;
    // `kwg status` shows the same reach and the drops (as the gateway holding the session counts them).
    let status = l.run_as(&sa, &["kwg", "status"]);
    let line = text(&status.stdout);
    let line = line
        .lines()
        .find(|l| l.starts_with("Reachable ns"))
        .unwrap_or_default()
        .to_owned();
    assert!(line.contains(": emojivoto ("), "{line}");
    let json: serde_json::Value =
        serde_json::from_slice(&l.run_as(&sa, &["kwg", "status", "-o", "json"]).stdout)?;
    assert!(json["reach"]["droppedPackets"].as_u64() > Some(0), "{json}");

    // Refused fast: a connection to a namespace it may not reach is reset at once (no
    // timeout), a ping is answered "administratively prohibited", and `kwg status` names
    // the last refused destination and the RoleBinding that would allow it.
    std::thread::sleep(Duration::from_millis(1100)); // the refusal above is a second older
    let started = std::time::Instant::now();
    let out = l.run_as(
        &sa,
        &["curl", "-sS", "--max-time", "5", &format!("http://{echo}/")],
    );
    let took = started.elapsed();
    let said = text(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "curl: {said}");
    assert!(took < Duration::from_millis(500), "refused in {took:?}");
    eprintln!("refused connection failed in {took:?}");
    // curl says "Couldn't connect to server" for any failed connect: the errno tells a
    // reset (ECONNREFUSED) from an unreachable host or a timeout.
    let connect = format!("import socket; socket.create_connection(('{echo}', 80), 5)");
    let py = text(&l.run_as(&sa, &["python3", "-c", &connect]).stderr);
    assert!(py.contains("ConnectionRefusedError"), "{py}");
    let ping = l.run_as(&sa, &["ping", "-c", "1", "-W", "2", &echo_pod]);
    assert!(
        text(&ping.stdout).contains("Packet filtered"),
        "{}",
        text(&ping.stdout)
    );
    let json: serde_json::Value =
        serde_json::from_slice(&l.run_as(&sa, &["kwg", "status", "-o", "json"]).stdout)?;
    let refused = &json["reach"]["lastRefused"];
    assert_eq!(
        refused["namespaces"],
        serde_json::json!(["default"]),
        "{json}"
    );
    let allow = format!(
        "kubectl -n default create rolebinding kwg-reach-{} --clusterrole=view --serviceaccount=emojivoto:{sa}",
        _user.replace(':', "-")
    );
    assert_eq!(refused["allow"], serde_json::json!([allow]), "{json}");
    let status = text(&l.run_as(&sa, &["kwg", "status"]).stdout);
    let line = status
        .lines()
        .find(|l| l.starts_with("Last refused"))
        .unwrap_or_default();
    assert!(
        line.contains("(default; allowed by: kubectl -n default create rolebinding"),
        "{status}"
    );

    // A RoleBinding in `default` opens it without re-joining; deleting it closes it again.
    let grant = binding(&sa, "default", "ClusterRole", "view");
    c.kubectl_apply(&c.admin_kubeconfig(), &grant.to_string())?;
    let granted_at = std::time::Instant::now();
    let url = format!("http://{echo}/");
    wait_for(
        "echo.default after the RoleBinding",
        Duration::from_secs(60),
        || Ok(answers(&l, &sa, &url).then_some(())),
    )?;
    eprintln!("RoleBinding took effect in {:?}", granted_at.elapsed());
    wait_for("kwg status lists default", Duration::from_secs(10), || {
        Ok((reachable(&l, &sa)? == ["default", "emojivoto"]).then_some(()))
    })?;
    wait_for(
        "echo.default resolves again",
        Duration::from_secs(10),
        || Ok((l.dig("echo.default") == echo).then_some(())),
    )?;
    assert!(text(&l.curl("echo.default").stdout).contains("Echo"));
    c.kubectl_admin(&[
        "-n",
        "default",
        "delete",
        "rolebinding",
        &format!("{sa}-view"),
    ])?;
    wait_for(
        "echo.default dropped again",
        Duration::from_secs(60),
        || Ok((!answers(&l, &sa, &url)).then_some(())),
    )?;
    assert!(
        answers(&l, &sa, &format!("http://{web}/")),
        "emojivoto still reachable"
    );
    wait_for("kwg status drops default", Duration::from_secs(10), || {
        Ok((reachable(&l, &sa)? == ["emojivoto"]).then_some(()))
    })?;
    Ok(())
}

/// A process started in a namespace with `ip netns exec`; killed on drop.
struct Proc(Child);

impl Proc {
    fn start(netns: &str, argv: &[&str]) -> Result<Proc> {
        let mut args = vec!["netns", "exec", netns];
        args.extend_from_slice(argv);
        let child = Command::new("ip")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        Ok(Proc(child))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_node_address_in_the_pod_cidr_is_unreachable() -> Result<()> {
    let c = shared();
    let l = laptop(&c, "kubelet");
    l.join(&["--namespace", "emojivoto"]);
    // A stand-in for the kubelet on a flannel-style cni0 address of the node.
    let node = c.netns("node");
    let addr = "10.244.0.1";
    kwg_sim::sh::run(
        "ip",
        &[
            "-n",
            &node,
            "addr",
            "add",
            &format!("{addr}/32"),
            "dev",
            "lo",
        ],
    )?;
    struct Unaddr(String);
    impl Drop for Unaddr {
        fn drop(&mut self) {
            let _ = kwg_sim::sh::run(
                "ip",
                &["-n", &self.0, "addr", "del", "10.244.0.1/32", "dev", "lo"],
            );
        }
    }
    let _unaddr = Unaddr(node.clone());
    let _kubelet = Proc::start(
        &node,
        &[
            "python3",
            "-m",
            "http.server",
            "--bind",
            addr,
            "10250",
            "--directory",
            "/tmp",
        ],
    )?;
    let url = format!("http://{addr}:10250/");
    // Control: a pod reaches it.
    let pod = c.pod_netns("emojivoto", "web-app")?;
    wait_for("the listener from a pod", Duration::from_secs(10), || {
        Ok(
            kwg_sim::testing::exec(&pod, &["curl", "-sf", "--max-time", "1", &url])?
                .status
                .success()
                .then_some(()),
        )
    })?;
    let before = drops(&c, "kubelet")?;
    assert!(
        !l.curl(&url).status.success(),
        "the node's {addr} from a peer"
    );
    wait_for("the refusal counted", Duration::from_secs(3), || {
        Ok((drops(&c, "kubelet")? > before).then_some(()))
    })?;
    // The same peer reaches pods (its owner's group edits emojivoto).
    assert!(text(&l.curl("web-app:80").stdout).contains("Emoji Vote"));
    Ok(())
}

/// Packets toward peers the gateway dropped (rule `oifname "kwg0" counter drop`).
fn toward_peer_drops(c: &Cluster) -> Result<u64> {
    let table = c.exec_ok(&gateway_netns(c)?, &["nft", "list", "table", "inet", "kwg"])?;
    Ok(table
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("oifname \"kwg0\" counter packets"))
        .filter_map(|l| l.split(' ').nth(4)?.parse::<u64>().ok())
        .sum())
}

#[test]
fn a_pod_cannot_open_a_connection_to_a_laptop() -> Result<()> {
    let c = shared();
    let l = laptop(&c, "target");
    l.join(&["--namespace", "emojivoto"]);
    let ip = wait_tunnel_ip(&c, "target", Duration::from_secs(10))?.to_string();
    let _server = Proc::start(
        &l.netns,
        &[
            "python3",
            "-m",
            "http.server",
            "--bind",
            &ip,
            "8000",
            "--directory",
            "/tmp",
        ],
    )?;
    let url = format!("http://{ip}:8000/");
    wait_for("the laptop's listener", Duration::from_secs(10), || {
        Ok(l.run(&["curl", "-sf", "--max-time", "1", &url])
            .status
            .success()
            .then_some(()))
    })?;
    // The cluster routes the tunnel CIDR to the gateway pod (as a route a CNI or an admin
    // adds would), so the pod's packets do reach the gateway: only its firewall stops them.
    let node = c.netns("node");
    let gw_pod_ip = c.kubectl_admin(&[
        "-n",
        kwg_e2e::GATEWAY_NS,
        "get",
        "pods",
        "-l",
        "app.kubernetes.io/name=kwg-gateway",
        "-o",
        "jsonpath={.items[0].status.podIP}",
    ])?;
    let route = [
        "-n",
        &node,
        "route",
        "replace",
        "100.77.0.0/16",
        "via",
        gw_pod_ip.trim(),
    ];
    kwg_sim::sh::run("ip", &route)?;
    let pod = c.pod_netns("emojivoto", "web-app")?;
    let before = toward_peer_drops(&c)?;
    let out = kwg_sim::testing::exec(&pod, &["curl", "-sf", "--max-time", "2", &url])?;
    let after = toward_peer_drops(&c)?;
    let _ = kwg_sim::sh::run("ip", &["-n", &node, "route", "del", "100.77.0.0/16"]);
    assert!(!out.status.success(), "a pod reached the laptop");
    assert!(
        after > before,
        "the gateway did not drop it ({before} -> {after})"
    );
    // The laptop still reaches the pod (replies flow back through the gateway).
    assert!(text(&l.curl("web-app:80").stdout).contains("Emoji Vote"));
    Ok(())
}
