//! The `gobalancer` binary end to end: configuration errors and `--check`, quick mode
//! over loopback, SIGTERM, SIGHUP reloads, a listen address in use, and the built-in
//! demo.
// Tests start the binary and bound their waits with the real clock.
#![allow(clippy::disallowed_methods)]

mod common;

use common::*;
use gobalancer::testbackend::{Reply, Script};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gobalancer"))
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run gobalancer")
}

fn temp_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gobalancer-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write temp file");
    path
}

/// Kills the child on drop, so a failed assertion leaves no process behind.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// Waits for the child to exit, at most `limit`.
fn wait_exit(guard: &mut Guard, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = guard.0.try_wait().expect("wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "gobalancer did not exit within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Retries `f` until it succeeds or `limit` passes (the binary needs a moment to bind).
fn retry<T>(limit: Duration, mut f: impl FnMut() -> std::io::Result<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) => {
                assert!(Instant::now() < deadline, "gave up: {e}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

#[test]
fn syntax_error_names_file_line_and_column() {
    let path = temp_file(
        "syntax.ron",
        "(\n    listeners: [\n        (bind: \"127.0.0.1:1\" pool: \"p\"),\n    ],\n)\n",
    );
    let out = run(&["--check", "--config", path.to_str().expect("utf-8 path")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("{}:3:", path.display())), "{err}");
}

#[test]
fn unknown_field_is_rejected_with_its_name_and_position() {
    let path = temp_file(
        "unknown.ron",
        "(\n  helth_check: (),\n  listeners: [(bind: \"127.0.0.1:1\", pool: \"p\")],\n  pools: [(name: \"p\", backends: [(address: \"127.0.0.1:2\")])],\n)\n",
    );
    let out = run(&["--check", "--config", path.to_str().expect("utf-8 path")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("helth_check"), "{err}");
    assert!(err.contains(&format!("{}:2:", path.display())), "{err}");
}

#[test]
fn check_accepts_the_example_and_the_embedded_default() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/example.ron");
    let out = run(&["--check", "--config", example]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration OK"));
    let out = run(&["--check"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn bad_flags_are_rejected_cleanly() {
    for args in [
        &[
            "--check",
            "--listen",
            "127.0.0.1:8080",
            "--backend",
            "127.0.0.1:9001,weight=x",
        ][..],
        &["--check", "--listen", "127.0.0.1:8080"][..],
        &[
            "--check",
            "--listen",
            "127.0.0.1:8080",
            "--backend",
            "127.0.0.1:9001",
            "--algorithm",
            "fastest",
        ][..],
        &[
            "--check",
            "--listen",
            "127.0.0.1:8080",
            "--backend",
            "127.0.0.1:9001",
            "--connect-timeout",
            "0s",
        ][..],
        &["--check", "--config", "/nonexistent/gobalancer.ron"][..],
        &[
            "--check",
            "--listen",
            "127.0.0.1:8080",
            "--backend",
            "127.0.0.1:9001",
            "--splice-after",
            "64KB",
        ][..],
    ] {
        let out = run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(err.starts_with("gobalancer: "), "{args:?}: {err}");
    }
}

#[test]
fn quick_mode_balances_and_sigterm_stops_it() {
    let b = start_backends(vec![Script::new("one", Reply::Name), Script::new("two", Reply::Name)]);
    let listen = closed_port().to_string();
    let backend1 = b.addrs[0].to_string();
    let backend2 = b.addrs[1].to_string();
    let child = bin()
        .args([
            "--listen",
            &listen,
            "--backend",
            &backend1,
            "--backend",
            &backend2,
            "--workers",
            "2",
            "--drain-timeout",
            "2s",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start gobalancer");
    let mut guard = Guard(child);
    let addr = listen.parse().expect("addr");
    let first = retry(Duration::from_secs(10), || fetch_name(addr));
    let mut seen = std::collections::BTreeSet::from([first]);
    for _ in 0..40 {
        seen.insert(fetch_name(addr).expect("served"));
    }
    assert_eq!(seen.len(), 2, "both backends serve: {seen:?}");
    sigterm(&guard.0);
    let status = wait_exit(&mut guard, Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    let mut log = String::new();
    if let Some(mut e) = guard.0.stderr.take() {
        let _ = e.read_to_string(&mut log);
    }
    assert!(log.contains("gobalancer started"), "{log}");
    assert!(log.contains("workers=2"), "{log}");
    assert!(log.contains("gobalancer stopped"), "{log}");
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// Replaces `path` atomically: a reload never reads a half-written file.
fn write_atomically(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write temp file");
    std::fs::rename(&tmp, path).expect("rename over the config");
}

/// Polls `cond` every 20 ms until it holds, at most `limit`.
fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sighup_reloads_the_config_file_and_keeps_it_when_the_new_one_is_bad() {
    let b = start_backends(vec![
        Script::new("one", Reply::Name),
        Script::new("two", Reply::Name),
        Script::new("three", Reply::Name),
    ]);
    let listen = closed_port();
    let text = |backends: &[std::net::SocketAddr]| {
        let list: Vec<String> = backends.iter().map(|a| format!("(address: \"{a}\")")).collect();
        format!(
            "(\n  listeners: [(name: \"front\", bind: \"{listen}\", pool: \"p\")],\n  pools: [(name: \"p\", backends: [{}])],\n)\n",
            list.join(", ")
        )
    };
    let path = temp_file("reload.ron", &text(&b.addrs[..2]));
    let log_path = path.with_extension("log");
    let log_file = std::fs::File::create(&log_path).expect("log file");
    let child = bin()
        .args(["--config", path.to_str().expect("utf-8 path"), "--workers", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::from(log_file))
        .spawn()
        .expect("start gobalancer");
    let mut guard = Guard(child);
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let names = |n: usize| -> std::collections::BTreeSet<String> {
        (0..n).map(|_| fetch_name(listen).expect("served")).collect()
    };
    retry(Duration::from_secs(10), || fetch_name(listen));
    assert_eq!(names(20), ["one", "two"].map(String::from).into());

    // Backends one and two leave, three joins: traffic moves.
    write_atomically(&path, &text(&b.addrs[2..]));
    signal(&guard.0, "HUP");
    wait_until(Duration::from_secs(10), "traffic on the new backend", || {
        fetch_name(listen).is_ok_and(|n| n == "three")
    });
    assert_eq!(names(20), ["three"].map(String::from).into());
    let after_good = log();
    assert!(after_good.contains("configuration reloaded"), "{after_good}");
    assert!(after_good.contains("generation=2"), "{after_good}");

    // A file with a syntax error (line 3: a missing comma): refused, logged with its
    // position, and traffic does not change.
    let broken = format!("(\n  listeners: [\n    (name: \"front\", bind: \"{listen}\" pool: \"p\"),\n  ],\n)\n");
    write_atomically(&path, &broken);
    signal(&guard.0, "HUP");
    wait_until(Duration::from_secs(10), "the refusal in the log", || {
        log().contains("configuration reload refused")
    });
    let after_bad = log();
    assert!(after_bad.contains(&format!("{}:3:", path.display())), "{after_bad}");
    assert_eq!(names(20), ["three"].map(String::from).into());

    signal(&guard.0, "TERM");
    let status = wait_exit(&mut guard, Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    assert!(log().contains("gobalancer stopped"));
}

#[test]
fn sighup_without_a_config_file_is_refused_and_keeps_serving() {
    let b = start_backends(vec![Script::new("one", Reply::Name)]);
    let listen = closed_port();
    let log_path = temp_file("flags-reload.log", "");
    let log_file = std::fs::File::create(&log_path).expect("log file");
    let backend = b.addrs[0].to_string();
    let child = bin()
        .args(["--listen", &listen.to_string(), "--backend", &backend, "--workers", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::from(log_file))
        .spawn()
        .expect("start gobalancer");
    let mut guard = Guard(child);
    retry(Duration::from_secs(10), || fetch_name(listen));
    signal(&guard.0, "HUP");
    wait_until(Duration::from_secs(10), "the refusal in the log", || {
        std::fs::read_to_string(&log_path).is_ok_and(|l| l.contains("configuration reload refused"))
    });
    assert_eq!(fetch_name(listen).expect("still served"), "one");
    sigterm(&guard.0);
    let status = wait_exit(&mut guard, Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
}

#[test]
fn listen_address_in_use_binds_nothing_and_names_the_position() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_addr = taken.local_addr().expect("addr");
    let free = closed_port();
    let config = format!(
        "(\n  listeners: [\n    (name: \"a\", bind: \"{free}\", pool: \"p\"),\n    (name: \"b\", bind: \"{taken_addr}\", pool: \"p\"),\n  ],\n  pools: [(name: \"p\", backends: [(address: \"127.0.0.1:9\")])],\n)\n"
    );
    let path = temp_file("inuse.ron", &config);
    let out = run(&["--config", path.to_str().expect("utf-8 path")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("{}:4:", path.display())), "{err}");
    assert!(err.contains("listeners[1].bind"), "{err}");
    // Nothing stayed bound: the other listener's address is free again.
    std::net::TcpListener::bind(free).expect("first listener's address was released");
}

#[test]
fn embedded_default_serves_the_demo() {
    // The demo uses fixed ports; skip (saying so) where something else holds them.
    for port in [8080, 9001, 9002, 9003] {
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            eprintln!("SKIPPED embedded_default_serves_the_demo: 127.0.0.1:{port} is in use");
            return;
        }
    }
    let child = bin()
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start gobalancer");
    let mut guard = Guard(child);
    let addr: std::net::SocketAddr = "127.0.0.1:8080".parse().expect("addr");
    let get = || -> std::io::Result<String> {
        let mut s = std::net::TcpStream::connect(addr)?;
        s.set_read_timeout(Some(CLIENT_WAIT))?;
        s.write_all(b"GET / HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    };
    let first = retry(Duration::from_secs(10), get);
    assert!(first.starts_with("HTTP/1.1 200 OK"), "{first}");
    let mut names = std::collections::BTreeSet::new();
    for _ in 0..6 {
        let reply = get().expect("served");
        names.insert(reply.lines().last().unwrap_or_default().to_string());
    }
    assert_eq!(names.len(), 3, "round robin over three demo backends: {names:?}");
    sigterm(&guard.0);
    let status = wait_exit(&mut guard, Duration::from_secs(40));
    assert!(status.success(), "{status:?}");
    let mut help = String::new();
    if let Some(mut o) = guard.0.stdout.take() {
        let _ = o.read_to_string(&mut help);
    }
    assert!(help.contains("curl http://127.0.0.1:8080/"), "{help}");
}

/// Starts quick mode over two name backends with `extra` flags, checks that both serve,
/// stops it with SIGTERM and returns its log.
fn serve_and_stop(extra: &[&str]) -> String {
    serve_and_stop_with(bin(), extra)
}

fn serve_and_stop_with(mut cmd: Command, extra: &[&str]) -> String {
    let b = start_backends(vec![Script::new("one", Reply::Name), Script::new("two", Reply::Name)]);
    let listen = closed_port().to_string();
    let backend1 = b.addrs[0].to_string();
    let backend2 = b.addrs[1].to_string();
    let mut args = vec!["--listen", &listen, "--backend", &backend1, "--backend", &backend2];
    args.extend_from_slice(extra);
    let child = cmd
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start gobalancer");
    let mut guard = Guard(child);
    let addr = listen.parse().expect("addr");
    let first = retry(Duration::from_secs(10), || fetch_name(addr));
    let mut seen = std::collections::BTreeSet::from([first]);
    for _ in 0..20 {
        seen.insert(fetch_name(addr).expect("served"));
    }
    assert_eq!(seen.len(), 2, "both backends serve: {seen:?}");
    sigterm(&guard.0);
    let status = wait_exit(&mut guard, Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    let mut log = String::new();
    if let Some(mut e) = guard.0.stderr.take() {
        let _ = e.read_to_string(&mut log);
    }
    log
}

#[test]
fn io_uring_serves_where_the_probe_passes_and_is_refused_with_a_reason_elsewhere() {
    if uring_or_skip("io_uring_serves_where_the_probe_passes").is_some() {
        let log = serve_and_stop(&["--io", "uring", "--workers", "2"]);
        assert!(log.contains("io=\"io_uring\"") || log.contains("io=io_uring"), "{log}");
        assert!(log.contains("gobalancer stopped"), "{log}");
    } else {
        let listen = closed_port().to_string();
        let out = run(&["--io", "uring", "--listen", &listen, "--backend", "127.0.0.1:9"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("--io uring: io_uring is unavailable"), "{err}");
    }
}

#[test]
fn io_auto_says_which_backend_it_chose_and_why() {
    let log = serve_and_stop(&["--io", "auto"]);
    let expected = match uring_available() {
        Ok(()) => "auto: io_uring probe passed",
        Err(_) => "auto: io_uring unavailable, falling back to",
    };
    assert!(log.contains(expected), "{log}");
    let epoll = serve_and_stop(&["--io", "epoll"]);
    assert!(epoll.contains("io=\"epoll\"") || epoll.contains("io=epoll"), "{epoll}");
}

#[test]
fn splice_is_on_by_default_on_epoll_and_off_on_request() {
    let on = serve_and_stop(&["--io", "epoll", "--splice-after", "0"]);
    assert!(on.contains("after 0 bytes"), "{on}");
    let off = serve_and_stop(&["--io", "epoll", "--splice", "off"]);
    assert!(off.contains("splice=off") || off.contains("splice=\"off\""), "{off}");
}

/// The binary with io_uring_setup(2) refused (EPERM) by a seccomp filter, as the default
/// profiles of container runtimes do.
#[cfg(target_os = "linux")]
fn bin_without_io_uring() -> Command {
    use std::os::unix::process::CommandExt;
    let op = |code: u32| code as u16;
    // Load the system call number (offset 0 of struct seccomp_data); io_uring_setup gets
    // EPERM, everything else is allowed.
    let filter = [
        libc::sock_filter {
            code: op(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS),
            jt: 0,
            jf: 0,
            k: 0,
        },
        libc::sock_filter {
            code: op(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K),
            jt: 0,
            jf: 1,
            k: libc::SYS_io_uring_setup as u32,
        },
        libc::sock_filter {
            code: op(libc::BPF_RET | libc::BPF_K),
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        },
        libc::sock_filter {
            code: op(libc::BPF_RET | libc::BPF_K),
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ALLOW,
        },
    ];
    let mut cmd = bin();
    // SAFETY: the closure runs in the forked child before exec and only makes two prctl
    // calls (async-signal-safe) on data prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let prog = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr().cast_mut(),
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

#[cfg(target_os = "linux")]
#[test]
fn io_uring_refused_by_seccomp_fails_uring_and_auto_falls_back_to_epoll() {
    let listen = closed_port().to_string();
    let out = bin_without_io_uring()
        .args(["--io", "uring", "--listen", &listen, "--backend", "127.0.0.1:9"])
        .output()
        .expect("run gobalancer");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with("gobalancer: --io uring: io_uring is unavailable"),
        "{err}"
    );
    assert!(err.contains("EPERM") && err.contains("seccomp"), "{err}");
    let log = serve_and_stop_with(bin_without_io_uring(), &["--io", "auto"]);
    assert!(
        log.contains("auto: io_uring unavailable, falling back to epoll: io_uring_setup(2) failed with EPERM"),
        "{log}"
    );
}

/// User plus system CPU time of process `pid`, in clock ticks (/proc/PID/stat fields 14
/// and 15).
#[cfg(target_os = "linux")]
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // The command name (field 2) may hold spaces; fields after its ')' are plain.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3, so fields 14 and 15 are its 12th and 13th.
    let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    tick(11) + tick(12)
}

/// One GET on `s` (keep-alive); the status code.
fn http_get(s: &mut std::net::TcpStream, path: &str) -> std::io::Result<u16> {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // The test backend's replies carry a Content-Length and a short body: read until the
    // head and that many body bytes are in.
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_string())
                })
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                let code = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
                return Ok(code);
            }
        }
    }
}

/// RELIABILITY B9: with the file table full (RLIMIT_NOFILE 256 and 400 connections
/// opened), accept(2) fails with EMFILE: the listener backs off (5 ms doubling to 100 ms)
/// instead of spinning, logs at most once a second, keeps serving the connections it
/// has, and accepts again once descriptors are free. On both I/O backends.
#[cfg(target_os = "linux")]
#[test]
fn fd_exhaustion_backs_off_without_spinning_and_recovers() {
    use std::os::unix::process::CommandExt;
    let b = start_backends(vec![Script::new("one", Reply::Http)]);
    let backend = b.addrs[0].to_string();
    for io in ["epoll", "auto"] {
        let listen = closed_port().to_string();
        let mut cmd = bin();
        cmd.args([
            "--listen",
            &listen,
            "--mode",
            "http",
            "--backend",
            &backend,
            "--workers",
            "1",
            "--io",
            io,
            "--log-level",
            "warn",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        // SAFETY: runs in the forked child before exec; setrlimit is async-signal-safe
        // and its argument is prepared on the stack.
        unsafe {
            cmd.pre_exec(|| {
                let lim = libc::rlimit {
                    rlim_cur: 256,
                    rlim_max: 256,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut guard = Guard(cmd.spawn().expect("start gobalancer"));
        let addr: std::net::SocketAddr = listen.parse().expect("addr");
        // An established keep-alive client, served before and during the exhaustion.
        let mut kept = retry(Duration::from_secs(10), || {
            let mut s = connect_from(std::net::Ipv4Addr::LOCALHOST, addr)?;
            http_get(&mut s, "/before").map(|code| {
                assert_eq!(code, 200);
                s
            })
        });
        // 400 connections: the proxy accepts until its 256 descriptors are used, the
        // rest wait in the backlog.
        let flood: Vec<_> = (0..400)
            .map(|_| connect_from(std::net::Ipv4Addr::LOCALHOST, addr).expect("connect (backlog)"))
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        let pid = guard.0.id();
        let before = cpu_ticks(pid);
        std::thread::sleep(Duration::from_secs(2));
        let used = cpu_ticks(pid) - before;
        // 5% of a core over 2 s is 10 ticks at the usual 100 Hz.
        assert!(
            used <= 10,
            "{io}: {used} ticks of CPU in 2 s with the file table full: spinning"
        );
        // The established connection is still served (its backend connection is pooled).
        assert_eq!(http_get(&mut kept, "/during").expect("served during"), 200, "{io}");
        drop(flood);
        // Descriptors free again: new connections are accepted and served.
        let code = retry(Duration::from_secs(10), || {
            let mut s = connect_from(std::net::Ipv4Addr::LOCALHOST, addr)?;
            http_get(&mut s, "/after")
        });
        assert_eq!(code, 200, "{io}");
        drop(kept);
        sigterm(&guard.0);
        let _ = wait_exit(&mut guard, Duration::from_secs(10));
        let mut log = String::new();
        if let Some(mut e) = guard.0.stderr.take() {
            let _ = e.read_to_string(&mut log);
        }
        let warnings = log.matches("accept failed; backing off").count();
        assert!(warnings >= 1, "{io}: no back-off logged: {log}");
        // Rate-limited to one a second: a few seconds of exhaustion, a few lines.
        assert!(warnings <= 6, "{io}: {warnings} back-off warnings: {log}");
    }
}
