//! The kube client that port-forward streams are opened with: kube-rs's stack (TLS and auth
//! from the kubeconfig, base URI, extra headers) on a connector with `TCP_NODELAY`, as
//! client-go's dialer has (Go's default). kube-rs's own connector leaves Nagle on, which held
//! the tail of every WireGuard batch written upstream until the previous one was
//! acknowledged (scripts/bench-reach.sh). Without kube-rs's read timeout too: a quiet tunnel
//! is not a stalled request.

use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::client::ConfigExt;
use kube::{Client, Config};
use tower::{BoxError, ServiceBuilder};

/// A client for `config` whose connections set `TCP_NODELAY`. With a proxy in the kubeconfig
/// it is kube-rs's default client (the proxy connectors are kube-rs's own).
pub fn stream_client(config: &Config) -> Result<Client, kube::Error> {
    if config.proxy_url.is_some() {
        return Client::try_from(config.clone());
    }
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(config.connect_timeout);
    let https = config.rustls_https_connector_with_connector(http)?;
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(BoxError::from)
        .service(HyperClient::builder(TokioExecutor::new()).build(https));
    Ok(Client::new(service, config.default_namespace.clone()))
}
