//! Metrics (SPEC §4): names, descriptions, the per-instance registry, and the
//! handle structs the request path records through.
//!
//! Each [`Fulcrum`](crate::Fulcrum) owns its registry (a Prometheus recorder
//! that is not installed globally), so several instances in one process keep
//! separate counts. Handles are registered when a snapshot or an endpoint is
//! built; the request path only increments them, never builds a label set.
//! Gauges that mirror state (in-flight, usable, connections, generation) are
//! set from the atomics when /metrics is scraped, not on every request.

use std::sync::{Arc, OnceLock};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Metadata, Recorder, SharedString};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

pub const REQUESTS_TOTAL: &str = "fulcrum_requests_total";
pub const REQUEST_DURATION: &str = "fulcrum_request_duration_seconds";
pub const UPSTREAM_REQUESTS_TOTAL: &str = "fulcrum_upstream_requests_total";
pub const UPSTREAM_RESPONSE_DURATION: &str = "fulcrum_upstream_response_duration_seconds";
pub const UPSTREAM_IN_FLIGHT: &str = "fulcrum_upstream_in_flight";
pub const UPSTREAM_CONNECT_ERRORS: &str = "fulcrum_upstream_connect_errors_total";
pub const UPSTREAM_RETRIES: &str = "fulcrum_upstream_retries_total";
pub const ENDPOINT_USABLE: &str = "fulcrum_endpoint_usable";
pub const UPSTREAM_USABLE_ENDPOINTS: &str = "fulcrum_upstream_usable_endpoints";
pub const ENDPOINT_STATE_CHANGES: &str = "fulcrum_endpoint_state_changes_total";
pub const ENDPOINT_EJECTIONS: &str = "fulcrum_endpoint_ejections_total";
pub const HEALTH_CHECKS: &str = "fulcrum_health_checks_total";
pub const DOWNSTREAM_CONNECTIONS: &str = "fulcrum_downstream_connections";
pub const DOWNSTREAM_PARKED: &str = "fulcrum_downstream_connections_parked";
pub const DOWNSTREAM_PARKS: &str = "fulcrum_downstream_parks_total";
pub const CONFIG_RELOADS: &str = "fulcrum_config_reloads_total";
pub const CONFIG_GENERATION: &str = "fulcrum_config_generation";
pub const UPSTREAM_FAILING_OPEN: &str = "fulcrum_upstream_failing_open";
pub const BUILD_INFO: &str = "fulcrum_build_info";
pub const ACCESS_LOG_DROPPED: &str = "fulcrum_access_log_dropped_total";
pub const UPSTREAM_FAIL_OPEN_REQUESTS: &str = "fulcrum_upstream_fail_open_requests_total";
pub const DOWNSTREAM_H2_REFUSED: &str = "fulcrum_downstream_h2_refused_total";
pub const DOWNSTREAM_TLS_FAILED: &str = "fulcrum_downstream_tls_handshake_failures_total";
pub const DOWNSTREAM_ACCEPT_ERRORS: &str = "fulcrum_downstream_accept_errors_total";
pub const DISCOVERY_RESOLUTIONS: &str = "fulcrum_discovery_resolutions_total";
pub const DISCOVERY_ENDPOINTS: &str = "fulcrum_discovery_endpoints";
pub const DISCOVERY_LAST_SUCCESS: &str = "fulcrum_discovery_last_success_timestamp_seconds";
pub const UPSTREAM_KEYS_MOVED: &str = "fulcrum_upstream_keys_moved_ratio";
pub const ENDPOINT_SLOW_START: &str = "fulcrum_endpoint_slow_start";

/// How often buffered histogram samples are folded into buckets. The fold
/// runs on a worker's thread and takes about 6 ns per sample: every 5 s it
/// held a busy one-worker proxy for 3.7 ms (65,000 requests/s, two samples
/// each); every second, 0.7-0.9 ms (75,000 requests/s).
pub const UPKEEP: std::time::Duration = std::time::Duration::from_secs(1);

/// Histogram buckets in seconds: 0.5 ms to 30 s.
pub const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

