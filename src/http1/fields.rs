//! What the fields of an HTTP/1.1 message say about its framing and its
//! connection (RFC 9112 sections 6 and 9.6, RFC 9110 section 7.6.1).
//!
//! A request that breaks one of these rules is refused with the status of
//! [`Refusal::status`]; a response that breaks one is an invalid response
//! (502). No caller reads these fields any other way.

use http::StatusCode;

/// Why a message's framing or fields are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("invalid Content-Length")]
    BadLength,
    #[error("Content-Length values differ")]
    DifferingLengths,
    #[error("both Content-Length and Transfer-Encoding")]
    LengthAndCodings,
    #[error("Transfer-Encoding does not end in one chunked")]
    BadCodings,
    #[error("Transfer-Encoding in an HTTP/1.0 message")]
    CodingsInHttp10,
    #[error("a transfer coding other than chunked")]
    UnsupportedCoding,
    #[error("invalid chunked framing")]
    BadChunk,
    #[error("malformed message head")]
    BadHead,
    #[error("message head too large")]
    HeadTooLarge,
}

impl Refusal {
    /// The status a client's request gets for it.
    pub fn status(self) -> StatusCode {
        match self {
            Refusal::UnsupportedCoding => StatusCode::NOT_IMPLEMENTED,
            Refusal::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Refusal::BadLength
            | Refusal::DifferingLengths
            | Refusal::LengthAndCodings
            | Refusal::BadCodings
            | Refusal::CodingsInHttp10
            | Refusal::BadChunk
            | Refusal::BadHead => StatusCode::BAD_REQUEST,
        }
    }
}

/// The elements of a comma-separated field value (RFC 9110 section 5.6.1),
/// whitespace around each trimmed, empty ones skipped.
pub fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// Whether a comma-separated field value holds `token` (any case).
pub fn has_token(value: &[u8], token: &[u8]) -> bool {
    tokens(value).any(|t| t.eq_ignore_ascii_case(token))
}

/// Whether the last element of a comma-separated field value is `token`
/// (any case): how `chunked` must end a Transfer-Encoding.
pub fn last_token_is(value: &[u8], token: &[u8]) -> bool {
    value
        .rsplit(|&b| b == b',')
        .next()
        .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// The hop-by-hop fields (RFC 9110 section 7.6.1, and `Keep-Alive` and
/// `Proxy-Connection` as deployed): never forwarded, either way; names in
/// lower case as `HeaderName` keeps them.
pub const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Whether `name` (lower case) is a hop-by-hop field.
pub fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.contains(&name)
}

/// Whether a `Connection` token is one of the connection's own options
/// rather than the name of a field to remove (`te`: the option a sender of
/// TE must send, RFC 9110 section 10.1.4; TE's own rule decides it).
pub fn is_connection_option(token: &[u8]) -> bool {
    [&b"close"[..], b"keep-alive", b"upgrade", b"te"]
        .iter()
        .any(|o| token.eq_ignore_ascii_case(o))
}

/// Fields a `Connection` token can never remove: the framing, which the
/// encoder writes from the parsed framing, and the `Host`, which routing
/// read.
pub fn is_protected(name: &[u8]) -> bool {
    [&b"content-length"[..], b"transfer-encoding", b"host"]
        .iter()
        .any(|p| name.eq_ignore_ascii_case(p))
}

/// Whether a field named `name` may be forwarded in a trailer section:
/// not framing, routing or a hop-by-hop field (RFC 9110 section 6.5.1).
pub fn allowed_in_trailers(name: &str) -> bool {
    !(is_protected(name.as_bytes())
        || is_hop_by_hop(name)
        || matches!(
            name,
            "expect" | "content-encoding" | "content-type" | "content-range"
        ))
}

