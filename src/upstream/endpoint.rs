//! Per-endpoint runtime state: atomics that outlive a snapshot, and the
//! guard that counts a request in flight.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use metrics::{Counter, Gauge, Histogram};

use super::client::UpstreamClient;
use super::outlier::Outlier;
use crate::metrics::{self as m, CodeCounters, Metrics};

/// One endpoint as the current snapshot sees it: its configured address and
/// weight, and the state shared with every snapshot that keeps it.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// As configured; also its metric label.
    pub address: Arc<str>,
    /// The address as a URI authority, parsed once.
    pub authority: http::uri::Authority,
    pub weight: u32,
    /// SRV priority (lower serves first); 0 for configured endpoints.
    pub priority: u16,
    pub state: Arc<EndpointState>,
    /// The keep-alive pool; carried to the next snapshot while the
    /// upstream's connection settings stay the same.
    pub client: Arc<UpstreamClient>,
}

/// What survives a reload for an endpoint kept by (upstream, address).
#[derive(Debug)]
pub struct EndpointState {
    pub upstream: Arc<str>,
    pub address: Arc<str>,
    /// `HEALTHY` (not marked down by active checks, not ejected by passive
    /// ones) and `WEIGHTED` (weight above 0): usable when both are set. One
    /// byte, so the balancers read usability with one load.
    flags: AtomicU8,
    /// Health details behind the flag, for /status and state changes.
    health: Mutex<Health>,
    /// Set by a failure, so that a success takes the health lock only when
    /// there is a streak to end.
    failing: AtomicBool,
    in_flight: AtomicU64,
    requests: AtomicU64,
    /// Requests in flight on every endpoint of the upstream (bounded loads).
    upstream_in_flight: Arc<AtomicU64>,
    /// Peak-EWMA latency estimate in nanoseconds (f64 bits); 0 = none yet.
    ewma_ns: AtomicU64,
    /// When `ewma_ns` was last updated, in ns since the process epoch.
    ewma_at: AtomicU64,
    /// Slow start: the upstream's window in ms (0 = off), set by each build.
    slow_start_ms: AtomicU64,
    /// When the current ramp began, in ms since the process epoch plus one;
    /// 0 = not ramping.
    ramp_from: AtomicU64,
    /// Usable at some time: a return to usable ramps, a first probe's
    /// pass of an endpoint that started unusable does not.
    ever_usable: AtomicBool,
    pub metrics: EndpointMetrics,
}

/// Active and passive health of an endpoint.
#[derive(Debug, Default)]
pub struct Health {
    /// `None` until the first probe (or without active checks).
    pub checked: Option<bool>,
    /// Marked down by active checks.
    pub down: bool,
    /// Consecutive probe results of the current kind.
    pub streak: u32,
    pub last_probe: Option<Probe>,
    pub outlier: Outlier,
    /// Why the current (or last) ejection happened.
    pub ejection_cause: Option<String>,
}

/// One active probe's result.
#[derive(Debug, Clone)]
pub struct Probe {
    pub status: Option<u16>,
    pub latency: Duration,
    pub at: SystemTime,
    pub error: Option<String>,
}

/// The metric handles of one endpoint, registered when it is created.
#[derive(Debug)]
pub struct EndpointMetrics {
    pub responses: CodeCounters,
    pub response_duration: Histogram,
    pub connect_errors: Counter,
    pub in_flight: Gauge,
    pub usable: Gauge,
    pub to_usable: Counter,
    pub to_unusable: Counter,
    pub ejections: Counter,
    pub checks_passed: Counter,
    pub checks_failed: Counter,
    pub slow_start: Gauge,
}

/// Counts one request in flight on an endpoint until dropped, whatever way
/// the request ends (response done, error, timeout, client gone).
#[derive(Debug)]
pub struct InFlight(Arc<EndpointState>);

const HEALTHY: u8 = 1;
const WEIGHTED: u8 = 2;

/// Time constant of the peak-EWMA decay toward observed latencies.
pub const EWMA_DECAY: Duration = Duration::from_secs(10);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Milliseconds since the process epoch on the runtime's clock (the
/// system's, unless a test paused it), which slow-start ramps are measured
/// on.
pub fn now_ms() -> u64 {
    crate::clock::now()
        .into_std()
        .saturating_duration_since(epoch())
        .as_millis() as u64
}

