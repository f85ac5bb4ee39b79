//! The access log: one line per request, `json` or `common`, to stdout or a
//! file, written by a thread of its own.
//!
//! The request path only moves an [`Entry`] into a bounded queue
//! (`try_send`; the entry's host and target share the request's buffers, so
//! taking them copies nothing). The writer thread drains the queue in
//! batches, formats each line into one reused buffer (no allocation per
//! line: the time's text is made once a second) and writes a batch with one
//! system call, so neither a slow disk nor the formatting takes time from
//! the workers that serve requests. When the queue is full the line is
//! dropped, counted in `fulcrum_access_log_dropped_total`, and a warning is
//! logged (at the 1st, 2nd, 4th, 8th, ... drop).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::HeaderValue;
use http::uri::PathAndQuery;
use http::{Method, Version};

use crate::config::{AccessLogConfig, AccessLogFormat};
use crate::metrics::{self as m, Metrics};

/// Lines waiting for the writer before new ones are dropped.
pub const QUEUE: usize = 8192;
/// A batch is written out once its lines pass this many bytes.
const BATCH_BYTES: usize = 64 * 1024;

/// One request, as the access log records it.
#[derive(Debug)]
pub struct Entry {
    pub time: SystemTime,
    pub client: SocketAddr,
    pub method: Method,
    /// The Host the client sent (the field, or the HTTP/2 authority).
    pub host: Option<HeaderValue>,
    /// The request target as the client sent it.
    pub target: Option<PathAndQuery>,
    pub version: Version,
    pub status: u16,
    pub bytes: u64,
    pub duration: Duration,
    pub route: Option<Arc<str>>,
    pub upstream: Option<Arc<str>>,
    pub endpoint: Option<Arc<str>>,
    pub attempts: u32,
}

/// What the writer thread receives. A line moves by value: its box is
/// freed by the thread that made it, where the next request's reuses it.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
enum Message {
    Line(Entry),
    /// Write out what is queued, then say so (at shutdown).
    Flush(std::sync::mpsc::Sender<()>),
}

/// The sending side of the access log.
#[derive(Debug)]
pub struct AccessLog {
    tx: SyncSender<Message>,
    dropped: AtomicU64,
    dropped_total: metrics::Counter,
}

/// The writing side, to be started.
pub struct Writer {
    rx: Receiver<Message>,
    format: AccessLogFormat,
    path: Option<PathBuf>,
}

impl AccessLog {
    /// The log and its writer, or `None` when disabled. A file path whose
    /// directory does not exist is an error now, not at the first request.
    pub fn new(
        config: &AccessLogConfig,
        metrics: &Arc<Metrics>,
    ) -> std::io::Result<Option<(Self, Writer)>> {
        if !config.enabled {
            return Ok(None);
        }
        if let Some(path) = &config.path {
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
            if let Some(dir) = dir
                && !dir.is_dir()
            {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!(
                        "access_log.path: directory {} does not exist",
                        dir.display()
                    ),
                ));
            }
        }
        let (tx, rx) = sync_channel(QUEUE);
        Ok(Some((
            Self {
                tx,
                dropped: AtomicU64::new(0),
                dropped_total: metrics.counter(m::ACCESS_LOG_DROPPED, &[]),
            },
            Writer {
                rx,
                format: config.format,
                path: config.path.clone(),
            },
        )))
    }

    /// Queues one line; never waits.
    pub fn log(&self, entry: Entry) {
        if self.tx.try_send(Message::Line(entry)).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            self.dropped_total.increment(1);
            if n.is_power_of_two() {
                tracing::warn!(dropped = n, "access log writer is behind; lines dropped");
            }
        }
    }
}

impl AccessLog {
    /// Waits, at most `limit`, until every line queued so far is written:
    /// at shutdown, so that the last requests' lines are not lost. Blocks.
    pub fn flush(&self, limit: Duration) {
        let (done, wait) = std::sync::mpsc::channel();
        if self.tx.send(Message::Flush(done)).is_ok() {
            let _ = wait.recv_timeout(limit);
        }
    }
}

