//! What is checked of a request before it is routed: its target, its Host,
//! the size of its head, its declared length.

use http::header::{CONTENT_LENGTH, HOST, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Uri, Version};

use super::error::ProxyError;

/// Checks the request target and Host (RFC 9112 section 3.2, RFC 9110
/// section 7.2); the Host the client sent: the field, or the HTTP/2
/// `:authority` (absent only for HTTP/1.0 without one).
pub(super) fn target_and_host(
    parts: &http::request::Parts,
) -> Result<Option<HeaderValue>, ProxyError> {
    if parts.method == Method::CONNECT {
        return Err(ProxyError::BadRequest("CONNECT is not supported"));
    }
    // Origin form or absolute form only: an authority form (`host:port`)
    // or an asterisk form names no path to forward.
    let Some(target) = parts.uri.path_and_query() else {
        return Err(ProxyError::BadRequest("request target has no path"));
    };
    if !target.as_str().starts_with('/') {
        return Err(ProxyError::BadRequest("request target has no path"));
    }
    if !target.as_str().is_ascii() {
        return Err(ProxyError::BadRequest("request target is not ASCII"));
    }
    let mut hosts = parts.headers.get_all(HOST).iter();
    let host_header = hosts.next();
    if hosts.next().is_some() {
        return Err(ProxyError::BadRequest("more than one Host header"));
    }
    let host_value: Option<HeaderValue> = match host_header {
        Some(h) => Some(h.clone()),
        None => match parts.uri.authority() {
            Some(a) => HeaderValue::from_str(a.as_str()).ok(),
            None => None,
        },
    };
    // An absolute-form target names its own host; one that disagrees with
    // Host is ambiguous (RFC 9112 says the target wins, caches and endpoints
    // may use Host): refuse it rather than guess.
    if let (Some(authority), Some(host)) = (parts.uri.authority(), host_header)
        && !authority
            .as_str()
            .as_bytes()
            .eq_ignore_ascii_case(host.as_bytes())
    {
        return Err(ProxyError::BadRequest(
            "Host disagrees with the request target",
        ));
    }
    match &host_value {
        Some(v) if !crate::http1::fields::valid_host(v.as_bytes()) => {
            Err(ProxyError::BadRequest("Host is not a host and port"))
        }
        None if parts.version == Version::HTTP_11 => {
            Err(ProxyError::BadRequest("HTTP/1.1 request without Host"))
        }
        // RFC 9110 section 7.2: a request names its authority in Host or
        // `:authority`; the endpoint's Host would be fulcrum's guess.
        None if parts.version == Version::HTTP_2 => Err(ProxyError::BadRequest(
            "HTTP/2 request without :authority or Host",
        )),
        _ => Ok(host_value),
    }
}

/// Puts the request's path in its normal form (`crate::path`), the form it
/// is routed by and forwarded in; the query, scheme and authority stay.
pub(super) fn normalize_path(parts: &mut http::request::Parts) -> Result<(), ProxyError> {
    let normal = crate::path::normalize(parts.uri.path())
        .map_err(|_| ProxyError::BadRequest("request target has an invalid percent-encoding"))?;
    let Some(normal) = normal else {
        return Ok(());
    };
    let mut uri = std::mem::take(&mut parts.uri).into_parts();
    let target = match uri.path_and_query.as_ref().and_then(PathAndQuery::query) {
        Some(query) => format!("{normal}?{query}"),
        None => normal,
    };
    // Neither fails: the decoded characters are unreserved ones.
    fn invalid<E>(_: E) -> ProxyError {
        ProxyError::BadRequest("request target is not a valid path")
    }
    uri.path_and_query = Some(PathAndQuery::try_from(target).map_err(invalid)?);
    parts.uri = Uri::from_parts(uri).map_err(invalid)?;
    Ok(())
}

/// The declared Content-Length, if one valid value is present.
pub(super) fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The size of the request head as written on the wire by HTTP/1.1.
pub(super) fn head_size(parts: &http::request::Parts) -> usize {
    let uri = &parts.uri;
    let target = uri.path_and_query().map_or(1, |pq| pq.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.scheme_str().map_or(0, |s| s.len() + 3);
    let line = parts.method.as_str().len() + target + 12;
    parts
        .headers
        .iter()
        .fold(line, |n, (k, v)| n + k.as_str().len() + v.len() + 4)
}
