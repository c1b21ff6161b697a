//! Splits a client's byte stream into commands with the redis crate's RESP parser.
//!
//! `redis::Parser` pulls bytes from a [`Read`] and keeps its partial state between
//! calls when that reader reports `WouldBlock`, so the socket stays async: bytes
//! read from the socket are handed over through [`Feed`], and an empty feed means
//! "read more from the socket". The parser buffers what it pulls, so the size limit
//! is enforced on what it has pulled since the last complete command.

use std::io::{self, Read};

use redis::Value;

use super::SentinelError;

/// Bytes received from the socket and not yet pulled by the parser.
#[derive(Default)]
struct Feed {
    data: Vec<u8>,
    pos: usize,
    /// Set when the parser asked for more than there was.
    starved: bool,
    /// Bytes pulled since the last complete command.
    pulled: usize,
}

impl Read for Feed {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let rest = &self.data[self.pos..];
        if rest.is_empty() {
            self.starved = true;
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = rest.len().min(out.len());
        out[..n].copy_from_slice(&rest[..n]);
        self.pos += n;
        self.pulled += n;
        Ok(n)
    }
}

/// Incremental command decoder for one connection.
pub struct RequestDecoder {
    parser: redis::Parser,
    feed: Feed,
    max_request: usize,
}

impl RequestDecoder {
    /// `max_request`: the most bytes one command may span before the client is
    /// cut off (the parser may hold up to one more read chunk of 8 KiB besides).
    pub fn new(max_request: usize) -> Self {
        RequestDecoder {
            parser: redis::Parser::new(),
            feed: Feed::default(),
            max_request,
        }
    }

    /// Hands over bytes read from the socket.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.feed.pos == self.feed.data.len() {
            self.feed.data.clear();
            self.feed.pos = 0;
        }
        self.feed.data.extend_from_slice(bytes);
    }

    /// The next complete command (its arguments), `Ok(None)` when more bytes are
    /// needed, or an error after which the connection must be closed: the parser
    /// cannot resynchronise after malformed input.
    pub fn next_command(&mut self) -> Result<Option<Vec<Vec<u8>>>, SentinelError> {
        loop {
            self.feed.starved = false;
            let parsed = self.parser.parse_value(&mut self.feed);
            if self.feed.pulled > self.max_request {
                return Err(SentinelError::RequestTooLarge(self.max_request));
            }
            match parsed {
                Ok(value) => {
                    self.feed.pulled = 0;
                    if let Some(args) = command_args(value)? {
                        return Ok(Some(args));
                    }
                }
                Err(_) if self.feed.starved => return Ok(None),
                Err(e) => return Err(SentinelError::Protocol(e.to_string())),
            }
        }
    }
}