/// The Content-Length of a message, read from each of its
/// `Content-Length` fields in turn: digits only; repeated fields, or a list
/// in one field, must all hold the same value, which they then stand for.
#[derive(Debug, Default, Clone, Copy)]
pub struct Lengths {
    value: Option<u64>,
    /// Written other than as one field holding one value.
    repeated: bool,
}

impl Lengths {
    /// Reads one `Content-Length` field value.
    pub fn add(&mut self, value: &[u8]) -> Result<(), Refusal> {
        for item in value.split(|&b| b == b',') {
            let n = digits(item.trim_ascii()).ok_or(Refusal::BadLength)?;
            if self.value.is_some_and(|prior| prior != n) {
                return Err(Refusal::DifferingLengths);
            }
            self.repeated |= self.value.is_some();
            self.value = Some(n);
        }
        Ok(())
    }

    /// The length, if any field declared one.
    pub fn get(&self) -> Option<u64> {
        self.value
    }

    /// Declared more than once (equal values): to be written again as one.
    pub fn repeated(&self) -> bool {
        self.repeated
    }
}

/// A decimal length: 1 to 19 digits, nothing else (no sign, no space).
fn digits(item: &[u8]) -> Option<u64> {
    if item.is_empty() || item.len() > 19 || !item.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(item.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')))
}

/// The transfer codings of a message, read from each of its
/// `Transfer-Encoding` fields in turn. fulcrum decodes `chunked` only:
/// it must come once, last.
#[derive(Debug, Default, Clone, Copy)]
pub struct Codings {
    present: bool,
    chunked: u32,
    chunked_last: bool,
    other: bool,
}

impl Codings {
    /// Reads one `Transfer-Encoding` field value.
    pub fn add(&mut self, value: &[u8]) {
        self.present = true;
        for coding in tokens(value) {
            // chunked takes no parameters: `chunked;q=1` is another coding
            // (hyper reads it so too).
            if coding.eq_ignore_ascii_case(b"chunked") {
                self.chunked += 1;
                self.chunked_last = true;
            } else {
                self.other = true;
                self.chunked_last = false;
            }
        }
    }

    /// Whether any `Transfer-Encoding` field was read.
    pub fn present(&self) -> bool {
        self.present
    }

    /// Whether the body is chunked: `Ok(false)` without the field; refused
    /// when chunked is not last or comes twice (400), or another coding
    /// comes with it (501, RFC 9112 section 6.1).
    pub fn chunked(&self) -> Result<bool, Refusal> {
        if !self.present {
            return Ok(false);
        }
        if self.chunked != 1 || !self.chunked_last {
            return Err(Refusal::BadCodings);
        }
        if self.other {
            return Err(Refusal::UnsupportedCoding);
        }
        Ok(true)
    }
}

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    Length(u64),
    Chunked,
}

/// The framing a request's fields declare (RFC 9112 section 6.3, for a
/// request): `fields` are its (name, value) pairs as received. A list in
/// one Content-Length field is refused (RFC 9110 section 8.6 lets a
/// recipient refuse it, and hyper, which reads the body, does); equal
/// repeated fields stand for one.
pub fn request_framing<'a>(
    http10: bool,
    fields: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
) -> Result<Framing, Refusal> {
    let (mut lengths, mut codings) = (Lengths::default(), Codings::default());
    let mut length_field = false;
    for (name, value) in fields {
        if name.eq_ignore_ascii_case(b"content-length") {
            length_field = true;
            if value.contains(&b',') {
                return Err(Refusal::BadLength);
            }
            lengths.add(value)?;
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            codings.add(value);
        }
    }
    if codings.present() {
        if http10 {
            return Err(Refusal::CodingsInHttp10);
        }
        if length_field {
            return Err(Refusal::LengthAndCodings);
        }
        codings.chunked()?;
        return Ok(Framing::Chunked);
    }
    Ok(match lengths.get() {
        None | Some(0) => Framing::None,
        Some(n) => Framing::Length(n),
    })
}

