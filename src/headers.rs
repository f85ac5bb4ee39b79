//! Header rewriting on the way up and down: hop-by-hop removal,
//! X-Forwarded-*, upgrade detection, and `strip_prefix`.

use std::net::IpAddr;

use http::header::{
    CONNECTION, CONTENT_LENGTH, COOKIE, EXPECT, Entry, HOST, HeaderMap, HeaderName, HeaderValue,
    TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
};
use http::uri::PathAndQuery;

use crate::http1::fields::{has_token, is_connection_option, is_protected, tokens};

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Whether the request asks for a protocol upgrade (`Connection: upgrade`
/// and an `Upgrade` header), e.g. WebSocket, that is passed through.
///
/// Not one that names `h2c`: the endpoint would take the connection over
/// as HTTP/2, and every request the client sent on it after would reach
/// that endpoint unrouted and unchecked ("h2c smuggling"). RFC 9113
/// section 3.1 deprecates the mechanism; such a request goes up as a plain
/// one, its `Upgrade` removed.
pub fn is_upgrade_request(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE) && connection_has(headers, "upgrade") && !names_h2c(headers)
}

/// Whether an `Upgrade` element is `h2c` (any case, any `/version`).
fn names_h2c(headers: &HeaderMap) -> bool {
    headers.get_all(UPGRADE).iter().any(|v| {
        tokens(v.as_bytes()).any(|element| {
            let name = element.split(|&b| b == b'/').next().unwrap_or(element);
            name.trim_ascii().eq_ignore_ascii_case(b"h2c")
        })
    })
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(CONNECTION)
        .iter()
        .any(|v| has_token(v.as_bytes(), token.as_bytes()))
}

/// Removes hop-by-hop headers (the fixed list and those named in
/// `Connection`, which never removes the framing fields or `Host`:
/// `http1::fields::is_protected`). With `keep_upgrade`, `Upgrade` survives and `Connection:
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
        for token in tokens(value.as_bytes()) {
            let kept =
                is_protected(token) || (keep_upgrade && token.eq_ignore_ascii_case(b"upgrade"));
            if !kept && let Ok(token) = std::str::from_utf8(token) {
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

/// The client's IP as an `X-Forwarded-For` element: formatted once per
/// connection and kept inline, so a connection allocates nothing for it
/// (a `HeaderValue` was an allocation, a validation and a free per
/// connection) and a request copies 40 bytes.
#[derive(Clone, Copy)]
pub struct ClientIp {
    len: u8,
    /// The longest IPv6 text is 39 bytes; IPv4 text is 15 at most.
    text: [u8; 39],
}

impl ClientIp {
    pub fn new(ip: IpAddr) -> Self {
        let mut text = [0u8; 39];
        let IpAddr::V4(v4) = ip else {
            let mut cursor = std::io::Cursor::new(&mut text[..]);
            std::io::Write::write_fmt(&mut cursor, format_args!("{ip}"))
                .expect("an IPv6 address is 39 bytes at most");
            let len = cursor.position() as u8;
            return Self { len, text };
        };
        // By hand, as `Display` would write it (the test
        // `client_ip_is_formatted_as_display_formats_it` holds the two
        // equal): a connection per request formats one.
        let mut len = 0;
        for (i, octet) in v4.octets().into_iter().enumerate() {
            if i > 0 {
                text[len] = b'.';
                len += 1;
            }
            if octet >= 100 {
                text[len] = b'0' + octet / 100;
                len += 1;
            }
            if octet >= 10 {
                text[len] = b'0' + octet / 10 % 10;
                len += 1;
            }
            text[len] = b'0' + octet % 10;
            len += 1;
        }
        Self {
            len: len as u8,
            text,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.text[..usize::from(self.len)]
    }

    /// As a header value, for a rewrite of a header map.
    pub fn to_value(self) -> HeaderValue {
        HeaderValue::from_bytes(self.as_bytes()).expect("digits, dots and colons are a valid value")
    }
}

impl std::fmt::Debug for ClientIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.as_bytes()))
    }
}

