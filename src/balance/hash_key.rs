//! The request key of the hashing balancers, extracted by borrowing and
//! hashed with XXH3-64 (seed 0), so every process agrees.

use std::net::IpAddr;

use http::request::Parts;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::config::HashKey;

/// The hash of the request's key, or `None` when the request has no key
/// (then the balancer goes round robin).
pub fn hash(key: &HashKey, parts: &Parts, client: IpAddr) -> Option<u64> {
    match key {
        HashKey::Header(name) => parts.headers.get(name).map(|v| hash_bytes(v.as_bytes())),
        HashKey::Cookie(name) => cookie(parts, name).map(hash_bytes),
        HashKey::Query(name) => query(parts.uri.query()?, name).map(hash_bytes),
        HashKey::ClientIp => Some(match client {
            IpAddr::V4(v4) => hash_bytes(&v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => hash_bytes(&v4.octets()),
                None => hash_bytes(&v6.octets()),
            },
        }),
        HashKey::Path => Some(hash_bytes(parts.uri.path().as_bytes())),
    }
}

/// The fixed-seed hash of a key's bytes.
#[inline]
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    xxh3_64_with_seed(bytes, 0)
}

/// The value of cookie `name` in the request's Cookie headers.
fn cookie<'a>(parts: &'a Parts, name: &str) -> Option<&'a [u8]> {
    parts
        .headers
        .get_all(http::header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii_start();
            let (k, v) = split_once(pair, b'=')?;
            (k.trim_ascii() == name.as_bytes()).then(|| v.trim_ascii())
        })
}

/// The raw (not percent-decoded) value of parameter `name` in `query`.
fn query<'a>(query: &'a str, name: &str) -> Option<&'a [u8]> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v.as_bytes())
    })
}

fn split_once(bytes: &[u8], at: u8) -> Option<(&[u8], &[u8])> {
    let i = bytes.iter().position(|&b| b == at)?;
    Some((&bytes[..i], &bytes[i + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::get(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn sources() {
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let p = parts(
            "/a/b?x=1&user=42&y",
            &[
                ("x-user-id", "u1"),
                ("cookie", "a=1; session=abc ; z=9"),
                ("cookie", "other=2"),
            ],
        );
        let h = |k: &HashKey| hash(k, &p, ip);
        assert_eq!(
            h(&HashKey::Header("x-user-id".parse().unwrap())),
            Some(hash_bytes(b"u1"))
        );
        assert_eq!(h(&HashKey::Header("x-missing".parse().unwrap())), None);
        assert_eq!(
            h(&HashKey::Cookie("session".into())),
            Some(hash_bytes(b"abc"))
        );
        assert_eq!(h(&HashKey::Cookie("other".into())), Some(hash_bytes(b"2")));
        assert_eq!(h(&HashKey::Cookie("none".into())), None);
        assert_eq!(h(&HashKey::Query("user".into())), Some(hash_bytes(b"42")));
        assert_eq!(h(&HashKey::Query("y".into())), Some(hash_bytes(b"")));
        assert_eq!(h(&HashKey::Query("nope".into())), None);
        assert_eq!(h(&HashKey::Path), Some(hash_bytes(b"/a/b")));
        assert_eq!(h(&HashKey::ClientIp), Some(hash_bytes(&[192, 0, 2, 7])));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(hash(&HashKey::ClientIp, &p, mapped), h(&HashKey::ClientIp));
    }
}
