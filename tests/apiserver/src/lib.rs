//! Kubernetes API server stand-in: HTTPS with its own CA, bearer-token users, RBAC, discovery,
//! CRUD/watch/patch of the kinds kwg uses, all in memory. Usable in-process (tests, `kwg-sim`)
//! and as the `kwg-apiserver` binary.

mod admission;
mod bootstrap;
mod cel;
mod discovery;
mod events;
mod families;
mod hooks;
mod http;
mod kinds;
mod ops;
mod patch;
mod podlog;
mod portforward;
mod protobuf;
mod rbac;
mod resource;
mod reviews;
mod scale;
mod selectors;
mod status;
mod store;
mod table;
mod tls;
mod token_request;
mod tokens;
mod validation;
mod watch;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use base64::Engine;
use rand::Rng;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use rbac::User;
pub use status::ApiError;

/// Configuration of a server.
#[derive(Debug, Clone)]
pub struct Config {
    /// The service CIDR (10.96.0.0/12 in the sim); the `kubernetes` Service gets its first IP.
    pub service_cidr: ipnet::IpNet,
    /// A second Service CIDR of the other family, for a dual-stack cluster (the API server's
    /// `--service-cluster-ip-range=<primary>,<secondary>`).
    pub service_cidr_secondary: Option<ipnet::IpNet>,
    /// IPs and DNS names the serving certificate is valid for.
    pub cert_sans: Vec<String>,
    /// Where `ca.crt`/`ca.key` live (an existing CA there is reused).
    pub state_dir: PathBuf,
}

