//! Follows the requests of one HTTP/1.1 connection through the bytes
//! hyper's server is handed, message by message, so that every request head
//! is held to [`fields::request_framing`](super::fields::request_framing)
//! (hyper accepts some heads fulcrum refuses: both Content-Length and
//! Transfer-Encoding, codings besides chunked) and every chunk line to
//! [`chunk::parse_size_line`](super::chunk::parse_size_line), however the
//! bytes are cut into reads, whatever the line endings, and pipelined or
//! not.
//!
//! The follower reads each byte before hyper does (it sits in the socket
//! wrapper), so the verdict on the `n`th request is there when hyper hands
//! that request to the proxy. The first refusal ends the following: the
//! message it names and every one after it are refused ([`Verdicts`]).
//! Refusing the rest is what keeps the follower and hyper from ever
//! disagreeing on where a later message begins.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use super::chunk::{MAX_LINE, parse_size_line, trailer_section_end};
use super::fields::{Framing, Refusal, has_token, request_framing};

/// Fields in a request head, as hyper allows by default.
pub const MAX_FIELDS: usize = 100;

/// Where the follower stands in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between messages, or within a head (its bytes in `pending`).
    Head,
    /// This many bytes of a body with a Content-Length are left.
    Body(u64),
    /// A chunk-size line (its bytes so far in `pending`).
    ChunkSize,
    /// This many bytes of chunk data are left, then CR LF.
    ChunkData(u64),
    /// The CR LF after chunk data: how many of its bytes have come.
    ChunkEnd(u8),
    /// The trailer section (its bytes so far in `pending`).
    Trailers,
    /// A refusal was recorded: nothing more is read.
    Stopped,
    /// The last message ended the connection (`Connection: close`, or
    /// HTTP/1.0 without keep-alive): hyper reads no request after it, and
    /// neither does the follower.
    Closed,
}

/// The follower of one connection's requests, from a hand-off to hyper on.
#[derive(Debug)]
pub struct RequestStream {
    state: State,
    /// A head, chunk line or trailer section not complete yet.
    pending: Vec<u8>,
    /// How far `pending` was searched for a head's end, in vain.
    searched: usize,
    /// The index of the message being read (its head counts it).
    message: u64,
    max_head: usize,
    /// The message being read ends the connection.
    last: bool,
}

/// A refusal of the message `message` and every one after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub message: u64,
    pub refusal: Refusal,
}

impl RequestStream {
    /// A follower whose heads may be at most `max_head` bytes (hyper
    /// refuses larger ones itself).
    pub fn new(max_head: usize) -> Self {
        Self {
            state: State::Head,
            pending: Vec::new(),
            searched: 0,
            message: 0,
            max_head,
            last: false,
        }
    }

    /// How many request heads were read.
    pub fn messages(&self) -> u64 {
        self.message
    }

    /// Between two messages: the last one read was whole.
    pub fn between_messages(&self) -> bool {
        matches!(self.state, State::Head | State::Closed) && self.pending.is_empty()
    }

    /// Whether a refusal was found (nothing more is read).
    pub fn stopped(&self) -> bool {
        self.state == State::Stopped
    }

