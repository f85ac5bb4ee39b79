//! HTTP/2 abuse over raw connections (h2c, prior knowledge): each attack is
//! scripted frame by frame, and the test checks that fulcrum cuts it off
//! within its bound, that the endpoint is spared, and that another client
//! is served throughout. Latency during each attack is measured by the
//! harness (`cargo run --release --example h2_abuse`), not here.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use support::h2raw::*;
use support::*;

/// `fulcrum_downstream_h2_refused_total` for `cause`.
async fn refused(admin: SocketAddr, cause: &str) -> u64 {
    let labels = format!("cause=\"{cause}\"");
    metric(admin, "fulcrum_downstream_h2_refused_total", &labels).await as u64
}

/// Requests for `path` that reached the endpoint.
fn reached(b: &Backend, path: &str) -> usize {
    b.seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.uri.ends_with(path))
        .count()
}

/// Another client, sending requests one after another until stopped.
struct Victim {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<Vec<String>>,
}

impl Victim {
    fn start(url: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let (s, o) = (Arc::clone(&stop), Arc::clone(&ok));
        let task = tokio::spawn(async move {
            let client = client();
            let mut failures = Vec::new();
            while !s.load(Ordering::Relaxed) {
                match client.get(url.parse().unwrap()).await {
                    Ok(r) if r.status() == 200 => {
                        o.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => failures.push(r.status().to_string()),
                    Err(e) => failures.push(e.to_string()),
                }
            }
            failures
        });
        Self { stop, ok, task }
    }

    /// Stops; asserts that every request was answered 200 and returns how many.
    async fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let failures = self.task.await.unwrap();
        assert!(failures.is_empty(), "the other client failed: {failures:?}");
        self.ok.load(Ordering::Relaxed)
    }
}

/// Sends `pairs` of (request, reset) in batches of `batch` per write and
/// asserts that fulcrum closes the connection.
async fn rapid_reset(h2: &mut RawH2, pairs: u32, batch: u32) {
    let written = write_pairs(h2, pairs, batch).await;
    assert!(
        h2.closed_within(Duration::from_secs(5)).await,
        "the attacking connection is still open after {written} resets"
    );
}

/// Writes (request, reset) pairs until the connection closes; returns how
/// many were written.
async fn write_pairs(h2: &mut RawH2, pairs: u32, batch: u32) -> u32 {
    let mut sent = 0;
    while sent < pairs && !h2.seen().closed {
        let bytes: Vec<u8> = (sent..sent + batch)
            .flat_map(|i| [request(2 * i + 1, "/attack", true), rst(2 * i + 1, CANCEL)].concat())
            .collect();
        if h2.send(&bytes).await.is_err() {
            break;
        }
        sent += batch;
        tokio::task::yield_now().await;
    }
    sent
}

#[tokio::test]
async fn rapid_reset_is_cut_off_and_spares_the_endpoint() {
    let (b, proxy, admin) = proxy_with_admin("").await;
    let victim = Victim::start(proxy.url("/"));
    let mut h2 = RawH2::connect(proxy.addr(), &[], true).await;
    rapid_reset(&mut h2, 10_000, 100).await;
    // Cut off by h2 (GOAWAY naming the last stream it took) or by the frame
    // watch (which refuses past 100 resets): within 1,000 either way.
    let goaway = h2.seen().goaway;
    let by_watch = refused(admin, "rapid_reset").await;
    match goaway {
        Some((last, code)) => {
            assert_eq!(code, ENHANCE_YOUR_CALM);
            let streams = last / 2 + 1;
            assert!(streams <= 1000, "GOAWAY after stream {last}");
        }
        None => assert_eq!(by_watch, 1, "closed without GOAWAY nor refusal"),
    }
    // Both limits sit above 100 resets: at most 1% of them may reach the
    // endpoint.
    let reached = reached(&b, "/attack");
    assert!(reached <= 1, "{reached} reset streams reached the endpoint");
    assert!(victim.finish().await > 0);
}

#[tokio::test]
async fn rapid_reset_spread_over_reads_is_refused_by_the_frame_watch() {
    let (b, proxy, admin) = proxy_with_admin("").await;
    let mut h2 = RawH2::connect(proxy.addr(), &[], true).await;
    // One pair per write: h2 may accept each stream before its reset, so
    // its own limit (resets of streams not yet accepted) does not see them.
    rapid_reset(&mut h2, 5_000, 1).await;
    assert_eq!(refused(admin, "rapid_reset").await, 1);
    // The watch refuses at the 101st reset: no more than that got through.
    let reached = reached(&b, "/attack");
    assert!(reached <= 101, "{reached} reached the endpoint");
}

