//! Settings of `http` listeners: what a client may send, how requests are retried, and
//! how backend connections are pooled. One set for the process, like HAProxy's
//! `defaults` section; the HTTP timeouts are in [`super::Timeouts`].

use crate::http::{Limits, Underscores};

/// Largest value of `header_bytes_max`: with `max_connections` heads in flight, this
/// bounds the memory a flood of large heads can take.
pub const HEADER_BYTES_MAX_LIMIT: usize = 1024 * 1024;
/// Most `headers_max`.
pub const HEADERS_MAX_LIMIT: usize = 1000;
/// Most retries of one request.
pub const RETRIES_MAX: u32 = 3;
/// Most idle connections kept per worker and backend.
pub const POOL_IDLE_MAX_LIMIT: usize = 10_000;

/// The `http` section of the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpConfig {
    /// Bytes of a request head (request line and fields). Above: 431.
    pub header_bytes_max: usize,
    /// Header fields in a request. Above: 431.
    pub headers_max: usize,
    /// Bytes of a request target. Above: 414.
    pub uri_bytes_max: usize,
    /// Bytes of a request body. A Content-Length above it gets 413 before anything is
    /// sent; a chunked body that grows past it is cut (413 if no response has started).
    pub body_bytes_max: u64,
    /// What to do with request fields whose names contain `_`.
    pub underscores: Underscores,
    /// How many times a failed request may be sent again, each time to another
    /// backend, when it is safe (see README, "Retries"). Connect failures move on to the
    /// next backend whatever this says: nothing was sent.
    pub retries: u32,
    /// Retries may add at most this share of the requests (Envoy's retry budget): a
    /// failing pool is not hit with a multiple of its traffic.
    pub retry_budget_percent: u8,
    /// Retry an idempotent request whose response timed out (off by default: HAProxy
    /// warns that the backend may still be processing it).
    pub retry_on_timeout: bool,
    /// Idle backend connections kept per worker and backend, for reuse.
    pub pool_idle_max: usize,
    /// Requests in flight on one backend, across the process, at most; a request that
    /// finds every candidate at its limit gets 503 at once (a circuit breaker, like
    /// Envoy's `max_requests`).
    pub max_requests_per_backend: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        let limits = Limits::default();
        HttpConfig {
            header_bytes_max: limits.head_bytes_max,
            headers_max: limits.headers_max,
            uri_bytes_max: limits.uri_bytes_max,
            body_bytes_max: 1024 * 1024 * 1024,
            underscores: Underscores::Drop,
            retries: 1,
            retry_budget_percent: 20,
            retry_on_timeout: false,
            pool_idle_max: 64,
            max_requests_per_backend: 1024,
        }
    }
}

impl HttpConfig {
    /// The codec's limits.
    pub fn limits(&self) -> Limits {
        Limits {
            head_bytes_max: self.header_bytes_max,
            headers_max: self.headers_max,
            uri_bytes_max: self.uri_bytes_max,
            ..Limits::default()
        }
    }
}

/// Parses an underscore policy name: `allow`, `drop` or `reject`.
pub(super) fn parse_underscores(s: &str) -> Result<Underscores, String> {
    match s {
        "allow" => Ok(Underscores::Allow),
        "drop" => Ok(Underscores::Drop),
        "reject" => Ok(Underscores::Reject),
        _ => Err(format!(
            "unknown underscore policy {s:?}; expected \"allow\", \"drop\" or \"reject\""
        )),
    }
}
