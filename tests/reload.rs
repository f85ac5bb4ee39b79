//! SPEC §Hot reload: atomic, lossless, state-preserving.

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use http::Request;
use support::*;

/// A config file in a temp dir with an admin API on a free port.
struct ConfigFile {
    dir: tempfile::TempDir,
    path: PathBuf,
}

impl ConfigFile {
    fn new(text: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fulcrum.toml");
        std::fs::write(&path, text).unwrap();
        Self { dir, path }
    }

    fn write(&self, text: &str) {
        std::fs::write(&self.path, text).unwrap();
    }
}

fn endpoints(backends: &[&Backend]) -> String {
    backends
        .iter()
        .map(|b| format!("{{ address = \"{}\" }}", b.addr))
        .collect::<Vec<_>>()
        .join(", ")
}

fn one_upstream(backends: &[&Backend], extra: &str) -> String {
    format!(
        "[admin]\nbind = \"127.0.0.1:0\"\n[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\n[[route]]\nupstream = \"app\"\n[upstream.app]\nendpoints = [{}]\n{extra}\n",
        endpoints(backends)
    )
}

async fn reload(admin: SocketAddr) -> (u16, serde_json::Value) {
    let (status, _, body) = send(
        &client(),
        Request::post(format!("http://{admin}/reload"))
            .body(empty())
            .unwrap(),
    )
    .await;
    (status.as_u16(), serde_json::from_str(&body).unwrap())
}

async fn status(admin: SocketAddr) -> serde_json::Value {
    serde_json::from_str(&get(&client(), &format!("http://{admin}/status")).await.2).unwrap()
}

async fn metrics(admin: SocketAddr) -> String {
    get(&client(), &format!("http://{admin}/metrics")).await.2
}

#[tokio::test]
async fn twenty_reloads_under_load_lose_no_request() {
    let [a, b, c, d] = [
        Backend::spawn("a").await,
        Backend::spawn("b").await,
        Backend::spawn("c").await,
        Backend::spawn("d").await,
    ];
    let sets = [one_upstream(&[&a, &b], ""), one_upstream(&[&c, &d], "")];
    let names = [["a", "b"], ["c", "d"]];
    let file = ConfigFile::new(&sets[0]);
    let proxy = Proxy::start_file(&file.path, false).await;
    let admin = proxy.admin.unwrap();

    // (config index, current from, current until): from when its reload
    // started to when the next one finished.
    let mut epochs: Vec<(usize, Instant, Option<Instant>)> = vec![(0, Instant::now(), None)];
    let stop = tokio_util::sync::CancellationToken::new();
    let mut clients = Vec::new();
    for _ in 0..8 {
        let url = proxy.url("/");
        let stop = stop.clone();
        clients.push(tokio::spawn(async move {
            let c = client();
            let mut seen = Vec::new();
            let mut failed = 0;
            while !stop.is_cancelled() {
                let started = Instant::now();
                let req = Request::get(&url).body(empty()).unwrap();
                match tokio::time::timeout(Duration::from_secs(10), c.request(req)).await {
                    Ok(Ok(r)) if r.status() == 200 => {
                        let body = http_body_util::BodyExt::collect(r.into_body())
                            .await
                            .unwrap()
                            .to_bytes();
                        seen.push((
                            started,
                            Instant::now(),
                            String::from_utf8_lossy(&body).into_owned(),
                        ));
                    }
                    _ => failed += 1,
                }
            }
            (seen, failed)
        }));
    }
    for round in 1..=20 {
        tokio::time::sleep(Duration::from_millis(40)).await;
        let next = round % 2;
        file.write(&sets[next]);
        let started = Instant::now();
        let (code, body) = reload(admin).await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["generation"], round + 1);
        let done = Instant::now();
        if let Some(last) = epochs.last_mut() {
            last.2 = Some(done);
        }
        epochs.push((next, started, None));
    }
    tokio::time::sleep(Duration::from_millis(40)).await;
    stop.cancel();
    let mut total = 0;
    for t in clients {
        let (seen, failed) = t.await.unwrap();
        assert_eq!(failed, 0);
        total += seen.len();
        for (started, ended, backend) in seen {
            let valid = epochs.iter().any(|&(set, from, until)| {
                names[set].contains(&backend.as_str())
                    && from <= ended
                    && until.is_none_or(|u| u >= started)
            });
            assert!(
                valid,
                "{backend} answered outside any config that listed it"
            );
        }
    }
    assert!(total > 200, "only {total} requests");
    assert_eq!(status(admin).await["generation"], 21);
}

