//! The cluster DNS and the LAN resolver, served on loopback in-process and asked with the real
//! `dig`, the way a user in a pod (or on the laptop) would.

use std::{
    net::{Ipv4Addr, SocketAddr},
    time::Duration,
};

use k8s_openapi::api::{
    core::v1::{Namespace, Service},
    discovery::v1::EndpointSlice,
    rbac::v1::{ClusterRole, ClusterRoleBinding},
};
use kube::api::{Api, DeleteParams, PostParams};
use kwg_apiserver::{ApiServer, Config};
use kwg_sim::dns::{
    cluster::{self, ClusterDnsConfig},
    lan::{self, LanDnsConfig},
};
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::{
    net::{TcpListener, UdpSocket},
    task::JoinHandle,
};

/// A server task, stopped when the test ends.
struct Running(SocketAddr, JoinHandle<()>);

impl Drop for Running {
    fn drop(&mut self) {
        self.1.abort();
    }
}

/// A UDP socket and a TCP listener on the same free loopback port (as `dig -p` needs).
async fn sockets() -> (UdpSocket, TcpListener, SocketAddr) {
    for _ in 0..20 {
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = udp.local_addr().unwrap();
        if let Ok(tcp) = TcpListener::bind(addr).await {
            return (udp, tcp, addr);
        }
    }
    panic!("no loopback port free for both UDP and TCP");
}

async fn start_lan() -> Running {
    let (udp, tcp, addr) = sockets().await;
    let cfg = LanDnsConfig {
        zone: "corp.example".into(),
        records: vec![("intranet".into(), Ipv4Addr::new(192, 0, 2, 80))],
    };
    let task = tokio::spawn(async move {
        lan::serve(udp, tcp, cfg).await.expect("LAN DNS serves");
    });
    Running(addr, task)
}

/// The API server stand-in, the LAN resolver and the cluster DNS forwarding to it.
struct Setup {
    dns: Running,
    _lan: Running,
    client: kube::Client,
    _api: ApiServer,
    _dir: tempfile::TempDir,
}

impl Setup {
    async fn start() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let cfg = Config {
            service_cidr: "10.96.0.0/12".parse().unwrap(),
            service_cidr_secondary: None,
            cert_sans: vec!["127.0.0.1".into()],
            state_dir: dir.path().join("state"),
        };
        let api = ApiServer::serve(cfg, listener)
            .await
            .expect("API server starts");
        let client = user_client(&api, &url, "admin", &["system:masters"]).await;
        // The DNS server runs with only the access the module documents.
        let dns_client = user_client(&api, &url, "dns", &[]).await;
        grant_dns_access(&client, "dns").await;

        let lan = start_lan().await;
        let (udp, tcp, addr) = sockets().await;
        let cfg = ClusterDnsConfig {
            domain: "cluster.local".into(),
            upstream: lan.0,
        };
        let task = tokio::spawn(async move {
            cluster::serve(dns_client, udp, tcp, cfg)
                .await
                .expect("cluster DNS serves");
        });
        Setup {
            dns: Running(addr, task),
            _lan: lan,
            client,
            _api: api,
            _dir: dir,
        }
    }

    async fn create<K>(&self, obj: serde_json::Value) -> K
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let obj: K = serde_json::from_value(obj).unwrap();
        let ns = obj.meta().namespace.clone().unwrap();
        Api::<K>::namespaced(self.client.clone(), &ns)
            .create(&PostParams::default(), &obj)
            .await
            .expect("create object")
    }

    async fn namespace(&self, name: &str) {
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("create namespace");
    }

    async fn service(&self, ns: &str, name: &str, spec: serde_json::Value) -> Service {
        self.create(json!({"metadata": {"namespace": ns, "name": name}, "spec": spec}))
            .await
    }

    /// An EndpointSlice of `svc` with ready pods `ips` (hostnames `<svc>-<i>` when `named`).
    async fn endpoints(&self, ns: &str, svc: &str, ips: &[String], named: bool) {
        let endpoints: Vec<_> = ips
            .iter()
            .enumerate()
            .map(|(i, ip)| {
                let host = named.then(|| format!("{svc}-{i}"));
                json!({"addresses": [ip], "hostname": host, "conditions": {"ready": true}})
            })
            .collect();
        let _: EndpointSlice = self
            .create(json!({
                "metadata": {"namespace": ns, "name": format!("{svc}-1"),
                             "labels": {"kubernetes.io/service-name": svc}},
                "addressType": "IPv4",
                "endpoints": endpoints,
                "ports": [{"name": "peer", "protocol": "TCP", "port": 7000}],
            }))
            .await;
    }

    async fn dig(&self, args: &[&str]) -> Dig {
        dig(self.dns.0, args).await
    }
}

