//! fulcrum's answer to a request refused before any server side read it
//! (or a GOAWAY to a client that negotiated HTTP/2 and sent no preface),
//! written whole; then the connection closes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;

use super::connection_state::End;
use super::socket::{Socket, Transport};
use crate::http1::Refusal;
use crate::proxy::ProxyError;

/// fulcrum's answer to a request refused before any server side read it
/// (or a GOAWAY to a client that negotiated HTTP/2 and sent no preface),
/// written whole, then the connection closes.
pub(super) struct Refusing<S> {
    io: Socket<S>,
    out: Vec<u8>,
    written: usize,
}

/// An HTTP/2 GOAWAY frame (RFC 9113 section 6.8): last stream 0,
/// PROTOCOL_ERROR.
pub(super) const GOAWAY_PROTOCOL_ERROR: &[u8] =
    &[0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

impl<S: Transport> Refusing<S> {
    pub(super) fn new(io: Socket<S>, refusal: Refusal) -> Self {
        tracing::debug!(%refusal, client = %io.state.client, "request refused");
        Self {
            io,
            out: ProxyError::Framing(refusal).to_http1_closing(),
            written: 0,
        }
    }

    /// Writes `out` and closes.
    pub(super) fn bytes(io: Socket<S>, out: &[u8]) -> Self {
        Self {
            io,
            out: out.to_vec(),
            written: 0,
        }
    }

    pub(super) fn poll(&mut self, task: &mut Context<'_>) -> Poll<End> {
        while self.written < self.out.len() {
            match std::task::ready!(
                Pin::new(&mut self.io).poll_write(task, &self.out[self.written..])
            ) {
                Ok(0) => return Poll::Ready(End::Io(io::ErrorKind::WriteZero.into())),
                Ok(n) => self.written += n,
                Err(error) => return Poll::Ready(End::Io(error)),
            }
        }
        let _ = std::task::ready!(Pin::new(&mut self.io).poll_shutdown(task));
        Poll::Ready(End::Closed)
    }
}