#[tokio::test]
async fn a_reload_of_one_upstream_opens_no_connection_to_another() {
    let p = Backend::spawn("p").await;
    let q = Backend::spawn("q").await;
    let r = Backend::spawn("r").await;
    let config = |y: &[&Backend]| {
        format!(
            "[admin]\nbind = \"127.0.0.1:0\"\n[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\n[[route]]\npath_prefix = \"/x\"\nupstream = \"x\"\n[[route]]\npath_prefix = \"/y\"\nupstream = \"y\"\n[upstream.x]\nendpoints = [{}]\n[upstream.y]\nendpoints = [{}]\n",
            endpoints(&[&p]),
            endpoints(y)
        )
    };
    let file = ConfigFile::new(&config(&[&q]));
    let proxy = Proxy::start_file(&file.path, false).await;
    let admin = proxy.admin.unwrap();
    let c = client();
    for _ in 0..5 {
        assert_eq!(get(&c, &proxy.url("/x")).await.2, "p");
        assert_eq!(get(&c, &proxy.url("/y")).await.2, "q");
    }
    let before = (
        p.connections.load(std::sync::atomic::Ordering::SeqCst),
        q.connections.load(std::sync::atomic::Ordering::SeqCst),
    );
    file.write(&config(&[&q, &r]));
    assert_eq!(reload(admin).await.0, 200);
    for _ in 0..6 {
        assert_eq!(get(&c, &proxy.url("/x")).await.2, "p");
        get(&c, &proxy.url("/y")).await;
    }
    assert_eq!(
        p.connections.load(std::sync::atomic::Ordering::SeqCst),
        before.0,
        "new connection to x's endpoint"
    );
    assert_eq!(
        q.connections.load(std::sync::atomic::Ordering::SeqCst),
        before.1,
        "q stayed in y: its pool too"
    );
    assert!(r.hits() > 0);
}

#[tokio::test]
async fn an_invalid_file_changes_nothing_and_says_why() {
    let a = Backend::spawn("a").await;
    let file = ConfigFile::new(&one_upstream(&[&a], ""));
    let proxy = Proxy::start_file(&file.path, false).await;
    let admin = proxy.admin.unwrap();
    file.write(&one_upstream(&[&a], "retries = 99"));
    let (code, body) = reload(admin).await;
    assert_eq!(code, 422);
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("fulcrum.toml:10:11: upstream.app.retries: must be between 0 and 10"),
        "{error}"
    );
    // The old config serves on.
    assert_eq!(get(&client(), &proxy.url("/")).await.2, "a");
    let s = status(admin).await;
    assert_eq!(s["generation"], 1);
    assert_eq!(s["last_reload"]["ok"], false);
    assert_eq!(s["last_reload"]["error"], error);
    assert!(s["last_reload"]["at"].as_str().unwrap().ends_with('Z'));
    let m = metrics(admin).await;
    assert!(
        m.contains("fulcrum_config_reloads_total{result=\"failure\"} 1"),
        "{m}"
    );
    assert!(m.contains("fulcrum_config_generation 1"));
    // A good file again: generation 2, and /status forgets the error.
    file.write(&one_upstream(&[&a], ""));
    assert_eq!(
        reload(admin).await,
        (200, serde_json::json!({ "generation": 2 }))
    );
    let s = status(admin).await;
    assert_eq!(
        (s["generation"].as_u64(), s["last_reload"]["ok"].as_bool()),
        (Some(2), Some(true))
    );
    assert!(
        metrics(admin)
            .await
            .contains("fulcrum_config_reloads_total{result=\"success\"} 1")
    );
    // Unchanged file: still a reload, still a new generation.
    assert_eq!(reload(admin).await.1["generation"], 3);
}

