//! The byte classes and small grammars of RFC 9110/9112 shared by the head parser, the
//! chunked decoder and the writers: tokens, field values, comma lists, authorities and
//! Content-Length.
//!
//! Every check here is on bytes, not `str`, and never indexes: a malformed input gets
//! `false`/`None`, never a panic.

use std::ops::Range;

/// `tchar` of RFC 9110 §5.6.2, as a table: one load per byte on the hot paths.
static TCHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = matches!(i as u8,
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9'
            | b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+'
            | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~');
        i += 1;
    }
    t
};

/// `tchar` of RFC 9110 §5.6.2: the bytes of a token (field names, methods, codings).
#[inline]
pub fn is_tchar(b: u8) -> bool {
    TCHAR[usize::from(b)]
}

/// A non-empty token.
#[inline]
pub fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

/// A byte allowed inside a field value (RFC 9110 §5.5): HTAB, SP, VCHAR or obs-text.
/// Every other control byte (NUL, CR, LF, DEL, ...) is refused.
#[inline]
pub fn is_field_vchar(b: u8) -> bool {
    b == b'\t' || (0x20..=0x7e).contains(&b) || b >= 0x80
}

/// Every byte of `v` is [`is_field_vchar`]. Values are the bulk of a head, so this
/// looks at 16 bytes at a time (the last block overlapping the one before, so no byte
/// is looked at alone): each block is a handful of vector instructions.
#[inline]
pub fn all_field_vchar(v: &[u8]) -> bool {
    let bad = if let Some(last) = v.last_chunk::<16>() {
        let (blocks, _) = v.as_chunks::<16>();
        blocks.iter().fold(not_vchar_in(last), |bad, b| bad | not_vchar_in(b))
    } else if let (Some(first), Some(last)) = (v.first_chunk::<8>(), v.last_chunk::<8>()) {
        not_vchar_in(first) | not_vchar_in(last)
    } else {
        not_vchar_in(v)
    };
    bad == 0
}

/// Non-zero when some byte of `bytes` is not [`is_field_vchar`]; no early exit, so
/// that a fixed-size block becomes one vector compare.
#[inline(always)]
fn not_vchar_in(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |bad, &b| {
        bad | (u8::from(b < 0x20) & u8::from(b != b'\t')) | u8::from(b == 0x7f)
    })
}

/// A field value as we accept and emit it: only [`is_field_vchar`] bytes, and no
/// leading or trailing whitespace (a value that starts with SP could be read as an
/// obs-fold continuation by a lenient peer once a CRLF slipped in).
#[inline]
pub fn is_field_value(v: &[u8]) -> bool {
    !v.first().is_some_and(|b| is_ows(*b)) && !v.last().is_some_and(|b| is_ows(*b)) && all_field_vchar(v)
}

/// OWS of RFC 9110 §5.6.3: SP and HTAB only (VT, FF and friends are not whitespace).
pub fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// `s` with OWS removed at both ends.
pub fn trim_ows(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|b| !is_ows(*b)).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !is_ows(*b)).map_or(start, |i| i + 1);
    s.get(start..end).unwrap_or_default()
}

/// The elements of a comma-separated list (RFC 9110 §5.6.1), each trimmed of OWS.
/// Empty elements (`a, , b`) are yielded as empty slices; callers that accept the
/// `#rule` skip them.
pub fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|b| *b == b',').map(trim_ows)
}

/// Whether a comma list of tokens contains `token` (ASCII case-insensitive).
pub fn list_contains(value: &[u8], token: &[u8]) -> bool {
    list_elements(value).any(|e| e.eq_ignore_ascii_case(token))
}

/// Where `part` lies inside `whole`, when it is a sub-slice of it (the slices httparse
/// hands back borrow from the input). `None` for a slice from elsewhere (httparse's
/// static empty reason phrase).
pub fn range_in(whole: &[u8], part: &[u8]) -> Option<Range<usize>> {
    let start = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    let end = start.checked_add(part.len())?;
    if end <= whole.len() {
        Some(start..end)
    } else {
        None
    }
}

