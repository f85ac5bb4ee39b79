//! HTTP/2 limits that h2 lacks, enforced on the frames a client sends.
//!
//! h2 (under hyper) already bounds: concurrent streams (refused past
//! SETTINGS_MAX_CONCURRENT_STREAMS), streams the client resets before they
//! are accepted (rapid reset in one batch), streams it resets itself because
//! of the client's errors ("MadeYouReset"), the number of CONTINUATION
//! frames in a header block, and PING/SETTINGS acknowledgements (one pending
//! at a time; it stops reading until the ACK is written). What it does not
//! bound, the socket wrapper (`listener/socket.rs`) does with a [`FrameWatch`]:
//! every byte read from an HTTP/2 client passes through it, it reads frame
//! headers only (payloads are skipped, never copied), and when a limit is
//! crossed the read fails, so h2 never sees the batch that crossed it and the
//! connection closes. The limits:
//!
//! - A header block (HEADERS and its CONTINUATION frames) larger than
//!   `server.max_header_bytes` as sent (at least one frame, 16 KiB, so a
//!   single HEADERS frame always reaches h2, which answers an oversized head
//!   with 431). h2 buffers a block until its last frame and counts frames,
//!   not bytes: with fulcrum's header list size it would hold about 160 KiB.
//! - More than [`RESET_FLOOR`] streams reset by the client, and more than
//!   half of all its streams: rapid reset spread over reads, where h2 has
//!   already accepted each stream before its reset arrives (Envoy's rule for
//!   premature resets).
//! - [`CONTROL_RUN`] frames that carry no request and no data (PING,
//!   SETTINGS, PRIORITY, empty DATA, unknown types) within
//!   [`CONTROL_WINDOW`], with no request or data between them: a
//!   control-frame flood, which costs the proxy CPU for nothing. A run
//!   older than the window starts again, so a client that keeps an idle
//!   connection alive with a PING now and then (gRPC keepalive) is never
//!   cut. WINDOW_UPDATE is not counted: a client downloading a large
//!   response sends them for as long as the download lasts.
//!
//! A connection cut for crossing a limit gets a GOAWAY (ENHANCE_YOUR_CALM,
//! RFC 9113 section 5.4.1) first, when h2's own writes stand at a frame
//! boundary ([`FrameWatch::goaway`]); the watch follows the frames h2
//! writes to know where the boundaries are.

use tokio::time::{Duration, Instant};

/// Resets tolerated before the share of reset streams is looked at.
pub const RESET_FLOOR: u64 = 100;

/// Frames without a request or data, within [`CONTROL_WINDOW`], before the
/// connection is refused.
pub const CONTROL_RUN: u32 = 1000;

/// How long a run of control frames counts.
pub const CONTROL_WINDOW: Duration = Duration::from_secs(10);

/// The smallest header-block limit: one frame of the default maximum size.
const MIN_HEADER_BLOCK: usize = 16 * 1024;

const PREFACE_LEN: usize = 24;
const FRAME_HEADER_LEN: usize = 9;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;

const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// Why a client's HTTP/2 connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Abuse {
    #[error("header block over {limit} bytes")]
    HeaderBlock { limit: usize },
    #[error("{resets} of {streams} streams reset by the client")]
    RapidReset { resets: u64, streams: u64 },
    #[error("{CONTROL_RUN} frames within 10 s with no request or data")]
    ControlFlood,
}

/// Reads the frame headers of one client's HTTP/2 byte stream.
#[derive(Debug)]
pub struct FrameWatch {
    max_header_block: usize,
    /// Preface bytes still to pass.
    preface: usize,
    /// Where the client's frames stand.
    incoming: FrameCursor,
    /// Bytes of the open header block; 0 outside one.
    block: usize,
    streams: u64,
    resets: u64,
    /// Frames since the last one with a request or data, within the window.
    idle_run: u32,
    /// When the run began.
    run_began: Option<Instant>,
    /// The highest stream a client's HEADERS opened.
    last_stream: u32,
    /// Where the frames h2 writes stand.
    outgoing: FrameCursor,
}

/// Where a byte stream of HTTP/2 frames stands: a frame header being read
/// (it may straddle reads), or payload bytes to pass (skipped, never
/// copied).
#[derive(Debug, Default, Clone, Copy)]
struct FrameCursor {
    header: [u8; FRAME_HEADER_LEN],
    have: usize,
    skip: usize,
}

impl FrameCursor {
    /// Passes `bytes`, calling `on_header` with each frame header completed
    /// (its payload is skipped after).
    fn advance<E>(
        &mut self,
        mut bytes: &[u8],
        mut on_header: impl FnMut(&[u8; FRAME_HEADER_LEN]) -> Result<(), E>,
    ) -> Result<(), E> {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (FRAME_HEADER_LEN - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == FRAME_HEADER_LEN {
                self.have = 0;
                let h = self.header;
                self.skip = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
                on_header(&h)?;
            }
        }
        Ok(())
    }