async fn wait_generation(admin: SocketAddr, generation: u64) {
    eventually(Duration::from_secs(5), || async {
        status(admin).await["generation"] == generation
    })
    .await;
}

#[tokio::test]
async fn the_watcher_sees_rename_into_place_truncate_and_write_and_symlink_swaps() {
    let a = Backend::spawn("a").await;
    let b = Backend::spawn("b").await;
    let file = ConfigFile::new(&one_upstream(&[&a], ""));
    let proxy = Proxy::start_file(&file.path, true).await;
    let admin = proxy.admin.unwrap();
    let c = client();

    // An editor's save: write elsewhere, rename over the file.
    let tmp = file.dir.path().join(".fulcrum.toml.swp");
    std::fs::write(&tmp, one_upstream(&[&b], "")).unwrap();
    std::fs::rename(&tmp, &file.path).unwrap();
    wait_generation(admin, 2).await;
    assert_eq!(get(&c, &proxy.url("/")).await.2, "b");

    // Truncate, then write.
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&file.path)
            .unwrap();
        f.flush().unwrap();
        f.write_all(one_upstream(&[&a], "").as_bytes()).unwrap();
    }
    wait_generation(admin, 3).await;
    assert_eq!(get(&c, &proxy.url("/")).await.2, "a");
    assert_eq!(status(admin).await["last_reload"]["ok"], true);
}

