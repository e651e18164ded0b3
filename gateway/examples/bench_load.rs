//! Load driver for `scripts/bench-gateway.sh` (run inside the laptop namespace of a
//! `kwg-sim` cluster with the gateway installed; KUBECONFIG = an admin kubeconfig).
//!
//! `bench_load register N`: creates N peer Secrets (32 requests in flight) and waits until
//! the gateway has annotated all of them.
//! `bench_load latency IFNAME SAMPLES`: per sample, a new key on the WireGuard interface
//! IFNAME (wireguard-go, configured with `wg`), a new Secret, and the time from creating the
//! Secret to the gateway's annotation and to the first completed handshake.
//! `bench_load services N`: N Services, 10 per namespace `bench-svc-<i>` (reach by RBAC's
//! inventory: one namespace id per namespace, one element per ClusterIP).
//! `bench_load peer NAME OWNER IFNAME`: a new key on IFNAME, a peer Secret owned by OWNER;
//! prints `<tunnel IP> <gateway key> <gateway endpoint>` once the gateway addressed it.
//! `BENCH_OWNERS=K` spreads registered peers over K owners (default: one owner per peer);
//! `BENCH_GROUPS=G` puts owner i in group `bench-team-<i mod G>` (the peer Secret's
//! `kwg.io/groups`, as `kwg join` writes it; the admin who registers is exempt from the
//! admission policy).
//! `bench_load teams N G`: N namespaces `bench-ns-<i>`, each with one Service and a
//! RoleBinding of ClusterRole `view` to group `bench-team-<i mod G>` (a team's namespaces).

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ListParams, PostParams};
use kwg_contract::keys::PrivateKey;
use kwg_contract::{GatewayInfo, PeerSpec};
use std::process::Command;
use std::time::{Duration, Instant};

fn secret(spec: &PeerSpec) -> Secret {
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(spec.secret_name()),
            labels: Some(kwg_contract::peer_labels()),
            ..Default::default()
        },
        type_: Some(kwg_contract::PEER_SECRET_TYPE.into()),
        data: Some(
            spec.to_secret_data()
                .into_iter()
                .map(|(k, v)| (k, k8s_openapi::ByteString(v)))
                .collect(),
        ),
        ..Default::default()
    }
}

fn spec(name: &str, key: &PrivateKey) -> Result<PeerSpec> {
    spec_owned(name, name, key) // one owner per peer: the gateway caps peers per owner
}

fn spec_owned(name: &str, owner: &str, key: &PrivateKey) -> Result<PeerSpec> {
    Ok(PeerSpec {
        name: name.parse()?,
        public_key: key.public_key(),
        owner: owner.into(),
        hostname: name.into(),
        namespaces: vec![],
        lease_expires: chrono::Utc::now() + chrono::Duration::hours(2),
    })
}

/// Creates `obj`; one already there (an earlier run's) is kept.
async fn create_or_keep<K>(api: &Api<K>, obj: &K) -> Result<()>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned,
{
    match api.create(&PostParams::default(), obj).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.is_already_exists() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Runs `each` on every item, 32 at a time; the first error, if any, once all ended.
async fn in_flight<I, F, Fut>(items: I, each: F) -> Result<()>
where
    I: IntoIterator,
    F: FnMut(I::Item) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let results: Vec<Result<()>> = futures::stream::iter(items)
        .map(each)
        .buffer_unordered(32)
        .collect()
        .await;
    results.into_iter().collect()
}

/// A fresh private key on the WireGuard interface `ifname`, set with `wg set … private-key`
/// followed by `then` (more `wg set` arguments).
fn new_key_on(ifname: &str, then: &[&str]) -> Result<PrivateKey> {
    let key = PrivateKey::generate();
    let key_file = std::env::temp_dir().join(format!("bench-{ifname}.key"));
    kwg_contract::keys::write_private_key_file(&key_file, &key)?;
    let path = key_file.to_str().context("path")?;
    let set = sh(&[&["wg", "set", ifname, "private-key", path][..], then].concat());
    let _ = std::fs::remove_file(&key_file);
    set?;
    Ok(key)
}

