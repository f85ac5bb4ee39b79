//! Header rewriting on the way up and down: hop-by-hop removal,
//! X-Forwarded-*, upgrade detection, and `strip_prefix`.

use std::net::IpAddr;

use http::header::{
    CONNECTION, EXPECT, Entry, HeaderMap, HeaderName, HeaderValue, TE, TRAILER, TRANSFER_ENCODING,
    UPGRADE,
};
use http::uri::PathAndQuery;

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Whether the request asks for a protocol upgrade (`Connection: upgrade`
/// and an `Upgrade` header), e.g. WebSocket.
pub fn is_upgrade_request(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE) && connection_has(headers, "upgrade")
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers.get_all(CONNECTION).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// Removes hop-by-hop headers (the fixed list and those named in
/// `Connection`). With `keep_upgrade`, `Upgrade` survives and `Connection:
/// upgrade` is set again, so an upgrade passes through.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // The Connection values, taken out (reference-counted, not copied); the
    // names they list are removed by &str, without building HeaderNames.
    let mut listed: [Option<HeaderValue>; 4] = Default::default();
    let mut more = Vec::new();
    if let Entry::Occupied(entry) = headers.entry(CONNECTION) {
        for (i, value) in entry.remove_entry_mult().1.enumerate() {
            match listed.get_mut(i) {
                Some(slot) => *slot = Some(value),
                None => more.push(value),
            }
        }
    }
    for value in listed.iter().flatten().chain(&more) {
        let Ok(tokens) = value.to_str() else { continue };
        for token in tokens.split(',').map(str::trim) {
            let kept = token.is_empty() || (keep_upgrade && token.eq_ignore_ascii_case("upgrade"));
            if !kept {
                headers.remove(token);
            }
        }
    }
    // One pass over the names present instead of a lookup per listed name:
    // most messages carry none of these.
    let mut present = [false; 5];
    for name in headers.keys() {
        let slot = if *name == KEEP_ALIVE {
            0
        } else if *name == PROXY_CONNECTION {
            1
        } else if name == TRAILER {
            2
        } else if name == TRANSFER_ENCODING {
            3
        } else if name == UPGRADE {
            4
        } else {
            continue;
        };
        present[slot] = true;
    }
    for (i, name) in [&KEEP_ALIVE, &PROXY_CONNECTION, &TRAILER, &TRANSFER_ENCODING]
        .into_iter()
        .enumerate()
    {
        if present[i] {
            headers.remove(name);
        }
    }
    if keep_upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    } else if present[4] {
        headers.remove(UPGRADE);
    }
}

/// The client's IP as an `X-Forwarded-For` element, formatted once per
/// connection (a clone per request is a reference count, not a format).
pub fn client_ip_value(ip: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&ip.to_string()).expect("an IP address is a valid header value")
}

/// Prepares request headers for the upstream: hop-by-hop removed (`TE:
/// trailers` kept, as gRPC over HTTP/2 needs it), `Expect` answered here,
/// X-Forwarded-* set.
pub fn rewrite_request(
    headers: &mut HeaderMap,
    client_ip: &HeaderValue,
    https: bool,
    host: Option<&HeaderValue>,
    upgrade: bool,
) {
    let te_trailers = headers
        .get(TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    strip_hop_by_hop(headers, upgrade);
    if !te_trailers {
        headers.remove(TE);
    }
    // hyper answers `Expect: 100-continue` itself when the body is first read.
    headers.remove(EXPECT);

    let ip = client_ip.as_bytes();
    let forwarded_for = {
        let mut prior = headers.get_all(&X_FORWARDED_FOR).iter().peekable();
        if prior.peek().is_none() {
            Ok(client_ip.clone())
        } else {
            let mut joined = Vec::new();
            for v in prior {
                joined.extend_from_slice(v.as_bytes());
                joined.extend_from_slice(b", ");
            }
            joined.extend_from_slice(ip);
            HeaderValue::from_bytes(&joined)
        }
    };
    if let Ok(value) = forwarded_for {
        headers.insert(&X_FORWARDED_FOR, value);
    }
    headers.insert(
        &X_FORWARDED_PROTO,
        HeaderValue::from_static(if https { "https" } else { "http" }),
    );
    match host {
        Some(host) => {
            headers.insert(&X_FORWARDED_HOST, host.clone());
        }
        None => {
            headers.remove(&X_FORWARDED_HOST);
        }
    }
}

/// The path and query to send upstream: unchanged, or with the route's
/// prefix removed ("/api/x?q" with prefix "/api" becomes "/x?q"; "/api" becomes "/").
pub fn forward_path(original: &PathAndQuery, prefix: &str, strip: bool) -> PathAndQuery {
    if !strip || prefix == "/" {
        return original.clone();
    }
    let rest = original
        .path()
        .strip_prefix(prefix)
        .unwrap_or(original.path());
    let path = if rest.is_empty() { "/" } else { rest };
    let rebuilt = match original.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    rebuilt.parse().unwrap_or_else(|_| original.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("transfer-encoding", "chunked"),
            ("te", "gzip"),
            ("proxy-connection", "keep-alive"),
            ("upgrade", "h2c"),
            ("trailer", "x"),
            ("x-keep", "yes"),
        ]);
        rewrite_request(
            &mut h,
            &client_ip_value("10.0.0.1".parse().unwrap()),
            false,
            None,
            false,
        );
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert!(names.contains(&"x-keep"));
        for gone in [
            "connection",
            "keep-alive",
            "x-secret",
            "transfer-encoding",
            "te",
            "proxy-connection",
            "upgrade",
            "trailer",
        ] {
            assert!(!names.contains(&gone), "{gone} kept");
        }
    }

    #[test]
    fn forwarded_headers() {
        let mut h = map(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil"),
            ("te", "trailers"),
        ]);
        let host = HeaderValue::from_static("a.example:8080");
        rewrite_request(
            &mut h,
            &client_ip_value("10.0.0.1".parse().unwrap()),
            false,
            Some(&host),
            false,
        );
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 10.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "a.example:8080");
        assert_eq!(h["te"], "trailers");
    }

    #[test]
    fn upgrade_survives() {
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert!(is_upgrade_request(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
    }

    #[test]
    fn strip_prefix_paths() {
        let pq = |s: &str| s.parse::<PathAndQuery>().unwrap();
        assert_eq!(forward_path(&pq("/api/x?q=1"), "/api", true), pq("/x?q=1"));
        assert_eq!(forward_path(&pq("/api"), "/api", true), pq("/"));
        assert_eq!(forward_path(&pq("/api?q"), "/api", true), pq("/?q"));
        assert_eq!(forward_path(&pq("/api/x"), "/api", false), pq("/api/x"));
    }
}
