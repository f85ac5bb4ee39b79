//! A request as an endpoint client sends it, borrowed from the client's.

use http::uri::{Authority, PathAndQuery};
use http::{HeaderMap, Method};
use std::time::Instant;

use crate::headers::Forwarding;

/// A request on its way to an endpoint, borrowed from the client's: HTTP/1.1
/// writes it from here, so an attempt copies nothing.
#[derive(Debug)]
pub struct Outgoing<'a> {
    pub method: &'a Method,
    /// In origin form.
    pub target: &'a PathAndQuery,
    /// The client's fields, not yet rewritten; an HTTP/2 attempt takes them
    /// if it is the last, or copies them.
    pub headers: &'a mut HeaderMap,
    pub last_attempt: bool,
    pub authority: &'a Authority,
    pub forwarding: &'a Forwarding<'a>,
    /// When the attempt started.
    pub sent: Instant,
    /// An HTTP/1.1 endpoint's response fields may come as lines
    /// (`h1::RawHead`) instead of a map: fulcrum's own server side writes
    /// the response.
    pub raw_head: bool,
    /// Where an HTTP/1.1 endpoint's interim (1xx) heads go, when the
    /// client's server side can write them.
    pub interim: Option<&'a crate::http1::Interim>,
}