    /// Between two frames.
    fn at_boundary(&self) -> bool {
        self.have == 0 && self.skip == 0
    }
}

impl Abuse {
    /// The `cause` label of `fulcrum_downstream_h2_refused_total`.
    pub fn cause(&self) -> &'static str {
        match self {
            Abuse::HeaderBlock { .. } => "header_block",
            Abuse::RapidReset { .. } => "rapid_reset",
            Abuse::ControlFlood => "control_flood",
        }
    }
}

impl FrameWatch {
    /// A watch for a connection whose first bytes are the client preface.
    pub fn new(max_header_bytes: usize) -> Self {
        Self {
            max_header_block: max_header_bytes.max(MIN_HEADER_BLOCK),
            preface: PREFACE_LEN,
            incoming: FrameCursor::default(),
            block: 0,
            streams: 0,
            resets: 0,
            idle_run: 0,
            run_began: None,
            last_stream: 0,
            outgoing: FrameCursor::default(),
        }
    }

    /// Takes the next bytes read from the client.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), Abuse> {
        let n = self.preface.min(bytes.len());
        self.preface -= n;
        let mut cursor = self.incoming;
        let fed = cursor.advance(&bytes[n..], |h| self.frame(h));
        self.incoming = cursor;
        fed
    }

    /// Accounts for the frame whose header was just read.
    fn frame(&mut self, h: &[u8; FRAME_HEADER_LEN]) -> Result<(), Abuse> {
        let len = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
        let (kind, flags) = (h[3], h[4]);
        match kind {
            HEADERS | CONTINUATION => {
                if kind == HEADERS {
                    self.streams += 1;
                    self.idle_run = 0;
                    self.block = 0;
                    let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
                    self.last_stream = self.last_stream.max(stream);
                }
                self.block += len;
                if self.block > self.max_header_block {
                    return Err(Abuse::HeaderBlock {
                        limit: self.max_header_block,
                    });
                }
                if flags & END_HEADERS != 0 {
                    self.block = 0;
                }
            }
            DATA if len > 0 || flags & END_STREAM != 0 => self.idle_run = 0,
            RST_STREAM => {
                self.resets += 1;
                if self.resets > RESET_FLOOR && self.resets * 2 > self.streams {
                    return Err(Abuse::RapidReset {
                        resets: self.resets,
                        streams: self.streams,
                    });
                }
            }
            WINDOW_UPDATE | GOAWAY => {}
            _ => {
                // The clock is read only for these frames, which real work
                // does not send.
                let now = crate::clock::now();
                if self.idle_run == 0
                    || self
                        .run_began
                        .is_none_or(|began| now.duration_since(began) > CONTROL_WINDOW)
                {
                    self.idle_run = 0;
                    self.run_began = Some(now);
                }
                self.idle_run += 1;
                if self.idle_run >= CONTROL_RUN {
                    return Err(Abuse::ControlFlood);
                }
            }
        }
        Ok(())
    }
}

impl FrameWatch {
    /// Follows bytes h2 wrote to the client (whole frames, cut anywhere).
    pub fn wrote(&mut self, bytes: &[u8]) {
        let _ = self.outgoing.advance(bytes, |_| Ok::<(), ()>(()));
    }

    /// The GOAWAY (ENHANCE_YOUR_CALM) to send a client cut for abuse, if
    /// h2's writes stand at a frame boundary (otherwise it would land
    /// inside one of h2's frames).
    pub fn goaway(&self) -> Option<[u8; 17]> {
        if !self.outgoing.at_boundary() {
            return None;
        }
        let last = self.last_stream.to_be_bytes();
        Some([
            0,
            0,
            8,
            GOAWAY,
            0,
            0,
            0,
            0,
            0,
            last[0],
            last[1],
            last[2],
            last[3],
            0,
            0,
            0,
            ENHANCE_YOUR_CALM,
        ])
    }
}

/// The GOAWAY error code for a client that behaves abusively.
const ENHANCE_YOUR_CALM: u8 = 0xb;

