//! The connection pool to one endpoint: hyper-util's pooled client over
//! HTTP/1.1 or HTTP/2, with TCP_NODELAY and the upstream's connect timeout.

use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::{Protocol, UpstreamConfig};
use crate::proxy::RequestBody;

/// A keep-alive pool of connections to one endpoint.
pub type UpstreamClient = Client<HttpConnector, RequestBody>;

/// Builds the pool for an endpoint of `config`.
pub fn build(config: &UpstreamConfig) -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(config.connect_timeout));
    connector.enforce_http(true);
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_idle_timeout(config.pool_idle_timeout)
        .pool_max_idle_per_host(config.pool_max_idle)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .set_host(false);
    if config.protocol == Protocol::Http2 {
        builder.http2_only(true);
    }
    builder.build(connector)
}
