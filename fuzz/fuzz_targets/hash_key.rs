//! Key extraction never panics on any request, for every key source.
#![no_main]

use fulcrum::balance::hash_key::hash;
use fulcrum::config::HashKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: (&[u8], &[u8], &[u8], &str)| {
    let (target, cookie, header, name) = data;
    let mut builder = http::Request::builder();
    if let Ok(uri) = http::Uri::try_from(target) {
        builder = builder.uri(uri);
    }
    if let Ok(v) = http::HeaderValue::from_bytes(cookie) {
        builder = builder.header(http::header::COOKIE, v);
    }
    if let Ok(v) = http::HeaderValue::from_bytes(header) {
        builder = builder.header("x-key", v);
    }
    let Ok(request) = builder.body(()) else { return };
    let (parts, ()) = request.into_parts();
    let client = std::net::IpAddr::from([192, 0, 2, 1]);
    let mut keys = vec![HashKey::ClientIp, HashKey::Path, HashKey::Cookie(name.into()), HashKey::Query(name.into())];
    if let Ok(n) = http::HeaderName::from_bytes(name.as_bytes()) {
        keys.push(HashKey::Header(n));
    }
    for key in keys {
        let _ = hash(&key, &parts, client);
    }
});