async fn register(api: &Api<Secret>, n: usize) -> Result<()> {
    let start = Instant::now();
    let names: Vec<String> = (0..n).map(|i| format!("bench-{i}")).collect();
    let owners: Option<usize> = std::env::var("BENCH_OWNERS")
        .ok()
        .and_then(|v| v.parse().ok());
    let groups: Option<usize> = std::env::var("BENCH_GROUPS")
        .ok()
        .and_then(|v| v.parse().ok());
    in_flight(names.into_iter().enumerate(), |(i, name)| async move {
        let k = owners.unwrap_or(n).max(1);
        let owner = owners.map_or(name.clone(), |_| format!("bench-owner-{}", i % k));
        let mut s = secret(&spec_owned(&name, &owner, &PrivateKey::generate())?);
        if let Some(g) = groups {
            let team = format!("bench-team-{}", (i % k) % g.max(1));
            let groups = format!("{team}\nsystem:authenticated");
            s.metadata.annotations =
                Some([(kwg_contract::GROUPS_ANNOTATION.to_owned(), groups)].into());
        }
        create_or_keep(api, &s).await
    })
    .await?;
    let created = start.elapsed();
    loop {
        let list = api
            .list(&ListParams::default().labels(kwg_contract::PEER_SELECTOR))
            .await?;
        let annotated = list
            .items
            .iter()
            .filter(|s| {
                s.metadata
                    .annotations
                    .as_ref()
                    .is_some_and(|a| a.contains_key(kwg_contract::TUNNEL_IP_ANNOTATION))
            })
            .count();
        if annotated >= list.items.len() && list.items.len() >= n {
            println!(
                "registered {n} peers: Secrets created in {:.1} s, all {} addressed after {:.1} s",
                created.as_secs_f64(),
                list.items.len(),
                start.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(600) {
            bail!(
                "only {annotated} of {} peers addressed after 10 minutes",
                list.items.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn sh(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0]).args(&args[1..]).output()?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn latency(
    client: kube::Client,
    api: &Api<Secret>,
    ifname: &str,
    samples: usize,
) -> Result<()> {
    let info = gateway_info(client).await?;
    let endpoint = info.endpoints.first().context("no endpoint")?.to_string();
    let gw = info.public_key.to_string();
    let (mut to_ip, mut to_hs) = (Vec::new(), Vec::new());
    for i in 0..samples {
        // A fresh interface identity: the gateway has never seen this key.
        let key = new_key_on(ifname, &["peer", &gw, "remove"])?;
        let name = format!("latency-{}-{i}", std::process::id());
        let start = Instant::now();
        api.create(&PostParams::default(), &secret(&spec(&name, &key)?))
            .await?;
        loop {
            let s = api
                .get(&format!("{}{name}", kwg_contract::PEER_SECRET_PREFIX))
                .await?;
            if s.metadata
                .annotations
                .is_some_and(|a| a.contains_key(kwg_contract::TUNNEL_IP_ANNOTATION))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        to_ip.push(start.elapsed());
        // What a client does once it has its address: configure the gateway as its peer.
        sh(&[
            "wg",
            "set",
            ifname,
            "peer",
            &gw,
            "endpoint",
            &endpoint,
            "allowed-ips",
            "100.77.0.1/32",
            "persistent-keepalive",
            "1",
        ])?;
        loop {
            let hs = sh(&["wg", "show", ifname, "latest-handshakes"])?;
            if hs.split_whitespace().nth(1).is_some_and(|t| t != "0") {
                break;
            }
            if start.elapsed() > Duration::from_secs(30) {
                bail!("no handshake 30 s after registering {name}");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        to_hs.push(start.elapsed());
    }
    let ms = |v: &mut Vec<Duration>| {
        v.sort();
        (
            v[v.len() / 2].as_secs_f64() * 1e3,
            v[v.len() - 1].as_secs_f64() * 1e3,
        )
    };
    let (ip_med, ip_max) = ms(&mut to_ip);
    let (hs_med, hs_max) = ms(&mut to_hs);
    println!(
        "Secret -> tunnel IP annotation: median {ip_med:.0} ms, max {ip_max:.0} ms ({samples} samples)"
    );
    println!(
        "Secret -> first handshake:      median {hs_med:.0} ms, max {hs_max:.0} ms ({samples} samples)"
    );
    Ok(())
}

/// `services N`: namespaces `bench-svc-<i>` with 10 Services each.
async fn services(client: kube::Client, n: usize) -> Result<()> {
    use k8s_openapi::api::core::v1::{Namespace, Service};
    let start = Instant::now();
    let namespaces = n.div_ceil(10);
    let nss: Api<Namespace> = Api::all(client.clone());
    for i in 0..namespaces {
        let ns: Namespace = serde_json::from_value(
            serde_json::json!({"metadata": {"name": format!("bench-svc-{i}")}}),
        )?;
        create_or_keep(&nss, &ns).await?;
    }
    in_flight(0..n, |i| {
        let client = client.clone();
        async move {
            let api: Api<Service> = Api::namespaced(client, &format!("bench-svc-{}", i / 10));
            let svc: Service = serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("svc-{i}")},
                "spec": {"ports": [{"port": 80}], "selector": {"app": format!("none-{i}")}}
            }))?;
            create_or_keep(&api, &svc).await
        }
    })
    .await?;
    println!(
        "created {n} Services in {namespaces} namespaces in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `teams N G`: namespaces `bench-ns-<i>` with one Service each and a RoleBinding of `view` to
/// group `bench-team-<i mod G>`.
async fn teams(client: kube::Client, n: usize, g: usize) -> Result<()> {
    use k8s_openapi::api::core::v1::{Namespace, Service};
    use k8s_openapi::api::rbac::v1::RoleBinding;
    let start = Instant::now();
    let nss: Api<Namespace> = Api::all(client.clone());
    in_flight(0..n, |i| {
        let (client, nss) = (client.clone(), nss.clone());
        async move {
            let ns = format!("bench-ns-{i}");
            let obj = serde_json::json!({"metadata": {"name": ns}});
            create_or_keep(&nss, &serde_json::from_value::<Namespace>(obj)?).await?;
            let svc = serde_json::json!({"metadata": {"name": "svc"},
                "spec": {"ports": [{"port": 80}], "selector": {"app": "none"}}});
            let svcs: Api<Service> = Api::namespaced(client.clone(), &ns);
            create_or_keep(&svcs, &serde_json::from_value::<Service>(svc)?).await?;
            let rb = serde_json::json!({"metadata": {"name": "team-view"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group",
                              "name": format!("bench-team-{}", i % g.max(1))}]});
            let rbs: Api<RoleBinding> = Api::namespaced(client, &ns);
            create_or_keep(&rbs, &serde_json::from_value::<RoleBinding>(rb)?).await
        }
    })
    .await?;
    println!(
        "created {n} namespaces with a Service and a team's RoleBinding each ({g} teams) in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `peer NAME OWNER IFNAME`: a fresh key on IFNAME and its peer Secret; prints the tunnel IP,
/// the gateway's key and endpoint.
async fn peer(client: kube::Client, api: &Api<Secret>, args: &[String]) -> Result<()> {
    let [name, owner, ifname] = args else {
        bail!("usage: bench_load peer NAME OWNER IFNAME");
    };
    let info = gateway_info(client).await?;
    let key = new_key_on(ifname, &[])?;
    api.create(
        &PostParams::default(),
        &secret(&spec_owned(name, owner, &key)?),
    )
    .await?;
    let start = Instant::now();
    loop {
        let s = api
            .get(&format!("{}{name}", kwg_contract::PEER_SECRET_PREFIX))
            .await?;
        if let Some(Ok(ip)) =
            kwg_contract::tunnel_ip_from_annotations(&s.metadata.annotations.unwrap_or_default())
        {
            let ep = info.endpoints.first().context("no endpoint")?;
            println!("{ip} {} {ep}", info.public_key);
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(30) {
            bail!("{name} not addressed after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn gateway_info(client: kube::Client) -> Result<GatewayInfo> {
    let cms: Api<ConfigMap> = Api::namespaced(client, kwg_contract::DEFAULT_NAMESPACE);
    let cm = cms.get(kwg_contract::GATEWAY_INFO_CONFIGMAP).await?;
    let json = cm
        .data
        .and_then(|d| d.get(kwg_contract::GATEWAY_INFO_KEY).cloned())
        .context("no gateway info")?;
    Ok(GatewayInfo::from_json(json.as_bytes())?)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let client = kube::Client::try_default().await?;
    let api: Api<Secret> = Api::namespaced(client.clone(), kwg_contract::DEFAULT_NAMESPACE);
    match args.get(1).map(String::as_str) {
        Some("register") => register(&api, args.get(2).context("register N")?.parse()?).await,
        Some("latency") => {
            let ifname = args.get(2).context("latency IFNAME SAMPLES")?;
            latency(
                client,
                &api,
                ifname,
                args.get(3).map_or(Ok(10), |s| s.parse())?,
            )
            .await
        }
        Some("services") => services(client, args.get(2).context("services N")?.parse()?).await,
        Some("peer") => peer(client, &api, &args[2..]).await,
        Some("teams") => {
            let n = args.get(2).context("teams N G")?.parse()?;
            teams(client, n, args.get(3).context("teams N G")?.parse()?).await
        }
        _ => bail!(
            "usage: bench_load register N | latency IFNAME SAMPLES | services N | peer NAME OWNER IFNAME | teams N G"
        ),
    }
}
