//! The Sentinel command subset, as a pure function of the connection's session,
//! the configuration and the current [`SentinelView`].
//!
//! Replies follow what Redis Sentinel 7 answers, because stock clients parse them:
//! field names and flags of the instance tables, error codes (`NOAUTH`, `WRONGPASS`,
//! `NOPROTO`) and the RESP2 subscribed-mode rules.

use std::collections::BTreeSet;

use subtle::ConstantTimeEq;

use super::glob;
use super::resp::{Protocol, Reply};
use super::{Endpoint, ReplicaView, SentinelConfig, SentinelView};

/// The pub/sub channel clients watch for master changes.
pub const SWITCH_MASTER_CHANNEL: &str = "+switch-master";

/// Redis version announced by `HELLO`: the Sentinel behaviour this endpoint follows.
/// Clients gate features (RESP3) on it.
const COMPAT_VERSION: &str = "7.0.0";

/// The only ACL user: Redis's `requirepass` sets the password of `default`.
const DEFAULT_USER: &[u8] = b"default";

/// Characters of an unknown command's arguments echoed in its error, as Redis caps them.
const ECHO_LIMIT: usize = 128;

/// Per-connection state.
#[derive(Debug)]
pub struct Session {
    pub id: u64,
    pub protocol: Protocol,
    authenticated: bool,
    name: Option<Vec<u8>>,
    channels: BTreeSet<Vec<u8>>,
    patterns: BTreeSet<Vec<u8>>,
}

