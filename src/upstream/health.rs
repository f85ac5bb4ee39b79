//! Active health checks: one task per endpoint of an upstream with a
//! `[health_check]`, and passive-check bookkeeping shared with the request
//! path.
//!
//! A probe is `GET path` on a fresh connection (never one of live traffic),
//! passing when the status is in `expect_status` within `timeout`. The first
//! probe runs at once; then one every `interval`, jittered by up to 10% so
//! probes of many endpoints do not fall in step. `unhealthy_threshold`
//! failures in a row mark the endpoint down, `healthy_threshold` passes in a
//! row bring it back (one pass for a newcomer that starts unusable).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio_util::sync::CancellationToken;

use super::outlier::Verdict;
use super::{Endpoint, EndpointState, Probe, Upstream};
use crate::config::HealthCheckConfig;

type ProbeClient = Client<HttpConnector, Empty<Bytes>>;

/// The running probe tasks, keyed by (upstream, endpoint address).
#[derive(Debug, Default)]
pub struct Supervisor {
    tasks: HashMap<(Arc<str>, Arc<str>), (CancellationToken, HealthCheckConfig)>,
}

impl Supervisor {
    /// Starts probes for endpoints of `snapshot` that need them and stops
    /// those of endpoints (or checks) that are gone or changed.
    pub fn sync<N: UsabilityListener>(&mut self, listener: &Arc<N>, upstreams: &[Arc<Upstream>]) {
        let mut wanted: HashMap<(Arc<str>, Arc<str>), (HealthCheckConfig, Endpoint)> =
            HashMap::new();
        for u in upstreams {
            if let Some(check) = &u.health_check {
                for e in &u.endpoints {
                    wanted.insert(
                        (u.name.clone(), e.address.clone()),
                        (check.clone(), e.clone()),
                    );
                }
            }
        }
        self.tasks.retain(|key, (cancel, config)| {
            let keep = wanted.get(key).is_some_and(|(c, _)| c == config);
            if !keep {
                cancel.cancel();
            }
            keep
        });
        for (key, (config, endpoint)) in wanted {
            if self.tasks.contains_key(&key) {
                continue;
            }
            let cancel = CancellationToken::new();
            tokio::spawn(run(
                Arc::clone(listener),
                key.0.clone(),
                endpoint,
                config.clone(),
                cancel.clone(),
            ));
            self.tasks.insert(key, (cancel, config));
        }
    }

    /// Stops every probe.
    pub fn stop(&mut self) {
        for (_, (cancel, _)) in self.tasks.drain() {
            cancel.cancel();
        }
    }
}

/// Where a change of an endpoint's usability is told: the upstream's
/// balancer in the snapshot current by then (which may be a later one than
/// the endpoint was found in) rebuilds what it must.
pub trait UsabilityListener: Send + Sync + 'static {
    fn usability_changed(&self, upstream: &str);
}

fn probe_client(timeout: Duration) -> ProbeClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(timeout));
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(connector)
}