impl Writer {
    /// Starts the writer thread; it writes lines until every sender is
    /// gone.
    pub fn start(self) -> std::io::Result<()> {
        std::thread::Builder::new()
            .name("fulcrum-access-log".into())
            .spawn(move || self.run())
            .map(drop)
    }

    fn run(self) {
        let Writer { rx, format, path } = self;
        match path {
            None => write_all(&rx, format, std::io::stdout(), rest),
            Some(path) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path);
                match file {
                    Ok(file) => write_all(&rx, format, file, rest),
                    Err(error) => {
                        tracing::error!(path = %path.display(), %error, "cannot open the access log; lines are dropped");
                    }
                }
            }
        }
    }
}

/// How long the writer rests after a batch. Lines queued meanwhile wait
/// for it, and their senders need not wake it (a sleeping thread is woken
/// through the kernel, per line); with no line queued it blocks until the
/// next comes.
const REST: Duration = Duration::from_millis(10);

/// Writes what is queued, a batch at a time: every line waiting (up to
/// [`BATCH_BYTES`]) goes out with one write.
fn write_all(
    rx: &Receiver<Message>,
    format: AccessLogFormat,
    mut out: impl Write,
    mut rest: impl FnMut(),
) {
    let mut buf = Vec::with_capacity(BATCH_BYTES + 4096);
    let mut clock = Clock::default();
    let mut failed_writes = 0u64;
    while let Ok(message) = rx.recv() {
        let mut next = Some(message);
        let mut drained = false;
        let mut flushed = None;
        while let Some(message) = next {
            match message {
                Message::Line(entry) => format_entry(&entry, format, &mut clock, &mut buf),
                Message::Flush(done) => {
                    flushed = Some(done);
                    break;
                }
            }
            if buf.len() >= BATCH_BYTES {
                break;
            }
            next = rx.try_recv().ok();
            drained = next.is_none();
        }
        if let Err(error) = out.write_all(&buf).and_then(|()| out.flush()) {
            // At the first failure, then at each power of two, as with
            // dropped lines: a full disk must not fill the log too.
            failed_writes += 1;
            if failed_writes.is_power_of_two() {
                tracing::error!(%error, failed = failed_writes, "access log write failed; its lines are dropped");
            }
        }
        buf.clear();
        if let Some(done) = flushed {
            let _ = done.send(());
        } else if drained {
            // A full batch with more queued goes on at once.
            rest();
        }
    }
}

fn rest() {
    std::thread::sleep(REST);
}

fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// The time's text, made once a second: RFC 3339 (`2026-11-26T06:00:00`)
/// and the common log format's (`26/Nov/2026:06:00:00 +0000`).
#[derive(Default)]
struct Clock {
    second: Option<u64>,
    rfc3339: String,
    clf: String,
}

impl Clock {
    fn at(&mut self, time: SystemTime) -> (&str, &str, u32) {
        let since = time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        let second = since.as_secs();
        if self.second != Some(second) {
            self.second = Some(second);
            // "2026-11-26T06:00:00Z"
            let rfc = humantime::format_rfc3339_seconds(time).to_string();
            self.rfc3339 = rfc.trim_end_matches('Z').to_owned();
            self.clf = clf_time(&rfc);
        }
        (&self.rfc3339, &self.clf, since.subsec_millis())
    }
}

/// Formats one line, newline included (for tests and tools).
pub fn format_line(e: &Entry, format: AccessLogFormat, out: &mut Vec<u8>) {
    format_entry(e, format, &mut Clock::default(), out);
}