const DESCRIPTIONS: &[(&str, &str)] = &[
    (
        DISCOVERY_RESOLUTIONS,
        "DNS resolutions of a discovered upstream: success, failure (changed nothing), held (a mass removal held back).",
    ),
    (
        DISCOVERY_ENDPOINTS,
        "Endpoints of a discovered upstream from the answer in use.",
    ),
    (
        DISCOVERY_LAST_SUCCESS,
        "Unix time of a discovered upstream's last successful resolution.",
    ),
    (
        UPSTREAM_KEYS_MOVED,
        "Share of the hash space whose endpoint changed at the upstream's last change of membership or usability (consistent_hash, maglev; 0 otherwise).",
    ),
    (
        ENDPOINT_SLOW_START,
        "An endpoint's slow-start share: from 0.1 when it joins or returns to 1 (full share).",
    ),
    (
        REQUESTS_TOTAL,
        "Requests answered, by listener, route, upstream and status code sent.",
    ),
    (
        REQUEST_DURATION,
        "Time from receiving a request to the end of its response, by route and upstream.",
    ),
    (
        UPSTREAM_REQUESTS_TOTAL,
        "Responses received from endpoints, by status code.",
    ),
    (
        UPSTREAM_RESPONSE_DURATION,
        "Time from sending a request to an endpoint to its response headers.",
    ),
    (UPSTREAM_IN_FLIGHT, "Requests in flight on an endpoint."),
    (
        UPSTREAM_CONNECT_ERRORS,
        "Connections to an endpoint that failed or timed out.",
    ),
    (
        UPSTREAM_RETRIES,
        "Retries: attempts after the first, each on another endpoint.",
    ),
    (
        ENDPOINT_USABLE,
        "1 when the endpoint is usable (not down, not ejected, weight > 0).",
    ),
    (
        UPSTREAM_USABLE_ENDPOINTS,
        "Usable endpoints of an upstream.",
    ),
    (
        ENDPOINT_STATE_CHANGES,
        "Changes of an endpoint between usable and unusable.",
    ),
    (
        ENDPOINT_EJECTIONS,
        "Ejections of an endpoint by passive checks.",
    ),
    (HEALTH_CHECKS, "Active health probes, by result."),
    (
        DOWNSTREAM_CONNECTIONS,
        "Open client connections, by listener.",
    ),
    (
        DOWNSTREAM_PARKED,
        "Idle HTTP/1 client connections parked (holding no buffers), by listener.",
    ),
    (
        DOWNSTREAM_PARKS,
        "Times an idle HTTP/1 client connection parked, by listener.",
    ),
    (
        DOWNSTREAM_H2_REFUSED,
        "HTTP/2 client connections closed for crossing a limit, by listener and cause.",
    ),
    (
        DOWNSTREAM_TLS_FAILED,
        "TLS handshakes that failed, by listener and cause (error or timeout); counted, not logged, as a client can cause them at will.",
    ),
    (
        DOWNSTREAM_ACCEPT_ERRORS,
        "Failed accepts (out of file descriptors and the like), by listener.",
    ),
    (CONFIG_RELOADS, "Config reloads, by result."),
    (
        CONFIG_GENERATION,
        "Generation of the config in use; grows with every successful reload.",
    ),
    (
        UPSTREAM_FAILING_OPEN,
        "1 while an upstream with fail_open has no usable endpoint and uses all of them.",
    ),
    (
        BUILD_INFO,
        "Always 1; the version label names the running build.",
    ),
    (
        ACCESS_LOG_DROPPED,
        "Access log lines dropped because the writer fell behind.",
    ),
];

/// The registry of one fulcrum instance.
pub struct Metrics {
    recorder: Option<PrometheusRecorder>,
    handle: Option<PrometheusHandle>,
}

/// Counters by status code for one label set, registered on first use of a
/// code; the codes below have slots so that later uses are one atomic load.
pub struct CodeCounters {
    metrics: Arc<Metrics>,
    name: &'static str,
    labels: Vec<Label>,
    slots: [OnceLock<Counter>; COMMON_CODES.len()],
}

const COMMON_CODES: [u16; 26] = [
    200, 201, 202, 204, 206, 301, 302, 303, 304, 307, 308, 400, 401, 403, 404, 405, 408, 409, 413,
    429, 431, 499, 500, 502, 503, 504,
];

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("enabled", &self.recorder.is_some())
            .finish()
    }
}

impl std::fmt::Debug for CodeCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodeCounters")
            .field("name", &self.name)
            .field("labels", &self.labels)
            .finish()
    }
}

impl Metrics {
    /// A registry that records and renders.
    pub fn new() -> Arc<Self> {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
            .expect("buckets are not empty");
        let recorder = builder.build_recorder();
        for (name, help) in DESCRIPTIONS {
            let key = KeyName::from(*name);
            let help = SharedString::from(*help);
            recorder.describe_counter(key.clone(), None, help.clone());
            recorder.describe_gauge(key.clone(), None, help.clone());
            recorder.describe_histogram(key, None, help);
        }
        let handle = recorder.handle();
        let metrics = Arc::new(Self {
            recorder: Some(recorder),
            handle: Some(handle),
        });
        metrics
            .gauge(BUILD_INFO, &[("version", env!("CARGO_PKG_VERSION"))])
            .set(1.0);
        metrics
    }

