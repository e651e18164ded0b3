//! Verdicts about the kubeconfig, the API server, RBAC and the gateway (no I/O).

use kwg_contract::GatewayInfo;

use super::check::Check;
use crate::exit::ExitCode;
use crate::health::SecretProbe;

/// How the kubeconfig's user authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    Token,
    ClientCertificate,
    /// An exec credential plugin and whether its command was found.
    Exec {
        command: String,
        found: bool,
        install_hint: Option<String>,
    },
    /// A legacy auth-provider (gcp, azure, oidc).
    Provider(String),
    BasicAuth,
    None,
}

/// What the kubeconfig says.
#[derive(Debug, Clone)]
pub struct Kubeconfig {
    pub context: String,
    pub user: String,
    pub server: String,
    pub auth: Auth,
}

pub fn kubeconfig(k: &Result<Kubeconfig, String>) -> Check {
    const NAME: &str = "kubeconfig";
    let k = match k {
        Ok(k) => k,
        Err(e) => {
            return Check::fail(
                NAME,
                ExitCode::Credentials,
                e.clone(),
                "point kwg at a working kubeconfig: --kubeconfig FILE or $KUBECONFIG, and --context NAME (what kubectl uses works)",
            );
        }
    };
    let how = match &k.auth {
        Auth::Exec {
            command,
            found: false,
            install_hint,
        } => {
            let hint = install_hint
                .as_deref()
                .map(|h| format!(" ({})", h.trim().replace('\n', " ")))
                .unwrap_or_default();
            return Check::fail(
                NAME,
                ExitCode::Credentials,
                format!(
                    "user {} of context {} runs the credential plugin `{command}`, which is not on PATH",
                    k.user, k.context
                ),
                format!("install `{command}` or add its directory to PATH{hint}"),
            );
        }
        Auth::Exec { command, .. } => format!("credential plugin {command}"),
        Auth::Token => "bearer token".into(),
        Auth::ClientCertificate => "client certificate".into(),
        Auth::Provider(p) => format!("auth-provider {p}"),
        Auth::BasicAuth => "basic auth".into(),
        Auth::None => {
            return Check::warn(
                NAME,
                format!(
                    "context {}, user {}: no credentials (requests are anonymous)",
                    k.context, k.user
                ),
                "add a token, client certificate or exec plugin to the user (ask your cluster admin for a kubeconfig)",
            );
        }
    };
    Check::pass(
        NAME,
        format!(
            "context {}, user {} ({how}), server {}",
            k.context, k.user, k.server
        ),
    )
}

/// What a `GET /version` to the API server brought back.
#[derive(Debug, Clone)]
pub enum ApiProbe {
    Answered {
        version: String,
        /// The authenticated user name (SelfSubjectReview), when the server told.
        user: Option<String>,
    },
    Unauthorized,
    Unreachable(String),
}

pub fn api(server: &str, probe: &ApiProbe) -> Check {
    const NAME: &str = "api";
    match probe {
        ApiProbe::Answered { version, user } => Check::pass(
            NAME,
            format!(
                "{server} answers (Kubernetes {version}){}",
                user.as_ref()
                    .map(|u| format!(", authenticated as {u}"))
                    .unwrap_or_default()
            ),
        ),
        ApiProbe::Unauthorized => Check::fail(
            NAME,
            ExitCode::Credentials,
            format!("{server} rejects the credentials (401 Unauthorized)"),
            "log in again or get a fresh token (an expired token or certificate is the usual cause)",
        ),
        ApiProbe::Unreachable(why) => Check::fail(
            NAME,
            ExitCode::ApiUnreachable,
            format!("{server} cannot be reached: {why}"),
            "check the network path to the API server (VPN, proxy, firewall) and the kubeconfig's server URL",
        ),
    }
}

/// One permission kwg needs, from the `kwg-user` roles of manifests/rbac-user.yaml.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: Option<String>,
    /// `None`: cluster-wide (the ClusterRole).
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl std::fmt::Display for Need {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.verb, self.resource)?;
        if let Some(s) = &self.subresource {
            write!(f, "/{s}")?;
        }
        if let Some(n) = &self.name {
            write!(f, " {n}")?;
        }
        match &self.namespace {
            Some(ns) => write!(f, " in {ns}"),
            None => write!(f, " (cluster-wide)"),
        }
    }
}

/// The kwg-user roles as shipped (the doctor checks exactly what they grant).
const RBAC_USER: &str = include_str!("../../../manifests/rbac-user.yaml");