#[tokio::test]
async fn server_provoked_resets_end_in_goaway() {
    // "MadeYouReset": a request that ends with its HEADERS but declares a
    // body (content-length: 1) is a stream error, so the server itself
    // resets the stream. (A WINDOW_UPDATE of 0 or DATA on an ended stream,
    // the advisory's other vectors, are connection errors in h2: GOAWAY at
    // once.)
    let mut block = get_block("/");
    block.extend_from_slice(&[0x0f, 28 - 15, 1, b'1']);
    let (_b, proxy, _admin) = proxy_with_admin("").await;
    let mut h2 = RawH2::connect(proxy.addr(), &[], true).await;
    let mut sent = 0u32;
    let open = |h2: &RawH2| {
        let seen = h2.seen();
        !seen.closed && seen.goaway.is_none()
    };
    while sent < 5_000 && open(&h2) {
        let bytes: Vec<u8> = (sent..sent + 50)
            .flat_map(|i| frame(HEADERS, END_HEADERS | END_STREAM, 2 * i + 1, &block))
            .collect();
        if h2.send(&bytes).await.is_err() {
            break;
        }
        sent += 50;
        tokio::task::yield_now().await;
    }
    assert!(h2.closed_within(Duration::from_secs(5)).await);
    let (last, code) = h2.seen().goaway.expect("GOAWAY");
    let resets = h2.seen().resets.len();
    assert_eq!(
        code, ENHANCE_YOUR_CALM,
        "GOAWAY {code} after stream {last}, {resets} resets"
    );
    assert!(
        resets >= 100,
        "only {resets} streams were reset by the server"
    );
    let streams = last / 2 + 1;
    assert!(streams <= 1024, "GOAWAY only after stream {last}");
}

#[tokio::test]
async fn continuation_floods_are_cut_off() {
    let (b, proxy, admin) = proxy_with_admin("").await;

    // A header block that never ends, 16 KiB a frame: refused past
    // max_header_bytes (64 KiB) of block.
    let mut h2 = RawH2::connect(proxy.addr(), &[], true).await;
    let mut first = vec![0x82, 0x86, 0x84, 0x41, 0x01, b'a'];
    first.extend_from_slice(&[0x00, 0x05]);
    first.extend_from_slice(b"x-big");
    hpack_length(&mut first, 1 << 24);
    first.resize(16384, b'v');
    h2.send(&frame(HEADERS, 0, 1, &first)).await.unwrap();
    let mut block = first.len();
    let filler = frame(CONTINUATION, 0, 1, &[b'v'; 16384]);
    while block < (1 << 20) && h2.send(&filler).await.is_ok() && !h2.seen().closed {
        block += 16384;
    }
    assert!(
        h2.closed_within(Duration::from_secs(5)).await,
        "open after {block} bytes of block"
    );
    assert_eq!(refused(admin, "header_block").await, 1);

    // Empty CONTINUATION frames: h2 stops at a handful.
    let mut h2 = RawH2::connect(proxy.addr(), &[], true).await;
    h2.send(&frame(HEADERS, 0, 1, &get_block("/")))
        .await
        .unwrap();
    let empty: Vec<u8> = (0..100)
        .flat_map(|_| frame(CONTINUATION, 0, 1, &[]))
        .collect();
    let mut sent = 0;
    while sent < 10_000 && h2.send(&empty).await.is_ok() && !h2.seen().closed {
        sent += 100;
        tokio::task::yield_now().await;
    }
    assert!(h2.closed_within(Duration::from_secs(5)).await);
    assert_eq!(h2.seen().goaway.map(|g| g.1), Some(ENHANCE_YOUR_CALM));
    assert_eq!(b.hits(), 0);
}