/// Whether a `Host` value is a uri-host with an optional port (RFC 9110
/// section 7.2, RFC 3986 section 3.2.2): a registered name, an IPv4
/// address or a bracketed IP literal, then `:` and digits. A comma (a list
/// of hosts) is refused though RFC 3986 admits it in a name.
pub fn valid_host(value: &[u8]) -> bool {
    if value.first() == Some(&b'[') {
        return valid_ip_literal(value);
    }
    let (name, port) = match memchr::memchr(b':', value) {
        Some(at) => (&value[..at], Some(&value[at + 1..])),
        None => (value, None),
    };
    !name.is_empty()
        && name.iter().all(|&b| REG_NAME[usize::from(b)])
        && port.is_none_or(valid_port)
}

/// `[` IP-literal `]` with an optional port.
fn valid_ip_literal(value: &[u8]) -> bool {
    let Some(close) = value.iter().position(|&b| b == b']') else {
        return false;
    };
    let literal = &value[1..close];
    let ok = !literal.is_empty()
        && literal
            .iter()
            .all(|&b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.' | b'v' | b'V'));
    ok && match value[close + 1..].split_first() {
        None => true,
        Some((b':', port)) => valid_port(port),
        Some(_) => false,
    }
}

fn valid_port(digits: &[u8]) -> bool {
    digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit)
}