    /// A registry whose handles do nothing (benchmarks measure against it).
    pub fn disabled() -> Arc<Self> {
        Arc::new(Self {
            recorder: None,
            handle: None,
        })
    }

    fn key(name: &'static str, labels: &[(&str, &str)]) -> Key {
        let labels: Vec<Label> = labels
            .iter()
            .map(|(k, v)| Label::new(k.to_string(), v.to_string()))
            .collect();
        Key::from_parts(name, labels)
    }

    fn metadata() -> Metadata<'static> {
        Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()))
    }

    pub fn counter(&self, name: &'static str, labels: &[(&str, &str)]) -> Counter {
        match &self.recorder {
            Some(r) => r.register_counter(&Self::key(name, labels), &Self::metadata()),
            None => Counter::noop(),
        }
    }

    pub fn gauge(&self, name: &'static str, labels: &[(&str, &str)]) -> Gauge {
        match &self.recorder {
            Some(r) => r.register_gauge(&Self::key(name, labels), &Self::metadata()),
            None => Gauge::noop(),
        }
    }

    pub fn histogram(&self, name: &'static str, labels: &[(&str, &str)]) -> Histogram {
        match &self.recorder {
            Some(r) => r.register_histogram(&Self::key(name, labels), &Self::metadata()),
            None => Histogram::noop(),
        }
    }

    /// Counters of `name` by status code, with `labels` plus `code`.
    pub fn by_code(self: &Arc<Self>, name: &'static str, labels: &[(&str, &str)]) -> CodeCounters {
        CodeCounters {
            metrics: Arc::clone(self),
            name,
            labels: labels
                .iter()
                .map(|(k, v)| Label::new(k.to_string(), v.to_string()))
                .collect(),
            slots: Default::default(),
        }
    }

    /// Folds buffered histogram samples into their buckets. The exporter
    /// keeps raw samples until a render or an upkeep; with no scraper they
    /// would grow with every request, so `Fulcrum::serve` runs this every
    /// [`UPKEEP`].
    pub fn run_upkeep(&self) {
        if let Some(handle) = &self.handle {
            handle.run_upkeep();
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        self.handle
            .as_ref()
            .map(PrometheusHandle::render)
            .unwrap_or_default()
    }
}

impl CodeCounters {
    /// The counter for status `code`.
    #[inline]
    pub fn get(&self, code: u16) -> Counter {
        match COMMON_CODES.binary_search(&code) {
            Ok(slot) => self.slots[slot].get_or_init(|| self.register(code)).clone(),
            Err(_) => self.register(code),
        }
    }

    fn register(&self, code: u16) -> Counter {
        let Some(recorder) = &self.metrics.recorder else {
            return Counter::noop();
        };
        let mut labels = self.labels.clone();
        labels.push(Label::new("code", code.to_string()));
        recorder.register_counter(&Key::from_parts(self.name, labels), &Metrics::metadata())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_sorted_for_binary_search() {
        assert!(COMMON_CODES.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn renders_what_was_recorded_with_help() {
        let m = Metrics::new();
        let by_code = m.by_code(
            REQUESTS_TOTAL,
            &[("listener", "l"), ("route", "r"), ("upstream", "u")],
        );
        by_code.get(200).increment(2);
        by_code.get(418).increment(1);
        m.histogram(REQUEST_DURATION, &[("route", "r"), ("upstream", "u")])
            .record(0.003);
        let text = m.render();
        assert!(
            text.contains("# HELP fulcrum_requests_total Requests answered"),
            "{text}"
        );
        assert!(
            text.contains(
                r#"fulcrum_requests_total{listener="l",route="r",upstream="u",code="200"} 2"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"code="418"} 1"#), "{text}");
        assert!(
            text.contains(
                r#"fulcrum_request_duration_seconds_bucket{route="r",upstream="u",le="0.005"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"fulcrum_build_info{version=""#), "{text}");
    }

    #[test]
    fn disabled_registries_record_nothing() {
        let m = Metrics::disabled();
        m.counter(UPSTREAM_RETRIES, &[("upstream", "u")])
            .increment(1);
        assert_eq!(m.render(), "");
    }
}
