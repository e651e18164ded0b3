//! Test harness: a server on a loopback port, users, kubeconfigs, kubectl and kube-rs clients.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kwg_apiserver::{ApiServer, Config};

pub struct Cluster {
    pub server: ApiServer,
    pub url: String,
    pub dir: tempfile::TempDir,
}

/// What a kubectl run printed.
#[derive(Debug)]
pub struct Output {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Cluster {
    pub async fn start() -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let url = format!("https://{}", listener.local_addr().unwrap());
        let cfg = Config {
            service_cidr: "10.96.0.0/12".parse().unwrap(),
            service_cidr_secondary: None,
            cert_sans: vec!["127.0.0.1".into(), "localhost".into()],
            state_dir: dir.path().join("state"),
        };
        let server = ApiServer::serve(cfg, listener)
            .await
            .expect("server starts");
        let cluster = Cluster { server, url, dir };
        let admin = cluster.server.add_user("admin", &["system:masters"]);
        cluster.write_kubeconfig("admin", &admin, "default");
        let nobody = cluster.server.add_user("nobody", &[]);
        cluster.write_kubeconfig("nobody", &nobody, "default");
        cluster
    }

    pub fn kubeconfig_path(&self, user: &str) -> PathBuf {
        self.dir.path().join(format!("{user}.kubeconfig"))
    }

    pub fn write_kubeconfig(&self, user: &str, token: &str, namespace: &str) {
        let path = self.kubeconfig_path(user);
        self.server
            .write_kubeconfig(&path, &self.url, user, token, namespace)
            .expect("write kubeconfig");
    }

    /// A kube-rs client for a user whose kubeconfig was written.
    pub async fn client(&self, user: &str) -> kube::Client {
        let text = std::fs::read_to_string(self.kubeconfig_path(user)).unwrap();
        let kc = Kubeconfig::from_yaml(&text).expect("kubeconfig parses");
        let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .expect("kube config");
        kube::Client::try_from(cfg).expect("kube client")
    }

    fn kubectl_cmd(&self, user: &str, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("kubectl");
        cmd.args(args)
            .env("KUBECONFIG", self.kubeconfig_path(user))
            .env("KUBECACHEDIR", self.dir.path().join("kube-cache"))
            .env("HOME", self.dir.path())
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// Run the real kubectl as `user` (bounded by a timeout).
    pub async fn kubectl(&self, user: &str, args: &[&str]) -> Output {
        let fut = self.kubectl_cmd(user, args).output();
        let out = tokio::time::timeout(Duration::from_secs(60), fut)
            .await
            .unwrap_or_else(|_| panic!("kubectl {args:?} timed out"))
            .expect("kubectl runs (is it on PATH?)");
        Output {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Run kubectl and require success; returns stdout.
    pub async fn kubectl_ok(&self, user: &str, args: &[&str]) -> String {
        let out = self.kubectl(user, args).await;
        assert!(
            out.ok,
            "kubectl {args:?} failed: {}{}",
            out.stdout, out.stderr
        );
        out.stdout
    }

    /// Start a long-running kubectl (e.g. `get -w`) writing to pipes.
    pub fn spawn_kubectl(&self, user: &str, args: &[&str]) -> tokio::process::Child {
        let mut cmd = self.kubectl_cmd(user, args);
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        cmd.spawn().expect("kubectl spawns")
    }

    pub fn write_file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, text).unwrap();
        path
    }
}