#[cfg(test)]
mod tests {
    use super::*;

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    fn frame(kind: u8, flags: u8, stream: u32, payload_len: usize) -> Vec<u8> {
        let len = (payload_len as u32).to_be_bytes();
        let mut f = vec![len[1], len[2], len[3], kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.resize(FRAME_HEADER_LEN + payload_len, 0xAB);
        f
    }

    fn watch() -> FrameWatch {
        let mut w = FrameWatch::new(65536);
        w.feed(PREFACE).unwrap();
        w
    }

    #[test]
    fn frames_straddling_reads_are_read_whole() {
        let mut bytes = PREFACE.to_vec();
        for s in 0..50u32 {
            bytes.extend(frame(HEADERS, END_HEADERS, 2 * s + 1, 30));
            bytes.extend(frame(DATA, END_STREAM, 2 * s + 1, 1000));
        }
        let mut w = FrameWatch::new(65536);
        // Byte by byte, then in odd chunks: the same count either way.
        for b in &bytes {
            w.feed(std::slice::from_ref(b)).unwrap();
        }
        assert_eq!(w.streams, 50);
        assert!(w.incoming.at_boundary());
        let mut w = FrameWatch::new(65536);
        for chunk in bytes.chunks(7) {
            w.feed(chunk).unwrap();
        }
        assert_eq!(w.streams, 50);
    }

    #[test]
    fn a_header_block_over_the_limit_is_refused() {
        let mut w = watch();
        w.feed(&frame(HEADERS, 0, 1, 16384)).unwrap();
        for _ in 0..3 {
            w.feed(&frame(CONTINUATION, 0, 1, 16384)).unwrap();
        }
        assert_eq!(
            w.feed(&frame(CONTINUATION, 0, 1, 1)),
            Err(Abuse::HeaderBlock { limit: 65536 })
        );
        // Blocks that end are not added up.
        let mut w = watch();
        for s in 0..10 {
            w.feed(&frame(HEADERS, 0, 2 * s + 1, 16384)).unwrap();
            w.feed(&frame(CONTINUATION, END_HEADERS, 2 * s + 1, 16384))
                .unwrap();
        }
        // A small max_header_bytes still lets one whole frame through to h2.
        let mut w = FrameWatch::new(1024);
        w.feed(PREFACE).unwrap();
        w.feed(&frame(HEADERS, END_HEADERS, 1, 16384)).unwrap();
    }

    #[test]
    fn resetting_most_streams_is_refused_past_the_floor() {
        let mut w = watch();
        let pair = |s: u32| {
            [
                frame(HEADERS, END_HEADERS, s, 10),
                frame(RST_STREAM, 0, s, 4),
            ]
            .concat()
        };
        for s in 0..RESET_FLOOR as u32 {
            w.feed(&pair(2 * s + 1)).unwrap();
        }
        assert!(matches!(w.feed(&pair(1001)), Err(Abuse::RapidReset { .. })));
        // A client that cancels some of many streams is fine.
        let mut w = watch();
        for s in 0..1000u32 {
            w.feed(&frame(HEADERS, END_HEADERS | END_STREAM, 2 * s + 1, 10))
                .unwrap();
            if s % 3 == 0 {
                w.feed(&frame(RST_STREAM, 0, 2 * s + 1, 4)).unwrap();
            }
        }
    }

    #[test]
    fn a_goaway_waits_for_a_frame_boundary_and_names_the_last_stream() {
        let mut w = watch();
        w.feed(&frame(HEADERS, END_HEADERS, 7, 10)).unwrap();
        assert_eq!(w.goaway().unwrap()[9..13], 7u32.to_be_bytes());
        assert_eq!(w.goaway().unwrap()[16], ENHANCE_YOUR_CALM);
        let out = frame(DATA, 0, 7, 100);
        w.wrote(&out[..5]);
        assert!(w.goaway().is_none(), "inside a frame header");
        w.wrote(&out[5..50]);
        assert!(w.goaway().is_none(), "inside a frame payload");
        w.wrote(&out[50..]);
        assert!(w.goaway().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_ping_now_and_then_is_never_a_flood() {
        let mut w = watch();
        for _ in 0..3 * CONTROL_RUN {
            w.feed(&frame(0x6, 0, 0, 8)).unwrap(); // PING
            tokio::time::advance(Duration::from_millis(20)).await;
        }
        // As fast as it can, the same count is.
        let mut w = watch();
        for _ in 0..CONTROL_RUN - 1 {
            w.feed(&frame(0x6, 0, 0, 8)).unwrap();
        }
        assert_eq!(w.feed(&frame(0x6, 0, 0, 8)), Err(Abuse::ControlFlood));
    }

    #[tokio::test(start_paused = true)]
    async fn control_floods_are_refused_and_requests_or_data_end_a_run() {
        let mut w = watch();
        for _ in 0..CONTROL_RUN - 1 {
            w.feed(&frame(0x6, 0, 0, 8)).unwrap(); // PING
        }
        w.feed(&frame(DATA, 0, 1, 100)).unwrap();
        for _ in 0..CONTROL_RUN - 1 {
            w.feed(&frame(0x4, 0, 0, 6)).unwrap(); // SETTINGS
        }
        w.feed(&frame(WINDOW_UPDATE, 0, 0, 4)).unwrap();
        // Empty DATA frames without END_STREAM carry nothing.
        assert_eq!(w.feed(&frame(DATA, 0, 1, 0)), Err(Abuse::ControlFlood));
    }
}
