//! SPEC §Balancing through a running proxy: smooth weighted round robin,
//! weight 0 drains.

mod support;

use support::*;

fn weighted_config(backends: &[(&Backend, u32)]) -> String {
    let endpoints: Vec<String> = backends
        .iter()
        .map(|(b, w)| format!("{{ address = \"{}\", weight = {w} }}", b.addr))
        .collect();
    format!(
        "[admin]\nbind = \"\"\n[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\n[[route]]\nupstream = \"u\"\n[upstream.u]\nendpoints = [{}]\n",
        endpoints.join(", ")
    )
}

#[tokio::test]
async fn smooth_weighted_round_robin_order_and_shares() {
    let a = Backend::spawn("a").await;
    let b = Backend::spawn("b").await;
    let c = Backend::spawn("c").await;
    let proxy = Proxy::start(&weighted_config(&[(&a, 5), (&b, 1), (&c, 1)])).await;
    let client = client();
    let mut order = String::new();
    for _ in 0..70 {
        let (status, _, body) = get(&client, &proxy.url("/")).await;
        assert_eq!(status, 200);
        order.push_str(&body);
    }
    // nginx's smooth order, repeated: every window of 7 has exactly 5:1:1.
    assert_eq!(&order[..7], "aabacaa");
    assert_eq!(order, "aabacaa".repeat(10));
    assert_eq!((a.hits(), b.hits(), c.hits()), (50, 10, 10));
}

#[tokio::test]
async fn weight_zero_is_drained() {
    let a = Backend::spawn("a").await;
    let b = Backend::spawn("b").await;
    let proxy = Proxy::start(&weighted_config(&[(&a, 1), (&b, 0)])).await;
    let client = client();
    for _ in 0..10 {
        assert_eq!(get(&client, &proxy.url("/")).await.2, "a");
    }
    assert_eq!(b.hits(), 0);
}

fn hashed_config(backends: &[(&Backend, u32)], balance: &str, key: &str, extra: &str) -> String {
    weighted_config(backends).replace(
        "[upstream.u]",
        &format!("[upstream.u]\nbalance = \"{balance}\"\nhash_key = \"{key}\"\n{extra}"),
    )
}

/// Sends a request shaped by `key_source` carrying key `k`; returns the body.
async fn keyed_get(client: &HttpClient, proxy: &Proxy, key_source: &str, k: &str) -> String {
    let (path, header) = match key_source {
        "header:x-user" => ("/".to_string(), Some(("x-user", k.to_string()))),
        "cookie:sid" => (
            "/".to_string(),
            Some(("cookie", format!("theme=dark; sid={k}"))),
        ),
        "query:u" => (format!("/?a=1&u={k}"), None),
        "path" => (format!("/items/{k}"), None),
        other => panic!("{other}"),
    };
    let mut req = http::Request::get(proxy.url(&path));
    if let Some((name, value)) = header {
        req = req.header(name, value);
    }
    let (status, _, body) = send(client, req.body(empty()).unwrap()).await;
    assert_eq!(status, 200);
    body
}

#[tokio::test]
async fn hashing_is_sticky_for_every_key_source() {
    let a = Backend::spawn("a").await;
    let b = Backend::spawn("b").await;
    let c = Backend::spawn("c").await;
    let client = client();
    for balance in ["consistent_hash", "maglev"] {
        for source in ["header:x-user", "cookie:sid", "query:u", "path"] {
            let proxy = Proxy::start(&hashed_config(
                &[(&a, 1), (&b, 1), (&c, 1)],
                balance,
                source,
                "",
            ))
            .await;
            let mut seen = std::collections::BTreeSet::new();
            for k in 0..30 {
                let key = format!("user{k}");
                let first = keyed_get(&client, &proxy, source, &key).await;
                for _ in 0..3 {
                    assert_eq!(
                        keyed_get(&client, &proxy, source, &key).await,
                        first,
                        "{balance} {source} {key}"
                    );
                }
                seen.insert(first);
            }
            assert_eq!(
                seen.len(),
                3,
                "{balance} {source}: 30 keys reach every endpoint"
            );
        }
    }
}

#[tokio::test]
async fn client_ip_is_a_sticky_key() {
    let a = Backend::spawn("a").await;
    let b = Backend::spawn("b").await;
    let c = Backend::spawn("c").await;
    let proxy = Proxy::start(&hashed_config(
        &[(&a, 1), (&b, 1), (&c, 1)],
        "consistent_hash",
        "client_ip",
        "",
    ))
    .await;
    let mut seen = std::collections::BTreeSet::new();
    for host in 1..=20u8 {
        let from: std::net::SocketAddr = format!("127.0.0.{host}:0").parse().unwrap();
        let mut answers = Vec::new();
        for _ in 0..3 {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(from).unwrap();
            let mut stream = socket.connect(proxy.addr()).await.unwrap();
            tokio::io::AsyncWriteExt::write_all(
                &mut stream,
                b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
            )
            .await
            .unwrap();
            let response = read_until_close(&mut stream, std::time::Duration::from_secs(5)).await;
            answers.push(response.rsplit("\r\n").next().unwrap().to_string());
        }
        assert!(
            answers.windows(2).all(|w| w[0] == w[1]),
            "127.0.0.{host}: {answers:?}"
        );
        seen.insert(answers[0].clone());
    }
    assert_eq!(seen.len(), 3);
}

#[tokio::test]
async fn hashing_drains_weight_zero_and_serves_keyless_requests() {
    let a = Backend::spawn("a").await;
    let b = Backend::spawn("b").await;
    let c = Backend::spawn("c").await;
    let client = client();
    for balance in ["consistent_hash", "maglev"] {
        let proxy = Proxy::start(&hashed_config(
            &[(&a, 1), (&b, 0), (&c, 1)],
            balance,
            "header:x-user",
            "",
        ))
        .await;
        for k in 0..50 {
            let body = keyed_get(&client, &proxy, "header:x-user", &format!("k{k}")).await;
            assert_ne!(body, "b", "{balance}: drained endpoint got a key");
        }
        // No key: round robin over the usable endpoints.
        let mut bodies = Vec::new();
        for _ in 0..4 {
            bodies.push(get(&client, &proxy.url("/")).await.2);
        }
        bodies.sort();
        assert_eq!(bodies, ["a", "a", "c", "c"], "{balance}");
    }
    assert_eq!(b.hits(), 0);
}

#[tokio::test]
async fn random_least_requests_and_peak_ewma_serve_by_weight() {
    let a = Backend::spawn("a").await;
    let b = Backend::spawn("b").await;
    let client = client();
    for balance in ["random", "least_requests", "peak_ewma"] {
        let proxy = Proxy::start(&weighted_config(&[(&a, 3), (&b, 1)]).replace(
            "[upstream.u]",
            &format!("[upstream.u]\nbalance = \"{balance}\""),
        ))
        .await;
        let mut to_a = 0;
        for _ in 0..200 {
            if get(&client, &proxy.url("/")).await.2 == "a" {
                to_a += 1;
            }
        }
        // Sequential requests: random and least_requests follow the 3:1 weights
        // (least_requests ties go to the first candidate, drawn by weight);
        // peak_ewma also weighs latency, so only require both to be used.
        match balance {
            "peak_ewma" => assert!((1..200).contains(&to_a), "{balance}: {to_a}"),
            _ => assert!(
                (120..=180).contains(&to_a),
                "{balance}: {to_a} of 200 to weight 3"
            ),
        }
    }
}