    /// Reads the next bytes of the stream; the refusal, once, when one is
    /// found.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Option<Refused> {
        while !bytes.is_empty() {
            let step = match self.state {
                State::Stopped | State::Closed => return None,
                State::Head if self.last => {
                    self.state = State::Closed;
                    return None;
                }
                State::Head => self.head(bytes),
                State::Body(left) => {
                    let n = left.min(bytes.len() as u64);
                    self.state = match left - n {
                        0 => State::Head,
                        left => State::Body(left),
                    };
                    Ok(n as usize)
                }
                State::ChunkSize => self.chunk_size(bytes),
                State::ChunkData(left) => {
                    let n = left.min(bytes.len() as u64);
                    self.state = match left - n {
                        0 => State::ChunkEnd(0),
                        left => State::ChunkData(left),
                    };
                    Ok(n as usize)
                }
                State::ChunkEnd(seen) => {
                    let expected = b"\r\n"[usize::from(seen)];
                    if bytes[0] != expected {
                        Err(Refusal::BadChunk)
                    } else {
                        self.state = if seen == 0 {
                            State::ChunkEnd(1)
                        } else {
                            State::ChunkSize
                        };
                        Ok(1)
                    }
                }
                State::Trailers => self.trailers(bytes),
            };
            match step {
                Ok(used) => bytes = &bytes[used..],
                Err(refusal) => {
                    // A head refuses its own message; a body refuses its
                    // own too (already being served, its body fails through
                    // `Verdicts::refusal_of`) and every message after it.
                    let message = match self.state {
                        State::Head => self.message,
                        _ => self.message - 1,
                    };
                    self.state = State::Stopped;
                    self.pending = Vec::new();
                    return Some(Refused { message, refusal });
                }
            }
        }
        None
    }

    /// Reads head bytes; how many of `bytes` were used.
    fn head(&mut self, bytes: &[u8]) -> Result<usize, Refusal> {
        let start = self.pending.len();
        self.pending.extend_from_slice(bytes);
        // Searched only where the end may newly be: a head trickled byte by
        // byte costs linear time.
        let mut from = self.searched.saturating_sub(2);
        loop {
            let Some(end) = head_end(&self.pending, from) else {
                self.searched = self.pending.len();
                return if self.pending.len() > self.max_head {
                    Err(Refusal::HeadTooLarge)
                } else {
                    Ok(bytes.len())
                };
            };
            let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
            let mut request = httparse::Request::new(&mut fields);
            let len = match request.parse(&self.pending[..end]) {
                Ok(httparse::Status::Complete(len)) => len,
                // Empty lines before the request line, which httparse
                // skips: the head goes on.
                Ok(httparse::Status::Partial) => {
                    from = end;
                    continue;
                }
                Err(httparse::Error::TooManyHeaders) => return Err(Refusal::HeadTooLarge),
                Err(_) => return Err(Refusal::BadHead),
            };
            if len > self.max_head {
                return Err(Refusal::HeadTooLarge);
            }
            let http10 = request.version == Some(0);
            let framing = request_framing(
                http10,
                request.headers.iter().map(|f| (f.name.as_bytes(), f.value)),
            )?;
            self.last = ends_connection(http10, request.headers);
            self.message += 1;
            self.state = match framing {
                Framing::None => State::Head,
                Framing::Length(n) => State::Body(n),
                Framing::Chunked => State::ChunkSize,
            };
            self.pending.clear();
            self.searched = 0;
            return Ok(len.saturating_sub(start));
        }
    }

    /// Reads chunk-size line bytes; how many of `bytes` were used.
    fn chunk_size(&mut self, bytes: &[u8]) -> Result<usize, Refusal> {
        let Some(nl) = memchr::memchr(b'\n', bytes) else {
            self.pending.extend_from_slice(bytes);
            return if self.pending.len() > MAX_LINE {
                Err(Refusal::BadChunk)
            } else {
                Ok(bytes.len())
            };
        };
        self.pending.extend_from_slice(&bytes[..nl]);
        let size = parse_size_line(&self.pending)?;
        self.pending.clear();
        self.state = match size {
            0 => State::Trailers,
            n => State::ChunkData(n),
        };
        Ok(nl + 1)
    }

    /// Reads trailer section bytes (field lines, then an empty line, each
    /// ended by CR LF, as hyper's decoder wants them); how many of `bytes`
    /// were used.
    fn trailers(&mut self, bytes: &[u8]) -> Result<usize, Refusal> {
        let start = self.pending.len();
        self.pending.extend_from_slice(bytes);
        let p = &self.pending;
        let Some(end) = trailer_section_end(p)? else {
            return if p.len() > self.max_head {
                Err(Refusal::HeadTooLarge)
            } else {
                Ok(bytes.len())
            };
        };
        let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
        if !matches!(
            httparse::parse_headers(&p[..end], &mut fields),
            Ok(httparse::Status::Complete(_))
        ) {
            return Err(Refusal::BadChunk);
        }
        self.pending.clear();
        self.state = State::Head;
        Ok(end - start)
    }
}

/// Whether a request's fields end its connection after it, as hyper reads
/// them: `close` in any Connection field; for HTTP/1.0, no `keep-alive`.
fn ends_connection(http10: bool, fields: &[httparse::Header<'_>]) -> bool {
    let mut keep_alive = !http10;
    for field in fields
        .iter()
        .filter(|f| f.name.eq_ignore_ascii_case("connection"))
    {
        if has_token(field.value, b"close") {
            return true;
        }
        keep_alive |= has_token(field.value, b"keep-alive");
    }
    !keep_alive
}

/// Where the head `buf` begins with ends (just past its empty line, CR LF
/// or bare LF as httparse reads them), searching from byte `from`.
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let from = from.min(buf.len());
    memchr::memchr_iter(b'\n', &buf[from..]).find_map(|at| {
        let at = from + at;
        let rest = &buf[at + 1..];
        if rest.first() == Some(&b'\n') {
            Some(at + 2)
        } else if rest.starts_with(b"\r\n") {
            Some(at + 3)
        } else {
            None
        }
    })
}

/// The verdicts on one connection's requests, as the follower finds them
/// and as the proxy asks for them: the `n`th request hyper hands over asks
/// for the `n`th verdict.
#[derive(Debug, Default)]
pub struct Verdicts {
    /// Requests handed to the proxy since the follower began.
    served: AtomicU64,
    /// The first message refused (every one after it is too), plus one;
    /// 0 while none is.
    refused_from: AtomicU64,
    refusal: OnceLock<Refusal>,
}