/// Every permission the shipped `kwg-user` Role and ClusterRole grant, with the Role's
/// namespace kwg-system replaced by `kwg_ns` (`--kwg-namespace`).
pub fn needs(kwg_ns: &str) -> Vec<Need> {
    #[derive(serde::Deserialize)]
    struct Doc {
        kind: String,
        metadata: Meta,
        #[serde(default)]
        rules: Vec<Rule>,
    }
    #[derive(serde::Deserialize)]
    struct Meta {
        namespace: Option<String>,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Rule {
        api_groups: Vec<String>,
        resources: Vec<String>,
        #[serde(default)]
        resource_names: Vec<String>,
        verbs: Vec<String>,
    }
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(RBAC_USER) {
        let doc: Doc = serde::Deserialize::deserialize(doc).expect("manifests/rbac-user.yaml");
        let namespace = match doc.kind.as_str() {
            "Role" => Some(match doc.metadata.namespace.as_deref() {
                Some(kwg_contract::DEFAULT_NAMESPACE) | None => kwg_ns.to_string(),
                Some(other) => other.to_string(),
            }),
            _ => None,
        };
        for rule in doc.rules {
            let names: Vec<Option<String>> = match rule.resource_names.is_empty() {
                true => vec![None],
                false => rule.resource_names.iter().cloned().map(Some).collect(),
            };
            for group in &rule.api_groups {
                for resource in &rule.resources {
                    let (resource, subresource) = match resource.split_once('/') {
                        Some((r, s)) => (r.to_string(), Some(s.to_string())),
                        None => (resource.clone(), None),
                    };
                    for verb in &rule.verbs {
                        for name in &names {
                            out.push(Need {
                                verb: verb.clone(),
                                group: group.clone(),
                                resource: resource.clone(),
                                subresource: subresource.clone(),
                                namespace: namespace.clone(),
                                name: name.clone(),
                            });
                        }
                    }
                }
            }
        }
    }
    out
}

/// `allowed`: each need's SelfSubjectAccessReview answer, or why it could not be asked.
pub fn rbac(user: &str, answers: &[(Need, Result<bool, String>)]) -> Check {
    const NAME: &str = "rbac";
    // Grouped by what they are on: "create, delete secrets in kwg-system".
    let mut denied: Vec<(String, Vec<&str>)> = Vec::new();
    for (n, _) in answers.iter().filter(|(_, a)| matches!(a, Ok(false))) {
        let what = n.to_string();
        let what = what
            .split_once(' ')
            .map_or(what.as_str(), |(_, w)| w)
            .to_string();
        match denied.iter_mut().find(|(w, _)| *w == what) {
            Some((_, verbs)) => verbs.push(&n.verb),
            None => denied.push((what, vec![&n.verb])),
        }
    }
    let denied: Vec<String> = denied
        .into_iter()
        .map(|(what, verbs)| format!("{} {what}", verbs.join(", ")))
        .collect();
    if let Some((need, Err(e))) = answers.iter().find(|(_, a)| a.is_err()) {
        return Check::fail(
            NAME,
            ExitCode::Credentials,
            format!("cannot ask whether {user} may {need}: {e}"),
            "the user needs create on selfsubjectaccessreviews (every authenticated user has it by default)",
        );
    }
    if denied.is_empty() {
        return Check::pass(
            NAME,
            format!(
                "{user} may do all {} things kwg needs (kwg-user roles)",
                answers.len()
            ),
        );
    }
    Check::fail(
        NAME,
        ExitCode::Credentials,
        format!("{user} may not {}", denied.join("; ")),
        format!(
            "ask a cluster admin to bind the kwg-user roles (each Role and the ClusterRole) to {user}: manifests/rbac-user-binding.yaml"
        ),
    )
}

/// This machine's peer Secret (joined only): deleted, its lease ended, or in place.
pub fn peer(probe: &SecretProbe, now: chrono::DateTime<chrono::Utc>) -> Check {
    const NAME: &str = "peer";
    match probe {
        SecretProbe::Missing { namespace, name } => Check::fail(
            NAME,
            ExitCode::Failure,
            format!(
                "the peer Secret {namespace}/{name} was deleted (by an admin, or by the gateway when its lease ended): the gateway no longer serves this machine"
            ),
            "the daemon registers again at its next lease renewal; or run kwg leave, then kwg join (if an admin removed this machine on purpose, ask them first)",
        ),
        SecretProbe::Present {
            lease_expires: Some(e),
        } if *e <= now => Check::fail(
            NAME,
            ExitCode::Failure,
            format!(
                "the peer Secret's lease ended {} ago: the gateway removes this peer",
                crate::output::span(*e, now)
            ),
            "the daemon renews it while it runs and the API server accepts it (see daemon and api); or run kwg leave, then kwg join",
        ),
        SecretProbe::Present { lease_expires } => Check::pass(
            NAME,
            match lease_expires {
                Some(e) => format!("in place, lease ends in {}", crate::output::span(now, *e)),
                None => "in place".to_string(),
            },
        ),
        SecretProbe::Unknown => Check::skip(
            NAME,
            "the API server did not say whether the peer Secret exists",
        ),
    }
}

/// What reading the gateway's info ConfigMap brought back.
#[derive(Debug, Clone)]
pub enum InfoProbe {
    Valid(Box<GatewayInfo>),
    /// Present but not usable (another contract version, invalid), with the reason.
    Invalid(String),
    Missing,
    Error(String),
}

/// The gateway: installed (info published), version-compatible, with a ready pod.
/// `pods`: (ready, desired, existing) of its Deployment, `None` when unreadable.
pub fn gateway(
    kwg_ns: &str,
    gateway_ns: &str,
    info: &InfoProbe,
    pods: Option<(i32, i32, i32)>,
) -> Check {
    const NAME: &str = "gateway";
    let cm = kwg_contract::GATEWAY_INFO_CONFIGMAP;
    let deploy = kwg_contract::GATEWAY_DEPLOYMENT;
    let info = match info {
        InfoProbe::Valid(i) => i,
        InfoProbe::Missing => {
            return Check::fail(
                NAME,
                ExitCode::GatewayMissing,
                format!(
                    "no gateway info (ConfigMap {cm} in {kwg_ns}): the kwg gateway is not installed or has never started"
                ),
                "install it: kubectl apply -k manifests/ (as a cluster admin), or pass --kwg-namespace where it runs",
            );
        }
        InfoProbe::Invalid(why) => {
            return Check::fail(
                NAME,
                ExitCode::GatewayMissing,
                format!("the gateway's info is not usable by this kwg: {why}"),
                "use the kwg release that matches the installed gateway (or upgrade both)",
            );
        }
        InfoProbe::Error(e) => {
            return Check::fail(
                NAME,
                ExitCode::GatewayMissing,
                format!("cannot read ConfigMap {cm} in {kwg_ns}: {e}"),
                "see the rbac and api checks",
            );
        }
    };
    let version = format!("contract v{}", info.version);
    match pods {
        Some((ready, desired, _)) if ready == 0 => Check::fail(
            NAME,
            ExitCode::GatewayMissing,
            format!(
                "installed ({version}) but {ready}/{desired} pods of Deployment {deploy} in {gateway_ns} are ready"
            ),
            match desired {
                0 => format!(
                    "scale it up: kubectl -n {gateway_ns} scale deployment {deploy} --replicas=1"
                ),
                _ => format!(
                    "see why its pods are not ready: kubectl -n {gateway_ns} describe deployment {deploy}"
                ),
            },
        ),
        Some((ready, desired, _)) => Check::pass(
            NAME,
            format!(
                "{ready}/{desired} ready in {gateway_ns}, {version}, key {}",
                info.public_key
            ),
        ),
        None => Check::pass(
            NAME,
            format!(
                "installed ({version}, key {}); its Deployment is not readable here, readiness not checked",
                info.public_key
            ),
        ),
    }
}

/// Whether the gateway's node coalesces the WireGuard datagrams it forwards to the gateway pod
/// (UDP GRO forwarding, docs/performance.md), as the gateway judged it under load and
/// published it (`udpReceive` in its info).
pub fn node_tuning(info: &InfoProbe) -> Check {
    const NAME: &str = "node-tuning";
    let InfoProbe::Valid(info) = info else {
        return Check::skip(NAME, "no usable gateway info (see gateway)");
    };
    match &info.udp_receive {
        None => Check::skip(
            NAME,
            "the gateway has not judged its UDP receive: it does under load (20000 datagrams within 30 s)",
        ),
        Some(u) if u.one_per_frame => Check::warn(
            NAME,
            format!(
                "the gateway receives one UDP datagram per frame under load ({:.1} per message, {} datagrams, {}): its node does not coalesce forwarded UDP, which limits throughput",
                u.per_message(),
                u.datagrams,
                u.observed_at.format("%Y-%m-%d %H:%M:%S UTC"),
            ),
            "a cluster admin, on the gateway's node: ethtool -K <nic> rx-udp-gro-forwarding on (with gro on), made persistent as docs/performance.md shows",
        ),
        Some(u) => Check::pass(
            NAME,
            format!(
                "the gateway's node coalesces forwarded UDP ({:.1} datagrams per message under load)",
                u.per_message()
            ),
        ),
    }
}

#[cfg(test)]
mod tests;
