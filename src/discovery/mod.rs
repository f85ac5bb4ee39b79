//! DNS discovery (SPEC §Discovery): the endpoints of an upstream with a
//! `[discovery]` table come from DNS answers.
//!
//! [`Discovery`] is one upstream's record of its answers: the endpoint list
//! in use, the answer held back, the last success and error. It is carried
//! from one snapshot to the next while the upstream's discovery table stays
//! the same. Its task (`task.rs`) resolves at the answer's TTL and hands
//! each answer to [`Discovery::consider`], which decides what it changes:
//! a failed or empty answer changes nothing (fail static); an answer that
//! would remove more than `max_removed_percent` of the endpoints is held
//! until three answers in a row agree; an answer equal to the one in use
//! changes nothing and costs no rebuild. Only a changed list reaches the
//! membership step, the same step a reload and a change of usability take.

mod resolve;
mod task;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

pub use resolve::{Answer, resolve, resolver};
pub use task::{MembershipListener, Supervisor};

use crate::config::{DiscoveryConfig, EndpointConfig};
use crate::metrics::{self as m, Metrics};

/// Answers a held removal needs in a row (the first included).
pub const AGREEING_ANSWERS: u32 = 3;

/// One discovered upstream's answers and what they changed.
#[derive(Debug)]
pub struct Discovery {
    pub upstream: Arc<str>,
    pub config: DiscoveryConfig,
    record: Mutex<Record>,
    metrics: DiscoveryMetrics,
}

#[derive(Debug, Default)]
struct Record {
    /// The endpoint list in use; `None` before the first answer.
    endpoints: Option<Vec<EndpointConfig>>,
    /// An answer held back, and how many answers in a row gave it.
    held: Option<(Vec<EndpointConfig>, u32)>,
    last_success: Option<SystemTime>,
    last_error: Option<String>,
    /// Failed resolutions in a row (the retry backs off).
    failures: u32,
    /// An answer of this table has been applied: until then the endpoints
    /// in use are a reload's (of another table), which its first answer
    /// replaces whatever it removes.
    answered: bool,
}

#[derive(Debug)]
struct DiscoveryMetrics {
    success: metrics::Counter,
    failure: metrics::Counter,
    held: metrics::Counter,
    endpoints: metrics::Gauge,
    last_success: metrics::Gauge,
}

/// What an answer did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The endpoint list changed: the membership step builds the upstream.
    Changed,
    /// Same endpoints as in use.
    Unchanged,
    /// A mass removal, held back.
    Held,
    /// Failed or empty: nothing changed.
    Failed,
}

/// The `discovery` object of /status.
#[derive(Debug, Clone)]
pub struct Status {
    pub endpoints: usize,
    pub last_success: Option<SystemTime>,
    pub last_error: Option<String>,
    pub held: bool,
}

impl Discovery {
    /// The record of `upstream`'s discovery; `serving` is the endpoint list
    /// a reload found in use (kept until the first answer), if any.
    pub fn new(
        upstream: &str,
        config: DiscoveryConfig,
        serving: Option<Vec<EndpointConfig>>,
        metrics: &Metrics,
    ) -> Self {
        let labels = [("upstream", upstream)];
        let with = |result: &'static str| [("upstream", upstream), ("result", result)];
        let metrics = DiscoveryMetrics {
            success: metrics.counter(m::DISCOVERY_RESOLUTIONS, &with("success")),
            failure: metrics.counter(m::DISCOVERY_RESOLUTIONS, &with("failure")),
            held: metrics.counter(m::DISCOVERY_RESOLUTIONS, &with("held")),
            endpoints: metrics.gauge(m::DISCOVERY_ENDPOINTS, &labels),
            last_success: metrics.gauge(m::DISCOVERY_LAST_SUCCESS, &labels),
        };
        for counter in [&metrics.success, &metrics.failure, &metrics.held] {
            counter.increment(0);
        }
        metrics
            .endpoints
            .set(serving.as_ref().map_or(0, Vec::len) as f64);
        Self {
            upstream: upstream.into(),
            config,
            record: Mutex::new(Record {
                endpoints: serving,
                ..Record::default()
            }),
            metrics,
        }
    }

    fn record(&self) -> MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The endpoint list in use; `None` before the first answer.
    pub fn endpoints(&self) -> Option<Vec<EndpointConfig>> {
        self.record().endpoints.clone()
    }

