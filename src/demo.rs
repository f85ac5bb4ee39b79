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

/// Runs the demo until SIGINT or SIGTERM.
pub async fn run() -> anyhow::Result<()> {
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
        .map_err(|e| anyhow::anyhow!("demo config: {e}"))?;
    // Before binding, as in `run`: see `shutdown_signal`.
    let shutdown = crate::shutdown_signal();
    let proxy = Fulcrum::bind(config)?;
    let addr = proxy.local_addr("demo").expect("the demo listener");
    println!(
        "fulcrum demo: proxy on http://{addr}, endpoints {}",
        endpoints
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!();
    println!("Round robin across three endpoints (each answers with its name):");
    println!("  for i in 1 2 3 4 5 6; do curl -s http://{addr}/; done");
    println!("Smooth weighted round robin, weights 5:1:1 (alpha gets 5 of every 7):");
    println!("  for i in $(seq 7); do curl -s http://{addr}/weighted; done");
    println!("Consistent hashing on the x-user-id header: each user sticks to one endpoint:");
    println!(
        "  for u in alice bob carol dave; do for i in 1 2 3; do curl -s -H \"x-user-id: $u\" http://{addr}/sticky; done; done"
    );
    println!("HTTP/2 without TLS (prior knowledge):");
    println!("  curl -s --http2-prior-knowledge http://{addr}/");
    println!("A request no route matches is not possible here (the default route takes all);");
    println!("see config/examples/ for host and path routing.");
    println!();
    println!("Press Ctrl-C to stop.");
    proxy.serve(shutdown).await;
    Ok(())
}

/// A loopback endpoint that answers every request with its name.
async fn spawn_endpoint(name: &'static str) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
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