async fn user_client(api: &ApiServer, url: &str, user: &str, groups: &[&str]) -> kube::Client {
    let token = api.add_user(user, groups);
    let kubeconfig = api.kubeconfig(url, user, &token, "default");
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

/// get/list/watch on services and endpointslices, cluster-wide: what `cluster::serve` needs.
async fn grant_dns_access(admin: &kube::Client, user: &str) {
    let role: ClusterRole = serde_json::from_value(json!({
        "metadata": {"name": "kwg-test-dns"},
        "rules": [
            {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]},
        ],
    }))
    .unwrap();
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "kwg-test-dns"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "kwg-test-dns"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }))
    .unwrap();
    let pp = PostParams::default();
    Api::<ClusterRole>::all(admin.clone())
        .create(&pp, &role)
        .await
        .expect("create ClusterRole");
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(&pp, &binding)
        .await
        .expect("create ClusterRoleBinding");
}

/// What `dig` printed, split into what a user reads.
#[derive(Debug)]
struct Dig {
    status: String,
    flags: Vec<String>,
    answer: Vec<String>,
    authority: Vec<String>,
    additional: Vec<String>,
}

impl Dig {
    /// The data of each answer record (`10.96.0.20`, `0 100 80 web-app…`).
    fn data(&self) -> Vec<String> {
        self.answer
            .iter()
            .map(|line| line.splitn(5, ' ').nth(4).unwrap_or_default().to_owned())
            .collect()
    }
}

async fn dig(server: SocketAddr, args: &[&str]) -> Dig {
    let out = tokio::process::Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string()])
        .args(["+tries=1", "+time=3", "+nocmd", "+noall", "+comments"])
        .args(["+answer", "+authority", "+additional", "+nostats"])
        .args(args)
        .output()
        .await
        .expect("dig runs (install dnsutils)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut dig = Dig {
        status: String::new(),
        flags: Vec::new(),
        answer: Vec::new(),
        authority: Vec::new(),
        additional: Vec::new(),
    };
    let mut section = "";
    for line in text.lines() {
        if let Some((_, rest)) = line.split_once("status: ") {
            dig.status = rest.split(',').next().unwrap_or_default().to_owned();
        } else if let Some(rest) = line.strip_prefix(";; flags: ") {
            let flags = rest.split(';').next().unwrap_or_default();
            dig.flags = flags.split_whitespace().map(str::to_owned).collect();
        } else if let Some(name) = line
            .strip_prefix(";; ")
            .and_then(|l| l.strip_suffix(" SECTION:"))
        {
            section = if name == "OPT PSEUDO" { "" } else { name };
        } else if !line.is_empty() && !line.starts_with(';') {
            let record = line.split_whitespace().collect::<Vec<_>>().join(" ");
            match section {
                "ANSWER" => dig.answer.push(record),
                "AUTHORITY" => dig.authority.push(record),
                "ADDITIONAL" => dig.additional.push(record),
                _ => {}
            }
        }
    }
    assert!(
        !dig.status.is_empty(),
        "dig got no reply: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dig
}

fn cluster_ip(svc: &Service) -> String {
    svc.spec
        .as_ref()
        .and_then(|s| s.cluster_ip.clone())
        .expect("ClusterIP allocated")
}

fn assert_soa_only(reply: &Dig) {
    assert!(reply.answer.is_empty(), "{reply:?}");
    assert_eq!(reply.authority.len(), 1, "{reply:?}");
    assert!(
        reply.authority[0].starts_with("cluster.local. 5 IN SOA ns.dns.cluster.local."),
        "{reply:?}"
    );
}

#[tokio::test]
async fn lan_resolver_answers_its_zone_and_refuses_the_rest() {
    let lan = start_lan().await;
    for transport in ["+notcp", "+tcp"] {
        let a = dig(lan.0, &["intranet.corp.example", "A", transport]).await;
        assert_eq!(a.status, "NOERROR");
        assert!(a.flags.contains(&"aa".to_owned()), "{a:?}");
        assert_eq!(a.answer, ["intranet.corp.example. 60 IN A 192.0.2.80"]);
    }
    let missing = dig(lan.0, &["nope.corp.example", "A"]).await;
    assert_eq!(missing.status, "NXDOMAIN");
    assert!(
        missing.authority[0].starts_with("corp.example. 60 IN SOA"),
        "{missing:?}"
    );
    assert_eq!(dig(lan.0, &["example.com", "A"]).await.status, "REFUSED");
}

