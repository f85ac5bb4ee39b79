//! Header rewriting never panics, always removes hop-by-hop headers, and
//! `strip_prefix` always yields a path starting with '/'.
#![no_main]

use fulcrum::headers::{
    ClientIp, forward_path, is_upgrade_request, rewrite_request, strip_hop_by_hop,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: (Vec<(&[u8], &[u8])>, &str, &str, bool)| {
    let (pairs, path, prefix, https) = data;
    let mut headers = http::HeaderMap::new();
    for (name, value) in pairs {
        if let (Ok(n), Ok(v)) = (http::HeaderName::from_bytes(name), http::HeaderValue::from_bytes(value)) {
            headers.append(n, v);
        }
    }
    let upgrade = is_upgrade_request(&headers);
    let mut up = headers.clone();
    rewrite_request(
        &mut up,
        &ClientIp::new(std::net::IpAddr::from([10, 0, 0, 1])),
        https,
        None,
        upgrade,
    );
    for gone in ["keep-alive", "proxy-connection", "transfer-encoding", "trailer"] {
        assert!(!up.contains_key(gone), "{gone} kept");
    }
    let mut down = headers;
    strip_hop_by_hop(&mut down, false);
    assert!(!down.contains_key(http::header::CONNECTION));
    // An origin-form path keeps a leading '/' after strip_prefix (asterisk
    // form, "OPTIONS *", is forwarded as it is).
    if let Ok(pq) = path.parse::<http::uri::PathAndQuery>()
        && prefix.starts_with('/')
        && pq.path().starts_with('/')
    {
        let out = forward_path(&pq, prefix, true);
        assert!(out.path().starts_with('/'), "{pq} - {prefix} = {out}");
    }
});
