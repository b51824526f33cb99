#!/usr/bin/env python3
"""Writes the fuzz seed corpora: seeds/<target>/<name>, one raw input per file.

The HTTP seeds are the byte vectors of RELIABILITY.md section A (the row id leads each
file name) plus valid messages; the config seeds are config/*.ron. Rerun after editing
(`python3 fuzz/seeds/gen.py`); files of this script's names are overwritten, any other
file (a crash input added as a regression seed, named `crash-*`) is left alone.
"""
import os
import shutil

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def req(start, *fields, body=b""):
    head = start + b"\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n"
    return head + body


def post_with(*fields, body=b""):
    return req(b"POST / HTTP/1.1", b"Host: a", *fields, body=body)


REQUESTS = {
    # Valid requests.
    "ok-get": req(b"GET / HTTP/1.1", b"Host: example.com"),
    "ok-get-fields": req(b"GET /a/b?c=d&e HTTP/1.1", b"Host: example.com:8080", b"User-Agent: fuzz/1.0",
                         b"Accept: */*", b"Cookie: a=b; c=d", b"X-Empty:"),
    "ok-get-10": req(b"GET /old HTTP/1.0"),
    "ok-get-10-keepalive": req(b"GET / HTTP/1.0", b"Host: a", b"Connection: keep-alive"),
    "ok-head": req(b"HEAD /x HTTP/1.1", b"Host: a", b"Connection: close"),
    "ok-post-cl": post_with(b"Content-Length: 5", body=b"hello"),
    "ok-post-chunked": post_with(b"Transfer-Encoding: chunked", body=b"5\r\nhello\r\n0\r\n\r\n"),
    "ok-options-star": req(b"OPTIONS * HTTP/1.1", b"Host: a"),
    "ok-absolute": req(b"GET http://a.example/p?q HTTP/1.1", b"Host: a.example"),
    "ok-expect": post_with(b"Content-Length: 3", b"Expect: 100-continue", body=b"abc"),
    "ok-websocket": req(b"GET /ws HTTP/1.1", b"Host: a", b"Connection: Upgrade", b"Upgrade: websocket",
                        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", b"Sec-WebSocket-Version: 13"),
    "ok-pipelined": req(b"GET /1 HTTP/1.1", b"Host: a") + req(b"GET /2 HTTP/1.1", b"Host: a"),
    "ok-forwarded-replaced": req(b"GET / HTTP/1.1", b"Host: a", b"X-Forwarded-For: 10.0.0.1",
                                 b"Forwarded: for=10.0.0.1", b"X-Forwarded-Proto: https", b"X-Forwarded-Host: evil"),
    "ok-ipv6-host": req(b"GET / HTTP/1.1", b"Host: [::1]:8080"),
    "incomplete": b"GET / HTTP/1.1\r\nHost: a\r\n",
    # A1-A2: CL and TE together, and TE spacing variants.
    "A01-cl-te": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nX",
    "A02-te-cl": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n0\r\n\r\nX",
    "A02-te-tab": post_with(b"Transfer-Encoding:\tchunked", b"Content-Length: 6", body=b"0\r\n\r\nX"),
    "A02-te-trailing-space": post_with(b"Transfer-Encoding: chunked ", b"Content-Length: 6", body=b"0\r\n\r\nX"),
    # A3-A5: Content-Length.
    "A03-cl-differ": post_with(b"Content-Length: 5", b"Content-Length: 6", body=b"hello!"),
    "A04-cl-list": post_with(b"Content-Length: 5, 6", body=b"hello!"),
    "A04-cl-trailing-comma": post_with(b"Content-Length: 0,"),
    "A04-cl-empty": post_with(b"Content-Length:"),
    "A04-cl-same-list": post_with(b"Content-Length: 5, 5", body=b"hello"),
    "A04-cl-same-twice": post_with(b"Content-Length: 5", b"Content-Length: 5", body=b"hello"),
    "A05-cl-plus": post_with(b"Content-Length: +5", body=b"hello"),
    "A05-cl-minus": post_with(b"Content-Length: -1"),
    "A05-cl-hex": post_with(b"Content-Length: 0x5", body=b"hello"),
    "A05-cl-space": post_with(b"Content-Length: 5 5", body=b"hello"),
    "A05-cl-letter": post_with(b"Content-Length: 5a", body=b"hello"),
    "A05-cl-overflow": post_with(b"Content-Length: 99999999999999999999"),
    "A05-cl-u64-max": post_with(b"Content-Length: 18446744073709551615"),
    "A05-cl-u64-max-plus1": post_with(b"Content-Length: 18446744073709551616"),
    # A6-A7: Transfer-Encoding.
    "A06-te-gzip": post_with(b"Transfer-Encoding: gzip", body=b"x"),
    "A06-te-chunked-gzip": post_with(b"Transfer-Encoding: chunked, gzip", body=b"0\r\n\r\n"),
    "A06-te-gzip-chunked": post_with(b"Transfer-Encoding: gzip, chunked", body=b"0\r\n\r\n"),
    "A06-te-identity": post_with(b"Transfer-Encoding: identity", body=b"x"),
    "A07-te-chunked-chunked": post_with(b"Transfer-Encoding: chunked, chunked", body=b"0\r\n\r\n"),
    "A07-te-two-lines": post_with(b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked", body=b"0\r\n\r\n"),
    "A07-te-xchunked": post_with(b"Transfer-Encoding: xchunked", body=b"0\r\n\r\n"),
    "A07-te-space-colon": post_with(b"Transfer-Encoding : chunked", body=b"0\r\n\r\n"),
    "A07-te-vtab": post_with(b"Transfer-Encoding:\x0bchunked", body=b"0\r\n\r\n"),
    "A07-te-ext": post_with(b"Transfer-Encoding: chunked;ext=1", body=b"0\r\n\r\n"),
    "A07-te-upper": post_with(b"Transfer-Encoding: CHUNKED", body=b"0\r\n\r\n"),
    # A8-A9.
    "A08-te-http10": b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "A09-http10-smuggled": b"GET / HTTP/1.0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    "A09-http11-trailing": b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    # A11-A13: field syntax.
    "A11-host-space-colon": req(b"GET / HTTP/1.1", b"Host : a"),
    "A11-cl-space-colon": post_with(b"Content-Length : 5", body=b"hello"),
    "A12-obs-fold": req(b"GET / HTTP/1.1", b"Host: a", b"X: a", b" b"),
    "A12-obs-fold-te": post_with(b"Transfer-Encoding:", b" chunked", body=b"0\r\n\r\n"),
    "A13-nul-name": req(b"GET / HTTP/1.1", b"Host: a", b"X\x00Y: a"),
    "A13-nul-value": req(b"GET / HTTP/1.1", b"Host: a", b"X: a\x00b"),
    "A13-bare-cr": req(b"GET / HTTP/1.1", b"Host: a", b"X: a\rb"),
    "A13-del": req(b"GET / HTTP/1.1", b"Host: a", b"X: a\x7fb"),
    "A13-8bit-name": req(b"GET / HTTP/1.1", b"Host: a", b"X\xe9: a"),
    "A13-8bit-value": req(b"GET / HTTP/1.1", b"Host: a", b"X: caf\xc3\xa9"),
    "A13-bare-lf": b"GET / HTTP/1.1\nHost: a\n\n",
    # A14: request target and version.
    "A14-target-no-slash": req(b"GET admin HTTP/1.1", b"Host: a"),
    "A14-get-star": req(b"GET * HTTP/1.1", b"Host: a"),
    "A14-options-star-path": req(b"OPTIONS */x HTTP/1.1", b"Host: a"),
    "A14-target-hash": req(b"GET /a#frag HTTP/1.1", b"Host: a"),
    "A14-target-8bit": req(b"GET /caf\xc3\xa9 HTTP/1.1", b"Host: a"),
    "A14-target-ctl": req(b"GET /a\x01b HTTP/1.1", b"Host: a"),
    "A14-http12": req(b"GET / HTTP/1.2", b"Host: a"),
    "A14-http11-nodot": req(b"GET / HTTP/11", b"Host: a"),
    "A14-http09": b"GET /\r\n\r\n",
    "A14-long-target": req(b"GET /" + b"a" * 9000 + b" HTTP/1.1", b"Host: a"),
    # A15: Host.
    "A15-no-host": req(b"GET / HTTP/1.1"),
    "A15-two-hosts": req(b"GET / HTTP/1.1", b"Host: a", b"Host: b"),
    "A15-same-hosts": req(b"GET / HTTP/1.1", b"Host: a", b"Host: a"),
    "A15-absolute-other-host": req(b"GET http://a/ HTTP/1.1", b"Host: b"),
    "A15-bad-authority": req(b"GET / HTTP/1.1", b"Host: a b/c@d"),
    "A15-empty-host": req(b"GET / HTTP/1.1", b"Host:"),
    # A16-A17.
    "A16-connect": req(b"CONNECT evil:443 HTTP/1.1", b"Host: evil:443"),
    "A17-h2c": req(b"GET / HTTP/1.1", b"Host: a", b"Connection: Upgrade, HTTP2-Settings", b"Upgrade: h2c",
                   b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"),
    "A17-websocket-pipelined": req(b"GET /ws HTTP/1.1", b"Host: a", b"Connection: Upgrade",
                                   b"Upgrade: websocket") + req(b"GET /admin HTTP/1.1", b"Host: a"),
    "A17-upgrade-no-connection": req(b"GET / HTTP/1.1", b"Host: a", b"Upgrade: websocket"),
    # A18-A22.
    "A18-body-smuggled": post_with(b"Content-Length: 100",
                                   body=(b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n").ljust(100, b"x")),
    "A19-connection-cl": post_with(b"Connection: close, Content-Length", b"Content-Length: 5", body=b"hello"),
    "A19-connection-host": req(b"GET / HTTP/1.1", b"Host: a", b"Connection: Host"),
    "A19-connection-te": post_with(b"Connection: Transfer-Encoding", b"Transfer-Encoding: chunked",
                                   body=b"0\r\n\r\n"),
    "A19-connection-custom": req(b"GET / HTTP/1.1", b"Host: a", b"Connection: X-Drop, keep-alive", b"X-Drop: 1",
                                 b"Keep-Alive: timeout=5", b"Proxy-Connection: keep-alive", b"TE: trailers"),
    "A20-bare-cr-value": req(b"GET / HTTP/1.1", b"Host: a", b"X-Pass: a\rb"),
    "A21-underscore": req(b"GET / HTTP/1.1", b"Host: a", b"X_Forwarded_For: 1.2.3.4",
                          b"X-Forwarded-For: 5.6.7.8"),
    "A21-underscore-cl": post_with(b"Content_Length: 5", b"Content-Length: 3", body=b"abc"),
    "A22-expect": post_with(b"Content-Length: 4", b"Expect: 100-continue", body=b"body"),
    # B-ish: many fields.
    "many-fields": req(b"GET / HTTP/1.1", b"Host: a", *[b"X-F%d: v" % i for i in range(120)]),
}

CHUNKED = {
    # Valid bodies.
    "ok-one": b"5\r\nhello\r\n0\r\n\r\n",
    "ok-two": b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    "ok-empty": b"0\r\n\r\n",
    "ok-hex-upper": b"A\r\n0123456789\r\n0\r\n\r\n",
    "ok-hex-lower-leading-zeros": b"000a\r\n0123456789\r\n0000\r\n\r\n",
    "ok-ext": b"5;name=value;x\r\nhello\r\n0;last\r\n\r\n",
    "ok-ext-quoted": b"5;name=\"quoted value\"\r\nhello\r\n0\r\n\r\n",
    "ok-trailers": b"3\r\nabc\r\n0\r\nX-Checksum: 42\r\nX-Other: a b\r\n\r\n",
    "ok-trailer-framing": b"3\r\nabc\r\n0\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\nX-Ok: 1\r\n\r\n",
    "ok-then-next": b"1\r\na\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    "ok-bytes": b"1\r\n\x00\r\n2\r\n\r\n\r\n3\r\n\xff\xfe\xfd\r\n0\r\n\r\n",
    "incomplete": b"5\r\nhel",
    # A1: the body after CL.TE.
    "A01-then-x": b"0\r\n\r\nX",
    # A10: chunk framing.
    "A10-size-overflow": b"ffffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
    "A10-size-u64-max": b"ffffffffffffffff\r\nabc",
    "A10-size-0x": b"0x5\r\nhello\r\n0\r\n\r\n",
    "A10-size-minus": b"-1\r\na\r\n0\r\n\r\n",
    "A10-size-plus": b"+5\r\nhello\r\n0\r\n\r\n",
    "A10-size-empty": b"\r\nhello\r\n0\r\n\r\n",
    "A10-size-space": b"5 \r\nhello\r\n0\r\n\r\n",
    "A10-missing-crlf": b"5\r\nhelloX0\r\n\r\n",
    "A10-bare-lf-ext": b"5;\nhello\r\n0\r\n\r\n",
    "A10-bare-lf-size": b"5\nhello\n0\n\n",
    "A10-bare-semicolon": b"5;\r\nhello\r\n0\r\n\r\n",
    "A10-nul-ext": b"5;a\x00b\r\nhello\r\n0\r\n\r\n",
    "A10-long-ext": b"1;" + b"a" * 2000 + b"\r\nx\r\n0\r\n\r\n",
    "A10-one-byte-chunks": b"1\r\nx\r\n" * 200 + b"0\r\n\r\n",
    "A10-bare-cr-trailer": b"0\r\nX: a\rb\r\n\r\n",
    "A10-obs-fold-trailer": b"0\r\nX: a\r\n b\r\n\r\n",
    "A10-long-trailer": b"0\r\nX: " + b"a" * 9000 + b"\r\n\r\n",
    "A10-trailer-no-colon": b"0\r\nnocolon\r\n\r\n",
}

RESPONSES = {
    "ok-200-cl": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello",
    "ok-200-chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "ok-200-close": b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil close",
    "ok-200-10-close": b"HTTP/1.0 200 OK\r\n\r\nuntil close",
    "ok-200-10-keepalive": b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
    "ok-204": b"HTTP/1.1 204 No Content\r\nX-A: b\r\n\r\n",
    "ok-304": b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 100\r\n\r\n",
    "ok-100": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    "ok-101": b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
              b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
    "ok-head-cl": b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n",
    "ok-empty-reason": b"HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n",
    "ok-no-reason": b"HTTP/1.1 500\r\nContent-Length: 0\r\n\r\n",
    "ok-hop-by-hop": b"HTTP/1.1 200 OK\r\nConnection: X-Drop\r\nX-Drop: 1\r\nKeep-Alive: timeout=5\r\n"
                     b"Set-Cookie: a=b\r\nSet-Cookie: c=d\r\nContent-Length: 0\r\n\r\n",
    "ok-999": b"HTTP/1.1 999 Custom\r\nContent-Length: 0\r\n\r\n",
    "incomplete": b"HTTP/1.1 200 OK\r\nContent-Len",
    # A23: bad response framing.
    "A23-cl-te": b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nX",
    "A23-cl-differ": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "A23-te-chunked-chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
    "A23-te-gzip-only": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxyz",
    "A23-te-http10": b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "A23-cl-bad": b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello",
    "A23-cl-overflow": b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
    "A23-many-fields": b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-F%d: v\r\n" % i for i in range(120)) + b"\r\n",
    "A23-bare-cr": b"HTTP/1.1 200 OK\r\nX: a\rb\r\nContent-Length: 0\r\n\r\n",
    "A23-obs-fold": b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n",
    "A23-trailing-bytes": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    "A23-space-colon": b"HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok",
    "A23-status-short": b"HTTP/1.1 20 OK\r\n\r\n",
    "A23-status-099": b"HTTP/1.1 099 Low\r\n\r\n",
    "A23-version-bad": b"HTTP/1.2 200 OK\r\nContent-Length: 0\r\n\r\n",
    "A23-bare-lf": b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
    "A23-200-to-upgrade": b"HTTP/1.1 200 OK\r\nUpgrade: websocket\r\nConnection: upgrade\r\nContent-Length: 0\r\n\r\n",
    "A23-nul-reason": b"HTTP/1.1 200 O\x00K\r\nContent-Length: 0\r\n\r\n",
}


MINIMAL = b"""(
    listeners: [(bind: "127.0.0.1:8080", pool: "p")],
    pools: [(name: "p", backends: [(address: "127.0.0.1:9001")])],
)
"""

CONFIGS = {
    "minimal.ron": MINIMAL,
    "http.ron": b"""(
    workers: 2,
    buffer_size: 65536,
    timeouts: (connect: "1m30s", idle: "500ms"),
    listeners: [(name: "web", bind: "[::1]:8080", mode: "http", pool: "p")],
    pools: [(
        name: "p",
        algorithm: "consistent-hash",
        health_check: (kind: "http", path: "/h", expect: "200,204,300-302"),
        backends: [(address: "10.0.0.1:80", weight: 0), (address: "10.0.0.2:80", weight: 256)],
    )],
    http: (
        header_bytes_max: "32KiB",
        headers_max: 100,
        uri_bytes_max: "8KiB",
        body_bytes_max: "1MiB",
        underscores: "reject",
        retries: 2,
        retry_budget_percent: 20,
        retry_on_timeout: false,
        pool_idle_max: 64,
        max_requests_per_backend: 1000,
    ),
)
""",
    "err-unknown-field.ron": MINIMAL.replace(b"pool: \"p\"", b"pool: \"p\", typo: 1"),
    "err-duration.ron": MINIMAL.replace(b"listeners", b"timeouts: (idle: \"0s\"),\n    listeners"),
    "err-duplicate.ron": MINIMAL.replace(b"(address: \"127.0.0.1:9001\")",
                                         b"(address: \"127.0.0.1:9001\"), (address: \"127.0.0.1:9001\")"),
    "err-truncated.ron": MINIMAL[:40],
    "unicode-names.ron": MINIMAL.replace(b"\"p\"", "\"p\u00e9\u4e2d\U0001f600\"".encode()),
    "empty.ron": b"",
}


def write_dir(name, files, prefix=b""):
    d = os.path.join(HERE, name)
    os.makedirs(d, exist_ok=True)
    for fname, data in files.items():
        with open(os.path.join(d, fname), "wb") as f:
            f.write(prefix + data)


def main():
    write_dir("request_head", REQUESTS)
    write_dir("response_head", RESPONSES)
    # The chunked target's first byte chooses how the body is split (0: one piece,
    # 1..=15: pieces of that size, more: random sizes): each body twice.
    write_dir("chunked", {k: v for k, v in CHUNKED.items()}, prefix=b"\x00")
    write_dir("chunked", {k + "-split": v for k, v in CHUNKED.items()}, prefix=b"\x93")
    write_dir("config", CONFIGS)
    d = os.path.join(HERE, "config")
    for ron in ("example.ron", "default.ron"):
        shutil.copyfile(os.path.join(ROOT, "config", ron), os.path.join(d, ron))


if __name__ == "__main__":
    main()
