//! `kwg ci-credentials NAME --reach NS,...`: as a cluster admin, a ServiceAccount in a
//! namespace of its own (`kwg-ci`, created when missing) bound to the `kwg-user` Roles and
//! ClusterRole (manifests/rbac-user.yaml) and, in each namespace of `--reach` only, to
//! ClusterRole `kwg-reach` (`get services`: what reach by RBAC asks), and a kubeconfig with a
//! token of a chosen lifetime for it (TokenRequest), to store as a CI secret.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, RoleBinding, RoleRef, Subject,
};
use kube::api::{ObjectMeta, PostParams};
use kube::config::{Context, Kubeconfig, NamedAuthInfo, NamedCluster, NamedContext};
use kube::{Api, Resource};

use crate::args::KubeArgs;
use crate::cluster::{Kube, Step};
use crate::error::Error;

/// The roles of manifests/rbac-user.yaml.
const ROLE: &str = "kwg-user";
/// The ClusterRole whose binding in a namespace opens it to a peer (manifests/rbac-reach.yaml).
const REACH_ROLE: &str = "kwg-reach";
/// Where the ServiceAccounts live by default: not next to the peer Secrets in kwg-system.
const CI_NAMESPACE: &str = "kwg-ci";
/// The shortest token a Kubernetes API server issues (TokenRequest's minimum, 10 minutes).
const MIN_DURATION: Duration = Duration::from_secs(600);

#[derive(Debug, clap::Args)]
pub struct CiCredentialsArgs {
    /// Name of the ServiceAccount (a DNS label, e.g. github-ci).
    pub name: String,
    /// Namespace of the ServiceAccount (created when missing).
    #[arg(short, long, default_value = CI_NAMESPACE)]
    pub namespace: String,
    /// The namespaces the credential's peer may reach (comma-separated): a RoleBinding to
    /// ClusterRole kwg-reach (`get services`) in each. Without it, it reaches none.
    #[arg(long, value_name = "NS,...", value_delimiter = ',')]
    pub reach: Vec<String>,
    /// Lifetime of the token (at least 10m; the API server may cap it).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Write the kubeconfig to this file (mode 0600) instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub kube: KubeArgs,
}

fn labels() -> std::collections::BTreeMap<String, String> {
    [(
        "app.kubernetes.io/managed-by".to_string(),
        "kwg".to_string(),
    )]
    .into()
}

fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(str::to_string),
        labels: Some(labels()),
        ..Default::default()
    }
}

/// Creates `obj`; one that already exists is kept (running the command again renews the
/// token only).
async fn ensure<K>(kube: &Kube, api: Api<K>, obj: &K, step: Step<'_>) -> Result<(), Error>
where
    K: Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.create(&PostParams::default(), obj).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_conflict() || s.reason == "AlreadyExists" => Ok(()),
        Err(e) => Err(kube.error(step, e)),
    }
}

/// `kwg ci-credentials`; a user who may not create what it needs is told it takes an admin
/// (the kwg-user roles do not grant it).
pub async fn run(args: CiCredentialsArgs) -> Result<(), Error> {
    issue(args).await.map_err(|e| match e {
        Error::Forbidden {
            user,
            verb,
            resource,
            namespace,
        } => Error::NotClusterAdmin {
            user,
            verb,
            resource,
            namespace,
        },
        e => e,
    })
}