/// Joins an HTTP/2 request's Cookie fields into one, separated by `; `, as
/// RFC 9113 section 8.2.3 requires before the request leaves HTTP/2 (an
/// HTTP/2 client may split its cookies into fields; HTTP/1.1 allows one).
pub fn join_cookies(headers: &mut HeaderMap) {
    let Entry::Occupied(mut entry) = headers.entry(COOKIE) else {
        return;
    };
    if entry.iter().nth(1).is_none() {
        return;
    }
    let mut joined = Vec::new();
    for (i, value) in entry.iter().enumerate() {
        if i > 0 {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(value.as_bytes());
    }
    // The parts were valid values and `; ` is too.
    if let Ok(joined) = HeaderValue::from_bytes(&joined) {
        entry.insert(joined);
    }
}

/// Prepares request headers for the upstream: hop-by-hop removed (`TE:
/// trailers` kept, as gRPC over HTTP/2 needs it), `Expect` answered here,
/// X-Forwarded-* set.
pub fn rewrite_request(
    headers: &mut HeaderMap,
    client_ip: &ClientIp,
    https: bool,
    host: Option<&HeaderValue>,
    upgrade: bool,
) {
    // TE is hop-by-hop; fulcrum says `trailers` to the endpoint when the
    // client did (in any TE element), and nothing else.
    let te_trailers = headers
        .get_all(TE)
        .iter()
        .any(|v| has_token(v.as_bytes(), b"trailers"));
    strip_hop_by_hop(headers, upgrade);
    headers.remove(TE);
    if te_trailers {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
    // hyper answers `Expect: 100-continue` itself when the body is first read.
    headers.remove(EXPECT);

    let ip = client_ip.as_bytes();
    let forwarded_for = {
        let mut prior = headers.get_all(&X_FORWARDED_FOR).iter().peekable();
        if prior.peek().is_none() {
            Ok(client_ip.to_value())
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

/// What fulcrum does to a request's fields on the way to an endpoint:
/// hop-by-hop fields removed, X-Forwarded-* set, Host supplied when the
/// client named the site only in the target (HTTP/2's `:authority`).
#[derive(Debug, Clone, Copy)]
pub struct Forwarding<'a> {
    pub client_ip: &'a ClientIp,
    pub https: bool,
    /// The Host the client sent.
    pub host: Option<&'a HeaderValue>,
    /// A protocol upgrade passes through.
    pub upgrade: bool,
}

impl Forwarding<'_> {
    /// Rewrites `headers` in place (for an HTTP/2 endpoint). The framing
    /// is the encoder's to write (hyper's, from the body's length): no
    /// `Content-Length` is copied.
    pub fn apply(&self, headers: &mut HeaderMap) {
        rewrite_request(headers, self.client_ip, self.https, self.host, self.upgrade);
        headers.remove(CONTENT_LENGTH);
        if let Some(host) = self.host
            && !headers.contains_key(HOST)
        {
            headers.insert(HOST, host.clone());
        }
    }

    /// Writes `headers` as HTTP/1.1 field lines into `out`, rewritten as
    /// [`Forwarding::apply`] would, without changing the map: one pass over
    /// the fields, no lookup by name, no insertion. A `Connection` field
    /// naming other fields (rare) takes the way of `apply` on a copy.
    ///
    /// No framing field is written: `Content-Length` or
    /// `Transfer-Encoding` are the encoder's, from the parsed framing
    /// (`upstream::h1`). A request without a Host (HTTP/1.0) gets
    /// `endpoint`, the endpoint's authority, as nginx sends it. Says
    /// whether the client declared a Content-Length (read in the same pass,
    /// for the encoder's `content-length: 0` on a request without body).
    pub fn write(&self, headers: &HeaderMap, out: &mut Vec<u8>, endpoint: &str) -> bool {
        let start = out.len();
        let (mut forwarded_for, mut host, mut length, mut te) = (false, false, false, false);
        for (name, value) in headers {
            // One match on the name (lower case, as HeaderName keeps it)
            // rather than a comparison per name of interest.
            let keep = match name.as_str() {
                "host" => {
                    host = true;
                    true
                }
                "connection" => {
                    if !tokens(value.as_bytes()).all(is_connection_option) {
                        out.truncate(start);
                        let mut copy = headers.clone();
                        self.apply(&mut copy);
                        write_lines(out, &copy);
                        if !copy.contains_key(HOST) {
                            write_line(out, b"host", endpoint.as_bytes());
                        }
                        return headers.contains_key(CONTENT_LENGTH);
                    }
                    false
                }
                "te" => {
                    // Once, as `trailers`, if any element says it.
                    if !te && has_token(value.as_bytes(), b"trailers") {
                        te = true;
                        write_line(out, b"te", b"trailers");
                    }
                    false
                }
                "upgrade" => self.upgrade,
                "x-forwarded-for" => {
                    forwarded_for = true;
                    false
                }
                "content-length" => {
                    length = true;
                    false
                }
                "expect" | "trailer" | "transfer-encoding" | "x-forwarded-proto"
                | "x-forwarded-host" | "keep-alive" | "proxy-connection" => false,
                _ => true,
            };
            if keep {
                write_line(out, name.as_str().as_bytes(), value.as_bytes());
            }
        }
        out.extend_from_slice(b"x-forwarded-for: ");
        if forwarded_for {
            for prior in headers.get_all(&X_FORWARDED_FOR) {
                out.extend_from_slice(prior.as_bytes());
                out.extend_from_slice(b", ");
            }
        }
        out.extend_from_slice(self.client_ip.as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(if self.https {
            b"x-forwarded-proto: https\r\n"
        } else {
            b"x-forwarded-proto: http\r\n"
        });
        match self.host {
            Some(value) => {
                write_line(out, b"x-forwarded-host", value.as_bytes());
                if !host {
                    write_line(out, b"host", value.as_bytes());
                }
            }
            None if !host => write_line(out, b"host", endpoint.as_bytes()),
            None => {}
        }
        if self.upgrade {
            out.extend_from_slice(b"connection: upgrade\r\n");
        }
        length
    }
}

/// Writes every field of `headers` as an HTTP/1.1 field line.
pub fn write_lines(out: &mut Vec<u8>, headers: &HeaderMap) {
    for (name, value) in headers {
        write_line(out, name.as_str().as_bytes(), value.as_bytes());
    }
}

pub fn write_line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
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

    /// Every hop-by-hop kind, a field named by Connection, and one to keep.
    const HOP_BY_HOP: &[(&str, &str)] = &[
        ("connection", "keep-alive, x-secret"),
        ("keep-alive", "timeout=5"),
        ("x-secret", "1"),
        ("transfer-encoding", "chunked"),
        ("te", "gzip"),
        ("proxy-connection", "keep-alive"),
        ("upgrade", "h2c"),
        ("trailer", "x"),
        ("expect", "100-continue"),
        ("x-keep", "yes"),
    ];

    #[test]
    fn client_ip_is_formatted_as_display_formats_it() {
        let mut ips: Vec<IpAddr> = Vec::new();
        for a in [0u8, 1, 9, 10, 99, 100, 199, 200, 255] {
            for b in [0u8, 7, 42, 250] {
                ips.push(IpAddr::from([a, b, 255 - a, a / 3]));
            }
        }
        ips.push("::1".parse().unwrap());
        ips.push("2001:db8::7:1".parse().unwrap());
        ips.push("::ffff:10.1.2.3".parse().unwrap());
        ips.push("1234:5678:9abc:def0:1234:5678:9abc:def0".parse().unwrap());
        for ip in ips {
            let text = ClientIp::new(ip);
            assert_eq!(text.as_bytes(), ip.to_string().as_bytes(), "{ip}");
            assert_eq!(format!("{text:?}"), ip.to_string());
        }
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = map(HOP_BY_HOP);
        rewrite_request(
            &mut h,
            &ClientIp::new("10.0.0.1".parse().unwrap()),
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
            "expect",
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
            &ClientIp::new("10.0.0.1".parse().unwrap()),
            false,
            Some(&host),
            false,
        );
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 10.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "a.example:8080");
        assert_eq!(h["te"], "trailers");
    }

    /// The field lines `write` produces, parsed back.
    fn written(f: &Forwarding<'_>, h: &HeaderMap) -> Vec<(String, String)> {
        let mut out = Vec::new();
        f.write(h, &mut out, "endpoint:80");
        let text = String::from_utf8(out).unwrap();
        let mut lines: Vec<(String, String)> = text
            .split_terminator("\r\n")
            .map(|l| {
                let (k, v) = l.split_once(": ").unwrap();
                (k.to_owned(), v.to_owned())
            })
            .collect();
        lines.sort();
        lines
    }

    fn applied(f: &Forwarding<'_>, h: &HeaderMap) -> Vec<(String, String)> {
        let mut h = h.clone();
        f.apply(&mut h);
        if !h.contains_key(HOST) {
            h.insert(HOST, HeaderValue::from_static("endpoint:80"));
        }
        let mut lines: Vec<(String, String)> = h
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap().to_owned()))
            .collect();
        lines.sort();
        lines
    }

    #[test]
    fn writing_the_fields_equals_rewriting_the_map() {
        let ip = ClientIp::new("10.0.0.1".parse().unwrap());
        let host = HeaderValue::from_static("a.example:8080");
        let cases: &[&[(&str, &str)]] = &[
            &[("host", "a.example:8080")],
            &[],
            &[
                ("host", "a.example"),
                ("x-forwarded-for", "1.1.1.1"),
                ("x-forwarded-for", "2.2.2.2, 3.3.3.3"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "evil"),
                ("te", "trailers"),
                ("accept", "*/*"),
                ("cookie", "a=1"),
                ("cookie", "b=2"),
            ],
            HOP_BY_HOP,
            &[
                ("host", "a.example"),
                ("connection", "Upgrade"),
                ("upgrade", "websocket"),
            ],
            &[("connection", "close"), ("content-length", "5")],
            // Found by fuzzing: two TE fields, `trailers` in the second;
            // and the TE connection option a sender of TE must send.
            &[("te", "gzip"), ("te", "trailers"), ("connection", "TE")],
            &[("te", "gzip, trailers")],
            // Connection naming the framing or Host removes neither; the
            // framing is the encoder's, never a copied field.
            &[
                ("host", "a.example"),
                ("connection", "content-length, host, transfer-encoding, x-a"),
                ("content-length", "5"),
                ("x-a", "1"),
            ],
        ];
        for case in cases {
            let h = map(case);
            for https in [false, true] {
                for host in [None, Some(&host)] {
                    let f = Forwarding {
                        client_ip: &ip,
                        https,
                        host,
                        upgrade: is_upgrade_request(&h),
                    };
                    assert_eq!(written(&f, &h), applied(&f, &h), "{case:?}");
                }
            }
        }
    }

    #[test]
    fn connection_never_removes_framing_or_host() {
        let mut h = map(&[
            ("host", "a.example"),
            ("connection", "Content-Length, Host, X-A"),
            ("content-length", "5"),
            ("x-a", "1"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h["content-length"], "5");
        assert_eq!(h["host"], "a.example");
        assert!(!h.contains_key("x-a"));
        let ip = ClientIp::new("10.0.0.1".parse().unwrap());
        let f = Forwarding {
            client_ip: &ip,
            https: false,
            host: None,
            upgrade: false,
        };
        let lines = written(
            &f,
            &map(&[("content-length", "5"), ("connection", "content-length")]),
        );
        assert!(
            lines.iter().all(|(k, _)| k != "content-length"),
            "{lines:?}"
        );
        assert!(lines.contains(&("host".to_owned(), "endpoint:80".to_owned())));
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
