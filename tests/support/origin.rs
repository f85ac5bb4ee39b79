//! A strict origin: a raw loopback HTTP/1.1 server that parses what it
//! receives as a strict RFC 9112 server would (CR LF line endings only, one
//! request line form, token field names, no obs-fold, exactly one framing,
//! digits-only Content-Length, the chunk grammar of section 7.1) and records
//! every request, every rule broken, and the bytes left pending on each
//! connection. A request for `/r/NAME` is answered with the script `NAME`
//! (raw bytes, the connection kept or closed after them); any other with
//! `200` and a body naming the request.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A request as the origin parsed it.
#[derive(Debug, Clone)]
pub struct Received {
    pub conn: usize,
    pub method: String,
    pub target: String,
    pub fields: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
}

impl Received {
    /// The values of the field `name` (any case).
    pub fn field(&self, name: &str) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// A scripted answer.
#[derive(Debug, Clone)]
pub struct Script {
    pub bytes: Vec<u8>,
    pub close: bool,
}

#[derive(Debug, Default)]
struct State {
    received: Vec<Received>,
    violations: Vec<String>,
    /// Per open connection: bytes read and not part of a whole request.
    pending: HashMap<usize, Vec<u8>>,
    scripts: HashMap<String, Script>,
    connections: usize,
}

/// The origin's address and what it saw.
#[derive(Clone)]
pub struct Origin {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl Origin {
    /// Serves on `listener`.
    pub fn serve(listener: TcpListener) -> Self {
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let shared = Arc::clone(&state);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let conn = {
                    let mut s = shared.lock().unwrap();
                    s.connections += 1;
                    s.connections
                };
                tokio::spawn(connection(stream, conn, Arc::clone(&shared)));
            }
        });
        Self { addr, state }
    }

    pub async fn spawn() -> Self {
        Self::serve(TcpListener::bind("127.0.0.1:0").await.unwrap())
    }

    pub fn script(&self, name: &str, bytes: &[u8], close: bool) {
        self.state.lock().unwrap().scripts.insert(
            name.to_owned(),
            Script {
                bytes: bytes.to_vec(),
                close,
            },
        );
    }

    /// Requests received so far.
    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    /// Rules broken so far.
    pub fn violations(&self) -> Vec<String> {
        self.state.lock().unwrap().violations.clone()
    }

    /// Bytes pending on open connections (a partial request left behind).
    pub fn pending(&self) -> Vec<(usize, String)> {
        let s = self.state.lock().unwrap();
        s.pending
            .iter()
            .filter(|(_, b)| !b.is_empty())
            .map(|(c, b)| (*c, String::from_utf8_lossy(b).into_owned()))
            .collect()
    }
}

