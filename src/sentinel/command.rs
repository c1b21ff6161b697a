//! The Sentinel command set: connection commands here, `SENTINEL` and `INFO` in
//! [`super::report`]. Everything but `CLIENT LIST/KILL` (which see the other
//! connections) is a function of the session, the configuration and the view.
//!
//! Replies follow what Redis Sentinel 7 answers, because stock clients parse them:
//! field names and flags of the instance tables, error codes (`NOAUTH`, `WRONGPASS`,
//! `NOPROTO`) and the RESP2 subscribed-mode rules.

use std::collections::BTreeSet;
use std::time::Instant;

use subtle::ConstantTimeEq;

use super::clients::{ClientInfo, Clients};
use super::glob;
use super::report;
use super::resp::{Protocol, Reply};
use super::{SentinelConfig, SentinelView};

/// Redis version announced by `HELLO` and `INFO`: the Sentinel behaviour this endpoint
/// follows. Clients gate features (RESP3) on it.
pub(super) const COMPAT_VERSION: &str = "7.0.0";

/// The only ACL user: Redis's `requirepass` sets the password of `default`.
const DEFAULT_USER: &[u8] = b"default";

/// Characters of an unknown command's arguments echoed in its error, as Redis caps them.
const ECHO_LIMIT: usize = 128;

/// What a command may read besides its session.
pub struct Context<'a> {
    pub config: &'a SentinelConfig,
    pub view: &'a SentinelView,
    pub clients: &'a Clients,
    pub now: Instant,
}

/// Per-connection state.
#[derive(Debug)]
pub struct Session {
    pub info: ClientInfo,
    pub protocol: Protocol,
    authenticated: bool,
    channels: BTreeSet<Vec<u8>>,
    patterns: BTreeSet<Vec<u8>>,
}

impl Session {
    pub fn new(info: ClientInfo, config: &SentinelConfig) -> Self {
        Session {
            info,
            protocol: Protocol::Resp2,
            authenticated: config.password.is_none(),
            channels: BTreeSet::new(),
            patterns: BTreeSet::new(),
        }
    }

    fn subscriptions(&self) -> i64 {
        i64::try_from(self.channels.len() + self.patterns.len()).unwrap_or(i64::MAX)
    }

    /// RESP2 connections with a subscription may only run pub/sub commands, because
    /// the client reads every reply as a message. RESP3 tells them apart by type.
    fn in_resp2_subscribed_mode(&self) -> bool {
        self.protocol == Protocol::Resp2 && self.subscriptions() > 0
    }

    /// The messages this session receives for `payload` published on `channel`:
    /// one for a channel subscription, one per matching pattern.
    pub fn deliver(&self, channel: &str, payload: &str) -> Vec<Reply> {
        let mut out = Vec::new();
        if self.channels.contains(channel.as_bytes()) {
            out.push(Reply::Push(vec![
                Reply::bulk("message"),
                Reply::bulk(channel),
                Reply::bulk(payload),
            ]));
        }
        for pattern in &self.patterns {
            if glob::matches(pattern, channel.as_bytes()) {
                out.push(Reply::Push(vec![
                    Reply::bulk("pmessage"),
                    Reply::bulk(pattern),
                    Reply::bulk(channel),
                    Reply::bulk(payload),
                ]));
            }
        }
        out
    }
}

/// What a command produced: replies in order, and whether to close afterwards.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    pub replies: Vec<Reply>,
    pub close: bool,
}

impl Outcome {
    fn reply(reply: Reply) -> Self {
        Outcome {
            replies: vec![reply],
            close: false,
        }
    }

    fn replies(replies: Vec<Reply>) -> Self {
        Outcome {
            replies,
            close: false,
        }
    }
}

/// Runs one command and records it in the session's `CLIENT LIST` entry.
pub fn handle(session: &mut Session, ctx: &Context<'_>, args: &[Vec<u8>]) -> Outcome {
    let Some((name, rest)) = args.split_first() else {
        return Outcome::replies(Vec::new());
    };
    let command = name.to_ascii_lowercase();
    // Recorded first, so `CLIENT INFO` names itself, as in Redis.
    let info = &mut session.info;
    info.last_active = ctx.now;
    info.cmd = String::from_utf8_lossy(&command).into_owned();
    if let Some(sub) = rest.first().filter(|_| has_subcommands(&command)) {
        info.cmd = format!(
            "{}|{}",
            info.cmd,
            String::from_utf8_lossy(sub).to_lowercase()
        );
    }
    let outcome = dispatch(session, ctx, &command, name, rest);
    let info = &mut session.info;
    info.channels = session.channels.len();
    info.patterns = session.patterns.len();
    info.resp = match session.protocol {
        Protocol::Resp2 => 2,
        Protocol::Resp3 => 3,
    };
    outcome
}

fn has_subcommands(command: &[u8]) -> bool {
    matches!(command, b"sentinel" | b"client" | b"command" | b"acl")
}

fn dispatch(
    session: &mut Session,
    ctx: &Context<'_>,
    command: &[u8],
    name: &[u8],
    rest: &[Vec<u8>],
) -> Outcome {
    let config = ctx.config;
    // Commands a client may send before authenticating; HELLO checks on its own.
    if !session.authenticated && !matches!(command, b"auth" | b"hello" | b"quit") {
        return Outcome::reply(Reply::error("NOAUTH Authentication required."));
    }
    if session.in_resp2_subscribed_mode()
        && !matches!(
            command,
            b"subscribe"
                | b"psubscribe"
                | b"unsubscribe"
                | b"punsubscribe"
                | b"ping"
                | b"quit"
                | b"reset"
        )
    {
        return Outcome::reply(Reply::error(format!(
            "ERR Can't execute '{}': only (P)SUBSCRIBE / (P)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context",
            String::from_utf8_lossy(command)
        )));
    }

    match command {
        b"ping" => ping(session, rest),
        b"auth" => Outcome::reply(auth(session, config, rest)),
        b"hello" => Outcome::reply(hello(session, config, rest)),
        b"quit" => Outcome {
            replies: vec![Reply::ok()],
            close: true,
        },
        b"reset" => {
            let info = session.info.clone();
            *session = Session::new(info, config);
            session.info.name.clear();
            Outcome::reply(Reply::Simple("RESET".to_string()))
        }
        b"role" if rest.is_empty() => Outcome::reply(Reply::Array(vec![
            Reply::bulk("sentinel"),
            Reply::Array(vec![Reply::bulk(&config.master_name)]),
        ])),
        b"role" => Outcome::reply(wrong_arity("role")),
        b"sentinel" => Outcome::reply(report::sentinel(ctx, rest)),
        b"info" => Outcome::reply(Reply::bulk(report::info(ctx, rest))),
        b"client" => client(session, ctx, rest),
        b"command" => Outcome::reply(command_command(rest)),
        b"acl" => Outcome::reply(acl(rest)),
        b"subscribe" | b"psubscribe" if rest.is_empty() => {
            Outcome::reply(wrong_arity(&String::from_utf8_lossy(command)))
        }
        b"subscribe" => subscribe(session, rest, false),
        b"psubscribe" => subscribe(session, rest, true),
        b"unsubscribe" => unsubscribe(session, rest, false),
        b"punsubscribe" => unsubscribe(session, rest, true),
        _ => Outcome::reply(unknown_command(name, rest)),
    }
}

fn ping(session: &Session, rest: &[Vec<u8>]) -> Outcome {
    if rest.len() > 1 {
        return Outcome::reply(wrong_arity("ping"));
    }
    // In RESP2 subscribed mode the client reads a message-shaped array.
    if session.in_resp2_subscribed_mode() {
        let echo = rest.first().cloned().unwrap_or_default();
        return Outcome::reply(Reply::Array(vec![Reply::bulk("pong"), Reply::Bulk(echo)]));
    }
    Outcome::reply(match rest.first() {
        Some(echo) => Reply::Bulk(echo.clone()),
        None => Reply::Simple("PONG".to_string()),
    })
}

/// Why a credential check failed.
enum AuthFailure {
    /// `AUTH <password>` while no password is configured: Redis reports a likely
    /// client misconfiguration instead of silently accepting.
    NoPasswordConfigured,
    Wrong,
}

