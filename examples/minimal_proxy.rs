//! The floor of fulcrum's stack, for calibration: the least a reverse proxy
//! on hyper 1 and tokio can do per request. One current-thread runtime,
//! hyper's HTTP/1 server towards the client, a last-in-first-out pool of
//! hyper `client::conn::http1` connections towards one endpoint, and
//! nothing else: no routing, no header rewriting, no limits, no timeouts, no
//! metrics, no health. It is not a product; `CALIBRATE=1
//! benches/e2e/run.sh` runs it beside nginx, HAProxy and fulcrum, so that
//! fulcrum's own cost can be told apart from hyper's and tokio's.
//!
//!   cargo run --release --example minimal_proxy -- 127.0.0.1:18084 127.0.0.1:18080

#![allow(clippy::print_stdout, clippy::print_stderr)] // a report for the reader

use std::cell::RefCell;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Empty, combinators::UnsyncBoxBody};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

type Sender = http1::SendRequest<Incoming>;

thread_local! {
    /// Idle connections to the endpoint, newest last.
    static POOL: RefCell<Vec<Sender>> = const { RefCell::new(Vec::new()) };
}

/// The endpoint's response body; its connection goes back to the pool once
/// the body has ended.
struct Lease {
    body: Incoming,
    sender: Option<Sender>,
}

impl Lease {
    fn release_if_ended(&mut self) {
        if self.body.is_end_stream()
            && let Some(sender) = self.sender.take()
        {
            POOL.with(|pool| pool.borrow_mut().push(sender));
        }
    }
}

impl Body for Lease {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let frame = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(None) = frame {
            self.release_if_ended();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // hyper stops polling a body of known length once it has it all.
        self.release_if_ended();
    }
}

type Reply = UnsyncBoxBody<Bytes, hyper::Error>;

async fn proxy(
    req: Request<Incoming>,
    endpoint: &'static str,
) -> Result<Response<Reply>, Infallible> {
    match forward(req, endpoint).await {
        Ok(response) => Ok(response.map(BodyExt::boxed_unsync)),
        Err(error) => {
            eprintln!("minimal_proxy: {error}");
            let mut response = Response::new(Empty::new().map_err(|e| match e {}).boxed_unsync());
            *response.status_mut() = StatusCode::BAD_GATEWAY;
            Ok(response)
        }
    }
}

async fn forward(
    req: Request<Incoming>,
    endpoint: &'static str,
) -> Result<Response<Lease>, Box<dyn std::error::Error>> {
    let mut sender = loop {
        match POOL.with(|pool| pool.borrow_mut().pop()) {
            Some(mut sender) => {
                if sender.ready().await.is_ok() {
                    break sender;
                }
            }
            None => {
                let stream = TcpStream::connect(endpoint).await?;
                stream.set_nodelay(true)?;
                let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
                tokio::task::spawn_local(connection);
                break sender;
            }
        }
    };
    let (parts, body) = sender.send_request(req).await?.into_parts();
    let mut lease = Lease {
        body,
        sender: Some(sender),
    };
    lease.release_if_ended();
    Ok(Response::from_parts(parts, lease))
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:18084".into());
    let endpoint: &'static str = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:18080".into())
        .leak();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    tokio::task::LocalSet::new().block_on(&runtime, async move {
        let listener = TcpListener::bind(listen).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            tokio::task::spawn_local(async move {
                let service = service_fn(move |req| proxy(req, endpoint));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}