async fn connection(mut stream: TcpStream, conn: usize, state: Arc<Mutex<State>>) {
    let mut buf = Vec::new();
    let mut read = [0u8; 16384];
    loop {
        // Every whole request in the buffer, in order.
        loop {
            let parsed = parse_request(&buf);
            match parsed {
                Parse::Incomplete => break,
                Parse::Violation(why) => {
                    let mut s = state.lock().unwrap();
                    s.violations
                        .push(format!("conn {conn}: {why}: {:?}", lossy(&buf)));
                    s.pending.remove(&conn);
                    return;
                }
                Parse::Complete(len, mut request) => {
                    buf.drain(..len);
                    request.conn = conn;
                    let reply = {
                        let mut s = state.lock().unwrap();
                        let seq = s.received.len();
                        s.pending.insert(conn, buf.clone());
                        let reply = match request.target.strip_prefix("/r/") {
                            Some(name) => s.scripts.get(name).cloned().unwrap_or(Script {
                                bytes: b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"
                                    .to_vec(),
                                close: false,
                            }),
                            None => {
                                let body = format!(
                                    "origin #{seq} {} {} {}",
                                    request.method,
                                    request.target,
                                    request.body.len()
                                );
                                Script {
                                    bytes: format!(
                                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                                        body.len()
                                    )
                                    .into_bytes(),
                                    close: false,
                                }
                            }
                        };
                        s.received.push(*request);
                        reply
                    };
                    if stream.write_all(&reply.bytes).await.is_err() || reply.close {
                        state.lock().unwrap().pending.remove(&conn);
                        return;
                    }
                }
            }
        }
        state.lock().unwrap().pending.insert(conn, buf.clone());
        match stream.read(&mut read).await {
            Ok(0) | Err(_) => {
                let mut s = state.lock().unwrap();
                if !buf.is_empty() {
                    s.violations.push(format!(
                        "conn {conn}: closed with {:?} pending",
                        lossy(&buf)
                    ));
                }
                s.pending.remove(&conn);
                return;
            }
            Ok(n) => buf.extend_from_slice(&read[..n]),
        }
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

enum Parse {
    Incomplete,
    Violation(String),
    Complete(usize, Box<Received>),
}

/// One request at the start of `buf`, by RFC 9112 read strictly.
fn parse_request(buf: &[u8]) -> Parse {
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        if let Some(v) = bare_lf(buf) {
            return v;
        }
        return Parse::Incomplete;
    };
    let head = &buf[..head_end + 2];
    if let Some(v) = bare_lf(head) {
        return v;
    }
    let text = match std::str::from_utf8(head) {
        Ok(t) => t,
        Err(_) => return Parse::Violation("head is not ASCII".into()),
    };
    let mut lines = text.split("\r\n");
    let line = lines.next().unwrap_or_default();
    let parts: Vec<&str> = line.split(' ').collect();
    if parts.len() != 3 || !matches!(parts[2], "HTTP/1.1" | "HTTP/1.0") || parts[0].is_empty() {
        return Parse::Violation(format!("request line {line:?}"));
    }
    // Origin form, or absolute form (which a server must accept, RFC 9112
    // section 3.2.2): recorded by its path.
    let target = match parts[1].strip_prefix("http://") {
        Some(rest) => rest.find('/').map_or("/", |at| &rest[at..]),
        None => parts[1],
    };
    if !parts[0].bytes().all(is_tchar) || !target.starts_with('/') {
        return Parse::Violation(format!("request line {line:?}"));
    }
    let mut fields = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        if line.starts_with([' ', '\t']) {
            return Parse::Violation(format!("obs-fold {line:?}"));
        }
        let Some((name, value)) = line.split_once(':') else {
            return Parse::Violation(format!("field line {line:?}"));
        };
        if name.is_empty() || !name.bytes().all(is_tchar) {
            return Parse::Violation(format!("field name {name:?}"));
        }
        if value.bytes().any(|b| b < 0x20 && b != b'\t' || b == 0x7f) {
            return Parse::Violation(format!("field value {value:?}"));
        }
        fields.push((name.to_owned(), value.trim_matches([' ', '\t']).to_owned()));
    }
    let named = |n: &str| {
        fields
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
            .collect::<Vec<_>>()
    };
    let (lengths, codings, hosts) = (
        named("content-length"),
        named("transfer-encoding"),
        named("host"),
    );
    if hosts.len() != 1 {
        return Parse::Violation(format!("{} Host fields", hosts.len()));
    }
    if !lengths.is_empty() && !codings.is_empty() {
        return Parse::Violation("both Content-Length and Transfer-Encoding".into());
    }
    let mut request = Received {
        conn: 0,
        method: parts[0].to_owned(),
        target: target.to_owned(),
        fields,
        body: Vec::new(),
        trailers: Vec::new(),
    };
    let body_start = head_end + 4;
    if !codings.is_empty() {
        if codings.len() != 1 || !codings[0].eq_ignore_ascii_case("chunked") {
            return Parse::Violation(format!("Transfer-Encoding {codings:?}"));
        }
        return chunked(buf, body_start, request);
    }
    let length = match lengths.as_slice() {
        [] => 0,
        [one] if !one.is_empty() && one.bytes().all(|b| b.is_ascii_digit()) => {
            one.parse::<usize>().unwrap()
        }
        other => return Parse::Violation(format!("Content-Length {other:?}")),
    };
    if buf.len() < body_start + length {
        return Parse::Incomplete;
    }
    request.body = buf[body_start..body_start + length].to_vec();
    Parse::Complete(body_start + length, Box::new(request))
}

/// A chunked body from `at`, strictly.
fn chunked(buf: &[u8], mut at: usize, mut request: Received) -> Parse {
    loop {
        let line = match crlf_line(buf, &mut at) {
            Ok(line) => line,
            Err(stop) => return stop,
        };
        let size_end = line
            .iter()
            .position(|b| !b.is_ascii_hexdigit())
            .unwrap_or(line.len());
        if size_end == 0 || (size_end < line.len() && line[size_end] != b';') {
            return Parse::Violation(format!("chunk line {:?}", lossy(line)));
        }
        let size = usize::from_str_radix(std::str::from_utf8(&line[..size_end]).unwrap(), 16);
        let Ok(size) = size else {
            return Parse::Violation(format!("chunk size {:?}", lossy(line)));
        };
        if size == 0 {
            // Trailer fields, then an empty line.
            loop {
                let line = match crlf_line(buf, &mut at) {
                    Ok(line) => line,
                    Err(stop) => return stop,
                };
                if line.is_empty() {
                    return Parse::Complete(at, Box::new(request));
                }
                let text = lossy(line);
                let Some((n, v)) = text.split_once(':') else {
                    return Parse::Violation(format!("trailer line {text:?}"));
                };
                request.trailers.push((n.to_owned(), v.trim().to_owned()));
            }
        }
        if buf.len() < at + size + 2 {
            return Parse::Incomplete;
        }
        request.body.extend_from_slice(&buf[at..at + size]);
        if &buf[at + size..at + size + 2] != b"\r\n" {
            return Parse::Violation("chunk data not followed by CR LF".into());
        }
        at += size + 2;
    }
}

/// The CR LF-ended line at `at` (moved past it); a bare LF is a violation,
/// a line not yet ended is incomplete.
fn crlf_line<'b>(buf: &'b [u8], at: &mut usize) -> Result<&'b [u8], Parse> {
    let Some(eol) = find(&buf[*at..], b"\r\n") else {
        return Err(bare_lf(&buf[*at..]).unwrap_or(Parse::Incomplete));
    };
    let line = &buf[*at..*at + eol];
    if let Some(v) = bare_lf(line) {
        return Err(v);
    }
    *at += eol + 2;
    Ok(line)
}

fn bare_lf(bytes: &[u8]) -> Option<Parse> {
    bytes
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || bytes[i - 1] != b'\r'))
        .then(|| Parse::Violation("bare LF".into()))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}
