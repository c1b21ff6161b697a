//! Splits a client's byte stream into commands, as Redis reads them: a request that
//! starts with `*` is a multibulk array of bulk strings, anything else an inline
//! command (a line, as typed in telnet), split into words with Redis's quoting rules.
//!
//! Bytes are buffered until a command is complete; every header line is short, so
//! re-reading an incomplete command is cheap, and an inline line is searched for its
//! end only once per byte.

use super::SentinelError;

/// Longest `*<count>` or `$<len>` line accepted: a signed 64-bit number and CRLF.
const MAX_NUMBER_LINE: usize = 24;
/// Redis's own limit on the number of arguments.
const MAX_ARGS: i64 = 1024 * 1024;

/// A complete command: bytes it spans and its arguments (empty: skip it).
type Parsed = Option<(usize, Vec<Vec<u8>>)>;

/// Incremental command decoder for one connection.
pub struct RequestDecoder {
    buf: Vec<u8>,
    pos: usize,
    /// How far past `pos` an inline line was already searched for its end.
    scanned: usize,
    max_request: usize,
}

impl RequestDecoder {
    /// `max_request`: the most bytes one command may span before the client is cut off.
    pub fn new(max_request: usize) -> Self {
        RequestDecoder {
            buf: Vec::new(),
            pos: 0,
            scanned: 0,
            max_request,
        }
    }

    /// Hands over bytes read from the socket.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete command (its arguments, never empty), `Ok(None)` when more
    /// bytes are needed, or an error after which the connection must be closed.
    pub fn next_command(&mut self) -> Result<Option<Vec<Vec<u8>>>, SentinelError> {
        loop {
            let rest = &self.buf[self.pos..];
            if rest.is_empty() {
                return Ok(None);
            }
            let parsed = if rest[0] == b'*' {
                multibulk(rest, self.max_request)?
            } else {
                match rest[self.scanned..].iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        let end = self.scanned + i;
                        let line = rest[..end].strip_suffix(b"\r").unwrap_or(&rest[..end]);
                        let args = split_args(line).ok_or_else(|| {
                            SentinelError::Protocol("unbalanced quotes in request".into())
                        })?;
                        Some((end + 1, args))
                    }
                    None if rest.len() > self.max_request => {
                        return Err(SentinelError::Protocol("too big inline request".into()));
                    }
                    None => {
                        self.scanned = rest.len();
                        None
                    }
                }
            };
            match parsed {
                None if rest.len() > self.max_request => {
                    return Err(SentinelError::RequestTooLarge(self.max_request));
                }
                None => return Ok(None),
                Some((used, args)) => {
                    self.pos += used;
                    self.scanned = 0;
                    // Empty lines and empty arrays are skipped, as Redis does.
                    if !args.is_empty() {
                        return Ok(Some(args));
                    }
                }
            }
        }
    }
}

/// `*<n>` or `$<len>` at the start of `input`: the number and where the next line starts.
fn number_line(input: &[u8], what: &str) -> Result<Option<(i64, usize)>, SentinelError> {
    let bad = || SentinelError::Protocol(format!("invalid {what} length"));
    let window = &input[..input.len().min(MAX_NUMBER_LINE)];
    let Some(cr) = window.windows(2).position(|w| w == b"\r\n") else {
        return if input.len() >= MAX_NUMBER_LINE {
            Err(bad())
        } else {
            Ok(None)
        };
    };
    let digits = std::str::from_utf8(&input[1..cr]).map_err(|_| bad())?;
    // Redis accepts only a plain decimal number: no '+', no spaces.
    if digits.starts_with('+') {
        return Err(bad());
    }
    let n = digits.parse::<i64>().map_err(|_| bad())?;
    Ok(Some((n, cr + 2)))
}