fn check_credentials(
    config: &SentinelConfig,
    user: Option<&[u8]>,
    password: &[u8],
) -> Result<(), AuthFailure> {
    if user.is_some_and(|u| u != DEFAULT_USER) {
        return Err(AuthFailure::Wrong);
    }
    match &config.password {
        // Without requirepass the default user has no password, so any password
        // given with an explicit user name is accepted.
        None if user.is_some() => Ok(()),
        None => Err(AuthFailure::NoPasswordConfigured),
        Some(expected) if bool::from(expected.as_bytes().ct_eq(password)) => Ok(()),
        Some(_) => Err(AuthFailure::Wrong),
    }
}

fn auth_error(failure: AuthFailure) -> Reply {
    match failure {
        AuthFailure::NoPasswordConfigured => Reply::error(
            "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
        ),
        AuthFailure::Wrong => {
            Reply::error("WRONGPASS invalid username-password pair or user is disabled.")
        }
    }
}

fn auth(session: &mut Session, config: &SentinelConfig, rest: &[Vec<u8>]) -> Reply {
    let result = match rest {
        [] => return wrong_arity("auth"),
        [password] => check_credentials(config, None, password),
        [user, password] => check_credentials(config, Some(user), password),
        _ => return Reply::error("ERR syntax error"),
    };
    match result {
        Ok(()) => {
            session.authenticated = true;
            Reply::ok()
        }
        Err(failure) => auth_error(failure),
    }
}

fn hello(session: &mut Session, config: &SentinelConfig, rest: &[Vec<u8>]) -> Reply {
    let mut protocol = session.protocol;
    let mut credentials = None;
    let mut client_name = None;
    if let Some((version, mut options)) = rest.split_first() {
        protocol = match std::str::from_utf8(version)
            .ok()
            .and_then(|v| v.parse::<i64>().ok())
        {
            Some(2) => Protocol::Resp2,
            Some(3) => Protocol::Resp3,
            Some(_) => return Reply::error("NOPROTO unsupported protocol version"),
            None => {
                return Reply::error("ERR Protocol version is not an integer or out of range");
            }
        };
        while let Some((option, after)) = options.split_first() {
            match (option.to_ascii_lowercase().as_slice(), after) {
                (b"auth", [user, password, tail @ ..]) => {
                    credentials = Some((user, password));
                    options = tail;
                }
                (b"setname", [name, tail @ ..]) => {
                    client_name = Some(name);
                    options = tail;
                }
                _ => {
                    return Reply::error(format!(
                        "ERR Syntax error in HELLO option '{}'",
                        String::from_utf8_lossy(option)
                    ));
                }
            }
        }
    }
    if let Some((user, password)) = credentials {
        if let Err(failure) = check_credentials(config, Some(user), password) {
            return auth_error(failure);
        }
        session.authenticated = true;
    }
    if !session.authenticated {
        return Reply::error(
            "NOAUTH HELLO needs an authenticated connection: send AUTH first, or HELLO <protover> AUTH <user> <password>",
        );
    }
    if let Some(name) = client_name {
        if let Err(e) = valid_client_name(name) {
            return e;
        }
        session.info.name = String::from_utf8_lossy(name).into_owned();
    }
    session.protocol = protocol;
    Reply::Map(vec![
        (Reply::bulk("server"), Reply::bulk("redis")),
        (Reply::bulk("version"), Reply::bulk(COMPAT_VERSION)),
        (
            Reply::bulk("proto"),
            Reply::Int(match protocol {
                Protocol::Resp2 => 2,
                Protocol::Resp3 => 3,
            }),
        ),
        (
            Reply::bulk("id"),
            Reply::Int(i64::try_from(session.info.id).unwrap_or(i64::MAX)),
        ),
        (Reply::bulk("mode"), Reply::bulk("sentinel")),
        (Reply::bulk("modules"), Reply::Array(Vec::new())),
    ])
}
fn valid_client_name(name: &[u8]) -> Result<(), Reply> {
    // Names show up in space-separated CLIENT LIST lines, hence Redis's rule.
    if name.iter().all(|b| (b'!'..=b'~').contains(b)) {
        Ok(())
    } else {
        Err(Reply::error(
            "ERR Client names cannot contain spaces, newlines or special characters.",
        ))
    }
}

fn client(session: &mut Session, ctx: &Context<'_>, rest: &[Vec<u8>]) -> Outcome {
    let Some((given, args)) = rest.split_first() else {
        return Outcome::reply(wrong_arity("client"));
    };
    let sub = given.to_ascii_lowercase();
    let arity = || {
        Outcome::reply(wrong_arity(&format!(
            "client|{}",
            String::from_utf8_lossy(&sub)
        )))
    };
    let reply = match (sub.as_slice(), args) {
        (b"setname", [name]) => match valid_client_name(name) {
            Ok(()) => {
                session.info.name = String::from_utf8_lossy(name).into_owned();
                Reply::ok()
            }
            Err(e) => e,
        },
        (b"getname", []) => {
            if session.info.name.is_empty() {
                Reply::Null
            } else {
                Reply::bulk(&session.info.name)
            }
        }
        (b"id", []) => Reply::Int(i64::try_from(session.info.id).unwrap_or(i64::MAX)),
        (b"setinfo", [attr, value]) => match attr.to_ascii_lowercase().as_slice() {
            _ if value.iter().any(|b| !(b'!'..=b'~').contains(b)) => Reply::error(format!(
                "ERR {} cannot contain spaces, newlines or special characters.",
                String::from_utf8_lossy(attr)
            )),
            b"lib-name" => {
                session.info.lib_name = String::from_utf8_lossy(value).into_owned();
                Reply::ok()
            }
            b"lib-ver" => {
                session.info.lib_ver = String::from_utf8_lossy(value).into_owned();
                Reply::ok()
            }
            _ => Reply::error(format!("ERR Unrecognized option '{}'", echo(attr))),
        },
        // Eviction and touch hints change nothing here.
        (b"no-evict" | b"no-touch", [on])
            if matches!(on.to_ascii_lowercase().as_slice(), b"on" | b"off") =>
        {
            Reply::ok()
        }
        (b"no-evict" | b"no-touch", [_]) => Reply::error("ERR syntax error"),
        (b"info", []) => Reply::bulk(format!("{}\n", session.info.line(ctx.now))),
        (b"list", _) => return Outcome::reply(client_list(session, ctx, args)),
        (b"kill", [_, ..]) => return client_kill(session, ctx, args),
        (
            b"setname" | b"getname" | b"id" | b"setinfo" | b"no-evict" | b"no-touch" | b"info"
            | b"kill",
            _,
        ) => return arity(),
        _ => Reply::error(format!(
            "ERR unknown subcommand '{}'. Try CLIENT HELP.",
            echo(given)
        )),
    };
    Outcome::reply(reply)
}

/// A `TYPE` filter of `CLIENT LIST/KILL`; this endpoint has no replica or master links.
fn client_type(name: &[u8]) -> Result<bool, Reply> {
    match name.to_ascii_lowercase().as_slice() {
        b"normal" => Ok(false),
        b"pubsub" => Ok(true),
        _ => Err(Reply::error(format!(
            "ERR Unknown client type '{}'",
            echo(name)
        ))),
    }
}

fn client_list(session: &Session, ctx: &Context<'_>, args: &[Vec<u8>]) -> Reply {
    let mut kind = None;
    let mut ids: Option<Vec<u64>> = None;
    match args {
        [] => {}
        [t, name] if t.eq_ignore_ascii_case(b"type") => match client_type(name) {
            Ok(pubsub) => kind = Some(pubsub),
            // Replica and master connections exist on Redis, never here.
            Err(_)
                if matches!(
                    name.to_ascii_lowercase().as_slice(),
                    b"replica" | b"slave" | b"master"
                ) =>
            {
                return Reply::bulk("");
            }
            Err(e) => return e,
        },
        [i, list @ ..] if i.eq_ignore_ascii_case(b"id") && !list.is_empty() => {
            let parsed: Option<Vec<u64>> = list
                .iter()
                .map(|a| std::str::from_utf8(a).ok()?.parse().ok())
                .collect();
            match parsed {
                Some(p) => ids = Some(p),
                None => return Reply::error("ERR Invalid client ID"),
            }
        }
        _ => return Reply::error("ERR syntax error"),
    }
    let mut text = String::new();
    for c in ctx.clients.list(&session.info) {
        if kind.is_some_and(|pubsub| c.is_pubsub() != pubsub)
            || ids.as_ref().is_some_and(|ids| !ids.contains(&c.id))
        {
            continue;
        }
        text.push_str(&c.line(ctx.now));
        text.push('\n');
    }
    Reply::bulk(text)
}