impl Session {
    pub fn new(id: u64, config: &SentinelConfig) -> Self {
        Session {
            id,
            protocol: Protocol::Resp2,
            authenticated: config.password.is_none(),
            name: None,
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

/// The `+switch-master` payload for a change from `old` to `new`, if the master moved
/// or was chosen again under a new epoch (clients must then reconnect too: a restarted
/// master may have lost data). No message without an old master: there is nothing to
/// switch from, and a client that finds none keeps asking.
pub fn switch_master_payload(
    master_name: &str,
    old: &SentinelView,
    new: &SentinelView,
) -> Option<String> {
    let (Some(from), Some(to)) = (&old.master, &new.master) else {
        return None;
    };
    let moved = (&from.host, from.port) != (&to.host, to.port);
    if !moved && old.epoch == new.epoch {
        return None;
    }
    Some(format!(
        "{master_name} {} {} {} {}",
        from.host, from.port, to.host, to.port
    ))
}

/// Runs one command. `args` is never empty.
pub fn handle(
    session: &mut Session,
    config: &SentinelConfig,
    view: &SentinelView,
    args: &[Vec<u8>],
) -> Outcome {
    let Some((name, rest)) = args.split_first() else {
        return Outcome::replies(Vec::new());
    };
    let command = name.to_ascii_lowercase();
    let command = command.as_slice();

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
            *session = Session::new(session.id, config);
            Outcome::reply(Reply::Simple("RESET".to_string()))
        }
        b"role" => Outcome::reply(Reply::Array(vec![
            Reply::bulk("sentinel"),
            Reply::Array(vec![Reply::bulk(&config.master_name)]),
        ])),
        b"sentinel" => Outcome::reply(sentinel(config, view, rest)),
        b"client" => Outcome::reply(client(session, rest)),
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
        session.name = Some(name.clone());
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
            Reply::Int(i64::try_from(session.id).unwrap_or(i64::MAX)),
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

fn client(session: &mut Session, rest: &[Vec<u8>]) -> Reply {
    let Some((sub, args)) = rest.split_first() else {
        return wrong_arity("client");
    };
    match (sub.to_ascii_lowercase().as_slice(), args) {
        (b"setname", [name]) => match valid_client_name(name) {
            Ok(()) => {
                session.name = (!name.is_empty()).then(|| name.clone());
                Reply::ok()
            }
            Err(e) => e,
        },
        (b"getname", []) => session.name.clone().map_or(Reply::Null, Reply::Bulk),
        (b"id", []) => Reply::Int(i64::try_from(session.id).unwrap_or(i64::MAX)),
        // Library name/version and eviction/touch hints change nothing here.
        (b"setinfo", [_, _]) | (b"no-evict", [_]) | (b"no-touch", [_]) => Reply::ok(),
        (b"setname" | b"getname" | b"id" | b"setinfo" | b"no-evict" | b"no-touch", _) => {
            wrong_arity(&format!(
                "client|{}",
                String::from_utf8_lossy(sub).to_lowercase()
            ))
        }
        _ => Reply::error(format!(
            "ERR unknown subcommand '{}'. Try CLIENT HELP.",
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

fn sentinel(config: &SentinelConfig, view: &SentinelView, rest: &[Vec<u8>]) -> Reply {
    let Some((sub, args)) = rest.split_first() else {
        return wrong_arity("sentinel");
    };
    let sub = sub.to_ascii_lowercase();
    let sub_text = String::from_utf8_lossy(&sub).into_owned();
    let named = |args: &[Vec<u8>]| match args {
        [name] => Ok(name.as_slice() == config.master_name.as_bytes()),
        _ => Err(wrong_arity(&format!("sentinel|{sub_text}"))),
    };
    let no_such_master = || Reply::error("ERR No such master with that name");
    match sub.as_slice() {
        b"get-master-addr-by-name" => match (named(args), &view.master) {
            (Err(e), _) => e,
            (Ok(true), Some(m)) if !view.stale => Reply::Array(address(m)),
            (Ok(_), _) => Reply::NullArray,
        },
        b"masters" if args.is_empty() => Reply::Array(
            view.master
                .as_ref()
                .map(|m| master_table(config, view, m))
                .into_iter()
                .collect(),
        ),
        b"masters" => wrong_arity("sentinel|masters"),
        b"master" => match (named(args), &view.master) {
            (Err(e), _) => e,
            (Ok(true), Some(m)) => master_table(config, view, m),
            (Ok(_), _) => no_such_master(),
        },
        b"replicas" | b"slaves" => match named(args) {
            Err(e) => e,
            Ok(true) => Reply::Array(
                view.replicas
                    .iter()
                    .map(|r| replica_table(view, r))
                    .collect(),
            ),
            Ok(false) => no_such_master(),
        },
        b"sentinels" => match named(args) {
            Err(e) => e,
            // Other agents serve their own endpoint; this one does not gossip
            // their addresses, so clients use the list they were configured with.
            Ok(true) => Reply::Array(Vec::new()),
            Ok(false) => no_such_master(),
        },
        b"failover"
        | b"monitor"
        | b"remove"
        | b"set"
        | b"reset"
        | b"config"
        | b"flushconfig"
        | b"simulate-failure"
        | b"is-master-down-by-addr" => Reply::error(format!(
            "ERR SENTINEL {sub_text} is not supported: redis-orchestrator decides the master by consensus (use its API)"
        )),
        _ => Reply::error(format!(
            "ERR unknown subcommand '{}'. Try SENTINEL HELP.",
            echo(&sub)
        )),
    }
}

fn address(endpoint: &Endpoint) -> Vec<Reply> {
    vec![
        Reply::bulk(&endpoint.host),
        Reply::bulk(endpoint.port.to_string()),
    ]
}

/// `SENTINEL master(s)`: only fields this endpoint knows to be true. Clients read
/// `name`, `ip`, `port`, `flags` and `num-other-sentinels`; the rest is for operators.
fn master_table(config: &SentinelConfig, view: &SentinelView, master: &Endpoint) -> Reply {
    Reply::string_map(&[
        ("name", config.master_name.clone()),
        ("ip", master.host.clone()),
        ("port", master.port.to_string()),
        (
            "flags",
            if view.stale {
                "master,s_down,o_down"
            } else {
                "master"
            }
            .to_string(),
        ),
        ("role-reported", "master".to_string()),
        ("config-epoch", view.epoch.to_string()),
        ("num-slaves", view.replicas.len().to_string()),
        ("num-other-sentinels", "0".to_string()),
        ("quorum", view.quorum.to_string()),
    ])
}

/// `SENTINEL replicas`: Sentinel names a replica by its address.
fn replica_table(view: &SentinelView, replica: &ReplicaView) -> Reply {
    let endpoint = &replica.endpoint;
    let flags = if replica.healthy {
        "slave"
    } else {
        "slave,s_down"
    };
    let (master_host, master_port) = view
        .master
        .as_ref()
        .map_or(("?".to_string(), 0), |m| (m.host.clone(), m.port));
    Reply::string_map(&[
        (
            "name",
            crate::addr::join_host_port(&endpoint.host, endpoint.port),
        ),
        ("ip", endpoint.host.clone()),
        ("port", endpoint.port.to_string()),
        ("flags", flags.to_string()),
        ("role-reported", "slave".to_string()),
        (
            "master-link-status",
            if replica.link_up { "ok" } else { "err" }.to_string(),
        ),
        ("master-host", master_host),
        ("master-port", master_port.to_string()),
        ("slave-repl-offset", replica.offset.unwrap_or(0).to_string()),
        ("replica-announced", "1".to_string()),
    ])
}

fn wrong_arity(command: &str) -> Reply {
    Reply::error(format!(
        "ERR wrong number of arguments for '{command}' command"
    ))
}

/// A client-supplied word for an error message, cut to a bounded length.
fn echo(bytes: &[u8]) -> String {
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
    use super::super::resp::encode;
    use super::*;

    fn config(password: Option<&str>) -> SentinelConfig {
        SentinelConfig {
            master_name: "mymaster".to_string(),
            password: password.map(str::to_string),
        }
    }

    fn endpoint(name: &str, host: &str, port: u16) -> Endpoint {
        Endpoint {
            name: name.to_string(),
            host: host.to_string(),
            port,
        }
    }

    fn view() -> SentinelView {
        SentinelView {
            epoch: 4,
            master: Some(endpoint("site-a", "10.0.0.1", 6379)),
            replicas: vec![
                ReplicaView {
                    endpoint: endpoint("site-b", "10.0.0.2", 6380),
                    link_up: true,
                    healthy: true,
                    offset: Some(1234),
                },
                ReplicaView {
                    endpoint: endpoint("site-c", "10.0.0.3", 6381),
                    link_up: false,
                    healthy: false,
                    offset: None,
                },
            ],
            quorum: 2,
            stale: false,
        }
    }

    /// Runs `line` (space-separated words) and returns its replies on the wire.
    fn run(
        session: &mut Session,
        config: &SentinelConfig,
        view: &SentinelView,
        line: &str,
    ) -> String {
        let args: Vec<Vec<u8>> = line.split(' ').map(|w| w.as_bytes().to_vec()).collect();
        let outcome = handle(session, config, view, &args);
        let mut out = Vec::new();
        for reply in &outcome.replies {
            encode(reply, session.protocol, &mut out);
        }
        String::from_utf8(out).expect("utf8")
    }

    fn fresh(config: &SentinelConfig) -> Session {
        Session::new(7, config)
    }

    #[test]
    fn get_master_addr_by_name_answers_the_committed_master() {
        let c = config(None);
        let mut s = fresh(&c);
        assert_eq!(
            run(
                &mut s,
                &c,
                &view(),
                "SENTINEL get-master-addr-by-name mymaster"
            ),
            "*2\r\n$8\r\n10.0.0.1\r\n$4\r\n6379\r\n"
        );
        assert_eq!(
            run(
                &mut s,
                &c,
                &view(),
                "sentinel GET-MASTER-ADDR-BY-NAME other"
            ),
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
        run(&mut s, &c, &view(), "HELLO 3");
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

    fn sentinel_reply(c: &SentinelConfig, v: &SentinelView, line: &str) -> Reply {
        let mut s = fresh(c);
        let args: Vec<Vec<u8>> = line.split(' ').map(|w| w.as_bytes().to_vec()).collect();
        let mut outcome = handle(&mut s, c, v, &args);
        assert_eq!(outcome.replies.len(), 1);
        outcome.replies.remove(0)
    }

    #[test]
    fn masters_and_master_use_sentinel_field_names() {
        let c = config(None);
        let Reply::Array(masters) = sentinel_reply(&c, &view(), "SENTINEL masters") else {
            panic!("masters is an array");
        };
        assert_eq!(masters.len(), 1);
        let master = table(&masters[0]);
        assert_eq!(
            master,
            table(&sentinel_reply(&c, &view(), "SENTINEL master mymaster"))
        );
        for (key, want) in [
            ("name", "mymaster"),
            ("ip", "10.0.0.1"),
            ("port", "6379"),
            ("flags", "master"),
            ("config-epoch", "4"),
            ("num-slaves", "2"),
            ("num-other-sentinels", "0"),
            ("quorum", "2"),
        ] {
            assert_eq!(field(&master, key), want, "{key}");
        }
        assert_eq!(
            sentinel_reply(&c, &view(), "SENTINEL master other"),
            Reply::error("ERR No such master with that name")
        );
        let none = SentinelView {
            master: None,
            ..view()
        };
        assert_eq!(
            sentinel_reply(&c, &none, "SENTINEL masters"),
            Reply::Array(vec![])
        );
        assert_eq!(
            sentinel_reply(&c, &none, "SENTINEL master mymaster"),
            Reply::error("ERR No such master with that name")
        );
    }

    #[test]
    fn a_stale_view_sends_clients_to_another_endpoint() {
        let c = config(None);
        let stale = SentinelView {
            stale: true,
            ..view()
        };
        assert_eq!(
            sentinel_reply(&c, &stale, "SENTINEL get-master-addr-by-name mymaster"),
            Reply::NullArray
        );
        let master = table(&sentinel_reply(&c, &stale, "SENTINEL master mymaster"));
        assert_eq!(field(&master, "flags"), "master,s_down,o_down");
        assert_eq!(field(&master, "ip"), "10.0.0.1");
    }

    #[test]
    fn replicas_show_link_and_health_like_sentinel() {
        let c = config(None);
        for sub in ["replicas", "slaves", "REPLICAS"] {
            let Reply::Array(replicas) =
                sentinel_reply(&c, &view(), &format!("SENTINEL {sub} mymaster"))
            else {
                panic!("replicas is an array");
            };
            let up = table(&replicas[0]);
            assert_eq!(field(&up, "name"), "10.0.0.2:6380");
            assert_eq!(field(&up, "ip"), "10.0.0.2");
            assert_eq!(field(&up, "port"), "6380");
            assert_eq!(field(&up, "flags"), "slave");
            assert_eq!(field(&up, "master-link-status"), "ok");
            assert_eq!(field(&up, "master-host"), "10.0.0.1");
            assert_eq!(field(&up, "master-port"), "6379");
            assert_eq!(field(&up, "slave-repl-offset"), "1234");
            let down = table(&replicas[1]);
            assert_eq!(field(&down, "flags"), "slave,s_down");
            assert_eq!(field(&down, "master-link-status"), "err");
            assert_eq!(field(&down, "slave-repl-offset"), "0");
        }
        assert_eq!(
            sentinel_reply(&c, &view(), "SENTINEL replicas other"),
            Reply::error("ERR No such master with that name")
        );
        assert_eq!(
            sentinel_reply(&c, &view(), "SENTINEL sentinels mymaster"),
            Reply::Array(vec![])
        );
    }

    #[test]
    fn sentinel_errors_name_the_problem() {
        let c = config(None);
        let v = view();
        assert_eq!(
            sentinel_reply(&c, &v, "SENTINEL"),
            Reply::error("ERR wrong number of arguments for 'sentinel' command")
        );
        assert_eq!(
            sentinel_reply(&c, &v, "SENTINEL get-master-addr-by-name"),
            Reply::error(
                "ERR wrong number of arguments for 'sentinel|get-master-addr-by-name' command"
            )
        );
        assert_eq!(
            sentinel_reply(&c, &v, "SENTINEL bogus"),
            Reply::error("ERR unknown subcommand 'bogus'. Try SENTINEL HELP.")
        );
        let Reply::Error(failover) = sentinel_reply(&c, &v, "SENTINEL failover mymaster") else {
            panic!("failover is refused");
        };
        assert!(failover.contains("consensus"), "{failover}");
    }

    #[test]
    fn role_ping_and_unknown_commands() {
        let c = config(None);
        let mut s = fresh(&c);
        let v = view();
        assert_eq!(
            run(&mut s, &c, &v, "ROLE"),
            "*2\r\n$8\r\nsentinel\r\n*1\r\n$8\r\nmymaster\r\n"
        );
        assert_eq!(run(&mut s, &c, &v, "PING"), "+PONG\r\n");
        assert_eq!(run(&mut s, &c, &v, "ping hi"), "$2\r\nhi\r\n");
        assert_eq!(
            run(&mut s, &c, &v, "COMMAND"),
            "-ERR unknown command 'COMMAND', with args beginning with: \r\n"
        );
        assert_eq!(
            run(&mut s, &c, &v, "SET k v"),
            "-ERR unknown command 'SET', with args beginning with: 'k' 'v' \r\n"
        );
        let long = "x".repeat(1000);
        let reply = run(&mut s, &c, &v, &format!("{long} {long} {long}"));
        assert!(reply.len() < 600, "{}", reply.len());
    }

    #[test]
    fn client_commands_are_harmless() {
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
        assert_eq!(run(&mut s, &c, &v, "CLIENT ID"), ":7\r\n");
        assert!(run(&mut s, &c, &v, "CLIENT SETNAME").contains("wrong number"));
        assert_eq!(
            run(&mut s, &c, &v, "CLIENT MAINT_NOTIFICATIONS ON"),
            "-ERR unknown subcommand 'MAINT_NOTIFICATIONS'. Try CLIENT HELP.\r\n"
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
        assert!(s.deliver(SWITCH_MASTER_CHANNEL, "p").is_empty());
        run(&mut s, &c, &v, "SUBSCRIBE +switch-master");
        run(&mut s, &c, &v, "PSUBSCRIBE * +switch* -nope*");
        let payload = "mymaster 10.0.0.1 6379 10.0.0.2 6380";
        let messages = s.deliver(SWITCH_MASTER_CHANNEL, payload);
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
        let outcome = handle(&mut s, &c, &view(), &[b"QUIT".to_vec()]);
        assert_eq!(
            outcome,
            Outcome {
                replies: vec![Reply::ok()],
                close: true
            }
        );
    }

    #[test]
    fn switch_master_is_published_when_the_master_moves_or_the_epoch_changes() {
        let a = view();
        let moved = SentinelView {
            epoch: 5,
            master: Some(endpoint("site-b", "10.0.0.2", 6380)),
            ..view()
        };
        assert_eq!(
            switch_master_payload("mymaster", &a, &moved).as_deref(),
            Some("mymaster 10.0.0.1 6379 10.0.0.2 6380")
        );
        let same_new_epoch = SentinelView { epoch: 5, ..view() };
        assert_eq!(
            switch_master_payload("mymaster", &a, &same_new_epoch).as_deref(),
            Some("mymaster 10.0.0.1 6379 10.0.0.1 6379")
        );
        let replicas_only = SentinelView {
            replicas: Vec::new(),
            ..view()
        };
        assert_eq!(switch_master_payload("mymaster", &a, &replicas_only), None);
        let none = SentinelView {
            master: None,
            ..view()
        };
        assert_eq!(switch_master_payload("mymaster", &none, &a), None);
        assert_eq!(switch_master_payload("mymaster", &a, &none), None);
    }
}
