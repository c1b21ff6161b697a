//! Reply encoding for RESP2 and RESP3.
//!
//! Only the reply types a Sentinel answers with are modelled. Each type has one
//! RESP3 form and a RESP2 fallback, exactly as Redis downgrades them: a map becomes
//! a flat key/value array, a push message a plain array, and the two RESP2 nulls
//! (`$-1` and `*-1`) both become `_`.

/// Wire protocol negotiated with `HELLO`; every connection starts in RESP2.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    #[default]
    Resp2,
    Resp3,
}

/// One reply value, independent of the protocol it is written in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `+text`; must not contain CR or LF (they are replaced by spaces).
    Simple(String),
    /// `-CODE message`; CR and LF are replaced by spaces.
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    /// A missing string: `$-1` in RESP2.
    Null,
    /// A missing array: `*-1` in RESP2.
    NullArray,
    Array(Vec<Reply>),
    /// Key/value pairs: `%` in RESP3, a flat array in RESP2.
    Map(Vec<(Reply, Reply)>),
    /// Out-of-band message (pub/sub): `>` in RESP3, an array in RESP2.
    Push(Vec<Reply>),
}

impl Reply {
    pub fn ok() -> Reply {
        Reply::Simple("OK".to_string())
    }

    pub fn error(message: impl Into<String>) -> Reply {
        Reply::Error(message.into())
    }

    pub fn bulk(text: impl AsRef<[u8]>) -> Reply {
        Reply::Bulk(text.as_ref().to_vec())
    }

    /// A map whose keys and values are all bulk strings, as Sentinel writes its
    /// instance tables (numbers included).
    pub fn string_map<K: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(K, V)]) -> Reply {
        Reply::Map(
            pairs
                .iter()
                .map(|(k, v)| (Reply::bulk(k), Reply::bulk(v)))
                .collect(),
        )
    }
}

/// Appends `reply` to `out` in `protocol`.
pub fn encode(reply: &Reply, protocol: Protocol, out: &mut Vec<u8>) {
    let resp3 = protocol == Protocol::Resp3;
    match reply {
        Reply::Simple(text) => line(out, b'+', text),
        Reply::Error(text) => line(out, b'-', text),
        Reply::Int(n) => header(out, b':', *n),
        Reply::Bulk(bytes) => {
            header(out, b'$', bytes.len());
            out.extend_from_slice(bytes);
            out.extend_from_slice(b"\r\n");
        }
        Reply::Null if resp3 => out.extend_from_slice(b"_\r\n"),
        Reply::Null => out.extend_from_slice(b"$-1\r\n"),
        Reply::NullArray if resp3 => out.extend_from_slice(b"_\r\n"),
        Reply::NullArray => out.extend_from_slice(b"*-1\r\n"),
        Reply::Array(items) => {
            header(out, b'*', items.len());
            for item in items {
                encode(item, protocol, out);
            }
        }
        Reply::Map(pairs) => {
            if resp3 {
                header(out, b'%', pairs.len());
            } else {
                header(out, b'*', pairs.len() * 2);
            }
            for (key, value) in pairs {
                encode(key, protocol, out);
                encode(value, protocol, out);
            }
        }
        Reply::Push(items) => {
            header(out, if resp3 { b'>' } else { b'*' }, items.len());
            for item in items {
                encode(item, protocol, out);
            }
        }
    }
}

