//! An endpoint's response head: parsed with httparse, its fields read by
//! the rules of `http1::fields`, hop-by-hop fields left out, and its body's
//! framing decided (RFC 9112 section 6.3).

use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, HeaderMap, HeaderName, HeaderValue};
use http::{StatusCode, Version};

use super::{Answer, Failure, MAX_RESPONSE_FIELDS, RawHead, ResponseFraming};
use crate::http1::Interim;
use crate::http1::fields as rules;
use crate::http1::fields::{Codings, Lengths};

/// Parses a response head at the start of `read`, taking it out; interim
/// responses are dropped. `None`: not all of it has come.
///
/// Hop-by-hop fields (RFC 9110, 7.6.1) are read for what they say about
/// framing and the connection and not copied into the response, so that
/// the proxy need not look for them again; a 101 keeps them all for the
/// upgrade.
pub(super) fn parse_response_head(
    read: &mut BytesMut,
    names: &mut Names,
    head_request: bool,
    upgrade: bool,
    raw: Option<&mut BytesMut>,
    interim: Option<&Interim>,
) -> Result<Option<Answer>, Failure> {
    loop {
        if read.is_empty() {
            return Ok(None);
        }
        // Left uninitialised: httparse writes the fields it finds.
        let mut fields =
            [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_RESPONSE_FIELDS];
        let mut parsed = httparse::Response::new(&mut []);
        let config = httparse::ParserConfig::default();
        let len = match config.parse_response_with_uninit_headers(&mut parsed, read, &mut fields) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(Failure::Invalid("too many headers"));
            }
            Err(_) => return Err(Failure::Invalid("malformed response head")),
        };
        let code = parsed.code.unwrap_or_default();
        if (100..200).contains(&code) && code != 101 {
            // 100 answers an Expect fulcrum does not send on; others (103
            // Early Hints) go to the client where its server side can
            // write them.
            if let (Some(interim), false) = (interim, code == 100) {
                interim.push(&interim_head(code, parsed.headers));
            }
            read.advance(len);
            continue;
        }
        let status = StatusCode::from_u16(code).map_err(|_| Failure::Invalid("bad status code"))?;
        let version = match parsed.version {
            Some(0) => Version::HTTP_10,
            _ => Version::HTTP_11,
        };
        // Where each field lies in the head, so that the values can be
        // shared slices of it rather than copies.
        let base = read.as_ptr() as usize;
        let mut spans = [(0u32, 0u32, 0u32, 0u32); MAX_RESPONSE_FIELDS];
        let count = parsed.headers.len();
        for (span, field) in spans.iter_mut().zip(parsed.headers.iter()) {
            let name = field.name.as_ptr() as usize - base;
            let value = field.value.as_ptr() as usize - base;
            *span = (
                name as u32,
                (name + field.name.len()) as u32,
                value as u32,
                (value + field.value.len()) as u32,
            );
        }
        let head = read.split_to(len).freeze();
        let spans = &spans[..count];
        let switching = status == StatusCode::SWITCHING_PROTOCOLS;
        // 204 and 304 keep the map: hyper leaves their Content-Length out.
        let raw = raw.filter(|_| !switching && !matches!(code, 204 | 304));
        let (headers, seen, raw) = match raw {
            Some(buf) => match raw_fields(&head, spans, names, buf)? {
                Some((seen, raw)) => (HeaderMap::new(), seen, Some(raw)),
                None => {
                    let (headers, seen) = map_fields(&head, spans, names, false)?;
                    (headers, seen, None)
                }
            },
            None => {
                let (headers, seen) = map_fields(&head, spans, names, switching)?;
                (headers, seen, None)
            }
        };
        let framing = framing(status, &seen, head_request, upgrade)?;
        // Framed two ways (RFC 9112, 6.3): the connection is not trusted
        // with another message.
        let ambiguous =
            seen.codings.present() && (seen.lengths.get().is_some() || version == Version::HTTP_10);
        let keep_alive = if version == Version::HTTP_10 {
            seen.keep_alive && !seen.close
        } else {
            !seen.close
        };
        let (mut head, ()) = http::Response::new(()).into_parts();
        head.status = status;
        head.version = version;
        head.headers = headers;
        return Ok(Some(Answer {
            head,
            framing,
            reuse: keep_alive && !ambiguous && framing != ResponseFraming::Close,
            raw,
        }));
    }
}

