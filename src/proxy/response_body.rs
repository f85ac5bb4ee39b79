//! The body sent to the client, and what is recorded when it is done: the
//! request counter by status, the duration histogram, the access log.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::access_log::Entry;
use crate::listener::connection_state::RequestGuard;
use crate::state::{Shared, Snapshot};
use crate::upstream::RawHead;
use crate::upstream::client::{BoxError, UpstreamBody};
use crate::upstream::endpoint::InFlight;

/// The body sent to the client: an endpoint's response streamed through, or
/// a response fulcrum wrote itself. Guards are released when it is dropped.
#[derive(Debug)]
pub struct ResponseBody {
    pub(super) source: Source,
    pub(super) bytes: u64,
    pub(super) finish: Option<Finish>,
    pub(super) _request: Option<RequestGuard>,
}

#[derive(Debug)]
pub(super) enum Source {
    /// The endpoint's body; for HTTP/1.1 it holds the connection, which goes
    /// back to the pool once the body has ended and closes if the body ends
    /// any other way.
    Upstream {
        inner: UpstreamBody,
        _in_flight: InFlight,
    },
    Full(Option<Bytes>),
}

/// Recorded when the response body is dropped (sent, or the client left):
/// the request counter by status, the duration histogram, the access log.
#[derive(Debug)]
pub(super) struct Finish {
    pub(super) snapshot: Arc<Snapshot>,
    pub(super) listener: usize,
    pub(super) route: Option<usize>,
    pub(super) status: u16,
    pub(super) started: std::time::Instant,
    /// Present only when the access log is on.
    pub(super) log: Option<(Arc<Shared>, Box<Entry>)>,
}

impl ResponseBody {
    /// The endpoint's response fields, when they came as lines and not in
    /// the response's map.
    pub fn raw_head(&self) -> Option<&RawHead> {
        match &self.source {
            Source::Upstream { inner, .. } => inner.raw_head(),
            Source::Full(_) => None,
        }
    }

    /// A complete body written by fulcrum.
    pub fn full(data: Bytes) -> Self {
        Self {
            source: Source::Full(Some(data)),
            bytes: 0,
            finish: None,
            _request: None,
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let frame = match &mut this.source {
            Source::Upstream { inner, .. } => ready!(Pin::new(&mut *inner).poll_frame(cx)),
            Source::Full(data) => data.take().map(|d| Ok(Frame::data(d))),
        };
        if let Some(Ok(f)) = &frame
            && let Some(data) = f.data_ref()
        {
            this.bytes += data.len() as u64;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        match &self.source {
            Source::Upstream { inner, .. } => inner.is_end_stream(),
            Source::Full(data) => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            Source::Upstream { inner, .. } => inner.size_hint(),
            Source::Full(Some(d)) => SizeHint::with_exact(d.len() as u64),
            Source::Full(None) => SizeHint::with_exact(0),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        let Some(finish) = self.finish.take() else {
            return;
        };
        let elapsed = crate::clock::now()
            .into_std()
            .saturating_duration_since(finish.started);
        if let Some(m) = finish.snapshot.route_metrics(finish.listener, finish.route) {
            m.requests.get(finish.status).increment(1);
            m.duration.record(elapsed.as_secs_f64());
        }
        if let Some((shared, mut entry)) = finish.log
            && let Some(log) = &shared.access_log
        {
            entry.bytes = self.bytes;
            entry.duration = elapsed;
            log.log(*entry);
        }
    }
}
