//! What loadgen sends traffic to: `http://HOST[:PORT][/PATH]` or `tcp://HOST:PORT`.
//!
//! Parsed by hand rather than with a URL crate: only two schemes exist, the host is
//! resolved by [`Env::resolve`](gobalancer::io::Env::resolve) (so the simulation resolves
//! its own host names), and a bad target must say exactly what is wrong with it.

use std::fmt;

/// Longest target accepted, in bytes: a target is typed by a person or a script.
pub const TARGET_BYTES_MAX: usize = 4096;

/// The protocol spoken to the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 with keep-alive.
    Http,
    /// Raw TCP: a request of N bytes, then a reply of M bytes.
    Tcp,
}

/// A parsed target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The protocol.
    pub protocol: Protocol,
    /// `host:port`, as passed to [`Env::resolve`](gobalancer::io::Env::resolve); an IPv6
    /// literal keeps its brackets.
    pub authority: String,
    /// The `Host` header value: the host, with the port unless it is the scheme's default.
    pub host_header: String,
    /// The request target (path and query), `/` when the URL has none. Empty for TCP.
    pub path: String,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.protocol {
            Protocol::Http => write!(f, "http://{}{}", self.host_header, self.path),
            Protocol::Tcp => write!(f, "tcp://{}", self.authority),
        }
    }
}

impl Target {
    /// Parses `http://HOST[:PORT][/PATH]` or `tcp://HOST:PORT`.
    pub fn parse(s: &str) -> Result<Target, String> {
        if s.len() > TARGET_BYTES_MAX {
            return Err(format!(
                "the target is {} bytes; the limit is {TARGET_BYTES_MAX}",
                s.len()
            ));
        }
        let (protocol, rest) = if let Some(rest) = s.strip_prefix("http://") {
            (Protocol::Http, rest)
        } else if let Some(rest) = s.strip_prefix("tcp://") {
            (Protocol::Tcp, rest)
        } else if s.starts_with("https://") {
            return Err(format!(
                "{s}: https is not supported; loadgen speaks plain HTTP/1.1 and TCP"
            ));
        } else {
            return Err(format!("{s}: expected http://HOST[:PORT][/PATH] or tcp://HOST:PORT"));
        };
        let (hostport, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if protocol == Protocol::Tcp && !path.is_empty() && path != "/" {
            return Err(format!("{s}: a tcp:// target has no path"));
        }
        if hostport.contains('@') {
            return Err(format!("{s}: user information in the URL is not supported"));
        }
        if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(format!(
                "{s}: the path has a space or a control character; percent-encode it"
            ));
        }
        // Split the port off, minding IPv6 literals: "[::1]:8080".
        let (host, port) = if let Some(after) = hostport.strip_prefix('[') {
            let close = after
                .find(']')
                .ok_or_else(|| format!("{s}: unclosed '[' in the host"))?;
            let host = &hostport[..close + 2];
            match &after[close + 1..] {
                "" => (host, None),
                p => match p.strip_prefix(':') {
                    Some(p) => (host, Some(p)),
                    None => return Err(format!("{s}: unexpected {p:?} after the IPv6 address")),
                },
            }
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() || host == "[]" {
            return Err(format!("{s}: the host is missing"));
        }
        let port: u16 = match (port, protocol) {
            (Some(p), _) => match p.parse() {
                Ok(0) | Err(_) => return Err(format!("{s}: bad port {p:?}: expected 1 to 65535")),
                Ok(p) => p,
            },
            (None, Protocol::Http) => 80,
            (None, Protocol::Tcp) => return Err(format!("{s}: a tcp:// target needs a port")),
        };
        let host_header = if port == 80 && protocol == Protocol::Http {
            host.to_string()
        } else {
            format!("{host}:{port}")
        };
        let path = match (protocol, path) {
            (Protocol::Tcp, _) => String::new(),
            (Protocol::Http, "") => "/".to_string(),
            (Protocol::Http, p) if p.starts_with('?') => format!("/{p}"),
            (Protocol::Http, p) => p.to_string(),
        };
        Ok(Target {
            protocol,
            authority: format!("{host}:{port}"),
            host_header,
            path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_http_and_tcp_targets() {
        let t = Target::parse("http://127.0.0.1:8080/a/b?c=d").unwrap();
        assert_eq!(t.protocol, Protocol::Http);
        assert_eq!(t.authority, "127.0.0.1:8080");
        assert_eq!(t.host_header, "127.0.0.1:8080");
        assert_eq!(t.path, "/a/b?c=d");
        assert_eq!(t.to_string(), "http://127.0.0.1:8080/a/b?c=d");

        let t = Target::parse("http://example.test").unwrap();
        assert_eq!(
            (t.authority.as_str(), t.host_header.as_str(), t.path.as_str()),
            ("example.test:80", "example.test", "/")
        );

        let t = Target::parse("http://[::1]:9000?x").unwrap();
        assert_eq!((t.authority.as_str(), t.path.as_str()), ("[::1]:9000", "/?x"));

        let t = Target::parse("tcp://localhost:7000").unwrap();
        assert_eq!((t.protocol, t.authority.as_str()), (Protocol::Tcp, "localhost:7000"));
    }

    #[test]
    fn rejects_bad_targets_with_a_reason() {
        for bad in [
            "127.0.0.1:8080",
            "https://x:443/",
            "http://:80/",
            "http://h:0/",
            "http://h:99999/",
            "tcp://h",
            "tcp://h:1/path",
            "http://[::1/",
            "http://h/a b",
            "http://u@h/",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad} was accepted");
        }
    }
}