/// `CLIENT KILL addr` (old form) or `CLIENT KILL <filter> <value> ...`.
fn client_kill(session: &Session, ctx: &Context<'_>, args: &[Vec<u8>]) -> Outcome {
    let me = &session.info;
    if let [addr] = args {
        let addr = String::from_utf8_lossy(addr).into_owned();
        if me.addr == addr {
            return Outcome {
                replies: vec![Reply::ok()],
                close: true,
            };
        }
        let killed = ctx.clients.kill(me.id, |c| c.addr == addr);
        return Outcome::reply(if killed.is_empty() {
            Reply::error("ERR No such client")
        } else {
            Reply::ok()
        });
    }
    type Filter = Box<dyn Fn(&ClientInfo) -> bool>;
    let mut filters: Vec<Filter> = Vec::new();
    let mut skip_me = true;
    for pair in args.chunks(2) {
        let [key, value] = pair else {
            return Outcome::reply(Reply::error("ERR syntax error"));
        };
        let text = String::from_utf8_lossy(value).into_owned();
        match key.to_ascii_lowercase().as_slice() {
            b"id" => match text.parse::<u64>() {
                Ok(id) => filters.push(Box::new(move |c| c.id == id)),
                Err(_) => {
                    return Outcome::reply(Reply::error("ERR client-id should be greater than 0"));
                }
            },
            b"addr" => filters.push(Box::new(move |c| c.addr == text)),
            b"laddr" => filters.push(Box::new(move |c| c.laddr == text)),
            b"type" => match client_type(value) {
                Ok(pubsub) => filters.push(Box::new(move |c| c.is_pubsub() == pubsub)),
                Err(e) => return Outcome::reply(e),
            },
            b"user" => {
                let known = value.as_slice() == DEFAULT_USER;
                filters.push(Box::new(move |_| known));
            }
            b"maxage" => match text.parse::<u64>() {
                Ok(secs) => {
                    let now = ctx.now;
                    filters.push(Box::new(move |c| {
                        now.saturating_duration_since(c.created).as_secs() >= secs
                    }));
                }
                Err(_) => return Outcome::reply(Reply::error("ERR syntax error")),
            },
            b"skipme" => match value.to_ascii_lowercase().as_slice() {
                b"yes" => skip_me = true,
                b"no" => skip_me = false,
                _ => return Outcome::reply(Reply::error("ERR syntax error")),
            },
            _ => return Outcome::reply(Reply::error("ERR syntax error")),
        }
    }
    let matches = |c: &ClientInfo| filters.iter().all(|f| f(c));
    let mut killed = ctx.clients.kill(me.id, matches).len();
    let close = !skip_me && matches(me);
    if close {
        killed += 1;
    }
    Outcome {
        replies: vec![Reply::Int(i64::try_from(killed).unwrap_or(i64::MAX))],
        close,
    }
}

fn acl(rest: &[Vec<u8>]) -> Reply {
    let Some((sub, args)) = rest.split_first() else {
        return wrong_arity("acl");
    };
    match (sub.to_ascii_lowercase().as_slice(), args) {
        (b"whoami", []) => Reply::bulk(DEFAULT_USER),
        (b"whoami", _) => wrong_arity("acl|whoami"),
        (b"setuser" | b"deluser" | b"load" | b"save", _) => Reply::error(format!(
            "ERR ACL {} is not supported: the endpoint's only user is 'default', with the password set by --sentinel-password",
            String::from_utf8_lossy(sub).to_uppercase()
        )),
        _ => Reply::error(format!(
            "ERR unknown subcommand '{}'. Try ACL HELP.",
            echo(sub)
        )),
    }
}

/// One entry of the command table: what `COMMAND` and `COMMAND DOCS` describe.
struct Spec {
    name: &'static str,
    /// Redis's convention: N exactly, -N at least N (the name included).
    arity: i64,
    flags: &'static [&'static str],
    categories: &'static [&'static str],
    group: &'static str,
    since: &'static str,
    summary: &'static str,
}

const COMMANDS: &[Spec] = &[
    Spec {
        name: "acl",
        arity: -2,
        flags: &["sentinel"],
        categories: &["@slow"],
        group: "server",
        since: "6.0.0",
        summary: "Who the connection is authenticated as (ACL WHOAMI).",
    },
    Spec {
        name: "auth",
        arity: -2,
        flags: &[
            "noscript",
            "loading",
            "stale",
            "fast",
            "no_auth",
            "sentinel",
            "allow_busy",
        ],
        categories: &["@fast", "@connection"],
        group: "connection",
        since: "1.0.0",
        summary: "Authenticates the connection.",
    },
    Spec {
        name: "client",
        arity: -2,
        flags: &["sentinel"],
        categories: &["@slow", "@connection"],
        group: "connection",
        since: "2.4.0",
        summary: "Connection management: LIST, INFO, KILL, ID, SETNAME, GETNAME, SETINFO.",
    },
    Spec {
        name: "command",
        arity: -1,
        flags: &["loading", "stale", "sentinel"],
        categories: &["@slow", "@connection"],
        group: "server",
        since: "2.8.13",
        summary: "Describes the commands this endpoint serves.",
    },
    Spec {
        name: "hello",
        arity: -1,
        flags: &[
            "noscript",
            "loading",
            "stale",
            "fast",
            "no_auth",
            "sentinel",
            "allow_busy",
        ],
        categories: &["@fast", "@connection"],
        group: "connection",
        since: "6.0.0",
        summary: "Handshakes: protocol version, authentication, client name.",
    },
    Spec {
        name: "info",
        arity: -1,
        flags: &["loading", "stale", "sentinel"],
        categories: &["@slow", "@dangerous"],
        group: "server",
        since: "1.0.0",
        summary: "Server, clients, stats and Sentinel information.",
    },
    Spec {
        name: "ping",
        arity: -1,
        flags: &["fast", "sentinel"],
        categories: &["@fast", "@connection"],
        group: "connection",
        since: "1.0.0",
        summary: "Answers PONG, or echoes its argument.",
    },
    Spec {
        name: "psubscribe",
        arity: -2,
        flags: &["pubsub", "noscript", "loading", "stale", "sentinel"],
        categories: &["@pubsub", "@slow"],
        group: "pubsub",
        since: "2.0.0",
        summary: "Listens for events on channels matching patterns.",
    },
    Spec {
        name: "punsubscribe",
        arity: -1,
        flags: &["pubsub", "noscript", "loading", "stale", "sentinel"],
        categories: &["@pubsub", "@slow"],
        group: "pubsub",
        since: "2.0.0",
        summary: "Stops listening on patterns.",
    },
    Spec {
        name: "quit",
        arity: -1,
        flags: &[
            "allow_busy",
            "noscript",
            "loading",
            "stale",
            "fast",
            "no_auth",
        ],
        categories: &["@fast", "@connection"],
        group: "connection",
        since: "1.0.0",
        summary: "Closes the connection.",
    },
    Spec {
        name: "reset",
        arity: 1,
        flags: &[
            "noscript",
            "loading",
            "stale",
            "fast",
            "no_auth",
            "allow_busy",
        ],
        categories: &["@fast", "@connection"],
        group: "connection",
        since: "6.2.0",
        summary: "Resets the connection's state.",
    },
    Spec {
        name: "role",
        arity: 1,
        flags: &["noscript", "loading", "stale", "fast", "sentinel"],
        categories: &["@fast", "@admin", "@dangerous"],
        group: "server",
        since: "2.8.12",
        summary: "Answers sentinel and the master name.",
    },
    Spec {
        name: "sentinel",
        arity: -2,
        flags: &["admin", "sentinel", "only_sentinel"],
        categories: &["@admin", "@slow", "@dangerous"],
        group: "sentinel",
        since: "2.8.4",
        summary: "Sentinel queries: masters, replicas, sentinels, ckquorum, myid, info-cache.",
    },
    Spec {
        name: "subscribe",
        arity: -2,
        flags: &["pubsub", "noscript", "loading", "stale", "sentinel"],
        categories: &["@pubsub", "@slow"],
        group: "pubsub",
        since: "2.0.0",
        summary: "Listens for events on channels.",
    },
    Spec {
        name: "unsubscribe",
        arity: -1,
        flags: &["pubsub", "noscript", "loading", "stale", "sentinel"],
        categories: &["@pubsub", "@slow"],
        group: "pubsub",
        since: "2.0.0",
        summary: "Stops listening on channels.",
    },
];