fn multibulk(input: &[u8], max: usize) -> Result<Parsed, SentinelError> {
    let Some((count, mut at)) = number_line(input, "multibulk")? else {
        return Ok(None);
    };
    if count <= 0 {
        return Ok(Some((at, Vec::new())));
    }
    if count > MAX_ARGS {
        return Err(SentinelError::Protocol("invalid multibulk length".into()));
    }
    let mut args = Vec::with_capacity(usize::try_from(count.min(64)).unwrap_or(64));
    for _ in 0..count {
        let Some(&first) = input.get(at) else {
            return Ok(None);
        };
        if first != b'$' {
            return Err(SentinelError::Protocol(format!(
                "expected '$', got '{}'",
                char::from(first)
            )));
        }
        let Some((len, start)) = number_line(&input[at..], "bulk")? else {
            return Ok(None);
        };
        let len = usize::try_from(len)
            .map_err(|_| SentinelError::Protocol("invalid bulk length".into()))?;
        if len > max {
            return Err(SentinelError::RequestTooLarge(max));
        }
        let start = at + start;
        let end = start + len;
        if input.len() < end + 2 {
            return Ok(None);
        }
        if &input[end..end + 2] != b"\r\n" {
            return Err(SentinelError::Protocol(
                "expected CRLF after a bulk string".into(),
            ));
        }
        args.push(input[start..end].to_vec());
        at = end + 2;
    }
    Ok(Some((at, args)))
}

