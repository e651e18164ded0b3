//! The I/O of `kwg doctor`: reads the kubeconfig, asks the API server, the daemon and the
//! kernel, and probes the gateway; the verdicts are in `check`, `cluster` and `local`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use ipnet::IpNet;
use kube::config::Kubeconfig;
use kwg_contract::{GatewayInfo, RouteSource, Status};

use super::check::Check;
use super::cluster::{self as verdict, ApiProbe, Auth, InfoProbe};
use super::local::{self, DaemonProbe};
use crate::api::{self, Reply, Request};
use crate::cluster::Kube;
use crate::lock::{DaemonLock, Holder};
use crate::state::{State, StateDir, StateFile};

/// Everything the checks found, and what the bundle adds to them.
pub struct Findings {
    pub checks: Vec<Check>,
    pub status: Option<Status>,
    pub state: Option<State>,
    pub kubeconfig_path: Option<PathBuf>,
    pub server_version: Option<String>,
    pub info: Option<GatewayInfo>,
}

pub async fn gather(args: &super::DoctorArgs, dir: &StateDir) -> Findings {
    let state = State::load(&dir.state()).ok().flatten();
    let (daemon, status) = daemon(dir, state.is_some()).await;
    // Joined: the daemon's kubeconfig and context unless others are given.
    let kubeconfig = args
        .kube
        .kubeconfig
        .clone()
        .or_else(|| state.as_ref().and_then(|s| s.kubeconfig.clone()));
    let context = match args.kube.kubeconfig {
        Some(_) => args.kube.context.clone(),
        None => args
            .kube
            .context
            .clone()
            .or_else(|| state.as_ref().and_then(|s| s.context.clone())),
    };
    let mut f = Findings {
        checks: Vec::new(),
        status,
        state,
        kubeconfig_path: kubeconfig.clone(),
        server_version: None,
        info: None,
    };
    let kc = read_kubeconfig(kubeconfig.as_deref(), context.as_deref());
    f.checks.push(verdict::kubeconfig(&kc));
    let cluster = match kc {
        Ok(_) => Kube::connect(kubeconfig.as_deref(), context.as_deref()).await,
        Err(e) => Err(crate::Error::Kubeconfig(e)),
    };
    let ttl = Duration::from_secs(f.state.as_ref().map_or(900, |s| s.ttl_secs));
    match cluster {
        Ok(kube) => cluster_checks(&kube, args, ttl, &mut f).await,
        Err(e) => {
            let why = format!("no API server to ask: {e}");
            for name in ["api", "rbac", "gateway", "clock"] {
                f.checks.push(Check::skip(name, why.clone()));
            }
        }
    }
    let interface = f
        .state
        .as_ref()
        .map_or("kwg0".to_string(), |s| s.interface.clone());
    f.checks.push(routes(&f, &interface).await);
    // The tunnel cannot work without a peer or a gateway: UDP and DNS are not to blame then.
    let failed = |name: &str| {
        f.checks
            .iter()
            .any(|c| c.check == name && c.outcome == super::check::Outcome::Fail)
    };
    let blocked = if failed("peer") {
        Some("not tested: the gateway does not serve this machine's peer (see peer)")
    } else if failed("gateway") {
        Some("not tested: the gateway is not serving (see gateway)")
    } else {
        None
    };
    match blocked {
        Some(why) => {
            f.checks.push(Check::skip("udp", why));
            f.checks.push(Check::skip("dns", why));
        }
        None => {
            f.checks.push(super::probe::udp(&f, &daemon).await);
            f.checks.push(super::probe::dns(&f, &interface).await);
        }
    }
    f.checks.push(local::daemon(&daemon, Utc::now()));
    f
}