/// The bytes of a registered name (RFC 3986 section 3.2.2: unreserved,
/// pct-encoded and sub-delims but `,`), as a table: one load per byte on
/// every request's Host.
static REG_NAME: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'%'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b';'
                    | b'='
            );
        b += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;

    fn length(values: &[&str]) -> Result<Option<u64>, Refusal> {
        let mut l = Lengths::default();
        for v in values {
            l.add(v.as_bytes())?;
        }
        Ok(l.get())
    }

    #[test]
    fn content_length_is_digits_and_agreeing_copies() {
        assert_eq!(length(&["5"]), Ok(Some(5)));
        assert_eq!(length(&["5", "5"]), Ok(Some(5)));
        assert_eq!(length(&["5, 5"]), Ok(Some(5)));
        assert_eq!(length(&[" 0 "]), Ok(Some(0)));
        assert_eq!(length(&["5", "6"]), Err(Refusal::DifferingLengths));
        assert_eq!(length(&["5, 6"]), Err(Refusal::DifferingLengths));
        for bad in [
            "+5",
            "-5",
            "5 5",
            "0x5",
            "",
            "5,",
            ",5",
            "5;",
            "1e3",
            "99999999999999999999",
        ] {
            assert_eq!(length(&[bad]), Err(Refusal::BadLength), "{bad:?}");
        }
        let mut l = Lengths::default();
        l.add(b"7").unwrap();
        assert!(!l.repeated());
        l.add(b"7").unwrap();
        assert!(l.repeated());
        let mut l = Lengths::default();
        l.add(b"7, 7").unwrap();
        assert!(l.repeated());
    }

    fn codings(values: &[&str]) -> Result<bool, Refusal> {
        let mut c = Codings::default();
        for v in values {
            c.add(v.as_bytes());
        }
        c.chunked()
    }

    #[test]
    fn chunked_once_and_last_is_the_only_coding() {
        assert_eq!(codings(&[]), Ok(false));
        assert_eq!(codings(&["chunked"]), Ok(true));
        assert_eq!(codings(&["Chunked"]), Ok(true));
        assert_eq!(codings(&["gzip, chunked"]), Err(Refusal::UnsupportedCoding));
        assert_eq!(
            codings(&["gzip", "chunked"]),
            Err(Refusal::UnsupportedCoding)
        );
        assert_eq!(codings(&["chunked, chunked"]), Err(Refusal::BadCodings));
        assert_eq!(codings(&["chunked", "chunked"]), Err(Refusal::BadCodings));
        assert_eq!(codings(&["chunked, gzip"]), Err(Refusal::BadCodings));
        assert_eq!(codings(&["gzip"]), Err(Refusal::BadCodings));
        assert_eq!(codings(&[""]), Err(Refusal::BadCodings));
        assert_eq!(codings(&["xchunked"]), Err(Refusal::BadCodings));
        assert_eq!(codings(&["chunked;q=1"]), Err(Refusal::BadCodings));
    }

    fn framing(http10: bool, fields: &[(&str, &str)]) -> Result<Framing, Refusal> {
        request_framing(
            http10,
            fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())),
        )
    }

    #[test]
    fn request_framing_follows_rfc_9112() {
        assert_eq!(framing(false, &[]), Ok(Framing::None));
        assert_eq!(
            framing(false, &[("Content-Length", "0")]),
            Ok(Framing::None)
        );
        assert_eq!(
            framing(false, &[("content-length", "3")]),
            Ok(Framing::Length(3))
        );
        assert_eq!(
            framing(false, &[("Transfer-Encoding", "chunked")]),
            Ok(Framing::Chunked)
        );
        assert_eq!(
            framing(
                false,
                &[("Content-Length", "3"), ("Transfer-Encoding", "chunked")]
            ),
            Err(Refusal::LengthAndCodings)
        );
        assert_eq!(
            framing(
                false,
                &[("Transfer-Encoding", "chunked"), ("Content-Length", "3")]
            ),
            Err(Refusal::LengthAndCodings)
        );
        assert_eq!(
            framing(true, &[("Transfer-Encoding", "chunked")]),
            Err(Refusal::CodingsInHttp10)
        );
        assert_eq!(
            framing(false, &[("Transfer-Encoding", "gzip, chunked")]),
            Err(Refusal::UnsupportedCoding)
        );
        assert_eq!(
            framing(false, &[("Content-Length", "5, 5")]),
            Err(Refusal::BadLength)
        );
        assert_eq!(
            framing(false, &[("Content-Length", "5"), ("content-length", "5")]),
            Ok(Framing::Length(5))
        );
        assert_eq!(Refusal::UnsupportedCoding.status(), 501);
        assert_eq!(Refusal::LengthAndCodings.status(), 400);
    }

    #[test]
    fn hosts() {
        for good in [
            "a.example",
            "a.example:8080",
            "127.0.0.1",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:8080",
            "xn--bcher-kva.example",
            "a.example:",
        ] {
            assert!(valid_host(good.as_bytes()), "{good}");
        }
        for bad in [
            "",
            "a example",
            "a/b",
            "user@a.example",
            "a.example,b.example",
            "a.example:http",
            "a.example:80:80",
            "[::1",
            "[]",
            ":80",
            "a.example:123456",
        ] {
            assert!(!valid_host(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn the_reg_name_table_decides_as_the_grammar_reads() {
        // RFC 3986: unreserved / pct-encoded / sub-delims, less ",".
        let by_grammar = |c: u8| {
            c.is_ascii_alphanumeric()
                || b"-._~".contains(&c)
                || c == b'%'
                || (b"!$&'()*+,;=".contains(&c) && c != b',')
        };
        for b in 0..=255u8 {
            assert_eq!(REG_NAME[usize::from(b)], by_grammar(b), "byte {b:#04x}");
        }
    }

    #[test]
    fn connection_tokens() {
        assert!(has_token(b"Keep-Alive, Upgrade", b"upgrade"));
        assert!(!has_token(b"x-upgrade", b"upgrade"));
        assert_eq!(tokens(b" a ,, b,").collect::<Vec<_>>(), [&b"a"[..], b"b"]);
        assert!(is_protected(b"Content-Length"));
        assert!(is_protected(b"HOST"));
        assert!(!is_protected(b"x-secret"));
        assert!(!allowed_in_trailers("content-length"));
        assert!(!allowed_in_trailers("host"));
        assert!(!allowed_in_trailers("keep-alive"));
        assert!(allowed_in_trailers("grpc-status"));
    }
}
