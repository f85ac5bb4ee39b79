//! The one place where failures become responses (SPEC §Errors).
//!
//! Deep code returns a typed [`ProxyError`]; [`ProxyError::status`] maps every
//! variant with an exhaustive match, and the body is a plain-text sentence
//! naming the cause. The sentence names the upstream, never an endpoint's
//! address: a client does not learn the internal topology. The address is
//! in the error's fields, for the log ([`ProxyError::endpoint`]) and the
//! access log.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};

use super::response_body::ResponseBody;

/// Why fulcrum answered a request itself.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("malformed request: {0}")]
    BadRequest(&'static str),
    /// The request breaks the HTTP/1.1 framing rules (`http1::fields`).
    #[error("{0}")]
    Framing(crate::http1::Refusal),
    #[error("no route matches this request")]
    NoRoute,
    #[error("request body stalled longer than server.body_read_timeout")]
    BodyTimeout,
    #[error("request body is larger than server.max_request_body")]
    BodyTooLarge,
    #[error("request head is larger than server.max_header_bytes")]
    HeadersTooLarge,
    #[error("the client stopped sending the request body")]
    ClientBodyAborted,
    #[error("an endpoint of upstream {upstream} refused the connection or could not be reached")]
    ConnectFailed {
        upstream: Arc<str>,
        endpoint: Arc<str>,
        #[source]
        source: crate::upstream::client::Error,
    },
    #[error(
        "an endpoint of upstream {upstream} did not accept a connection within connect_timeout"
    )]
    ConnectTimeout {
        upstream: Arc<str>,
        endpoint: Arc<str>,
        #[source]
        source: crate::upstream::client::Error,
    },
    #[error("an endpoint of upstream {upstream} reset or closed the connection")]
    Reset {
        upstream: Arc<str>,
        endpoint: Arc<str>,
        #[source]
        source: crate::upstream::client::Error,
    },
    #[error("an endpoint of upstream {upstream} sent an invalid response")]
    InvalidResponse {
        upstream: Arc<str>,
        endpoint: Arc<str>,
        #[source]
        source: crate::upstream::client::Error,
    },
    #[error("no usable endpoint in upstream {upstream}")]
    NoUsableEndpoint { upstream: Arc<str> },
    #[error("an endpoint of upstream {upstream} sent no response headers within response_timeout")]
    ResponseTimeout {
        upstream: Arc<str>,
        endpoint: Arc<str>,
    },
}

impl ProxyError {
    /// The endpoint the failure happened at, for the log.
    pub fn endpoint(&self) -> Option<&str> {
        match self {
            ProxyError::ConnectFailed { endpoint, .. }
            | ProxyError::ConnectTimeout { endpoint, .. }
            | ProxyError::Reset { endpoint, .. }
            | ProxyError::InvalidResponse { endpoint, .. }
            | ProxyError::ResponseTimeout { endpoint, .. } => Some(endpoint),
            _ => None,
        }
    }

    /// The status SPEC assigns to this failure.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) | ProxyError::ClientBodyAborted => StatusCode::BAD_REQUEST,
            ProxyError::Framing(refusal) => refusal.status(),
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::ConnectFailed { .. }
            | ProxyError::ConnectTimeout { .. }
            | ProxyError::Reset { .. }
            | ProxyError::InvalidResponse { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::NoUsableEndpoint { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::ResponseTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// Whether the downstream connection should close after this answer,
    /// because the rest of the request cannot be trusted or read.
    pub fn closes_connection(&self) -> bool {
        match self {
            ProxyError::BadRequest(_)
            | ProxyError::Framing(_)
            | ProxyError::BodyTimeout
            | ProxyError::BodyTooLarge
            | ProxyError::ClientBodyAborted => true,
            ProxyError::NoRoute
            | ProxyError::HeadersTooLarge
            | ProxyError::ConnectFailed { .. }
            | ProxyError::ConnectTimeout { .. }
            | ProxyError::Reset { .. }
            | ProxyError::InvalidResponse { .. }
            | ProxyError::NoUsableEndpoint { .. }
            | ProxyError::ResponseTimeout { .. } => false,
        }
    }

    /// The plain-text cause this failure's response carries.
    fn text(&self) -> String {
        let status = self.status();
        format!(
            "{} {}: {self}\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        )
    }

    /// The whole HTTP/1.1 response for this failure, closing the
    /// connection: for a request refused before any server side read it
    /// (the listener's follower of the request stream).
    pub fn to_http1_closing(&self) -> Vec<u8> {
        let status = self.status();
        let text = self.text();
        format!(
            "HTTP/1.1 {} {}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
             connection: close\r\ndate: {}\r\n\r\n{text}",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            text.len(),
            httpdate::fmt_http_date(std::time::SystemTime::now()),
        )
        .into_bytes()
    }

    /// The plain-text response for this failure.
    pub fn to_response(&self) -> Response<ResponseBody> {
        let status = self.status();
        let text = self.text();
        let mut response = Response::new(ResponseBody::full(Bytes::from(text)));
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        if self.closes_connection() {
            response
                .headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(ProxyError::NoRoute.status(), 404);
        assert_eq!(ProxyError::BodyTooLarge.status(), 413);
        assert_eq!(ProxyError::HeadersTooLarge.status(), 431);
        assert_eq!(ProxyError::BodyTimeout.status(), 408);
        assert_eq!(
            ProxyError::NoUsableEndpoint {
                upstream: "api".into()
            }
            .status(),
            503
        );
        let r = ProxyError::NoRoute.to_response();
        assert_eq!(r.headers()[CONTENT_TYPE], "text/plain");
    }

    #[test]
    fn no_endpoint_address_reaches_the_client() {
        let error = ProxyError::ResponseTimeout {
            upstream: "api".into(),
            endpoint: "10.0.0.7:8000".into(),
        };
        assert!(!error.text().contains("10.0.0.7"), "{}", error.text());
        assert!(error.text().contains("upstream api"));
        assert_eq!(error.endpoint(), Some("10.0.0.7:8000"));
    }
}
