//! SPEC §3 (admin API) and §4 (metrics), and the access log.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use http::Request;
use support::*;

/// A config with an admin API on a free port, two routes (one to a drained
/// upstream, so it answers 503) and `extra` appended.
fn config(b: &Backend, extra: &str) -> String {
    format!(
        r#"
[admin]
bind = "127.0.0.1:0"

[[listener]]
name = "web"
bind = "127.0.0.1:0"

[[route]]
name = "main"
path_prefix = "/app"
strip_prefix = true
upstream = "app"

[[route]]
name = "down"
path_prefix = "/down"
upstream = "drained"

[upstream.app]
endpoints = [{{ address = "{}" }}]

[upstream.drained]
endpoints = [{{ address = "{}", weight = 0 }}]
{extra}
"#,
        b.addr, b.addr
    )
}

async fn admin_get(admin: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let mut req = Request::get(format!("http://{admin}{path}"));
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let (status, _, body) = send(&client(), req.body(empty()).unwrap()).await;
    (status.as_u16(), body)
}

fn scrape(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("valid exposition")
}

/// Value of a counter or gauge sample with exactly these labels.
fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == name
                && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v))
                && s.labels.len() == labels.len()
        })
        .and_then(|s| match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => Some(*v),
            _ => None,
        })
}

/// `_count` of a histogram with these labels.
fn histogram_count(text: &str, name: &str, labels: &str) -> Option<f64> {
    histogram_series(text, name, "count", labels)
}