/// A command is an array of bulk strings. Redis skips empty and null arrays, so
/// `Ok(None)` asks for the next one.
fn command_args(value: Value) -> Result<Option<Vec<Vec<u8>>>, SentinelError> {
    match value {
        Value::Nil => Ok(None),
        Value::Array(items) if items.is_empty() => Ok(None),
        Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                Value::BulkString(bytes) => Ok(bytes),
                other => Err(SentinelError::Protocol(format!(
                    "expected a bulk string argument, got {}",
                    kind(&other)
                ))),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        other => Err(SentinelError::Protocol(format!(
            "expected an array of bulk strings, got {}",
            kind(&other)
        ))),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Nil => "a null",
        Value::Int(_) => "an integer",
        Value::BulkString(_) => "a bulk string",
        Value::Array(_) => "an array",
        Value::SimpleString(_) | Value::Okay => "a simple string",
        Value::Map(_) => "a map",
        Value::Set(_) => "a set",
        Value::Push { .. } => "a push message",
        Value::ServerError(_) => "an error",
        _ => "an unsupported type",
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;

    const LIMIT: usize = 64 * 1024;

    fn all(decoder: &mut RequestDecoder) -> Result<Vec<Vec<String>>, SentinelError> {
        let mut out = Vec::new();
        while let Some(args) = decoder.next_command()? {
            out.push(
                args.into_iter()
                    .map(|a| String::from_utf8(a).expect("utf8"))
                    .collect(),
            );
        }
        Ok(out)
    }

    fn words(list: &[&[&str]]) -> Vec<Vec<String>> {
        list.iter()
            .map(|c| c.iter().map(|w| w.to_string()).collect())
            .collect()
    }

    const PIPELINE: &[u8] = b"*1\r\n$4\r\nPING\r\n*3\r\n$8\r\nSENTINEL\r\n$23\r\nget-master-addr-by-name\r\n$8\r\nmymaster\r\n*0\r\n*2\r\n$4\r\nPING\r\n$0\r\n\r\n";

    fn pipeline_commands() -> Vec<Vec<String>> {
        words(&[
            &["PING"],
            &["SENTINEL", "get-master-addr-by-name", "mymaster"],
            &["PING", ""],
        ])
    }

    #[test]
    fn pipelined_commands_come_out_one_by_one() {
        let mut d = RequestDecoder::new(LIMIT);
        d.push(PIPELINE);
        assert_eq!(all(&mut d).expect("valid"), pipeline_commands());
        assert!(d.next_command().expect("still fine").is_none());
    }

    #[test]
    fn a_command_split_at_every_byte_resumes_where_it_stopped() {
        let mut d = RequestDecoder::new(LIMIT);
        let mut got = Vec::new();
        for byte in PIPELINE {
            d.push(&[*byte]);
            got.extend(all(&mut d).expect("valid"));
        }
        assert_eq!(got, pipeline_commands());
    }

    #[test]
    fn binary_arguments_survive() {
        let mut d = RequestDecoder::new(LIMIT);
        d.push(b"*2\r\n$4\r\nAUTH\r\n$4\r\n\r\n\0\xff\r\n");
        let args = d.next_command().expect("valid").expect("complete");
        assert_eq!(args, vec![b"AUTH".to_vec(), b"\r\n\0\xff".to_vec()]);
    }

    #[test]
    fn anything_but_an_array_of_bulk_strings_is_a_protocol_error() {
        for input in [
            &b"PING\r\n"[..],
            b"+PING\r\n",
            b"*1\r\n:1\r\n",
            b"*1\r\n*1\r\n$1\r\na\r\n",
            b"%1\r\n$1\r\na\r\n$1\r\nb\r\n",
            b"$4\r\nPING\r\n",
            b"*x\r\n",
            b"*1\r\n$z\r\n",
            b"*1\r\n$1\r\nab\r\n",
        ] {
            let mut d = RequestDecoder::new(LIMIT);
            d.push(input);
            assert!(
                matches!(d.next_command(), Err(SentinelError::Protocol(_))),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn a_huge_declared_length_is_cut_off_at_the_limit() {
        let mut d = RequestDecoder::new(1024);
        d.push(b"*1\r\n$1000000000\r\n");
        assert!(d.next_command().expect("incomplete").is_none());
        let chunk = vec![b'a'; 512];
        let mut result = Ok(None);
        for _ in 0..4 {
            d.push(&chunk);
            result = d.next_command();
            if result.is_err() {
                break;
            }
        }
        assert!(matches!(result, Err(SentinelError::RequestTooLarge(1024))));
    }

    #[test]
    fn a_huge_declared_array_allocates_nothing_up_front() {
        let mut d = RequestDecoder::new(LIMIT);
        d.push(b"*9223372036854775807\r\n$1\r\na\r\n");
        assert!(d.next_command().expect("incomplete").is_none());
    }

    #[test]
    fn the_limit_applies_per_command_not_per_connection() {
        let mut d = RequestDecoder::new(64);
        for _ in 0..100 {
            d.push(b"*1\r\n$4\r\nPING\r\n");
            assert_eq!(all(&mut d).expect("small commands"), words(&[&["PING"]]));
        }
    }

    /// Random and mutated input in random chunks: the decoder must never panic,
    /// must stay within its limit, and must never yield a command after an error.
    #[test]
    fn fuzz_random_and_mutated_input() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5e4710e1);
        let alphabet = b"*$:+-%>_#,!=(|~\r\n0123456789-abcPING ";
        let (mut commands, mut errors) = (0, 0);
        for round in 0..20_000 {
            let mut input: Vec<u8> = if round % 2 == 0 {
                PIPELINE.to_vec()
            } else {
                (0..rng.random_range(0..200))
                    .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                    .collect()
            };
            for _ in 0..rng.random_range(0..6) {
                if input.is_empty() {
                    break;
                }
                let i = rng.random_range(0..input.len());
                match rng.random_range(0..3) {
                    0 => input[i] = alphabet[rng.random_range(0..alphabet.len())],
                    1 => {
                        input.remove(i);
                    }
                    _ => input.insert(i, rng.random()),
                }
            }
            let mut d = RequestDecoder::new(256);
            let mut rest = &input[..];
            'feed: while !rest.is_empty() {
                let n = rng.random_range(1..=rest.len());
                d.push(&rest[..n]);
                rest = &rest[n..];
                loop {
                    match d.next_command() {
                        Ok(Some(args)) => {
                            assert!(!args.is_empty());
                            commands += 1;
                        }
                        Ok(None) => break,
                        Err(_) => {
                            errors += 1;
                            break 'feed;
                        }
                    }
                }
            }
        }
        assert!(
            commands > 1000 && errors > 1000,
            "{commands} commands, {errors} errors"
        );
    }

    /// Random commands with arbitrary binary arguments, encoded and cut at random
    /// points, come out exactly as they went in.
    #[test]
    fn random_commands_in_random_chunks_round_trip() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0xc0ffee);
        for _ in 0..2_000 {
            let commands: Vec<Vec<Vec<u8>>> = (0..rng.random_range(1..8))
                .map(|_| {
                    (0..rng.random_range(1..6))
                        .map(|_| (0..rng.random_range(0..40)).map(|_| rng.random()).collect())
                        .collect()
                })
                .collect();
            let mut wire = Vec::new();
            for command in &commands {
                wire.extend_from_slice(format!("*{}\r\n", command.len()).as_bytes());
                for arg in command {
                    wire.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
                    wire.extend_from_slice(arg);
                    wire.extend_from_slice(b"\r\n");
                }
            }
            let mut d = RequestDecoder::new(LIMIT);
            let mut got = Vec::new();
            let mut rest = &wire[..];
            while !rest.is_empty() {
                let n = rng.random_range(1..=rest.len());
                d.push(&rest[..n]);
                rest = &rest[n..];
                while let Some(args) = d.next_command().expect("valid input") {
                    got.push(args);
                }
            }
            assert_eq!(got, commands);
        }
    }
}
