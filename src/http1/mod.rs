//! The HTTP/1.1 rules (RFC 9112), in one place: fulcrum's own server side
//! (`h1_server`), its endpoint client (`upstream::h1`), the field rewrite
//! (`headers`) and the listener's watch over what hyper is handed all read
//! a message's framing, its `Connection` options and its chunk lines
//! through these functions, so that no two of them can disagree on where a
//! message ends.
//!
//! - [`fields`]: `Content-Length`, `Transfer-Encoding`, `Connection`
//!   tokens, the hop-by-hop list, `Host`, and the framing of a request.
//! - [`chunk`]: the chunk-size line, read and written.
//! - [`stream`]: follows the requests of a connection through the bytes
//!   hyper reads, head by head and body by body, and says which message a
//!   rule refuses.

pub mod chunk;
pub mod fields;
pub mod stream;

pub use fields::{Codings, Framing, Lengths, Refusal};

/// Interim (1xx) response heads an endpoint sent before its final
/// response, ready to write, for the server side that serves the request:
/// shared by fulcrum's own HTTP/1.1 connection and the request it is
/// serving (one task: the request pushes, the connection takes and writes
/// before the final head). RFC 9110 section 15.2: a proxy forwards 1xx.
#[derive(Debug, Default)]
pub struct Interim {
    heads: std::sync::Mutex<Vec<u8>>,
    /// Something was pushed and not taken: checked without the lock.
    pending: std::sync::atomic::AtomicBool,
}

impl Interim {
    /// Adds an interim head (status line, fields and the empty line).
    pub fn push(&self, head: &[u8]) {
        if let Ok(mut heads) = self.heads.lock() {
            heads.extend_from_slice(head);
            self.pending
                .store(true, std::sync::atomic::Ordering::Release);
        }
    }

    /// Takes what was pushed; empty when nothing was (a load, no lock:
    /// nearly every request has nothing here).
    #[inline]
    pub fn take(&self) -> Vec<u8> {
        if self.pending.load(std::sync::atomic::Ordering::Acquire) {
            self.take_pushed()
        } else {
            Vec::new()
        }
    }

    #[cold]
    fn take_pushed(&self) -> Vec<u8> {
        self.pending
            .store(false, std::sync::atomic::Ordering::Release);
        self.heads
            .lock()
            .map(|mut heads| std::mem::take(&mut *heads))
            .unwrap_or_default()
    }
}
