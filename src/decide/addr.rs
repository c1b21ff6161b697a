//! Parsing of the `host:port` Redis addresses members advertise and replicas report.

/// A Redis endpoint as `REPLICAOF` takes it: a bare host and a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RedisAddr {
    pub host: String,
    pub port: u16,
}

impl RedisAddr {
    /// Split on the last ':' so IPv6 literals keep their inner colons; brackets are
    /// dropped because `REPLICAOF` wants the bare address. `None` if host or port is bad.
    pub(crate) fn parse(addr: &str) -> Option<RedisAddr> {
        let (host, port) = addr.rsplit_once(':')?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() {
            return None;
        }
        let port = port.parse().ok()?;
        Some(RedisAddr {
            host: host.to_string(),
            port,
        })
    }
}

/// Whether two addresses name the same endpoint. Compared parsed, so `[::1]:6379` and
/// `::1:6379` agree; unparsable addresses only match byte for byte.
pub(crate) fn same_redis_addr(a: &str, b: &str) -> bool {
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
    fn parse_splits_on_last_colon() {
        let cases = [
            ("redis-a:6379", addr("redis-a", 6379)),
            ("10.0.0.1:6380", addr("10.0.0.1", 6380)),
            ("[::1]:6379", addr("::1", 6379)),
            ("fe80::1:6379", addr("fe80::1", 6379)),
            ("redis-a", None),
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
        assert!(same_redis_addr("[::1]:6379", "::1:6379"));
        assert!(!same_redis_addr("a:6379", "a:6380"));
        assert!(!same_redis_addr("a:6379", "b:6379"));
        assert!(same_redis_addr("garbage", "garbage"));
        assert!(!same_redis_addr("garbage", "a:6379"));
    }
}