/// An interim response head as fulcrum forwards it: its status, its fields
/// but the hop-by-hop ones.
pub(super) fn interim_head(code: u16, fields: &[httparse::Header<'_>]) -> Vec<u8> {
    let reason = StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let mut head = format!("HTTP/1.1 {code} {reason}\r\n").into_bytes();
    for field in fields {
        let lower = field.name.to_ascii_lowercase();
        if !rules::is_hop_by_hop(&lower) && !rules::is_protected(field.name.as_bytes()) {
            crate::headers::write_line(&mut head, lower.as_bytes(), field.value);
        }
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// Where a field's name and value lie in a response head.
pub(super) type Span = (u32, u32, u32, u32);

/// The fields of a response head in a header map, hop-by-hop fields left
/// out (a 101, `switching`, keeps them all for the upgrade).
pub(super) fn map_fields(
    head: &Bytes,
    spans: &[Span],
    names: &mut Names,
    switching: bool,
) -> Result<(HeaderMap, Seen), Failure> {
    let mut seen = Seen::default();
    let mut headers = HeaderMap::with_capacity(spans.len());
    for (i, &(name_start, name_end, value_start, value_end)) in spans.iter().enumerate() {
        let (name, kind) = names.get(i, &head[name_start as usize..name_end as usize])?;
        let value = &head[value_start as usize..value_end as usize];
        if !switching && !seen.field(kind, value)? {
            continue;
        }
        let value =
            HeaderValue::from_maybe_shared(head.slice(value_start as usize..value_end as usize))
                .map_err(|_| Failure::Invalid("bad header value"))?;
        headers.append(name, value);
    }
    if seen.listed {
        // The Connection field names other fields: they go too.
        crate::headers::strip_hop_by_hop(&mut headers, false);
    }
    if seen.codings.present() {
        // Transfer-Encoding overrides Content-Length, which must not
        // reach the client beside a body framed some other way.
        headers.remove(CONTENT_LENGTH);
    } else if let (true, Some(n)) = (seen.lengths.repeated(), seen.lengths.get()) {
        // `5, 5` or two equal fields: sent on as one value.
        headers.insert(CONTENT_LENGTH, HeaderValue::from(n));
    }
    Ok((headers, seen))
}

/// The fields of a response head as [`RawHead`] lines, written into `buf`;
/// `None` when one of them needs the map: a Connection naming other fields,
/// Content-Length repeated or beside Transfer-Encoding. (Trailer is
/// hop-by-hop here, as in RFC 2616's list: never kept.)
pub(super) fn raw_fields(
    head: &Bytes,
    spans: &[Span],
    names: &mut Names,
    buf: &mut BytesMut,
) -> Result<Option<(Seen, RawHead)>, Failure> {
    let mut seen = Seen::default();
    let (mut date, mut lengths) = (false, 0);
    buf.clear();
    buf.reserve(head.len());
    for (i, &(name_start, name_end, value_start, value_end)) in spans.iter().enumerate() {
        let (name, kind) = names.get(i, &head[name_start as usize..name_end as usize])?;
        // httparse admits the bytes a header value may hold, no others.
        let value = &head[value_start as usize..value_end as usize];
        if !seen.field(kind, value)? {
            continue;
        }
        match kind {
            FieldKind::ContentLength => lengths += 1,
            FieldKind::Connection => return Ok(None),
            _ if name == http::header::DATE => date = true,
            _ => {}
        }
        buf.extend_from_slice(name.as_str().as_bytes());
        buf.extend_from_slice(b": ");
        buf.extend_from_slice(value);
        buf.extend_from_slice(b"\r\n");
    }
    if lengths > 1 || seen.lengths.repeated() || (lengths > 0 && seen.codings.present()) {
        return Ok(None);
    }
    let raw = RawHead {
        lines: buf.split().freeze(),
        date,
        length: lengths > 0,
    };
    Ok(Some((seen, raw)))
}

/// The field names of an endpoint's last response head, in order and as
/// sent: an endpoint sends the same names in the same order response after
/// response, and a name found here is compared, not parsed and looked up
/// again.
#[derive(Debug, Default)]
pub(super) struct Names {
    /// The names as sent, one after another.
    pub(super) raw: Vec<u8>,
    /// Where each ends in `raw`, the name, and what it is to framing.
    pub(super) parsed: Vec<(usize, HeaderName, FieldKind)>,
}

/// How many field names of a response head [`Names`] keeps.
pub(super) const NAMES_KEPT: usize = 32;

impl Names {
    /// The `i`th field name of a response head: the last head's `i`th name
    /// if it is sent the same, parsed and noted for the next head
    /// otherwise (with the names after it forgotten).
    pub(super) fn get(
        &mut self,
        i: usize,
        sent: &[u8],
    ) -> Result<(HeaderName, FieldKind), Failure> {
        let start = match i {
            0 => 0,
            _ => self.parsed.get(i - 1).map_or(usize::MAX, |&(end, ..)| end),
        };
        if let Some((end, name, kind)) = self.parsed.get(i)
            && self.raw.get(start..*end) == Some(sent)
        {
            return Ok((name.clone(), *kind));
        }
        let name = HeaderName::from_bytes(sent).map_err(|_| Failure::Invalid("bad header name"))?;
        let kind = FieldKind::of(&name);
        // Noted only in sequence: names after a gap (beyond NAMES_KEPT) are
        // not, and `start` is then not used.
        if i <= self.parsed.len() && i < NAMES_KEPT {
            self.parsed.truncate(i);
            self.raw.truncate(start);
            self.raw.extend_from_slice(sent);
            self.parsed.push((self.raw.len(), name.clone(), kind));
        }
        Ok((name, kind))
    }
}

/// What a response field is to the framing of the message and to the
/// connection: known once per name, then remembered with it ([`Names`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FieldKind {
    ContentLength,
    TransferEncoding,
    Connection,
    /// Another hop-by-hop field: not forwarded.
    HopByHop,
    Other,
}

impl FieldKind {
    /// One match on the name (lower case, as HeaderName keeps it) rather
    /// than a comparison per name of interest.
    fn of(name: &HeaderName) -> Self {
        match name.as_str() {
            "content-length" => FieldKind::ContentLength,
            "transfer-encoding" => FieldKind::TransferEncoding,
            "connection" => FieldKind::Connection,
            "te" | "trailer" | "upgrade" | "keep-alive" | "proxy-connection" => FieldKind::HopByHop,
            _ => FieldKind::Other,
        }
    }
}

/// What a response head's hop-by-hop and length fields said, read by the
/// rules of `http1::fields`.
#[derive(Default)]
pub(super) struct Seen {
    codings: Codings,
    lengths: Lengths,
    close: bool,
    keep_alive: bool,
    /// Connection named fields other than its own options.
    listed: bool,
}

impl Seen {
    /// Notes what a field says; false for a hop-by-hop field, which is not
    /// copied. A Connection field naming other fields is kept, for them to
    /// be removed after.
    fn field(&mut self, kind: FieldKind, value: &[u8]) -> Result<bool, Failure> {
        match kind {
            FieldKind::ContentLength => {
                self.lengths
                    .add(value)
                    .map_err(|_| Failure::Invalid("bad or conflicting Content-Length"))?;
                Ok(true)
            }
            FieldKind::TransferEncoding => {
                self.codings.add(value);
                Ok(false)
            }
            FieldKind::Connection => {
                let mut options_only = true;
                for token in rules::tokens(value) {
                    if token.eq_ignore_ascii_case(b"close") {
                        self.close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        self.keep_alive = true;
                    } else {
                        options_only = false;
                    }
                }
                self.listed |= !options_only;
                Ok(!options_only)
            }
            FieldKind::HopByHop => Ok(false),
            FieldKind::Other => Ok(true),
        }
    }

    /// Whether the body is chunked; a Transfer-Encoding fulcrum cannot
    /// decode (a coding besides chunked, chunked twice or not last) makes
    /// the response invalid, as nginx holds it: forwarding it decoded would
    /// drop a coding, and reading to the close would forward a body framed
    /// one way under fields that say another.
    fn chunked(&self) -> Result<bool, Failure> {
        self.codings
            .chunked()
            .map_err(|_| Failure::Invalid("unsupported Transfer-Encoding"))
    }
}

/// How the body after a response head is delimited (RFC 9112, 6.3).
pub(super) fn framing(
    status: StatusCode,
    seen: &Seen,
    head_request: bool,
    upgrade: bool,
) -> Result<ResponseFraming, Failure> {
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return if upgrade {
            Ok(ResponseFraming::Upgrade)
        } else {
            Err(Failure::Invalid("101 to a request that asked no upgrade"))
        };
    }
    if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok(ResponseFraming::Empty);
    }
    if seen.chunked()? {
        return Ok(ResponseFraming::Chunked);
    }
    Ok(match seen.lengths.get() {
        None => ResponseFraming::Close,
        Some(0) => ResponseFraming::Empty,
        Some(n) => ResponseFraming::Length(n),
    })
}
