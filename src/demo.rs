//! `fulcrum demo`: three endpoints on loopback and a proxy in front of them.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::Fulcrum;
use crate::listener::accept_failures::AcceptFailures;

/// The demo, bound: serve it with [`Fulcrum::serve`].
pub struct Demo {
    pub proxy: Fulcrum,
    /// Where the proxy listens.
    pub proxy_addr: SocketAddr,
    /// The three endpoints, in the order alpha, beta, gamma.
    pub endpoints: Vec<SocketAddr>,
}

/// Why the demo could not start.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("demo endpoint: {0}")]
    Endpoint(#[from] std::io::Error),
    #[error("demo config: {0}")]
    Config(String),
    #[error(transparent)]
    Start(#[from] crate::StartError),
}

/// Starts three endpoints and binds a proxy in front of them. Call
/// [`crate::shutdown_signal`] first, as before any bind.
pub async fn start() -> Result<Demo, DemoError> {
    let mut endpoints = Vec::new();
    for name in ["alpha", "beta", "gamma"] {
        endpoints.push(spawn_endpoint(name).await?);
    }
    let endpoint_list = |weights: &[u32]| {
        endpoints
            .iter()
            .zip(weights)
            .map(|(a, w)| format!("{{ address = \"{a}\", weight = {w} }}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    // Prefer the conventional port; fall back to any free one.
    let port = match std::net::TcpListener::bind("127.0.0.1:8080") {
        Ok(probe) => {
            drop(probe);
            8080
        }
        Err(_) => 0,
    };
    let text = format!(
        r#"
[admin]
bind = ""

[[listener]]
name = "demo"
bind = "127.0.0.1:{port}"

[[route]]
name = "weighted"
path_prefix = "/weighted"
upstream = "weighted"

[[route]]
name = "sticky"
path_prefix = "/sticky"
upstream = "sticky"

[[route]]
name = "default"
upstream = "demo"

[upstream.demo]
endpoints = [{even}]

[upstream.weighted]
endpoints = [{weighted}]

[upstream.sticky]
balance = "consistent_hash"
hash_key = "header:x-user-id"
bounded_load = 1.25
endpoints = [{even}]
"#,
        even = endpoint_list(&[1, 1, 1]),
        weighted = endpoint_list(&[5, 1, 1]),
    );
    let config = crate::config::parse(Path::new("demo.toml"), &text)
        .map_err(|e| DemoError::Config(e.to_string()))?;
    let proxy = Fulcrum::bind(config)?;
    let proxy_addr = proxy.local_addr("demo").expect("the demo listener");
    Ok(Demo {
        proxy,
        proxy_addr,
        endpoints,
    })
}

/// A loopback endpoint that answers every request with its name.
async fn spawn_endpoint(name: &'static str) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let mut failures = AcceptFailures::default();
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    failures.back_off(name, &error).await;
                    continue;
                }
            };
            tokio::spawn(async move {
                let service = service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| async move {
                        let body = format!(
                            "{name} ({addr}) answered {} {}\n",
                            req.method(),
                            req.uri().path()
                        );
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(body))))
                    },
                );
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}
