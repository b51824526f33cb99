//! `ChunkedDecoder::decode` on arbitrary bytes. The first input byte chooses how the rest
//! arrives (in one piece, or in pieces of pseudo-random sizes); every way of splitting must
//! give the same outcome as one piece. A complete body is re-encoded with our encoder and
//! decoded again: same payload, same trailers. Tight limits may only reject more.
#![no_main]

use gobalancer::http::{encode_chunk_header, encode_last_chunk, ChunkedDecoder, Limits, Reject, CHUNK_DATA_END};
use libfuzzer_sys::fuzz_target;

/// Statuses a chunked framing error may carry (body.rs: 400, or 431 for trailers; A10
/// allows 413 for an oversized extension).
const CHUNK_STATUSES: [u16; 3] = [400, 413, 431];

const TIGHT: Limits = Limits {
    head_bytes_max: 192,
    headers_max: 4,
    uri_bytes_max: 24,
    chunk_ext_bytes_max: 8,
    trailer_bytes_max: 64,
};

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// The body ended `consumed` bytes in; the payload and the trailer lines.
    Done {
        consumed: usize,
        payload: Vec<u8>,
        trailers: Vec<u8>,
    },
    /// All input used without reaching the end; the payload so far.
    Incomplete {
        consumed: usize,
        payload: Vec<u8>,
    },
    Rejected(Reject),
}

/// Piece sizes from a xorshift generator seeded by `seed`: `None` means one piece.
struct Pieces {
    state: u32,
    max: usize,
}

impl Pieces {
    fn new(seed: u8) -> Option<Pieces> {
        match seed {
            0 => None,
            // 1..=15: fixed-size pieces of that many bytes (1 = byte by byte).
            1..=15 => Some(Pieces {
                state: 0,
                max: seed as usize,
            }),
            // Else random sizes in 1..=max, max from the high bits.
            _ => Some(Pieces {
                state: u32::from(seed).wrapping_mul(0x9E37_79B9) | 1,
                max: 1 + (seed as usize >> 2),
            }),
        }
    }

    fn next(&mut self) -> usize {
        if self.state == 0 {
            return self.max;
        }
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.state = x;
        1 + (x as usize % self.max)
    }
}

/// Feeds `input` as a connection would deliver it, `pieces` at a time, presenting the
/// unconsumed rest again each step, as the proxy does.
fn decode(input: &[u8], limits: &Limits, mut pieces: Option<Pieces>) -> Outcome {
    let mut dec = ChunkedDecoder::new(limits);
    let mut payload = Vec::new();
    let mut pos = 0; // consumed so far
    let mut avail = match &mut pieces {
        None => input.len(),
        Some(p) => p.next().min(input.len()),
    };
    loop {
        let given = &input[pos..avail];
        let d = match dec.decode(given) {
            Ok(d) => d,
            Err(e) => {
                assert!(CHUNK_STATUSES.contains(&e.status), "unexpected chunked status {e}");
                return Outcome::Rejected(e);
            }
        };
        assert!(
            d.consumed <= given.len(),
            "consumed {} of {} bytes given",
            d.consumed,
            given.len()
        );
        assert!(
            d.data.start <= d.data.end && d.data.end <= d.consumed,
            "data {:?} outside the {} bytes consumed",
            d.data,
            d.consumed
        );
        payload.extend_from_slice(&given[d.data.clone()]);
        pos += d.consumed;
        if d.done {
            return Outcome::Done {
                consumed: pos,
                payload,
                trailers: dec.trailers().to_vec(),
            };
        }
        if d.consumed == 0 {
            if avail == input.len() {
                return Outcome::Incomplete { consumed: pos, payload };
            }
            // More bytes arrive.
            let step = pieces.as_mut().map_or(input.len(), Pieces::next);
            avail = (avail + step).min(input.len());
        }
    }
}

/// A body in our own framing: `payload` in chunks cut at `cuts`, then `trailers`.
fn encode(payload: &[u8], trailers: &[u8], seed: u8) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = payload;
    let mut pieces = Pieces::new(seed);
    while !rest.is_empty() {
        let n = pieces.as_mut().map_or(rest.len(), Pieces::next).min(rest.len());
        encode_chunk_header(n, &mut out);
        out.extend_from_slice(&rest[..n]);
        out.extend_from_slice(CHUNK_DATA_END);
        rest = &rest[n..];
    }
    encode_last_chunk(trailers, &mut out);
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, body)) = data.split_first() else {
        return;
    };
    let limits = Limits::default();

    let whole = decode(body, &limits, None);
    // Splitting never changes the outcome; two split patterns per input.
    let split = decode(body, &limits, Pieces::new(seed));
    assert_eq!(whole, split, "split by seed {seed} changes the outcome");
    let bytewise = decode(body, &limits, Pieces::new(1));
    assert_eq!(whole, bytewise, "byte-by-byte feeding changes the outcome");

    if let Outcome::Done { payload, trailers, .. } = &whole {
        // Our encoder's output decodes to the same payload and trailers, whole.
        for chunking in [0, seed] {
            let encoded = encode(payload, trailers, chunking);
            match decode(&encoded, &limits, None) {
                Outcome::Done {
                    consumed,
                    payload: p2,
                    trailers: t2,
                } => {
                    assert_eq!(consumed, encoded.len(), "re-encoded body ends early");
                    assert_eq!(&p2, payload, "re-encoded payload differs");
                    assert_eq!(&t2, trailers, "re-encoded trailers differ");
                }
                other => panic!("re-encoded body {:?} gave {other:?}", String::from_utf8_lossy(&encoded)),
            }
        }
    }

    // Tight limits: what they accept, default limits accept alike.
    match decode(body, &TIGHT, Pieces::new(seed)) {
        Outcome::Rejected(_) => {}
        tight => assert_eq!(tight, whole, "tight limits accepted differently"),
    }
});
