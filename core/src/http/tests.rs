//! The codec against RELIABILITY.md section A, row by row, as byte vectors; then the
//! writers' exact output; then properties (round trips, no panics, Content-Length).
//!
//! Each table row is (what it is, the bytes, what we answer). The row ids name the
//! RELIABILITY.md rows; where a row offers two behaviours the expectation here is the
//! one we chose (see the module docs of `head.rs` and `body.rs`).

use super::*;
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What parsing a request must give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// Accepted with this body framing.
    Body(BodyKind),
    /// Refused with this status.
    Status(u16),
}

fn parse(bytes: &[u8]) -> Result<Option<RequestHead>, Reject> {
    parse_request(bytes, &Limits::default(), Underscores::Drop)
}

fn outcome(bytes: &[u8]) -> Option<Want> {
    match parse(bytes) {
        Ok(Some(h)) => Some(Want::Body(h.body)),
        Ok(None) => None,
        Err(r) => Some(Want::Status(r.status)),
    }
}

fn check(rows: &[(&str, &[u8], Want)]) {
    for (what, bytes, want) in rows {
        assert_eq!(
            outcome(bytes),
            Some(*want),
            "{what}: {:?}",
            String::from_utf8_lossy(bytes)
        );
    }
}

/// `POST / HTTP/1.1`, `Host: a`, the given field lines, the empty line, and a body.
fn post(fields: &str) -> Vec<u8> {
    format!("POST / HTTP/1.1\r\nHost: a\r\n{fields}\r\n0\r\n\r\nX").into_bytes()
}

const R400: Want = Want::Status(400);

#[test]
fn a1_a2_cl_and_te_together_are_refused() {
    let rows: Vec<(&str, Vec<u8>)> = vec![
        ("A1 CL.TE", post("Content-Length: 6\r\nTransfer-Encoding: chunked\r\n")),
        ("A2 TE.CL", post("Transfer-Encoding: chunked\r\nContent-Length: 6\r\n")),
        ("A2 HTAB", post("Content-Length: 6\r\nTransfer-Encoding:\tchunked\r\n")),
        (
            "A2 trailing SP",
            post("Content-Length: 6\r\nTransfer-Encoding: chunked \r\n"),
        ),
        ("A2 CL 0", post("Content-Length: 0\r\nTransfer-Encoding: chunked\r\n")),
    ];
    for (what, bytes) in &rows {
        check(&[(what, bytes, R400)]);
    }
    // Alone, the spacing variants are plain chunked.
    check(&[
        (
            "TE HTAB",
            &post("Transfer-Encoding:\tchunked\r\n"),
            Want::Body(BodyKind::Chunked),
        ),
        (
            "TE trailing SP",
            &post("Transfer-Encoding: chunked \r\n"),
            Want::Body(BodyKind::Chunked),
        ),
        (
            "TE case",
            &post("transfer-encoding: CHUNKED\r\n"),
            Want::Body(BodyKind::Chunked),
        ),
    ]);
}

#[test]
fn a3_a4_a5_content_length() {
    let cases: &[(&str, &str)] = &[
        ("A3 differing", "Content-Length: 5\r\nContent-Length: 6\r\n"),
        (
            "A3 equal twice (our choice)",
            "Content-Length: 5\r\nContent-Length: 5\r\n",
        ),
        ("A4 list", "Content-Length: 5, 6\r\n"),
        ("A4 trailing comma", "Content-Length: 0,\r\n"),
        ("A4 empty", "Content-Length:\r\n"),
        ("A4 equal list (our choice)", "Content-Length: 5, 5\r\n"),
        ("A5 plus", "Content-Length: +5\r\n"),
        ("A5 minus", "Content-Length: -1\r\n"),
        ("A5 hex", "Content-Length: 0x5\r\n"),
        ("A5 inner space", "Content-Length: 5 5\r\n"),
        ("A5 suffix", "Content-Length: 5a\r\n"),
        ("A5 overflow", "Content-Length: 99999999999999999999\r\n"),
        ("A5 u64::MAX + 1", "Content-Length: 18446744073709551616\r\n"),
    ];
    for (what, fields) in cases {
        check(&[(what, &post(fields), R400)]);
    }
    check(&[
        ("CL", &post("Content-Length: 5\r\n"), Want::Body(BodyKind::Length(5))),
        (
            "CL OWS",
            &post("Content-Length: \t5 \r\n"),
            Want::Body(BodyKind::Length(5)),
        ),
        (
            "CL max",
            &post("Content-Length: 18446744073709551615\r\n"),
            Want::Body(BodyKind::Length(u64::MAX)),
        ),
    ]);
}

#[test]
fn a6_a7_a8_transfer_encoding() {
    let cases: &[(&str, &str, u16)] = &[
        ("A6 gzip (known coding)", "Transfer-Encoding: gzip\r\n", 501),
        ("A6 identity (known coding)", "Transfer-Encoding: identity\r\n", 501),
        ("A6 chunked, gzip", "Transfer-Encoding: chunked, gzip\r\n", 400),
        ("A6 gzip, chunked", "Transfer-Encoding: gzip, chunked\r\n", 400),
        ("A7 chunked, chunked", "Transfer-Encoding: chunked, chunked\r\n", 400),
        (
            "A7 two lines",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            400,
        ),
        ("A7 xchunked", "Transfer-Encoding: xchunked\r\n", 400),
        ("A7 space before colon", "Transfer-Encoding : chunked\r\n", 400),
        ("A7 VT", "Transfer-Encoding:\x0bchunked\r\n", 400),
        ("A7 extension", "Transfer-Encoding: chunked;ext=1\r\n", 400),
        ("A7 empty", "Transfer-Encoding:\r\n", 400),
        ("A7 quoted", "Transfer-Encoding: \"chunked\"\r\n", 400),
    ];
    for (what, fields, status) in cases {
        check(&[(what, &post(fields), Want::Status(*status))]);
    }
    check(&[(
        "A8 TE on 1.0",
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        R400,
    )]);
}

