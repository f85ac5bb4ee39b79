//! The chunk-size line of the chunked transfer coding (RFC 9112 section
//! 7.1), one grammar for what fulcrum reads and what it writes:
//!
//! ```text
//! chunk-size-line = chunk-size *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] ) CRLF
//! chunk-size      = 1*HEXDIG
//! ext-val         = token / quoted-string
//! ```
//!
//! No sign, no whitespace around the size but the extension's BWS, no bare
//! CR or LF. Extensions are read and not kept.

use std::io::Write as _;

use super::Refusal;

/// The longest chunk-size line fulcrum reads.
pub const MAX_LINE: usize = 4096;

/// The size in a chunk-size line; `line` is the line up to its LF, the LF
/// left out (so it must end in CR).
pub fn parse_size_line(line: &[u8]) -> Result<u64, Refusal> {
    let line = line.strip_suffix(b"\r").ok_or(Refusal::BadChunk)?;
    let digits_end = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    let (digits, mut rest) = line.split_at(digits_end);
    // 16 hex digits hold any u64; leading zeros past that are refused too.
    if digits.is_empty() || digits.len() > 16 {
        return Err(Refusal::BadChunk);
    }
    let size = digits.iter().fold(0u64, |n, &d| {
        let v = (d as char).to_digit(16).unwrap_or_default();
        (n << 4) | u64::from(v)
    });
    while !rest.is_empty() {
        rest = extension(rest).ok_or(Refusal::BadChunk)?;
    }
    Ok(size)
}

/// Reads one `BWS ";" BWS ext-name [ BWS "=" BWS ext-val ]`; what follows.
fn extension(input: &[u8]) -> Option<&[u8]> {
    let input = bws(input).strip_prefix(b";")?;
    let input = bws(input);
    let name_len = token_len(input);
    if name_len == 0 {
        return None;
    }
    let input = &input[name_len..];
    let after = bws(input);
    let Some(value) = after.strip_prefix(b"=") else {
        return Some(input);
    };
    let value = bws(value);
    if value.first() == Some(&b'"') {
        return quoted_string(value);
    }
    let len = token_len(value);
    (len > 0).then(|| &value[len..])
}

fn bws(input: &[u8]) -> &[u8] {
    let skip = input
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(input.len());
    &input[skip..]
}

/// The length of the token (RFC 9110 section 5.6.2) `input` begins with.
fn token_len(input: &[u8]) -> usize {
    input
        .iter()
        .position(|&b| !is_tchar(b))
        .unwrap_or(input.len())
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Reads a quoted-string (RFC 9110 section 5.6.4) at the start of `input`;
/// what follows it.
fn quoted_string(input: &[u8]) -> Option<&[u8]> {
    let mut i = 1;
    while let Some(&b) = input.get(i) {
        match b {
            b'"' => return Some(&input[i + 1..]),
            b'\\' => {
                let escaped = *input.get(i + 1)?;
                if !(escaped == b'\t' || escaped == b' ' || (0x21..=0x7e).contains(&escaped)) {
                    return None;
                }
                i += 2;
            }
            b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..=0xff => i += 1,
            _ => return None,
        }
    }
    None
}

/// Where the trailer section at the start of `buf` ends (just past its
/// empty line): field lines and the empty line, each ended by CR LF, a bare
/// LF refused (as hyper's decoder reads them); `None` while it has not
/// ended. The fields are the caller's to parse.
pub fn trailer_section_end(buf: &[u8]) -> Result<Option<usize>, Refusal> {
    let end = if buf.starts_with(b"\r\n") {
        Some(2)
    } else {
        memchr::memmem::find(buf, b"\r\n\r\n").map(|at| at + 4)
    };
    let scope = &buf[..end.unwrap_or(buf.len())];
    if memchr::memchr_iter(b'\n', scope).any(|at| at == 0 || scope[at - 1] != b'\r') {
        return Err(Refusal::BadChunk);
    }
    Ok(end)
}

/// Writes the chunk-size line for `size` bytes of data (upper-case hex, as
/// hyper writes it).
pub fn write_size_line(out: &mut Vec<u8>, size: usize) {
    let _ = write!(out, "{size:X}\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_extensions() {
        let ok: &[(&str, u64)] = &[
            ("0\r", 0),
            ("5\r", 5),
            ("a\r", 10),
            ("FF\r", 255),
            ("000a\r", 10),
            ("ffffffffffffffff\r", u64::MAX),
            ("5;a\r", 5),
            ("5;a=b\r", 5),
            ("5 ; a = b\r", 5),
            ("5;a=\"b c\"\r", 5),
            ("5;a=\"b\\\"c\"\r", 5),
            ("5;a;b=c\r", 5),
        ];
        for (line, size) in ok {
            assert_eq!(parse_size_line(line.as_bytes()), Ok(*size), "{line:?}");
        }
        for bad in [
            "\r",
            "5",
            "+5\r",
            "-5\r",
            " 5\r",
            "5 \r",
            " 5 \r",
            "0x5\r",
            "5;\r",
            "5;a<\r",
            "5;a\rb\r",
            "5;a=\r",
            "5;a=\"b\r",
            "5;a=b c\r",
            "5\r\r",
            "5;a\nb\r",
            "1ffffffffffffffff\r",
            "00000000000000000\r",
            "5,a\r",
        ] {
            assert_eq!(
                parse_size_line(bad.as_bytes()),
                Err(Refusal::BadChunk),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn what_is_written_is_read_back() {
        for size in [1usize, 9, 10, 255, 4096, 1 << 20] {
            let mut out = Vec::new();
            write_size_line(&mut out, size);
            assert!(out.ends_with(b"\r\n"));
            assert_eq!(
                parse_size_line(&out[..out.len() - 1]),
                Ok(size as u64),
                "{out:?}"
            );
        }
        let mut out = Vec::new();
        write_size_line(&mut out, 0xab);
        assert_eq!(out, b"AB\r\n");
    }
}
