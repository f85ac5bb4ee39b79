//! The access log: one line per request, `json` or `common`, to stdout or a
//! file, written by its own task.
//!
//! The request path only moves an [`Entry`] into a bounded queue
//! (`try_send`); formatting and writing happen in the writer task, so a slow
//! disk or a blocked stdout never slows requests. When the queue is full the
//! line is dropped, counted in `fulcrum_access_log_dropped_total`, and a
//! warning is logged (at the 1st, 2nd, 4th, 8th, ... drop).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use http::{Method, Version};
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;

use crate::config::{AccessLogConfig, AccessLogFormat};
use crate::metrics::{self as m, Metrics};

/// Lines waiting for the writer before new ones are dropped.
pub const QUEUE: usize = 8192;

/// One request, as the access log records it.
#[derive(Debug)]
pub struct Entry {
    pub time: SystemTime,
    pub client: SocketAddr,
    pub method: Method,
    pub host: Option<String>,
    pub path: String,
    pub version: Version,
    pub status: u16,
    pub bytes: u64,
    pub duration: Duration,
    pub route: Option<String>,
    pub upstream: Option<Arc<str>>,
    pub endpoint: Option<Arc<str>>,
    pub attempts: u32,
}

/// The sending side of the access log.
#[derive(Debug)]
pub struct AccessLog {
    tx: mpsc::Sender<Entry>,
    dropped: AtomicU64,
    dropped_total: metrics::Counter,
}

/// The writing side, to be spawned.
pub struct Writer {
    rx: mpsc::Receiver<Entry>,
    format: AccessLogFormat,
    path: Option<PathBuf>,
}

#[derive(serde::Serialize)]
struct JsonLine<'a> {
    time: String,
    client: String,
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
        let (tx, rx) = mpsc::channel(QUEUE);
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
        if self.tx.try_send(entry).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            self.dropped_total.increment(1);
            if n.is_power_of_two() {
                tracing::warn!(dropped = n, "access log writer is behind; lines dropped");
            }
        }
    }
}

impl Writer {
    /// Writes lines until every sender is gone.
    pub async fn run(self) {
        let Writer { rx, format, path } = self;
        match path {
            None => write_all(rx, format, tokio::io::stdout()).await,
            Some(path) => {
                let file = tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .await;
                match file {
                    Ok(file) => write_all(rx, format, file).await,
                    Err(error) => {
                        tracing::error!(path = %path.display(), %error, "cannot open the access log; lines are dropped");
                    }
                }
            }
        }
    }
}

async fn write_all(
    mut rx: mpsc::Receiver<Entry>,
    format: AccessLogFormat,
    out: impl AsyncWrite + Unpin,
) {
    let mut out = BufWriter::new(out);
    let mut line = String::new();
    while let Some(entry) = rx.recv().await {
        let mut next = Some(entry);
        // Write what is queued, then flush once.
        while let Some(entry) = next {
            line.clear();
            format_line(&entry, format, &mut line);
            if let Err(error) = out.write_all(line.as_bytes()).await {
                tracing::error!(%error, "access log write failed");
            }
            next = rx.try_recv().ok();
        }
        if let Err(error) = out.flush().await {
            tracing::error!(%error, "access log flush failed");
        }
    }
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

/// Formats one line, newline included.
pub fn format_line(e: &Entry, format: AccessLogFormat, out: &mut String) {
    use std::fmt::Write as _;
    let duration_ms = e.duration.as_secs_f64() * 1000.0;
    match format {
        AccessLogFormat::Json => {
            let line = JsonLine {
                time: humantime::format_rfc3339_millis(e.time).to_string(),
                client: e.client.to_string(),
                method: e.method.as_str(),
                host: e.host.as_deref(),
                path: &e.path,
                protocol: protocol(e.version),
                status: e.status,
                bytes: e.bytes,
                duration_ms: (duration_ms * 1000.0).round() / 1000.0,
                route: e.route.as_deref(),
                upstream: e.upstream.as_deref(),
                endpoint: e.endpoint.as_deref(),
                attempts: e.attempts,
            };
            if let Ok(json) = serde_json::to_string(&line) {
                out.push_str(&json);
            }
        }
        AccessLogFormat::Common => {
            // NCSA common log format, then the fields it lacks as key=value.
            let _ = write!(
                out,
                "{} - - [{}] \"{} {} {}\" {} {} host={} duration_ms={:.3} route={} upstream={} endpoint={} attempts={}",
                e.client.ip(),
                clf_time(e.time),
                e.method,
                e.path,
                protocol(e.version),
                e.status,
                e.bytes,
                e.host.as_deref().unwrap_or("-"),
                duration_ms,
                e.route.as_deref().unwrap_or("-"),
                e.upstream.as_deref().unwrap_or("-"),
                e.endpoint.as_deref().unwrap_or("-"),
                e.attempts,
            );
        }
    }
    out.push('\n');
}

/// `26/Nov/2026:06:00:00 +0000` from the RFC 3339 rendering.
fn clf_time(time: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    // "2026-11-26T06:00:00Z"
    let rfc = humantime::format_rfc3339_seconds(time).to_string();
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
            host: Some("a.example".into()),
            path: "/x?y=\"1\"".into(),
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
        let mut line = String::new();
        format_line(&entry(), AccessLogFormat::Json, &mut line);
        let v: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(v["path"], "/x?y=\"1\"");
        assert_eq!(v["status"], 200);
        assert_eq!(v["duration_ms"], 1.5);
        assert_eq!(v["endpoint"], "127.0.0.1:9001");
        assert_eq!(v["time"], "2026-11-26T06:00:00.000Z");
    }

    #[test]
    fn common_lines() {
        let mut line = String::new();
        format_line(&entry(), AccessLogFormat::Common, &mut line);
        assert_eq!(
            line,
            "192.0.2.1 - - [26/Nov/2026:06:00:00 +0000] \"GET /x?y=\"1\" HTTP/1.1\" 200 12 host=a.example duration_ms=1.500 route=api upstream=api endpoint=127.0.0.1:9001 attempts=1\n"
        );
    }
}