#[test]
fn a9_no_framing_means_no_body() {
    let bytes = b"GET / HTTP/1.0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
    let first = parse(bytes).unwrap().unwrap();
    assert_eq!(
        (first.body, first.head_len, first.keep_alive),
        (BodyKind::None, 18, false)
    );
    let next = parse(&bytes[first.head_len..]).unwrap().unwrap();
    assert_eq!(next.target(), b"/smuggled");

    let bytes = b"POST /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n";
    let first = parse(bytes).unwrap().unwrap();
    assert_eq!((first.body, first.keep_alive), (BodyKind::None, true));
    assert_eq!(parse(&bytes[first.head_len..]).unwrap().unwrap().target(), b"/b");
}

#[test]
fn a11_a12_a13_field_syntax() {
    let cases: &[(&str, &[u8])] = &[
        ("A11 Host space colon", b"GET / HTTP/1.1\r\nHost : a\r\n\r\n"),
        (
            "A11 CL space colon",
            b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\n",
        ),
        ("A12 obs-fold", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n"),
        (
            "A12 obs-fold TE",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n",
        ),
        ("A12 fold first", b"GET / HTTP/1.1\r\n Host: a\r\n\r\n"),
        ("A13 NUL in name", b"GET / HTTP/1.1\r\nHost: a\r\nX\0: a\r\n\r\n"),
        ("A13 NUL in value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n"),
        ("A13 bare CR", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n"),
        ("A13 DEL in value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n"),
        ("A13 DEL in name", b"GET / HTTP/1.1\r\nHost: a\r\nX\x7f: a\r\n\r\n"),
        ("A13 8-bit name", b"GET / HTTP/1.1\r\nHost: a\r\nX\xe9: a\r\n\r\n"),
        ("A13 ESC in value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x1bb\r\n\r\n"),
        ("A13 bare LF (our choice)", b"GET / HTTP/1.1\nHost: a\n\n"),
        ("A13 bare LF end", b"GET / HTTP/1.1\r\nHost: a\r\n\n"),
        ("A13 CR in request line", b"GET /\r HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("A13 empty name", b"GET / HTTP/1.1\r\nHost: a\r\n: a\r\n\r\n"),
    ];
    for (what, bytes) in cases {
        check(&[(what, bytes, R400)]);
    }
    // obs-text and HTAB in values are allowed (RFC 9110 §5.5).
    let h = parse(b"GET / HTTP/1.1\r\nHost: a\r\nX: caf\xc3\xa9\tb\r\n\r\n")
        .unwrap()
        .unwrap();
    assert_eq!(h.field(b"x"), Some(&b"caf\xc3\xa9\tb"[..]));
}

#[test]
fn a14_request_targets_and_versions() {
    let cases: &[(&str, &[u8])] = &[
        ("relative", b"GET admin HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("asterisk for GET", b"GET * HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("asterisk path", b"OPTIONS */x HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("space", b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("two spaces", b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("CTL", b"GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("TAB", b"GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("fragment", b"GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("8-bit", b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("DEL", b"GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("HTTP/1.2", b"GET / HTTP/1.2\r\nHost: a\r\n\r\n"),
        ("HTTP/11", b"GET / HTTP/11\r\nHost: a\r\n\r\n"),
        ("HTTP/2.0", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n"),
        ("lowercase version", b"GET / http/1.1\r\nHost: a\r\n\r\n"),
        ("0.9: no version", b"GET /\r\n\r\n"),
        ("absolute ftp", b"GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("absolute userinfo", b"GET http://u@a/ HTTP/1.1\r\n\r\n"),
        ("absolute no authority", b"GET http:///x HTTP/1.1\r\n\r\n"),
        ("authority form", b"GET a:80 HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("bad method", b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n"),
    ];
    for (what, bytes) in cases {
        check(&[(what, bytes, R400)]);
    }
    let h = parse(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n").unwrap().unwrap();
    assert_eq!(h.target(), b"*");
    // RFC 9112 §2.2: empty lines before the request line are ignored.
    let h = parse(b"\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n").unwrap().unwrap();
    assert_eq!((h.target(), h.head_len), (&b"/x"[..], 32));
}

#[test]
fn a14_absolute_form_is_reduced_to_origin_form() {
    let cases: &[(&[u8], &[u8], &[u8])] = &[
        (
            b"GET http://a.example/p?q HTTP/1.1\r\nHost: a.example\r\n\r\n",
            b"/p?q",
            b"a.example",
        ),
        (b"GET HTTPS://A:8443 HTTP/1.1\r\nHost: a:8443\r\n\r\n", b"/", b"A:8443"),
        (b"GET http://a?x=1 HTTP/1.0\r\n\r\n", b"/?x=1", b"a"),
        (b"GET http://[::1]:80/ HTTP/1.1\r\n\r\n", b"/", b"[::1]:80"),
    ];
    for (bytes, target, authority) in cases {
        let h = parse(bytes).unwrap().unwrap();
        assert_eq!(
            (h.target(), h.authority()),
            (*target, *authority),
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
    }
}

#[test]
fn a15_host_rules() {
    let cases: &[(&str, &[u8])] = &[
        ("no Host on 1.1", b"GET / HTTP/1.1\r\n\r\n"),
        ("two different", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
        (
            "two equal (our choice)",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
        ),
        ("absolute vs Host", b"GET http://a/ HTTP/1.1\r\nHost: b\r\n\r\n"),
        ("empty", b"GET / HTTP/1.1\r\nHost:\r\n\r\n"),
        ("space", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n"),
        ("userinfo", b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n"),
        ("slash", b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"),
        ("bad port", b"GET / HTTP/1.1\r\nHost: a:8x\r\n\r\n"),
        ("big port", b"GET / HTTP/1.1\r\nHost: a:99999\r\n\r\n"),
        ("bad IPv6", b"GET / HTTP/1.1\r\nHost: [::g]\r\n\r\n"),
        ("8-bit", b"GET / HTTP/1.1\r\nHost: caf\xc3\xa9\r\n\r\n"),
        ("bad on 1.0 too", b"GET / HTTP/1.0\r\nHost: a,b c\r\n\r\n"),
    ];
    for (what, bytes) in cases {
        check(&[(what, bytes, R400)]);
    }
    let h = parse(b"GET http://a/ HTTP/1.1\r\nHost: A\r\n\r\n").unwrap().unwrap();
    assert_eq!(h.authority(), b"a", "the target's authority wins");
    assert_eq!(h.fields().count(), 0, "Host is never forwarded as a field");
    let h = parse(b"GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
    assert_eq!(h.authority(), b"", "1.0 without Host");
    let h = parse(b"GET / HTTP/1.1\r\nHost: 10.0.0.1:8080\r\n\r\n")
        .unwrap()
        .unwrap();
    assert_eq!(h.authority(), b"10.0.0.1:8080");
}

#[test]
fn a16_connect_is_405() {
    check(&[
        (
            "A16",
            b"CONNECT evil:443 HTTP/1.1\r\nHost: evil:443\r\n\r\n",
            Want::Status(405),
        ),
        ("A16 no Host", b"CONNECT evil:443 HTTP/1.1\r\n\r\n", Want::Status(405)),
    ]);
}

#[test]
fn a17_upgrade() {
    // (a) h2c is stripped with its settings; the request goes on as plain HTTP/1.1.
    let h = parse(
        b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\nConnection: Upgrade, HTTP2-Settings\r\n\r\n",
    )
    .unwrap()
    .unwrap();
    assert_eq!(h.upgrade_protocol(), None);
    assert_eq!(h.fields().count(), 0);
    // h2 and h2c removed, the first other protocol kept.
    let h = parse(b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: H2C, h2, websocket, foo/2\r\nConnection: upgrade\r\n\r\n")
        .unwrap()
        .unwrap();
    assert_eq!(h.upgrade_protocol(), Some(&b"websocket"[..]));
    // (b) websocket, then a pipelined request: it starts at head_len, still HTTP.
    let bytes = b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n";
    let h = parse(bytes).unwrap().unwrap();
    assert_eq!(
        (h.upgrade_protocol(), h.body),
        (Some(&b"websocket"[..]), BodyKind::None)
    );
    assert_eq!(parse(&bytes[h.head_len..]).unwrap().unwrap().target(), b"/admin");
    // Upgrade without Connection: upgrade, or on 1.0, is ignored (and not forwarded).
    for bytes in [
        &b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n"[..],
        b"GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    ] {
        let h = parse(bytes).unwrap().unwrap();
        assert_eq!((h.upgrade_protocol(), h.fields().count()), (None, 0));
    }
    check(&[(
        "malformed Upgrade",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: web socket\r\n\r\n",
        R400,
    )]);
    // (c) a 200 to an upgrade request: no upgrade is written back.
    let r = parse_response(
        b"HTTP/1.1 200 OK\r\nUpgrade: websocket\r\nContent-Length: 0\r\n\r\n",
        &Limits::default(),
        false,
    )
    .unwrap()
    .unwrap();
    let mut out = Vec::new();
    write_response(
        &r,
        &ResponseFraming {
            body: r.body,
            keep_alive: true,
            upgrade: true,
        },
        &mut out,
    );
    assert_eq!(out, b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
}

#[test]
fn a19_connection_never_strips_framing_or_host() {
    let h = parse(b"POST / HTTP/1.1\r\nHost: a\r\nConnection: close, Content-Length\r\nContent-Length: 5\r\n\r\nhello")
        .unwrap()
        .unwrap();
    assert_eq!((h.body, h.keep_alive), (BodyKind::Length(5), false));
    let h = parse(
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Host, X-Secret, keep-alive\r\nX-Secret: 1\r\nX-Other: 2\r\n\r\n",
    )
    .unwrap()
    .unwrap();
    assert_eq!(h.authority(), b"a");
    let fields: Vec<_> = h.fields().collect();
    assert_eq!(fields, vec![(&b"X-Other"[..], &b"2"[..])]);
    // Hop-by-hop and forwarding fields are never forwarded.
    let h = parse(
        b"GET / HTTP/1.1\r\nHost: a\r\nKeep-Alive: 5\r\nProxy-Connection: x\r\nTE: trailers\r\nTrailer: X\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil\r\nForwarded: for=6.6.6.6\r\nX-Real-IP: 1.1.1.1\r\nProxy-Authorization: x\r\n\r\n",
    )
    .unwrap()
    .unwrap();
    let names: Vec<_> = h.fields().map(|(n, _)| n).collect();
    assert_eq!(names, vec![&b"X-Real-IP"[..], b"Proxy-Authorization"]);
    check(&[(
        "bad Connection token",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: a b\r\n\r\n",
        R400,
    )]);
}

#[test]
fn keep_alive_and_expect() {
    let ka = |bytes: &[u8]| parse(bytes).unwrap().unwrap().keep_alive;
    assert!(ka(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
    assert!(!ka(
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, CLOSE\r\n\r\n"
    ));
    assert!(!ka(b"GET / HTTP/1.0\r\n\r\n"));
    assert!(ka(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
    let h = parse(b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n")
        .unwrap()
        .unwrap();
    assert!(h.expect_continue);
    assert_eq!(h.field(b"expect"), Some(&b"100-Continue"[..]), "Expect is forwarded");
    let h = parse(b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: other\r\n\r\n")
        .unwrap()
        .unwrap();
    assert!(!h.expect_continue);
    assert_eq!(
        h.field(b"expect"),
        Some(&b"other"[..]),
        "other expectations are forwarded as is"
    );
}

#[test]
fn a21_underscores() {
    let bytes = b"GET / HTTP/1.1\r\nHost: a\r\nX_Forwarded_For: 1.2.3.4\r\nX-Forwarded-For: 5.6.7.8\r\nX_Custom: 2\r\nX-Ok: 1\r\nTransfer_Encoding: chunked\r\nContent_Length: 5\r\n\r\n";
    let with = |u| parse_request(bytes, &Limits::default(), u);
    let dropped = with(Underscores::Drop).unwrap().unwrap();
    assert_eq!(dropped.fields().map(|(n, _)| n).collect::<Vec<_>>(), vec![&b"X-Ok"[..]]);
    let allowed = with(Underscores::Allow).unwrap().unwrap();
    assert_eq!(
        allowed.fields().map(|(n, _)| n).collect::<Vec<_>>(),
        vec![&b"X_Custom"[..], b"X-Ok"],
        "Allow forwards underscore names, but none that reads as framing or forwarding"
    );
    assert_eq!(allowed.body, BodyKind::None, "underscore names never frame a body");
    assert_eq!(with(Underscores::Reject).unwrap_err().status, 400);
    // Our own XFF replaces the client's.
    let mut out = Vec::new();
    write_request(&dropped, &fwd(IpAddr::V4(Ipv4Addr::new(9, 9, 9, 9))), &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("x-forwarded-for: 9.9.9.9\r\n") && !text.contains("1.2.3.4") && !text.contains("5.6.7.8"));
}

#[test]
fn limits_414_431() {
    let limits = Limits {
        head_bytes_max: 1024,
        headers_max: 4,
        uri_bytes_max: 256,
        ..Limits::default()
    };
    let p = |b: &[u8]| {
        parse_request(b, &limits, Underscores::Drop)
            .map(|h| h.is_some())
            .map_err(|r| r.status)
    };
    let long_target = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(256));
    assert_eq!(p(long_target.as_bytes()), Err(414));
    assert_eq!(
        p(&long_target.as_bytes()[..270]),
        Err(414),
        "line incomplete, target already too long"
    );
    assert_eq!(p(&long_target.as_bytes()[..100]), Ok(false), "still within the limit");
    let long_method = format!("{} /", "M".repeat(400));
    assert_eq!(p(long_method.as_bytes()), Err(414), "request line over target + slack");
    let line_done = format!("GET /{} HTTP/1.1\r\n", "a".repeat(256));
    assert_eq!(p(line_done.as_bytes()), Err(414), "line complete, head not");
    let exact = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(255));
    assert_eq!(p(exact.as_bytes()), Ok(true));
    let many = "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\n";
    assert_eq!(p(many.as_bytes()), Err(431), "too many fields, head not complete");
    assert_eq!(
        p(b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 1\r\nC: 1\r\n\r\n"),
        Ok(true)
    );
    let big = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n", "v".repeat(1024));
    assert_eq!(p(big.as_bytes()), Err(431));
    assert_eq!(p(&big.as_bytes()[..1024]), Ok(false));
    // B4–B6 with the default limits.
    let flood = format!("GET / HTTP/1.1\r\nHost: a\r\n{}\r\n", "a: b\r\n".repeat(150));
    assert_eq!(outcome(flood.as_bytes()), Some(Want::Status(431)));
    let huge = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n", "v".repeat(70 * 1024));
    assert_eq!(outcome(huge.as_bytes()), Some(Want::Status(431)));
    let uri = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "u".repeat(100 * 1024));
    assert_eq!(outcome(uri.as_bytes()), Some(Want::Status(414)));
    // Incomplete heads are partial at every length.
    let full = b"GET /x HTTP/1.1\r\nHost: a\r\nX: 1\r\n\r\n";
    for n in 0..full.len() {
        assert!(matches!(parse(&full[..n]), Ok(None)), "prefix {n}");
    }
}

fn parse_resp(bytes: &[u8], head_request: bool) -> Result<ResponseHead, u16> {
    match parse_response(bytes, &Limits::default(), head_request) {
        Ok(Some(h)) => Ok(h),
        Ok(None) => Err(0),
        Err(r) => Err(r.status),
    }
}

#[test]
fn a23_bad_response_framing_is_502() {
    let cases: &[(&str, &[u8])] = &[
        (
            "CL+TE",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        ),
        (
            "differing CLs",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        ),
        (
            "chunked, chunked",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
        ),
        (
            "gzip, chunked (our choice)",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        ),
        (
            "two TE",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        ),
        ("TE on 1.0", b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
        ("bare CR", b"HTTP/1.1 200 OK\r\nX: a\rb\r\nContent-Length: 0\r\n\r\n"),
        ("bare LF", b"HTTP/1.1 200 OK\nContent-Length: 0\n\n"),
        (
            "obs-fold",
            b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n",
        ),
        (
            "CL+TE on 204",
            b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n",
        ),
        ("bad CL on HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"),
        ("status 099", b"HTTP/1.1 099 X\r\n\r\n"),
        ("junk", b"SSH-2.0-x\r\n\r\n"),
        ("HTTP/1.2", b"HTTP/1.2 200 OK\r\n\r\n"),
        ("NUL", b"HTTP/1.1 200 OK\r\nX: \0\r\n\r\n"),
    ];
    for (what, bytes) in cases {
        assert_eq!(parse_resp(bytes, false).map(|_| ()), Err(502), "{what}");
    }
    let flood = format!("HTTP/1.1 200 OK\r\n{}\r\n", "a: b\r\n".repeat(150));
    assert_eq!(parse_resp(flood.as_bytes(), false).map(|_| ()), Err(502));
    let huge = format!("HTTP/1.1 200 OK\r\nX: {}", "v".repeat(40 * 1024));
    assert_eq!(
        parse_resp(huge.as_bytes(), false).map(|_| ()),
        Err(502),
        "over head_bytes_max while incomplete"
    );
    // Bytes after a complete response: head_len and the framing say where it ends.
    let bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n\r\n";
    let h = parse_resp(bytes, false).unwrap();
    assert_eq!((h.head_len, h.body), (38, BodyKind::Length(2)));
}

#[test]
fn response_framing_and_keep_alive() {
    let h = parse_resp(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\nX: 1\r\n\r\n", false).unwrap();
    assert_eq!(
        (h.body, h.keep_alive, h.status, h.reason()),
        (BodyKind::Chunked, true, 200, &b"OK"[..])
    );
    let h = parse_resp(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n", true).unwrap();
    assert_eq!(
        (h.body, h.content_length(), h.keep_alive),
        (BodyKind::None, Some(7), true)
    );
    for status in ["100 Continue", "204 No Content", "304 Not Modified", "103 Early Hints"] {
        let bytes = format!("HTTP/1.1 {status}\r\nContent-Length: 7\r\n\r\n");
        assert_eq!(
            parse_resp(bytes.as_bytes(), false).unwrap().body,
            BodyKind::None,
            "{status}"
        );
    }
    let h = parse_resp(b"HTTP/1.1 200 OK\r\n\r\n", false).unwrap();
    assert_eq!((h.body, h.keep_alive), (BodyKind::UntilClose, false));
    let h = parse_resp(
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        false,
    )
    .unwrap();
    assert!(!h.keep_alive);
    let h = parse_resp(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false).unwrap();
    assert!(!h.keep_alive);
    let h = parse_resp(
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
        false,
    )
    .unwrap();
    assert!(h.keep_alive);
    let h = parse_resp(b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n", false).unwrap();
    assert_eq!((h.body, h.keep_alive), (BodyKind::None, false));
    let h = parse_resp(b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", false).unwrap();
    assert_eq!(h.reason(), b"");
    let h = parse_resp(b"HTTP/1.1 200 \xe9t\xe9\r\nContent-Length: 0\r\n\r\n", false).unwrap();
    assert_eq!(h.reason(), b"", "obs-text reason dropped");
    let h = parse_resp(
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade, X-Hop\r\nUpgrade: websocket\r\nX-Hop: 1\r\nSec-WebSocket-Accept: k\r\n\r\n",
        false,
    )
    .unwrap();
    assert_eq!(
        (h.body, h.keep_alive, h.upgrade_protocol()),
        (BodyKind::None, false, Some(&b"websocket"[..]))
    );
    assert_eq!(
        h.fields().map(|(n, _)| n).collect::<Vec<_>>(),
        vec![&b"Sec-WebSocket-Accept"[..]]
    );
    // Incomplete: partial at every length.
    let full = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    for n in 0..full.len() {
        assert!(
            matches!(parse_response(&full[..n], &Limits::default(), false), Ok(None)),
            "prefix {n}"
        );
    }
}

fn fwd(ip: IpAddr) -> Forwarding {
    Forwarding {
        client_ip: ip,
        proto: "http",
        body: BodyKind::None,
        keep_alive: true,
        upgrade: false,
    }
}

#[test]
fn write_request_exact_bytes() {
    let h = parse(b"POST http://a.example/up?x HTTP/1.1\r\nX-A: 1\r\nconnection: close\r\nTransfer-Encoding: chunked\r\nx-b:  two words \r\n\r\n")
        .unwrap()
        .unwrap();
    let mut out = b"kept".to_vec();
    let f = Forwarding {
        body: h.body,
        keep_alive: h.keep_alive,
        ..fwd(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)))
    };
    write_request(&h, &f, &mut out).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "keptPOST /up?x HTTP/1.1\r\nhost: a.example\r\nX-A: 1\r\nx-b: two words\r\ntransfer-encoding: chunked\r\n\
         x-forwarded-for: 10.0.0.1\r\nx-forwarded-proto: http\r\nforwarded: for=10.0.0.1;proto=http\r\n\
         connection: close\r\n\r\n"
    );

    let h = parse(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n")
        .unwrap()
        .unwrap();
    let mut out = Vec::new();
    let f = Forwarding {
        upgrade: true,
        body: BodyKind::Length(0),
        ..fwd(IpAddr::V6(Ipv6Addr::LOCALHOST))
    };
    write_request(&h, &f, &mut out).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "GET /ws HTTP/1.1\r\nhost: a\r\ncontent-length: 0\r\nx-forwarded-for: ::1\r\nx-forwarded-proto: http\r\n\
         forwarded: for=\"[::1]\";proto=http\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n"
    );

    // HTTP/1.0 without Host: forwarded as 1.0 without Host.
    let h = parse(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .unwrap()
        .unwrap();
    let local = fwd(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let mut out = Vec::new();
    write_request(&h, &local, &mut out).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "GET / HTTP/1.0\r\nx-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: http\r\n\
         forwarded: for=127.0.0.1;proto=http\r\nconnection: keep-alive\r\n\r\n"
    );
    let mut out = Vec::new();
    let r = write_request(
        &h,
        &Forwarding {
            body: BodyKind::Chunked,
            ..local
        },
        &mut out,
    );
    assert_eq!((r.map_err(|r| r.status), out.len()), (Err(500), 0));
    // With Host, a 1.0 request goes out as 1.1.
    let h = parse(b"GET / HTTP/1.0\r\nHost: a\r\n\r\n").unwrap().unwrap();
    let mut out = Vec::new();
    write_request(
        &h,
        &Forwarding {
            keep_alive: false,
            ..local
        },
        &mut out,
    )
    .unwrap();
    assert!(out.starts_with(b"GET / HTTP/1.1\r\nhost: a\r\n"));
    assert!(out.ends_with(b"connection: close\r\n\r\n"));
    // An upgrade keeps the client's close.
    let h = parse(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade, close\r\nUpgrade: websocket\r\n\r\n")
        .unwrap()
        .unwrap();
    let mut out = Vec::new();
    write_request(
        &h,
        &Forwarding {
            upgrade: true,
            keep_alive: h.keep_alive,
            ..local
        },
        &mut out,
    )
    .unwrap();
    assert!(out.ends_with(b"connection: upgrade, close\r\nupgrade: websocket\r\n\r\n"));
}

#[test]
fn a20_injected_values_are_never_written() {
    let h = parse(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap().unwrap();
    let mut out = b"before".to_vec();
    for proto in ["ht\r\ntp", "http\0", "", "h p"] {
        let r = write_request(
            &h,
            &Forwarding {
                proto,
                ..fwd(IpAddr::V4(Ipv4Addr::LOCALHOST))
            },
            &mut out,
        );
        assert_eq!(r.map_err(|r| r.status), Err(500), "{proto:?}");
        assert_eq!(out, b"before", "nothing written on error");
    }
    let r = write_request(
        &h,
        &Forwarding {
            body: BodyKind::UntilClose,
            ..fwd(IpAddr::V4(Ipv4Addr::LOCALHOST))
        },
        &mut out,
    );
    assert_eq!(r.map_err(|r| r.status), Err(500));
    assert_eq!(out, b"before");
}

#[test]
fn write_response_exact_bytes() {
    let h = parse_resp(
        b"HTTP/1.0 404 Nope\r\nX-A: 1\r\nContent-Length: 3\r\nKeep-Alive: 5\r\n\r\n",
        false,
    )
    .unwrap();
    let mut out = Vec::new();
    write_response(
        &h,
        &ResponseFraming {
            body: BodyKind::Chunked,
            keep_alive: false,
            upgrade: false,
        },
        &mut out,
    );
    assert_eq!(
        out,
        b"HTTP/1.1 404 Nope\r\nX-A: 1\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );

    let h = parse_resp(b"HTTP/1.1 204\r\n\r\n", false).unwrap();
    let mut out = Vec::new();
    write_response(
        &h,
        &ResponseFraming {
            body: BodyKind::Length(9),
            keep_alive: true,
            upgrade: false,
        },
        &mut out,
    );
    assert_eq!(out, b"HTTP/1.1 204 \r\n\r\n", "no framing on 204, empty reason kept");

    let h = parse_resp(b"HTTP/1.1 100 Continue\r\n\r\n", false).unwrap();
    let mut out = Vec::new();
    write_response(
        &h,
        &ResponseFraming {
            body: BodyKind::None,
            keep_alive: true,
            upgrade: false,
        },
        &mut out,
    );
    assert_eq!(out, b"HTTP/1.1 100 Continue\r\n\r\n", "a relayed 100");

    let h = parse_resp(
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
        false,
    )
    .unwrap();
    let mut out = Vec::new();
    write_response(
        &h,
        &ResponseFraming {
            body: BodyKind::None,
            keep_alive: false,
            upgrade: true,
        },
        &mut out,
    );
    assert_eq!(
        out,
        b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n"
    );

    let h = parse_resp(b"HTTP/1.1 200 OK\r\n\r\n", false).unwrap();
    let mut out = Vec::new();
    write_response(
        &h,
        &ResponseFraming {
            body: BodyKind::UntilClose,
            keep_alive: false,
            upgrade: false,
        },
        &mut out,
    );
    assert_eq!(out, b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n");
}

#[test]
fn error_responses() {
    let mut out = Vec::new();
    error_response(400, &mut out);
    assert_eq!(
        out,
        b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: 12\r\nconnection: close\r\n\r\nBad Request\n"
    );
    for status in [400, 405, 408, 413, 414, 417, 431, 500, 501, 502, 503, 504, 599, 7] {
        let mut out = Vec::new();
        error_response(status, &mut out);
        let r = parse_resp(&out, false).unwrap();
        assert!(!r.keep_alive);
        let BodyKind::Length(n) = r.body else {
            panic!("{status}: {:?}", r.body)
        };
        assert_eq!(n as usize, out.len() - r.head_len, "{status}");
        assert_eq!(r.status, if status == 7 { 500 } else { status });
    }
}

// ---- properties ----

/// A valid request: method, target (origin or absolute form), Host (left out for some
/// HTTP/1.0 ones), framing, Connection options, Upgrade, Expect and random fields.
fn request_strategy() -> impl Strategy<Value = Vec<u8>> {
    let method = prop::sample::select(vec![
        "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "X-CUSTOM",
    ]);
    let path = "/[a-zA-Z0-9/._~%!$&'()*+,;=:@-]{0,20}(\\?[a-zA-Z0-9=&/?-]{0,10})?";
    let host = "[a-zA-Z0-9.-]{1,12}(:[1-9][0-9]{0,3})?";
    let field = ("[A-Za-z][A-Za-z0-9_-]{0,10}", "[!-~]([ -~]{0,14}[!-~])?");
    let framing = prop_oneof![Just(None), (0u64..1_000_000).prop_map(Some)];
    let connection = prop::sample::select(vec!["", "close", "keep-alive", "upgrade", "Upgrade, close", "x-hop"]);
    let extra = prop::sample::select(vec![
        "",
        "Upgrade: websocket\r\n",
        "Expect: 100-continue\r\n",
        "X-Hop: 1\r\n",
    ]);
    (
        (method, path, host, any::<bool>(), any::<bool>(), any::<bool>()),
        (framing, any::<bool>(), connection, extra),
        prop::collection::vec(field, 0..6),
    )
        .prop_map(
            |((method, path, host, absolute, h10, no_host), (cl, chunked, connection, extra), fields)| {
                let version = if h10 { "1.0" } else { "1.1" };
                let target = if absolute { format!("http://{host}{path}") } else { path };
                let mut s = format!("{method} {target} HTTP/{version}\r\n");
                if !(h10 && no_host) {
                    s.push_str(&format!("Host: {host}\r\n"));
                }
                for (n, v) in fields {
                    let lower = n.to_ascii_lowercase().replace('_', "-");
                    if !["host", "content-length", "transfer-encoding", "connection", "upgrade"]
                        .contains(&lower.as_str())
                    {
                        s.push_str(&format!("{n}: {v}\r\n"));
                    }
                }
                if !connection.is_empty() {
                    s.push_str(&format!("Connection: {connection}\r\n"));
                }
                s.push_str(extra);
                if chunked && !h10 {
                    s.push_str("Transfer-Encoding: chunked\r\n");
                } else if let Some(n) = cl {
                    s.push_str(&format!("Content-Length: {n}\r\n"));
                }
                s.push_str("\r\n");
                s.into_bytes()
            },
        )
}

/// Everything the proxy takes from a request head: two heads equal in this are
/// forwarded alike.
#[allow(clippy::type_complexity)]
fn summary(
    h: &RequestHead,
) -> (
    Vec<u8>,
    Vec<u8>,
    Vec<u8>,
    BodyKind,
    bool,
    bool,
    Option<Vec<u8>>,
    Vec<(Vec<u8>, Vec<u8>)>,
) {
    (
        h.method().to_vec(),
        h.target().to_vec(),
        h.authority().to_vec(),
        h.body,
        h.keep_alive,
        h.expect_continue,
        h.upgrade_protocol().map(<[u8]>::to_vec),
        h.fields().map(|(n, v)| (n.to_vec(), v.to_vec())).collect(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// A request we accept, written by us and parsed again, means the same.
    #[test]
    fn prop_request_roundtrip(bytes in request_strategy(), ipv6 in any::<bool>(), underscores in prop::sample::select(vec![Underscores::Allow, Underscores::Drop])) {
        let first = parse_request(&bytes, &Limits::default(), underscores).unwrap().unwrap();
        prop_assert_eq!(first.head_len, bytes.len());
        let ip = if ipv6 { IpAddr::V6(Ipv6Addr::LOCALHOST) } else { IpAddr::V4(Ipv4Addr::LOCALHOST) };
        let f = Forwarding { body: first.body, keep_alive: first.keep_alive, upgrade: first.upgrade.is_some(), ..fwd(ip) };
        let mut out = Vec::new();
        write_request(&first, &f, &mut out).unwrap();
        let second = parse_request(&out, &Limits::default(), Underscores::Allow).unwrap().unwrap();
        prop_assert_eq!(second.head_len, out.len());
        prop_assert_eq!(summary(&first), summary(&second));
        let mut again = Vec::new();
        write_request(&second, &f, &mut again).unwrap();
        prop_assert_eq!(out, again, "writing is idempotent");
    }

    /// Parsing into a head kept from earlier parses (as the proxy's per-worker pool
    /// does) gives exactly what a fresh parse gives, whatever came before: longer or
    /// shorter heads, refused ones, incomplete ones.
    #[test]
    fn prop_parse_into_a_reused_head_is_a_fresh_parse(
        seq in prop::collection::vec(
            prop_oneof![
                4 => request_strategy(),
                1 => prop::collection::vec(any::<u8>(), 0..120),
                1 => request_strategy().prop_map(|mut v| { v.truncate(v.len() / 2); v }),
            ],
            1..6,
        ),
        underscores in prop::sample::select(vec![Underscores::Allow, Underscores::Drop, Underscores::Reject]),
    ) {
        let limits = Limits::default();
        let mut kept = RequestHead::empty();
        for bytes in &seq {
            let fresh = parse_request(bytes, &limits, underscores);
            let reused = parse_request_into(bytes, &limits, underscores, &mut kept);
            match (fresh, reused) {
                (Ok(Some(h)), Ok(true)) => prop_assert_eq!(format!("{h:?}"), format!("{kept:?}")),
                (Ok(None), Ok(false)) => {}
                (Err(a), Err(b)) => prop_assert_eq!(a.status, b.status),
                (a, b) => prop_assert!(false, "fresh {:?}, reused {:?}", a.map(|h| h.is_some()), b),
            }
        }
        let mut kept = ResponseHead::empty();
        for bytes in &seq {
            // The same bytes as a response after a fixed status line: fields, framing
            // and refusals differ from one head to the next.
            let text = String::from_utf8_lossy(bytes);
            let rest = text.split_once("\r\n").map_or("\r\n", |(_, r)| r);
            let resp = format!("HTTP/1.1 200 OK\r\n{rest}");
            let fresh = parse_response(resp.as_bytes(), &limits, false);
            let reused = parse_response_into(resp.as_bytes(), &limits, false, &mut kept);
            match (fresh, reused) {
                (Ok(Some(h)), Ok(true)) => prop_assert_eq!(format!("{h:?}"), format!("{kept:?}")),
                (Ok(None), Ok(false)) => {}
                (Err(a), Err(b)) => prop_assert_eq!(a.status, b.status),
                (a, b) => prop_assert!(false, "fresh {:?}, reused {:?}", a.map(|h| h.is_some()), b),
            }
        }
    }

    /// A response we accept, written by us and parsed again, means the same: status,
    /// reason, framing, keep-alive, fields.
    #[test]
    fn prop_response_roundtrip(
        h10 in any::<bool>(),
        status in prop::sample::select(vec![100u16, 101, 200, 204, 206, 304, 404, 500, 599, 999]),
        reason in "([!-~][ -~]{0,10})?",
        framing in 0u8..3,
        n in any::<u64>(),
        connection in prop::sample::select(vec!["", "close", "keep-alive", "upgrade", "x-hop"]),
        fields in prop::collection::vec(("[A-Za-z][A-Za-z0-9_-]{0,10}", "[!-~]([ -~]{0,14}[!-~])?"), 0..6),
        head_request in any::<bool>(),
    ) {
        let mut s = format!("HTTP/1.{} {status} {reason}\r\n", if h10 { 0 } else { 1 });
        for (name, value) in fields {
            s.push_str(&format!("{name}: {value}\r\n"));
        }
        if !connection.is_empty() {
            s.push_str(&format!("Connection: {connection}\r\nUpgrade: websocket\r\nX-Hop: 1\r\n"));
        }
        match framing {
            0 => {}
            1 => s.push_str(&format!("Content-Length: {n}\r\n")),
            _ if !h10 => s.push_str("Transfer-Encoding: chunked\r\n"),
            _ => {}
        }
        s.push_str("\r\n");
        let first = match parse_response(s.as_bytes(), &Limits::default(), head_request) {
            Ok(Some(h)) => h,
            // Field names drawn at random may say Content-Length or Transfer-Encoding.
            Err(_) => return Ok(()),
            Ok(None) => panic!("incomplete: {s:?}"),
        };
        let f = ResponseFraming { body: first.body, keep_alive: first.keep_alive, upgrade: status == 101 };
        let mut out = Vec::new();
        write_response(&first, &f, &mut out);
        let second = parse_response(&out, &Limits::default(), head_request).unwrap().unwrap();
        prop_assert_eq!(second.head_len, out.len());
        prop_assert_eq!((first.status, first.body, first.keep_alive), (second.status, second.body, second.keep_alive));
        prop_assert_eq!(first.reason(), second.reason());
        prop_assert_eq!(first.fields().collect::<Vec<_>>(), second.fields().collect::<Vec<_>>());
        let mut again = Vec::new();
        write_response(&second, &f, &mut again);
        prop_assert_eq!(out, again, "writing is idempotent");
    }

    /// Any payload, chunked by us and split anywhere, decodes to itself.
    #[test]
    fn prop_chunked_roundtrip(
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..40), 0..8),
        splits in prop::collection::vec(1usize..50, 1..20),
    ) {
        let mut wire = Vec::new();
        for c in &chunks {
            encode_chunk_header(c.len(), &mut wire);
            wire.extend_from_slice(c);
            wire.extend_from_slice(CHUNK_DATA_END);
        }
        encode_last_chunk(b"x-t: 1\r\n", &mut wire);
        wire.extend_from_slice(b"tail");
        let mut d = ChunkedDecoder::new(&Limits::default());
        let (mut payload, mut pos, mut fed) = (Vec::new(), 0, 0);
        let mut split = splits.iter().cycle();
        loop {
            fed = (fed + split.next().copied().unwrap_or(1)).min(wire.len()).max(pos);
            let step = d.decode(&wire[pos..fed]).unwrap();
            payload.extend_from_slice(&wire[pos..fed][step.data.clone()]);
            pos += step.consumed;
            if step.done {
                break;
            }
            prop_assert!(fed < wire.len() || step.consumed > 0, "stuck at {}", pos);
        }
        prop_assert_eq!(payload, chunks.concat());
        prop_assert_eq!(&wire[pos..], b"tail");
        prop_assert_eq!(d.trailers(), b"x-t: 1\r\n");
    }

    /// No input makes the parsers or the decoder panic.
    #[test]
    fn prop_no_panic(bytes in prop::collection::vec(any::<u8>(), 0..300), at in any::<prop::sample::Index>()) {
        let _ = parse(&bytes);
        let _ = parse_response(&bytes, &Limits::default(), false);
        let mut d = ChunkedDecoder::new(&Limits::default());
        let _ = d.decode(&bytes);
        // Random bytes spliced into a valid request reach deeper states.
        let mut spliced = b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        let i = at.index(spliced.len());
        spliced.splice(i..i, bytes.iter().copied().take(8));
        if let Ok(Some(h)) = parse(&spliced) {
            let mut out = Vec::new();
            let _ = write_request(&h, &fwd(IpAddr::V4(Ipv4Addr::LOCALHOST)), &mut out);
        }
        let mut chunked = b"5;a=b\r\nhello\r\n0\r\nX: 1\r\n\r\n".to_vec();
        let i = at.index(chunked.len());
        chunked.splice(i..i, bytes.iter().copied().take(4));
        let mut d = ChunkedDecoder::new(&Limits::default());
        let mut pos = 0;
        while let Ok(s) = d.decode(&chunked[pos..]) {
            if s.consumed == 0 {
                break;
            }
            pos += s.consumed;
        }
    }

    /// Content-Length: any u64 in decimal is accepted exactly; garbage around it is not.
    #[test]
    fn prop_content_length(n in any::<u64>(), prefix in "[+\\-,;.xXa-fA-F/=\"]{0,2}", suffix in "[+\\-,;.xXa-fA-F/=\" ]{0,2}[+\\-,;.xXa-fA-F/=\"]") {
        let ok = post(&format!("Content-Length: {n}\r\n"));
        prop_assert_eq!(outcome(&ok), Some(Want::Body(BodyKind::Length(n))));
        let bad = post(&format!("Content-Length: {prefix}{n}{suffix}\r\n"));
        prop_assert_eq!(outcome(&bad), Some(R400));
        if !prefix.is_empty() {
            let bad = post(&format!("Content-Length: {prefix}{n}\r\n"));
            prop_assert_eq!(outcome(&bad), Some(R400));
        }
    }
}

/// What `scan` relies on instead of re-reading every byte: httparse 1.10 (strict
/// defaults) refuses a field name byte that is not a tchar and a field value byte that
/// is not HTAB/SP/VCHAR/obs-text, on every path (the SIMD block matchers handle 32, 16
/// and 8 bytes at a time, then byte by byte), and trims OWS off values. Every byte
/// value at every offset of a long name and value, through `parse_request` and
/// `parse_response`.
#[test]
fn httparse_guarantees_field_bytes() {
    use super::lex::{is_field_vchar, is_tchar};
    for at in 0..40 {
        for b in 0..=255u8 {
            let mut value = vec![b'v'; 40];
            value[at] = b;
            let mut req = b"GET / HTTP/1.1\r\nHost: a\r\nX-Long: ".to_vec();
            req.extend_from_slice(&value);
            req.extend_from_slice(b"\r\n\r\n");
            // CR and LF end the line early: bare, they are refused for that reason.
            let want = is_field_vchar(b) && b != b'\r' && b != b'\n';
            assert_eq!(parse(&req).is_ok(), want, "value byte {b:#04x} at {at}");
            let mut resp = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Long: ".to_vec();
            resp.extend_from_slice(&value);
            resp.extend_from_slice(b"\r\n\r\n");
            assert_eq!(parse_response(&resp, &Limits::default(), false).is_ok(), want);

            let mut name = vec![b'n'; 40];
            name[at] = b;
            let mut req = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
            req.extend_from_slice(&name);
            req.extend_from_slice(b": v\r\n\r\n");
            // A colon inside ends the name there: the rest is the value.
            let want = is_tchar(b) || (b == b':' && at > 0);
            assert_eq!(parse(&req).is_ok(), want, "name byte {b:#04x} at {at}");
        }
    }
    let h = parse(b"GET / HTTP/1.1\r\nHost: a\r\nX-A: \t v \t \r\nX-B:\t\r\n\r\n")
        .unwrap()
        .unwrap();
    assert_eq!(h.field(b"x-a"), Some(&b"v"[..]));
    assert_eq!(h.field(b"x-b"), Some(&b""[..]));
}