async fn cluster_checks(kube: &Kube, args: &super::DoctorArgs, ttl: Duration, f: &mut Findings) {
    let (probe, skew) = version(kube).await;
    if let ApiProbe::Answered { version, .. } = &probe {
        f.server_version = Some(version.clone());
    }
    f.checks.push(verdict::api(&kube.server, &probe));
    let joined = f
        .state
        .as_ref()
        .map(|s| (s.kwg_namespace.clone(), s.peer.to_string()));
    if !matches!(probe, ApiProbe::Answered { .. }) {
        let why = match probe {
            ApiProbe::Unauthorized => "the API server rejects the credentials (see api)",
            _ => "the API server did not answer (see api)",
        };
        for name in ["rbac", "gateway", "peer", "clock"] {
            if name != "peer" || joined.is_some() {
                f.checks.push(Check::skip(name, why));
            }
        }
        return;
    }
    let needs = verdict::needs(&args.kube.kwg_namespace);
    let answers = futures::future::join_all(needs.into_iter().map(|n| async {
        let allowed = access_review(kube, &n).await;
        (n, allowed)
    }))
    .await;
    f.checks.push(verdict::rbac(&kube.user, &answers));
    let info = match kube.gateway_info(&args.kube.kwg_namespace).await {
        Ok(i) => InfoProbe::Valid(Box::new(i)),
        Err(crate::Error::NoGateway { .. }) => InfoProbe::Missing,
        Err(crate::Error::Contract(e)) => InfoProbe::Invalid(e.to_string()),
        Err(e) => InfoProbe::Error(e.to_string()),
    };
    if let InfoProbe::Valid(i) = &info {
        f.info = Some((**i).clone());
    }
    let pods = kube.gateway_pods(&args.kube.gateway_namespace).await;
    f.checks.push(verdict::gateway(
        &args.kube.kwg_namespace,
        &args.kube.gateway_namespace,
        &info,
        pods,
    ));
    f.checks.push(verdict::node_tuning(&info));
    if let Some((ns, peer)) = &joined {
        let probe = crate::driver::peer_secret(kube, ns, peer).await;
        f.checks.push(verdict::peer(&probe, Utc::now()));
    }
    f.checks.push(super::check::clock(skew, ttl));
}

/// The kubeconfig as kubectl reads it, and how its user authenticates.
fn read_kubeconfig(
    path: Option<&Path>,
    context: Option<&str>,
) -> Result<verdict::Kubeconfig, String> {
    let kc = match path {
        Some(p) => Kubeconfig::read_from(p),
        None => Kubeconfig::read(),
    }
    .map_err(|e| format!("cannot read the kubeconfig: {e}"))?;
    let name = context
        .map(str::to_string)
        .or_else(|| kc.current_context.clone())
        .ok_or("the kubeconfig has no current context: pass --context")?;
    let ctx = kc
        .contexts
        .iter()
        .find(|c| c.name == name)
        .and_then(|c| c.context.clone())
        .ok_or_else(|| format!("the kubeconfig has no context {name}"))?;
    let user = ctx.user.clone().unwrap_or_default();
    let server = kc
        .clusters
        .iter()
        .find(|c| c.name == ctx.cluster)
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.server.clone())
        .ok_or_else(|| {
            format!(
                "context {name} names cluster {} with no server",
                ctx.cluster
            )
        })?;
    let info = kc
        .auth_infos
        .iter()
        .find(|a| a.name == user)
        .and_then(|a| a.auth_info.clone())
        .unwrap_or_default();
    let auth = if let Some(exec) = &info.exec {
        let command = exec.command.clone().unwrap_or_default();
        Auth::Exec {
            found: on_path(&command),
            command,
            install_hint: exec.install_hint.clone(),
        }
    } else if info.token.is_some() || info.token_file.is_some() {
        Auth::Token
    } else if info.client_certificate.is_some() || info.client_certificate_data.is_some() {
        Auth::ClientCertificate
    } else if let Some(p) = &info.auth_provider {
        Auth::Provider(p.name.clone())
    } else if info.username.is_some() {
        Auth::BasicAuth
    } else {
        Auth::None
    };
    Ok(verdict::Kubeconfig {
        context: name,
        user,
        server,
        auth,
    })
}

/// Whether `command` runs: an executable path, or found on `$PATH` as a shell would.
fn on_path(command: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if command.contains('/') {
        return executable(Path::new(command));
    }
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|d| !command.is_empty() && executable(&d.join(command)))
    })
}

