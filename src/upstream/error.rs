//! Why an attempt to an endpoint failed, as the request path asks it:
//! nothing sent (connect), an invalid response, the client's body.

use std::io;

use super::h1::failure::Failure;
use crate::body::BodyError;

/// What reading an endpoint's response body can fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why an attempt to an endpoint failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Connecting failed or took longer than `connect_timeout`
    /// (`io::ErrorKind::TimedOut`); nothing was sent.
    #[error("connecting: {0}")]
    Connect(#[source] io::Error),
    /// Sending the request or reading the response head failed.
    #[error(transparent)]
    Http1(Failure),
    #[error(transparent)]
    Http2(#[from] hyper_util::client::legacy::Error),
    /// No response head within `response_timeout`.
    #[error("no response within response_timeout")]
    Timeout,
}

impl Error {
    /// Nothing reached the endpoint: connecting failed or timed out.
    pub fn is_connect(&self) -> bool {
        match self {
            Error::Connect(_) => true,
            Error::Http2(e) => e.is_connect(),
            Error::Http1(_) | Error::Timeout => false,
        }
    }

    /// The endpoint's response was not valid HTTP.
    pub fn is_invalid_response(&self) -> bool {
        match self {
            Error::Http1(e) => matches!(e, Failure::Invalid(_)),
            Error::Http2(e) => find_source::<hyper::Error>(e)
                .is_some_and(|e| e.is_parse() || e.is_parse_status() || e.is_parse_too_large()),
            Error::Connect(_) | Error::Timeout => false,
        }
    }

    /// The client's request body failed, not the endpoint.
    pub fn body(&self) -> Option<&BodyError> {
        match self {
            Error::Http1(Failure::Body(e)) => Some(e),
            Error::Http2(e) => find_source(e),
            _ => None,
        }
    }
}

/// The first error of type `T` in `error`'s chain of sources, itself
/// included.
pub fn find_source<'e, T: std::error::Error + 'static>(
    error: &'e (dyn std::error::Error + 'static),
) -> Option<&'e T> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}