/// Splits an inline command into words like Redis: spaces separate words, `"..."`
/// takes `\n \r \t \b \a \\ \" \xHH` escapes, `'...'` only `\'`, and a closing quote
/// must end the word. `None`: unbalanced quotes. A NUL ends the line, as in C.
pub fn split_args(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    let line = line.split(|&b| b == 0).next().unwrap_or_default();
    let is_space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c);
    let ends_word = |b: Option<&u8>| b.is_none_or(|&b| matches!(b, b' ' | b'\n' | b'\r' | b'\t'));
    let mut args = Vec::new();
    let mut p = 0;
    loop {
        while line.get(p).is_some_and(|&b| is_space(b)) {
            p += 1;
        }
        if p >= line.len() {
            return Some(args);
        }
        let mut word = Vec::new();
        let (mut double, mut single) = (false, false);
        loop {
            let c = line.get(p).copied();
            if double {
                match c {
                    None => return None,
                    Some(b'\\')
                        if line.get(p + 1) == Some(&b'x')
                            && line.get(p + 2).is_some_and(u8::is_ascii_hexdigit)
                            && line.get(p + 3).is_some_and(u8::is_ascii_hexdigit) =>
                    {
                        let hex = std::str::from_utf8(&line[p + 2..p + 4]).ok()?;
                        word.push(u8::from_str_radix(hex, 16).ok()?);
                        p += 3;
                    }
                    Some(b'\\') if p + 1 < line.len() => {
                        p += 1;
                        word.push(match line[p] {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 0x08,
                            b'a' => 0x07,
                            other => other,
                        });
                    }
                    Some(b'"') => {
                        if !ends_word(line.get(p + 1)) {
                            return None;
                        }
                        p += 1;
                        break;
                    }
                    Some(other) => word.push(other),
                }
            } else if single {
                match c {
                    None => return None,
                    Some(b'\\') if line.get(p + 1) == Some(&b'\'') => {
                        p += 1;
                        word.push(b'\'');
                    }
                    Some(b'\'') => {
                        if !ends_word(line.get(p + 1)) {
                            return None;
                        }
                        p += 1;
                        break;
                    }
                    Some(other) => word.push(other),
                }
            } else {
                match c {
                    None | Some(b' ' | b'\n' | b'\r' | b'\t') => break,
                    Some(b'"') => double = true,
                    Some(b'\'') => single = true,
                    Some(other) => word.push(other),
                }
            }
            p += 1;
        }
        args.push(word);
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
                    .map(|a| String::from_utf8_lossy(&a).into_owned())
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

    const PIPELINE: &[u8] = b"*1\r\n$4\r\nPING\r\n*3\r\n$8\r\nSENTINEL\r\n$23\r\nget-master-addr-by-name\r\n$8\r\nmymaster\r\n*0\r\n*-1\r\n*2\r\n$4\r\nPING\r\n$0\r\n\r\nsentinel  myid\r\n\r\nPING\n";

    fn pipeline_commands() -> Vec<Vec<String>> {
        words(&[
            &["PING"],
            &["SENTINEL", "get-master-addr-by-name", "mymaster"],
            &["PING", ""],
            &["sentinel", "myid"],
            &["PING"],
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
    fn inline_words_split_like_redis() {
        type Case<'a> = (&'a [u8], Option<&'a [&'a [u8]]>);
        let cases: &[Case] = &[
            (b"PING", Some(&[b"PING"])),
            (b"  sentinel   masters  ", Some(&[b"sentinel", b"masters"])),
            (b"AUTH \"p w\"", Some(&[b"AUTH", b"p w"])),
            (b"AUTH 'it\\'s'", Some(&[b"AUTH", b"it's"])),
            (b"AUTH 'a\\nb'", Some(&[b"AUTH", b"a\\nb"])),
            (
                b"x \"a\\n\\r\\t\\b\\a\\\\\\\"\\x41\\xzz\"",
                Some(&[b"x", b"a\n\r\t\x08\x07\\\"Axzz"]),
            ),
            (b"x foo\"bar baz\"", Some(&[b"x", b"foobar baz"])),
            (b"x \"\"", Some(&[b"x", b""])),
            (b"x\tb\x0bc", Some(&[b"x", b"b\x0bc"])),
            (b"PING\0ignored", Some(&[b"PING"])),
            (b"", Some(&[])),
            (b"x \"open", None),
            (b"x 'open", None),
            (b"x \"a\"b", None),
            (b"x 'a'b", None),
            (b"x \"a\\", None),
        ];
        for (line, want) in cases {
            let want = want.map(|w| w.iter().map(|a| a.to_vec()).collect::<Vec<_>>());
            assert_eq!(
                split_args(line),
                want,
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn malformed_multibulk_and_quotes_are_protocol_errors() {
        for input in [
            &b"*1\r\n:1\r\n"[..],
            b"*1\r\n*1\r\n$1\r\na\r\n",
            b"*x\r\n",
            b"*+1\r\n$1\r\na\r\n",
            b"*1\r\n$z\r\n",
            b"*1\r\n$-1\r\n",
            b"*1\r\n$1\r\nab\r\n",
            b"*99999999999999999999999\r\n",
            b"*2000000\r\n",
            b"AUTH \"unbalanced\r\n",
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
    fn resp_looking_lines_are_inline_commands() {
        let mut d = RequestDecoder::new(LIMIT);
        d.push(b"+PING\r\n$4\r\n%1\r\n");
        assert_eq!(
            all(&mut d).expect("inline"),
            words(&[&["+PING"], &["$4"], &["%1"]])
        );
    }

    #[test]
    fn huge_requests_are_cut_off_at_the_limit() {
        let mut d = RequestDecoder::new(1024);
        d.push(b"*1\r\n$1000000000\r\n");
        assert!(matches!(
            d.next_command(),
            Err(SentinelError::RequestTooLarge(1024))
        ));

        let mut d = RequestDecoder::new(1024);
        d.push(b"*3\r\n$500\r\n");
        d.push(&[b'a'; 500]);
        d.push(b"\r\n$500\r\n");
        d.push(&[b'a'; 500]);
        d.push(b"\r\n$10\r\n");
        assert!(matches!(
            d.next_command(),
            Err(SentinelError::RequestTooLarge(1024))
        ));

        let mut d = RequestDecoder::new(1024);
        let mut result = Ok(None);
        for _ in 0..3 {
            d.push(&[b'a'; 512]);
            result = d.next_command();
            if result.is_err() {
                break;
            }
        }
        assert!(matches!(result, Err(SentinelError::Protocol(m)) if m.contains("too big inline")));
    }

    #[test]
    fn a_huge_declared_array_allocates_nothing_up_front() {
        let mut d = RequestDecoder::new(LIMIT);
        d.push(b"*1048576\r\n$1\r\na\r\n");
        assert!(d.next_command().expect("incomplete").is_none());
    }

    #[test]
    fn the_limit_applies_per_command_not_per_connection() {
        let mut d = RequestDecoder::new(64);
        for _ in 0..100 {
            d.push(b"*1\r\n$4\r\nPING\r\nPING\r\n");
            assert_eq!(
                all(&mut d).expect("small commands"),
                words(&[&["PING"], &["PING"]])
            );
        }
    }

    /// Random and mutated input in random chunks: the decoder must never panic,
    /// must stay within its limit, and must never yield a command after an error.
    #[test]
    fn fuzz_random_and_mutated_input() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5e4710e1);
        let alphabet = b"*$:+-%>_#,!=(|~\r\n0123456789-abcPING \"'\\x";
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
