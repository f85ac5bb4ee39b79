//! A raw HTTP/2 client for abuse tests: it writes any frame sequence, valid
//! or not, and a reader task logs what the server sends back.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

pub const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
pub const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;

pub const CANCEL: u32 = 0x8;
pub const REFUSED_STREAM: u32 = 0x7;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

/// One frame: the 9-byte header and `payload`.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_be_bytes();
    let mut f = vec![len[1], len[2], len[3], kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The HPACK block of `GET path` (static-table :method and :scheme,
/// literal :path and :authority, never indexed, no Huffman).
pub fn get_block(path: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x86];
    literal_indexed_name(&mut block, 4, path.as_bytes());
    literal_indexed_name(&mut block, 1, b"fulcrum.test");
    block
}

/// A literal header without indexing whose name is static entry `index`
/// (< 15).
pub fn literal_indexed_name(block: &mut Vec<u8>, index: u8, value: &[u8]) {
    block.push(index);
    hpack_length(block, value.len());
    block.extend_from_slice(value);
}

/// An HPACK string length (7-bit prefix, no Huffman).
pub fn hpack_length(block: &mut Vec<u8>, mut n: usize) {
    if n < 127 {
        block.push(n as u8);
        return;
    }
    block.push(127);
    n -= 127;
    while n >= 128 {
        block.push((n % 128 + 128) as u8);
        n /= 128;
    }
    block.push(n as u8);
}

/// A request stream's HEADERS frame (`end_stream`: no body follows).
pub fn request(stream: u32, path: &str, end_stream: bool) -> Vec<u8> {
    let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
    frame(HEADERS, flags, stream, &get_block(path))
}

pub fn rst(stream: u32, code: u32) -> Vec<u8> {
    frame(RST_STREAM, 0, stream, &code.to_be_bytes())
}

pub fn window_update(stream: u32, increment: u32) -> Vec<u8> {
    frame(WINDOW_UPDATE, 0, stream, &increment.to_be_bytes())
}

pub fn settings(params: &[(u16, u32)]) -> Vec<u8> {
    let payload: Vec<u8> = params
        .iter()
        .flat_map(|(id, v)| [&id.to_be_bytes()[..], &v.to_be_bytes()[..]].concat())
        .collect();
    frame(SETTINGS, 0, 0, &payload)
}

/// What the server sent.
#[derive(Debug, Default)]
pub struct Seen {
    pub settings: Vec<(u16, u32)>,
    /// (last stream id, error code)
    pub goaway: Option<(u32, u32)>,
    /// (stream, error code) of each RST_STREAM.
    pub resets: Vec<(u32, u32)>,
    /// Response HEADERS frames.
    pub responses: u32,
    /// The status of each response HEADERS frame that opens with one from
    /// the static table (200, 204, 206, 304, 400, 404, 500), else 0.
    pub statuses: Vec<u16>,
    pub data_bytes: u64,
    pub pongs: u64,
    /// The server closed the connection (or it failed).
    pub closed: bool,
}

pub struct RawH2 {
    write: OwnedWriteHalf,
    seen: Arc<Mutex<Seen>>,
}

impl RawH2 {
    /// Connects, sends the preface and SETTINGS `params`, and waits for the
    /// server's SETTINGS to acknowledge them. Without `read`, nothing the
    /// server sends is read after that (a client that never reads).
    pub async fn connect(addr: SocketAddr, params: &[(u16, u32)], read: bool) -> Self {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (mut reader, mut write) = stream.into_split();
        write
            .write_all(&[PREFACE, &settings(params)].concat())
            .await
            .unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let log = Arc::clone(&seen);
        let (settled, settled_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut settled = Some(settled);
            let mut buf = Vec::with_capacity(1 << 16);
            let mut chunk = vec![0u8; 1 << 16];
            loop {
                let n = match reader.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                buf.extend_from_slice(&chunk[..n]);
                let mut at = 0;
                while buf.len() - at >= 9 {
                    let h = &buf[at..at + 9];
                    let len = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
                    if buf.len() - at < 9 + len {
                        break;
                    }
                    let (kind, flags) = (h[3], h[4]);
                    let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
                    let payload = &buf[at + 9..at + 9 + len];
                    let word = |i: usize| {
                        u32::from_be_bytes([
                            payload[i],
                            payload[i + 1],
                            payload[i + 2],
                            payload[i + 3],
                        ])
                    };
                    let mut log = log.lock().unwrap();
                    match kind {
                        SETTINGS if flags & ACK == 0 => {
                            for p in payload.chunks_exact(6) {
                                log.settings.push((
                                    u16::from_be_bytes([p[0], p[1]]),
                                    u32::from_be_bytes([p[2], p[3], p[4], p[5]]),
                                ));
                            }
                            if let Some(s) = settled.take() {
                                let _ = s.send(());
                            }
                        }
                        GOAWAY => log.goaway = Some((word(0) & 0x7fff_ffff, word(4))),
                        RST_STREAM => log.resets.push((stream, word(0))),
                        HEADERS => {
                            log.responses += 1;
                            const STATIC: [u16; 7] = [200, 204, 206, 304, 400, 404, 500];
                            // An empty block reads as no status, not as 200.
                            let index = payload.first().map_or(u8::MAX, |b| b.wrapping_sub(0x88));
                            log.statuses
                                .push(STATIC.get(usize::from(index)).copied().unwrap_or(0));
                        }
                        DATA => log.data_bytes += len as u64,
                        PING if flags & ACK != 0 => log.pongs += 1,
                        _ => {}
                    }
                    at += 9 + len;
                }
                buf.drain(..at);
                if !read && settled.is_none() {
                    // Stop reading: what the server sends now piles up.
                    std::future::pending::<()>().await;
                }
            }
            log.lock().unwrap().closed = true;
        });
        tokio::time::timeout(Duration::from_secs(5), settled_rx)
            .await
            .expect("the server sent its SETTINGS")
            .unwrap();
        let mut raw = Self { write, seen };
        raw.send(&frame(SETTINGS, ACK, 0, &[])).await.unwrap();
        raw
    }

    /// Writes `bytes`; fails if they cannot all be written within 5 s (the
    /// server stopped reading).
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.send_within(bytes, Duration::from_secs(5)).await
    }

    pub async fn send_within(&mut self, bytes: &[u8], limit: Duration) -> std::io::Result<()> {
        match tokio::time::timeout(limit, self.write.write_all(bytes)).await {
            Ok(written) => written,
            Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
        }
    }

    pub fn seen(&self) -> MutexGuard<'_, Seen> {
        self.seen.lock().unwrap()
    }

    /// Whether the server closed the connection within `limit`. (Not
    /// `support::eventually`: this file is also built into the harness,
    /// examples/h2_abuse.rs, which has no `support` module.)
    pub async fn closed_within(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.seen().closed {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.seen().closed
    }
}
