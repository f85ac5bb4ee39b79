//! DNS discovery against a real DNS server on loopback (hickory-server,
//! started by each test): answers that grow, shrink, change weights and
//! ports, fail and come back; fail-static; held mass removals; SRV backups;
//! state kept across refreshes; consistent keys; slow start; /readyz.

mod support;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use support::dns::{DnsServer, Reply, address_records, srv};
use support::*;
use tokio::net::TcpListener;

const WAIT: Duration = Duration::from_secs(15);

fn loopback(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

/// `n` backends on 127.0.0.1, .2, ... all on one port (type "a" gives
/// every address the same port).
async fn backends_on_one_port(names: &[&'static str]) -> (u16, Vec<Backend>) {
    'again: loop {
        let first = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = first.local_addr().unwrap().port();
        let mut listeners = vec![first];
        for i in 1..names.len() {
            match TcpListener::bind((loopback(i as u8 + 1), port)).await {
                Ok(l) => listeners.push(l),
                Err(_) => continue 'again,
            }
        }
        let mut backends = Vec::new();
        for (name, listener) in names.iter().zip(listeners) {
            backends.push(Backend::spawn_on(name, listener).await);
        }
        return (port, backends);
    }
}

/// A config with one upstream `app` discovered from `discovery` (the
/// table's lines), `extra` in the upstream table, and the admin API on.
fn config(dns: &DnsServer, discovery: &str, extra: &str) -> String {
    format!(
        r#"
[admin]
bind = "127.0.0.1:0"

[[listener]]
name = "http"
bind = "127.0.0.1:0"

[[route]]
upstream = "app"

[upstream.app]
{extra}

[upstream.app.discovery]
resolver = "{}"
min_interval = "50ms"
max_interval = "200ms"
{discovery}
"#,
        dns.addr
    )
}

/// fulcrum on [`config`], and its admin API's address.
async fn start(dns: &DnsServer, discovery: &str, extra: &str) -> (Proxy, SocketAddr) {
    let proxy = Proxy::start(&config(dns, discovery, extra)).await;
    let admin = proxy.admin.expect("admin enabled");
    (proxy, admin)
}

async fn status(admin: SocketAddr) -> serde_json::Value {
    let (_, _, body) = get(&client(), &format!("http://{admin}/status")).await;
    serde_json::from_str::<serde_json::Value>(&body).unwrap()["upstreams"]["app"].clone()
}

/// The endpoint addresses /status shows, sorted.
async fn addresses(admin: SocketAddr) -> Vec<String> {
    let mut list: Vec<String> = status(admin).await["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["address"].as_str().unwrap().to_string())
        .collect();
    list.sort();
    list
}

async fn wait_for_addresses(admin: SocketAddr, want: &[SocketAddr]) {
    let mut want: Vec<String> = want.iter().map(ToString::to_string).collect();
    want.sort();
    eventually(WAIT, || async { addresses(admin).await == want }).await;
}

/// Requests without pause until stopped; counts answers other than 200.
struct Load {
    stop: Arc<AtomicBool>,
    failed: Arc<AtomicUsize>,
    sent: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    fn start(url: String) -> Self {
        let (stop, failed, sent) = (
            Arc::<AtomicBool>::default(),
            Arc::<AtomicUsize>::default(),
            Arc::<AtomicUsize>::default(),
        );
        let task = tokio::spawn({
            let (stop, failed, sent) = (stop.clone(), failed.clone(), sent.clone());
            async move {
                let client = client();
                while !stop.load(Ordering::Relaxed) {
                    let (status, _, _) = get(&client, &url).await;
                    sent.fetch_add(1, Ordering::Relaxed);
                    if status != 200 {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        Self {
            stop,
            failed,
            sent,
            task,
        }
    }

    async fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        (
            self.sent.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

#[tokio::test]
async fn srv_answers_grow_shrink_reweight_and_move_ports_without_a_failed_request() {
    let dns = DnsServer::start().await;
    let (a, b, c, d) = (
        Backend::spawn("a").await,
        Backend::spawn("b").await,
        Backend::spawn("c").await,
        Backend::spawn("d").await,
    );
    let name = "_http._tcp.app.test";
    let target = |n: &str| format!("{n}.test");
    for n in ["a", "b", "c"] {
        dns.set_addresses(&target(n), &[loopback(1)], 1);
    }
    let answer = |records: &[(&str, u16, &Backend)]| {
        Reply::Records(
            records
                .iter()
                .map(|(t, weight, backend)| {
                    srv(name, 10, *weight, backend.addr.port(), &target(t), 1)
                })
                .collect(),
        )
    };
    dns.set(name, answer(&[("a", 1, &a), ("b", 1, &b)]));
    let (proxy, admin) = start(&dns, &format!("type = \"srv\"\nname = \"{name}\""), "").await;
    wait_for_addresses(admin, &[a.addr, b.addr]).await;
    let load = Load::start(proxy.url("/"));

    // Grows.
    dns.set(name, answer(&[("a", 1, &a), ("b", 1, &b), ("c", 1, &c)]));
    wait_for_addresses(admin, &[a.addr, b.addr, c.addr]).await;
    eventually(WAIT, || async { c.hits() > 20 }).await;
    // Shrinks: a gets nothing more once gone.
    dns.set(name, answer(&[("b", 1, &b), ("c", 1, &c)]));
    wait_for_addresses(admin, &[b.addr, c.addr]).await;
    let a_hits = a.hits();
    eventually(WAIT, || async { b.hits() + c.hits() > a_hits + 200 }).await;
    assert_eq!(a.hits(), a_hits, "a removed endpoint got new requests");
    // Changes a weight.
    dns.set(name, answer(&[("b", 3, &b), ("c", 1, &c)]));
    eventually(WAIT, || async {
        status(admin).await["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["address"] == b.addr.to_string() && e["weight"] == 3)
    })
    .await;
    let (b0, c0) = (b.hits(), c.hits());
    eventually(WAIT, || async { (b.hits() - b0) + (c.hits() - c0) >= 400 }).await;
    let share = (b.hits() - b0) as f64 / ((b.hits() - b0) + (c.hits() - c0)) as f64;
    assert!(
        (0.65..0.85).contains(&share),
        "weight 3 of 4: share {share}"
    );
    // Moves a port: target c now answers on d's port.
    dns.set(name, answer(&[("b", 3, &b), ("c", 1, &d)]));
    wait_for_addresses(admin, &[b.addr, d.addr]).await;
    eventually(WAIT, || async { d.hits() > 20 }).await;

    let (sent, failed) = load.finish().await;
    assert!(sent > 500, "only {sent} requests sent");
    assert_eq!(
        failed, 0,
        "{failed} of {sent} requests failed through the changes"
    );
    assert!(
        support::metric(
            admin,
            "fulcrum_discovery_resolutions_total",
            "result=\"success\""
        )
        .await
            > 4.0
    );
    assert_eq!(
        support::metric(admin, "fulcrum_discovery_endpoints", "upstream=\"app\"").await,
        2.0
    );
}

#[tokio::test]
async fn failed_and_empty_answers_change_nothing_and_are_shown() {
    let dns = DnsServer::start().await;
    let (port, backends) = backends_on_one_port(&["a", "b"]).await;
    let ips = [loopback(1), loopback(2)];
    dns.set_addresses("app.test", &ips, 1);
    let (proxy, admin) = start(&dns, &format!("name = \"app.test\"\nport = {port}"), "").await;
    let want: Vec<SocketAddr> = ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect();
    wait_for_addresses(admin, &want).await;
    let load = Load::start(proxy.url("/"));
    for (reply, error) in [
        (Reply::ServFail, "SERVFAIL"),
        (Reply::NxDomain, "NXDOMAIN"),
        (Reply::Empty, "no records"),
        (Reply::Silent, "timeout"),
    ] {
        let failures = support::metric(
            admin,
            "fulcrum_discovery_resolutions_total",
            "result=\"failure\"",
        )
        .await;
        dns.set("app.test", reply);
        eventually(WAIT, || async {
            let s = status(admin).await;
            s["discovery"]["last_error"]
                .as_str()
                .is_some_and(|e| e.to_lowercase().contains(&error.to_lowercase()))
        })
        .await;
        assert!(
            support::metric(
                admin,
                "fulcrum_discovery_resolutions_total",
                "result=\"failure\""
            )
            .await
                > failures
        );
        assert_eq!(
            addresses(admin).await.len(),
            2,
            "{error}: endpoints changed"
        );
        // Back.
        dns.set_addresses("app.test", &ips, 1);
        eventually(WAIT, || async {
            status(admin).await["discovery"]["last_error"].is_null()
        })
        .await;
    }
    let (sent, failed) = load.finish().await;
    assert_eq!(failed, 0, "{failed} of {sent} failed while DNS failed");
    assert!(backends.iter().all(|b| b.hits() > 0));
    let s = status(admin).await;
    assert_eq!(s["discovery"]["name"], "app.test");
    assert_eq!(s["discovery"]["type"], "a");
    assert_eq!(s["discovery"]["resolver"], dns.addr.to_string());
    assert!(s["discovery"]["last_success"].is_string());
}

#[tokio::test]
async fn a_mass_removal_is_held_until_three_answers_agree() {
    let dns = DnsServer::start().await;
    let (port, _backends) = backends_on_one_port(&["a", "b", "c", "d"]).await;
    let ips: Vec<IpAddr> = (1..=4).map(loopback).collect();
    dns.set_addresses("app.test", &ips, 1);
    // Re-resolved every 300 ms, so the held state is seen between answers.
    let discovery = format!("name = \"app.test\"\nport = {port}\nmax_removed_percent = 50");
    let text = config(&dns, &discovery, "")
        .replace("max_interval = \"200ms\"", "max_interval = \"300ms\"")
        .replace("min_interval = \"50ms\"", "min_interval = \"300ms\"");
    let proxy = Proxy::start(&text).await;
    let admin = proxy.admin.unwrap();
    eventually(WAIT, || async { addresses(admin).await.len() == 4 }).await;
    let queries = dns.queries("app.test");
    dns.set_addresses("app.test", &ips[..1], 1);
    eventually(WAIT, || async {
        status(admin).await["discovery"]["held"] == true
    })
    .await;
    assert_eq!(
        addresses(admin).await.len(),
        4,
        "applied before three answers agreed"
    );
    eventually(WAIT, || async { addresses(admin).await.len() == 1 }).await;
    // Three answers (A and AAAA queries each) were asked since the change.
    assert!(dns.queries("app.test") >= queries + 3);
    assert!(
        support::metric(
            admin,
            "fulcrum_discovery_resolutions_total",
            "result=\"held\""
        )
        .await
            >= 2.0
    );
    assert_eq!(status(admin).await["discovery"]["held"], false);
}

#[tokio::test]
async fn state_is_kept_across_refreshes_and_srv_backups_serve_only_when_needed() {
    let dns = DnsServer::start().await;
    let (a, b, c) = (
        Backend::spawn("a").await,
        Backend::spawn("b").await,
        Backend::spawn("c").await,
    );
    let name = "_http._tcp.app.test";
    for t in ["a.test", "b.test", "c.test"] {
        dns.set_addresses(t, &[loopback(1)], 1);
    }
    let records = |with_c: bool| {
        let mut r = vec![
            srv(name, 10, 1, a.addr.port(), "a.test", 1),
            srv(name, 20, 1, b.addr.port(), "b.test", 1),
        ];
        if with_c {
            r.push(srv(name, 30, 1, c.addr.port(), "c.test", 1));
        }
        Reply::Records(r)
    };
    dns.set(name, records(false));
    let health = "[upstream.app.health_check]\ninterval = \"100ms\"\ntimeout = \"1s\"\nhealthy_threshold = 1\nunhealthy_threshold = 1\n";
    let text = config(&dns, &format!("type = \"srv\"\nname = \"{name}\""), "").replace(
        "[upstream.app.discovery]",
        &format!("{health}\n[upstream.app.discovery]"),
    );
    let proxy = Proxy::start(&text).await;
    let admin = proxy.admin.unwrap();
    wait_for_addresses(admin, &[a.addr, b.addr]).await;
    let client = client();
    // Priority 10 serves; 20 is a backup.
    for _ in 0..20 {
        assert_eq!(get(&client, &proxy.url("/")).await.1["x-backend"], "a");
    }
    // a fails its checks: the backup serves.
    a.set_health(500);
    eventually(WAIT, || async {
        get(&client, &proxy.url("/")).await.1["x-backend"] == "b"
    })
    .await;
    // The answer changes (c joins as a further backup): a stays down.
    dns.set(name, records(true));
    wait_for_addresses(admin, &[a.addr, b.addr, c.addr]).await;
    let s = status(admin).await;
    let a_status = s["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["address"] == a.addr.to_string())
        .unwrap()
        .clone();
    assert_eq!(a_status["health"]["state"], "down", "{a_status}");
    for _ in 0..20 {
        assert_eq!(get(&client, &proxy.url("/")).await.1["x-backend"], "b");
    }
    assert_eq!(c.hits(), 0);
    // a comes back: it serves again.
    a.set_health(200);
    eventually(WAIT, || async {
        get(&client, &proxy.url("/")).await.1["x-backend"] == "a"
    })
    .await;
}

/// Which backend each of 1,000 keys goes to.
async fn key_map(url: &str) -> HashMap<String, String> {
    let client = client();
    let mut map = HashMap::new();
    for i in 0..1000 {
        let req = http::Request::get(url)
            .header("x-user", format!("user-{i}"))
            .body(empty())
            .unwrap();
        let (status, headers, _) = send(&client, req).await;
        assert_eq!(status, 200);
        map.insert(
            format!("user-{i}"),
            headers["x-backend"].to_str().unwrap().to_string(),
        );
    }
    map
}

#[tokio::test]
async fn consistent_hash_keys_of_endpoints_that_stay_never_move() {
    let dns = DnsServer::start().await;
    let (port, _backends) = backends_on_one_port(&["a", "b", "c", "d", "e"]).await;
    let ips: Vec<IpAddr> = (1..=5).map(loopback).collect();
    dns.set_addresses("app.test", &ips[..4], 1);
    let extra = "balance = \"consistent_hash\"\nhash_key = \"header:x-user\"";
    let (proxy, admin) = start(&dns, &format!("name = \"app.test\"\nport = {port}"), extra).await;
    eventually(WAIT, || async { addresses(admin).await.len() == 4 }).await;
    let before = key_map(&proxy.url("/")).await;
    // e joins: only keys that go to e move.
    dns.set_addresses("app.test", &ips, 1);
    eventually(WAIT, || async { addresses(admin).await.len() == 5 }).await;
    let grown = key_map(&proxy.url("/")).await;
    let moved: Vec<_> = before.keys().filter(|k| before[*k] != grown[*k]).collect();
    assert!(
        moved.iter().all(|k| grown[*k] == "e"),
        "a key moved between endpoints that stayed"
    );
    assert!(
        (100..300).contains(&moved.len()),
        "{} of 1000 keys moved to the fifth",
        moved.len()
    );
    let ratio = support::metric(
        admin,
        "fulcrum_upstream_keys_moved_ratio",
        "upstream=\"app\"",
    )
    .await;
    assert!(
        (ratio - moved.len() as f64 / 1000.0).abs() < 0.06,
        "gauge {ratio} vs {} moved",
        moved.len()
    );
    // b leaves: only b's keys move.
    dns.set_addresses("app.test", &[ips[0], ips[2], ips[3], ips[4]], 1);
    eventually(WAIT, || async { addresses(admin).await.len() == 4 }).await;
    let shrunk = key_map(&proxy.url("/")).await;
    assert!(
        grown
            .keys()
            .all(|k| grown[k] == "b" || grown[k] == shrunk[k]),
        "a key of an endpoint that stayed moved"
    );
}

#[tokio::test]
async fn readyz_waits_for_the_first_answer() {
    let dns = DnsServer::start().await;
    let (port, _backends) = backends_on_one_port(&["a"]).await;
    dns.set("app.test", Reply::ServFail);
    let (proxy, admin) = start(&dns, &format!("name = \"app.test\"\nport = {port}"), "").await;
    let readyz = || async { get(&client(), &format!("http://{admin}/readyz")).await.0 };
    assert_eq!(readyz().await, 503);
    // No endpoint yet: 503 with the cause.
    let (status, _, body) = get(&client(), &proxy.url("/")).await;
    assert_eq!(status, 503, "{body}");
    dns.set_addresses("app.test", &[loopback(1)], 1);
    eventually(WAIT, || async { readyz().await == 200 }).await;
    assert_eq!(get(&client(), &proxy.url("/")).await.0, 200);
}

#[tokio::test]
async fn a_new_endpoint_ramps_up_with_slow_start() {
    let dns = DnsServer::start().await;
    let (port, backends) = backends_on_one_port(&["a", "b", "c"]).await;
    let ips: Vec<IpAddr> = (1..=3).map(loopback).collect();
    dns.set_addresses("app.test", &ips[..2], 1);
    let (proxy, admin) = start(
        &dns,
        &format!("name = \"app.test\"\nport = {port}"),
        "slow_start = \"3s\"",
    )
    .await;
    eventually(WAIT, || async { addresses(admin).await.len() == 2 }).await;
    dns.set_addresses("app.test", &ips, 1);
    eventually(WAIT, || async { addresses(admin).await.len() == 3 }).await;
    let s = status(admin).await;
    let c = s["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["address"] == SocketAddr::new(ips[2], port).to_string())
        .unwrap()
        .clone();
    assert!(c["slow_start_until"].is_string(), "{c}");
    let share_of_c = |n: usize| {
        let url = proxy.url("/");
        let c = backends[2].clone();
        let others = [backends[0].clone(), backends[1].clone()];
        async move {
            let (c0, o0) = (c.hits(), others.iter().map(Backend::hits).sum::<usize>());
            let client = client();
            for _ in 0..n {
                get(&client, &url).await;
            }
            let (c1, o1) = (c.hits(), others.iter().map(Backend::hits).sum::<usize>());
            (c1 - c0) as f64 / ((c1 - c0) + (o1 - o0)) as f64
        }
    };
    // Early in the ramp c takes well under its full third.
    let early = share_of_c(300).await;
    assert!(early < 0.25, "early share {early}");
    let gauge = support::metric(
        admin,
        "fulcrum_endpoint_slow_start",
        &format!("endpoint=\"{}\"", SocketAddr::new(ips[2], port)),
    )
    .await;
    assert!((0.1..1.0).contains(&gauge), "slow-start gauge {gauge}");
    // After the window: a full share, and no ramp shown.
    eventually(WAIT, || async {
        status(admin).await["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["slow_start_until"].is_null())
    })
    .await;
    let late = share_of_c(600).await;
    assert!((0.28..0.39).contains(&late), "late share {late}");
}

/// `POST /reload`, which must succeed.
async fn reload(admin: SocketAddr) {
    let request = http::Request::post(format!("http://{admin}/reload"));
    let (status, _, body) = send(&client(), request.body(empty()).unwrap()).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_reload_keeps_discovered_endpoints_and_a_changed_table_resolves_at_once() {
    let dns = DnsServer::start().await;
    let (port, _backends) = backends_on_one_port(&["a", "b"]).await;
    dns.set_addresses("one.test", &[loopback(1)], 300);
    dns.set_addresses("two.test", &[loopback(2)], 300);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fulcrum.toml");
    let text = |name: &str, extra: &str| {
        config(&dns, &format!("name = \"{name}\"\nport = {port}"), extra)
            .replace("max_interval = \"200ms\"", "max_interval = \"60s\"")
            .replace("min_interval = \"50ms\"", "min_interval = \"30s\"")
    };
    std::fs::write(&path, text("one.test", "")).unwrap();
    let proxy = Proxy::start_file(&path, false).await;
    let admin = proxy.admin.unwrap();
    let one = [SocketAddr::new(loopback(1), port)];
    wait_for_addresses(admin, &one).await;
    let asked = dns.queries("one.test");
    // Same table, another key changed: kept, not asked again.
    std::fs::write(&path, text("one.test", "retries = 2")).unwrap();
    reload(admin).await;
    assert_eq!(
        addresses(admin).await,
        ["127.0.0.1:".to_string() + &port.to_string()]
    );
    assert_eq!(dns.queries("one.test"), asked);
    // A changed name: resolved at once (not after 30 s).
    std::fs::write(&path, text("two.test", "retries = 2")).unwrap();
    reload(admin).await;
    wait_for_addresses(admin, &[SocketAddr::new(loopback(2), port)]).await;
}

#[test]
fn two_processes_resolving_one_name_map_keys_alike() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let dns = DnsServer::start().await;
        let (port, _backends) = backends_on_one_port(&["a", "b", "c", "d"]).await;
        let ips: Vec<IpAddr> = (1..=4).map(loopback).collect();
        // Each process sees the addresses in another order.
        dns.set(
            "app.test",
            Reply::Records(address_records("app.test", &ips, 1)),
        );
        let dir = tempfile::tempdir().unwrap();
        let mut children = Vec::new();
        let mut urls = Vec::new();
        for balance in ["consistent_hash", "maglev"] {
            for _ in 0..2 {
                let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                drop(listener);
                let text = config(
                    &dns,
                    &format!("name = \"app.test\"\nport = {port}"),
                    &format!("balance = \"{balance}\"\nhash_key = \"header:x-user\""),
                )
                .replace(
                    "bind = \"127.0.0.1:0\"\n\n[[route]]",
                    &format!("bind = \"{addr}\"\n\n[[route]]"),
                )
                .replace("[admin]\nbind = \"127.0.0.1:0\"", "[admin]\nbind = \"\"");
                let path = dir.path().join(format!("{balance}-{}.toml", addr.port()));
                std::fs::write(&path, text).unwrap();
                children.push(
                    std::process::Command::new(env!("CARGO_BIN_EXE_fulcrum"))
                        .arg("--config")
                        .arg(&path)
                        .arg("run")
                        .env_remove("FULCRUM_CONFIG")
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null())
                        .spawn()
                        .unwrap(),
                );
                urls.push(format!("http://{addr}/"));
            }
        }
        for url in &urls {
            eventually(WAIT, || async {
                let req = http::Request::get(url).body(empty()).unwrap();
                matches!(client().request(req).await, Ok(r) if r.status() == 200)
            })
            .await;
        }
        let mut maps = Vec::new();
        for url in &urls {
            maps.push(key_map(url).await);
        }
        for child in &mut children {
            let _ = child.kill();
            let _ = child.wait();
        }
        assert_eq!(
            maps[0], maps[1],
            "consistent_hash: two processes map keys differently"
        );
        assert_eq!(
            maps[2], maps[3],
            "maglev: two processes map keys differently"
        );
        for map in &maps {
            let used: std::collections::HashSet<_> = map.values().collect();
            assert_eq!(used.len(), 4);
        }
    });
}

#[tokio::test]
async fn check_diff_shows_discovery_changes_and_the_running_endpoints() {
    let dns = DnsServer::start().await;
    let (port, _backends) = backends_on_one_port(&["a"]).await;
    dns.set_addresses("app.test", &[loopback(1)], 1);
    let dir = tempfile::tempdir().unwrap();
    let running = dir.path().join("running.toml");
    let text = config(&dns, &format!("name = \"app.test\"\nport = {port}"), "");
    std::fs::write(&running, &text).unwrap();
    let proxy = Proxy::start_file(&running, false).await;
    let admin = proxy.admin.unwrap();
    let endpoint = SocketAddr::new(loopback(1), port);
    wait_for_addresses(admin, &[endpoint]).await;
    let candidate = dir.path().join("candidate.toml");
    std::fs::write(
        &candidate,
        text.replace("[upstream.app]\n", "[upstream.app]\nslow_start = \"2s\"\n")
            .replace(
                "max_interval = \"200ms\"",
                "max_interval = \"200ms\"\nmax_removed_percent = 20",
            ),
    )
    .unwrap();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_fulcrum"))
            .args([
                "-c",
                &candidate.display().to_string(),
                "check",
                "--diff",
                "--admin",
                &admin.to_string(),
            ])
            .env_remove("FULCRUM_CONFIG")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "endpoints from DNS: a app.test".to_string(),
        "slow_start 0ns -> 2s".to_string(),
        "discovery.max_removed_percent 50 -> 20".to_string(),
        "discovered endpoints in use (running instance):".to_string(),
        format!("app (a app.test): {endpoint} (weight 1)"),
    ] {
        assert!(stdout.contains(&line), "missing `{line}` in:\n{stdout}");
    }
}

#[tokio::test]
async fn a_removed_endpoint_drains_and_its_idle_connections_close() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dns = DnsServer::start().await;
    let stay = Backend::spawn("stay").await;
    // The leaving endpoint answers keep-alive requests and counts the
    // connections that reached their end (fulcrum closed them).
    let closed = Arc::new(AtomicUsize::new(0));
    let leaving = raw_backend({
        let closed = Arc::clone(&closed);
        move |mut stream| {
            let closed = Arc::clone(&closed);
            async move {
                let mut buf = vec![0u8; 4096];
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\nx-backend: leaving\r\n\r\nleaving";
                            if stream.write_all(answer).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                closed.fetch_add(1, Ordering::SeqCst);
            }
        }
    })
    .await;
    let name = "_http._tcp.app.test";
    dns.set_addresses("host.test", &[loopback(1)], 1);
    let both = Reply::Records(vec![
        srv(name, 10, 1, stay.addr.port(), "host.test", 1),
        srv(name, 10, 1, leaving.port(), "host.test", 1),
    ]);
    dns.set(name, both);
    let (proxy, admin) = start(&dns, &format!("type = \"srv\"\nname = \"{name}\""), "").await;
    wait_for_addresses(admin, &[stay.addr, leaving]).await;
    let client = client();
    let mut seen_leaving = false;
    for _ in 0..20 {
        seen_leaving |= get(&client, &proxy.url("/")).await.1["x-backend"] == "leaving";
    }
    assert!(seen_leaving);
    assert_eq!(
        closed.load(Ordering::SeqCst),
        0,
        "a pooled connection closed early"
    );
    dns.set(
        name,
        Reply::Records(vec![srv(name, 10, 1, stay.addr.port(), "host.test", 1)]),
    );
    wait_for_addresses(admin, &[stay.addr]).await;
    // No new request goes there, and its pooled connection is closed.
    for _ in 0..20 {
        assert_eq!(get(&client, &proxy.url("/")).await.1["x-backend"], "stay");
    }
    eventually(WAIT, || async { closed.load(Ordering::SeqCst) >= 1 }).await;
}
