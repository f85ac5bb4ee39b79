//! The request body on its way to an endpoint: the client's body, streamed
//! under `max_request_body` and `body_read_timeout`, judged by the follower
//! of the request stream as it comes. Below both the request path
//! (`proxy/`), which builds it, and the endpoint clients (`upstream/`),
//! which send it.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Sleep;

use crate::http1::Refusal;
use crate::http1::stream::Verdicts;

/// Where an unread request body goes back when the attempt that owned it
/// failed, so that a retry can send it.
pub type BodySlot = Arc<Mutex<Option<Incoming>>>;

/// A request's place in its connection's request stream, as the follower
/// judged it: its head, and its body while it comes.
#[derive(Debug, Clone)]
pub struct MessageVerdict {
    pub verdicts: Arc<Verdicts>,
    pub index: u64,
}

impl MessageVerdict {
    /// Why the request breaks the HTTP/1.1 framing rules, if it does (so
    /// far: its body is judged as it comes).
    pub fn refusal(&self) -> Option<Refusal> {
        self.verdicts.refusal_of(self.index)
    }
}

/// The body sent to an endpoint: the client's body, streamed, under
/// `max_request_body` and `body_read_timeout`.
#[derive(Debug)]
pub struct RequestBody {
    inner: Option<Incoming>,
    limit: u64,
    read: u64,
    timeout: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
    /// Whether a frame was handed on: after that the body cannot be replayed.
    started: bool,
    /// Where an unread body goes back when the attempt that owned it failed,
    /// so a retry can send it (present only when a retry could use it).
    slot: Option<BodySlot>,
    /// The follower's verdict on the request, for a body hyper decodes.
    message: Option<MessageVerdict>,
}

/// Why the request body stopped.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body exceeds server.max_request_body")]
    TooLarge,
    #[error("request body stalled past server.body_read_timeout")]
    Timeout,
    #[error("reading the request body failed: {0}")]
    Client(#[source] hyper::Error),
    #[error("request body does not match its Content-Length")]
    Length,
    #[error("request body framing: {0}")]
    Framing(Refusal),
}

impl RequestBody {
    /// The client's body (`None`: none at all) for one attempt, under the
    /// server's limits; `slot` takes it back if the attempt never read it.
    pub fn new(
        inner: Option<Incoming>,
        limit: u64,
        timeout: Duration,
        slot: Option<BodySlot>,
        message: Option<MessageVerdict>,
    ) -> Self {
        Self {
            inner,
            limit,
            read: 0,
            timeout,
            sleep: None,
            armed: false,
            started: false,
            slot,
            message,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.started = true;
                this.armed = false;
                // The follower read these bytes first: a chunk line it
                // refuses is known by now.
                if let Some(refusal) = this.message.as_ref().and_then(MessageVerdict::refusal) {
                    this.inner = None;
                    return Poll::Ready(Some(Err(BodyError::Framing(refusal))));
                }
                if let Some(data) = frame.data_ref() {
                    this.read += data.len() as u64;
                    if this.limit > 0 && this.read > this.limit {
                        return Poll::Ready(Some(Err(BodyError::TooLarge)));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.started = true;
                Poll::Ready(Some(Err(BodyError::Client(e))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                // One timer per body, armed only while waiting.
                let deadline = crate::clock::now() + this.timeout;
                if !this.armed {
                    this.armed = true;
                    match &mut this.sleep {
                        Some(sleep) => sleep.as_mut().reset(deadline),
                        None => this.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
                    }
                }
                let sleep = this.sleep.as_mut().expect("armed above");
                ready!(sleep.as_mut().poll(cx));
                this.started = true;
                Poll::Ready(Some(Err(BodyError::Timeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or(SizeHint::with_exact(0), Body::size_hint)
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        if !self.started
            && let (Some(inner), Some(slot)) = (self.inner.take(), &self.slot)
            && let Ok(mut slot) = slot.lock()
        {
            *slot = Some(inner);
        }
    }
}