#[tokio::test]
async fn the_watcher_sees_a_kubernetes_style_symlink_swap() {
    let a = Backend::spawn("a").await;
    let b = Backend::spawn("b").await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // fulcrum.toml -> ..data/fulcrum.toml, ..data -> v1
    std::fs::create_dir(root.join("v1")).unwrap();
    std::fs::write(root.join("v1/fulcrum.toml"), one_upstream(&[&a], "")).unwrap();
    std::os::unix::fs::symlink("v1", root.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/fulcrum.toml", root.join("fulcrum.toml")).unwrap();
    let proxy = Proxy::start_file(&root.join("fulcrum.toml"), true).await;
    let admin = proxy.admin.unwrap();
    assert_eq!(get(&client(), &proxy.url("/")).await.2, "a");
    // The kubelet's update: a new directory, a new link, renamed over ..data.
    std::fs::create_dir(root.join("v2")).unwrap();
    std::fs::write(root.join("v2/fulcrum.toml"), one_upstream(&[&b], "")).unwrap();
    std::os::unix::fs::symlink("v2", root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    wait_generation(admin, 2).await;
    assert_eq!(get(&client(), &proxy.url("/")).await.2, "b");
}

#[tokio::test]
async fn listeners_are_added_and_removed_and_the_removed_one_drains() {
    let a = Backend::spawn("a").await;
    let two = |second: bool| {
        let extra = if second {
            "[[listener]]\nname = \"extra\"\nbind = \"127.0.0.1:0\"\n"
        } else {
            ""
        };
        format!(
            "[admin]\nbind = \"127.0.0.1:0\"\n[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\n{extra}[[route]]\nupstream = \"app\"\n[upstream.app]\nendpoints = [{}]\n",
            endpoints(&[&a])
        )
    };
    let file = ConfigFile::new(&two(false));
    let proxy = Proxy::start_file(&file.path, false).await;
    let admin = proxy.admin.unwrap();
    file.write(&two(true));
    assert_eq!(reload(admin).await.0, 200);
    // The added listener's address: from the log-free way, the metrics.
    let m = metrics(admin).await;
    assert!(
        m.contains("fulcrum_downstream_connections{listener=\"extra\"} 0"),
        "{m}"
    );
    let extra = find_listener(&a, admin, &proxy).await;
    let c = client();
    assert_eq!(get(&c, &format!("http://{extra}/")).await.2, "a");

    // A slow request in flight on the extra listener survives its removal.
    let slow_url = format!("http://{extra}/delay/700");
    let slow = tokio::spawn(async move { get(&client(), &slow_url).await });
    eventually(Duration::from_secs(5), || async {
        a.last_seen().uri == "/delay/700"
    })
    .await;
    file.write(&two(false));
    assert_eq!(reload(admin).await.0, 200);
    eventually(Duration::from_secs(5), || async {
        tokio::net::TcpStream::connect(extra).await.is_err()
    })
    .await;
    let (code, _, body) = slow.await.unwrap();
    assert_eq!((code.as_u16(), body.as_str()), (200, "a"));
    assert_eq!(
        get(&c, &proxy.url("/")).await.2,
        "a",
        "the kept listener serves on"
    );
}

/// The added listener bound port 0; find it among the process's listening
/// sockets by asking each candidate port on loopback (ports come from
/// /proc/net/tcp, state LISTEN).
async fn find_listener(a: &Backend, admin: SocketAddr, proxy: &Proxy) -> SocketAddr {
    let known = [a.addr.port(), admin.port(), proxy.addr().port()];
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let mut candidates = Vec::new();
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() > 3 && fields[3] == "0A" && fields[1].starts_with("0100007F:") {
            let port = u16::from_str_radix(&fields[1][9..], 16).unwrap();
            if !known.contains(&port) {
                candidates.push(port);
            }
        }
    }
    let before = a.hits();
    for port in candidates {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let req = Request::get(format!("http://{addr}/probe-extra"))
            .body(empty())
            .unwrap();
        if let Ok(Ok(r)) =
            tokio::time::timeout(Duration::from_millis(300), client().request(req)).await
            && r.headers().get("x-backend").is_some_and(|v| v == "a")
            && a.hits() > before
            && a.last_seen().uri == "/probe-extra"
        {
            return addr;
        }
    }
    panic!("the added listener does not answer");
}

#[tokio::test]
async fn an_endpoint_that_is_down_stays_down_across_a_reload() {
    let a = Backend::spawn("a").await;
    let b = Backend::spawn("b").await;
    let c3 = Backend::spawn("c").await;
    let checks = "[upstream.app.health_check]\ninterval = \"100ms\"\ntimeout = \"100ms\"\nunhealthy_threshold = 1\nhealthy_threshold = 1\n";
    let file = ConfigFile::new(&one_upstream(&[&a, &b], checks));
    let proxy = Proxy::start_file(&file.path, false).await;
    let admin = proxy.admin.unwrap();
    a.set_health(503);
    let usable = |s: serde_json::Value, addr: SocketAddr| {
        s["upstreams"]["app"]["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["address"] == addr.to_string())
            .map(|e| e["usable"].clone())
    };
    eventually(Duration::from_secs(3), || async {
        usable(status(admin).await, a.addr) == Some(false.into())
    })
    .await;
    // Keep a, add c: a is still down right after the swap, before any probe.
    file.write(&one_upstream(&[&a, &b, &c3], checks));
    assert_eq!(reload(admin).await.0, 200);
    let s = status(admin).await;
    assert_eq!(usable(s.clone(), a.addr), Some(false.into()), "{s}");
    let cl = client();
    for _ in 0..9 {
        assert_ne!(get(&cl, &proxy.url("/")).await.2, "a");
    }
    // The newcomer was probed at once.
    eventually(Duration::from_secs(2), || async {
        let s = status(admin).await;
        s["upstreams"]["app"]["endpoints"][2]["health"]["state"] == "up"
    })
    .await;
}

#[tokio::test]
async fn check_diff_predicts_the_share_of_keys_that_move() {
    let backends: Vec<Backend> = {
        let mut v = Vec::new();
        for name in ["a", "b", "c", "d", "e"] {
            v.push(Backend::spawn(name).await);
        }
        v
    };
    let refs: Vec<&Backend> = backends.iter().collect();
    let hashed = |list: &[&Backend]| {
        one_upstream(
            list,
            "balance = \"consistent_hash\"\nhash_key = \"header:x-user\"",
        )
    };
    let file = ConfigFile::new(&hashed(&refs[..4]));
    let proxy = Proxy::start_file(&file.path, false).await;
    let admin = proxy.admin.unwrap();
    let route = |url: String| async move {
        let c = client();
        let mut owners = Vec::with_capacity(10_000);
        for k in 0..10_000 {
            let req = Request::get(&url)
                .header("x-user", format!("u{k}"))
                .body(empty())
                .unwrap();
            owners.push(send(&c, req).await.2);
        }
        owners
    };
    let before = route(proxy.url("/")).await;

    // The new file adds e and drops b; the admin API gives the running config.
    let new_text = hashed(&[refs[0], refs[2], refs[3], refs[4]]).replace(
        "127.0.0.1:0\"\n[[listener]]",
        &format!("{admin}\"\n[[listener]]"),
    );
    let new_file = file.dir.path().join("next.toml");
    std::fs::write(&new_file, &new_text).unwrap();
    // On the blocking pool: this runtime must keep serving the admin API.
    let arg = new_file.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_fulcrum"))
            .args(["-c", arg.to_str().unwrap(), "check", "--diff"])
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
    assert!(
        stdout.contains(&format!("+ endpoint {}", refs[4].addr)),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("- endpoint {}", refs[1].addr)),
        "{stdout}"
    );
    let predicted: f64 = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("app (consistent_hash): "))
        .and_then(|l| l.strip_suffix("% of keys"))
        .expect("moved share printed")
        .parse()
        .unwrap();

    file.write(&new_text);
    assert_eq!(reload(admin).await.0, 200);
    let after = route(proxy.url("/")).await;
    let moved = before.iter().zip(&after).filter(|(x, y)| x != y).count() as f64 / 100.0;
    // Both shares are samples (10,000 keys here, 100,000 in `check --diff`)
    // of a ring that differs run to run (the endpoints' ports do): allow 4
    // standard errors of their difference, about 2 points near 40%.
    let p = moved / 100.0;
    let tolerance = 4.0 * (p * (1.0 - p) * (1.0 / 10_000.0 + 1.0 / 100_000.0)).sqrt() * 100.0;
    assert!(
        (predicted - moved).abs() <= tolerance,
        "predicted {predicted}%, measured {moved}% (tolerance {tolerance:.2})"
    );
    assert!(moved > 10.0, "{moved}");
}

