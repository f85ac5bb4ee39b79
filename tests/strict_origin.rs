//! Request smuggling and framing probes against a strict origin
//! (`support/origin.rs`): each probe sends raw bytes to fulcrum and asserts
//! that the origin parsed exactly the requests the client sent, each framed
//! once, that refused requests got their status, and that a follow-up
//! request from another connection gets its own answer (no poisoned pooled
//! connection). Response-side probes script the origin's bytes.
//!
//! The same probes run against another proxy with
//! `PROBE_PROXY=127.0.0.1:PORT PROBE_ORIGIN=127.0.0.1:PORT cargo test --test
//! strict_origin -- --ignored --nocapture`: the origin listens on
//! `PROBE_ORIGIN` (the other proxy's upstream) and a table of outcomes is
//! printed instead of assertions (docs/security.md has the comparison).

#![allow(clippy::print_stdout)] // what failed, for the reader

#[path = "support/origin.rs"]
mod origin;
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use origin::Origin;
use support::Proxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[path = "support/probes.rs"]
mod probes;
#[path = "support/response_probes.rs"]
mod response_probes;

use probes::{Expect, Probe};
use response_probes::ResponseProbe;

/// What a client read from one connection.
#[derive(Debug, Default)]
struct Read {
    answers: Vec<Answer>,
    /// The connection closed (or the bound passed) before more came.
    rest: Vec<u8>,
}

#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

/// Sends `bytes` on a new connection and reads up to `wanted` responses
/// (stopping early at the close), within a bound.
async fn talk(addr: SocketAddr, bytes: &[u8], wanted: usize, head_request: bool) -> Read {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(bytes).await;
    let mut buf = Vec::new();
    let mut read = Read::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut chunk = [0u8; 16384];
    loop {
        while read.answers.len() < wanted {
            match parse_answer(&buf, head_request) {
                Some((len, answer)) => {
                    buf.drain(..len);
                    // Interim responses (100 Continue) are not counted.
                    if answer.status >= 200 {
                        read.answers.push(answer);
                    }
                }
                None => break,
            }
        }
        if read.answers.len() >= wanted {
            break;
        }
        let got = tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await;
        match got {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => {
                // Closed: a body delimited by the close ends here.
                if let Some(answer) = close_delimited(&buf) {
                    read.answers.push(answer);
                    buf.clear();
                }
                break;
            }
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    read.rest = buf;
    read
}

/// One whole response at the start of `buf`, framed by its length or
/// chunks; `None` if not all there (or delimited by the close).
fn parse_answer(buf: &[u8], head_request: bool) -> Option<(usize, Answer)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let status: u16 = head.get(9..12)?.parse().ok()?;
    let field = |name: &str| {
        head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    };
    if head_request || status < 200 || status == 204 || status == 304 {
        let body = Vec::new();
        return Some((end, Answer { status, head, body }));
    }
    if field("transfer-encoding").is_some() {
        let mut at = end;
        let mut body = Vec::new();
        loop {
            let eol = buf[at..].windows(2).position(|w| w == b"\r\n")?;
            let line = std::str::from_utf8(&buf[at..at + eol]).ok()?;
            let size = usize::from_str_radix(line.split(';').next()?, 16).ok()?;
            at += eol + 2;
            if size == 0 {
                // Trailer fields, then the empty line.
                loop {
                    let eol = buf[at..].windows(2).position(|w| w == b"\r\n")?;
                    at += eol + 2;
                    if eol == 0 {
                        return Some((at, Answer { status, head, body }));
                    }
                }
            }
            body.extend_from_slice(buf.get(at..at + size)?);
            at += size + 2;
            if at > buf.len() {
                return None;
            }
        }
    }
    let length: usize = field("content-length")?.parse().ok()?;
    let body = buf.get(end..end + length)?.to_vec();
    Some((end + length, Answer { status, head, body }))
}

fn close_delimited(buf: &[u8]) -> Option<Answer> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let status = head.get(9..12)?.parse().ok()?;
    Some(Answer {
        status,
        head,
        body: buf[end..].to_vec(),
    })
}

/// Where the probes go.
struct Setup {
    proxy_addr: SocketAddr,
    origin: Origin,
    _proxy: Option<Proxy>,
}

async fn fulcrum_with_origin() -> Setup {
    let origin = Origin::spawn().await;
    let config = support::config_for(&[origin.addr], "", "retries = 0");
    let proxy = Proxy::start(&config).await;
    Setup {
        proxy_addr: proxy.addr(),
        origin,
        _proxy: Some(proxy),
    }
}

