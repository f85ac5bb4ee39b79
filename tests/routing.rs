//! SPEC §Routing through a running proxy: host classes, longest prefix,
//! strip_prefix, listeners, 404.

mod support;

use http::Request;
use support::*;

async fn send_to(c: &HttpClient, url: &str, host: &str) -> (u16, String) {
    let req = Request::get(url)
        .header("host", host)
        .body(empty())
        .unwrap();
    let (status, _, body) = send(c, req).await;
    (status.as_u16(), body)
}

#[tokio::test]
async fn requests_reach_the_upstream_of_the_best_route() {
    let ([_exact, _wild, _any, api], proxy) = best_route_proxy().await;
    let public = format!("http://{}", proxy.listener("public"));
    let internal = format!("http://{}", proxy.listener("internal"));
    let c = client();

    assert_eq!(
        send_to(&c, &format!("{public}/shop/cart"), "WWW.example.com:8080").await,
        (200, "exact".into())
    );
    assert_eq!(
        send_to(&c, &format!("{public}/other"), "www.example.com").await,
        (200, "wild".into())
    );
    assert_eq!(
        send_to(&c, &format!("{public}/"), "shop.example.com").await,
        (200, "wild".into())
    );
    assert_eq!(
        send_to(&c, &format!("{public}/"), "example.com").await,
        (200, "any".into())
    );
    assert_eq!(
        send_to(&c, &format!("{public}/apix"), "other.org").await,
        (200, "any".into())
    );

    // strip_prefix: "/api/v1/users?x=1" reaches the endpoint as "/v1/users?x=1".
    assert_eq!(
        send_to(&c, &format!("{public}/api/v1/users?x=1"), "other.org").await,
        (200, "api".into())
    );
    assert_eq!(api.last_seen().uri, "/v1/users?x=1");
    assert_eq!(
        send_to(&c, &format!("{public}/api"), "other.org").await,
        (200, "api".into())
    );
    assert_eq!(api.last_seen().uri, "/");

    // A route limited to one listener.
    assert_eq!(
        send_to(&c, &format!("{internal}/admin/x"), "a").await,
        (200, "api".into())
    );
    assert_eq!(api.last_seen().uri, "/admin/x");
    assert_eq!(
        send_to(&c, &format!("{public}/admin/x"), "a").await,
        (200, "any".into())
    );
}

/// The four endpoints (`exact`, `wild`, `any`, `api`) and fulcrum over
/// them with [`best_route_config`].
async fn best_route_proxy() -> ([Backend; 4], Proxy) {
    let backends = [
        Backend::spawn("exact").await,
        Backend::spawn("wild").await,
        Backend::spawn("any").await,
        Backend::spawn("api").await,
    ];
    let config = best_route_config(backends.each_ref().map(|b| b.addr));
    let proxy = Proxy::start(&config).await;
    (backends, proxy)
}

/// Two listeners, five routes (a fallback, a stripped path prefix, a
/// wildcard host, an exact host with a path, one listener's own) and the
/// four upstreams they name.
fn best_route_config([exact, wild, any, api]: [std::net::SocketAddr; 4]) -> String {
    format!(
        r#"
[admin]
bind = ""

[[listener]]
name = "public"
bind = "127.0.0.1:0"

[[listener]]
name = "internal"
bind = "127.0.0.1:0"

[[route]]
name = "fallback"
upstream = "any"

[[route]]
name = "api"
path_prefix = "/api/"
strip_prefix = true
upstream = "api"

[[route]]
name = "wild"
host = "*.example.com"
upstream = "wild"

[[route]]
name = "exact"
host = "www.example.com"
path_prefix = "/shop"
upstream = "exact"

[[route]]
name = "internal-only"
listeners = ["internal"]
path_prefix = "/admin"
upstream = "api"

[upstream.exact]
endpoints = [{{ address = "{}" }}]
[upstream.wild]
endpoints = [{{ address = "{}" }}]
[upstream.any]
endpoints = [{{ address = "{}" }}]
[upstream.api]
endpoints = [{{ address = "{}" }}]
"#,
        exact, wild, any, api
    )
}

#[tokio::test]
async fn no_matching_route_is_404_on_that_listener() {
    let b = Backend::spawn("b").await;
    let config = format!(
        "[admin]\nbind = \"\"\n[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\n[[route]]\nhost = \"a.example\"\npath_prefix = \"/p\"\nupstream = \"u\"\n[upstream.u]\nendpoints = [{{ address = \"{}\" }}]\n",
        b.addr
    );
    let proxy = Proxy::start(&config).await;
    let c = client();
    assert_eq!(send_to(&c, &proxy.url("/p/x"), "a.example").await.0, 200);
    assert_eq!(send_to(&c, &proxy.url("/q"), "a.example").await.0, 404);
    assert_eq!(send_to(&c, &proxy.url("/p"), "b.example").await.0, 404);
    assert_eq!(b.hits(), 1);
}

/// A path is routed and forwarded in its normal form (RFC 3986 section
/// 6.2.2): dot segments and escaped unreserved characters cannot carry a
/// request past the route its path names, over HTTP/1.1 or HTTP/2.
#[tokio::test]
async fn dot_segments_and_escapes_are_routed_as_the_endpoint_reads_them() {
    let ([_exact, _wild, any, api], proxy) = best_route_proxy().await;
    let public = format!("http://{}", proxy.listener("public"));
    for c in [client(), h2_client()] {
        for (path, upstream, seen) in [
            // Into a route through another's prefix.
            ("/shop/../api/v1/users?x=1", "api", "/v1/users?x=1"),
            ("/%61pi/v1", "api", "/v1"),
            ("/other/%2e%2E/api/./v2", "api", "/v2"),
            // Out of a route through its own prefix.
            ("/api/../admin/x", "any", "/admin/x"),
            ("/api/.%2e/x?q=/../", "any", "/x?q=/../"),
            ("/../../etc/passwd", "any", "/etc/passwd"),
            // An escaped slash is not a segment boundary: left as sent.
            ("/api%2Fv1", "any", "/api%2Fv1"),
            ("/api/..%2Fx", "api", "/..%2Fx"),
        ] {
            let host = proxy.listener("public").to_string();
            let got = send_to(&c, &format!("{public}{path}"), &host).await;
            assert_eq!(got, (200, upstream.to_owned()), "{path}");
            let endpoint = if upstream == "api" { &api } else { &any };
            assert_eq!(endpoint.last_seen().uri, seen, "{path}");
        }
    }
}

/// The `path` hash key sees the normal form too: every spelling of a path
/// goes to the endpoint the path itself goes to.
#[tokio::test]
async fn the_path_hash_key_sees_the_normal_form() {
    let backends = [
        Backend::spawn("a").await,
        Backend::spawn("b").await,
        Backend::spawn("c").await,
        Backend::spawn("d").await,
    ];
    let addrs = backends.each_ref().map(|b| b.addr);
    let extra = "balance = \"consistent_hash\"\nhash_key = \"path\"";
    let proxy = Proxy::start(&config_for(&addrs, "", extra)).await;
    let c = client();
    let mut endpoints = std::collections::HashSet::new();
    for i in 0..12 {
        let plain = get(&c, &proxy.url(&format!("/p{i}/x"))).await.2;
        for spelling in [format!("/p{i}/./x"), format!("/%70{i}/y/../x")] {
            let got = get(&c, &proxy.url(&spelling)).await.2;
            assert_eq!(got, plain, "{spelling}");
        }
        endpoints.insert(plain);
    }
    // The paths spread over the endpoints: a match is not by chance.
    assert!(endpoints.len() >= 3, "{endpoints:?}");
}
