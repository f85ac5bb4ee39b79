//! The request path in its normal form (RFC 3986 section 6.2.2): what a
//! request is routed by and what is forwarded.
//!
//! `/public/../admin`, `/public/%2e%2e/admin` and `/%61dmin` name the same
//! resource as `/admin` (RFC 9110 section 4.2.3), and an endpoint reads them
//! so. Routed as they were sent, they would pass a route for `/admin` and
//! reach another upstream that serves them as `/admin`. So the path is put in
//! its normal form first: percent-encoded unreserved characters decoded
//! (section 6.2.2.2), then `.` and `..` segments removed (section 5.2.4).
//! Both keep the resource the path names; anything else (`%2F`, repeated
//! slashes, the query) is left as sent, since it may mean something else.
//!
//! A `%` not followed by two hex digits makes the path invalid (RFC 3986
//! section 2.1), as nginx and HAProxy hold too: decoded around,
//! `/%%36%31pi` would become `/%61pi`, routed as that and read by the
//! endpoint as `/api`.
//!
//! A path with nothing to change, nearly every path, is found so by one
//! scan ([`normalize`] returns `None`) and forwarded byte for byte.

/// A `%` in the path not followed by two hex digits.
#[derive(Debug, PartialEq, Eq)]
pub struct InvalidEscape;

/// The normal form of `path` (an origin-form path, without the query), or
/// `None` when `path` is already in it. Normalizing the result again
/// changes nothing.
pub fn normalize(path: &str) -> Result<Option<String>, InvalidEscape> {
    if !needs_work(path.as_bytes()) {
        return Ok(None);
    }
    let normal = remove_dot_segments(&decode_unreserved(path)?);
    Ok((normal != path).then_some(normal))
}

/// Whether `path` has a `%` or a `.` or `..` segment: the only things
/// [`normalize`] changes.
fn needs_work(path: &[u8]) -> bool {
    // A plain loop: a request path is short, and most have neither byte.
    for (at, &b) in path.iter().enumerate() {
        if b == b'%' {
            return true;
        }
        // A dot opening a segment, and the segment `.` or `..`.
        if b == b'.' && (at == 0 || path[at - 1] == b'/') {
            let rest = &path[at + 1..];
            let rest = rest.strip_prefix(b".").unwrap_or(rest);
            if rest.is_empty() || rest[0] == b'/' {
                return true;
            }
        }
    }
    false
}

/// ALPHA / DIGIT / "-" / "." / "_" / "~" (RFC 3986 section 2.3).
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).map(|d| d as u8)
}

/// Decodes each `%XX` that encodes an unreserved character, in one pass
/// (a `%25` stays, so nothing is decoded twice); other escapes stay as
/// sent.
fn decode_unreserved(path: &str) -> Result<String, InvalidEscape> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let Some(&[h, l]) = bytes.get(i + 1..i + 3) else {
                return Err(InvalidEscape);
            };
            let (Some(hi), Some(lo)) = (hex(h), hex(l)) else {
                return Err(InvalidEscape);
            };
            if is_unreserved(hi << 4 | lo) {
                out.push(char::from(hi << 4 | lo));
            } else {
                out.push_str(&path[i..i + 3]);
            }
            i += 3;
            continue;
        }
        // The path is ASCII (checked before routing); a char at a time
        // keeps any other text whole.
        let c = path[i..].chars().next().expect("i is below the length");
        out.push(c);
        i += c.len_utf8();
    }
    Ok(out)
}

