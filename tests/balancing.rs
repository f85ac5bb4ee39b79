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

#[tokio::test]
async fn other_algorithms_are_refused_at_start_with_a_clear_message() {
    let a = Backend::spawn("a").await;
    let config = weighted_config(&[(&a, 1)])
        .replace("[upstream.u]", "[upstream.u]\nbalance = \"least_requests\"");
    let error = Proxy::try_start(&config).await.err().expect("refused");
    assert!(
        error.contains("upstream.u.balance") && error.contains("least_requests"),
        "{error}"
    );
}