    /// Whether an answer has been applied (or a reload found endpoints in
    /// use): /readyz waits for this.
    pub fn is_ready(&self) -> bool {
        self.record().endpoints.is_some()
    }

    /// For /status.
    pub fn status(&self) -> Status {
        let record = self.record();
        Status {
            endpoints: record.endpoints.as_ref().map_or(0, Vec::len),
            last_success: record.last_success,
            last_error: record.last_error.clone(),
            held: record.held.is_some(),
        }
    }

    /// Takes one resolution's result (endpoints sorted by address, each
    /// once) and decides what it changes; counts and logs it.
    pub fn consider(&self, answer: Result<Vec<EndpointConfig>, String>) -> Outcome {
        let mut record = self.record();
        let endpoints = match answer {
            Ok(endpoints) if !endpoints.is_empty() => endpoints,
            Ok(_) => return self.failed(&mut record, "the answer has no records".into()),
            Err(error) => return self.failed(&mut record, error),
        };
        record.failures = 0;
        let now = SystemTime::now();
        record.last_success = Some(now);
        self.metrics.last_success.set(
            now.duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        );
        if let Some(error) = record.last_error.take() {
            tracing::info!(upstream = %self.upstream, name = %self.config.name, previous_error = %error, "discovery resolves again");
        }
        let outcome = match &record.endpoints {
            Some(current) if *current == endpoints => Outcome::Unchanged,
            Some(current) if record.answered && self.removes_too_many(current, &endpoints) => {
                let agreeing = match &record.held {
                    Some((held, n)) if *held == endpoints => n + 1,
                    _ => 1,
                };
                if agreeing < AGREEING_ANSWERS {
                    if agreeing == 1 {
                        tracing::warn!(
                            upstream = %self.upstream,
                            name = %self.config.name,
                            endpoints = current.len(),
                            answer = endpoints.len(),
                            max_removed_percent = self.config.max_removed_percent,
                            "discovery answer would remove too many endpoints: held until {AGREEING_ANSWERS} answers in a row agree"
                        );
                    }
                    record.held = Some((endpoints, agreeing));
                    self.metrics.held.increment(1);
                    return Outcome::Held;
                }
                tracing::warn!(upstream = %self.upstream, name = %self.config.name, answer = endpoints.len(), "held discovery answer confirmed {AGREEING_ANSWERS} times in a row: applied");
                Outcome::Changed
            }
            _ => Outcome::Changed,
        };
        record.held = None;
        record.answered = true;
        self.metrics.success.increment(1);
        if outcome == Outcome::Changed {
            self.metrics.endpoints.set(endpoints.len() as f64);
            tracing::info!(upstream = %self.upstream, name = %self.config.name, endpoints = endpoints.len(), "discovered endpoints changed");
            record.endpoints = Some(endpoints);
        }
        outcome
    }

    /// Whether going from `current` to `next` removes more than
    /// `max_removed_percent` of `current`.
    fn removes_too_many(&self, current: &[EndpointConfig], next: &[EndpointConfig]) -> bool {
        let removed = current
            .iter()
            .filter(|c| !next.iter().any(|n| n.address == c.address))
            .count();
        removed * 100 > self.config.max_removed_percent as usize * current.len()
    }

    fn failed(&self, record: &mut Record, error: String) -> Outcome {
        record.failures += 1;
        self.metrics.failure.increment(1);
        if record.last_error.as_deref() != Some(error.as_str()) {
            tracing::warn!(upstream = %self.upstream, name = %self.config.name, %error, "discovery failed; the endpoints in use keep serving");
            record.last_error = Some(error);
        }
        Outcome::Failed
    }

    /// When to resolve next after `outcome`: at the answer's TTL within
    /// min_interval and max_interval; after failures, min_interval doubled
    /// per failure in a row, up to max_interval.
    pub fn next_in(&self, ttl: Option<Duration>) -> Duration {
        let (min, max) = (self.config.min_interval, self.config.max_interval);
        match ttl {
            Some(ttl) => ttl.clamp(min, max),
            None => {
                let failures = self.record().failures.clamp(1, 16);
                min.saturating_mul(1 << (failures - 1)).min(max)
            }
        }
    }
}

#[cfg(test)]
mod tests;