/// A histogram's `_count` or `_sum` series, read from the exposition text.
fn histogram_series(text: &str, name: &str, series: &str, labels: &str) -> Option<f64> {
    let prefix = format!("{name}_{series}{{{labels}}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn request_counters_and_histograms_match_what_was_sent() {
    let b = Backend::spawn("a").await;
    let proxy = Proxy::start(&config(&b, "")).await;
    let admin = proxy.admin.expect("admin enabled");
    let c = client();
    for _ in 0..5 {
        assert_eq!(get(&c, &proxy.url("/app/x")).await.0, 200);
    }
    for _ in 0..2 {
        assert_eq!(get(&c, &proxy.url("/app/status/500")).await.0, 500);
    }
    for _ in 0..3 {
        assert_eq!(get(&c, &proxy.url("/nowhere")).await.0, 404);
    }
    for _ in 0..4 {
        assert_eq!(get(&c, &proxy.url("/down")).await.0, 503);
    }
    // Requests are counted when their response body is done; wait for the last.
    let text = eventually(Duration::from_secs(5), || async {
        let text = admin_get(admin, "/metrics", None).await.1;
        let done = histogram_count(
            &text,
            "fulcrum_request_duration_seconds",
            r#"route="main",upstream="app""#,
        ) == Some(7.0)
            && histogram_count(
                &text,
                "fulcrum_request_duration_seconds",
                r#"route="down",upstream="drained""#,
            ) == Some(4.0)
            && histogram_count(
                &text,
                "fulcrum_request_duration_seconds",
                r#"route="none",upstream="none""#,
            ) == Some(3.0);
        done.then_some(text)
    })
    .await;
    let s = scrape(&text);
    let requests = |route: &str, upstream: &str, code: &str| {
        value(
            &s,
            "fulcrum_requests_total",
            &[
                ("listener", "web"),
                ("route", route),
                ("upstream", upstream),
                ("code", code),
            ],
        )
    };
    assert_eq!(requests("main", "app", "200"), Some(5.0));
    assert_eq!(requests("main", "app", "500"), Some(2.0));
    assert_eq!(requests("none", "none", "404"), Some(3.0));
    assert_eq!(requests("down", "drained", "503"), Some(4.0));
    let endpoint = b.addr.to_string();
    let upstream_requests = |code: &str| {
        value(
            &s,
            "fulcrum_upstream_requests_total",
            &[("upstream", "app"), ("endpoint", &endpoint), ("code", code)],
        )
    };
    assert_eq!(upstream_requests("200"), Some(5.0));
    assert_eq!(upstream_requests("500"), Some(2.0));
    assert_eq!(
        histogram_count(
            &text,
            "fulcrum_upstream_response_duration_seconds",
            &format!(r#"upstream="app",endpoint="{endpoint}""#)
        ),
        Some(7.0)
    );
    assert_every_spec_metric_described(&text);
    assert_eq!(value(&s, "fulcrum_config_generation", &[]), Some(1.0));
    assert_eq!(
        value(&s, "fulcrum_config_reloads_total", &[("result", "failure")]),
        Some(0.0)
    );
    assert_eq!(
        value(
            &s,
            "fulcrum_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    // The client's keep-alive connection is open.
    assert_eq!(
        value(&s, "fulcrum_downstream_connections", &[("listener", "web")]),
        Some(1.0)
    );
}

fn histogram_sum(text: &str, name: &str, labels: &str) -> Option<f64> {
    histogram_series(text, name, "sum", labels)
}

/// Durations are measured across the polls of a request, not within one:
/// one clock read per poll of a connection (`clock.rs`) must still see the
/// endpoint's wait, over HTTP/1.1 (fulcrum's own server side and hyper's)
/// and HTTP/2, in the histograms and in the access log.
#[tokio::test]
async fn durations_include_the_endpoints_wait() {
    let b = Backend::spawn("a").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let proxy = Proxy::start(&config(
        &b,
        &format!(
            "[access_log]\nenabled = true\nformat = \"json\"\npath = \"{}\"\n",
            path.display()
        ),
    ))
    .await;
    let admin = proxy.admin.expect("admin enabled");
    let (h1, h2) = (client(), h2_client());
    let url = proxy.url("/app/delay/150");
    assert_eq!(get(&h1, &url).await.0, 200);
    // A body: hyper's server side, not fulcrum's own.
    let post = Request::post(&url).body(full("x")).unwrap();
    assert_eq!(send(&h1, post).await.0, 200);
    assert_eq!(get(&h2, &url).await.0, 200);
    let labels = r#"route="main",upstream="app""#;
    let text = eventually(Duration::from_secs(5), || async {
        let text = admin_get(admin, "/metrics", None).await.1;
        (histogram_count(&text, "fulcrum_request_duration_seconds", labels) == Some(3.0))
            .then_some(text)
    })
    .await;
    let request = histogram_sum(&text, "fulcrum_request_duration_seconds", labels).unwrap();
    assert!(
        (0.45..5.0).contains(&request),
        "3 requests of 150 ms took {request} s in all"
    );
    let endpoint = format!(r#"upstream="app",endpoint="{}""#, b.addr);
    let upstream = histogram_sum(
        &text,
        "fulcrum_upstream_response_duration_seconds",
        &endpoint,
    )
    .unwrap();
    assert!(
        (0.45..5.0).contains(&upstream),
        "the endpoint's 3 answers took {upstream} s"
    );
    let lines = eventually(Duration::from_secs(5), || {
        let path = path.clone();
        async move {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<serde_json::Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            (lines.len() == 3).then_some(lines)
        }
    })
    .await;
    for line in lines {
        let ms = line["duration_ms"].as_f64().unwrap();
        assert!((150.0..5_000.0).contains(&ms), "logged {ms} ms: {line}");
    }
}

/// Every metric SPEC.md names has its HELP line and a sample.
fn assert_every_spec_metric_described(text: &str) {
    for name in [
        "fulcrum_requests_total",
        "fulcrum_request_duration_seconds",
        "fulcrum_upstream_requests_total",
        "fulcrum_upstream_response_duration_seconds",
        "fulcrum_upstream_in_flight",
        "fulcrum_upstream_connect_errors_total",
        "fulcrum_upstream_retries_total",
        "fulcrum_endpoint_usable",
        "fulcrum_upstream_usable_endpoints",
        "fulcrum_endpoint_state_changes_total",
        "fulcrum_endpoint_ejections_total",
        "fulcrum_health_checks_total",
        "fulcrum_downstream_connections",
        "fulcrum_config_reloads_total",
        "fulcrum_config_generation",
        "fulcrum_upstream_failing_open",
        "fulcrum_build_info",
    ] {
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "no HELP for {name}"
        );
        assert!(text.contains(&format!("\n{name}")), "no sample of {name}");
    }
}

#[tokio::test]
async fn usability_gauges_and_connect_errors_and_retries() {
    let b = Backend::spawn("a").await;
    let dead = dead_addr().await;
    let text = config(&b, "").replace(
        &format!(
            "[upstream.app]\nendpoints = [{{ address = \"{}\" }}]",
            b.addr
        ),
        &format!(
            "[upstream.app]\nendpoints = [{{ address = \"{dead}\" }}, {{ address = \"{}\" }}]",
            b.addr
        ),
    );
    let proxy = Proxy::start(&text).await;
    let admin = proxy.admin.unwrap();
    let c = client();
    for _ in 0..4 {
        assert_eq!(get(&c, &proxy.url("/app")).await.0, 200);
    }
    let text = admin_get(admin, "/metrics", None).await.1;
    let s = scrape(&text);
    let dead = dead.to_string();
    assert_eq!(
        value(
            &s,
            "fulcrum_upstream_connect_errors_total",
            &[("upstream", "app"), ("endpoint", &dead)]
        ),
        Some(2.0)
    );
    assert_eq!(
        value(&s, "fulcrum_upstream_retries_total", &[("upstream", "app")]),
        Some(2.0)
    );
    assert_eq!(
        value(
            &s,
            "fulcrum_endpoint_usable",
            &[("upstream", "app"), ("endpoint", &dead)]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &s,
            "fulcrum_upstream_usable_endpoints",
            &[("upstream", "app")]
        ),
        Some(2.0)
    );
    assert_eq!(
        value(
            &s,
            "fulcrum_upstream_usable_endpoints",
            &[("upstream", "drained")]
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &s,
            "fulcrum_endpoint_usable",
            &[("upstream", "drained"), ("endpoint", &b.addr.to_string())]
        ),
        Some(0.0)
    );
    assert_eq!(
        value(&s, "fulcrum_upstream_failing_open", &[("upstream", "app")]),
        Some(0.0)
    );
    assert_eq!(
        value(
            &s,
            "fulcrum_upstream_in_flight",
            &[("upstream", "app"), ("endpoint", &dead)]
        ),
        Some(0.0)
    );
}

#[tokio::test]
async fn status_document_has_the_documented_shape() {
    let b = Backend::spawn("a").await;
    let proxy = Proxy::start(&config(&b, "")).await;
    let admin = proxy.admin.unwrap();
    get(&client(), &proxy.url("/app")).await;
    let (status, body) = admin_get(admin, "/status", None).await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["generation"], 1);
    assert_eq!(v["config_path"], "test.toml");
    assert!(v["loaded_at"].as_str().unwrap().ends_with('Z'));
    assert!(v["last_reload"].is_null());
    assert_eq!(v["draining"], false);
    let app = &v["upstreams"]["app"];
    assert_eq!(app["balance"], "round_robin");
    assert_eq!(app["fail_open"], false);
    assert_eq!(app["failing_open"], false);
    assert_eq!(app["usable_endpoints"], 1);
    let e = &app["endpoints"][0];
    assert_eq!(e["address"], b.addr.to_string());
    assert_eq!(e["weight"], 1);
    assert_eq!(e["usable"], true);
    assert_eq!(e["health"]["state"], "unchecked");
    assert!(e["health"]["streak"].is_number());
    assert!(e["health"]["last_probe"].is_null());
    assert!(e["ejected_until"].is_null() && e["ejection_cause"].is_null());
    assert_eq!(e["in_flight"], 0);
    assert_eq!(e["requests"], 1);
    assert_eq!(v["upstreams"]["drained"]["usable_endpoints"], 0);

    assert_eq!(
        admin_get(admin, "/healthz", None).await,
        (200, "ok\n".into())
    );
    assert_eq!(admin_get(admin, "/readyz", None).await.0, 200);
    assert_eq!(admin_get(admin, "/nope", None).await.0, 404);
    let reload = send(
        &client(),
        Request::post(format!("http://{admin}/reload"))
            .body(empty())
            .unwrap(),
    )
    .await;
    // This config was never a file, so a reload fails and says why.
    assert_eq!(reload.0, 422);
    let error = serde_json::from_str::<serde_json::Value>(&reload.2).unwrap()["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(error.contains("test.toml: cannot read"), "{error}");
}

#[tokio::test]
async fn readyz_is_503_while_draining() {
    let b = Backend::spawn("a").await;
    let mut proxy = Proxy::start(&config(&b, "[server]\nshutdown_timeout = \"10s\"")).await;
    let admin = proxy.admin.unwrap();
    let c = client();
    let url = proxy.url("/app/delay/1500");
    let slow = tokio::spawn(async move { get(&c, &url).await });
    eventually(Duration::from_secs(5), || async { b.hits() == 1 }).await;
    let done = proxy.shutdown();
    eventually(Duration::from_secs(5), || async {
        admin_get(admin, "/readyz", None).await == (503, "draining\n".into())
    })
    .await;
    let (_, body) = admin_get(admin, "/status", None).await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["draining"],
        true
    );
    assert_eq!(slow.await.unwrap().0, 200);
    done.await.unwrap();
}

#[tokio::test]
async fn the_admin_token_is_required_when_set() {
    let b = Backend::spawn("a").await;
    let proxy = Proxy::start(&config(&b, "").replace(
        "bind = \"127.0.0.1:0\"\n\n[[listener]]",
        "bind = \"127.0.0.1:0\"\ntoken = \"s3cret\"\n\n[[listener]]",
    ))
    .await;
    let admin = proxy.admin.unwrap();
    for path in ["/metrics", "/status", "/healthz", "/readyz"] {
        assert_eq!(admin_get(admin, path, None).await.0, 401, "{path}");
        assert_eq!(admin_get(admin, path, Some("wrong")).await.0, 401, "{path}");
        assert_eq!(
            admin_get(admin, path, Some("s3cret")).await.0,
            200,
            "{path}"
        );
    }
}

fn access_log_config(b: &Backend, format: &str, path: &std::path::Path) -> String {
    config(b, "").replace(
        "[[listener]]",
        &format!(
            "[access_log]\nenabled = true\nformat = \"{format}\"\npath = \"{}\"\n\n[[listener]]",
            path.display()
        ),
    )
}

#[tokio::test]
async fn access_log_writes_one_line_per_request_in_each_format() {
    let b = Backend::spawn("a").await;
    let dir = tempfile::tempdir().unwrap();
    for format in ["json", "common"] {
        let path = dir.path().join(format!("{format}.log"));
        let proxy = Proxy::start(&access_log_config(&b, format, &path)).await;
        let c = client();
        get(&c, &proxy.url("/app/x?q=1")).await;
        get(&c, &proxy.url("/missing")).await;
        send(
            &c,
            Request::post(proxy.url("/app/echo"))
                .body(full("hello"))
                .unwrap(),
        )
        .await;
        let lines: Vec<String> = eventually(Duration::from_secs(5), || {
            let path = path.clone();
            async move {
                let lines: Vec<String> = std::fs::read_to_string(&path)
                    .unwrap_or_default()
                    .lines()
                    .map(str::to_owned)
                    .collect();
                (lines.len() == 3).then_some(lines)
            }
        })
        .await;
        if format == "json" {
            let v: Vec<serde_json::Value> = lines
                .iter()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert_eq!(v[0]["method"], "GET");
            assert_eq!(v[0]["path"], "/app/x?q=1");
            assert_eq!(v[0]["status"], 200);
            assert_eq!(v[0]["bytes"], 1);
            assert_eq!(v[0]["route"], "main");
            assert_eq!(v[0]["upstream"], "app");
            assert_eq!(v[0]["endpoint"], b.addr.to_string());
            assert_eq!(v[0]["attempts"], 1);
            assert_eq!(v[0]["host"], proxy.addr().to_string());
            assert!(v[0]["client"].as_str().unwrap().starts_with("127.0.0.1:"));
            assert!(v[0]["duration_ms"].as_f64().unwrap() >= 0.0);
            assert!(v[0]["time"].as_str().unwrap().ends_with('Z'));
            assert_eq!(v[1]["status"], 404);
            assert!(v[1]["route"].is_null() && v[1]["endpoint"].is_null());
            assert_eq!(
                (v[2]["method"].as_str(), v[2]["bytes"].as_u64()),
                (Some("POST"), Some(5))
            );
        } else {
            assert!(lines[0].starts_with("127.0.0.1 - - ["), "{}", lines[0]);
            assert!(
                lines[0].contains("\"GET /app/x?q=1 HTTP/1.1\" 200 1 "),
                "{}",
                lines[0]
            );
            assert!(
                lines[0].contains(" route=main upstream=app "),
                "{}",
                lines[0]
            );
            assert!(lines[0].ends_with(" attempts=1"), "{}", lines[0]);
            assert!(
                lines[1].contains("\" 404 ") && lines[1].contains("route=-"),
                "{}",
                lines[1]
            );
        }
    }
}

/// Its own runtime: the writer blocks a blocking-pool thread forever, which
/// `#[tokio::test]`'s runtime would wait for when dropped.
#[test]
fn a_blocked_access_log_writer_does_not_stall_requests() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(blocked_writer());
    rt.shutdown_background();
}

async fn blocked_writer() {
    let b = Backend::spawn("a").await;
    let dir = tempfile::tempdir().unwrap();
    // A FIFO nobody reads: opening it for writing blocks the writer forever.
    let fifo = dir.path().join("blocked.log");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let proxy = Proxy::start(&access_log_config(&b, "json", &fifo)).await;
    let admin = proxy.admin.unwrap();
    let c = client();
    let n = fulcrum::access_log::QUEUE + 500;
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let c = c.clone();
        let url = proxy.url("/app");
        tasks.push(tokio::spawn(async move {
            for _ in 0..n / 8 + 1 {
                assert_eq!(get(&c, &url).await.0, 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed();
    // Every request was served, and the lines that did not fit were counted.
    let dropped = eventually(Duration::from_secs(5), || async {
        let s = scrape(&admin_get(admin, "/metrics", None).await.1);
        value(&s, "fulcrum_access_log_dropped_total", &[]).filter(|&d| d >= 400.0)
    })
    .await;
    assert!(dropped <= (n / 8 + 1) as f64 * 8.0);
    assert!(
        elapsed < Duration::from_secs(60),
        "requests took {elapsed:?}"
    );
}

#[test]
fn the_grafana_dashboard_queries_only_metrics_that_exist() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/grafana/fulcrum.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let known = [
        "fulcrum_requests_total",
        "fulcrum_request_duration_seconds_bucket",
        "fulcrum_upstream_response_duration_seconds_bucket",
        "fulcrum_upstream_usable_endpoints",
        "fulcrum_upstream_in_flight",
        "fulcrum_upstream_retries_total",
        "fulcrum_upstream_connect_errors_total",
        "fulcrum_downstream_connections",
        "fulcrum_config_reloads_total",
        "fulcrum_config_generation",
    ];
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("fulcrum_") {
                    assert!(
                        known.contains(&word),
                        "dashboard queries unknown metric {word}"
                    );
                    queried += 1;
                }
            }
        }
    }
    assert!(queried >= 10);
}