impl EndpointState {
    /// A new endpoint; `initially_down` for `health_check.initial =
    /// "unusable"` (unusable until its first probe passes).
    pub fn new(
        address: (&str, &str),
        weight: u32,
        initially_down: bool,
        upstream_in_flight: Arc<AtomicU64>,
        metrics: EndpointMetrics,
    ) -> Self {
        let up = if initially_down { 0 } else { HEALTHY };
        Self {
            upstream: address.0.into(),
            address: address.1.into(),
            metrics,
            flags: AtomicU8::new(up | if weight > 0 { WEIGHTED } else { 0 }),
            health: Mutex::new(Health {
                down: initially_down,
                ..Health::default()
            }),
            failing: AtomicBool::new(false),
            in_flight: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            upstream_in_flight,
            ewma_ns: AtomicU64::new(0),
            ewma_at: AtomicU64::new(0),
            slow_start_ms: AtomicU64::new(0),
            ramp_from: AtomicU64::new(0),
            ever_usable: AtomicBool::new(!initially_down),
        }
    }

    /// Sets the upstream's slow-start window (each build).
    pub fn set_slow_start(&self, window: Duration) {
        self.slow_start_ms
            .store(window.as_millis() as u64, Ordering::Relaxed);
    }

    /// Starts a ramp now, if slow start is on (an endpoint that joins or
    /// comes back).
    pub fn start_ramp(&self) {
        if self.slow_start_ms.load(Ordering::Relaxed) > 0 {
            self.ramp_from.store(now_ms() + 1, Ordering::Relaxed);
        }
    }

    /// The ramp's progress at `now` (ms since the process epoch): its share
    /// grows linearly from 0.1 to 1 over the window; `None` when not ramping.
    #[inline]
    pub fn ramp_progress_at(&self, now: u64) -> Option<f64> {
        let from = self.ramp_from.load(Ordering::Relaxed);
        if from == 0 {
            return None;
        }
        let window = self.slow_start_ms.load(Ordering::Relaxed);
        let elapsed = (now + 1).saturating_sub(from);
        (elapsed < window).then(|| 0.1 + 0.9 * elapsed as f64 / window as f64)
    }

    /// The ramp's progress now; `None` when not ramping.
    pub fn ramp_progress(&self) -> Option<f64> {
        self.ramp_progress_at(now_ms())
    }

    /// How long the current ramp has to run; `None` when not ramping.
    pub fn ramp_remaining(&self) -> Option<Duration> {
        let from = self.ramp_from.load(Ordering::Relaxed);
        let window = self.slow_start_ms.load(Ordering::Relaxed);
        let end = (from + window).checked_sub(now_ms() + 1)?;
        (from != 0 && end > 0).then(|| Duration::from_millis(end))
    }

    /// Usable: healthy and weight above 0.
    #[inline]
    pub fn is_usable(&self) -> bool {
        self.flags.load(Ordering::Relaxed) == HEALTHY | WEIGHTED
    }

    pub fn set_weight(&self, weight: u32) {
        self.set_flag(WEIGHTED, weight > 0);
    }

    /// Marks the endpoint healthy or not (active and passive checks).
    pub fn set_healthy(&self, healthy: bool) {
        self.set_flag(HEALTHY, healthy);
    }

