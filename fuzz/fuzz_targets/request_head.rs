//! `parse_request` on arbitrary bytes, with default limits and each underscore policy.
//! An accepted head is written back with `write_request` and parsed again: the second
//! parse must accept it and agree on everything the proxy forwards (method, target,
//! authority, body framing, fields, keep-alive, upgrade, Expect), and writing it again
//! must give the same bytes. Tight limits may only reject more, never accept differently.
#![no_main]

use gobalancer::http::{parse_request, write_request, BodyKind, Forwarding, Limits, RequestHead, Underscores};
use libfuzzer_sys::fuzz_target;
use std::net::{IpAddr, Ipv4Addr};

const POLICIES: [Underscores; 3] = [Underscores::Allow, Underscores::Drop, Underscores::Reject];

/// Statuses a request rejection may carry (mod.rs `Reject`; 405 for CONNECT, A16).
const REQUEST_STATUSES: [u16; 6] = [400, 405, 413, 414, 431, 501];

/// Small limits, so that every limit check is reachable with short inputs.
const TIGHT: Limits = Limits {
    head_bytes_max: 192,
    headers_max: 4,
    uri_bytes_max: 24,
    chunk_ext_bytes_max: 8,
    trailer_bytes_max: 64,
};

/// What the proxy derives from a head; two heads that agree on this are forwarded alike.
#[derive(Debug, PartialEq, Eq)]
struct Summary {
    method: Vec<u8>,
    target: Vec<u8>,
    authority: Vec<u8>,
    body: BodyKind,
    keep_alive: bool,
    expect_continue: bool,
    upgrade: Option<Vec<u8>>,
    fields: Vec<(Vec<u8>, Vec<u8>)>,
}

fn summary(h: &RequestHead) -> Summary {
    Summary {
        method: h.method().to_vec(),
        target: h.target().to_vec(),
        authority: h.authority().to_vec(),
        body: h.body,
        keep_alive: h.keep_alive,
        expect_continue: h.expect_continue,
        upgrade: h.upgrade_protocol().map(<[u8]>::to_vec),
        fields: h.fields().map(|(n, v)| (n.to_vec(), v.to_vec())).collect(),
    }
}

fn forwarding(h: &RequestHead) -> Forwarding {
    Forwarding {
        client_ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        proto: "http",
        body: h.body,
        keep_alive: h.keep_alive,
        upgrade: h.upgrade.is_some(),
    }
}

fn write(h: &RequestHead) -> Vec<u8> {
    let mut out = Vec::new();
    if let Err(e) = write_request(h, &forwarding(h), &mut out) {
        panic!("write_request refused an accepted head: {e}; head {h:?}");
    }
    out
}

/// The invariants of one accepted head, parsed from `input`.
fn check_accepted(h: &RequestHead, input: &[u8], limits: &Limits, policy: Underscores) {
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
    assert_ne!(h.body, BodyKind::UntilClose, "a request body delimited by close");
    assert!(!h.method().is_empty(), "empty method accepted");
    assert!(!h.target().is_empty(), "empty target accepted");
    if policy != Underscores::Allow {
        for (name, _) in h.fields() {
            assert!(
                !name.contains(&b'_'),
                "{policy:?} forwarded an underscore name {:?}",
                name
            );
        }
    }
}

fn roundtrip(h: &RequestHead) {
    let out = write(h);
    // The written head carries our forwarding fields and Host on top of the input's
    // fields: allow for them, so that only the codec, not the limits, is under test.
    let relaxed = Limits {
        head_bytes_max: out.len() + 1,
        headers_max: Limits::default().headers_max + 16,
        ..Limits::default()
    };
    let again = match parse_request(&out, &relaxed, Underscores::Allow) {
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
    let out2 = write(&again);
    assert_eq!(out, out2, "writing is not idempotent");
}

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let mut results = Vec::with_capacity(POLICIES.len());
    for policy in POLICIES {
        let r = parse_request(data, &limits, policy);
        match &r {
            Ok(Some(h)) => {
                check_accepted(h, data, &limits, policy);
                roundtrip(h);
            }
            Ok(None) => {}
            Err(e) => assert!(REQUEST_STATUSES.contains(&e.status), "unexpected request status {e}"),
        }
        results.push(r);
    }

    // Underscore policies differ only on underscore names: a head that `Reject` accepts
    // has none, so every policy must give exactly the same head for it.
    if let Ok(Some(strict)) = &results[2] {
        for (policy, r) in POLICIES.iter().zip(&results).take(2) {
            match r {
                Ok(Some(h)) => {
                    assert_eq!(summary(h), summary(strict), "{policy:?} differs from Reject");
                    assert_eq!(h.head_len, strict.head_len);
                }
                other => panic!("Reject accepted but {policy:?} gave {other:?}"),
            }
        }
    }
    // Allow and Drop never refuse for an underscore, so they decide alike.
    match (&results[0], &results[1]) {
        (Ok(Some(a)), Ok(Some(d))) => assert_eq!(a.head_len, d.head_len),
        (Ok(None), Ok(None)) | (Err(_), Err(_)) => {}
        (a, d) => panic!("Allow gave {a:?} but Drop gave {d:?}"),
    }

    // Tighter limits only reject more: what they accept, default limits accept alike.
    for (policy, wide) in POLICIES.into_iter().zip(&results) {
        match parse_request(data, &TIGHT, policy) {
            Ok(Some(h)) => {
                check_accepted(&h, data, &TIGHT, policy);
                match wide {
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
            Err(e) => assert!(REQUEST_STATUSES.contains(&e.status), "unexpected request status {e}"),
        }
    }
});
