//! The retry policy: how a failed attempt is classified, and whether
//! another endpoint may be tried (`retries`, `retry_on`, the method's
//! safety and whether the body can be sent again).

use std::sync::Arc;

use http::StatusCode;
use hyper::body::Incoming;

use super::error::ProxyError;
use crate::body::{BodyError, BodySlot};
use crate::upstream::Upstream;
use crate::upstream::client::{self, find_source};

/// How one attempt ended when it did not produce a response to return.
pub(super) enum AttemptFailure {
    /// Worth another endpoint if the policy allows.
    Retryable(ProxyError, RetryCause),
    /// Final: answer with this.
    Final(ProxyError),
}

#[derive(Clone, Copy)]
pub(super) enum RetryCause {
    Connect,
    Reset,
    Timeout,
}

/// Whether `retry_on` lists a response with this status.
pub(super) fn retries_status(upstream: &Upstream, status: StatusCode) -> bool {
    match status {
        StatusCode::BAD_GATEWAY => upstream.retry_on.status_502,
        StatusCode::SERVICE_UNAVAILABLE => upstream.retry_on.status_503,
        StatusCode::GATEWAY_TIMEOUT => upstream.retry_on.status_504,
        _ => false,
    }
}

/// Whether `retry_on` lists a failure of this cause, and the request may
/// be repeated after it: one that never left (connect failure) always;
/// otherwise only a safe one, or one whose body was not sent.
pub(super) fn retries_failure(
    upstream: &Upstream,
    cause: RetryCause,
    safe: bool,
    empty_body: bool,
) -> bool {
    let allowed = match cause {
        RetryCause::Connect => upstream.retry_on.connect_failure,
        RetryCause::Reset => upstream.retry_on.reset,
        RetryCause::Timeout => upstream.retry_on.timeout,
    };
    let repeatable = matches!(cause, RetryCause::Connect) || safe || !empty_body;
    allowed && repeatable
}

/// Puts a streamed request body back for another attempt: possible only if
/// the failed attempt never read from it.
pub(super) fn recover_body(body: &mut Option<Incoming>, slot: Option<&BodySlot>) -> bool {
    if body.is_none()
        && let Some(slot) = slot
    {
        *body = slot.lock().ok().and_then(|mut s| s.take());
    }
    body.is_some()
}

/// What a failed attempt is: final (the request body failed) or worth
/// another endpoint, and for which cause.
pub(super) fn classify(
    error: client::Error,
    upstream: &Upstream,
    endpoint: &Arc<str>,
) -> AttemptFailure {
    let upstream_name = upstream.name.clone();
    let endpoint = endpoint.clone();
    if let Some(body) = error.body() {
        return AttemptFailure::Final(match body {
            BodyError::TooLarge => ProxyError::BodyTooLarge,
            BodyError::Timeout => ProxyError::BodyTimeout,
            BodyError::Client(_) | BodyError::Length => ProxyError::ClientBodyAborted,
            BodyError::Framing(refusal) => ProxyError::Framing(*refusal),
        });
    }
    if error.is_connect() {
        let timed_out = find_source::<std::io::Error>(&error)
            .is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut);
        let e = if timed_out {
            ProxyError::ConnectTimeout {
                upstream: upstream_name,
                endpoint,
                source: error,
            }
        } else {
            ProxyError::ConnectFailed {
                upstream: upstream_name,
                endpoint,
                source: error,
            }
        };
        return AttemptFailure::Retryable(e, RetryCause::Connect);
    }
    if error.is_invalid_response() {
        return AttemptFailure::Retryable(
            ProxyError::InvalidResponse {
                upstream: upstream_name,
                endpoint,
                source: error,
            },
            RetryCause::Reset,
        );
    }
    AttemptFailure::Retryable(
        ProxyError::Reset {
            upstream: upstream_name,
            endpoint,
            source: error,
        },
        RetryCause::Reset,
    )
}
