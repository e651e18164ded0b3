//! The kubelet role (plus the ReplicaSet controller and garbage collector it needs): Deployments
//! become Pod objects, Pod objects become processes in pod namespaces.

pub mod plan;
pub mod rollout;
pub mod runtime;

use crate::names::{self, Names};
use crate::topology::PodNet;
use crate::watch::{snapshot, store};
use crate::{Error, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use runtime::{Ctr, RunningPod};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Mints a ServiceAccount token: `(namespace, name) -> token`.
pub type TokenFn = Arc<dyn Fn(&str, &str) -> Result<String> + Send + Sync>;

/// What the kubelet needs from the daemon.
pub struct Config {
    pub names: Names,
    /// The cluster's addresses: pod IPs, the node's, the `kubernetes` Service's, cluster DNS.
    pub net: crate::net::ClusterNet,
    pub ca_pem: String,
    pub token: TokenFn,
    /// The `kwg-sim` executable (for `pod-exec`).
    pub exe: PathBuf,
}

type Key = (String, String);

struct Kubelet {
    cfg: Config,
    client: Client,
    pods: BTreeMap<Key, RunningPod>,
    /// Pods created but not yet seen in the watch cache: name -> (owner uid, when).
    expected: BTreeMap<Key, (String, Instant)>,
    /// Pods deleted but maybe still in the watch cache: not counted by the rollout.
    deleted: BTreeMap<Key, Instant>,
    /// Addresses of pods still shutting down (not to be reused yet).
    stopping: Arc<Mutex<BTreeSet<Ipv4Addr>>>,
}

/// Longest grace period honoured (a Pod's `terminationGracePeriodSeconds` defaults to 30).
const MAX_GRACE: Duration = Duration::from_secs(10);

/// SIGTERM, the grace period, SIGKILL; then the pod's network and files go.
async fn stop_pod(mut rp: RunningPod, names: Names, stopping: Arc<Mutex<BTreeSet<Ipv4Addr>>>) {
    let grace = rp.grace;
    futures::future::join_all(rp.containers.iter_mut().map(|c| c.stop(grace))).await;
    let net = rp.net.clone();
    let _ = tokio::task::spawn_blocking(move || net.delete(&names)).await;
    let _ = std::fs::remove_dir_all(&rp.dir);
    stopping
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&rp.net.ip);
    tracing::info!(ns = %rp.net.ns, "pod stopped");
}

fn key(p: &Pod) -> Key {
    (p.namespace().unwrap_or_default(), p.name_any())
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Writes `status` with the status subresource, or a plain merge patch where there is none.
pub async fn patch_status<K>(api: &Api<K>, name: &str, status: Value) -> Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let body = Patch::Merge(serde_json::json!({ "status": status }));
    match api.patch_status(name, &PatchParams::default(), &body).await {
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 405 => {
            api.patch(name, &PatchParams::default(), &body).await?;
            Ok(())
        }
        r => r.map(|_| ()).map_err(Error::from),
    }
}