impl Verdicts {
    /// Records what the follower found.
    pub fn record(&self, refused: Refused) {
        let _ = self.refusal.set(refused.refusal);
        self.refused_from
            .store(refused.message + 1, Ordering::Release);
    }

    /// The index of the next request handed to the proxy.
    pub fn next_request(&self) -> u64 {
        self.served.fetch_add(1, Ordering::AcqRel)
    }

    /// Whether the request `index` (or one before it) was refused.
    pub fn refusal_of(&self, index: u64) -> Option<Refusal> {
        let from = self.refused_from.load(Ordering::Acquire);
        if from != 0 && index + 1 >= from {
            self.refusal.get().copied()
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `stream` cut into pieces of `size` bytes; the refusal found.
    fn follow(stream: &[u8], size: usize) -> (Option<Refused>, u64) {
        let mut f = RequestStream::new(8192);
        let mut found = None;
        for piece in stream.chunks(size) {
            if let Some(r) = f.feed(piece) {
                found = Some(r);
            }
        }
        (found, f.message)
    }

    fn every_cut(stream: &str) -> (Option<Refused>, u64) {
        let whole = follow(stream.as_bytes(), stream.len());
        for size in 1..stream.len().min(40) {
            assert_eq!(
                follow(stream.as_bytes(), size),
                whole,
                "{stream:?} in {size}"
            );
        }
        whole
    }

    #[test]
    fn follows_lengths_chunks_and_pipelining() {
        let stream = "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
                      POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
                      5;x=y\r\nhello\r\n0\r\nT: 1\r\n\r\n\
                      GET /c HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(every_cut(stream), (None, 3));
    }

    #[test]
    fn the_conflict_is_caught_whatever_the_line_endings_and_place() {
        let stream = "GET / HTTP/1.1\r\nHost: x\r\n\r\n\
                      POST / HTTP/1.1\nHost: x\nContent-Length: 3\nTransfer-Encoding: chunked\n\n0\r\n\r\n";
        let (found, _) = every_cut(stream);
        assert_eq!(
            found,
            Some(Refused {
                message: 1,
                refusal: Refusal::LengthAndCodings
            })
        );
    }

    #[test]
    fn a_body_that_looks_like_heads_marks_nothing() {
        let body = "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        let stream = format!(
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
             {:x}\r\n{body}\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
            body.len()
        );
        assert_eq!(every_cut(&stream), (None, 2));
    }

    #[test]
    fn a_bad_chunk_line_refuses_what_follows() {
        for line in ["+5", " 5 ", "5;a\rb", "5\n"] {
            let stream = format!(
                "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{line}\r\nhello\r\n0\r\n\r\n"
            );
            let (found, _) = every_cut(&stream);
            assert_eq!(
                found,
                Some(Refused {
                    message: 0,
                    refusal: Refusal::BadChunk
                }),
                "{line:?}"
            );
        }
    }

    #[test]
    fn empty_lines_before_a_head_are_skipped_as_httparse_skips_them() {
        let stream = "\r\n\r\nPOST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi\
                      GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(every_cut(stream), (None, 2));
    }

    #[test]
    fn bad_heads_and_trailers_are_refused() {
        let (found, _) = every_cut("GET / HTTP/1.1\r\nHost x\r\n\r\n");
        assert_eq!(found.map(|r| r.refusal), Some(Refusal::BadHead));
        let (found, _) = every_cut(
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nT: 1\n\r\n",
        );
        assert_eq!(found.map(|r| r.refusal), Some(Refusal::BadChunk));
        let (found, _) = every_cut(
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhiX\r\n0\r\n\r\n",
        );
        assert_eq!(found.map(|r| r.refusal), Some(Refusal::BadChunk));
    }

    #[test]
    fn nothing_is_read_past_a_message_that_ends_the_connection() {
        // Found by fuzzing against hyper: HTTP/1.0 without keep-alive ends
        // the connection, and hyper reads no second request.
        let stream = "POST /a HTTP/1.0\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(every_cut(stream), (None, 1));
        let stream = "GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n\
                      POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(every_cut(stream), (None, 1));
        let stream = "GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /b HTTP/1.0\r\n\r\n";
        assert_eq!(every_cut(stream), (None, 2));
    }

    #[test]
    fn verdicts_name_their_message() {
        let v = Verdicts::default();
        v.record(Refused {
            message: 1,
            refusal: Refusal::LengthAndCodings,
        });
        let verdicts: Vec<_> = (0..3).map(|_| v.refusal_of(v.next_request())).collect();
        assert_eq!(
            verdicts,
            [
                None,
                Some(Refusal::LengthAndCodings),
                Some(Refusal::LengthAndCodings)
            ]
        );
    }
}