/// Content-Length = 1*DIGIT (RFC 9110 §8.6), as a u64. No sign, no spaces, no list,
/// no hex; more than u64 holds is refused rather than wrapped. Leading zeros are
/// accepted (`007` is 7): the grammar allows them and they cannot overflow.
pub fn parse_content_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |acc, &b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// An authority as we accept it in Host and in an absolute-form target (RFC 3986
/// §3.2.2, RFC 9110 §7.2): `host [":" port]`, where host is an IPv6 literal in
/// brackets, or a reg-name (which covers IPv4) of unreserved, sub-delims and
/// pct-encoded bytes. No userinfo (`@`), no IPvFuture, no zone id; the port, when its
/// colon is there, is 1 to 5 digits up to 65535. Empty is refused.
pub fn is_authority(a: &[u8]) -> bool {
    let (host, port) = if a.first() == Some(&b'[') {
        let Some(close) = a.iter().position(|b| *b == b']') else {
            return false;
        };
        let (Some(inner), Some(rest)) = (a.get(1..close), a.get(close + 1..)) else {
            return false;
        };
        let is_v6 = std::str::from_utf8(inner).is_ok_and(|s| s.parse::<std::net::Ipv6Addr>().is_ok());
        if !is_v6 {
            return false;
        }
        match rest.split_first() {
            None => return true,
            Some((b':', port)) => (None, Some(port)),
            Some(_) => return false,
        }
    } else {
        match a.iter().position(|b| *b == b':') {
            Some(i) => (a.get(..i), a.get(i + 1..)),
            None => (Some(a), None),
        }
    };
    if let Some(host) = host {
        if !is_reg_name(host) {
            return false;
        }
    }
    match port {
        None => true,
        Some(p) => (1..=5).contains(&p.len()) && parse_content_length(p).is_some_and(|n| n <= 65535),
    }
}

/// A non-empty reg-name: unreserved / pct-encoded / sub-delims (RFC 3986 §3.2.2).
fn is_reg_name(h: &[u8]) -> bool {
    if h.is_empty() {
        return false;
    }
    let mut i = 0;
    while let Some(&b) = h.get(i) {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {}
            b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' => {}
            b'%' => {
                let hex = |j: usize| h.get(j).is_some_and(u8::is_ascii_hexdigit);
                if !(hex(i + 1) && hex(i + 2)) {
                    return false;
                }
                i += 2;
            }
            _ => return false,
        }
        i += 1;
    }
    true
}

/// Every CR is followed by LF and every LF preceded by CR: no bare CR (a line break to
/// some peers and not to others) and no bare LF (RFC 9112 §2.2 lets a recipient accept
/// it; we do not, so that our view of where a line ends is the strictest one).
///
/// Put another way: for every pair of neighbouring bytes, the first is CR exactly when
/// the second is LF, and the head neither starts with LF nor ends with CR. Written
/// without an early exit so that it compiles to a vector loop.
pub fn crlf_only(head: &[u8]) -> bool {
    let next = head.get(1..).unwrap_or_default();
    let unpaired = head
        .iter()
        .zip(next)
        .fold(false, |bad, (&a, &b)| bad | ((a == b'\r') != (b == b'\n')));
    !unpaired && head.first() != Some(&b'\n') && head.last() != Some(&b'\r')
}

/// Appends `name: value\r\n`.
#[inline]
pub fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.reserve(name.len() + value.len() + 4);
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_grammar() {
        assert_eq!(parse_content_length(b"0"), Some(0));
        assert_eq!(parse_content_length(b"007"), Some(7));
        assert_eq!(parse_content_length(b"18446744073709551615"), Some(u64::MAX));
        for bad in [
            &b""[..],
            b"18446744073709551616",
            b"+5",
            b"-1",
            b"0x5",
            b"5 5",
            b"5a",
            b"5,5",
            b" 5",
        ] {
            assert_eq!(parse_content_length(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn authority_grammar() {
        for good in [
            &b"a"[..],
            b"example.com:8080",
            b"1.2.3.4",
            b"[::1]",
            b"[::1]:80",
            b"a%20b",
            b"x_y",
        ] {
            assert!(is_authority(good), "{:?}", String::from_utf8_lossy(good));
        }
        for bad in [
            &b""[..],
            b"a:",
            b":80",
            b"a:65536",
            b"a:123456",
            b"u@a",
            b"a b",
            b"a/b",
            b"[::1",
            b"[zz]",
            b"[::1]x",
            b"a%2",
            b"a:8x",
            b"\xc3\xa9",
        ] {
            assert!(!is_authority(bad), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn line_discipline() {
        assert!(crlf_only(b"a\r\nb\r\n\r\n"));
        assert!(!crlf_only(b"a\nb"));
        assert!(!crlf_only(b"a\rb"));
        assert!(!crlf_only(b"a\r"));
    }

    #[test]
    fn trimming_and_lists() {
        assert_eq!(trim_ows(b" \ta b\t "), b"a b");
        assert_eq!(trim_ows(b"   "), b"");
        assert_eq!(trim_ows(b"\x0bchunked"), b"\x0bchunked");
        assert!(list_contains(b"keep-alive, Close", b"close"));
        assert!(!list_contains(b"closed", b"close"));
    }
}