#[tokio::test]
async fn cluster_dns_answers_services_pods_and_reverse_names() {
    let s = Setup::start().await;
    s.namespace("emojivoto").await;
    s.namespace("data").await;
    let web = s
        .service(
            "emojivoto",
            "web-app",
            json!({"ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}),
        )
        .await;
    let web_ip = cluster_ip(&web);
    s.service(
        "data",
        "db",
        json!({"clusterIP": "None", "ports": [{"name": "peer", "port": 7000}]}),
    )
    .await;
    s.endpoints(
        "data",
        "db",
        &["10.244.0.7".into(), "10.244.0.8".into()],
        true,
    )
    .await;
    wait_for(&s, "db.data.svc.cluster.local", |d| d.answer.len() == 2).await;

    for transport in ["+notcp", "+tcp"] {
        let a = s
            .dig(&["web-app.emojivoto.svc.cluster.local", "A", transport])
            .await;
        assert_eq!(a.status, "NOERROR");
        assert!(a.flags.contains(&"aa".to_owned()), "{a:?}");
        assert_eq!(
            a.answer,
            [format!(
                "web-app.emojivoto.svc.cluster.local. 5 IN A {web_ip}"
            )]
        );
    }

    let srv = s
        .dig(&["_http._tcp.web-app.emojivoto.svc.cluster.local", "SRV"])
        .await;
    assert_eq!(
        srv.data(),
        ["0 100 80 web-app.emojivoto.svc.cluster.local."]
    );
    assert!(
        srv.additional.contains(&format!(
            "web-app.emojivoto.svc.cluster.local. 5 IN A {web_ip}"
        )),
        "{srv:?}"
    );

    let ptr = s.dig(&["-x", "10.96.0.1"]).await;
    assert_eq!(ptr.data(), ["kubernetes.default.svc.cluster.local."]);
    let ptr = s.dig(&["-x", &web_ip]).await;
    assert_eq!(ptr.data(), ["web-app.emojivoto.svc.cluster.local."]);

    let headless = s.dig(&["db.data.svc.cluster.local", "A"]).await;
    assert_eq!(headless.data(), ["10.244.0.7", "10.244.0.8"]);
    let pod = s.dig(&["db-1.db.data.svc.cluster.local", "A"]).await;
    assert_eq!(pod.data(), ["10.244.0.8"]);
    let srv = s
        .dig(&["_peer._tcp.db.data.svc.cluster.local", "SRV"])
        .await;
    assert_eq!(
        srv.data(),
        [
            "0 50 7000 db-0.db.data.svc.cluster.local.",
            "0 50 7000 db-1.db.data.svc.cluster.local."
        ]
    );
    let ptr = s.dig(&["-x", "10.244.0.7"]).await;
    assert_eq!(ptr.data(), ["db-0.db.data.svc.cluster.local."]);

    let pod = s
        .dig(&["10-244-0-5.emojivoto.pod.cluster.local", "A"])
        .await;
    assert_eq!(pod.data(), ["10.244.0.5"]);

    // ExternalName: the CNAME and, followed upstream, the target's address (stub resolvers
    // do not chase CNAMEs themselves).
    s.service(
        "data",
        "intranet",
        json!({"type": "ExternalName", "externalName": "intranet.corp.example"}),
    )
    .await;
    let ext = wait_for(&s, "intranet.data.svc.cluster.local", |d| {
        d.status == "NOERROR"
    })
    .await;
    assert_eq!(
        ext.answer,
        [
            "intranet.data.svc.cluster.local. 5 IN CNAME intranet.corp.example.",
            "intranet.corp.example. 60 IN A 192.0.2.80",
        ]
    );
    // An ExternalName pointing into the cluster is followed in the cluster.
    s.service(
        "data",
        "alias",
        json!({"type": "ExternalName", "externalName": "db.data.svc.cluster.local"}),
    )
    .await;
    let alias = wait_for(&s, "alias.data.svc.cluster.local", |d| {
        d.status == "NOERROR"
    })
    .await;
    assert_eq!(
        alias.data(),
        ["db.data.svc.cluster.local.", "10.244.0.7", "10.244.0.8"]
    );
}

#[tokio::test]
async fn cluster_dns_negative_answers_carry_the_soa() {
    let s = Setup::start().await;
    s.namespace("emojivoto").await;
    s.service(
        "emojivoto",
        "web-app",
        json!({"ports": [{"name": "http", "port": 80}]}),
    )
    .await;
    wait_for(&s, "web-app.emojivoto.svc.cluster.local", |d| {
        d.status == "NOERROR"
    })
    .await;

    for name in [
        "nope.emojivoto.svc.cluster.local",
        "web-app.nosuchns.svc.cluster.local",
        "example.com.emojivoto.svc.cluster.local",
    ] {
        let reply = s.dig(&[name, "A"]).await;
        assert_eq!(reply.status, "NXDOMAIN", "{name}: {reply:?}");
        assert_soa_only(&reply);
    }
    let aaaa = s
        .dig(&["web-app.emojivoto.svc.cluster.local", "AAAA"])
        .await;
    assert_eq!(aaaa.status, "NOERROR");
    assert_soa_only(&aaaa);
}

#[tokio::test]
async fn cluster_dns_forwards_other_names_to_the_lan_resolver() {
    let s = Setup::start().await;
    for transport in ["+notcp", "+tcp"] {
        let a = s.dig(&["intranet.corp.example", "A", transport]).await;
        assert_eq!(a.status, "NOERROR", "{a:?}");
        assert!(a.flags.contains(&"ra".to_owned()), "{a:?}");
        assert_eq!(a.answer, ["intranet.corp.example. 60 IN A 192.0.2.80"]);
    }
    let missing = s.dig(&["nope.corp.example", "A"]).await;
    assert_eq!(missing.status, "NXDOMAIN");
    assert!(
        missing.authority[0].starts_with("corp.example. 60 IN SOA"),
        "{missing:?}"
    );
    // The LAN resolver refuses what it does not serve; the refusal comes through.
    assert_eq!(s.dig(&["example.com", "A"]).await.status, "REFUSED");
    // Reverse names the cluster does not own go upstream too.
    assert_eq!(s.dig(&["-x", "192.0.2.80"]).await.status, "REFUSED");
}

#[tokio::test]
async fn cluster_dns_follows_services_created_and_deleted_after_start() {
    let s = Setup::start().await;
    let name = "late.default.svc.cluster.local";
    assert_eq!(s.dig(&[name, "A"]).await.status, "NXDOMAIN");

    let late = s
        .service("default", "late", json!({"ports": [{"port": 8080}]}))
        .await;
    let ip = cluster_ip(&late);
    let seen = wait_for(&s, name, |d| d.data() == [ip.clone()]).await;
    assert_eq!(seen.answer, [format!("{name}. 5 IN A {ip}")]);

    Api::<Service>::namespaced(s.client.clone(), "default")
        .delete("late", &DeleteParams::default())
        .await
        .unwrap();
    let gone = wait_for(&s, name, |d| d.status == "NXDOMAIN").await;
    assert_soa_only(&gone);
}

/// Asks until `done` holds (bounded: 50 tries, 100 ms apart), returning the last reply.
async fn wait_for(s: &Setup, name: &str, done: impl Fn(&Dig) -> bool) -> Dig {
    let mut reply = s.dig(&[name, "A"]).await;
    for _ in 0..50 {
        if done(&reply) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        reply = s.dig(&[name, "A"]).await;
    }
    reply
}

#[tokio::test]
async fn big_answers_truncate_on_udp_and_come_whole_over_tcp() {
    let s = Setup::start().await;
    s.namespace("big").await;
    s.service(
        "big",
        "many",
        json!({"clusterIP": "None", "ports": [{"name": "peer", "port": 7000}]}),
    )
    .await;
    let ips: Vec<String> = (1..=60).map(|i| format!("10.244.1.{i}")).collect();
    s.endpoints("big", "many", &ips, false).await;
    let name = "many.big.svc.cluster.local";
    let all = wait_for(&s, name, |d| d.answer.len() == 60).await;
    assert_eq!(
        all.answer.len(),
        60,
        "dig retried over TCP after TC: {all:?}"
    );

    // Without EDNS a UDP reply is limited to 512 bytes (RFC 1035): TC set, answer cut.
    let udp = s.dig(&[name, "A", "+noedns", "+ignore"]).await;
    assert!(udp.flags.contains(&"tc".to_owned()), "{udp:?}");
    assert!(udp.answer.len() < 60, "{udp:?}");

    let tcp = s.dig(&[name, "A", "+tcp"]).await;
    assert!(!tcp.flags.contains(&"tc".to_owned()), "{tcp:?}");
    let mut got = tcp.data();
    got.sort();
    let mut want = ips.clone();
    want.sort();
    assert_eq!(got, want);
}