fn format_entry(e: &Entry, format: AccessLogFormat, clock: &mut Clock, out: &mut Vec<u8>) {
    let duration_ms = e.duration.as_secs_f64() * 1000.0;
    let (rfc3339, clf, millis) = clock.at(e.time);
    let host = e.host.as_ref().and_then(|h| h.to_str().ok());
    let target = e.target.as_ref().map_or("", PathAndQuery::as_str);
    match format {
        AccessLogFormat::Json => {
            // Strings escaped and numbers written as serde_json writes them
            // (a test holds the line to serde_json's), straight into the
            // buffer.
            out.extend_from_slice(b"{\"time\":\"");
            out.extend_from_slice(rfc3339.as_bytes());
            out.push(b'.');
            push_millis(out, millis);
            out.extend_from_slice(b"Z\",\"client\":\"");
            push_addr(out, e.client);
            out.extend_from_slice(b"\",\"method\":");
            json_str(out, Some(e.method.as_str()));
            out.extend_from_slice(b",\"host\":");
            json_str(out, host);
            out.extend_from_slice(b",\"path\":");
            json_str(out, Some(target));
            out.extend_from_slice(b",\"protocol\":\"");
            out.extend_from_slice(protocol(e.version).as_bytes());
            out.extend_from_slice(b"\",\"status\":");
            out.extend_from_slice(itoa::Buffer::new().format(e.status).as_bytes());
            out.extend_from_slice(b",\"bytes\":");
            out.extend_from_slice(itoa::Buffer::new().format(e.bytes).as_bytes());
            out.extend_from_slice(b",\"duration_ms\":");
            let _ = serde_json::to_writer(&mut *out, &((duration_ms * 1000.0).round() / 1000.0));
            out.extend_from_slice(b",\"route\":");
            json_str(out, e.route.as_deref());
            out.extend_from_slice(b",\"upstream\":");
            json_str(out, e.upstream.as_deref());
            out.extend_from_slice(b",\"endpoint\":");
            json_str(out, e.endpoint.as_deref());
            out.extend_from_slice(b",\"attempts\":");
            out.extend_from_slice(itoa::Buffer::new().format(e.attempts).as_bytes());
            out.push(b'}');
        }
        AccessLogFormat::Common => {
            // NCSA common log format, then the fields it lacks as key=value.
            let _ = write!(out, "{} - - [{clf}] \"{} ", e.client.ip(), e.method);
            push_escaped_target(out, target);
            let _ = write!(
                out,
                " {}\" {} {} host={} duration_ms={duration_ms:.3} route={} upstream={} endpoint={} attempts={}",
                protocol(e.version),
                e.status,
                e.bytes,
                host.unwrap_or("-"),
                e.route.as_deref().unwrap_or("-"),
                e.upstream.as_deref().unwrap_or("-"),
                e.endpoint.as_deref().unwrap_or("-"),
                e.attempts,
            );
        }
    }
    out.push(b'\n');
}

/// The request target inside the common format's quotes: a `"` or `\`
/// (which a target may hold) as `\x22` or `\x5C`, as nginx writes them, so
/// a client cannot end the quoted request early and write fields of its
/// own into the line.
fn push_escaped_target(out: &mut Vec<u8>, target: &str) {
    for &b in target.as_bytes() {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            let _ = write!(out, "\\x{b:02X}");
        } else {
            out.push(b);
        }
    }
}

/// A JSON string (or `null`) as serde_json writes it: as it is when no
/// byte needs escaping, the usual case; through serde_json otherwise.
fn json_str(out: &mut Vec<u8>, value: Option<&str>) {
    let Some(value) = value else {
        out.extend_from_slice(b"null");
        return;
    };
    // serde_json escapes exactly these: control characters, `"` and `\\`.
    if value.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(value.as_bytes());
        out.push(b'"');
    } else {
        let _ = serde_json::to_writer(&mut *out, value);
    }
}

/// `ip:port` as `SocketAddr` displays it, without the formatter for IPv4.
fn push_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(v4) => {
            let mut digits = itoa::Buffer::new();
            for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                out.extend_from_slice(digits.format(octet).as_bytes());
            }
            out.push(b':');
            out.extend_from_slice(digits.format(v4.port()).as_bytes());
        }
        SocketAddr::V6(_) => {
            let _ = write!(out, "{addr}");
        }
    }
}