fn spec(name: &[u8]) -> Option<&'static Spec> {
    COMMANDS
        .iter()
        .find(|s| s.name.as_bytes().eq_ignore_ascii_case(name))
}

/// `COMMAND` info entry, Redis 7's ten fields; no command here takes keys.
fn command_info(spec: &Spec) -> Reply {
    let simple =
        |words: &[&str]| Reply::Array(words.iter().map(|w| Reply::Simple(w.to_string())).collect());
    Reply::Array(vec![
        Reply::bulk(spec.name),
        Reply::Int(spec.arity),
        simple(spec.flags),
        Reply::Int(0),
        Reply::Int(0),
        Reply::Int(0),
        simple(spec.categories),
        Reply::Array(Vec::new()),
        Reply::Array(Vec::new()),
        Reply::Array(Vec::new()),
    ])
}

fn command_docs(spec: &Spec) -> Reply {
    Reply::Map(vec![
        (Reply::bulk("summary"), Reply::bulk(spec.summary)),
        (Reply::bulk("since"), Reply::bulk(spec.since)),
        (Reply::bulk("group"), Reply::bulk(spec.group)),
    ])
}

fn command_command(rest: &[Vec<u8>]) -> Reply {
    let Some((sub, args)) = rest.split_first() else {
        return Reply::Array(COMMANDS.iter().map(command_info).collect());
    };
    let selected = |args: &[Vec<u8>]| -> Vec<&'static Spec> {
        if args.is_empty() {
            COMMANDS.iter().collect()
        } else {
            args.iter().filter_map(|a| spec(a)).collect()
        }
    };
    match sub.to_ascii_lowercase().as_slice() {
        b"count" if args.is_empty() => {
            Reply::Int(i64::try_from(COMMANDS.len()).unwrap_or(i64::MAX))
        }
        b"count" => wrong_arity("command|count"),
        b"info" => Reply::Array(if args.is_empty() {
            COMMANDS.iter().map(command_info).collect()
        } else {
            args.iter()
                .map(|a| spec(a).map_or(Reply::NullArray, command_info))
                .collect()
        }),
        b"docs" => Reply::Map(
            selected(args)
                .into_iter()
                .map(|s| (Reply::bulk(s.name), command_docs(s)))
                .collect(),
        ),
        b"list" if args.is_empty() => {
            Reply::Array(COMMANDS.iter().map(|s| Reply::bulk(s.name)).collect())
        }
        b"list" => Reply::error("ERR syntax error"),
        _ => Reply::error(format!(
            "ERR unknown subcommand '{}'. Try COMMAND HELP.",
            echo(sub)
        )),
    }
}

fn subscribe(session: &mut Session, names: &[Vec<u8>], pattern: bool) -> Outcome {
    let kind = if pattern { "psubscribe" } else { "subscribe" };
    let mut replies = Vec::with_capacity(names.len());
    for name in names {
        if pattern {
            session.patterns.insert(name.clone());
        } else {
            session.channels.insert(name.clone());
        }
        replies.push(Reply::Push(vec![
            Reply::bulk(kind),
            Reply::Bulk(name.clone()),
            Reply::Int(session.subscriptions()),
        ]));
    }
    Outcome::replies(replies)
}

fn unsubscribe(session: &mut Session, names: &[Vec<u8>], pattern: bool) -> Outcome {
    let kind = if pattern {
        "punsubscribe"
    } else {
        "unsubscribe"
    };
    let set = if pattern {
        &mut session.patterns
    } else {
        &mut session.channels
    };
    let targets: Vec<Vec<u8>> = if names.is_empty() {
        set.iter().cloned().collect()
    } else {
        names.to_vec()
    };
    if targets.is_empty() {
        // Nothing to leave: one confirmation with a null name, so the client
        // still gets the reply it waits for.
        return Outcome::reply(Reply::Push(vec![
            Reply::bulk(kind),
            Reply::Null,
            Reply::Int(session.subscriptions()),
        ]));
    }
    let mut replies = Vec::with_capacity(targets.len());
    for name in targets {
        if pattern {
            session.patterns.remove(&name);
        } else {
            session.channels.remove(&name);
        }
        replies.push(Reply::Push(vec![
            Reply::bulk(kind),
            Reply::Bulk(name),
            Reply::Int(session.subscriptions()),
        ]));
    }
    Outcome::replies(replies)
}
pub(super) fn wrong_arity(command: &str) -> Reply {
    Reply::error(format!(
        "ERR wrong number of arguments for '{command}' command"
    ))
}

/// A client-supplied word for an error message, cut to a bounded length.
pub(super) fn echo(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    text.chars().take(ECHO_LIMIT).collect()
}

