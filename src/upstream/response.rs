//! An endpoint's response body, whichever protocol brought it.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::net::TcpStream;

use super::RawHead;
use super::error::BoxError;
use super::h1::Http1Body;

/// An endpoint's response body.
#[derive(Debug)]
pub enum UpstreamBody {
    Http1(Http1Body),
    Http2(Incoming),
    /// Nothing (a 101 response, whose connection went to the upgrade).
    Empty,
}

impl UpstreamBody {
    /// The response's fields, when they came as lines, not in its map.
    pub fn raw_head(&self) -> Option<&RawHead> {
        match self {
            UpstreamBody::Http1(body) => body.raw_head(),
            UpstreamBody::Http2(_) | UpstreamBody::Empty => None,
        }
    }
}

impl UpstreamBody {
    /// The endpoint connection of a 101 response, and the bytes the
    /// endpoint sent after it.
    pub fn into_upgraded(self) -> Option<(TcpStream, Bytes)> {
        match self {
            UpstreamBody::Http1(body) => body.into_upgraded(),
            UpstreamBody::Http2(_) | UpstreamBody::Empty => None,
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpstreamBody::Http1(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            UpstreamBody::Http2(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            UpstreamBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Http1(body) => body.is_end_stream(),
            UpstreamBody::Http2(body) => body.is_end_stream(),
            UpstreamBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Http1(body) => body.size_hint(),
            UpstreamBody::Http2(body) => body.size_hint(),
            UpstreamBody::Empty => SizeHint::with_exact(0),
        }
    }
}