/// `GET /version`: whether the server answers, and its clock (the `Date` header) minus ours.
async fn version(kube: &Kube) -> (ApiProbe, Option<chrono::Duration>) {
    let req = http::Request::get("/version")
        .body(kube::client::Body::from(Vec::new()))
        .expect("a valid request");
    let res = match tokio::time::timeout(Duration::from_secs(10), kube.client.send(req)).await {
        Err(_) => return (ApiProbe::Unreachable("no answer within 10 s".into()), None),
        Ok(Err(e)) => {
            let why = match kube.error(
                crate::cluster::Step {
                    verb: "get",
                    resource: "version",
                    namespace: "",
                },
                e,
            ) {
                crate::Error::ApiUnreachable { reason, .. } => reason,
                other => other.to_string(),
            };
            return (ApiProbe::Unreachable(why), None);
        }
        Ok(Ok(r)) => r,
    };
    let skew = res
        .headers()
        .get(http::header::DATE)
        .and_then(|d| d.to_str().ok())
        .and_then(|d| chrono::DateTime::parse_from_rfc2822(d).ok())
        .map(|d| Utc::now() - d.with_timezone(&Utc));
    if res.status() == http::StatusCode::UNAUTHORIZED {
        return (ApiProbe::Unauthorized, skew);
    }
    let body = res.into_body().collect_bytes().await.unwrap_or_default();
    let version = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["gitVersion"].as_str().map(str::to_string))
        .unwrap_or_else(|| "version unknown".into());
    // `/version` is public: whether the credentials are accepted is another question.
    match whoami(kube).await {
        Err(()) => (ApiProbe::Unauthorized, skew),
        Ok(user) => (ApiProbe::Answered { version, user }, skew),
    }
}

/// `kubectl auth whoami` (a SelfSubjectReview): the user name the API server authenticated,
/// `None` when it did not say (an older server), `Err` when it rejects the credentials.
async fn whoami(kube: &Kube) -> Result<Option<String>, ()> {
    let review = br#"{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}"#;
    let req = http::Request::post("/apis/authentication.k8s.io/v1/selfsubjectreviews")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(kube::client::Body::from(review.to_vec()))
        .expect("a valid request");
    let res = match tokio::time::timeout(Duration::from_secs(10), kube.client.send(req)).await {
        Ok(Ok(r)) => r,
        // A 401 from kube's own layers (an exec plugin or token file refused).
        Ok(Err(kube::Error::Api(s))) if s.code == 401 => return Err(()),
        _ => return Ok(None),
    };
    if res.status() == http::StatusCode::UNAUTHORIZED {
        return Err(());
    }
    if !res.status().is_success() {
        return Ok(None);
    }
    let body = res.into_body().collect_bytes().await.unwrap_or_default();
    Ok(serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            v["status"]["userInfo"]["username"]
                .as_str()
                .map(str::to_string)
        }))
}

/// `kubectl auth can-i` for one need.
async fn access_review(kube: &Kube, n: &verdict::Need) -> Result<bool, String> {
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
    };
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(n.verb.clone()),
                group: Some(n.group.clone()),
                resource: Some(n.resource.clone()),
                subresource: n.subresource.clone(),
                namespace: n.namespace.clone(),
                name: n.name.clone(),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: kube::Api<SelfSubjectAccessReview> = kube::Api::all(kube.client.clone());
    api.create(&Default::default(), &review)
        .await
        .map(|r| r.status.is_some_and(|s| s.allowed))
        .map_err(|e| e.to_string())
}

async fn daemon(dir: &StateDir, joined: bool) -> (DaemonProbe, Option<Status>) {
    if let Err(e) = std::fs::read_dir(&dir.0)
        && e.kind() == std::io::ErrorKind::PermissionDenied
    {
        return (DaemonProbe::Unreadable(dir.0.display().to_string()), None);
    }
    match (DaemonLock::holder(&dir.lock()), joined) {
        (Holder::None, false) => (DaemonProbe::NotJoined, None),
        (Holder::None, true) => (DaemonProbe::Dead, None),
        (Holder::Running(pid), _) => {
            let pid = pid.map_or("-".to_string(), |p| p.to_string());
            match api::call(&dir.socket(), Request::Status, Duration::from_secs(3)).await {
                Ok(Reply::Status(s)) => (DaemonProbe::Running(s.clone()), Some(*s)),
                Ok(other) => (
                    DaemonProbe::NoAnswer(format!("pid {pid}: unexpected reply {other:?}")),
                    None,
                ),
                Err(e) => (DaemonProbe::NoAnswer(format!("pid {pid}: {e}")), None),
            }
        }
    }
}