async fn probe(client: &ProbeClient, address: &str, config: &HealthCheckConfig) -> (bool, Probe) {
    let started = Instant::now();
    let at = SystemTime::now();
    let uri = format!("http://{address}{}", config.path);
    let request = http::Request::get(uri.as_str())
        .header(http::header::HOST, address)
        .header(
            http::header::USER_AGENT,
            concat!("fulcrum-health/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::new());
    let result = match request {
        Ok(request) => tokio::time::timeout(config.timeout, client.request(request)).await,
        Err(error) => {
            return (
                false,
                Probe {
                    status: None,
                    latency: Duration::ZERO,
                    at,
                    error: Some(error.to_string()),
                },
            );
        }
    };
    let latency = started.elapsed();
    match result {
        Ok(Ok(response)) => {
            let status = response.status().as_u16();
            let pass = config.expect_status.contains(status);
            (
                pass,
                Probe {
                    status: Some(status),
                    latency,
                    at,
                    error: (!pass).then(|| format!("status {status} not in expect_status")),
                },
            )
        }
        Ok(Err(error)) => {
            let cause = if error.is_connect() {
                "connect error"
            } else {
                "request failed"
            };
            (
                false,
                Probe {
                    status: None,
                    latency,
                    at,
                    error: Some(cause.to_string()),
                },
            )
        }
        Err(_) => (
            false,
            Probe {
                status: None,
                latency,
                at,
                error: Some(format!("no answer within timeout ({:?})", config.timeout)),
            },
        ),
    }
}

/// Applies one probe result to `state`; returns whether usability changed.
pub fn apply_probe(
    state: &EndpointState,
    config: &HealthCheckConfig,
    pass: bool,
    result: Probe,
) -> bool {
    let counter = if pass {
        &state.metrics.checks_passed
    } else {
        &state.metrics.checks_failed
    };
    counter.increment(1);
    let mut health = state.health();
    let first = health.checked.is_none();
    health.streak = if health.checked == Some(pass) {
        health.streak + 1
    } else {
        1
    };
    let cause = match (&result.status, &result.error) {
        (Some(s), None) => format!("health check passed (status {s})"),
        (_, Some(e)) => format!("health check failed: {e}"),
        (None, None) => "health check".to_string(),
    };
    health.last_probe = Some(result);
    health.checked = Some(pass);
    if pass && health.down {
        // A newcomer that starts unusable (first probe) needs one pass; a
        // fallen endpoint needs healthy_threshold passes in a row.
        if first || health.streak >= config.healthy_threshold {
            health.down = false;
        }
    } else if !pass && !health.down && health.streak >= config.unhealthy_threshold {
        health.down = true;
    }
    state.refresh(&health, &cause)
}

async fn run<N: UsabilityListener>(
    listener: Arc<N>,
    upstream: Arc<str>,
    endpoint: Endpoint,
    config: HealthCheckConfig,
    cancel: CancellationToken,
) {
    let client = probe_client(config.timeout);
    loop {
        let (pass, result) = tokio::select! {
            r = probe(&client, &endpoint.address, &config) => r,
            () = cancel.cancelled() => return,
        };
        if apply_probe(&endpoint.state, &config, pass, result) {
            listener.usability_changed(&upstream);
        }
        let jitter = 0.9 + 0.2 * fastrand::f64();
        let pause = config.interval.mul_f64(jitter);
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = cancel.cancelled() => return,
        }
    }
}

/// Feeds one attempt's result to passive checks. `failure` names the cause
/// (connect error, reset, status 5xx), or is `None` for a good response.
pub fn passive_result<N: UsabilityListener>(
    listener: &Arc<N>,
    upstream: &Upstream,
    index: usize,
    failure: Option<&str>,
) {
    let Some(config) = &upstream.outlier else {
        return;
    };
    let state = &upstream.endpoints[index].state;
    let Some(cause) = failure else {
        state.passive_success();
        return;
    };
    state.passive_failure_seen();
    let (ejected, total) = upstream.ejected_count();
    // The runtime's clock (the same as the system's, unless a test paused
    // it), as the timer that ends the ejection runs on it.
    let now = tokio::time::Instant::now().into_std();
    let mut health = state.health();
    match health.outlier.failure(config, now, ejected, total) {
        Verdict::Keep => {}
        Verdict::Refused => {
            tracing::warn!(
                upstream = %upstream.name,
                endpoint = %state.address,
                cause,
                max_ejected_percent = config.max_ejected_percent,
                "not ejected: max_ejected_percent reached"
            );
        }
        Verdict::Eject(duration) => {
            let why = format!(
                "{} consecutive failures, last: {cause}",
                config.consecutive_failures
            );
            health.ejection_cause = Some(why.clone());
            state.metrics.ejections.increment(1);
            tracing::warn!(upstream = %upstream.name, endpoint = %state.address, ?duration, "endpoint ejected");
            let changed = state.refresh(&health, &format!("ejected for {duration:?}: {why}"));
            drop(health);
            if changed {
                listener.usability_changed(&upstream.name);
            }
            let listener = Arc::clone(listener);
            let state = Arc::clone(state);
            let name = upstream.name.clone();
            tokio::spawn(async move {
                tokio::time::sleep(duration).await;
                let changed = {
                    let mut health = state.health();
                    if health
                        .outlier
                        .expire(tokio::time::Instant::now().into_std())
                    {
                        state.refresh(&health, "ejection time over")
                    } else {
                        false
                    }
                };
                if changed {
                    listener.usability_changed(&name);
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::testing::endpoints;
    use crate::config::StatusRanges;

    fn config(healthy: u32, unhealthy: u32) -> HealthCheckConfig {
        HealthCheckConfig {
            path: "/healthz".into(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            healthy_threshold: healthy,
            unhealthy_threshold: unhealthy,
            expect_status: StatusRanges::parse("200-399").unwrap(),
            initial_usable: true,
        }
    }

    fn probe(status: u16) -> Probe {
        Probe {
            status: Some(status),
            latency: Duration::from_millis(1),
            at: SystemTime::now(),
            error: (status >= 400).then(|| "bad".to_string()),
        }
    }

    /// Counts what it is told.
    #[derive(Default)]
    struct Told(std::sync::atomic::AtomicUsize);

    impl UsabilityListener for Told {
        fn usability_changed(&self, _: &str) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_ejection_ends_when_its_time_is_over() {
        let text = r#"
[[listener]]
name = "l"
bind = "127.0.0.1:0"
[upstream.u]
endpoints = [{ address = "10.0.0.1:80" }, { address = "10.0.0.2:80" }]
[upstream.u.outlier]
consecutive_failures = 2
ejection_time = "30s"
"#;
        let config = crate::config::parse(std::path::Path::new("t.toml"), text).unwrap();
        let metrics = crate::metrics::Metrics::disabled();
        let upstream = Upstream::build(&config.upstreams[0], None, &metrics);
        let told = Arc::new(Told::default());
        let state = &upstream.endpoints[0].state;
        let times_told = || told.0.load(std::sync::atomic::Ordering::SeqCst);

        passive_result(&told, &upstream, 0, Some("connect error"));
        assert!(state.is_usable(), "one failure of two");
        passive_result(&told, &upstream, 0, Some("connect error"));
        assert!(!state.is_usable(), "ejected at the second failure");
        assert_eq!(times_told(), 1);
        // The task that ends the ejection starts its timer now.
        tokio::task::yield_now().await;

        // A second short of the ejection time: still out.
        tokio::time::advance(Duration::from_secs(29)).await;
        tokio::task::yield_now().await;
        assert!(!state.is_usable());
        // At the ejection time the endpoint is back, and the balancer told.
        tokio::time::advance(Duration::from_secs(1)).await;
        for _ in 0..100 {
            if state.is_usable() {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(state.is_usable(), "back after ejection_time");
        assert_eq!(times_told(), 2);
    }

    #[test]
    fn thresholds_flip_the_state() {
        let eps = endpoints(&[1]);
        let s = &eps[0].state;
        let c = config(2, 3);
        assert!(!apply_probe(s, &c, true, probe(200)));
        assert!(!apply_probe(s, &c, false, probe(500)));
        assert!(!apply_probe(s, &c, false, probe(500)));
        assert!(s.is_usable());
        assert!(
            apply_probe(s, &c, false, probe(500)),
            "third failure in a row"
        );
        assert!(!s.is_usable());
        assert!(!apply_probe(s, &c, true, probe(200)));
        assert!(!apply_probe(s, &c, false, probe(500)), "streak broken");
        assert!(!apply_probe(s, &c, true, probe(200)));
        assert!(apply_probe(s, &c, true, probe(200)), "two passes in a row");
        assert!(s.is_usable());
        assert_eq!(s.health().streak, 2);
    }
}