#[tokio::test]
async fn streams_past_the_advertised_limit_are_refused() {
    let (b, proxy, _admin) = proxy_with_admin("").await;
    let mut h2 = RawH2::connect(proxy.addr(), &[], true).await;
    let limit = h2
        .seen()
        .settings
        .iter()
        .find(|(id, _)| *id == SETTINGS_MAX_CONCURRENT_STREAMS)
        .map(|(_, v)| *v)
        .expect("SETTINGS_MAX_CONCURRENT_STREAMS advertised");
    assert!((100..=128).contains(&limit), "advertised {limit}");
    // Requests whose bodies never come stay open.
    let opens: Vec<u8> = (0..limit + 20)
        .flat_map(|i| request(2 * i + 1, "/consume", false))
        .collect();
    h2.send(&opens).await.unwrap();
    eventually(Duration::from_secs(5), || async {
        h2.seen()
            .resets
            .iter()
            .filter(|r| r.1 == REFUSED_STREAM)
            .count()
            == 20
    })
    .await;
    eventually(Duration::from_secs(5), || async {
        b.hits() == limit as usize
    })
    .await;
    let resets = h2.seen().resets.clone();
    assert!(
        resets
            .iter()
            .all(|&(s, code)| code != REFUSED_STREAM || s > 2 * limit - 1),
        "{resets:?}"
    );
}

#[tokio::test]
async fn ping_and_settings_floods_are_bounded() {
    let (_b, proxy, admin) = proxy_with_admin("").await;
    let victim = Victim::start(proxy.url("/"));
    for (kind, payload) in [(PING, &[7u8; 8][..]), (SETTINGS, &[][..])] {
        let mut h2 = RawH2::connect(proxy.addr(), &[], true).await;
        let flood: Vec<u8> = (0..100).flat_map(|_| frame(kind, 0, 0, payload)).collect();
        let mut sent = 0;
        while sent < 100_000 && h2.send(&flood).await.is_ok() && !h2.seen().closed {
            sent += 100;
            tokio::task::yield_now().await;
        }
        assert!(
            h2.closed_within(Duration::from_secs(5)).await,
            "kind {kind}: open after {sent}"
        );
        // Told why before the close (RFC 9113 section 5.4.1).
        let goaway = h2.seen().goaway;
        assert_eq!(
            goaway.map(|(_, code)| code),
            Some(0xb),
            "kind {kind}: ENHANCE_YOUR_CALM"
        );
    }
    assert_eq!(refused(admin, "control_flood").await, 2);

    // A flood that stays under the run limit (a request every 500 PINGs)
    // from a client that never reads: h2 answers one PING at a time and stops
    // reading while the answer cannot be written, so the flood stalls in the
    // client's socket instead of piling up in fulcrum.
    let mut h2 = RawH2::connect(proxy.addr(), &[], false).await;
    let mut chunk = request(1, "/", true);
    chunk.extend((0..500).flat_map(|_| frame(PING, 0, 0, &[1; 8])));
    let mut pings = 0u64;
    let mut stream = 1u32;
    let stalled = loop {
        chunk[5..9].copy_from_slice(&stream.to_be_bytes());
        match h2.send_within(&chunk, Duration::from_secs(1)).await {
            Ok(()) => pings += 500,
            Err(e) => break e.kind() == std::io::ErrorKind::TimedOut,
        }
        stream += 2;
        assert!(pings < 10_000_000, "fulcrum kept reading {pings} PINGs");
    };
    assert!(stalled, "the connection closed instead of pushing back");
    assert!(victim.finish().await > 0);
}

#[tokio::test]
async fn a_window_that_never_opens_is_cut_by_the_idle_timeout() {
    let (_b, proxy, admin) = proxy_with_admin("idle_timeout = \"1s\"").await;
    // A client that grants no flow-control window, then goes quiet.
    let mut h2 = RawH2::connect(proxy.addr(), &[(SETTINGS_INITIAL_WINDOW_SIZE, 0)], true).await;
    h2.send(&request(1, "/big/1000000", true)).await.unwrap();
    eventually(Duration::from_secs(5), || async {
        h2.seen().responses == 1
    })
    .await;
    assert_eq!(h2.seen().data_bytes, 0);
    // Cut by the stall rule at idle_timeout (1 s), well before
    // header_read_timeout (10 s) could have done it.
    assert!(
        h2.closed_within(Duration::from_secs(5)).await,
        "the stalled connection stays open"
    );
    let (_, _, body) = get(&client(), &format!("http://{admin}/status")).await;
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["upstreams"]["app"]["endpoints"][0]["in_flight"], 0);
}
