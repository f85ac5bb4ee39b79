//! Why an exchange with an endpoint failed.

use std::io;

use crate::body::BodyError;

/// Why an exchange with an endpoint failed.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// Writing or reading failed, or the endpoint closed the connection
    /// before a whole response head came.
    #[error("connection to the endpoint failed: {0}")]
    Io(#[source] io::Error),
    /// The endpoint's response was not valid HTTP/1.1.
    #[error("invalid response: {0}")]
    Invalid(&'static str),
    /// The client's request body failed (too large, stalled, aborted).
    #[error(transparent)]
    Body(#[from] BodyError),
}