/// Milliseconds as three digits.
fn push_millis(out: &mut Vec<u8>, millis: u32) {
    let m = millis.min(999);
    out.extend_from_slice(&[
        b'0' + (m / 100) as u8,
        b'0' + (m / 10 % 10) as u8,
        b'0' + (m % 10) as u8,
    ]);
}

/// `26/Nov/2026:06:00:00 +0000` from the RFC 3339 rendering.
fn clf_time(rfc: &str) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month: usize = rfc[5..7].parse().unwrap_or(1);
    format!(
        "{}/{}/{}:{} +0000",
        &rfc[8..10],
        MONTHS[month.clamp(1, 12) - 1],
        &rfc[0..4],
        &rfc[11..19]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            time: SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_672_800),
            client: "192.0.2.1:5555".parse().unwrap(),
            method: Method::GET,
            host: Some(HeaderValue::from_static("a.example")),
            target: Some(PathAndQuery::from_static("/x?y=%221%22")),
            version: Version::HTTP_11,
            status: 200,
            bytes: 12,
            duration: Duration::from_micros(1500),
            route: Some("api".into()),
            upstream: Some("api".into()),
            endpoint: Some("127.0.0.1:9001".into()),
            attempts: 1,
        }
    }

    #[test]
    fn json_lines_escape_and_carry_every_field() {
        let mut line = Vec::new();
        format_line(&entry(), AccessLogFormat::Json, &mut line);
        let v: serde_json::Value = serde_json::from_slice(line.trim_ascii_end()).unwrap();
        assert_eq!(v["path"], "/x?y=%221%22");
        assert_eq!(v["client"], "192.0.2.1:5555");
        assert_eq!(v["host"], "a.example");
        assert_eq!(v["route"], "api");
        assert_eq!(v["attempts"], 1);
        assert_eq!(v["status"], 200);
        assert_eq!(v["duration_ms"], 1.5);
        assert_eq!(v["endpoint"], "127.0.0.1:9001");
        assert_eq!(v["time"], "2026-11-26T06:00:00.000Z");
    }

    #[test]
    fn common_lines() {
        let mut line = Vec::new();
        format_line(&entry(), AccessLogFormat::Common, &mut line);
        assert_eq!(
            String::from_utf8(line).unwrap(),
            "192.0.2.1 - - [26/Nov/2026:06:00:00 +0000] \"GET /x?y=%221%22 HTTP/1.1\" 200 12 host=a.example duration_ms=1.500 route=api upstream=api endpoint=127.0.0.1:9001 attempts=1\n"
        );
    }

    #[test]
    fn a_quote_in_the_target_cannot_end_the_common_request_field() {
        let mut e = entry();
        e.target = Some(PathAndQuery::from_static("/x\"_200_1_\"-\\"));
        let mut line = Vec::new();
        format_line(&e, AccessLogFormat::Common, &mut line);
        let line = String::from_utf8(line).unwrap();
        assert!(
            line.contains("\"GET /x\\x22_200_1_\\x22-\\x5C HTTP/1.1\" 200 12 "),
            "{line}"
        );
        assert_eq!(line.matches('"').count(), 2, "{line}");
    }

    /// The hand-assembled line is what serde_json writes for the same
    /// object, for values that need escaping and for absent ones.
    #[test]
    fn json_lines_equal_serde_json_of_the_same_object() {
        let mut e = entry();
        e.host = Some(HeaderValue::from_static("h\\x"));
        e.route = Some("tab\there, \"quoted\"".into());
        e.time += Duration::from_millis(7);
        e.duration = Duration::from_nanos(1_234_567);
        let mut line = Vec::new();
        format_line(&e, AccessLogFormat::Json, &mut line);
        // The object as the log wrote it before (a derived Serialize).
        #[derive(serde::Serialize)]
        struct JsonLine<'a> {
            time: &'a str,
            client: &'a str,
            method: &'a str,
            host: Option<&'a str>,
            path: &'a str,
            protocol: &'a str,
            status: u16,
            bytes: u64,
            duration_ms: f64,
            route: Option<&'a str>,
            upstream: Option<&'a str>,
            endpoint: Option<&'a str>,
            attempts: u32,
        }
        let expected = JsonLine {
            time: "2026-11-26T06:00:00.007Z",
            client: "192.0.2.1:5555",
            method: "GET",
            host: Some("h\\x"),
            path: "/x?y=%221%22",
            protocol: "HTTP/1.1",
            status: 200,
            bytes: 12,
            duration_ms: 1.235,
            route: Some("tab\there, \"quoted\""),
            upstream: Some("api"),
            endpoint: Some("127.0.0.1:9001"),
            attempts: 1,
        };
        assert_eq!(
            String::from_utf8(line).unwrap(),
            format!("{}\n", serde_json::to_string(&expected).unwrap())
        );
    }

    /// A queue longer than a batch is written batch after batch, resting
    /// only once it is drained: the writer keeps up with any rate the
    /// queue does.
    #[test]
    fn the_writer_rests_only_when_the_queue_is_drained() {
        let (tx, rx) = sync_channel(QUEUE);
        let lines = 3_000;
        for _ in 0..lines {
            tx.try_send(Message::Line(entry())).unwrap();
        }
        drop(tx);
        let (mut out, mut rests) = (Vec::new(), 0);
        write_all(&rx, AccessLogFormat::Json, &mut out, || rests += 1);
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), lines);
        assert!(out.len() > 10 * BATCH_BYTES, "many batches");
        assert_eq!(rests, 1);
    }

    /// A writer that fails each write (a full disk): every batch is
    /// tried, the lines are dropped, and the error is logged at the 1st,
    /// 2nd, 4th, ... failure, not at each.
    #[test]
    fn failed_writes_are_logged_at_powers_of_two() {
        #[derive(Clone, Default)]
        struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for Captured {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        impl tracing_subscriber::fmt::MakeWriter<'_> for Captured {
            type Writer = Captured;
            fn make_writer(&self) -> Captured {
                self.clone()
            }
        }
        struct Full(usize);
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                self.0 += 1;
                Err(std::io::Error::from_raw_os_error(28))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let (tx, rx) = sync_channel(QUEUE);
        let (mut full, captured) = (Full(0), Captured::default());
        let subscriber = tracing_subscriber::fmt()
            .with_writer(captured.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            // A batch per flush: 100 batches, 100 failed writes.
            for _ in 0..100 {
                tx.try_send(Message::Line(entry())).unwrap();
                let (done, _) = std::sync::mpsc::channel();
                tx.try_send(Message::Flush(done)).unwrap();
            }
            drop(tx);
            write_all(&rx, AccessLogFormat::Common, &mut full, || {});
        });
        assert_eq!(full.0, 100);
        let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let counts: Vec<_> = log
            .lines()
            .map(|l| l.split("failed=").nth(1).unwrap().to_owned())
            .collect();
        assert_eq!(counts, ["1", "2", "4", "8", "16", "32", "64"], "{log}");
    }

    /// A flush (at shutdown) is answered once every line queued before it
    /// is written, without waiting for the writer's rest.
    #[test]
    fn a_flush_is_answered_after_the_lines_before_it() {
        let (tx, rx) = sync_channel(QUEUE);
        for _ in 0..5 {
            tx.try_send(Message::Line(entry())).unwrap();
        }
        let (done, flushed) = std::sync::mpsc::channel();
        tx.try_send(Message::Flush(done)).unwrap();
        tx.try_send(Message::Line(entry())).unwrap();
        drop(tx);
        /// The lines of each write.
        struct Writes(Vec<usize>);
        impl Write for Writes {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.push(b.iter().filter(|&&c| c == b'\n').count());
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut writes = Writes(Vec::new());
        let mut acknowledged_before_rest = false;
        write_all(&rx, AccessLogFormat::Common, &mut writes, || {
            acknowledged_before_rest = flushed.try_recv().is_ok();
        });
        assert!(acknowledged_before_rest);
        // The five lines before the flush in one write, then the sixth.
        assert_eq!(writes.0, [5, 1]);
    }
}
