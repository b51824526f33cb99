//! HTTP test doubles for the L7 loopback tests: a mock backend that records every byte
//! it receives and misbehaves on script, a raw client, and a strict response parser.
//!
//! Everything is bounded: backend sockets poll with short read timeouts and every thread
//! ends at [`MockBackend`]'s drop (or after [`THREAD_LIFETIME`]); client reads stop at a
//! deadline and say how they ended (EOF, reset or timeout).
// Backends run on plain threads; waits are bounded with the real clock.
#![allow(dead_code, clippy::disallowed_methods)]

use socket2::SockRef;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often a blocked backend read wakes up to look at the stop flag.
const POLL: Duration = Duration::from_millis(10);
/// No backend thread lives longer than this, whatever the test does.
pub const THREAD_LIFETIME: Duration = Duration::from_secs(30);
/// The default bound of a client wait in the HTTP tests.
pub const WAIT: Duration = Duration::from_secs(5);

/// What a mock backend does on a connection.
#[derive(Clone, Debug)]
pub enum Behavior {
    /// Parses requests (Content-Length and chunked bodies), answers each with `200` and
    /// `<name> <target>` (see [`MockBackend`] for the special paths), keep-alive. A
    /// request with `Expect: 100-continue` gets `100 Continue` before its body is read.
    Normal,
    /// Answers `status` as soon as the head is read, without reading the body, and then
    /// parses whatever follows the head as the next request (a naive backend: what the
    /// proxy forwards after the early answer would be read as requests). A18, A22.
    EarlyReply(u16),
    /// Writes these bytes once the head is read, then closes. C8.
    Junk(&'static [u8]),
    /// Writes these bytes (one write) once the whole request is read, then goes on as
    /// [`Behavior::Normal`] for further requests. A23.
    Raw(Vec<u8>),
    /// Like [`Behavior::Raw`] with the first bytes, then after a pause the second.
    RawThenLate(Vec<u8>, Duration, Vec<u8>),
    /// Reads the whole request, then resets the connection (RST). C3.
    ResetAfterRequest,
    /// Reads the whole request, sends a status line, `content-length: 100` and 50 bytes
    /// of body, then resets. C4.
    HalfBodyThenReset,
    /// Reads requests and never answers. C5, B12.
    Silent,
    /// Answers `body_len` bytes of body: the head after `head_after`, then one byte every
    /// `byte_every`. C6.
    Slow {
        head_after: Duration,
        byte_every: Duration,
        body_len: usize,
    },
    /// [`Behavior::Normal`], but a connection idle for this long between requests is
    /// closed (a backend keep-alive timeout). C7.
    CloseIdleAfter(Duration),
    /// Answers this many requests normally, then reads the next request and closes the
    /// connection without a byte of response (FIN): the race of a backend closing a
    /// keep-alive connection just as a request is sent on it. C7.
    CloseAfter(usize),
    /// [`Behavior::Normal`], but a request with `Upgrade` gets `101 Switching Protocols`
    /// and then every byte is echoed back until EOF.
    Upgrade101,
    /// [`Behavior::Normal`], but after each request head the body is left unread for this
    /// long (a backend slow to take an upload). B7.
    StallBody(Duration),
}

/// A request as the mock backend parsed it.
#[derive(Clone, Debug, Default)]
pub struct SeenRequest {
    pub method: String,
    pub target: String,
    pub version: String,
    /// The raw head (request line, fields, final CRLF), lossy UTF-8.
    pub head: String,
    pub headers: Vec<(String, String)>,
    /// The decoded body.
    pub body: Vec<u8>,
    /// The body came chunked; `raw_body` is its wire form.
    pub chunked: bool,
    pub raw_body: Vec<u8>,
}

impl SeenRequest {
    /// The first field called `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every field called `name`.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn has(&self, name: &str) -> bool {
        self.header(name).is_some()
    }
}

