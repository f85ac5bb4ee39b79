//! SPEC §Health against real backends: active checks, passive ejection,
//! fail-open, and keys staying put while an endpoint is away.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::Request;
use support::*;

fn config(backends: &[&Backend], upstream_extra: &str) -> String {
    let endpoints: Vec<String> = backends
        .iter()
        .map(|b| format!("{{ address = \"{}\" }}", b.addr))
        .collect();
    format!(
        "[admin]\nbind = \"127.0.0.1:0\"\n[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\n[[route]]\nupstream = \"app\"\n[upstream.app]\nendpoints = [{}]\n{upstream_extra}\n",
        endpoints.join(", ")
    )
}

const FAST_CHECKS: &str = "[upstream.app.health_check]\ninterval = \"100ms\"\ntimeout = \"100ms\"\nunhealthy_threshold = 2\nhealthy_threshold = 2\n";

async fn status(admin: SocketAddr) -> serde_json::Value {
    let (_, _, body) = get(&client(), &format!("http://{admin}/status")).await;
    serde_json::from_str(&body).unwrap()
}

/// The /status entry of the endpoint at `addr` in upstream `app`.
async fn endpoint_status(admin: SocketAddr, addr: SocketAddr) -> serde_json::Value {
    let s = status(admin).await;
    s["upstreams"]["app"]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["address"] == addr.to_string())
        .cloned()
        .unwrap()
}

async fn wait_usable(
    admin: SocketAddr,
    addr: SocketAddr,
    usable: bool,
    limit: Duration,
) -> Duration {
    let started = Instant::now();
    eventually(limit, || async {
        endpoint_status(admin, addr).await["usable"] == usable
    })
    .await;
    started.elapsed()
}

