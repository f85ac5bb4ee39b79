//! The admin API (SPEC §3): /metrics, /healthz, /readyz, /status, /reload,
//! on `admin.bind`, with an optional bearer token compared in constant time.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::discovery::Discovery;
use crate::listener::accept_failures::AcceptFailures;
use crate::state::Shared;

/// Admin connections open at once; more are closed as they come.
const MAX_CONNECTIONS: usize = 64;

/// The admin listener, bound.
pub struct AdminServer {
    listener: TcpListener,
    pub local_addr: SocketAddr,
    token: Option<String>,
}

/// Runs a reload and answers with the new generation or the error
/// (`POST /reload`; absent where no reloader runs, as in some tests).
pub type ReloadFn = Arc<dyn Fn() -> Result<u64, String> + Send + Sync>;

impl AdminServer {
    /// Binds `addr`; the error names the admin listener.
    pub fn bind(addr: SocketAddr, token: Option<String>) -> std::io::Result<Self> {
        let std = std::net::TcpListener::bind(addr).map_err(|e| {
            std::io::Error::new(e.kind(), format!("admin: cannot bind {addr}: {e}"))
        })?;
        std.set_nonblocking(true)?;
        let listener = TcpListener::from_std(std)?;
        let local_addr = listener.local_addr()?;
        Ok(Self {
            listener,
            local_addr,
            token,
        })
    }

    /// Serves until `stop` is cancelled.
    pub async fn serve(
        self,
        shared: Arc<Shared>,
        reload: Option<ReloadFn>,
        stop: CancellationToken,
    ) {
        let token = Arc::new(self.token);
        let mut failures = AcceptFailures::default();
        let open = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        loop {
            let (stream, _) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(error) => {
                        failures.back_off("admin", &error).await;
                        continue;
                    }
                },
                () = stop.cancelled() => return,
            };
            // Beyond the cap, closed at once: idle connections held open
            // cannot take the process's descriptors (the token is checked
            // per request, so holding one needs none).
            let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
                continue;
            };
            let header_read = shared.snapshot.load().server.header_read_timeout;
            let shared = Arc::clone(&shared);
            let token = Arc::clone(&token);
            let reload = reload.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let service = service_fn(move |req| {
                    let response = answer(&req, &shared, token.as_deref(), reload.as_ref());
                    async move { Ok::<_, Infallible>(response) }
                });
                // A head (and, between requests, the next one) must come
                // within `header_read_timeout`, as on the listeners.
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(header_read)
                    .serve_connection(TokioIo::new(stream), service);
                tokio::select! {
                    _ = connection => {}
                    () = stop.cancelled() => {}
                }
            });
        }
    }
}

fn answer(
    req: &Request<Incoming>,
    shared: &Shared,
    token: Option<&str>,
    reload: Option<&ReloadFn>,
) -> Response<Full<Bytes>> {
    if let Some(token) = token
        && !authorized(req, token)
    {
        let mut r = text(
            StatusCode::UNAUTHORIZED,
            "401 Unauthorized: admin API needs Authorization: Bearer <admin.token>\n",
        );
        r.headers_mut()
            .insert("www-authenticate", HeaderValue::from_static("Bearer"));
        return r;
    }
    match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics") => {
            let mut r = text(StatusCode::OK, shared.render_metrics());
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        (&Method::GET | &Method::HEAD, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET | &Method::HEAD, "/readyz") => {
            if shared.is_draining() {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            } else if !shared.discovery_ready() {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "waiting for discovery's first answers\n",
                )
            } else {
                text(StatusCode::OK, "ready\n")
            }
        }
        (&Method::GET | &Method::HEAD, "/status") => json_response(StatusCode::OK, &status(shared)),
        (&Method::GET | &Method::HEAD, "/config") => {
            let mut r = text(StatusCode::OK, shared.config_text());
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/toml"));
            r
        }
        (&Method::POST, "/reload") => match reload {
            None => json_response(
                StatusCode::NOT_IMPLEMENTED,
                &json!({ "error": "hot reload is not available in this build; restart to apply a new config" }),
            ),
            Some(reload) => match reload() {
                Ok(generation) => {
                    json_response(StatusCode::OK, &json!({ "generation": generation }))
                }
                Err(error) => {
                    json_response(StatusCode::UNPROCESSABLE_ENTITY, &json!({ "error": error }))
                }
            },
        },
        (_, "/metrics" | "/healthz" | "/readyz" | "/status" | "/config" | "/reload") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "405 Method Not Allowed\n")
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "404 Not Found: admin paths are /metrics /healthz /readyz /status /config /reload\n",
        ),
    }
}