/// What one accepted connection carried.
#[derive(Clone, Debug, Default)]
pub struct ConnRecord {
    /// Every byte received, in order.
    pub bytes: Vec<u8>,
    /// The requests parsed from them.
    pub requests: Vec<SeenRequest>,
    /// The backend thread for this connection has finished.
    pub done: bool,
    /// Why the mock stopped parsing, if it found bytes it could not parse.
    pub parse_error: Option<String>,
    /// Bytes written to the proxy (the kernel took them).
    pub written: u64,
}

type Records = Arc<Mutex<Vec<ConnRecord>>>;

fn lock(r: &Records) -> MutexGuard<'_, Vec<ConnRecord>> {
    r.lock().unwrap_or_else(|e| e.into_inner())
}

/// A recording HTTP/1.1 backend on a loopback port, one thread per connection.
///
/// Special paths under [`Behavior::Normal`]: `/status/NNN` answers NNN (no body for 204
/// and 304); `/flap` answers 200 and 500 in turn; `/chunked` answers a chunked body `hello world`; `/eof` answers a body
/// delimited by close; `/big/N` answers N bytes of `x` (written in 16 KiB pieces, for as
/// long as the peer reads).
pub struct MockBackend {
    pub addr: SocketAddr,
    pub name: String,
    records: Records,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    /// Requests for `/flap` answered so far.
    pub flaps: Arc<AtomicUsize>,
}

impl MockBackend {
    /// A backend behaving the same way on every connection.
    pub fn start(name: &str, behavior: Behavior) -> MockBackend {
        MockBackend::scripted(name, vec![behavior])
    }

    /// A normal backend.
    pub fn normal(name: &str) -> MockBackend {
        MockBackend::start(name, Behavior::Normal)
    }

    /// Connection `i` behaves as `script[i]`, the last entry for every later one.
    pub fn scripted(name: &str, script: Vec<Behavior>) -> MockBackend {
        assert!(!script.is_empty(), "a script needs a behaviour");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind mock backend");
        let addr = listener.local_addr().expect("mock addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let records: Records = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::new(Mutex::new(Vec::new()));
        let flaps = Arc::new(AtomicUsize::new(0));
        let accept = {
            let flaps = flaps.clone();
            let records = records.clone();
            let stop = stop.clone();
            let conns = conns.clone();
            let name = name.to_string();
            std::thread::Builder::new()
                .name(format!("mock-{name}"))
                .spawn(move || {
                    let end = Instant::now() + THREAD_LIFETIME;
                    let mut n = 0usize;
                    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                        match listener.accept() {
                            Ok((s, _)) => {
                                let behavior = script[n.min(script.len() - 1)].clone();
                                n += 1;
                                let idx = {
                                    let mut r = lock(&records);
                                    r.push(ConnRecord::default());
                                    r.len() - 1
                                };
                                let ctx = Conn {
                                    s,
                                    buf: Vec::new(),
                                    records: records.clone(),
                                    idx,
                                    stop: stop.clone(),
                                    end,
                                    name: name.clone(),
                                    flaps: flaps.clone(),
                                };
                                let h = std::thread::Builder::new()
                                    .name(format!("mock-{name}-{idx}"))
                                    .spawn(move || ctx.run(behavior))
                                    .expect("mock conn thread");
                                conns.lock().unwrap_or_else(|e| e.into_inner()).push(h);
                            }
                            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(2)),
                            Err(_) => std::thread::sleep(Duration::from_millis(2)),
                        }
                    }
                })
                .expect("mock accept thread")
        };
        MockBackend {
            addr,
            name: name.to_string(),
            records,
            stop,
            accept: Some(accept),
            conns,
            flaps,
        }
    }

    /// A copy of every connection's record, in accept order.
    pub fn conns(&self) -> Vec<ConnRecord> {
        lock(&self.records).clone()
    }

    /// Connections accepted so far.
    pub fn conn_count(&self) -> usize {
        lock(&self.records).len()
    }

    /// Bytes received on all connections together.
    pub fn bytes_received(&self) -> usize {
        lock(&self.records).iter().map(|c| c.bytes.len()).sum()
    }

    /// Every byte received, connections concatenated in accept order.
    pub fn all_bytes(&self) -> Vec<u8> {
        lock(&self.records).iter().flat_map(|c| c.bytes.clone()).collect()
    }

    /// Every request parsed, connections in accept order.
    pub fn requests(&self) -> Vec<SeenRequest> {
        lock(&self.records).iter().flat_map(|c| c.requests.clone()).collect()
    }

    pub fn request_count(&self) -> usize {
        lock(&self.records).iter().map(|c| c.requests.len()).sum()
    }

    /// Waits until `cond` holds for the records; panics after `within`.
    pub fn wait_until(&self, what: &str, within: Duration, cond: impl Fn(&[ConnRecord]) -> bool) {
        let end = Instant::now() + within;
        loop {
            if cond(&lock(&self.records)) {
                return;
            }
            assert!(
                Instant::now() < end,
                "{}: timed out waiting for {what}; records: {:?}",
                self.name,
                self.conns()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Waits until at least `n` requests were parsed.
    pub fn wait_requests(&self, n: usize) {
        self.wait_until(&format!("{n} requests"), WAIT, |r| {
            r.iter().map(|c| c.requests.len()).sum::<usize>() >= n
        });
    }

    /// Waits until every connection's thread has finished (the peer closed).
    pub fn wait_all_closed(&self, within: Duration) {
        self.wait_until("every connection closed", within, |r| r.iter().all(|c| c.done));
    }

    /// Gives the backend a moment, then asserts that it received no byte at all.
    pub fn assert_saw_nothing(&self, what: &str) {
        std::thread::sleep(Duration::from_millis(20));
        let recs = self.conns();
        let bytes: usize = recs.iter().map(|c| c.bytes.len()).sum();
        assert_eq!(
            bytes,
            0,
            "{what}: the backend must see nothing, got {:?}",
            recs.iter()
                .map(|c| String::from_utf8_lossy(&c.bytes).into_owned())
                .collect::<Vec<_>>()
        );
    }
}

impl Drop for MockBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
        let handles: Vec<JoinHandle<()>> = std::mem::take(&mut *self.conns.lock().unwrap_or_else(|e| e.into_inner()));
        for h in handles {
            let _ = h.join();
        }
    }
}