fn unknown_command(name: &[u8], args: &[Vec<u8>]) -> Reply {
    let mut listed = String::new();
    for arg in args {
        if listed.len() >= ECHO_LIMIT {
            break;
        }
        listed.push('\'');
        listed.push_str(&echo(arg));
        listed.push_str("' ");
    }
    Reply::error(format!(
        "ERR unknown command '{}', with args beginning with: {listed}",
        echo(name)
    ))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::resp::encode;
    use super::super::{Endpoint, Health, Instance, PeerSentinel};
    use super::*;
    use crate::model::RedisRole;

    fn config(password: Option<&str>) -> SentinelConfig {
        SentinelConfig {
            master_name: "mymaster".to_string(),
            password: password.map(str::to_string),
        }
    }

    fn instance(node: u64, host: &str, port: u16, health: Health) -> Instance {
        Instance {
            node,
            endpoint: Endpoint {
                name: format!("site-{node}"),
                host: host.to_string(),
                port,
            },
            health,
            priority: 100,
        }
    }

    /// One clock for a whole test, so ages are exact.
    fn t0() -> Instant {
        static T0: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *T0.get_or_init(|| Instant::now() + Duration::from_secs(100))
    }

    fn ago(ms: u64) -> Option<Instant> {
        Some(t0() - Duration::from_millis(ms))
    }

    fn view() -> SentinelView {
        SentinelView {
            myid: "a".repeat(40),
            epoch: 4,
            master: Some(instance(
                1,
                "10.0.0.1",
                6379,
                Health {
                    reported_at: ago(20),
                    last_ok: ago(20),
                    role: Some(RedisRole::Master),
                    role_since: ago(60_000),
                    run_id: "m".repeat(40),
                    offset: 1300,
                    ..Health::default()
                },
            )),
            replicas: vec![
                instance(
                    2,
                    "10.0.0.2",
                    6380,
                    Health {
                        reported_at: ago(30),
                        last_ok: ago(30),
                        role: Some(RedisRole::Replica),
                        role_since: ago(50_000),
                        run_id: "r".repeat(40),
                        offset: 1234,
                        link_up: true,
                        master_addr: Some(("10.0.0.1".into(), 6379)),
                        ..Health::default()
                    },
                ),
                Instance {
                    priority: 0,
                    ..instance(
                        3,
                        "10.0.0.3",
                        6381,
                        Health {
                            down_since: ago(8000),
                            reported_at: ago(40),
                            last_ok: ago(8300),
                            role: Some(RedisRole::Replica),
                            role_since: ago(50_000),
                            run_id: "s".repeat(40),
                            offset: 999,
                            link_up: false,
                            link_down_since: ago(8300),
                            master_addr: Some(("10.0.0.1".into(), 6379)),
                            disconnected: true,
                        },
                    )
                },
            ],
            sentinels: vec![
                PeerSentinel {
                    runid: "b".repeat(40),
                    host: "10.0.0.2".into(),
                    port: 26379,
                    down_since: None,
                    last_seen: ago(100),
                },
                PeerSentinel {
                    runid: "c".repeat(40),
                    host: "10.0.0.9".into(),
                    port: 26379,
                    down_since: ago(1000),
                    last_seen: ago(6000),
                },
            ],
            voters: 3,
            usable: 2,
            quorum: 2,
            coordinator: Some("b".repeat(40)),
            failover_to: None,
            down_after: Duration::from_millis(300),
            failover_timeout: Duration::from_secs(5),
            stale: false,
        }
    }

    fn ctx<'a>(c: &'a SentinelConfig, v: &'a SentinelView, clients: &'a Clients) -> Context<'a> {
        Context {
            config: c,
            view: v,
            clients,
            now: t0(),
        }
    }

    fn wire(session: &Session, outcome: &Outcome) -> String {
        let mut out = Vec::new();
        for reply in &outcome.replies {
            encode(reply, session.protocol, &mut out);
        }
        String::from_utf8(out).expect("utf8")
    }

    fn words(line: &str) -> Vec<Vec<u8>> {
        line.split(' ').map(|w| w.as_bytes().to_vec()).collect()
    }

    /// Runs `line` (space-separated words) and returns its replies on the wire.
    fn run(
        session: &mut Session,
        config: &SentinelConfig,
        view: &SentinelView,
        line: &str,
    ) -> String {
        let clients = Clients::new(26379, 16);
        let outcome = handle(session, &ctx(config, view, &clients), &words(line));
        wire(session, &outcome)
    }

    fn client_info(id: u64) -> ClientInfo {
        ClientInfo::new(
            id,
            format!("127.0.0.1:{}", 50000 + id),
            "127.0.0.1:26379".into(),
            9,
            t0() - Duration::from_secs(3),
        )
    }

    fn fresh(config: &SentinelConfig) -> Session {
        Session::new(client_info(7), config)
    }

    fn reply(c: &SentinelConfig, v: &SentinelView, line: &str) -> Reply {
        let mut s = fresh(c);
        let clients = Clients::new(26379, 16);
        let mut outcome = handle(&mut s, &ctx(c, v, &clients), &words(line));
        assert_eq!(outcome.replies.len(), 1);
        outcome.replies.remove(0)
    }

    fn table(reply: &Reply) -> Vec<(String, String)> {
        let Reply::Map(pairs) = reply else {
            panic!("not a map: {reply:?}");
        };
        pairs
            .iter()
            .map(|(k, v)| match (k, v) {
                (Reply::Bulk(k), Reply::Bulk(v)) => (
                    String::from_utf8_lossy(k).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                ),
                other => panic!("not bulk strings: {other:?}"),
            })
            .collect()
    }

    fn field<'a>(table: &'a [(String, String)], key: &str) -> &'a str {
        table
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no field {key}"))
    }

    fn keys(table: &[(String, String)]) -> Vec<&str> {
        table.iter().map(|(k, _)| k.as_str()).collect()
    }

    fn tables(reply: Reply) -> Vec<Vec<(String, String)>> {
        let Reply::Array(items) = reply else {
            panic!("not an array: {reply:?}");
        };
        items.iter().map(table).collect()
    }

    #[test]
    fn get_master_addr_by_name_answers_the_committed_master() {
        let c = config(None);
        let mut s = fresh(&c);
        let v = view();
        assert_eq!(
            run(&mut s, &c, &v, "SENTINEL get-master-addr-by-name mymaster"),
            "*2\r\n$8\r\n10.0.0.1\r\n$4\r\n6379\r\n"
        );
        assert_eq!(
            run(&mut s, &c, &v, "sentinel GET-MASTER-ADDR-BY-NAME other"),
            "*-1\r\n"
        );
        let none = SentinelView {
            master: None,
            ..view()
        };
        assert_eq!(
            run(
                &mut s,
                &c,
                &none,
                "SENTINEL get-master-addr-by-name mymaster"
            ),
            "*-1\r\n"
        );
        run(&mut s, &c, &v, "HELLO 3");
        assert_eq!(
            run(
                &mut s,
                &c,
                &none,
                "SENTINEL get-master-addr-by-name mymaster"
            ),
            "_\r\n"
        );
    }

    /// Sentinel 7's master table, field by field and in its order.
    #[test]
    fn masters_and_master_have_sentinels_fields() {
        let c = config(None);
        let masters = tables(reply(&c, &view(), "SENTINEL masters"));
        assert_eq!(masters.len(), 1);
        let master = &masters[0];
        assert_eq!(
            master,
            &table(&reply(&c, &view(), "SENTINEL master mymaster"))
        );
        assert_eq!(
            keys(master),
            [
                "name",
                "ip",
                "port",
                "runid",
                "flags",
                "link-pending-commands",
                "link-refcount",
                "last-ping-sent",
                "last-ok-ping-reply",
                "last-ping-reply",
                "down-after-milliseconds",
                "info-refresh",
                "role-reported",
                "role-reported-time",
                "config-epoch",
                "num-slaves",
                "num-other-sentinels",
                "quorum",
                "failover-timeout",
                "parallel-syncs",
            ]
        );
        for (key, want) in [
            ("name", "mymaster"),
            ("ip", "10.0.0.1"),
            ("port", "6379"),
            ("runid", "m".repeat(40).as_str()),
            ("flags", "master"),
            ("last-ping-sent", "0"),
            ("last-ok-ping-reply", "20"),
            ("info-refresh", "20"),
            ("role-reported", "master"),
            ("role-reported-time", "60000"),
            ("down-after-milliseconds", "300"),
            ("config-epoch", "4"),
            ("num-slaves", "2"),
            ("num-other-sentinels", "2"),
            ("quorum", "2"),
            ("failover-timeout", "5000"),
            ("parallel-syncs", "1"),
        ] {
            assert_eq!(field(master, key), want, "{key}");
        }
        assert_eq!(
            reply(&c, &view(), "SENTINEL master other"),
            Reply::error("ERR No such master with that name")
        );
        let none = SentinelView {
            master: None,
            ..view()
        };
        assert_eq!(reply(&c, &none, "SENTINEL masters"), Reply::Array(vec![]));
        assert_eq!(
            reply(&c, &none, "SENTINEL master mymaster"),
            Reply::error("ERR No such master with that name")
        );
    }

    #[test]
    fn a_down_or_stale_master_is_flagged_and_a_switchover_shows() {
        let c = config(None);
        let stale = SentinelView {
            stale: true,
            ..view()
        };
        assert_eq!(
            reply(&c, &stale, "SENTINEL get-master-addr-by-name mymaster"),
            Reply::NullArray
        );
        let master = table(&reply(&c, &stale, "SENTINEL master mymaster"));
        assert_eq!(field(&master, "flags"), "s_down,o_down,master");
        assert_eq!(field(&master, "ip"), "10.0.0.1");

        let mut down = view();
        if let Some(m) = down.master.as_mut() {
            m.health.down_since = ago(700);
        }
        let master = table(&reply(&c, &down, "SENTINEL master mymaster"));
        assert_eq!(field(&master, "flags"), "s_down,o_down,master");
        assert_eq!(field(&master, "s-down-time"), "700");
        assert_eq!(field(&master, "o-down-time"), "700");
        assert_eq!(field(&master, "last-ping-sent"), "700");

        let switching = SentinelView {
            failover_to: Some(2),
            ..view()
        };
        let master = table(&reply(&c, &switching, "SENTINEL master mymaster"));
        assert_eq!(field(&master, "flags"), "master,failover_in_progress");
        assert_eq!(field(&master, "failover-state"), "wait_promotion");
    }

    #[test]
    fn replicas_show_health_offsets_and_priority_like_sentinel() {
        let c = config(None);
        for sub in ["replicas", "slaves", "REPLICAS"] {
            let replicas = tables(reply(&c, &view(), &format!("SENTINEL {sub} mymaster")));
            let up = &replicas[0];
            assert_eq!(
                keys(up),
                [
                    "name",
                    "ip",
                    "port",
                    "runid",
                    "flags",
                    "link-pending-commands",
                    "link-refcount",
                    "last-ping-sent",
                    "last-ok-ping-reply",
                    "last-ping-reply",
                    "down-after-milliseconds",
                    "info-refresh",
                    "role-reported",
                    "role-reported-time",
                    "master-link-down-time",
                    "master-link-status",
                    "master-host",
                    "master-port",
                    "slave-priority",
                    "slave-repl-offset",
                    "replica-announced",
                ]
            );
            for (key, want) in [
                ("name", "10.0.0.2:6380"),
                ("ip", "10.0.0.2"),
                ("port", "6380"),
                ("runid", "r".repeat(40).as_str()),
                ("flags", "slave"),
                ("role-reported", "slave"),
                ("master-link-down-time", "0"),
                ("master-link-status", "ok"),
                ("master-host", "10.0.0.1"),
                ("master-port", "6379"),
                ("slave-priority", "100"),
                ("slave-repl-offset", "1234"),
            ] {
                assert_eq!(field(up, key), want, "{key}");
            }
            let down = &replicas[1];
            for (key, want) in [
                ("flags", "s_down,slave,disconnected"),
                ("s-down-time", "8000"),
                ("last-ok-ping-reply", "8300"),
                ("master-link-status", "err"),
                ("master-link-down-time", "8300"),
                ("slave-priority", "0"),
                ("slave-repl-offset", "999"),
                ("runid", "s".repeat(40).as_str()),
            ] {
                assert_eq!(field(down, key), want, "{key}");
            }
        }
        assert_eq!(
            reply(&c, &view(), "SENTINEL replicas other"),
            Reply::error("ERR No such master with that name")
        );
    }

    #[test]
    fn sentinels_lists_the_other_agents() {
        let c = config(None);
        let peers = tables(reply(&c, &view(), "SENTINEL sentinels mymaster"));
        assert_eq!(peers.len(), 2);
        assert_eq!(
            keys(&peers[0]),
            [
                "name",
                "ip",
                "port",
                "runid",
                "flags",
                "link-pending-commands",
                "link-refcount",
                "last-ping-sent",
                "last-ok-ping-reply",
                "last-ping-reply",
                "down-after-milliseconds",
                "last-hello-message",
                "voted-leader",
                "voted-leader-epoch",
            ]
        );
        assert_eq!(field(&peers[0], "name"), "b".repeat(40));
        assert_eq!(field(&peers[0], "flags"), "sentinel");
        assert_eq!(field(&peers[0], "last-hello-message"), "100");
        assert_eq!(field(&peers[0], "voted-leader"), "b".repeat(40));
        assert_eq!(field(&peers[1], "flags"), "s_down,sentinel");
        assert_eq!(field(&peers[1], "s-down-time"), "1000");
        assert_eq!(field(&peers[1], "ip"), "10.0.0.9");
    }

    #[test]
    fn ckquorum_myid_info_cache_and_config_get() {
        let c = config(None);
        assert_eq!(
            reply(&c, &view(), "SENTINEL ckquorum mymaster"),
            Reply::Simple(
                "OK 2 usable Sentinels. Quorum and failover authorization can be reached".into()
            )
        );
        let alone = SentinelView {
            usable: 1,
            ..view()
        };
        assert_eq!(
            reply(&c, &alone, "SENTINEL CKQUORUM mymaster"),
            Reply::error(
                "NOQUORUM 1 usable Sentinels. Not enough available Sentinels to reach the specified quorum for this master. Not enough available Sentinels to reach the majority and authorize a failover"
            )
        );
        assert_eq!(
            reply(&c, &view(), "SENTINEL ckquorum x"),
            Reply::error("ERR No such master with that name")
        );
        assert_eq!(
            reply(&c, &view(), "SENTINEL myid"),
            Reply::bulk("a".repeat(40))
        );
        let Reply::Array(cache) = reply(&c, &view(), "SENTINEL info-cache mymaster") else {
            panic!("info-cache is an array");
        };
        assert_eq!(cache[0], Reply::bulk("mymaster"));
        let Reply::Array(entries) = &cache[1] else {
            panic!("entries");
        };
        assert_eq!(entries.len(), 3);
        let Reply::Array(master) = &entries[0] else {
            panic!("entry");
        };
        assert_eq!(master[0], Reply::Int(20));
        let Reply::Bulk(text) = &master[1] else {
            panic!("text");
        };
        let text = String::from_utf8_lossy(text);
        assert!(
            text.contains("role:master\r\n") && text.contains("master_repl_offset:1300\r\n"),
            "{text}"
        );
        assert_eq!(
            reply(&c, &view(), "SENTINEL info-cache other"),
            Reply::Array(vec![])
        );
        assert_eq!(
            table(&reply(&c, &view(), "SENTINEL config get announce-*")),
            [
                ("announce-hostnames".to_string(), "no".to_string()),
                ("announce-ip".to_string(), String::new()),
                ("announce-port".to_string(), "0".to_string()),
            ]
        );
    }

    #[test]
    fn changes_to_the_configuration_are_refused() {
        let c = config(None);
        for line in [
            "SENTINEL failover mymaster",
            "SENTINEL set mymaster quorum 1",
            "SENTINEL monitor m 1.2.3.4 6379 2",
            "SENTINEL remove mymaster",
            "SENTINEL reset *",
            "SENTINEL config set resolve-hostnames yes",
            "SENTINEL flushconfig",
            "SENTINEL is-master-down-by-addr 1.2.3.4 6379 0 *",
        ] {
            let Reply::Error(e) = reply(&c, &view(), line) else {
                panic!("{line} is refused");
            };
            assert!(
                e.contains("not supported") && e.contains("consensus"),
                "{line}: {e}"
            );
        }
        let Reply::Error(e) = reply(&c, &view(), "ACL SETUSER bob on") else {
            panic!("ACL SETUSER is refused");
        };
        assert!(e.contains("not supported"), "{e}");
    }

    #[test]
    fn sentinel_errors_name_the_problem() {
        let c = config(None);
        let v = view();
        assert_eq!(
            reply(&c, &v, "SENTINEL"),
            Reply::error("ERR wrong number of arguments for 'sentinel' command")
        );
        assert_eq!(
            reply(&c, &v, "SENTINEL get-master-addr-by-name"),
            Reply::error(
                "ERR wrong number of arguments for 'sentinel|get-master-addr-by-name' command"
            )
        );
        assert_eq!(
            reply(&c, &v, "SENTINEL bogus"),
            Reply::error("ERR unknown subcommand 'bogus'. Try SENTINEL HELP.")
        );
    }

    fn info_text(c: &SentinelConfig, v: &SentinelView, line: &str) -> String {
        let Reply::Bulk(text) = reply(c, v, line) else {
            panic!("INFO answers a bulk string");
        };
        String::from_utf8(text).expect("utf8")
    }

    #[test]
    fn info_has_sentinel_mode_and_section() {
        let c = config(None);
        let all = info_text(&c, &view(), "INFO");
        let headers: Vec<&str> = all.lines().filter(|l| l.starts_with('#')).collect();
        assert_eq!(headers, ["# Server", "# Clients", "# Stats", "# Sentinel"]);
        assert!(all.contains("\r\nredis_mode:sentinel\r\n"), "{all}");
        assert!(
            all.contains(&format!("\r\nrun_id:{}\r\n", "a".repeat(40))),
            "{all}"
        );
        assert!(all.contains("\r\ntcp_port:26379\r\n"), "{all}");
        assert!(
            all.contains("\r\n\r\n# Clients\r\n"),
            "sections are separated by a blank line"
        );
        let sentinel = info_text(&c, &view(), "INFO Sentinel");
        assert_eq!(
            sentinel,
            "# Sentinel\r\nsentinel_masters:1\r\nsentinel_tilt:0\r\nsentinel_tilt_since_seconds:-1\r\nsentinel_running_scripts:0\r\nsentinel_scripts_queue_length:0\r\nsentinel_simulate_failure_flags:0\r\nmaster0:name=mymaster,status=ok,address=10.0.0.1:6379,slaves=2,sentinels=3\r\n"
        );
        let stale = SentinelView {
            stale: true,
            ..view()
        };
        assert!(info_text(&c, &stale, "INFO sentinel").contains("status=odown"));
        let two = info_text(&c, &view(), "INFO server clients");
        assert!(
            two.starts_with("# Server\r\n")
                && two.contains("# Clients")
                && !two.contains("# Sentinel")
        );
        assert_eq!(info_text(&c, &view(), "INFO keyspace"), "");
        let everything = info_text(&c, &view(), "INFO everything");
        let headers_everything: Vec<&str> =
            everything.lines().filter(|l| l.starts_with('#')).collect();
        assert_eq!(headers_everything, headers);
    }

    #[test]
    fn command_count_info_and_docs() {
        let c = config(None);
        let v = view();
        let Reply::Int(count) = reply(&c, &v, "COMMAND COUNT") else {
            panic!("COUNT is an integer");
        };
        let Reply::Array(all) = reply(&c, &v, "COMMAND") else {
            panic!("COMMAND is an array");
        };
        assert_eq!(usize::try_from(count).ok(), Some(all.len()));
        assert!(count >= 10);
        let Reply::Array(info) = reply(&c, &v, "COMMAND INFO sentinel nope") else {
            panic!("INFO is an array");
        };
        let Reply::Array(sentinel) = &info[0] else {
            panic!("an entry");
        };
        assert_eq!(sentinel.len(), 10);
        assert_eq!(sentinel[0], Reply::bulk("sentinel"));
        assert_eq!(sentinel[1], Reply::Int(-2));
        assert_eq!(info[1], Reply::NullArray);
        let Reply::Map(docs) = reply(&c, &v, "COMMAND DOCS ping") else {
            panic!("DOCS is a map");
        };
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].0, Reply::bulk("ping"));
        let mut s = fresh(&c);
        assert!(run(&mut s, &c, &v, "COMMAND DOCS").starts_with(&format!("*{}\r\n", count * 2)));
        assert!(run(&mut s, &c, &v, "COMMAND nope").contains("Try COMMAND HELP"));
    }

    #[test]
    fn role_ping_acl_and_unknown_commands() {
        let c = config(None);
        let mut s = fresh(&c);
        let v = view();
        assert_eq!(
            run(&mut s, &c, &v, "ROLE"),
            "*2\r\n$8\r\nsentinel\r\n*1\r\n$8\r\nmymaster\r\n"
        );
        assert_eq!(run(&mut s, &c, &v, "PING"), "+PONG\r\n");
        assert_eq!(run(&mut s, &c, &v, "ping hi"), "$2\r\nhi\r\n");
        assert_eq!(run(&mut s, &c, &v, "ACL WHOAMI"), "$7\r\ndefault\r\n");
        assert_eq!(
            run(&mut s, &c, &v, "SET k v"),
            "-ERR unknown command 'SET', with args beginning with: 'k' 'v' \r\n"
        );
        let long = "x".repeat(1000);
        let reply = run(&mut s, &c, &v, &format!("{long} {long} {long}"));
        assert!(reply.len() < 600, "{}", reply.len());
    }

    #[test]
    fn client_name_id_and_setinfo() {
        let c = config(None);
        let mut s = fresh(&c);
        let v = view();
        assert_eq!(run(&mut s, &c, &v, "CLIENT GETNAME"), "$-1\r\n");
        assert_eq!(run(&mut s, &c, &v, "CLIENT SETNAME app"), "+OK\r\n");
        assert_eq!(run(&mut s, &c, &v, "client getname"), "$3\r\napp\r\n");
        assert_eq!(
            run(&mut s, &c, &v, "CLIENT SETINFO LIB-NAME redis-py"),
            "+OK\r\n"
        );
        assert_eq!(
            run(&mut s, &c, &v, "CLIENT SETINFO lib-ver 5.0.1"),
            "+OK\r\n"
        );
        assert!(
            run(&mut s, &c, &v, "CLIENT SETINFO color red").starts_with("-ERR Unrecognized option")
        );
        assert_eq!(run(&mut s, &c, &v, "CLIENT ID"), ":7\r\n");
        assert!(run(&mut s, &c, &v, "CLIENT SETNAME").contains("wrong number"));
        let info = run(&mut s, &c, &v, "CLIENT INFO");
        assert!(
            info.contains("id=7 addr=127.0.0.1:50007 laddr=127.0.0.1:26379 fd=9 name=app age=3 idle=0 flags=N db=0 sub=0 psub=0"),
            "{info}"
        );
        assert!(
            info.contains(" cmd=client|info ") && info.contains(" lib-name=redis-py lib-ver=5.0.1"),
            "{info}"
        );
        assert_eq!(
            run(&mut s, &c, &v, "CLIENT MAINT_NOTIFICATIONS ON"),
            "-ERR unknown subcommand 'MAINT_NOTIFICATIONS'. Try CLIENT HELP.\r\n"
        );
    }

    #[test]
    fn client_list_and_kill_see_the_other_connections() {
        let c = config(None);
        let v = view();
        let clients = Clients::new(26379, 16);
        let mut me = fresh(&c);
        let other = client_info(8);
        let mut subscriber = client_info(9);
        subscriber.channels = 1;
        let other_kill = clients.register(other.clone());
        let _sub_kill = clients.register(subscriber);
        clients.register(me.info.clone());
        let call = |s: &mut Session, line: &str| {
            let outcome = handle(s, &ctx(&c, &v, &clients), &words(line));
            (wire(s, &outcome), outcome.close)
        };
        let (list, _) = call(&mut me, "CLIENT LIST");
        let at = |id: &str| list.find(&format!("id={id} ")).unwrap_or(usize::MAX);
        assert!(
            at("7") < at("8") && at("8") < at("9") && at("9") < usize::MAX,
            "{list}"
        );
        assert!(list.contains("id=9 ") && list.contains("flags=P"), "{list}");
        let (pubsub, _) = call(&mut me, "CLIENT LIST TYPE pubsub");
        assert!(
            pubsub.contains("id=9 ") && !pubsub.contains("id=8 "),
            "{pubsub}"
        );
        let (by_id, _) = call(&mut me, "CLIENT LIST ID 8");
        assert!(
            by_id.contains("id=8 ") && !by_id.contains("id=7 "),
            "{by_id}"
        );
        assert_eq!(
            call(&mut me, &format!("CLIENT KILL {}", other.addr)),
            ("+OK\r\n".into(), false)
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let notified = runtime.block_on(async {
            tokio::select! {
                biased;
                () = other_kill.notified() => true,
                () = std::future::ready(()) => false,
            }
        });
        assert!(notified, "the killed connection is told to close");
        assert_eq!(
            call(&mut me, "CLIENT KILL 1.2.3.4:5"),
            ("-ERR No such client\r\n".into(), false)
        );
        assert_eq!(
            call(&mut me, "CLIENT KILL TYPE pubsub"),
            (":1\r\n".into(), false)
        );
        assert_eq!(
            call(&mut me, "CLIENT KILL ID 7"),
            (":0\r\n".into(), false),
            "skipme by default"
        );
        assert_eq!(
            call(&mut me, "CLIENT KILL ID 7 SKIPME no"),
            (":1\r\n".into(), true)
        );
        assert!(
            call(&mut me, "CLIENT KILL TYPE bogus")
                .0
                .starts_with("-ERR Unknown client type")
        );
        assert_eq!(
            call(&mut me, "CLIENT KILL ID 7 TYPE").0,
            "-ERR syntax error\r\n"
        );
        assert_eq!(
            call(&mut me, "CLIENT KILL ID").0,
            "-ERR No such client\r\n",
            "the old form"
        );
    }

    #[test]
    fn hello_switches_protocol_and_answers_a_map() {
        let c = config(None);
        let mut s = fresh(&c);
        let v = view();
        let three = run(&mut s, &c, &v, "HELLO 3");
        assert!(
            three.starts_with("%6\r\n$6\r\nserver\r\n$5\r\nredis\r\n"),
            "{three}"
        );
        assert!(three.contains("$5\r\nproto\r\n:3\r\n"), "{three}");
        assert!(
            three.contains("$4\r\nmode\r\n$8\r\nsentinel\r\n"),
            "{three}"
        );
        assert_eq!(s.protocol, Protocol::Resp3);
        assert_eq!(
            run(&mut s, &c, &v, "SENTINEL get-master-addr-by-name x"),
            "_\r\n"
        );
        let two = run(&mut s, &c, &v, "HELLO 2");
        assert!(two.starts_with("*12\r\n"), "{two}");
        assert!(two.contains("$5\r\nproto\r\n:2\r\n"), "{two}");
        let current = run(&mut s, &c, &v, "HELLO");
        assert!(current.contains(":2\r\n"), "{current}");
        assert_eq!(
            run(&mut s, &c, &v, "HELLO 4"),
            "-NOPROTO unsupported protocol version\r\n"
        );
        assert_eq!(
            run(&mut s, &c, &v, "HELLO x"),
            "-ERR Protocol version is not an integer or out of range\r\n"
        );
        assert_eq!(
            run(&mut s, &c, &v, "HELLO 3 FOO"),
            "-ERR Syntax error in HELLO option 'FOO'\r\n"
        );
        assert_eq!(
            run(&mut s, &c, &v, "HELLO 3 AUTH x"),
            "-ERR Syntax error in HELLO option 'AUTH'\r\n"
        );
        assert_eq!(s.protocol, Protocol::Resp2, "failed HELLOs change nothing");
        run(&mut s, &c, &v, "HELLO 3 SETNAME worker-1");
        assert_eq!(run(&mut s, &c, &v, "CLIENT GETNAME"), "$8\r\nworker-1\r\n");
    }

    #[test]
    fn auth_without_a_configured_password_answers_like_redis() {
        let c = config(None);
        let mut s = fresh(&c);
        let v = view();
        assert!(run(&mut s, &c, &v, "AUTH pw").starts_with("-ERR AUTH <password> called without"));
        assert_eq!(run(&mut s, &c, &v, "AUTH default anything"), "+OK\r\n");
        assert!(run(&mut s, &c, &v, "AUTH bob pw").starts_with("-WRONGPASS"));
        assert_eq!(
            run(&mut s, &c, &v, "AUTH"),
            "-ERR wrong number of arguments for 'auth' command\r\n"
        );
        assert_eq!(run(&mut s, &c, &v, "AUTH a b c"), "-ERR syntax error\r\n");
        assert!(run(&mut s, &c, &v, "HELLO 3 AUTH default anything").starts_with('%'));
    }

    #[test]
    fn a_password_is_required_before_anything_else() {
        let c = config(Some("s3cret"));
        let v = view();
        let mut s = fresh(&c);
        for line in [
            "PING",
            "SENTINEL get-master-addr-by-name mymaster",
            "SUBSCRIBE +switch-master",
            "CLIENT SETNAME x",
            "ROLE",
        ] {
            assert_eq!(
                run(&mut s, &c, &v, line),
                "-NOAUTH Authentication required.\r\n",
                "{line}"
            );
        }
        assert!(run(&mut s, &c, &v, "HELLO 3").starts_with("-NOAUTH "));
        assert_eq!(s.protocol, Protocol::Resp2);
        assert!(run(&mut s, &c, &v, "AUTH wrong").starts_with("-WRONGPASS"));
        assert!(run(&mut s, &c, &v, "AUTH default wrong").starts_with("-WRONGPASS"));
        assert!(run(&mut s, &c, &v, "HELLO 3 AUTH default wrong").starts_with("-WRONGPASS"));
        assert!(run(&mut s, &c, &v, "AUTH s3cret").starts_with("+OK"));
        assert_eq!(run(&mut s, &c, &v, "PING"), "+PONG\r\n");

        let mut s = fresh(&c);
        assert!(run(&mut s, &c, &v, "HELLO 3 AUTH default s3cret").starts_with('%'));
        assert_eq!(s.protocol, Protocol::Resp3);
        assert!(run(&mut s, &c, &v, "AUTH other s3cret").starts_with("-WRONGPASS"));
        assert_eq!(run(&mut s, &c, &v, "RESET"), "+RESET\r\n");
        assert_eq!(
            run(&mut s, &c, &v, "PING"),
            "-NOAUTH Authentication required.\r\n"
        );
    }

    #[test]
    fn resp2_subscriptions_confirm_and_restrict_commands() {
        let c = config(None);
        let v = view();
        let mut s = fresh(&c);
        assert_eq!(
            run(&mut s, &c, &v, "UNSUBSCRIBE"),
            "*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n"
        );
        assert_eq!(
            run(&mut s, &c, &v, "SUBSCRIBE +switch-master a"),
            "*3\r\n$9\r\nsubscribe\r\n$14\r\n+switch-master\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:2\r\n"
        );
        assert_eq!(
            run(&mut s, &c, &v, "PING"),
            "*2\r\n$4\r\npong\r\n$0\r\n\r\n"
        );
        assert!(run(&mut s, &c, &v, "ROLE").starts_with("-ERR Can't execute 'role'"));
        assert_eq!(
            run(&mut s, &c, &v, "PSUBSCRIBE *"),
            "*3\r\n$10\r\npsubscribe\r\n$1\r\n*\r\n:3\r\n"
        );
        assert_eq!(
            run(&mut s, &c, &v, "UNSUBSCRIBE"),
            "*3\r\n$11\r\nunsubscribe\r\n$14\r\n+switch-master\r\n:2\r\n*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:1\r\n"
        );
        assert_eq!(
            run(&mut s, &c, &v, "PUNSUBSCRIBE"),
            "*3\r\n$12\r\npunsubscribe\r\n$1\r\n*\r\n:0\r\n"
        );
        assert_eq!(run(&mut s, &c, &v, "PING"), "+PONG\r\n");
        assert!(run(&mut s, &c, &v, "SUBSCRIBE").contains("wrong number"));
    }

    #[test]
    fn resp3_subscriptions_are_push_messages_and_allow_all_commands() {
        let c = config(None);
        let v = view();
        let mut s = fresh(&c);
        run(&mut s, &c, &v, "HELLO 3");
        assert_eq!(
            run(&mut s, &c, &v, "SUBSCRIBE +switch-master"),
            ">3\r\n$9\r\nsubscribe\r\n$14\r\n+switch-master\r\n:1\r\n"
        );
        assert_eq!(run(&mut s, &c, &v, "PING"), "+PONG\r\n");
        assert!(run(&mut s, &c, &v, "ROLE").starts_with("*2\r\n"));
        assert_eq!(
            run(&mut s, &c, &v, "UNSUBSCRIBE nope"),
            ">3\r\n$11\r\nunsubscribe\r\n$4\r\nnope\r\n:1\r\n"
        );
    }

    #[test]
    fn messages_go_to_channel_and_matching_pattern_subscribers() {
        let c = config(None);
        let v = view();
        let mut s = fresh(&c);
        assert!(s.deliver("+switch-master", "p").is_empty());
        run(&mut s, &c, &v, "SUBSCRIBE +switch-master");
        run(&mut s, &c, &v, "PSUBSCRIBE * +switch* -nope*");
        let payload = "mymaster 10.0.0.1 6379 10.0.0.2 6380";
        let messages = s.deliver("+switch-master", payload);
        assert_eq!(messages.len(), 3);
        let mut wire = Vec::new();
        for m in &messages {
            encode(m, Protocol::Resp3, &mut wire);
        }
        let wire = String::from_utf8(wire).expect("utf8");
        assert!(wire.starts_with(&format!(
            ">3\r\n$7\r\nmessage\r\n$14\r\n+switch-master\r\n${}\r\n{payload}\r\n",
            payload.len()
        )));
        assert!(wire.contains(">4\r\n$8\r\npmessage\r\n$1\r\n*\r\n$14\r\n+switch-master\r\n"));
        assert!(wire.contains(">4\r\n$8\r\npmessage\r\n$8\r\n+switch*\r\n"));
        assert!(!wire.contains("-nope"));
    }

    #[test]
    fn quit_closes_after_ok() {
        let c = config(Some("pw"));
        let mut s = fresh(&c);
        let v = view();
        let clients = Clients::new(26379, 16);
        let outcome = handle(&mut s, &ctx(&c, &v, &clients), &[b"QUIT".to_vec()]);
        assert_eq!(
            outcome,
            Outcome {
                replies: vec![Reply::ok()],
                close: true
            }
        );
    }
}
