//! One rule for `host:port` everywhere (flags, advertised addresses, what Redis reports):
//! an IPv6 literal is written in brackets, `[::1]:6379`; and the node id derived from a
//! `--raft-peers` entry.

use sha2::{Digest, Sha256};

use crate::model::NodeId;

/// Split `host:port` (or `[v6]:port`); a missing port takes `default_port`.
pub fn split_host_port(s: &str, default_port: u16) -> Result<(String, u16), String> {
    split(s, Some(default_port))
}

fn split(s: &str, default_port: Option<u16>) -> Result<(String, u16), String> {
    let missing_port = || default_port.ok_or_else(|| format!("{s:?} has no port"));
    if s.is_empty() {
        return Err("empty address".into());
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("unclosed '['")?;
        if host.is_empty() {
            return Err("empty host".into());
        }
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| format!("bad port {p:?}"))?,
            None if after.is_empty() => missing_port()?,
            None => return Err(format!("unexpected {after:?} after ']'")),
        };
        return Ok((host.to_string(), port));
    }
    match s.rsplit_once(':') {
        Some((host, _)) if host.contains(':') => {
            Err("IPv6 addresses need brackets: [addr]:port".into())
        }
        Some((host, p)) => {
            let port = p.parse().map_err(|_| format!("bad port {p:?}"))?;
            if host.is_empty() {
                return Err("empty host".into());
            }
            Ok((host.to_string(), port))
        }
        None => Ok((s.to_string(), missing_port()?)),
    }
}

/// `host:port`, bracketing an IPv6 literal.
pub fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Stable id of a peer: every agent computes the same id from the same entry.
pub fn node_id(addr: &str) -> NodeId {
    let digest = Sha256::digest(addr.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(bytes)
}

/// A Redis endpoint as `REPLICAOF` takes it: a bare host and a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisAddr {
    pub host: String,
    pub port: u16,
}

impl RedisAddr {
    /// `host:port` with a port; `None` if host or port is missing or bad.
    pub fn parse(addr: &str) -> Option<RedisAddr> {
        let (host, port) = split(addr, None).ok()?;
        Some(RedisAddr { host, port })
    }
}

/// Whether two addresses name the same endpoint. Compared parsed; unparsable addresses
/// only match byte for byte.
pub fn same_redis_addr(a: &str, b: &str) -> bool {
    match (RedisAddr::parse(a), RedisAddr::parse(b)) {
        (Some(a), Some(b)) => a == b,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(host: &str, port: u16) -> Option<RedisAddr> {
        Some(RedisAddr {
            host: host.to_string(),
            port,
        })
    }

    #[test]
    fn split_host_port_handles_ipv6_and_defaults() {
        let cases = [
            ("[::1]:7001", Some(("::1", 7001))),
            ("[::1]", Some(("::1", 7000))),
            ("host", Some(("host", 7000))),
            ("host:7002", Some(("host", 7002))),
            ("::1:7000", None),
            ("[]:7000", None),
            (":7000", None),
            ("", None),
        ];
        for (input, want) in cases {
            let got = split_host_port(input, 7000).ok();
            let want = want.map(|(h, p)| (h.to_string(), p));
            assert_eq!(got, want, "{input}");
        }
        assert_eq!(join_host_port("::1", 6379), "[::1]:6379");
        assert_eq!(join_host_port("a", 6379), "a:6379");
    }

    #[test]
    fn redis_addr_needs_a_port_and_brackets_ipv6() {
        let cases = [
            ("redis-a:6379", addr("redis-a", 6379)),
            ("10.0.0.1:6380", addr("10.0.0.1", 6380)),
            ("[::1]:6379", addr("::1", 6379)),
            ("fe80::1:6379", None),
            ("redis-a", None),
            ("[::1]", None),
            ("redis-a:", None),
            (":6379", None),
            ("redis-a:70000", None),
            ("redis-a:port", None),
        ];
        for (input, want) in cases {
            assert_eq!(RedisAddr::parse(input), want, "{input}");
        }
    }

    #[test]
    fn same_redis_addr_compares_endpoints() {
        assert!(same_redis_addr("a:6379", "a:6379"));
        assert!(same_redis_addr("[::1]:6379", "[::1]:6379"));
        assert!(!same_redis_addr("a:6379", "a:6380"));
        assert!(!same_redis_addr("a:6379", "b:6379"));
        assert!(same_redis_addr("garbage", "garbage"));
        assert!(!same_redis_addr("garbage", "a:6379"));
    }

    #[test]
    fn node_ids_are_stable_and_distinct() {
        assert_eq!(node_id("a:7000"), node_id("a:7000"));
        assert_ne!(node_id("a:7000"), node_id("b:7000"));
    }
}