/// Runs one request-side probe; the reasons it failed (none: passed).
async fn run_probe(setup: &Setup, n: usize, probe: &Probe) -> Vec<String> {
    let origin = &setup.origin;
    let before = origin.received().len();
    let violations = origin.violations().len();
    let mut failed = Vec::new();
    let (forwarded, refused) = match &probe.expect {
        Expect::Forward(wants) => (wants.clone(), None),
        Expect::Refuse(status) => (Vec::new(), Some(*status)),
        Expect::Then(wants, status) => (wants.clone(), Some(*status)),
    };
    let wanted = forwarded.len() + usize::from(refused.is_some());
    let read = talk(setup.proxy_addr, &probe.bytes, wanted, false).await;
    let statuses: Vec<u16> = read.answers.iter().map(|a| a.status).collect();
    let mut want_statuses = vec![200; forwarded.len()];
    want_statuses.extend(refused);
    if statuses != want_statuses {
        failed.push(format!("statuses {statuses:?}, wanted {want_statuses:?}"));
    }
    for answer in read.answers.iter().filter(|a| a.status >= 400) {
        if !answer
            .head
            .to_ascii_lowercase()
            .contains("content-type: text/plain")
            || answer.body.is_empty()
        {
            failed.push(format!(
                "error without a text/plain cause: {:?}",
                answer.head
            ));
        }
    }
    let received = &origin.received()[before..];
    let got: Vec<(String, String, String)> = received
        .iter()
        .map(|r| {
            let body = String::from_utf8_lossy(&r.body).into_owned();
            (r.method.clone(), r.target.clone(), body)
        })
        .collect();
    let want: Vec<(String, String, String)> = forwarded
        .iter()
        .map(|w| (w.0.to_owned(), w.1.to_owned(), w.2.to_owned()))
        .collect();
    if got != want {
        failed.push(format!("origin parsed {got:?}, wanted {want:?}"));
    }
    for r in received {
        if r.field("x-forwarded-for").len() != 1 {
            failed.push(format!(
                "{} {} reached the origin unrouted",
                r.method, r.target
            ));
        }
        let bad_trailer = r.trailers.iter().any(|(n, _)| {
            let n = n.to_ascii_lowercase();
            matches!(
                n.as_str(),
                "content-length" | "transfer-encoding" | "host" | "connection" | "keep-alive"
            )
        });
        if bad_trailer {
            failed.push(format!("forbidden trailer forwarded: {:?}", r.trailers));
        }
    }
    let new_violations = &origin.violations()[violations..];
    if !new_violations.is_empty() {
        failed.push(format!("origin saw {new_violations:?}"));
    }
    // Another client: its own answer, whatever the probe left behind.
    failed.extend(follow_up(setup, &n.to_string()).await);
    let pending = origin.pending();
    if !pending.is_empty() {
        failed.push(format!("bytes left pending at the origin: {pending:?}"));
    }
    failed
}

/// Runs one response-side probe; the reasons it failed.
async fn run_response_probe(setup: &Setup, n: usize, probe: &ResponseProbe) -> Vec<String> {
    let name = format!("resp{n}");
    setup.origin.script(&name, probe.origin, probe.close);
    let method = if probe.head { "HEAD" } else { "GET" };
    let request = format!("{method} /r/{name} HTTP/1.1\r\nHost: probe\r\n\r\n");
    let read = talk(setup.proxy_addr, request.as_bytes(), 1, probe.head).await;
    let mut failed = Vec::new();
    match (read.answers.first(), probe.status) {
        (Some(a), Some(status)) if a.status == status => {
            if let Some(body) = probe.body
                && a.body != body
            {
                failed.push(format!("body {:?}, wanted {body:?}", lossy(&a.body)));
            }
            for field in probe.fields {
                if !a.head.to_ascii_lowercase().contains(field) {
                    failed.push(format!("head {:?} lacks {field:?}", a.head));
                }
            }
            for field in probe.absent {
                if a.head.to_ascii_lowercase().contains(field) {
                    failed.push(format!("head {:?} has {field:?}", a.head));
                }
            }
        }
        // No status wanted: cut short, no whole response.
        (None, None) => {}
        (Some(a), None) if probe.body.is_some_and(|b| a.body.len() < b.len()) => {}
        (got, want) => failed.push(format!("got {got:?}, wanted status {want:?}")),
    }
    if !read.rest.is_empty() {
        failed.push(format!("bytes past the response: {:?}", lossy(&read.rest)));
    }
    failed.extend(follow_up(setup, &format!("r{n}")).await);
    failed
}