/// Runs the kubelet forever; the calling process must be in the node namespace.
pub async fn run(client: Client, cfg: Config) -> Result<()> {
    let wake = Arc::new(Notify::new());
    let deploys = store::<Deployment>(client.clone(), wake.clone()).await;
    let pods = store::<Pod>(client.clone(), wake.clone()).await;
    let mut k = Kubelet {
        cfg,
        client,
        pods: BTreeMap::new(),
        expected: BTreeMap::new(),
        deleted: BTreeMap::new(),
        stopping: Arc::default(),
    };
    loop {
        let (d, p) = (snapshot(&deploys), snapshot(&pods));
        if let Err(e) = k.tick(&d, &p).await {
            tracing::warn!(error = %e, "kubelet: will retry");
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}

impl Kubelet {
    async fn tick(&mut self, deploys: &[Deployment], pods: &[Pod]) -> Result<()> {
        self.replicasets(deploys, pods).await?;
        self.sync_pods(pods).await?;
        self.supervise(pods).await?;
        for d in deploys {
            let owned: Vec<&Pod> = pods.iter().filter(|p| plan::owned_by(p, d)).collect();
            if let Some(status) = plan::deployment_status(d, &owned, &now_rfc3339()) {
                let api: Api<Deployment> =
                    Api::namespaced(self.client.clone(), &d.namespace().unwrap_or_default());
                patch_status(&api, &d.name_any(), status).await?;
            }
        }
        Ok(())
    }

    /// The ReplicaSet controller and garbage collector: Pod objects for each Deployment.
    async fn replicasets(&mut self, deploys: &[Deployment], pods: &[Pod]) -> Result<()> {
        let seen: BTreeSet<Key> = pods.iter().map(key).collect();
        self.expected
            .retain(|k, (_, at)| !seen.contains(k) && at.elapsed() < Duration::from_secs(5));
        self.deleted
            .retain(|k, at| seen.contains(k) && at.elapsed() < Duration::from_secs(5));
        for d in deploys {
            let ns = d.namespace().unwrap_or_default();
            let owned: Vec<&Pod> = pods
                .iter()
                .filter(|p| plan::owned_by(p, d) && !self.deleted.contains_key(&key(p)))
                .collect();
            let uid = d.uid().unwrap_or_default();
            let pending = self.expected.values().filter(|(u, _)| *u == uid).count();
            let rp = rollout::replica_plan(d, &owned, pending);
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
            for name in &rp.delete {
                tracing::info!(pod = %name, deployment = %d.name_any(), "deleting pod (rollout or scale-down)");
                ignore_not_found(api.delete(name, &DeleteParams::default()).await.map(|_| ()))?;
                self.deleted
                    .insert((ns.clone(), name.clone()), Instant::now());
            }
            for _ in 0..rp.create {
                let suffix: String = (0..5)
                    .map(|_| b"bcdfghjklmnpqrstvwxz2456789"[rand::random_range(0..27)] as char)
                    .collect();
                let Some(pod) = plan::new_pod(d, &suffix, names::NODE_NAME) else {
                    continue;
                };
                let created = api.create(&PostParams::default(), &pod).await?;
                tracing::info!(pod = %created.name_any(), deployment = %d.name_any(), "created pod");
                self.expected
                    .insert(key(&created), (uid.clone(), Instant::now()));
            }
        }
        // Pods whose owning Deployment is gone.
        let uids: BTreeSet<String> = deploys.iter().filter_map(|d| d.uid()).collect();
        for p in pods {
            let orphan = p
                .owner_references()
                .iter()
                .any(|o| o.kind == "Deployment" && !uids.contains(&o.uid));
            if orphan {
                let api: Api<Pod> =
                    Api::namespaced(self.client.clone(), &p.namespace().unwrap_or_default());
                ignore_not_found(
                    api.delete(&p.name_any(), &DeleteParams::default())
                        .await
                        .map(|_| ()),
                )?;
            }
        }
        Ok(())
    }

    /// Starts processes for new Pod objects and stops those whose Pod is gone.
    async fn sync_pods(&mut self, pods: &[Pod]) -> Result<()> {
        let wanted: BTreeMap<Key, &Pod> = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| {
                p.spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_deref())
                    .is_none_or(|n| n == names::NODE_NAME)
            })
            .map(|p| (key(p), p))
            .collect();
        let stale: Vec<Key> = self
            .pods
            .iter()
            .filter(|(k, rp)| {
                wanted
                    .get(*k)
                    .is_none_or(|p| p.uid().as_deref() != Some(rp.uid.as_str()))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            if let Some(rp) = self.pods.remove(&k) {
                tracing::info!(pod = %k.1, namespace = %k.0, "stopping pod");
                self.stopping
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(rp.net.ip);
                tokio::spawn(stop_pod(rp, self.cfg.names.clone(), self.stopping.clone()));
            }
        }
        for (k, pod) in wanted {
            if !self.pods.contains_key(&k) {
                match self.start_pod(pod).await {
                    Ok(rp) => {
                        self.pods.insert(k, rp);
                    }
                    Err(e) => {
                        tracing::error!(pod = %k.1, namespace = %k.0, error = %e, "cannot start pod")
                    }
                }
            }
        }
        Ok(())
    }

    async fn start_pod(&mut self, pod: &Pod) -> Result<RunningPod> {
        let (ns, name) = key(pod);
        let mut used: BTreeSet<_> = self.pods.values().map(|p| p.net.ip).collect();
        used.extend(
            self.stopping
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .copied(),
        );
        let ip = plan::allocate_ip(self.cfg.net.pod_ips(), &used).ok_or_else(|| {
            Error::Invalid(format!("pod CIDR {} is full", self.cfg.net.node_pod_cidr()))
        })?;
        let mut net = PodNet::new(&self.cfg.names, &ns, &name, ip);
        net.ip6 = self.cfg.net.pod_ip6_of(ip);
        net.ipv4 = !self.cfg.net.ipv6_only();
        let dir = self.cfg.names.pods_dir().join(format!("{ns}_{name}"));
        let sa_name = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into());
        let token = (self.cfg.token)(&ns, &sa_name)?;
        let sa = dir.join("sa");
        crate::sh::write_file(&sa.join("token"), &token)?;
        crate::sh::write_file(&sa.join("ca.crt"), &self.cfg.ca_pem)?;
        crate::sh::write_file(&sa.join("namespace"), &ns)?;
        let (names, net2, ns2) = (self.cfg.names.clone(), net.clone(), ns.clone());
        let cluster_net = self.cfg.net.clone();
        tokio::task::spawn_blocking(move || net2.create(&names, &ns2, &cluster_net))
            .await
            .map_err(|e| Error::Invalid(format!("pod network task: {e}")))??;
        let mut containers = Vec::new();
        for c in pod
            .spec
            .as_ref()
            .map(|s| s.containers.as_slice())
            .unwrap_or_default()
        {
            containers.push(Ctr {
                name: c.name.clone(),
                image: c.image.clone().unwrap_or_default(),
                argv: plan::argv(c, |b| crate::bin_path(b).to_string_lossy().into_owned()),
                env: self.env(pod, c, net.primary()).await,
                probe: plan::readiness_http(c),
                child: None,
                restarts: 0,
                next_start: Some(Instant::now()),
                ready: false,
                started_at: None,
                waiting: None,
            });
        }
        tracing::info!(pod = %name, namespace = %ns, ip = %net.primary(), "pod network ready");
        let grace = pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(30);
        Ok(RunningPod {
            grace: Duration::from_secs(grace.max(0) as u64).min(MAX_GRACE),
            uid: pod.uid().unwrap_or_default(),
            net,
            dir,
            containers,
            started: now_rfc3339(),
            reported: None,
        })
    }

    /// A container's environment as a kubelet builds it.
    async fn env(
        &self,
        pod: &Pod,
        c: &k8s_openapi::api::core::v1::Container,
        ip: std::net::IpAddr,
    ) -> Vec<(String, String)> {
        let ns = pod.namespace().unwrap_or_default();
        let mut env: Vec<(String, String)> = vec![
            (
                "PATH".into(),
                std::env::var("PATH").unwrap_or_else(|_| {
                    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
                }),
            ),
            ("HOME".into(), "/root".into()),
            ("HOSTNAME".into(), pod.name_any()),
            (
                "KUBERNETES_SERVICE_HOST".into(),
                self.cfg.net.kubernetes_svc_addr().to_string(),
            ),
            ("KUBERNETES_SERVICE_PORT".into(), "443".into()),
            (
                "KWG_BIN_DIR".into(),
                crate::bin_dir().to_string_lossy().into_owned(),
            ),
        ];
        if let Ok(v) = std::env::var("KWG_LOG") {
            env.push(("KWG_LOG".into(), v));
        }
        for e in c.env.iter().flatten() {
            let value = match (&e.value, &e.value_from) {
                (Some(v), _) => Some(v.clone()),
                (None, Some(from)) => {
                    if let Some(f) = &from.field_ref {
                        plan::field_ref(pod, &f.field_path, ip, self.cfg.net.node_addr())
                    } else if let Some(s) = &from.secret_key_ref {
                        let api: Api<Secret> = Api::namespaced(self.client.clone(), &ns);
                        api.get_opt(&s.name).await.ok().flatten().and_then(|sec| {
                            sec.data?
                                .get(&s.key)
                                .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                        })
                    } else if let Some(s) = &from.config_map_key_ref {
                        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &ns);
                        api.get_opt(&s.name)
                            .await
                            .ok()
                            .flatten()
                            .and_then(|cm| cm.data?.get(&s.key).cloned())
                    } else {
                        None
                    }
                }
                (None, None) => Some(String::new()),
            };
            match value {
                Some(v) => env.push((e.name.clone(), v)),
                None => {
                    tracing::warn!(var = %e.name, pod = %pod.name_any(), "env var source not found; leaving it unset")
                }
            }
        }
        env
    }

    /// Restarts crashed containers, runs readiness probes, reports Pod status.
    async fn supervise(&mut self, pods: &[Pod]) -> Result<()> {
        let now = Instant::now();
        let exe = self.cfg.exe.clone();
        for rp in self.pods.values_mut() {
            let (ns, dir) = (rp.net.ns.clone(), rp.dir.clone());
            for c in rp.containers.iter_mut() {
                c.reap(now);
                if c.child.is_none() && c.next_start.is_some_and(|t| t <= now) {
                    if let Err(e) = c.spawn(&ns, &dir, &exe, &now_rfc3339()) {
                        tracing::error!(container = %c.name, error = %e, "cannot start container");
                    }
                    if c.child.is_none() {
                        c.next_start = Some(now + Duration::from_secs(1));
                    }
                }
            }
        }
        // Readiness probes of every container at once (each waits at most 500 ms).
        let probes = self.pods.values().flat_map(|rp| {
            let ip = rp.net.primary();
            rp.containers.iter().map(move |c| {
                let probe = c.probe.clone();
                let running = c.child.is_some();
                async move {
                    match probe {
                        Some((port, path)) if running => runtime::http_ok(ip, port, &path).await,
                        _ => running,
                    }
                }
            })
        });
        let mut results = futures::future::join_all(probes).await.into_iter();
        for c in self
            .pods
            .values_mut()
            .flat_map(|rp| rp.containers.iter_mut())
        {
            c.ready = results.next().unwrap_or(false);
        }
        let stored: BTreeMap<Key, &Pod> = pods.iter().map(|p| (key(p), p)).collect();
        for (k, rp) in &mut self.pods {
            let status = runtime::pod_status(rp, self.cfg.net.node_addr());
            let in_store = stored
                .get(k)
                .and_then(|p| p.status.as_ref())
                .map(|s| s.pod_ip.is_some())
                .unwrap_or(false);
            if rp.reported.as_ref() == Some(&status) && in_store {
                continue;
            }
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &k.0);
            match patch_status(&api, &k.1, status.clone()).await {
                Ok(()) => rp.reported = Some(status),
                Err(e) => tracing::warn!(pod = %k.1, error = %e, "cannot report pod status"),
            }
        }
        Ok(())
    }
}

fn ignore_not_found(r: std::result::Result<(), kube::Error>) -> Result<()> {
    match r {
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        r => r.map_err(Error::from),
    }
}