/// The cluster's subnets (from the gateway info, else what the daemon routes).
fn cluster_subnets(f: &Findings) -> Vec<(IpNet, &'static str)> {
    if let Some(i) = &f.info {
        let mut v: Vec<(IpNet, &'static str)> = Vec::new();
        v.extend(i.service_cidrs.iter().map(|c| (*c, "service CIDR")));
        v.extend(i.pod_cidrs.iter().map(|c| (*c, "pod CIDR")));
        v.push((IpNet::V4(i.tunnel_cidr), "tunnel CIDR"));
        // A dual-stack cluster's IPv6 side (ipv6.json), which a join routes too.
        if let Some(six) = &i.ipv6 {
            v.extend(
                six.service_cidrs
                    .iter()
                    .map(|c| (IpNet::V6(*c), "service CIDR")),
            );
            v.extend(six.pod_cidrs.iter().map(|c| (IpNet::V6(*c), "pod CIDR")));
            v.push((IpNet::V6(six.tunnel_cidr), "tunnel CIDR"));
        }
        return v;
    }
    f.state.as_ref().map_or(Vec::new(), |s| {
        s.routes
            .iter()
            .map(|r| {
                let what = match r.source {
                    RouteSource::Service => "service CIDR",
                    RouteSource::Pod => "pod CIDR",
                    RouteSource::AlsoProxy => "--also-proxy",
                    RouteSource::Gateway => "gateway tunnel address",
                    RouteSource::Tunnel => "tunnel CIDR",
                };
                (r.subnet, what)
            })
            .collect()
    })
}

async fn routes(f: &Findings, interface: &str) -> Check {
    if f.state.as_ref().is_some_and(|s| s.proxy.is_some()) {
        return Check::skip(
            "routes",
            "userspace mode: kwg adds no routes to this machine",
        );
    }
    let subnets = cluster_subnets(f);
    if subnets.is_empty() {
        return Check::skip("routes", "the cluster's subnets are unknown (see gateway)");
    }
    let existing = match kwg_host::netlink::Netlink::open() {
        Ok(nl) => nl.routes().await,
        Err(e) => Err(e),
    };
    let existing = match existing {
        Ok(r) => r,
        Err(e) => return Check::skip("routes", format!("cannot list this machine's routes: {e}")),
    };
    let mut interfaces: Vec<String> = std::fs::read_dir("/sys/class/net")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    interfaces.sort();
    local::routes(&subnets, &existing, interface, &interfaces)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exec_plugin_is_looked_up_on_path_like_a_shell_would() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        let kubeconfig = |command: &str| {
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: dev\nclusters:\n- name: c\n  cluster: {{server: 'https://192.0.2.1:6443'}}\ncontexts:\n- name: dev\n  context: {{cluster: c, user: u}}\nusers:\n- name: u\n  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: {command}\n      installHint: get it from your admin\n"
            )
        };
        std::fs::write(&path, kubeconfig("kwg-no-such-plugin-7f3a")).unwrap();
        let k = read_kubeconfig(Some(&path), None).unwrap();
        assert_eq!(k.context, "dev");
        assert_eq!(k.server, "https://192.0.2.1:6443");
        assert_eq!(
            k.auth,
            Auth::Exec {
                command: "kwg-no-such-plugin-7f3a".into(),
                found: false,
                install_hint: Some("get it from your admin".into()),
            }
        );
        std::fs::write(&path, kubeconfig("sh")).unwrap();
        let k = read_kubeconfig(Some(&path), None).unwrap();
        assert!(
            matches!(k.auth, Auth::Exec { found: true, .. }),
            "{:?}",
            k.auth
        );
        let e = read_kubeconfig(Some(&path), Some("prod")).unwrap_err();
        assert_eq!(e, "the kubeconfig has no context prod");
    }
}