/// A request from another connection after a probe: why it did not get its
/// own answer, if it did not (a poisoned pooled connection).
async fn follow_up(setup: &Setup, tag: &str) -> Option<String> {
    let follow = format!("GET /follow-up/{tag} HTTP/1.1\r\nHost: probe\r\n\r\n");
    let read = talk(setup.proxy_addr, follow.as_bytes(), 1, false).await;
    let own = read.answers.first().is_some_and(|a| {
        a.status == 200 && String::from_utf8_lossy(&a.body).contains(&format!("/follow-up/{tag} "))
    });
    (!own).then(|| format!("follow-up got {:?}", read.answers.first()))
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Fails with every probe that failed, named, and why.
fn assert_all_passed(outcomes: &[(String, Vec<String>)]) {
    let failures: Vec<String> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, (_, failed))| !failed.is_empty())
        .map(|(n, (name, failed))| format!("{n} {name}: {}", failed.join("; ")))
        .collect();
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[tokio::test]
async fn request_probes_reach_the_origin_exactly_as_sent() {
    let setup = fulcrum_with_origin().await;
    let probes = probes::requests();
    assert!(probes.len() >= 100, "{} request probes", probes.len());
    let mut outcomes = Vec::new();
    for (n, probe) in probes.iter().enumerate() {
        outcomes.push((probe.name.clone(), run_probe(&setup, n, probe).await));
    }
    assert_all_passed(&outcomes);
}

#[tokio::test]
async fn response_probes_reach_the_client_framed_once() {
    let setup = fulcrum_with_origin().await;
    let probes = response_probes::responses();
    assert!(probes.len() >= 40, "{} response probes", probes.len());
    let mut outcomes = Vec::new();
    for (n, probe) in probes.iter().enumerate() {
        let failed = run_response_probe(&setup, n, probe).await;
        outcomes.push((probe.name.to_owned(), failed));
    }
    assert_all_passed(&outcomes);
}

/// How a probe's outcome differs from fulcrum's: `unsafe` (a request
/// reached the origin unrouted, a follow-up got another's answer, bytes were
/// left pending on a pooled connection, a forbidden trailer or bytes past a
/// response went through), `origin rejects` (what was forwarded breaks a
/// strict origin's rules), `same status` (only the error body differs),
/// `differs` (another status or another choice).
fn classify(failed: &[String]) -> &'static str {
    let has = |needle: &str| failed.iter().any(|f| f.contains(needle));
    if failed.is_empty() {
        "same"
    } else if has("unrouted")
        || has("follow-up got")
        || has("pending")
        || has("forbidden trailer")
        || has("bytes past")
    {
        "unsafe"
    } else if has("origin saw") {
        "origin rejects"
    } else if failed
        .iter()
        .all(|f| f.starts_with("error without a text/plain"))
    {
        "same status"
    } else {
        "differs"
    }
}

/// The probes against another proxy (nginx, HAProxy): prints each probe's
/// outcome. Not run by `cargo test` (it needs that proxy running).
#[tokio::test]
#[ignore = "needs PROBE_PROXY and PROBE_ORIGIN, and that proxy running"]
async fn probes_against_another_proxy() {
    let (Ok(proxy), Ok(origin)) = (std::env::var("PROBE_PROXY"), std::env::var("PROBE_ORIGIN"))
    else {
        panic!("set PROBE_PROXY and PROBE_ORIGIN");
    };
    let listener = tokio::net::TcpListener::bind(&origin).await.unwrap();
    let setup = Setup {
        proxy_addr: proxy.parse().unwrap(),
        origin: Origin::serve(listener),
        _proxy: None,
    };
    let mut classes = std::collections::BTreeMap::<&str, usize>::new();
    for (n, probe) in probes::requests().iter().enumerate() {
        let failed = run_probe(&setup, n, probe).await;
        let class = classify(&failed);
        *classes.entry(class).or_default() += 1;
        println!(
            "req {n:3} {class:<14} {:<60} {}",
            probe.name,
            failed.join("; ")
        );
    }
    for (n, probe) in response_probes::responses().iter().enumerate() {
        let failed = run_response_probe(&setup, n, probe).await;
        let class = classify(&failed);
        *classes.entry(class).or_default() += 1;
        println!(
            "resp {n:3} {class:<14} {:<60} {}",
            probe.name,
            failed.join("; ")
        );
    }
    println!("{classes:?}");
}