fn header(out: &mut Vec<u8>, kind: u8, n: impl std::fmt::Display) {
    out.push(kind);
    out.extend_from_slice(n.to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Simple strings and errors end at the first CR or LF, so a message that echoes
/// client input (an unknown command name) must not contain one.
fn line(out: &mut Vec<u8>, kind: u8, text: &str) {
    out.push(kind);
    out.extend(
        text.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both(reply: &Reply) -> (String, String) {
        let mut two = Vec::new();
        let mut three = Vec::new();
        encode(reply, Protocol::Resp2, &mut two);
        encode(reply, Protocol::Resp3, &mut three);
        (
            String::from_utf8(two).expect("utf8"),
            String::from_utf8(three).expect("utf8"),
        )
    }

    #[test]
    fn scalars_are_the_same_in_both_protocols() {
        assert_eq!(both(&Reply::ok()), ("+OK\r\n".into(), "+OK\r\n".into()));
        assert_eq!(
            both(&Reply::error("ERR x")),
            ("-ERR x\r\n".into(), "-ERR x\r\n".into())
        );
        assert_eq!(both(&Reply::Int(-3)), (":-3\r\n".into(), ":-3\r\n".into()));
        assert_eq!(
            both(&Reply::bulk("hé")),
            ("$3\r\nhé\r\n".into(), "$3\r\nhé\r\n".into())
        );
        assert_eq!(
            both(&Reply::bulk("")),
            ("$0\r\n\r\n".into(), "$0\r\n\r\n".into())
        );
    }

    #[test]
    fn nulls_downgrade_to_their_resp2_forms() {
        assert_eq!(both(&Reply::Null), ("$-1\r\n".into(), "_\r\n".into()));
        assert_eq!(both(&Reply::NullArray), ("*-1\r\n".into(), "_\r\n".into()));
    }

    #[test]
    fn maps_flatten_and_pushes_become_arrays_in_resp2() {
        let map = Reply::string_map(&[("ip", "10.0.0.1"), ("port", "6379")]);
        assert_eq!(
            both(&map),
            (
                "*4\r\n$2\r\nip\r\n$8\r\n10.0.0.1\r\n$4\r\nport\r\n$4\r\n6379\r\n".into(),
                "%2\r\n$2\r\nip\r\n$8\r\n10.0.0.1\r\n$4\r\nport\r\n$4\r\n6379\r\n".into()
            )
        );
        let push = Reply::Push(vec![Reply::bulk("subscribe"), Reply::Null, Reply::Int(0)]);
        assert_eq!(
            both(&push),
            (
                "*3\r\n$9\r\nsubscribe\r\n$-1\r\n:0\r\n".into(),
                ">3\r\n$9\r\nsubscribe\r\n_\r\n:0\r\n".into()
            )
        );
    }

    #[test]
    fn nested_arrays_keep_the_protocol_of_their_items() {
        let reply = Reply::Array(vec![Reply::string_map(&[("a", "b")]), Reply::Array(vec![])]);
        assert_eq!(
            both(&reply),
            (
                "*2\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n*0\r\n".into(),
                "*2\r\n%1\r\n$1\r\na\r\n$1\r\nb\r\n*0\r\n".into()
            )
        );
    }

    #[test]
    fn line_breaks_cannot_end_a_simple_reply_early() {
        assert_eq!(
            both(&Reply::error("ERR bad\r\n+OK")),
            ("-ERR bad  +OK\r\n".into(), "-ERR bad  +OK\r\n".into())
        );
    }

    #[test]
    fn every_encoding_parses_back_with_the_redis_crate() {
        let reply = Reply::Array(vec![
            Reply::string_map(&[("name", "mymaster"), ("flags", "master")]),
            Reply::Push(vec![
                Reply::bulk("message"),
                Reply::bulk("c"),
                Reply::bulk("p"),
            ]),
            Reply::Null,
            Reply::NullArray,
            Reply::Int(7),
        ]);
        for protocol in [Protocol::Resp2, Protocol::Resp3] {
            let mut out = Vec::new();
            encode(&reply, protocol, &mut out);
            let parsed = redis::parse_redis_value(&out).expect("parses");
            let redis::Value::Array(items) = parsed else {
                panic!("{protocol:?}: not an array: {parsed:?}");
            };
            assert_eq!(items.len(), 5, "{protocol:?}");
            match protocol {
                Protocol::Resp2 => assert!(matches!(items[0], redis::Value::Array(_))),
                Protocol::Resp3 => assert!(matches!(items[0], redis::Value::Map(_))),
            }
        }
    }
}