    fn set_flag(&self, flag: u8, on: bool) {
        if on {
            self.flags.fetch_or(flag, Ordering::Relaxed);
        } else {
            self.flags.fetch_and(!flag, Ordering::Relaxed);
        }
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The health details (brief lock; never held across an await).
    pub fn health(&self) -> MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the usable flag from `health`; on a change, logs it once with
    /// `cause` and counts it. Returns whether usability changed.
    pub fn refresh(&self, health: &Health, cause: &str) -> bool {
        let healthy = !health.down && health.outlier.ejected_until.is_none();
        let was = self.flags.load(Ordering::Relaxed) & HEALTHY != 0;
        if healthy == was {
            return false;
        }
        self.set_healthy(healthy);
        let weighted = self.flags.load(Ordering::Relaxed) & WEIGHTED != 0;
        if healthy && self.ever_usable.swap(true, Ordering::Relaxed) {
            self.start_ramp();
        }
        if healthy {
            self.metrics.to_usable.increment(1);
            tracing::info!(upstream = %self.upstream, endpoint = %self.address, cause, weighted, "endpoint usable");
        } else {
            self.metrics.to_unusable.increment(1);
            tracing::warn!(upstream = %self.upstream, endpoint = %self.address, cause, "endpoint unusable");
        }
        true
    }

    /// Whether passive checks have ejected the endpoint now.
    pub fn is_ejected(&self) -> bool {
        self.health().outlier.ejected_until.is_some()
    }

    /// Notes a good response for passive checks (cheap unless a failure
    /// streak is open).
    pub fn passive_success(&self) {
        if self.failing.swap(false, Ordering::Relaxed) {
            self.health().outlier.success();
        }
    }

    /// Marks that a failure streak is open.
    pub fn passive_failure_seen(&self) {
        self.failing.store(true, Ordering::Relaxed);
    }

    /// The counter of requests in flight across the endpoint's upstream.
    pub fn upstream_in_flight(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.upstream_in_flight)
    }

    /// Requests sent to this endpoint so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Starts counting one request.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.upstream_in_flight.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }

    /// The peak-EWMA latency estimate in nanoseconds; `None` before the
    /// first response.
    pub fn latency_estimate(&self) -> Option<f64> {
        let bits = self.ewma_ns.load(Ordering::Relaxed);
        (bits != 0).then(|| f64::from_bits(bits))
    }

    /// Feeds one observed latency (request sent to response headers) into
    /// the peak-EWMA: a higher latency is taken at once (the peak), a lower
    /// one pulls the estimate down with weight 1 - exp(-dt / EWMA_DECAY).
    /// `sent` and `answered` bound the attempt; the caller has read the
    /// clock already, so this reads it no more.
    pub fn observe_latency(&self, sent: Instant, answered: Instant) {
        let now = answered.saturating_duration_since(epoch()).as_nanos() as u64;
        self.observe_latency_at(answered.saturating_duration_since(sent), now);
    }

    /// [`EndpointState::observe_latency`] at an explicit time (ns since the
    /// process epoch), for simulations.
    pub fn observe_latency_at(&self, latency: Duration, now_ns: u64) {
        let rtt = latency.as_nanos().max(1) as f64;
        let previous = self.latency_estimate();
        let then = self.ewma_at.swap(now_ns, Ordering::Relaxed);
        let next = match previous {
            Some(estimate) if rtt < estimate => {
                let dt = now_ns.saturating_sub(then) as f64;
                let w = (-dt / EWMA_DECAY.as_nanos() as f64).exp();
                estimate * w + rtt * (1.0 - w)
            }
            _ => rtt,
        };
        // Racing updates may lose one observation; the estimate stays sound.
        self.ewma_ns.store(next.to_bits(), Ordering::Relaxed);
    }
}

impl EndpointMetrics {
    pub fn new(metrics: &Arc<Metrics>, upstream: &str, endpoint: &str) -> Self {
        let labels = [("upstream", upstream), ("endpoint", endpoint)];
        let with = |key: &'static str, value: &'static str| {
            [("upstream", upstream), ("endpoint", endpoint), (key, value)]
        };
        Self {
            responses: metrics.by_code(m::UPSTREAM_REQUESTS_TOTAL, &labels),
            response_duration: metrics.histogram(m::UPSTREAM_RESPONSE_DURATION, &labels),
            connect_errors: metrics.counter(m::UPSTREAM_CONNECT_ERRORS, &labels),
            in_flight: metrics.gauge(m::UPSTREAM_IN_FLIGHT, &labels),
            usable: metrics.gauge(m::ENDPOINT_USABLE, &labels),
            to_usable: metrics.counter(m::ENDPOINT_STATE_CHANGES, &with("to", "usable")),
            to_unusable: metrics.counter(m::ENDPOINT_STATE_CHANGES, &with("to", "unusable")),
            ejections: metrics.counter(m::ENDPOINT_EJECTIONS, &labels),
            checks_passed: metrics.counter(m::HEALTH_CHECKS, &with("result", "pass")),
            checks_failed: metrics.counter(m::HEALTH_CHECKS, &with("result", "fail")),
            slow_start: metrics.gauge(m::ENDPOINT_SLOW_START, &labels),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.upstream_in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
