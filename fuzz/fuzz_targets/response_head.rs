//! `parse_response` on arbitrary bytes, as the answer to a GET and to a HEAD. An accepted
//! head is written back with `write_response` (framed as parsed) and parsed again: same
//! status, body framing, keep-alive, reason and fields; writing it again gives the same
//! bytes. Tight limits may only reject more.
#![no_main]

use gobalancer::http::{parse_response, write_response, BodyKind, Limits, ResponseFraming, ResponseHead};
use libfuzzer_sys::fuzz_target;

const TIGHT: Limits = Limits {
    head_bytes_max: 192,
    headers_max: 4,
    uri_bytes_max: 24,
    chunk_ext_bytes_max: 8,
    trailer_bytes_max: 64,
};

#[derive(Debug, PartialEq, Eq)]
struct Summary {
    status: u16,
    body: BodyKind,
    keep_alive: bool,
    reason: Vec<u8>,
    fields: Vec<(Vec<u8>, Vec<u8>)>,
}

fn summary(h: &ResponseHead) -> Summary {
    Summary {
        status: h.status,
        body: h.body,
        keep_alive: h.keep_alive,
        reason: h.reason().to_vec(),
        fields: h.fields().map(|(n, v)| (n.to_vec(), v.to_vec())).collect(),
    }
}

fn framing(h: &ResponseHead) -> ResponseFraming {
    ResponseFraming {
        body: h.body,
        keep_alive: h.keep_alive,
        upgrade: h.status == 101,
    }
}

fn write(h: &ResponseHead) -> Vec<u8> {
    let mut out = Vec::new();
    write_response(h, &framing(h), &mut out);
    out
}

fn check_accepted(h: &ResponseHead, input: &[u8], limits: &Limits, head_request: bool) {
    assert!(h.head_len > 0, "empty head accepted");
    assert!(
        h.head_len <= input.len(),
        "head_len {} > input length {}",
        h.head_len,
        input.len()
    );
    assert!(
        h.head_len <= limits.head_bytes_max,
        "head_len {} over the limit",
        h.head_len
    );
    assert!((100..=999).contains(&h.status), "status {} accepted", h.status);
    if head_request || h.status < 200 || h.status == 204 || h.status == 304 {
        assert_eq!(
            h.body,
            BodyKind::None,
            "status {} (HEAD: {head_request}) with a body",
            h.status
        );
    }
    if h.body == BodyKind::UntilClose {
        assert!(!h.keep_alive, "keep-alive with a body delimited by close");
    }
}

fn roundtrip(h: &ResponseHead, head_request: bool) {
    let out = write(h);
    let relaxed = Limits {
        head_bytes_max: out.len() + 1,
        headers_max: Limits::default().headers_max + 16,
        ..Limits::default()
    };
    // The body framing written is the one parsed: Length and Chunked come back as
    // such; UntilClose writes no framing field and comes back as UntilClose; None is
    // None again by status or HEAD.
    let again = match parse_response(&out, &relaxed, head_request) {
        Ok(Some(again)) => again,
        Ok(None) => panic!("written head is incomplete: {:?}", String::from_utf8_lossy(&out)),
        Err(e) => panic!("written head rejected: {e}: {:?}", String::from_utf8_lossy(&out)),
    };
    assert_eq!(
        again.head_len,
        out.len(),
        "written head has trailing bytes: {:?}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(
        summary(h),
        summary(&again),
        "roundtrip changed the head; written {:?}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(out, write(&again), "writing is not idempotent");
}

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    for head_request in [false, true] {
        let wide = parse_response(data, &limits, head_request);
        if let Ok(Some(h)) = &wide {
            check_accepted(h, data, &limits, head_request);
            roundtrip(h, head_request);
        }
        match parse_response(data, &TIGHT, head_request) {
            Ok(Some(h)) => {
                check_accepted(&h, data, &TIGHT, head_request);
                match &wide {
                    Ok(Some(w)) => {
                        assert_eq!(summary(&h), summary(w), "tight limits changed the head");
                        assert_eq!(h.head_len, w.head_len);
                    }
                    other => panic!("tight limits accepted, default limits gave {other:?}"),
                }
            }
            Ok(None) => {
                if let Ok(Some(_)) = wide {
                    panic!("tight limits wait for more bytes where default limits accept");
                }
            }
            Err(_) => {}
        }
    }
});