#[tokio::test]
async fn a_failing_health_path_takes_an_endpoint_out_and_brings_it_back() {
    let a = Backend::spawn("a").await;
    let b = Backend::spawn("b").await;
    let proxy = Proxy::start(&config(&[&a, &b], FAST_CHECKS)).await;
    let admin = proxy.admin.unwrap();
    // First probes run at once.
    eventually(Duration::from_secs(2), || async {
        endpoint_status(admin, a.addr).await["health"]["state"] == "up"
    })
    .await;
    let e = endpoint_status(admin, a.addr).await;
    assert_eq!(e["health"]["last_probe"]["status"], 200);
    assert!(e["health"]["last_probe"]["latency_ms"].is_number());

    a.set_health(503);
    // Bound: interval x unhealthy_threshold + timeout + 10% jitter = 320 ms;
    // the limit leaves room for a loaded machine.
    let took = wait_usable(admin, a.addr, false, Duration::from_secs(3)).await;
    assert!(
        took < Duration::from_millis(1500),
        "unusable after {took:?}"
    );
    let e = endpoint_status(admin, a.addr).await;
    assert_eq!(e["health"]["state"], "down");
    assert_eq!(e["health"]["last_probe"]["status"], 503);
    // While it is down, traffic goes to b only.
    let before = a.traffic();
    let c = client();
    for _ in 0..10 {
        assert_eq!(get(&c, &proxy.url("/")).await.2, "b");
    }
    assert_eq!(a.traffic(), before);

    a.set_health(200);
    let took = wait_usable(admin, a.addr, true, Duration::from_secs(3)).await;
    assert!(
        took < Duration::from_millis(1500),
        "usable again after {took:?}"
    );
    assert!(
        endpoint_status(admin, a.addr).await["health"]["streak"]
            .as_u64()
            .unwrap()
            >= 2
    );
    let metrics = get(&c, &format!("http://{admin}/metrics")).await.2;
    let endpoint = a.addr;
    assert!(metrics.contains(&format!(r#"fulcrum_endpoint_state_changes_total{{upstream="app",endpoint="{endpoint}",to="unusable"}} 1"#)), "{metrics}");
    assert!(metrics.contains(&format!(r#"fulcrum_endpoint_state_changes_total{{upstream="app",endpoint="{endpoint}",to="usable"}} 1"#)));
    assert!(metrics.contains(&format!(
        r#"fulcrum_health_checks_total{{upstream="app",endpoint="{endpoint}",result="fail"}} "#
    )));
}

#[tokio::test]
async fn an_unusable_newcomer_needs_one_pass() {
    let a = Backend::spawn("a").await;
    let proxy = Proxy::start(&config(
        &[&a],
        &format!("{FAST_CHECKS}initial = \"unusable\"\n"),
    ))
    .await;
    let admin = proxy.admin.unwrap();
    // Usable after its first probe, which runs at once.
    wait_usable(admin, a.addr, true, Duration::from_secs(2)).await;
    assert_eq!(endpoint_status(admin, a.addr).await["health"]["streak"], 1);
}

#[tokio::test]
async fn killing_one_of_three_endpoints_under_load_fails_no_request() {
    let a = Backend::spawn("a").await;
    let b = Backend::spawn("b").await;
    let c = Backend::spawn("c").await;
    let proxy = Proxy::start(&config(
        &[&a, &b, &c],
        &format!("retries = 2\n{FAST_CHECKS}"),
    ))
    .await;
    let admin = proxy.admin.unwrap();
    eventually(Duration::from_secs(2), || async {
        status(admin).await["upstreams"]["app"]["usable_endpoints"] == 3
    })
    .await;
    let stop = tokio_util::sync::CancellationToken::new();
    let mut clients = Vec::new();
    for _ in 0..6 {
        let url = proxy.url("/");
        let stop = stop.clone();
        clients.push(tokio::spawn(async move {
            let c = client();
            let (mut ok, mut failed) = (0, 0);
            while !stop.is_cancelled() {
                let req = Request::get(&url).body(empty()).unwrap();
                match tokio::time::timeout(Duration::from_secs(10), c.request(req)).await {
                    Ok(Ok(r)) if r.status() == 200 => ok += 1,
                    _ => failed += 1,
                }
            }
            (ok, failed)
        }));
    }
    eventually(Duration::from_secs(5), || async { b.traffic() > 50 }).await;
    b.kill();
    wait_usable(admin, b.addr, false, Duration::from_secs(3)).await;
    // From now on, nothing is sent to b.
    let sent = endpoint_status(admin, b.addr).await["requests"]
        .as_u64()
        .unwrap();
    let served = a.traffic() + c.traffic();
    eventually(Duration::from_secs(5), || async {
        a.traffic() + c.traffic() > served + 200
    })
    .await;
    stop.cancel();
    let mut total = (0, 0);
    for t in clients {
        let (ok, failed) = t.await.unwrap();
        total = (total.0 + ok, total.1 + failed);
    }
    assert_eq!(
        total.1,
        0,
        "{} requests failed of {}",
        total.1,
        total.0 + total.1
    );
    assert!(total.0 > 300);
    assert_eq!(
        endpoint_status(admin, b.addr).await["requests"]
            .as_u64()
            .unwrap(),
        sent
    );
}

#[tokio::test]
async fn a_5xx_streak_ejects_and_the_next_ejection_lasts_twice_as_long() {
    let bad = Backend::spawn("bad").await;
    let good = Backend::spawn("good").await;
    bad.set_status(500);
    let outlier = "[upstream.app.outlier]\nconsecutive_failures = 3\nejection_time = \"300ms\"\nmax_ejected_percent = 50\n";
    let proxy = Proxy::start(&config(&[&bad, &good], &format!("retries = 0\n{outlier}"))).await;
    let admin = proxy.admin.unwrap();
    let c = client();
    let mut durations = Vec::new();
    for round in 0..2 {
        // Traffic until bad is ejected (3 failures in a row on it).
        let mut sent = 0;
        while endpoint_status(admin, bad.addr).await["usable"] == true {
            get(&c, &proxy.url("/")).await;
            sent += 1;
            assert!(sent < 50, "round {round}: not ejected");
        }
        let ejected_at = Instant::now();
        let e = endpoint_status(admin, bad.addr).await;
        assert!(e["ejected_until"].is_string(), "{e}");
        assert!(
            e["ejection_cause"].as_str().unwrap().contains("status 500"),
            "{e}"
        );
        // Ejected: all traffic goes to good.
        for _ in 0..5 {
            assert_eq!(get(&c, &proxy.url("/")).await.2, "good");
        }
        wait_usable(admin, bad.addr, true, Duration::from_secs(5)).await;
        durations.push(ejected_at.elapsed());
    }
    // 300 ms, then 600 ms (still failing: an ejection in a row).
    assert!(
        // Upper bound generous: polling /status on a loaded machine adds delay.
        durations[0] >= Duration::from_millis(250) && durations[0] < Duration::from_millis(1500),
        "{durations:?}"
    );
    assert!(durations[1] >= Duration::from_millis(550), "{durations:?}");
    assert!(
        durations[1] > durations[0] + Duration::from_millis(200),
        "{durations:?}"
    );
    let metrics = get(&c, &format!("http://{admin}/metrics")).await.2;
    assert!(metrics.contains(&format!(
        r#"fulcrum_endpoint_ejections_total{{upstream="app",endpoint="{}"}} 2"#,
        bad.addr
    )));
}

#[tokio::test]
async fn max_ejected_percent_holds() {
    let a = Backend::spawn("a").await;
    let b = Backend::spawn("b").await;
    let c3 = Backend::spawn("c").await;
    for x in [&a, &b, &c3] {
        x.set_status(502);
    }
    let outlier = "[upstream.app.outlier]\nconsecutive_failures = 2\nejection_time = \"30s\"\nmax_ejected_percent = 50\n";
    let proxy = Proxy::start(&config(&[&a, &b, &c3], &format!("retries = 0\n{outlier}"))).await;
    let admin = proxy.admin.unwrap();
    let c = client();
    for _ in 0..30 {
        get(&c, &proxy.url("/")).await;
    }
    let s = status(admin).await;
    let ejected = s["upstreams"]["app"]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ejected_until"].is_string())
        .count();
    assert_eq!(ejected, 1, "{s}");
    assert_eq!(s["upstreams"]["app"]["usable_endpoints"], 2);
}

#[tokio::test]
async fn hashed_keys_of_other_endpoints_stay_put_while_one_is_down() {
    let backends = [
        Backend::spawn("a").await,
        Backend::spawn("b").await,
        Backend::spawn("c").await,
    ];
    let refs: Vec<&Backend> = backends.iter().collect();
    for balance in ["consistent_hash", "maglev"] {
        let proxy = Proxy::start(&config(
            &refs,
            &format!("balance = \"{balance}\"\nhash_key = \"header:x-user\"\n{FAST_CHECKS}"),
        ))
        .await;
        let admin = proxy.admin.unwrap();
        eventually(Duration::from_secs(2), || async {
            status(admin).await["upstreams"]["app"]["usable_endpoints"] == 3
        })
        .await;
        let c = client();
        let map = |c: HttpClient, url: String| async move {
            let mut owners = Vec::new();
            for k in 0..200 {
                let req = Request::get(&url)
                    .header("x-user", format!("user-{k}"))
                    .body(empty())
                    .unwrap();
                owners.push(send(&c, req).await.2);
            }
            owners
        };
        let before = map(c.clone(), proxy.url("/")).await;
        backends[1].set_health(500);
        wait_usable(admin, backends[1].addr, false, Duration::from_secs(3)).await;
        let during = map(c.clone(), proxy.url("/")).await;
        for (k, (was, now)) in before.iter().zip(&during).enumerate() {
            assert_ne!(now, "b", "{balance}: key {k} sent to the down endpoint");
            if balance == "consistent_hash" && was != "b" {
                assert_eq!(was, now, "{balance}: key {k} of another endpoint moved");
            }
        }
        assert!(before.iter().any(|o| o == "b"));
        backends[1].set_health(200);
        wait_usable(admin, backends[1].addr, true, Duration::from_secs(3)).await;
        // Maglev rebuilds its table off the request path; wait for it.
        eventually(Duration::from_secs(3), || {
            let c = c.clone();
            let url = proxy.url("/");
            let before = before.clone();
            async move { map(c, url).await == before }
        })
        .await;
    }
}

#[tokio::test]
async fn no_usable_endpoint_is_503_unless_failing_open() {
    let backends = [
        Backend::spawn("a").await,
        Backend::spawn("b").await,
        Backend::spawn("c").await,
    ];
    for b in &backends {
        b.set_health(500);
    }
    let refs: Vec<&Backend> = backends.iter().collect();
    let c = client();
    for fail_open in [false, true] {
        // From a file, so that it can be reloaded.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fulcrum.toml");
        let text = config(&refs, &format!("fail_open = {fail_open}\n{FAST_CHECKS}"));
        std::fs::write(&path, text).unwrap();
        let proxy = Proxy::start_file(&path, false).await;
        let admin = proxy.admin.unwrap();
        eventually(Duration::from_secs(3), || async {
            status(admin).await["upstreams"]["app"]["usable_endpoints"] == 0
        })
        .await;
        let mut bodies = Vec::new();
        for _ in 0..6 {
            let (code, _, body) = get(&c, &proxy.url("/")).await;
            bodies.push((code.as_u16(), body));
        }
        if fail_open {
            let mut names: Vec<&str> = bodies
                .iter()
                .map(|(code, b)| {
                    assert_eq!(*code, 200);
                    b.as_str()
                })
                .collect();
            names.sort();
            assert_eq!(
                names,
                ["a", "a", "b", "b", "c", "c"],
                "all endpoints are used"
            );
            let s = status(admin).await;
            assert_eq!(s["upstreams"]["app"]["failing_open"], true);
            let metrics = get(&c, &format!("http://{admin}/metrics")).await.2;
            assert!(metrics.contains(r#"fulcrum_upstream_failing_open{upstream="app"} 1"#));
            // A reload builds the upstream again: with no request since, it
            // still fails open, and says so.
            let reload = send(
                &c,
                http::Request::post(format!("http://{admin}/reload"))
                    .body(empty())
                    .unwrap(),
            )
            .await;
            assert_eq!(reload.0, 200, "{}", reload.2);
            assert_eq!(
                status(admin).await["upstreams"]["app"]["failing_open"],
                true
            );
            eventually(Duration::from_secs(3), || async {
                metric(admin, "fulcrum_upstream_failing_open", "upstream=\"app\"").await == 1.0
            })
            .await;
        } else {
            for (code, body) in &bodies {
                assert_eq!(*code, 503);
                assert!(
                    body.contains("no usable endpoint in upstream app"),
                    "{body}"
                );
            }
        }
    }
}
