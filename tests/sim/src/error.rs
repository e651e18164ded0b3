//! The one error enum of `kwg-sim`.

/// Everything that can go wrong while building, running or tearing down a cluster.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("`{cmd}` failed: {stderr}")]
    Command { cmd: String, stderr: String },
    #[error("cannot run `{cmd}`: {source} (is it installed and on PATH?)")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "entering network namespace {ns}: {source} (does `ip netns list` show it? run `kwg-sim up`)"
    )]
    Netns { ns: String, source: nix::Error },
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    #[error("API server stand-in: {0}")]
    ApiServer(String),
    #[error(
        "cluster {prefix} not ready after {secs} s: {what} (see the log in /run/kwg-sim/{prefix}/daemon.log)"
    )]
    NotReady {
        prefix: String,
        secs: u64,
        what: String,
    },
    #[error("no binary `{name}` in {dir} (build it with `cargo build`, or set KWG_BIN_DIR)")]
    NoBinary { name: String, dir: String },
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// An I/O error with what was being done.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