async fn issue(args: CiCredentialsArgs) -> Result<(), Error> {
    kwg_contract::PeerName::try_from(args.name.clone())
        .map_err(|e| Error::invalid("NAME", format!("{e}: pass a DNS label such as github-ci")))?;
    if args.duration < MIN_DURATION {
        return Err(Error::invalid(
            "--duration",
            "a token lives at least 10m (the API server's minimum): pass --duration 10m or more",
        ));
    }
    let kubeconfig = args.kube.kubeconfig.as_deref();
    let kube = Kube::connect(kubeconfig, args.kube.context.as_deref()).await?;
    let kwg_ns = args.kube.kwg_namespace.as_str();
    let ns = args.namespace.clone();
    let name = args.name.as_str();
    let client = kube.client.clone();
    let step = |verb, resource, namespace| Step {
        verb,
        resource,
        namespace,
    };
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for reach in &args.reach {
        let found = namespaces
            .get_opt(reach)
            .await
            .map_err(|e| kube.error(step("get", "namespaces", reach), e))?;
        if found.is_none() {
            return Err(Error::invalid(
                "--reach",
                format!(
                    "namespace {reach} does not exist: check the names (kubectl get namespaces)"
                ),
            ));
        }
    }
    let own_ns = Namespace {
        metadata: meta(&ns, None),
        ..Default::default()
    };
    ensure(&kube, namespaces, &own_ns, step("create", "namespaces", "")).await?;
    let sa = ServiceAccount {
        metadata: meta(name, Some(&ns)),
        ..Default::default()
    };
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    ensure(
        &kube,
        sas.clone(),
        &sa,
        step("create", "serviceaccounts", &ns),
    )
    .await?;
    let subject = Subject {
        kind: "ServiceAccount".into(),
        name: name.into(),
        namespace: Some(ns.clone()),
        api_group: None,
    };
    let role_ref = |kind: &str| RoleRef {
        api_group: "rbac.authorization.k8s.io".into(),
        kind: kind.into(),
        name: ROLE.into(),
    };
    let reach_ref = RoleRef {
        name: REACH_ROLE.into(),
        ..role_ref("ClusterRole")
    };
    let binding = format!("kwg-ci-{ns}-{name}");
    let rb = RoleBinding {
        metadata: meta(&binding, Some(kwg_ns)),
        role_ref: role_ref("Role"),
        subjects: Some(vec![subject.clone()]),
    };
    // The kwg-user Role in kwg-system (peer Secrets) and in the gateway's namespace (its
    // readiness, the port-forward fallback).
    for role_ns in [kwg_ns, args.kube.gateway_namespace.as_str()] {
        let mut rb = rb.clone();
        rb.metadata.namespace = Some(role_ns.into());
        let rbs: Api<RoleBinding> = Api::namespaced(client.clone(), role_ns);
        ensure(&kube, rbs, &rb, step("create", "rolebindings", role_ns)).await?;
    }
    let crb = ClusterRoleBinding {
        metadata: meta(&binding, None),
        role_ref: role_ref("ClusterRole"),
        subjects: Some(vec![subject]),
    };
    let crbs: Api<ClusterRoleBinding> = Api::all(client.clone());
    ensure(&kube, crbs, &crb, step("create", "clusterrolebindings", "")).await?;
    if !args.reach.is_empty() {
        let reach_role = ClusterRole {
            metadata: meta(REACH_ROLE, None),
            rules: Some(vec![PolicyRule {
                api_groups: Some(vec![String::new()]),
                resources: Some(vec!["services".into()]),
                verbs: vec!["get".into()],
                ..Default::default()
            }]),
            ..Default::default()
        };
        let crs: Api<ClusterRole> = Api::all(client.clone());
        ensure(&kube, crs, &reach_role, step("create", "clusterroles", "")).await?;
    }
    for reach in &args.reach {
        let rb = RoleBinding {
            metadata: meta(&binding, Some(reach)),
            role_ref: reach_ref.clone(),
            subjects: rb.subjects.clone(),
        };
        let rbs: Api<RoleBinding> = Api::namespaced(client.clone(), reach);
        ensure(&kube, rbs, &rb, step("create", "rolebindings", reach)).await?;
    }
    let request = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(args.duration.as_secs() as i64),
            ..Default::default()
        },
        ..Default::default()
    };
    let issued = sas
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .map_err(|e| match e {
            kube::Error::Api(s) if s.code == 404 => Error::NoTokenRequest {
                server: kube.server.clone(),
            },
            e => kube.error(step("create", "serviceaccounts/token", &ns), e),
        })?;
    let status = issued.status.ok_or_else(|| {
        Error::invalid(
            "TokenRequest answer",
            "it has no token: check the API server's service-account token issuer",
        )
    })?;
    let config = kubeconfig_for(&kube, kubeconfig, &ns, name, status.token)?;
    let yaml = serde_yaml_ng::to_string(&config)
        .map_err(|e| Error::invalid("kubeconfig", e.to_string()))?;
    match &args.out {
        Some(path) => crate::state::write_atomic(path, yaml.as_bytes())?,
        None => print!("{yaml}"),
    }
    let reaches = match args.reach.as_slice() {
        [] => "it reaches no namespace (pass --reach NS,... to open some)".to_owned(),
        r => format!("it reaches {} ({REACH_ROLE} bound there)", r.join(",")),
    };
    eprintln!(
        "ServiceAccount {ns}/{name} is bound to the {ROLE} Roles and ClusterRole; {reaches}; its token expires at {} (the kubeconfig above is a secret: store it as one, e.g. KWG_KUBECONFIG)",
        status.expiration_timestamp.0
    );
    Ok(())
}

/// A kubeconfig with the admin's cluster entry (CA inlined) and the ServiceAccount's token.
fn kubeconfig_for(
    kube: &Kube,
    path: Option<&std::path::Path>,
    namespace: &str,
    name: &str,
    token: String,
) -> Result<Kubeconfig, Error> {
    let admin = match path {
        Some(p) => Kubeconfig::read_from(p),
        None => Kubeconfig::read(),
    }
    .map_err(|e| Error::Kubeconfig(e.to_string()))?;
    let ctx = kube.context.as_deref().unwrap_or_default();
    let cluster_name = admin
        .contexts
        .iter()
        .find(|c| c.name == ctx)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone())
        .unwrap_or_default();
    let mut cluster = admin
        .clusters
        .into_iter()
        .find(|c| c.name == cluster_name)
        .and_then(|c| c.cluster)
        .ok_or_else(|| Error::NoSuchContext(ctx.to_string()))?;
    if let Some(file) = cluster.certificate_authority.take() {
        let pem = std::fs::read(&file).map_err(|e| Error::io(format!("read {file}"), e))?;
        use base64::Engine;
        cluster.certificate_authority_data =
            Some(base64::engine::general_purpose::STANDARD.encode(pem));
    }
    let user = format!("{namespace}:{name}");
    let context = format!("kwg-ci-{name}");
    Ok(Kubeconfig {
        current_context: Some(context.clone()),
        clusters: vec![NamedCluster {
            name: cluster_name.clone(),
            cluster: Some(cluster),
            other: Default::default(),
        }],
        auth_infos: vec![NamedAuthInfo {
            name: user.clone(),
            auth_info: Some(kube::config::AuthInfo {
                token: Some(token.into()),
                ..Default::default()
            }),
            other: Default::default(),
        }],
        contexts: vec![NamedContext {
            name: context,
            context: Some(Context {
                cluster: cluster_name,
                user: Some(user),
                namespace: None,
                ..Default::default()
            }),
            other: Default::default(),
        }],
        ..Default::default()
    })
}