#[tokio::test]
async fn a_listener_that_cannot_bind_fails_the_whole_reload() {
    let a = Backend::spawn("a").await;
    let b = Backend::spawn("b").await;
    let file = ConfigFile::new(&one_upstream(&[&a], ""));
    let proxy = Proxy::start_file(&file.path, false).await;
    let admin = proxy.admin.unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    // Two changes: the upstream's endpoint, and a listener on a taken port.
    file.write(&format!(
        "{}[[listener]]\nname = \"second\"\nbind = \"127.0.0.1:{port}\"\n",
        one_upstream(&[&b], "")
    ));
    let (code, body) = reload(admin).await;
    assert_eq!(code, 422);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains(&format!("listener second: cannot bind 127.0.0.1:{port}")),
        "{body}"
    );
    // Neither change happened.
    assert_eq!(get(&client(), &proxy.url("/")).await.2, "a");
    assert_eq!(status(admin).await["generation"], 1);
}

#[tokio::test]
async fn replaced_certificates_apply_to_new_connections() {
    use std::sync::Arc;
    let a = Backend::spawn("a").await;
    let dir = tempfile::tempdir().unwrap();
    let mut roots = Vec::new();
    for n in ["old", "new"] {
        let ck = rcgen::generate_simple_self_signed(vec!["site.test".to_string()]).unwrap();
        std::fs::write(dir.path().join(format!("{n}.pem")), ck.cert.pem()).unwrap();
        std::fs::write(
            dir.path().join(format!("{n}.key")),
            ck.signing_key.serialize_pem(),
        )
        .unwrap();
        let mut store = rustls::RootCertStore::empty();
        store
            .add(rustls::pki_types::CertificateDer::from(
                ck.cert.der().to_vec(),
            ))
            .unwrap();
        roots.push(store);
    }
    let config = |n: &str| {
        format!(
            "[admin]\nbind = \"127.0.0.1:0\"\n[[listener]]\nname = \"tls\"\nbind = \"127.0.0.1:0\"\n[listener.tls]\ncertificates = [{{ cert = \"{n}.pem\", key = \"{n}.key\" }}]\n[[route]]\nupstream = \"app\"\n[upstream.app]\nendpoints = [{}]\n",
            endpoints(&[&a])
        )
    };
    let path = dir.path().join("fulcrum.toml");
    std::fs::write(&path, config("old")).unwrap();
    let proxy = Proxy::start_file(&path, false).await;
    let admin = proxy.admin.unwrap();
    let handshake = |roots: rustls::RootCertStore| {
        let addr = proxy.addr();
        async move {
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(
                    rustls::pki_types::ServerName::try_from("site.test").unwrap(),
                    tcp,
                )
                .await
        }
    };
    assert!(handshake(roots[0].clone()).await.is_ok());
    assert!(handshake(roots[1].clone()).await.is_err());
    // An open connection made before the swap keeps working.
    let before = handshake(roots[0].clone()).await.unwrap();
    std::fs::write(&path, config("new")).unwrap();
    assert_eq!(reload(admin).await.0, 200);
    assert!(
        handshake(roots[1].clone()).await.is_ok(),
        "new connections get the new certificate"
    );
    assert!(handshake(roots[0].clone()).await.is_err());
    let (mut send_req, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(before))
            .await
            .unwrap();
    tokio::spawn(conn);
    let response = send_req
        .send_request(
            Request::get("/")
                .header("host", "site.test")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn an_invalid_file_is_tried_once_and_its_good_content_back_reloads() {
    let a = Backend::spawn("a").await;
    let good = one_upstream(&[&a], "");
    let file = ConfigFile::new(&good);
    let proxy = Proxy::start_file(&file.path, true).await;
    let admin = proxy.admin.unwrap();
    let failures = |n: u32| format!("fulcrum_config_reloads_total{{result=\"failure\"}} {n}");

    file.write(&one_upstream(&[&a], "retries = 99"));
    eventually(Duration::from_secs(5), || async {
        metrics(admin).await.contains(&failures(1))
    })
    .await;
    // Writes next to the config (a log, an editor's swap file) do not try
    // the same invalid content again. What does not happen cannot be
    // awaited: three debounce periods after the last write stand for it.
    for i in 0..5 {
        let log = file.dir.path().join("fulcrum.log");
        std::fs::write(log, format!("line {i}\n")).unwrap();
        std::fs::write(file.dir.path().join(".fulcrum.toml.swp"), "x").unwrap();
    }
    tokio::time::sleep(fulcrum::reload::DEBOUNCE * 3).await;
    let m = metrics(admin).await;
    assert!(m.contains(&failures(1)), "{m}");
    assert_eq!(status(admin).await["last_reload"]["ok"], false);

    // The last good content back is a change: it reloads, and /status says so.
    file.write(&good);
    wait_generation(admin, 2).await;
    let s = status(admin).await;
    assert_eq!(s["last_reload"]["ok"], true);
    assert!(metrics(admin).await.contains(&failures(1)));
    assert_eq!(get(&client(), &proxy.url("/")).await.2, "a");
}

#[tokio::test]
async fn check_diff_shows_every_change_and_what_only_a_restart_applies() {
    let a = Backend::spawn("a").await;
    // The running config and the candidate each in a directory of its own,
    // each naming its certificate by a relative path.
    let running_dir = tempfile::tempdir().unwrap();
    let candidate_dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["site.test".to_string()]).unwrap();
    for (dir, name) in [(&running_dir, "site"), (&candidate_dir, "next")] {
        std::fs::write(dir.path().join(format!("{name}.pem")), ck.cert.pem()).unwrap();
        let key = ck.signing_key.serialize_pem();
        std::fs::write(dir.path().join(format!("{name}.key")), key).unwrap();
    }
    let config = |admin: &str, extra_server: &str, interval: &str, log: bool| {
        format!(
            "[server]\n{extra_server}\n[admin]\nbind = \"{admin}\"\n[access_log]\nenabled = {log}\n\
             [[listener]]\nname = \"tls\"\nbind = \"127.0.0.1:0\"\n\
             [listener.tls]\ncertificates = [{{ cert = \"site.pem\", key = \"site.key\" }}]\n\
             [[route]]\nupstream = \"app\"\n[upstream.app]\nendpoints = [{}]\n\
             [upstream.app.health_check]\ninterval = \"{interval}\"\n",
            endpoints(&[&a])
        )
    };
    let running = running_dir.path().join("fulcrum.toml");
    std::fs::write(&running, config("127.0.0.1:0", "", "5s", false)).unwrap();
    let proxy = Proxy::start_file(&running, false).await;
    let admin = proxy.admin.unwrap();
    // The candidate moves the admin API to where nothing listens yet.
    let moved_to = dead_addr().await;
    let candidate = candidate_dir.path().join("next.toml");
    std::fs::write(
        &candidate,
        config(
            &moved_to.to_string(),
            "idle_timeout = \"30s\"\nworkers = 2",
            "2s",
            true,
        )
        .replace("site.", "next.")
        .replace("[listener.tls]", "defer_accept = true\n[listener.tls]"),
    )
    .unwrap();
    let check = |extra: Vec<String>| {
        let candidate = candidate.clone();
        tokio::task::spawn_blocking(move || {
            let mut args = vec![
                "-c".to_string(),
                candidate.display().to_string(),
                "check".into(),
                "--diff".into(),
            ];
            args.extend(extra);
            std::process::Command::new(env!("CARGO_BIN_EXE_fulcrum"))
                .args(args)
                .output()
                .unwrap()
        })
    };

    // Asked at the candidate's new address, it says where to look instead.
    let out = check(Vec::new()).await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&moved_to.to_string()) && stderr.contains("--admin"),
        "{stderr}"
    );

    let out = check(vec!["--admin".into(), admin.to_string()])
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let restart = "(a reload does not apply it: restart)";
    for line in [
        "server.idle_timeout 60s -> 30s".to_string(),
        format!("server.workers 0 -> 2 {restart}"),
        format!("admin.bind 127.0.0.1:0 -> {moved_to} {restart}"),
        format!("access_log.enabled false -> true {restart}"),
        "~ app: health_check.interval 5s -> 2s".to_string(),
        "~ tls: certificates changed".to_string(),
        "~ tls: defer_accept false -> true".to_string(),
    ] {
        assert!(stdout.contains(&line), "{line:?} in\n{stdout}");
    }
    assert!(!stdout.contains("keys that would move"), "{stdout}");
    assert!(!stdout.contains("no changes"), "{stdout}");
}