fn authorized(req: &Request<Incoming>, token: &str) -> bool {
    let Some(given) = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
    else {
        return false;
    };
    given.ct_eq(token.as_bytes()).into()
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

fn json_response(status: StatusCode, value: &Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(format!("{value}\n"))));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The `discovery` object of an upstream in /status.
fn discovery(d: &Discovery) -> Value {
    let status = d.status();
    json!({
        "name": d.config.name,
        "type": d.config.kind.as_str(),
        "resolver": d.config.resolver.map_or_else(|| "system".to_string(), |r| r.to_string()),
        "endpoints": status.endpoints,
        "last_success": status.last_success.map(rfc3339),
        "last_error": status.last_error,
        "held": status.held,
    })
}

/// The /status document (SPEC §3).
pub fn status(shared: &Shared) -> Value {
    let snapshot = shared.snapshot.load();
    let upstreams: serde_json::Map<String, Value> = snapshot
        .upstreams
        .iter()
        .map(|u| {
            let endpoints: Vec<Value> = u
                .endpoints
                .iter()
                .map(|e| {
                    let h = e.state.health();
                    let state = match (h.checked, h.down) {
                        (None, _) => "unchecked",
                        (Some(_), true) => "down",
                        (Some(_), false) => "up",
                    };
                    let last_probe = h.last_probe.as_ref().map(|p| {
                        json!({
                            "status": p.status,
                            "latency_ms": (p.latency.as_secs_f64() * 1e6).round() / 1e3,
                            "at": rfc3339(p.at),
                            "error": p.error,
                        })
                    });
                    // The wall-clock end of the ejection, from its Instant.
                    let ejected_until = h.outlier.ejected_until.map(|until| {
                        rfc3339(SystemTime::now() + until.saturating_duration_since(Instant::now()))
                    });
                    let ejection_cause = ejected_until.as_ref().and(h.ejection_cause.clone());
                    let slow_start_until = e
                        .state
                        .ramp_remaining()
                        .map(|left| rfc3339(SystemTime::now() + left));
                    json!({
                        "address": &*e.address,
                        "weight": e.weight,
                        "usable": e.state.is_usable(),
                        "health": { "state": state, "streak": h.streak, "last_probe": last_probe },
                        "ejected_until": ejected_until,
                        "ejection_cause": ejection_cause,
                        "slow_start_until": slow_start_until,
                        "priority": e.priority,
                        "in_flight": e.state.in_flight(),
                        "requests": e.state.requests(),
                    })
                })
                .collect();
            let usable = u.endpoints.iter().filter(|e| e.state.is_usable()).count();
            (
                u.name.to_string(),
                json!({
                    "balance": u.balance.as_str(),
                    "fail_open": u.fail_open,
                    "failing_open": u.failing_open.load(std::sync::atomic::Ordering::Relaxed),
                    "usable_endpoints": usable,
                    "endpoints": endpoints,
                    "discovery": u.discovery.as_ref().map(|d| discovery(d)),
                }),
            )
        })
        .collect();
    let last_reload = shared
        .last_reload
        .lock()
        .ok()
        .and_then(|r| r.clone())
        .map(|r| json!({ "ok": r.ok, "at": rfc3339(r.at), "error": r.error }));
    let loaded_at = shared
        .loaded_at
        .lock()
        .map(|t| rfc3339(*t))
        .unwrap_or_default();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "generation": snapshot.generation,
        "config_path": shared.config_path.display().to_string(),
        "loaded_at": loaded_at,
        "last_reload": last_reload,
        "draining": shared.is_draining(),
        "upstreams": upstreams,
    })
}
