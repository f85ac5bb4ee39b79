//! The endpoint client's unit tests.

use http::header::HeaderName;

use super::response_head::*;
use super::*;

fn names_of(names: &mut Names, head: &[&str]) -> Vec<HeaderName> {
    head.iter()
        .enumerate()
        .map(|(i, sent)| names.get(i, sent.as_bytes()).expect("valid name").0)
        .collect()
}

#[test]
fn names_are_the_same_whether_remembered_or_parsed() {
    let mut names = Names::default();
    let first = ["Server", "Date", "Content-Length", "X-Trace"];
    let parsed: Vec<HeaderName> = first
        .iter()
        .map(|n| HeaderName::from_bytes(n.as_bytes()).unwrap())
        .collect();
    assert_eq!(names_of(&mut names, &first), parsed);
    // Again: every name comes from what was noted.
    assert_eq!(names_of(&mut names, &first), parsed);
    assert_eq!(names.parsed.len(), 4);

    // A name sent in another case, one in another place, one more.
    let second = ["Server", "content-length", "Date", "X-Trace", "Vary"];
    let got = names_of(&mut names, &second);
    let want: Vec<HeaderName> = second
        .iter()
        .map(|n| HeaderName::from_bytes(n.as_bytes()).unwrap())
        .collect();
    assert_eq!(got, want);
    assert_eq!(names.parsed.len(), 5);
    assert_eq!(names.raw, b"Servercontent-lengthDateX-TraceVary");
    // A shorter head after a longer one, then the longer one again.
    assert_eq!(
        names_of(&mut names, &["Server"]),
        vec![HeaderName::from_static("server")]
    );
    assert_eq!(names_of(&mut names, &second), want);
}

#[test]
fn names_remember_what_each_is_to_framing() {
    let mut names = Names::default();
    let head = [
        "Content-Length",
        "Connection",
        "Keep-Alive",
        "Transfer-Encoding",
        "X-Other",
    ];
    let want = [
        FieldKind::ContentLength,
        FieldKind::Connection,
        FieldKind::HopByHop,
        FieldKind::TransferEncoding,
        FieldKind::Other,
    ];
    // Parsed the first time, remembered the second.
    for _ in 0..2 {
        for (i, sent) in head.iter().enumerate() {
            assert_eq!(names.get(i, sent.as_bytes()).unwrap().1, want[i], "{sent}");
        }
    }
}

/// The response head `head` parsed with its fields as lines if
/// possible, and into a map.
fn both_ways(head: &str) -> (Option<RawHead>, Vec<u8>) {
    let parse = |raw: Option<&mut BytesMut>| {
        let mut read = BytesMut::from(head.as_bytes());
        parse_response_head(&mut read, &mut Names::default(), false, false, raw, None)
            .unwrap()
            .unwrap()
    };
    let mut lines = BytesMut::new();
    let raw = parse(Some(&mut lines)).raw;
    let mut mapped = Vec::new();
    crate::headers::write_lines(&mut mapped, &parse(None).head.headers);
    (raw, mapped)
}

#[test]
fn raw_lines_hold_what_the_map_would() {
    let (raw, mapped) = both_ways(
        "HTTP/1.1 200 OK\r\nServer: t\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\
         Date: x\r\nKeep-Alive: timeout=5\r\nX-A: 1\r\nX-A: 2\r\n\r\nok",
    );
    let raw = raw.expect("plain fields come as lines");
    assert_eq!(
        std::str::from_utf8(&raw.lines).unwrap(),
        "server: t\r\ncontent-length: 2\r\ndate: x\r\nx-a: 1\r\nx-a: 2\r\n"
    );
    assert_eq!(&raw.lines[..], &mapped[..]);
    assert!(raw.date && raw.length);

    let (raw, _) = both_ways("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-B: 1\r\n\r\n");
    let raw = raw.expect("chunked framing comes as lines too");
    assert_eq!(&raw.lines[..], b"x-b: 1\r\n");
    assert!(!raw.date && !raw.length);
}

#[test]
fn raw_lines_hold_no_byte_a_header_value_may_not() {
    // httparse refuses them before either way of keeping the fields.
    for value in ["a\x01b", "a\x7fb", "a\x00b"] {
        let head = format!("HTTP/1.1 200 OK\r\nX-A: {value}\r\nContent-Length: 0\r\n\r\n");
        let mut read = BytesMut::from(head.as_bytes());
        let mut lines = BytesMut::new();
        let parsed = parse_response_head(
            &mut read,
            &mut Names::default(),
            false,
            false,
            Some(&mut lines),
            None,
        );
        assert!(matches!(parsed, Err(Failure::Invalid(_))), "{value:?}");
    }
}

#[test]
fn fields_that_need_the_map_keep_it() {
    for head in [
        // Connection naming another field, which must go too.
        "HTTP/1.1 200 OK\r\nConnection: x-a\r\nX-A: 1\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.1 304 Not Modified\r\nContent-Length: 3\r\n\r\n",
    ] {
        let (raw, mapped) = both_ways(head);
        assert!(raw.is_none(), "{head:?}");
        assert!(!mapped.starts_with(b"x-a"), "{head:?}");
    }
}

#[test]
fn names_keep_a_bounded_number_and_reject_invalid_ones() {
    let mut names = Names::default();
    let many: Vec<String> = (0..NAMES_KEPT + 8)
        .map(|i| format!("x-field-{i}"))
        .collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let got = names_of(&mut names, &many);
    assert_eq!(got.len(), many.len());
    assert_eq!(got[NAMES_KEPT + 7].as_str(), "x-field-39");
    assert_eq!(names.parsed.len(), NAMES_KEPT);
    assert!(matches!(
        names.get(0, b"bad name"),
        Err(Failure::Invalid(_))
    ));
    // The invalid name was not noted in place of a valid one.
    assert_eq!(names.get(1, b"x-field-1").unwrap().0.as_str(), "x-field-1");
}