/// Bare handshake ACKs the kernel has dropped because their listener
/// defers accept (TCP_DEFER_ACCEPT): a count for the whole network
/// namespace, where no other test defers.
fn deferred_acks() -> u64 {
    let netstat = std::fs::read_to_string("/proc/net/netstat").expect("/proc/net/netstat");
    let mut lines = netstat.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next().unwrap(), lines.next().unwrap());
    let at = names
        .split_whitespace()
        .position(|n| n == "TCPDeferAcceptDrop");
    let value = values
        .split_whitespace()
        .nth(at.expect("TCPDeferAcceptDrop counted"));
    value.unwrap().parse().unwrap()
}

#[tokio::test]
async fn defer_accept_reaches_the_socket_and_a_reload_turns_it_off() {
    let a = Backend::spawn("a").await;
    let off = one_upstream(&[&a], "");
    let on = off.replacen("[[route]]", "defer_accept = true\n[[route]]", 1);
    let file = ConfigFile::new(&on);
    let proxy = Proxy::start_file(&file.path, false).await;
    let admin = proxy.admin.unwrap();
    let request = b"GET / HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n";

    // On: the kernel drops the ACK that ends the handshake and hands the
    // connection over with its request.
    let before = deferred_acks();
    let answer = raw(proxy.addr(), request, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(deferred_acks() > before, "the listener defers accept");

    // Off after a reload, on the same socket: the ACK is taken as it comes.
    file.write(&off);
    assert_eq!(reload(admin).await.0, 200);
    let before = deferred_acks();
    let answer = raw(proxy.addr(), request, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(deferred_acks(), before, "the listener no longer defers");

    // And on again.
    file.write(&on);
    assert_eq!(reload(admin).await.0, 200);
    let before = deferred_acks();
    let answer = raw(proxy.addr(), request, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(deferred_acks() > before, "the listener defers accept again");
}

/// Sends a GET on `s`; its response's first read, or "" after `wait`.
async fn get_within(s: &mut tokio::net::TcpStream, wait: Duration) -> String {
    use tokio::io::AsyncWriteExt;
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    read_within(s, wait).await
}

async fn read_within(s: &mut tokio::net::TcpStream, wait: Duration) -> String {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 16384];
    match tokio::time::timeout(wait, s.read(&mut buf)).await {
        Ok(Ok(n)) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        _ => String::new(),
    }
}

/// How long a connection held at the limit is watched for an answer.
const HELD: Duration = Duration::from_millis(300);

/// Asserts `response` (the first read of one, within 5 s) is a 200.
fn assert_ok(response: &str, what: &str) {
    assert!(response.starts_with("HTTP/1.1 200"), "{what}: {response:?}");
}

#[tokio::test]
async fn max_connections_moves_with_a_reload() {
    let a = Backend::spawn("a").await;
    let config = |max: usize| {
        format!(
            "[server]\nmax_connections = {max}\n{}",
            one_upstream(&[&a], "")
        )
    };
    let file = ConfigFile::new(&config(1));
    let proxy = Proxy::start_file(&file.path, false).await;
    let admin = proxy.admin.unwrap();
    let connect = || tokio::net::TcpStream::connect(proxy.addr());
    let served = Duration::from_secs(5);

    let mut first = connect().await.unwrap();
    assert_ok(&get_within(&mut first, served).await, "the first");
    let mut second = connect().await.unwrap();
    let r = get_within(&mut second, HELD).await;
    assert_eq!(r, "", "served beyond max_connections = 1");

    // Raised: the waiting connection is taken at once, the first kept.
    file.write(&config(2));
    assert_eq!(reload(admin).await.0, 200);
    assert_ok(&read_within(&mut second, served).await, "the waiting one");
    assert_ok(&get_within(&mut first, served).await, "the first, kept");

    // Lowered below what is open: nobody is cut off, and a new connection
    // waits until the open ones are under the new limit.
    file.write(&config(1));
    assert_eq!(reload(admin).await.0, 200);
    assert_ok(&get_within(&mut first, served).await, "the first, kept");
    let mut third = connect().await.unwrap();
    let r = get_within(&mut third, HELD).await;
    assert_eq!(r, "", "served with 2 open, max 1");
    drop(first);
    let r = read_within(&mut third, HELD).await;
    assert_eq!(r, "", "served with 1 open, max 1");
    drop(second);
    assert_ok(&read_within(&mut third, served).await, "the third");
}
