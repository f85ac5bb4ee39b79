//! A response on its way to the client: the head and small pieces copied
//! into one buffer, large body frames queued as they came (not copied), all
//! of it written with as few writes as the socket takes.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use tokio::io::AsyncWrite;

/// Body frames at least this long are queued, not copied: a copy of a
/// small frame costs less than a slice of its own in the write.
pub(super) const SHARE_FROM: usize = 16 * 1024;
/// A copy buffer larger than this (a large body's) is not kept for the
/// next response.
const KEEP: usize = 16 * 1024;
/// Slices handed to one vectored write.
const MAX_SLICES: usize = 64;

/// The bytes of a response not yet written, in order: `copied` (from
/// `written` on), then `queued`, then `tail`.
#[derive(Debug, Default)]
pub(super) struct Output {
    /// The head and what was copied behind it, while nothing is queued.
    copied: Vec<u8>,
    written: usize,
    /// Shared body frames, and the copies that came between them.
    queued: VecDeque<Bytes>,
    /// Copies made since the last queued frame.
    tail: Vec<u8>,
    /// Bytes in `queued`.
    queued_len: usize,
}

impl Output {
    /// Bytes not yet written.
    pub(super) fn len(&self) -> usize {
        self.copied.len() - self.written + self.queued_len + self.tail.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Where bytes to copy go: behind everything so far.
    pub(super) fn copy_buf(&mut self) -> &mut Vec<u8> {
        if self.queued.is_empty() && self.tail.is_empty() {
            &mut self.copied
        } else {
            &mut self.tail
        }
    }

    /// Appends a body frame: queued as it is when large, copied otherwise.
    pub(super) fn push_data(&mut self, data: Bytes) {
        if data.len() < SHARE_FROM {
            self.copy_buf().extend_from_slice(&data);
            return;
        }
        self.seal();
        self.queued_len += data.len();
        self.queued.push_back(data);
    }

    /// Queues the copies made since the last queued frame.
    fn seal(&mut self) {
        if !self.tail.is_empty() {
            let tail = Bytes::from(std::mem::take(&mut self.tail));
            self.queued_len += tail.len();
            self.queued.push_back(tail);
        }
    }

    /// Writes everything; empties the output once all is written.
    pub(super) fn poll_write<T: AsyncWrite + Unpin>(
        &mut self,
        io: &mut T,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        if self.queued.is_empty() && self.tail.is_empty() {
            // Nearly every response: its head and body in one buffer.
            while self.written < self.copied.len() {
                let n = ready!(Pin::new(&mut *io).poll_write(cx, &self.copied[self.written..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.written += n;
            }
            self.reset();
            return Poll::Ready(Ok(()));
        }
        self.seal();
        while !self.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let mut count = 0;
            if self.written < self.copied.len() {
                slices[0] = IoSlice::new(&self.copied[self.written..]);
                count = 1;
            }
            for piece in self.queued.iter().take(MAX_SLICES - count) {
                slices[count] = IoSlice::new(piece);
                count += 1;
            }
            let n = ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices[..count]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.consume(n);
        }
        self.reset();
        Poll::Ready(Ok(()))
    }

    /// Takes `n` written bytes off the front.
    fn consume(&mut self, mut n: usize) {
        let from_copied = n.min(self.copied.len() - self.written);
        self.written += from_copied;
        n -= from_copied;
        while n > 0 {
            let Some(front) = self.queued.front_mut() else {
                break;
            };
            let take = n.min(front.len());
            front.advance(take);
            self.queued_len -= take;
            n -= take;
            if front.is_empty() {
                self.queued.pop_front();
            }
        }
    }

    /// All written: the buffers are ready for the next response.
    fn reset(&mut self) {
        self.written = 0;
        if self.copied.capacity() > KEEP {
            self.copied = Vec::new();
        } else {
            self.copied.clear();
        }
        self.queued.clear();
        self.queued_len = 0;
    }

    /// Everything not yet written, as one buffer (tests).
    #[cfg(test)]
    pub(super) fn pending(&self) -> Vec<u8> {
        let mut all = self.copied[self.written..].to_vec();
        for piece in &self.queued {
            all.extend_from_slice(piece);
        }
        all.extend_from_slice(&self.tail);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes at most `max` bytes a write, and counts writes.
    struct Trickle {
        got: Vec<u8>,
        max: usize,
        writes: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            let n = buf.len().min(this.max);
            this.got.extend_from_slice(&buf[..n]);
            this.writes += 1;
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            let mut left = this.max;
            for buf in bufs {
                let n = buf.len().min(left);
                this.got.extend_from_slice(&buf[..n]);
                left -= n;
            }
            this.writes += 1;
            Poll::Ready(Ok(this.max - left))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn frame(byte: u8, len: usize) -> Bytes {
        Bytes::from(vec![byte; len])
    }

    #[test]
    fn pieces_go_out_in_order_whatever_each_write_takes() {
        for max in [1, 7, 4096, SHARE_FROM + 3, usize::MAX] {
            let mut out = Output::default();
            let mut expected = Vec::new();
            let push_copy = |out: &mut Output, bytes: &[u8], expected: &mut Vec<u8>| {
                out.copy_buf().extend_from_slice(bytes);
                expected.extend_from_slice(bytes);
            };
            push_copy(&mut out, b"HTTP/1.1 200 OK\r\n\r\n", &mut expected);
            for (i, len) in [10, SHARE_FROM, 3, SHARE_FROM * 2, 5]
                .into_iter()
                .enumerate()
            {
                let data = frame(b'a' + i as u8, len);
                expected.extend_from_slice(&data);
                out.push_data(data);
                push_copy(&mut out, b"\r\n", &mut expected);
            }
            assert_eq!(out.pending(), expected);
            assert_eq!(out.len(), expected.len());
            let mut io = Trickle {
                got: Vec::new(),
                max,
                writes: 0,
            };
            let mut cx = Context::from_waker(std::task::Waker::noop());
            assert!(matches!(
                out.poll_write(&mut io, &mut cx),
                Poll::Ready(Ok(()))
            ));
            assert_eq!(io.got, expected, "max {max}");
            assert!(out.is_empty());
            assert_eq!(out.pending(), b"");
        }
    }

    #[test]
    fn a_small_response_is_one_write_and_a_large_one_is_not_copied() {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut io = Trickle {
            got: Vec::new(),
            max: usize::MAX,
            writes: 0,
        };
        let mut out = Output::default();
        out.copy_buf().extend_from_slice(b"head\r\n\r\n");
        out.push_data(frame(b'x', 12));
        assert!(out.queued.is_empty());
        assert!(matches!(
            out.poll_write(&mut io, &mut cx),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(io.writes, 1);

        let data = frame(b'y', SHARE_FROM);
        let at = data.as_ptr();
        out.copy_buf().extend_from_slice(b"head\r\n\r\n");
        out.push_data(data);
        assert_eq!(out.queued.front().map(|b| b.as_ptr()), Some(at));
        assert!(matches!(
            out.poll_write(&mut io, &mut cx),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(io.writes, 2);
        assert_eq!(io.got.len(), 2 * 8 + 12 + SHARE_FROM);
    }
}