/// One accepted backend connection.
struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
    records: Records,
    idx: usize,
    stop: Arc<AtomicBool>,
    end: Instant,
    name: String,
    flaps: Arc<AtomicUsize>,
}

/// Why a backend read stopped.
#[derive(Debug)]
enum Stop {
    Eof,
    Idle,
    Gone,
}

impl Conn {
    fn run(mut self, behavior: Behavior) {
        let _ = self.s.set_nodelay(true);
        let _ = self.s.set_read_timeout(Some(POLL));
        let _ = self.s.set_write_timeout(Some(WAIT));
        let _ = self.serve(&behavior);
        if let Some(r) = lock(&self.records).get_mut(self.idx) {
            r.done = true;
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || Instant::now() >= self.end
    }

    fn record(&self, f: impl FnOnce(&mut ConnRecord)) {
        if let Some(r) = lock(&self.records).get_mut(self.idx) {
            f(r);
        }
    }

    /// Reads once more into `buf`; `idle` bounds the wait for the first byte.
    fn fill(&mut self, idle: Option<Duration>) -> Result<(), Stop> {
        let start = Instant::now();
        let mut tmp = [0u8; 16 * 1024];
        loop {
            if self.stopped() {
                return Err(Stop::Gone);
            }
            match self.s.read(&mut tmp) {
                Ok(0) => return Err(Stop::Eof),
                Ok(n) => {
                    let got = &tmp[..n];
                    self.buf.extend_from_slice(got);
                    self.record(|r| r.bytes.extend_from_slice(got));
                    return Ok(());
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) =>
                {
                    if idle.is_some_and(|i| start.elapsed() >= i) {
                        return Err(Stop::Idle);
                    }
                }
                Err(_) => return Err(Stop::Gone),
            }
        }
    }

    /// Reads a request head; `None` at EOF before any byte of it.
    fn read_head(&mut self, idle: Option<Duration>) -> Result<Vec<u8>, Stop> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..end + 4).collect();
                return Ok(head);
            }
            let wait = if self.buf.is_empty() { idle } else { None };
            self.fill(wait)?;
        }
    }

    fn read_exact(&mut self, n: usize) -> Result<Vec<u8>, Stop> {
        while self.buf.len() < n {
            self.fill(None)?;
        }
        Ok(self.buf.drain(..n).collect())
    }

    fn read_line(&mut self) -> Result<Vec<u8>, Stop> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..end + 2).collect();
                return Ok(line);
            }
            self.fill(None)?;
        }
    }

    /// Reads the body `req` announces into it.
    fn read_body(&mut self, req: &mut SeenRequest) -> Result<(), Stop> {
        let chunked = req
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        if chunked {
            req.chunked = true;
            loop {
                let line = self.read_line()?;
                req.raw_body.extend_from_slice(&line);
                let text = String::from_utf8_lossy(&line);
                let size_text = text.trim_end().split(';').next().unwrap_or("").trim().to_string();
                let Ok(size) = usize::from_str_radix(&size_text, 16) else {
                    self.record(|r| r.parse_error = Some(format!("bad chunk size line {text:?}")));
                    return Err(Stop::Gone);
                };
                if size == 0 {
                    loop {
                        let t = self.read_line()?;
                        req.raw_body.extend_from_slice(&t);
                        if t == b"\r\n" {
                            return Ok(());
                        }
                    }
                }
                let data = self.read_exact(size + 2)?;
                req.raw_body.extend_from_slice(&data);
                req.body.extend_from_slice(&data[..size]);
            }
        }
        if let Some(cl) = req.header("content-length") {
            let Ok(n) = cl.trim().parse::<usize>() else {
                self.record(|r| r.parse_error = Some(format!("bad content-length {cl:?}")));
                return Err(Stop::Gone);
            };
            let body = self.read_exact(n)?;
            req.raw_body.clone_from(&body);
            req.body = body;
        }
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), Stop> {
        self.s.write_all(bytes).map_err(|_| Stop::Gone)?;
        self.record(|r| r.written += bytes.len() as u64);
        self.s.flush().map_err(|_| Stop::Gone)
    }

    fn reset(&self) {
        let _ = SockRef::from(&self.s).set_linger(Some(Duration::ZERO));
    }

    fn serve(&mut self, behavior: &Behavior) -> Result<(), Stop> {
        let idle = match behavior {
            Behavior::CloseIdleAfter(d) => Some(*d),
            _ => None,
        };
        let mut answered = 0usize;
        loop {
            let head = match self.read_head(idle) {
                Ok(h) => h,
                Err(Stop::Idle) => {
                    // The backend's keep-alive timeout: a clean close.
                    let _ = self.s.shutdown(Shutdown::Both);
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            let Some(mut req) = parse_head(&head) else {
                let text = String::from_utf8_lossy(&head).into_owned();
                self.record(|r| r.parse_error = Some(format!("unparsable head {text:?}")));
                return Err(Stop::Gone);
            };
            match behavior {
                Behavior::EarlyReply(status) => {
                    self.record(|r| r.requests.push(req.clone()));
                    let resp = format!("HTTP/1.1 {status} Early\r\ncontent-length: 5\r\n\r\nearly");
                    self.write(resp.as_bytes())?;
                    continue;
                }
                Behavior::Junk(bytes) => {
                    self.record(|r| r.requests.push(req.clone()));
                    self.write(bytes)?;
                    return Ok(());
                }
                _ => {}
            }
            let expects = req
                .header("expect")
                .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
            if expects && self.buf.is_empty() {
                self.write(b"HTTP/1.1 100 Continue\r\n\r\n")?;
            }
            if let Behavior::StallBody(pause) = behavior {
                std::thread::sleep(*pause);
            }
            self.read_body(&mut req)?;
            self.record(|r| r.requests.push(req.clone()));
            match behavior {
                Behavior::Raw(bytes) => {
                    let b = bytes.clone();
                    self.write(&b)?;
                    continue;
                }
                Behavior::RawThenLate(first, pause, second) => {
                    let (a, b) = (first.clone(), second.clone());
                    self.write(&a)?;
                    std::thread::sleep(*pause);
                    self.write(&b)?;
                    continue;
                }
                Behavior::ResetAfterRequest => {
                    self.reset();
                    return Ok(());
                }
                Behavior::CloseAfter(n) if answered >= *n => {
                    let _ = self.s.shutdown(Shutdown::Both);
                    return Ok(());
                }
                Behavior::HalfBodyThenReset => {
                    let mut out = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n".to_vec();
                    out.extend_from_slice(&[b'p'; 50]);
                    self.write(&out)?;
                    std::thread::sleep(Duration::from_millis(100));
                    self.reset();
                    return Ok(());
                }
                Behavior::Silent => loop {
                    match self.fill(None) {
                        Ok(()) => {}
                        Err(e) => return Err(e),
                    }
                },
                Behavior::Slow {
                    head_after,
                    byte_every,
                    body_len,
                } => {
                    std::thread::sleep(*head_after);
                    self.write(format!("HTTP/1.1 200 OK\r\ncontent-length: {body_len}\r\n\r\n").as_bytes())?;
                    for _ in 0..*body_len {
                        if self.stopped() {
                            return Err(Stop::Gone);
                        }
                        std::thread::sleep(*byte_every);
                        self.write(b"s")?;
                    }
                    continue;
                }
                Behavior::Upgrade101 if req.has("upgrade") => {
                    let proto = req.header("upgrade").unwrap_or("websocket").to_string();
                    self.write(
                        format!("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: {proto}\r\n\r\n")
                            .as_bytes(),
                    )?;
                    return self.echo();
                }
                _ => {}
            }
            answered += 1;
            if !self.answer(&req)? {
                return Ok(());
            }
        }
    }

    /// Echoes every byte until EOF (a tunnel).
    fn echo(&mut self) -> Result<(), Stop> {
        loop {
            if !self.buf.is_empty() {
                let b = std::mem::take(&mut self.buf);
                self.write(&b)?;
            }
            match self.fill(None) {
                Ok(()) => {}
                Err(Stop::Eof) => {
                    let _ = self.s.shutdown(Shutdown::Write);
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The normal answer; `false` when the connection is to close after it.
    fn answer(&mut self, req: &SeenRequest) -> Result<bool, Stop> {
        let close = req
            .header("connection")
            .is_some_and(|v| v.to_ascii_lowercase().contains("close"))
            || req.version == "HTTP/1.0";
        let conn = if close { "connection: close\r\n" } else { "" };
        let head_req = req.method == "HEAD";
        let name = self.name.clone();
        let target = req.target.clone();
        let status_code = if target == "/flap" {
            Some(if self.flaps.fetch_add(1, Ordering::Relaxed).is_multiple_of(2) {
                200
            } else {
                500
            })
        } else {
            target.strip_prefix("/status/").map(|c| c.parse::<u16>().unwrap_or(200))
        };
        if let Some(code) = status_code {
            let out = if code == 204 || code == 304 {
                format!("HTTP/1.1 {code} Status\r\nx-backend: {name}\r\n{conn}\r\n")
            } else {
                let body = format!("{name} {target}");
                let mut o = format!(
                    "HTTP/1.1 {code} Status\r\nx-backend: {name}\r\ncontent-length: {}\r\n{conn}\r\n",
                    body.len()
                );
                if !head_req {
                    o.push_str(&body);
                }
                o
            };
            self.write(out.as_bytes())?;
        } else if target == "/chunked" {
            let mut out = format!("HTTP/1.1 200 OK\r\nx-backend: {name}\r\ntransfer-encoding: chunked\r\n{conn}\r\n");
            if !head_req {
                out.push_str("5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
            }
            self.write(out.as_bytes())?;
        } else if target == "/eof" {
            let mut out = format!("HTTP/1.1 200 OK\r\nx-backend: {name}\r\nconnection: close\r\n\r\n");
            if !head_req {
                out.push_str("until close");
            }
            self.write(out.as_bytes())?;
            let _ = self.s.shutdown(Shutdown::Write);
            // Wait for the proxy's close, so that the FIN is not followed by an RST.
            while self.fill(Some(Duration::from_secs(2))).is_ok() {}
            return Ok(false);
        } else if let Some(n) = target.strip_prefix("/big/") {
            let n: usize = n.parse().unwrap_or(0);
            self.write(
                format!("HTTP/1.1 200 OK\r\nx-backend: {name}\r\ncontent-length: {n}\r\n{conn}\r\n").as_bytes(),
            )?;
            if !head_req {
                let piece = vec![b'x'; 16 * 1024];
                let mut left = n;
                while left > 0 {
                    if self.stopped() {
                        return Err(Stop::Gone);
                    }
                    let k = left.min(piece.len());
                    self.write(&piece[..k])?;
                    left -= k;
                }
            }
        } else {
            let body = format!("{name} {target}");
            let mut out = format!(
                "HTTP/1.1 200 OK\r\nx-backend: {name}\r\nx-body-len: {}\r\ncontent-length: {}\r\n{conn}\r\n",
                req.body.len(),
                body.len()
            );
            if !head_req {
                out.push_str(&body);
            }
            self.write(out.as_bytes())?;
        }
        if close {
            let _ = self.s.shutdown(Shutdown::Write);
            while self.fill(Some(Duration::from_secs(2))).is_ok() {}
            return Ok(false);
        }
        Ok(true)
    }
}

/// Parses a request head minimally (request line, `name: value` lines).
fn parse_head(head: &[u8]) -> Option<SeenRequest> {
    let text = String::from_utf8_lossy(head).into_owned();
    let mut lines = text.split("\r\n");
    let line = lines.next()?;
    let mut parts = line.split(' ');
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let version = parts.next()?.to_string();
    if method.is_empty() || target.is_empty() || !version.starts_with("HTTP/") {
        return None;
    }
    let mut headers = Vec::new();
    for l in lines {
        if l.is_empty() {
            continue;
        }
        let (n, v) = l.split_once(':')?;
        headers.push((n.to_string(), v.trim().to_string()));
    }
    Some(SeenRequest {
        method,
        target,
        version,
        head: text,
        headers,
        ..SeenRequest::default()
    })
}

/// The first position of `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Whether `hay` contains `needle`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    find(hay, needle).is_some()
}

// ---------------------------------------------------------------------------------------
// Clients

/// How a client read ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawEnd {
    /// The peer closed cleanly (FIN).
    Eof,
    /// The connection was reset (or another error).
    Reset,
    /// The deadline passed with the connection still open.
    Timeout,
}

/// Connects to `addr` with read/write timeouts set.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, WAIT).expect("connect to the proxy");
    s.set_read_timeout(Some(WAIT)).expect("read timeout");
    s.set_write_timeout(Some(WAIT)).expect("write timeout");
    let _ = s.set_nodelay(true);
    s
}

/// Reads from `s` until EOF, an error, or `wait` has passed; appends to `out`.
pub fn read_until_end(s: &mut TcpStream, out: &mut Vec<u8>, wait: Duration) -> RawEnd {
    let end = Instant::now() + wait;
    let mut tmp = [0u8; 64 * 1024];
    loop {
        let now = Instant::now();
        if now >= end {
            return RawEnd::Timeout;
        }
        let _ = s.set_read_timeout(Some((end - now).max(Duration::from_millis(1))));
        match s.read(&mut tmp) {
            Ok(0) => return RawEnd::Eof,
            Ok(n) => out.extend_from_slice(&tmp[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return RawEnd::Timeout,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return RawEnd::Reset,
        }
    }
}

/// Connects, writes `bytes` (a write error is not fatal: the proxy may have answered and
/// closed already), and reads until the proxy closes or `wait` passes.
pub fn raw_exchange(addr: SocketAddr, bytes: &[u8], wait: Duration) -> (Vec<u8>, RawEnd) {
    let mut s = connect(addr);
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let end = read_until_end(&mut s, &mut out, wait);
    (out, end)
}

/// A client connection that reads responses one at a time.
pub struct Client {
    pub s: TcpStream,
    pub buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        Client {
            s: connect(addr),
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).expect("client write");
    }

    /// The next response (1xx included, as its own response), read within [`WAIT`].
    pub fn response(&mut self) -> Resp {
        self.response_to(false)
    }

    /// The next response to a HEAD request (no body whatever the framing says).
    pub fn head_response(&mut self) -> Resp {
        self.response_to(true)
    }

    fn response_to(&mut self, head: bool) -> Resp {
        match self.try_response(head, WAIT) {
            Ok(r) => r,
            Err(end) => panic!(
                "no complete response ({end:?}); got {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }

    /// The next response, or how the connection ended before one was complete.
    pub fn try_response(&mut self, head: bool, wait: Duration) -> Result<Resp, RawEnd> {
        let end = Instant::now() + wait;
        let mut eof = false;
        loop {
            match parse_response(&self.buf, head, eof) {
                Ok(Some((r, used))) => {
                    self.buf.drain(..used);
                    return Ok(r);
                }
                Ok(None) if eof => return Err(RawEnd::Eof),
                Ok(None) => {}
                Err(e) => panic!(
                    "malformed response from the proxy: {e}: {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
            }
            let now = Instant::now();
            if now >= end {
                return Err(RawEnd::Timeout);
            }
            let _ = self.s.set_read_timeout(Some(end - now));
            let mut tmp = [0u8; 64 * 1024];
            match self.s.read(&mut tmp) {
                Ok(0) => eof = true,
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(RawEnd::Timeout)
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Err(RawEnd::Reset),
            }
        }
    }

    /// Reads what is left until the proxy closes or `wait` passes.
    pub fn finish(&mut self, wait: Duration) -> (Vec<u8>, RawEnd) {
        let mut out = std::mem::take(&mut self.buf);
        let end = read_until_end(&mut self.s, &mut out, wait);
        (out, end)
    }

    /// Asserts that the proxy closes the connection (FIN, or RST after a lingering
    /// close) without sending another byte.
    pub fn expect_closed(&mut self, what: &str) {
        let (rest, end) = self.finish(WAIT);
        assert!(
            rest.is_empty() && end != RawEnd::Timeout,
            "{what}: expected the connection closed with nothing more, got {end:?} and {:?}",
            String::from_utf8_lossy(&rest)
        );
    }
}

/// How a parsed response was delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length,
    Chunked,
    Close,
}

/// A response as the client got it.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub head: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub framing: Framing,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// `Connection: close` was sent.
    pub fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.to_ascii_lowercase().contains("close"))
    }
}

/// Parses one response at the start of `buf`. `Ok(None)`: incomplete (with `eof`, a
/// close-delimited body ends at the end of `buf`). `Err`: not a valid response.
pub fn parse_response(buf: &[u8], head_req: bool, eof: bool) -> Result<Option<(Resp, usize)>, String> {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        if buf.len() > 12 && !buf.starts_with(b"HTTP/1.") {
            return Err("does not start with HTTP/1.".into());
        }
        return Ok(None);
    };
    let head_len = end + 4;
    let head = String::from_utf8_lossy(&buf[..head_len]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(format!("bad status line {status_line:?}"));
    }
    let status: u16 = parts
        .next()
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut headers = Vec::new();
    for l in lines {
        if l.is_empty() {
            continue;
        }
        let (n, v) = l.split_once(':').ok_or_else(|| format!("bad field line {l:?}"))?;
        headers.push((n.to_string(), v.trim().to_string()));
    }
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _): &&(String, String)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let te = get("transfer-encoding");
    let cl = get("content-length");
    if te.is_some() && cl.is_some() {
        return Err("both Content-Length and Transfer-Encoding".into());
    }
    let rest = &buf[head_len..];
    let no_body = (100..200).contains(&status) || status == 204 || status == 304 || head_req;
    let mk = |body: Vec<u8>, framing: Framing| Resp {
        status,
        head: head.clone(),
        headers: headers.clone(),
        body,
        framing,
    };
    if no_body {
        return Ok(Some((mk(Vec::new(), Framing::None), head_len)));
    }
    if let Some(te) = te {
        if !te.eq_ignore_ascii_case("chunked") {
            return Err(format!("transfer-encoding {te:?}"));
        }
        let mut pos = 0usize;
        let mut body = Vec::new();
        loop {
            let Some(le) = find(&rest[pos..], b"\r\n") else {
                return Ok(None);
            };
            let line = String::from_utf8_lossy(&rest[pos..pos + le]).into_owned();
            if line.contains(';') {
                return Err(format!("chunk extension sent to the client: {line:?}"));
            }
            let size = usize::from_str_radix(line.trim(), 16).map_err(|_| format!("bad chunk size {line:?}"))?;
            pos += le + 2;
            if size == 0 {
                // Trailers until the empty line.
                loop {
                    let Some(te) = find(&rest[pos..], b"\r\n") else {
                        return Ok(None);
                    };
                    pos += te + 2;
                    if te == 0 {
                        return Ok(Some((mk(body, Framing::Chunked), head_len + pos)));
                    }
                }
            }
            if rest.len() < pos + size + 2 {
                return Ok(None);
            }
            body.extend_from_slice(&rest[pos..pos + size]);
            if &rest[pos + size..pos + size + 2] != b"\r\n" {
                return Err("chunk data not followed by CRLF".into());
            }
            pos += size + 2;
        }
    }
    if let Some(cl) = cl {
        let n: usize = cl.parse().map_err(|_| format!("bad content-length {cl:?}"))?;
        if rest.len() < n {
            return Ok(None);
        }
        return Ok(Some((mk(rest[..n].to_vec(), Framing::Length), head_len + n)));
    }
    if eof {
        return Ok(Some((mk(rest.to_vec(), Framing::Close), buf.len())));
    }
    Ok(None)
}

/// Every complete response in `buf`, in order (none is HEAD; the bytes are all there,
/// so a close-delimited body runs to the end).
pub fn parse_responses(buf: &[u8]) -> Result<Vec<Resp>, String> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < buf.len() {
        match parse_response(&buf[pos..], false, true)? {
            Some((r, used)) => {
                out.push(r);
                pos += used;
            }
            None => return Err(format!("incomplete response at byte {pos}")),
        }
    }
    Ok(out)
}

/// The status codes of every response in `buf`, in order.
pub fn statuses(buf: &[u8]) -> Vec<u16> {
    parse_responses(buf)
        .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(buf)))
        .iter()
        .map(|r| r.status)
        .collect()
}

/// How many status lines `buf` holds (counted on raw bytes, whatever the framing).
pub fn status_line_count(buf: &[u8]) -> usize {
    buf.windows(9).filter(|w| w.starts_with(b"HTTP/1.")).count()
}

// ---------------------------------------------------------------------------------------
// Configuration

/// A config with one `http` listener and one round-robin pool over `backends`; `extra`
/// holds more top-level fields, e.g. `http: (retries: 0), timeouts: (response: "300ms"),`.
pub fn http_config(backends: &[SocketAddr], extra: &str) -> String {
    let list: Vec<String> = backends
        .iter()
        .enumerate()
        .map(|(i, a)| format!("(address: \"{a}\", name: \"b{i}\")"))
        .collect();
    format!(
        "({extra} listeners: [(name: \"t\", bind: \"127.0.0.1:1\", mode: \"http\", pool: \"p\")],
          pools: [(name: \"p\", algorithm: \"round-robin\", backends: [{}])])",
        list.join(", ")
    )
}

/// Polls `cond` until it holds; panics after `within`.
pub fn wait_for(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}
