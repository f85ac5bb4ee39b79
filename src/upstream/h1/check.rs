//! For the fuzz targets (`crate::fuzzing`): what every response head and
//! chunked body must hold, read both ways the client can read them.

use bytes::BytesMut;
use http::StatusCode;
use http::header::CONTENT_LENGTH;

use super::body::{Decode, Step, decode_step};
use super::response_head::{Names, parse_response_head};
use super::{MAX_TRAILERS, ResponseFraming};

/// For the fuzz targets (`crate::fuzzing`): parses `data` as a response
/// head both ways (fields as lines, fields in a map) and checks what every
/// head must hold: the two ways agree on status and framing and, where
/// both give fields, on the fields; no hop-by-hop field and no framing
/// field beside chunked framing is kept; a repeated length is one value.
pub(crate) fn check_response_head(data: &[u8], head_request: bool) {
    let parse = |raw: Option<&mut BytesMut>| {
        let mut read = BytesMut::from(data);
        parse_response_head(
            &mut read,
            &mut Names::default(),
            head_request,
            false,
            raw,
            None,
        )
    };
    let mut lines = BytesMut::new();
    let (as_lines, as_map) = (parse(Some(&mut lines)), parse(None));
    let (Ok(Some(as_lines)), Ok(Some(as_map))) = (as_lines, as_map) else {
        return;
    };
    assert_eq!(as_lines.head.status, as_map.head.status);
    assert_eq!(as_lines.framing, as_map.framing);
    let headers = &as_map.head.headers;
    if let Some(raw) = &as_lines.raw {
        // The lines keep the order sent; a map groups a name's values. Both
        // keep each name's values in their order, which is what counts.
        let mut mapped = Vec::new();
        crate::headers::write_lines(&mut mapped, headers);
        assert_eq!(
            fields_by_name(&raw.lines),
            fields_by_name(&mapped),
            "{:?}",
            String::from_utf8_lossy(data)
        );
    }
    if as_map.head.status != StatusCode::SWITCHING_PROTOCOLS {
        for name in crate::http1::fields::HOP_BY_HOP {
            assert!(!headers.contains_key(name), "{name} kept");
        }
    }
    if as_map.framing == ResponseFraming::Chunked {
        assert!(!headers.contains_key(CONTENT_LENGTH));
    }
    assert!(headers.get_all(CONTENT_LENGTH).iter().count() <= 1);
    if let Some(length) = headers.get(CONTENT_LENGTH) {
        assert!(
            length.as_bytes().iter().all(u8::is_ascii_digit),
            "{length:?}"
        );
    }
}

/// For the fuzz targets (`crate::fuzzing`): decodes `data` as a chunked
/// response body, whole and cut into pieces (the same outcome, data and
/// trailers either way), and holds the request follower to the same reading
/// of the same bytes: a body the decoder ends, the follower reads whole and
/// accepts; one it refuses, the follower refuses.
pub(crate) fn check_chunked_decoder(data: &[u8]) {
    use crate::http1::stream::RequestStream;
    let whole = decode_chunked(data, data.len().max(1));
    let cut = usize::from(data.first().copied().unwrap_or(1)).max(1);
    assert_eq!(whole, decode_chunked(data, cut), "cut into pieces of {cut}");
    let (outcome, _, _, consumed) = &whole;
    let mut follower = RequestStream::new(MAX_TRAILERS);
    let head = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_eq!(follower.feed(head), None);
    match outcome {
        Some(true) => {
            assert_eq!(follower.feed(&data[..*consumed]), None);
            assert!(follower.between_messages(), "the follower wants more");
        }
        Some(false) => assert!(follower.feed(data).is_some(), "the follower accepts it"),
        None => assert_eq!(follower.feed(data), None),
    }
}

/// A chunked body decoded from `data` fed `piece` bytes at a time: ended
/// (`Some(true)`), invalid (`Some(false)`) or wanting more; its data, its
/// trailers, and the bytes it took.
type Decoded = (Option<bool>, Vec<u8>, Vec<(String, Vec<u8>)>, usize);

fn decode_chunked(data: &[u8], piece: usize) -> Decoded {
    let mut decode = Decode::ChunkSize;
    let mut read = BytesMut::new();
    let (mut body, mut trailers, mut fed) = (Vec::new(), Vec::new(), 0);
    for chunk in data.chunks(piece) {
        read.extend_from_slice(chunk);
        fed += chunk.len();
        loop {
            match decode_step(&mut decode, &mut read) {
                Step::Data(d) => body.extend_from_slice(&d),
                Step::Trailers(t) => {
                    trailers = t
                        .iter()
                        .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                        .collect();
                    return (Some(true), body, trailers, fed - read.len());
                }
                Step::End => return (Some(true), body, trailers, fed - read.len()),
                Step::Invalid(_) => return (Some(false), body, trailers, 0),
                Step::More => break,
            }
        }
    }
    (None, body, trailers, 0)
}

/// Field lines grouped by name, each name's values in their order, names
/// sorted: what two ways of writing the same fields must agree on.
fn fields_by_name(lines: &[u8]) -> Vec<(&[u8], Vec<&[u8]>)> {
    let mut fields: Vec<(&[u8], Vec<&[u8]>)> = Vec::new();
    for line in lines.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let at = line.iter().position(|&b| b == b':').unwrap_or(line.len());
        let (name, value) = line.split_at(at);
        match fields.iter_mut().find(|(n, _)| *n == name) {
            Some((_, values)) => values.push(value),
            None => fields.push((name, vec![value])),
        }
    }
    fields.sort();
    fields
}