/// RFC 3986 section 5.2.4 for an absolute path, by segments: `.` goes,
/// `..` takes the segment before it (never above the root), and a path
/// that ended in either ends in `/`.
fn remove_dot_segments(path: &str) -> String {
    let Some(rest) = path.strip_prefix('/') else {
        return path.to_owned();
    };
    let mut kept: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in rest.split('/') {
        trailing_slash = matches!(segment, "." | "..");
        match segment {
            "." => {}
            ".." => {
                kept.pop();
            }
            _ => kept.push(segment),
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &kept {
        out.push('/');
        out.push_str(segment);
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 3986 section 5.2.4 as written: an input buffer and an output
    /// buffer, the rules A to E applied in turn.
    fn rfc_remove_dot_segments(path: &str) -> String {
        let mut input = path.to_owned();
        let mut output = String::new();
        while !input.is_empty() {
            if let Some(rest) = input.strip_prefix("../") {
                input = rest.to_owned();
            } else if let Some(rest) = input.strip_prefix("./") {
                input = rest.to_owned();
            } else if input.starts_with("/./") {
                input.replace_range(..3, "/");
            } else if input == "/." {
                input = "/".to_owned();
            } else if input.starts_with("/../") || input == "/.." {
                input.replace_range(..input.len().min(4), "/");
                match output.rfind('/') {
                    Some(i) => output.truncate(i),
                    None => output.clear(),
                }
            } else if input == "." || input == ".." {
                input.clear();
            } else {
                let start = usize::from(input.starts_with('/'));
                let end = input[start..].find('/').map_or(input.len(), |i| i + start);
                output.push_str(&input[..end]);
                input.replace_range(..end, "");
            }
        }
        output
    }

    /// Decodes the way RFC 3986 section 6.2.2.2 says, byte by byte, then
    /// removes dot segments the RFC's way.
    fn reference(path: &str) -> Result<String, InvalidEscape> {
        let b = path.as_bytes();
        let mut decoded = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] != b'%' {
                decoded.push(b[i]);
                i += 1;
                continue;
            }
            let digits = b.get(i + 1..i + 3).ok_or(InvalidEscape)?;
            if !digits.iter().all(u8::is_ascii_hexdigit) {
                return Err(InvalidEscape);
            }
            let c = u8::from_str_radix(std::str::from_utf8(digits).unwrap(), 16).unwrap();
            if c.is_ascii_alphanumeric() || b"-._~".contains(&c) {
                decoded.push(c);
            } else {
                decoded.extend_from_slice(&b[i..i + 3]);
            }
            i += 3;
        }
        Ok(rfc_remove_dot_segments(
            &String::from_utf8(decoded).unwrap(),
        ))
    }

    fn check(path: &str) {
        let want = reference(path);
        let got = normalize(path).map(|n| n.unwrap_or_else(|| path.to_owned()));
        assert_eq!(got, want, "for {path:?}");
        if let Ok(normal) = got {
            assert_eq!(normalize(&normal), Ok(None), "normalizing {path:?} twice");
        }
    }

    const ALPHABET: &[u8] = b"/.a%2eE4";

    /// Every path of up to 6 characters over an alphabet that makes dot
    /// segments and escapes, and random longer ones: the scan that says
    /// "nothing to change" and the segment-wise removal decide what the
    /// RFC's own algorithm does.
    #[test]
    fn normalize_is_the_rfc_algorithm() {
        for len in 0..=6u32 {
            for mut n in 0..ALPHABET.len().pow(len) {
                let mut path = String::from("/");
                for _ in 0..len {
                    path.push(char::from(ALPHABET[n % ALPHABET.len()]));
                    n /= ALPHABET.len();
                }
                check(&path);
            }
        }
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..100_000 {
            let len = rng.usize(7..24);
            let path: String = std::iter::once('/')
                .chain((0..len).map(|_| char::from(ALPHABET[rng.usize(..ALPHABET.len())])))
                .collect();
            check(&path);
        }
    }

    #[test]
    fn examples() {
        for (path, want) in [
            ("/", None),
            ("/a/b.css", None),
            ("/a/.b/..c/...", None),
            ("/a%2Fb", None),
            ("//a//b/", None),
            ("/a%2fb/%25%32%65", Some("/a%2fb/%252e")),
            ("/a/../b", Some("/b")),
            ("/a/./b", Some("/a/b")),
            ("/..", Some("/")),
            ("/../../etc/passwd", Some("/etc/passwd")),
            ("/a/b/..", Some("/a/")),
            ("/a/%2e%2E/b", Some("/b")),
            ("/a/.%2e/b", Some("/b")),
            ("/%61dmin", Some("/admin")),
            ("/%7e%2D%5f", Some("/~-_")),
            ("/a//../b", Some("/a/b")),
            ("/a/%2e%2e%2fb", Some("/a/..%2fb")),
        ] {
            assert_eq!(normalize(path), Ok(want.map(str::to_owned)), "for {path}");
        }
        for invalid in ["/%", "/%4", "/%zz", "/%%36%31pi", "/a%2", "/%g0"] {
            assert_eq!(normalize(invalid), Err(InvalidEscape), "for {invalid}");
        }
    }
}