/// Errors starting or running the server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cannot use state directory file {path}: {source} (check the --state-dir path and its permissions)"
    )]
    State {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create the server certificate: {0} (check cert_sans: IPs or DNS names)")]
    Cert(#[from] rcgen::Error),
    #[error("cannot configure TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Error {
    fn state(path: &Path, source: std::io::Error) -> Self {
        Error::State {
            path: path.to_path_buf(),
            source,
        }
    }
}

pub(crate) struct Shared {
    pub store: Mutex<Store>,
    pub users: Mutex<Users>,
    pub env: ops::Env,
    pub shutdown: CancellationToken,
    pub tls: tokio_rustls::TlsAcceptor,
    pub logs: Mutex<Option<podlog::LogSource>>,
    pub netns: Mutex<Option<portforward::NetnsSource>>,
    /// SubjectAccessReviews answered since start (`/metrics`: how often a client such as the
    /// kwg gateway asks).
    pub subject_access_reviews: std::sync::atomic::AtomicU64,
    /// The same, by the review's `spec.user` (kwg-sim only, not a kube-apiserver series: a
    /// test counts one subject's reviews while others are asked).
    pub subject_access_reviews_by_user: Mutex<std::collections::BTreeMap<String, u64>>,
}

pub(crate) use store::Store;

#[derive(Default)]
pub(crate) struct Users {
    by_token: HashMap<String, User>,
    service_accounts: HashMap<(String, String), String>,
    /// Legacy tokens the token controller put into Secrets.
    secret_tokens: HashMap<String, tokens::TokenSecret>,
    /// Tokens TokenRequest issued (`serviceaccounts/token`).
    bound_tokens: HashMap<String, token_request::BoundToken>,
}

impl Shared {
    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn users(&self) -> MutexGuard<'_, Users> {
        self.users.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn user(&self, token: &str) -> Option<User> {
        let (from_secret, bound) = {
            let users = self.users();
            if let Some(u) = users.by_token.get(token) {
                return Some(u.clone());
            }
            let bound = users.bound_tokens.get(token).cloned();
            (users.secret_tokens.get(token).cloned(), bound)
        };
        match (from_secret, bound) {
            (Some(from), _) => tokens::authenticate(&self.store(), token, &from),
            (None, Some(b)) => token_request::authenticate(&self.store(), &b, chrono::Utc::now()),
            (None, None) => None,
        }
    }

    pub fn add_bound_token(&self, token: &str, t: token_request::BoundToken) {
        self.users().bound_tokens.insert(token.to_string(), t);
    }

    pub fn add_secret_token(&self, token: &str, from: tokens::TokenSecret) {
        self.users().secret_tokens.insert(token.to_string(), from);
    }
}

/// A cheap-to-clone handle to a running server and its in-memory store.
#[derive(Clone)]
pub struct ApiServer {
    shared: Arc<Shared>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

fn new_token() -> String {
    let mut rng = rand::rng();
    (0..32)
        .map(|_| format!("{:x}", rng.random_range(0..16u8)))
        .collect()
}

impl ApiServer {
    /// Start serving on an already-bound listener (it may live in another network namespace).
    pub async fn serve(cfg: Config, listener: TcpListener) -> Result<ApiServer, Error> {
        let tls = tls::load_or_create(&cfg.state_dir, &cfg.cert_sans)?;
        let env = ops::Env {
            service_cidr: cfg.service_cidr,
            service_cidr_secondary: cfg.service_cidr_secondary,
            ca_pem: tls.ca_pem.clone(),
        };
        let mut store = Store::default();
        bootstrap::populate(&mut store, &env);
        let shared = Arc::new(Shared {
            store: Mutex::new(store),
            users: Mutex::new(Users::default()),
            env,
            shutdown: CancellationToken::new(),
            tls: tokio_rustls::TlsAcceptor::from(tls.config),
            logs: Mutex::new(None),
            netns: Mutex::new(None),
            subject_access_reviews: Default::default(),
            subject_access_reviews_by_user: Default::default(),
        });
        let server = ApiServer {
            shared,
            tasks: Arc::default(),
        };
        server.add_listener(listener);
        Ok(server)
    }

    /// Serve on one more listener.
    pub fn add_listener(&self, listener: TcpListener) {
        let handle = tokio::spawn(http::accept_loop(self.shared.clone(), listener));
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(handle);
    }

    /// The CA certificate (PEM) clients must trust.
    pub fn ca_pem(&self) -> String {
        self.shared.env.ca_pem.clone()
    }

    /// SubjectAccessReviews answered since start (also on `/metrics`).
    pub fn subject_access_reviews(&self) -> u64 {
        (self.shared.subject_access_reviews).load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Register a bearer-token user (also in `system:authenticated`); returns the token.
    pub fn add_user(&self, name: &str, groups: &[&str]) -> String {
        let mut groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        if !groups.iter().any(|g| g == rbac::AUTHENTICATED) {
            groups.push(rbac::AUTHENTICATED.into());
        }
        let token = new_token();
        let mut users = self.shared.users.lock().unwrap_or_else(|p| p.into_inner());
        users.by_token.insert(
            token.clone(),
            User {
                name: name.into(),
                groups,
            },
        );
        token
    }

    /// The token of a ServiceAccount (the same token on every call).
    pub fn service_account_token(&self, namespace: &str, name: &str) -> String {
        let key = (namespace.to_string(), name.to_string());
        if let Some(t) = self
            .shared
            .users
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .service_accounts
            .get(&key)
        {
            return t.clone();
        }
        let user = format!("system:serviceaccount:{namespace}:{name}");
        let ns_group = format!("system:serviceaccounts:{namespace}");
        let token = self.add_user(&user, &["system:serviceaccounts", &ns_group]);
        let mut users = self.shared.users.lock().unwrap_or_else(|p| p.into_inner());
        users.service_accounts.entry(key).or_insert(token).clone()
    }

    /// A kubeconfig (cluster with embedded CA, user with token, context with namespace).
    pub fn kubeconfig(&self, server_url: &str, user: &str, token: &str, namespace: &str) -> String {
        let ca = base64::engine::general_purpose::STANDARD.encode(self.ca_pem());
        let context = format!("{user}@kwg");
        let doc = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kwg", "cluster": {"server": server_url, "certificate-authority-data": ca}}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": context, "context": {"cluster": "kwg", "user": user, "namespace": namespace}}],
            "current-context": context,
            "preferences": {},
        });
        serde_yaml_ng::to_string(&doc).expect("a kubeconfig serializes")
    }

    /// Write a kubeconfig file (mode 0600).
    pub fn write_kubeconfig(
        &self,
        path: &Path,
        server_url: &str,
        user: &str,
        token: &str,
        namespace: &str,
    ) -> Result<(), Error> {
        use std::os::unix::fs::PermissionsExt;
        let text = self.kubeconfig(server_url, user, token, namespace);
        std::fs::write(path, text).map_err(|source| Error::Write {
            path: path.into(),
            source,
        })?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
            Error::Write {
                path: path.into(),
                source,
            }
        })
    }

    /// Forget the watch history and end every open watch (like an etcd compaction plus an API
    /// server restart): clients resuming from an older resourceVersion get 410 Gone and re-list.
    pub fn compact_history(&self) {
        self.shared.store().compact();
    }

    /// How many watch events are kept for resuming watches (default 4096).
    pub fn set_history_limit(&self, limit: usize) {
        self.shared.store().set_history_limit(limit);
    }

    /// Create an object in-process (no authorization), e.g. RBAC bindings for the sim's users.
    /// The resource is found from `apiVersion` and `kind`.
    pub fn create_object(&self, obj: serde_json::Value) -> Result<serde_json::Value, ApiError> {
        let api_version = obj["apiVersion"].as_str().unwrap_or("");
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let kind_name = obj["kind"].as_str().unwrap_or("");
        let kind = kinds::all()
            .iter()
            .find(|k| k.group == group && k.version == version && k.kind == kind_name && k.stored())
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "no resource for apiVersion {api_version:?} kind {kind_name:?}"
                ))
            })?;
        let ns = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or(if kind.namespaced { "default" } else { "" })
            .to_string();
        let opts = ops::WriteOpts {
            dry_run: false,
            now: chrono::Utc::now(),
            user: None,
            warnings: None,
        };
        ops::create(
            &mut self.shared.store(),
            &self.shared.env,
            kind,
            &ns,
            obj,
            opts,
        )
    }

    /// A stored object as JSON (for in-process checks), by group, resource, namespace and name.
    pub fn get_object(
        &self,
        group: &str,
        resource: &str,
        namespace: &str,
        name: &str,
    ) -> Option<serde_json::Value> {
        let kind = kinds::all()
            .iter()
            .find(|k| k.group == group && k.plural == resource)?;
        self.shared.store().get(kind, namespace, name).cloned()
    }

    /// Serve `kubectl logs [-f]`: `f(namespace, pod, container)` names the container's log
    /// file (None: no log yet, an empty answer).
    pub fn set_pod_logs(
        &self,
        f: impl Fn(&str, &str, &str) -> Option<PathBuf> + Send + Sync + 'static,
    ) {
        *self.shared.logs.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(f));
    }

    /// Serve `kubectl port-forward`: `f(namespace, pod)` names the pod's network namespace file
    /// (`/run/netns/...`), where `localhost:PORT` is dialled as containerd does. Without it (or
    /// for None) the pod IP is dialled from the server's namespace.
    pub fn set_pod_netns(&self, f: impl Fn(&str, &str) -> Option<PathBuf> + Send + Sync + 'static) {
        *self.shared.netns.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(f));
    }

    /// Stop serving: no new connections, open connections and watches end.
    pub async fn shutdown(self) {
        self.shared.shutdown.cancel();
        let tasks: Vec<_> =
            std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for t in tasks {
            let _ = t.await;
        }
    }
}
