//! The Sentinel-compatible endpoint against stock clients: redis-rs's own Sentinel
//! client and pub/sub, raw RESP2/RESP3 connections, and the Python `redis` package.
//!
//! Most tests run the endpoint in-process on 127.0.0.1, fed by a `watch` channel the
//! test controls; the Redis servers it names are real `redis-server` processes. The
//! last one runs three real agents and watches their endpoints through a failover.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use redis::sentinel::{SentinelClientBuilder, SentinelServerType};
use redis::{ConnectionAddr, ProtocolVersion, PushKind, Value};
use redis_orchestrator::model::RedisRole;
use redis_orchestrator::sentinel::{
    Endpoint, Health, Instance, SentinelConfig, SentinelView, serve,
};
use tokio::sync::watch;

use common::{RedisServer, ServerOptions, command, free_port};

const MASTER_NAME: &str = "mymaster";
const PASSWORD: &str = "sentinel-test-password";
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The endpoint on its own runtime thread, so test bodies can use blocking clients.
/// It stops when this is dropped (the view sender goes away).
struct Sentinel {
    addr: SocketAddr,
    views: watch::Sender<SentinelView>,
}

impl Sentinel {
    fn start(password: Option<&str>, view: SentinelView) -> Sentinel {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind endpoint");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local addr");
        let (views, rx) = watch::channel(view);
        let config = SentinelConfig {
            master_name: MASTER_NAME.to_string(),
            password: password.map(str::to_string),
        };
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                serve(listener, config, rx).await;
            });
        });
        Sentinel { addr, views }
    }

    fn set(&self, view: SentinelView) {
        self.views.send_replace(view);
    }

    fn raw(&self) -> Raw {
        Raw::connect(self.addr)
    }

    fn sentinel_addr(&self) -> ConnectionAddr {
        ConnectionAddr::Tcp(self.addr.ip().to_string(), self.addr.port())
    }
}

fn instance(name: &str, port: u16, role: RedisRole, healthy: bool) -> Instance {
    Instance {
        // The port identifies the node, as the address does for Sentinel.
        node: u64::from(port),
        endpoint: Endpoint {
            name: name.to_string(),
            host: "127.0.0.1".to_string(),
            port,
        },
        health: Health {
            down_since: (!healthy).then(Instant::now),
            role: Some(role),
            link_up: healthy && role == RedisRole::Replica,
            ..Health::default()
        },
        priority: 100,
    }
}

fn replica(name: &str, port: u16, healthy: bool) -> Instance {
    instance(name, port, RedisRole::Replica, healthy)
}

fn view(epoch: u64, master: u16, replicas: Vec<Instance>) -> SentinelView {
    SentinelView {
        epoch,
        master: Some(instance("master", master, RedisRole::Master, true)),
        replicas,
        voters: 3,
        usable: 3,
        quorum: 2,
        ..SentinelView::default()
    }
}

/// A hand-driven connection: writes commands, reads one RESP value at a time with
/// the redis crate's parser.
struct Raw {
    stream: TcpStream,
    parser: redis::Parser,
}

impl Raw {
    fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).expect("connect to endpoint");
        stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .expect("timeout");
        Raw {
            stream,
            parser: redis::Parser::new(),
        }
    }

    fn send(&mut self, args: &[&str]) {
        let mut wire = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            wire.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
        }
        self.stream.write_all(&wire).expect("send");
    }

    fn read(&mut self) -> Value {
        self.parser
            .parse_value(&mut self.stream)
            .expect("read a reply")
    }

    /// The next message published on `channel`, skipping messages of other channels.
    fn read_on(&mut self, channel: &str) -> Value {
        loop {
            let value = self.read();
            if let Some(name) = message_channel(&value)
                && name == channel
            {
                return value;
            }
        }
    }

    /// Sends an inline command, as typed in telnet.
    fn inline(&mut self, line: &str) -> Value {
        self.stream
            .write_all(format!("{line}\r\n").as_bytes())
            .expect("send");
        self.read()
    }

    fn call(&mut self, args: &[&str]) -> Value {
        self.send(args);
        self.read()
    }

    /// Whether the server closes the connection (after any final reply) within
    /// the read timeout.
    fn closed(&mut self) -> bool {
        let mut buf = [0u8; 4096];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) => {
                    return matches!(
                        e.kind(),
                        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                    );
                }
            }
        }
    }
}

/// The channel of a published message (`message` or `pmessage`, RESP2 or RESP3).
fn message_channel(value: &Value) -> Option<String> {
    let items: Vec<&Value> = match value {
        Value::Array(items) => match items.first() {
            Some(Value::BulkString(kind)) if kind == b"message" => items.iter().skip(1).collect(),
            Some(Value::BulkString(kind)) if kind == b"pmessage" => items.iter().skip(2).collect(),
            _ => return None,
        },
        Value::Push {
            kind: PushKind::Message,
            data,
        } => data.iter().collect(),
        Value::Push {
            kind: PushKind::PMessage,
            data,
        } => data.iter().skip(1).collect(),
        _ => return None,
    };
    match items.first() {
        Some(Value::BulkString(name)) => Some(String::from_utf8_lossy(name).into_owned()),
        _ => None,
    }
}

fn bulk(text: &str) -> Value {
    Value::BulkString(text.as_bytes().to_vec())
}

/// A primary and its replica, both real redis-servers with a password.
fn primary_and_replica() -> (RedisServer, RedisServer) {
    let options = ServerOptions {
        requirepass: Some(PASSWORD.to_string()),
        masterauth: Some(PASSWORD.to_string()),
        ..Default::default()
    };
    let primary = RedisServer::start_with(options.clone());
    let replica = RedisServer::start_with(options);
    replica
        .query::<()>(&["REPLICAOF", "127.0.0.1", &primary.port().to_string()])
        .expect("replicaof");
    (primary, replica)
}

#[test]
fn redis_rs_sentinel_client_finds_master_and_healthy_replicas_in_both_protocols() {
    let (primary, replica_server) = primary_and_replica();
    let dead_port = free_port();
    let sentinel = Sentinel::start(
        None,
        view(
            3,
            primary.port(),
            vec![
                replica("b", replica_server.port(), true),
                replica("c", dead_port, false),
            ],
        ),
    );
    for protocol in [ProtocolVersion::RESP2, ProtocolVersion::RESP3] {
        let build = |server_type| {
            SentinelClientBuilder::new([sentinel.sentinel_addr()], MASTER_NAME, server_type)
                .expect("builder")
                .set_client_to_sentinel_protocol(protocol)
                .set_client_to_redis_password(PASSWORD)
                .build()
                .expect("sentinel client")
        };
        let mut master = build(SentinelServerType::Master);
        let mut conn = master.get_connection().expect("connect to the master");
        command(&["SET", "via-sentinel", "1"])
            .query::<()>(&mut conn)
            .expect("write through the master");
        assert_eq!(
            primary
                .query::<String>(&["GET", "via-sentinel"])
                .expect("get"),
            "1",
            "{protocol:?}: the write reached the committed master"
        );

        // The s_down replica (nothing listens on its port) must never be picked.
        let mut replicas = build(SentinelServerType::Replica);
        for _ in 0..10 {
            let mut conn = replicas.get_connection().expect("connect to a replica");
            let port: Vec<String> = command(&["CONFIG", "GET", "port"])
                .query(&mut conn)
                .expect("config get port");
            assert_eq!(port[1], replica_server.port().to_string(), "{protocol:?}");
        }

        let mut direct = redis::Client::open(sentinel_url(sentinel.addr, protocol))
            .expect("client")
            .get_connection()
            .expect("connect to the endpoint");
        let listed: Vec<HashMap<String, String>> = command(&["SENTINEL", "replicas", MASTER_NAME])
            .query(&mut direct)
            .expect("SENTINEL replicas");
        assert_eq!(listed.len(), 2, "{protocol:?}");
        assert_eq!(listed[0]["ip"], "127.0.0.1");
        assert_eq!(listed[0]["port"], replica_server.port().to_string());
        assert_eq!(listed[0]["flags"], "slave");
        assert_eq!(listed[1]["flags"], "s_down,slave");
        assert_eq!(listed[1]["master-link-status"], "err");
        let addr: (String, u16) = command(&["SENTINEL", "get-master-addr-by-name", MASTER_NAME])
            .query(&mut direct)
            .expect("get-master-addr-by-name");
        assert_eq!(addr, ("127.0.0.1".to_string(), primary.port()));
        let count: i64 = command(&["COMMAND", "COUNT"])
            .query(&mut direct)
            .expect("COMMAND COUNT");
        assert!(count > 10, "{protocol:?}: {count}");
        let info: String = command(&["INFO", "sentinel"])
            .query(&mut direct)
            .expect("INFO sentinel");
        assert!(
            info.contains(&format!(
                "master0:name=mymaster,status=ok,address=127.0.0.1:{},slaves=2,sentinels=1",
                primary.port()
            )),
            "{protocol:?}: {info}"
        );
    }
}

fn sentinel_url(addr: SocketAddr, protocol: ProtocolVersion) -> redis::ConnectionInfo {
    let proto = match protocol {
        ProtocolVersion::RESP3 => "?protocol=resp3",
        _ => "",
    };
    redis::IntoConnectionInfo::into_connection_info(format!("redis://{addr}/{proto}")).expect("url")
}

#[test]
fn hello_3_gets_maps_and_hello_2_gets_flat_arrays() {
    let sentinel = Sentinel::start(None, view(7, 6379, vec![replica("b", 6380, true)]));
    let mut raw = sentinel.raw();
    let Value::Array(masters) = raw.call(&["SENTINEL", "masters"]) else {
        panic!("masters is an array");
    };
    assert!(matches!(masters[0], Value::Array(_)), "RESP2: {masters:?}");

    let Value::Map(hello) = raw.call(&["HELLO", "3"]) else {
        panic!("HELLO 3 answers a map");
    };
    assert!(hello.contains(&(bulk("proto"), Value::Int(3))), "{hello:?}");
    assert!(
        hello.contains(&(bulk("mode"), bulk("sentinel"))),
        "{hello:?}"
    );
    let Value::Array(masters) = raw.call(&["SENTINEL", "masters"]) else {
        panic!("masters is an array");
    };
    let Value::Map(master) = &masters[0] else {
        panic!("RESP3 tables are maps: {masters:?}");
    };
    assert!(
        master.contains(&(bulk("config-epoch"), bulk("7"))),
        "{master:?}"
    );
    assert_eq!(
        raw.call(&["SENTINEL", "get-master-addr-by-name", "other"]),
        Value::Nil
    );
    assert_eq!(
        raw.call(&["ROLE"]),
        Value::Array(vec![
            bulk("sentinel"),
            Value::Array(vec![bulk(MASTER_NAME)])
        ])
    );
}

/// The message a subscriber must receive for `payload`, in its protocol.
fn message(resp3: bool, pattern: Option<&str>, payload: &str) -> Value {
    let mut data = Vec::new();
    if let Some(p) = pattern {
        data.push(bulk(p));
    }
    data.push(bulk("+switch-master"));
    data.push(bulk(payload));
    match (resp3, pattern.is_some()) {
        (true, false) => Value::Push {
            kind: PushKind::Message,
            data,
        },
        (true, true) => Value::Push {
            kind: PushKind::PMessage,
            data,
        },
        (false, pattern) => {
            let kind = if pattern { "pmessage" } else { "message" };
            Value::Array([vec![bulk(kind)], data].concat())
        }
    }
}

#[test]
fn switch_master_reaches_resp2_and_resp3_subscribers() {
    let sentinel = Sentinel::start(None, view(1, 7001, vec![replica("b", 7002, true)]));

    let mut resp2 = sentinel.raw();
    assert_eq!(
        resp2.call(&["SUBSCRIBE", "+switch-master"]),
        Value::Array(vec![
            bulk("subscribe"),
            bulk("+switch-master"),
            Value::Int(1)
        ])
    );
    let mut resp3 = sentinel.raw();
    assert!(matches!(resp3.call(&["HELLO", "3"]), Value::Map(_)));
    assert_eq!(
        resp3.call(&["SUBSCRIBE", "+switch-master"]),
        Value::Push {
            kind: PushKind::Subscribe,
            data: vec![bulk("+switch-master"), Value::Int(1)]
        }
    );
    let mut pattern = sentinel.raw();
    assert!(matches!(
        pattern.call(&["PSUBSCRIBE", "*"]),
        Value::Array(_)
    ));
    let mut stock = Vec::new();
    for protocol in [ProtocolVersion::RESP2, ProtocolVersion::RESP3] {
        let client = redis::Client::open(sentinel_url(sentinel.addr, protocol)).expect("client");
        let conn = client.get_connection().expect("connect");
        stock.push((protocol, conn));
    }
    let mut pubsubs = Vec::new();
    for (protocol, conn) in &mut stock {
        let mut pubsub = conn.as_pubsub();
        pubsub.subscribe("+switch-master").expect("subscribe");
        pubsub
            .set_read_timeout(Some(READ_TIMEOUT))
            .expect("timeout");
        pubsubs.push((*protocol, pubsub));
    }

    // A change that keeps the master publishes nothing: the next frame each
    // subscriber sees is the answer to its PING.
    sentinel.set(view(1, 7001, vec![replica("b", 7002, false)]));
    assert_eq!(
        resp2.call(&["PING"]),
        Value::Array(vec![bulk("pong"), bulk("")])
    );
    assert_eq!(
        resp3.call(&["PING"]),
        Value::SimpleString("PONG".to_string())
    );

    sentinel.set(view(2, 7002, vec![replica("a", 7001, true)]));
    let payload = "mymaster 127.0.0.1 7001 127.0.0.1 7002";
    assert_eq!(resp2.read(), message(false, None, payload));
    assert_eq!(resp3.read(), message(true, None, payload));
    assert_eq!(
        pattern.read(),
        Value::Array(vec![
            bulk("pmessage"),
            bulk("*"),
            bulk("+sdown"),
            bulk("slave 127.0.0.1:7002 127.0.0.1 7002 @ mymaster 127.0.0.1 7001")
        ]),
        "the replica going down was published first"
    );
    assert_eq!(
        pattern.read_on("+switch-master"),
        message(false, Some("*"), payload)
    );
    for (protocol, pubsub) in &mut pubsubs {
        let msg = pubsub.get_message().expect("message");
        assert_eq!(msg.get_channel_name(), "+switch-master", "{protocol:?}");
        assert_eq!(
            msg.get_payload::<String>().expect("payload"),
            payload,
            "{protocol:?}"
        );
    }

    // The same master chosen again under a new epoch is announced too.
    sentinel.set(view(3, 7002, vec![replica("a", 7001, true)]));
    let again = "mymaster 127.0.0.1 7002 127.0.0.1 7002";
    assert_eq!(resp3.read(), message(true, None, again));
    assert_eq!(resp2.read(), message(false, None, again));
}

#[test]
fn malformed_input_closes_only_that_connection() {
    let sentinel = Sentinel::start(None, view(1, 7001, Vec::new()));
    let mut subscriber = sentinel.raw();
    subscriber.call(&["SUBSCRIBE", "+switch-master"]);
    let mut bystander = sentinel.raw();
    assert_eq!(
        bystander.call(&["PING"]),
        Value::SimpleString("PONG".into())
    );

    let inputs: Vec<Vec<u8>> = vec![
        b"*1\r\n+PING\r\n".to_vec(),
        b"PING \"unbalanced\r\n".to_vec(),
        b"*2\r\n$4\r\nPING\r\n:12\r\n".to_vec(),
        b"*1\r\n$-x\r\n".to_vec(),
        [b"PING ".as_slice(), &vec![b'a'; 70 * 1024]].concat(),
        [b"*1\r\n$100000000\r\n".as_slice(), &vec![b'a'; 200 * 1024]].concat(),
    ];
    for input in inputs {
        let mut bad = sentinel.raw();
        // The oversized one may be cut off while still sending.
        let _ = bad.stream.write_all(&input);
        let first = bad.parser.parse_value(&mut bad.stream);
        if let Ok(reply) = first {
            let Value::ServerError(e) = reply else {
                panic!("{input:?}: expected a protocol error, got {reply:?}");
            };
            assert!(
                e.details()
                    .unwrap_or_default()
                    .starts_with("Protocol error"),
                "{e:?}"
            );
        }
        assert!(bad.closed(), "connection stays open after {input:?}");
    }

    assert_eq!(
        bystander.call(&["PING"]),
        Value::SimpleString("PONG".into())
    );
    assert_eq!(
        subscriber.call(&["PING"]),
        Value::Array(vec![bulk("pong"), bulk("")])
    );
    sentinel.set(view(2, 7002, Vec::new()));
    assert_eq!(
        subscriber.read(),
        message(false, None, "mymaster 127.0.0.1 7001 127.0.0.1 7002")
    );
    assert_eq!(
        sentinel.raw().call(&["PING"]),
        Value::SimpleString("PONG".into())
    );
}

#[test]
fn a_client_that_never_reads_does_not_hold_up_others() {
    let replicas = (0..20).map(|i| replica("r", 7100 + i, true)).collect();
    let sentinel = Sentinel::start(None, view(1, 7001, replicas));
    let mut hog = TcpStream::connect(sentinel.addr).expect("connect");
    hog.set_write_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let request = b"*3\r\n$8\r\nSENTINEL\r\n$8\r\nreplicas\r\n$8\r\nmymaster\r\n";
    // Megabytes of replies that are never read: the hog's own task blocks on
    // writing them, and the hog's sends stall once the endpoint stops reading.
    for _ in 0..20_000 {
        if hog.write_all(request).is_err() {
            break;
        }
    }
    let started = Instant::now();
    let mut other = sentinel.raw();
    assert_eq!(other.call(&["PING"]), Value::SimpleString("PONG".into()));
    assert!(
        matches!(other.call(&["SENTINEL", "masters"]), Value::Array(_)),
        "other clients are served"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "answered in {:?}",
        started.elapsed()
    );
}

#[test]
fn auth_is_required_when_a_password_is_set() {
    let (primary, replica_server) = primary_and_replica();
    let sentinel = Sentinel::start(
        Some(PASSWORD),
        view(
            1,
            primary.port(),
            vec![replica("b", replica_server.port(), true)],
        ),
    );
    let mut raw = sentinel.raw();
    for args in [
        &["PING"][..],
        &["SENTINEL", "get-master-addr-by-name", MASTER_NAME],
        &["SUBSCRIBE", "+switch-master"],
        &["HELLO", "3"],
    ] {
        let reply = raw.call(args);
        let Value::ServerError(e) = &reply else {
            panic!("{args:?} before AUTH: {reply:?}");
        };
        assert_eq!(e.code(), "NOAUTH", "{args:?}");
    }
    let Value::ServerError(e) = raw.call(&["AUTH", "wrong"]) else {
        panic!("a wrong password is refused");
    };
    assert_eq!(e.code(), "WRONGPASS");
    assert_eq!(raw.call(&["AUTH", PASSWORD]), Value::Okay);
    assert_eq!(raw.call(&["PING"]), Value::SimpleString("PONG".into()));

    let mut resp3 = sentinel.raw();
    assert!(matches!(
        resp3.call(&["HELLO", "3", "AUTH", "default", PASSWORD]),
        Value::Map(_)
    ));

    let build = |password: Option<&str>| {
        let mut builder = SentinelClientBuilder::new(
            [sentinel.sentinel_addr()],
            MASTER_NAME,
            SentinelServerType::Master,
        )
        .expect("builder")
        .set_client_to_redis_password(PASSWORD);
        if let Some(p) = password {
            builder = builder.set_client_to_sentinel_password(p);
        }
        builder.build().expect("sentinel client")
    };
    let Err(err) = build(None).get_connection() else {
        panic!("connected without the sentinel password");
    };
    assert!(err.to_string().contains("NOAUTH"), "{err}");
    let mut conn = build(Some(PASSWORD))
        .get_connection()
        .expect("with the password");
    command(&["SET", "authed", "yes"])
        .query::<()>(&mut conn)
        .expect("write");
    assert_eq!(
        primary.query::<String>(&["GET", "authed"]).expect("get"),
        "yes"
    );
}

/// Runs `tests/python/sentinel_client.py` (the Python `redis` package, as an
/// application uses it) through a failover between two real redis-servers.
fn python_client_follows_a_failover(protocol: &str) {
    let available = Command::new("python3")
        .args(["-c", "import redis"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !available {
        // In CI a missing tool is a broken setup, not a reason to pass.
        assert!(
            std::env::var_os("CI").is_none_or(|v| v.is_empty()),
            "CI is set but python3 or its `redis` package is missing, so the stock-client \
             Sentinel test cannot run. Install it: python3 -m pip install redis"
        );
        eprintln!(
            "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
             !!! SKIPPED: python3 or its `redis` package is missing, so the stock-client\n\
             !!! Sentinel test did not run (it fails when CI is set).\n\
             !!! Install it: python3 -m pip install redis\n\
             !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
        );
        return;
    }
    let (a, b) = primary_and_replica();
    let sentinel = Sentinel::start(
        Some(PASSWORD),
        view(1, a.port(), vec![replica("b", b.port(), true)]),
    );
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/sentinel_client.py"
    );
    let mut child = Command::new("python3")
        .arg(script)
        .arg(sentinel.addr.to_string())
        .args(["--master-name", MASTER_NAME, "--protocol", protocol])
        .env("REDIS_PASSWORD", PASSWORD)
        .stdout(Stdio::piped())
        .spawn()
        .expect("run python3");
    let stdout = child.stdout.take().expect("stdout");
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let next_event = |want: &str| -> serde_json::Value {
        loop {
            let line = lines
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|e| panic!("python client: no {want} event: {e}"));
            println!("python client: {line}");
            let event: serde_json::Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("python client printed {line:?}: {e}"));
            assert_ne!(event["event"], "error", "python client failed: {line}");
            if event["event"] == want {
                return event;
            }
        }
    };

    let ready = next_event("ready");
    assert_eq!(ready["master"], serde_json::json!(["127.0.0.1", a.port()]));
    // Let it write to the old master for a while before the failover.
    std::thread::sleep(Duration::from_millis(200));

    // A failover as the agents run it: promote B, commit it (the view), demote A.
    b.query::<()>(&["REPLICAOF", "NO", "ONE"])
        .expect("promote b");
    sentinel.set(view(2, b.port(), vec![replica("a", a.port(), true)]));
    a.query::<()>(&["REPLICAOF", "127.0.0.1", &b.port().to_string()])
        .expect("demote a");

    let done = next_event("done");
    assert_eq!(
        done["switch"],
        format!("mymaster 127.0.0.1 {} 127.0.0.1 {}", a.port(), b.port())
    );
    assert_eq!(done["master"], serde_json::json!(["127.0.0.1", b.port()]));
    let last_key = done["last_key"].as_str().expect("last_key");
    let last_value = done["last_value"].as_i64().expect("last_value");
    assert_eq!(
        b.query::<i64>(&["GET", last_key]).expect("get on b"),
        last_value,
        "the writes acknowledged after the switch are on the new master"
    );
    let status = child.wait().expect("wait for python");
    assert!(status.success(), "python client exited with {status}");
}

#[test]
fn python_redis_sentinel_with_default_protocol_follows_a_failover() {
    python_client_follows_a_failover("default");
}

#[test]
fn python_redis_sentinel_with_protocol_2_follows_a_failover() {
    python_client_follows_a_failover("2");
}

const AGENT_PASSWORD: &str = "agents-sentinel-password";
/// How long the agents may take to settle or to fail over.
const SETTLE: Duration = Duration::from_secs(25);

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A connection to an agent's endpoint, authenticated.
fn authed(port: u16) -> Raw {
    let mut raw = Raw::connect(local(port));
    assert_eq!(raw.call(&["AUTH", AGENT_PASSWORD]), Value::Okay);
    raw
}

/// A RESP2 instance table (a flat key/value array).
fn fields(value: &Value) -> HashMap<String, String> {
    let Value::Array(items) = value else {
        panic!("not a table: {value:?}");
    };
    items
        .chunks(2)
        .map(|pair| match pair {
            [Value::BulkString(k), Value::BulkString(v)] => (
                String::from_utf8_lossy(k).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            ),
            other => panic!("not a key/value pair: {other:?}"),
        })
        .collect()
}

fn all_fields(value: Value) -> Vec<HashMap<String, String>> {
    let Value::Array(items) = value else {
        panic!("not an array: {value:?}");
    };
    items.iter().map(fields).collect()
}

/// The replica entry with `port` in `SENTINEL replicas`, once `pred` holds for it.
fn wait_replica(
    endpoint: u16,
    port: u16,
    what: &str,
    pred: impl Fn(&HashMap<String, String>) -> bool,
) -> HashMap<String, String> {
    let deadline = Instant::now() + SETTLE;
    loop {
        let replicas = all_fields(authed(endpoint).call(&["SENTINEL", "replicas", MASTER_NAME]));
        let entry = replicas
            .into_iter()
            .find(|r| r.get("port") == Some(&port.to_string()));
        if let Some(entry) = entry.filter(|e| pred(e)) {
            return entry;
        }
        assert!(Instant::now() < deadline, "replica {port} never {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Published `(channel, payload)` pairs as a `PSUBSCRIBE *` connection reads them.
struct Events {
    raw: Raw,
    seen: Vec<(String, String)>,
}

impl Events {
    fn subscribe(port: u16) -> Events {
        let mut raw = authed(port);
        assert!(matches!(raw.call(&["PSUBSCRIBE", "*"]), Value::Array(_)));
        Events {
            raw,
            seen: Vec::new(),
        }
    }

    /// Reads until a message on `channel`; returns its payload.
    fn until(&mut self, channel: &str) -> String {
        let deadline = Instant::now() + SETTLE;
        while Instant::now() < deadline {
            let Ok(value) = self.raw.parser.parse_value(&mut self.raw.stream) else {
                continue;
            };
            let Value::Array(items) = &value else {
                panic!("not a message: {value:?}");
            };
            let [_, _, Value::BulkString(c), Value::BulkString(p)] = items.as_slice() else {
                panic!("not a pmessage: {value:?}");
            };
            let (c, p) = (
                String::from_utf8_lossy(c).into_owned(),
                String::from_utf8_lossy(p).into_owned(),
            );
            println!("event: {c} {p}");
            self.seen.push((c.clone(), p.clone()));
            if c == channel {
                return p;
            }
        }
        panic!("no {channel} event; saw {:#?}", self.seen);
    }

    /// Index of the first event on `channel` with `payload`, if seen.
    fn position(&self, channel: &str, payload: &str) -> Option<usize> {
        self.seen
            .iter()
            .position(|(c, p)| c == channel && p.starts_with(payload))
    }
}

/// Three real agents with their endpoints: peers, INFO, ckquorum and inline commands,
/// then the events and tables through a SIGKILL failover, the old master's return and
/// a SIGKILLed replica.
#[test]
fn agents_endpoints_report_health_peers_and_failover_events() {
    common::cluster::run_serial(async {
        let mut c = common::cluster::Cluster::new();
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        for (node, port) in c.nodes.iter_mut().zip(&ports) {
            node.extra_args
                .push(format!("--sentinel-bind=127.0.0.1:{port}"));
            node.extra_args
                .push(format!("--sentinel-password={AGENT_PASSWORD}"));
        }
        c.start_all();
        let m = c.wait_stable_master(SETTLE).await;
        let r = 1 - m;
        let witness = c.index_of("site-c");
        let (old_port, new_port) = (c.nodes[m].redis().port(), c.nodes[r].redis().port());

        // The witness requires the password too.
        let mut anonymous = Raw::connect(local(ports[witness]));
        let Value::ServerError(e) = anonymous.call(&["SENTINEL", "masters"]) else {
            panic!("the witness answered without the password");
        };
        assert_eq!(e.code(), "NOAUTH");

        // Every endpoint lists the two other agents, by their stable run ids.
        let ids: Vec<String> = ports
            .iter()
            .map(|&p| match authed(p).call(&["SENTINEL", "myid"]) {
                Value::BulkString(id) => String::from_utf8_lossy(&id).into_owned(),
                other => panic!("myid: {other:?}"),
            })
            .collect();
        for (i, &port) in ports.iter().enumerate() {
            assert_eq!(ids[i].len(), 40);
            let peers = all_fields(authed(port).call(&["SENTINEL", "sentinels", MASTER_NAME]));
            let mut listed: Vec<(u16, String)> = peers
                .iter()
                .map(|p| (p["port"].parse().expect("port"), p["runid"].clone()))
                .collect();
            listed.sort();
            let mut want: Vec<(u16, String)> = (0..3)
                .filter(|&j| j != i)
                .map(|j| (ports[j], ids[j].clone()))
                .collect();
            want.sort();
            assert_eq!(listed, want, "endpoint {i}");
            assert!(
                peers
                    .iter()
                    .all(|p| p["flags"] == "sentinel" && p["ip"] == "127.0.0.1")
            );
        }

        // Inline commands, as typed in telnet, and INFO/ckquorum on them.
        let mut raw = authed(ports[r]);
        assert_eq!(raw.inline("PING \"hello world\""), bulk("hello world"));
        let Value::BulkString(info) = raw.inline("INFO") else {
            panic!("INFO is a bulk string");
        };
        let info = String::from_utf8_lossy(&info).into_owned();
        assert!(info.contains("\r\nredis_mode:sentinel\r\n"), "{info}");
        assert!(
            info.contains(&format!(
                "master0:name=mymaster,status=ok,address=127.0.0.1:{old_port},slaves=1,sentinels=3"
            )),
            "{info}"
        );
        let deadline = Instant::now() + SETTLE;
        loop {
            let answer = raw.inline("SENTINEL ckquorum mymaster");
            if answer
                == Value::SimpleString(
                    "OK 3 usable Sentinels. Quorum and failover authorization can be reached"
                        .into(),
                )
            {
                break;
            }
            assert!(Instant::now() < deadline, "ckquorum: {answer:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
        let master = fields(&raw.call(&["SENTINEL", "master", MASTER_NAME]));
        assert_eq!(master["flags"], "master");
        assert_eq!(master["num-other-sentinels"], "2");
        assert_eq!(master["runid"].len(), 40, "{master:?}");
        assert!(master.len() >= 20, "{master:?}");
        let healthy = wait_replica(ports[r], new_port, "reported healthy", |e| {
            e["flags"] == "slave" && e["master-link-status"] == "ok" && e["runid"].len() == 40
        });
        assert_eq!(healthy["master-port"], old_port.to_string());
        assert_eq!(healthy["slave-priority"], "100");

        // SIGKILL the master's Redis; the replica site's endpoint tells the story.
        let mut events = Events::subscribe(ports[r]);
        c.nodes[m].redis_mut().kill();
        let switch = events.until("+switch-master");
        assert_eq!(
            switch,
            format!("mymaster 127.0.0.1 {old_port} 127.0.0.1 {new_port}")
        );
        let old_master = format!("master mymaster 127.0.0.1 {old_port}");
        let sdown = events
            .position("+sdown", &old_master)
            .expect("+sdown master");
        let odown = events
            .position("+odown", &format!("{old_master} #quorum "))
            .expect("+odown master");
        let switched = events.position("+switch-master", "").expect("switch");
        assert!(sdown < odown && odown < switched, "{:#?}", events.seen);
        let old_as_replica = format!(
            "slave 127.0.0.1:{old_port} 127.0.0.1 {old_port} @ mymaster 127.0.0.1 {new_port}"
        );
        assert_eq!(events.until("+slave"), old_as_replica);
        let down = wait_replica(ports[r], old_port, "flagged down", |e| {
            // Its agent cannot reach it: `disconnected`, as Sentinel flags a dead link.
            e["flags"] == "s_down,slave,disconnected" && e["master-link-status"] == "err"
        });
        assert_eq!(down["role-reported"], "master", "last known role: {down:?}");

        // The old master returns empty; its agent demotes it.
        c.nodes[m].redis_mut().restart();
        assert_eq!(events.until("+convert-to-slave"), old_as_replica);
        assert!(
            events.position("-sdown", &old_as_replica).is_some(),
            "{:#?}",
            events.seen
        );
        let synced = wait_replica(ports[r], old_port, "resynced", |e| {
            e["flags"] == "slave"
                && e["master-link-status"] == "ok"
                && e["slave-repl-offset"] != "0"
                && e["master-port"] == new_port.to_string()
        });

        // SIGKILL that replica: s_down, link err, last offset and run id kept.
        c.nodes[m].redis_mut().kill();
        assert_eq!(events.until("+sdown"), old_as_replica);
        std::thread::sleep(Duration::from_secs(3));
        let dead = wait_replica(ports[r], old_port, "flagged down", |e| {
            e["flags"] == "s_down,slave,disconnected"
        });
        assert_eq!(dead["master-link-status"], "err");
        assert_eq!(dead["runid"], synced["runid"]);
        let offset: u64 = dead["slave-repl-offset"].parse().expect("offset");
        assert!(offset > 0, "{dead:?}");
        for key in ["master-link-down-time", "s-down-time"] {
            let ms: u64 = dead[key].parse().expect("ms");
            assert!(ms >= 2500, "{key}: {dead:?}");
        }
    });
}

/// The master the witness's endpoint names, polled every 10 ms for `window`; each distinct
/// answer once, in order (`None`: no master named).
fn named_masters(port: u16, window: Duration) -> Vec<Option<String>> {
    let mut raw = authed(port);
    let mut seen: Vec<Option<String>> = Vec::new();
    let deadline = Instant::now() + window;
    while Instant::now() < deadline {
        let named = match raw.call(&["SENTINEL", "get-master-addr-by-name", MASTER_NAME]) {
            Value::Array(parts) => Some(
                parts
                    .iter()
                    .map(|p| match p {
                        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                        other => format!("{other:?}"),
                    })
                    .collect::<Vec<_>>()
                    .join(":"),
            ),
            _ => None,
        };
        if seen.last() != Some(&named) {
            seen.push(named);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    seen
}

/// Issue 14.3: while its agent keeps quorum, the witness's view never flips to "no master"
/// — neither while a replica's site (Redis and agent) is stopped, nor across the failover
/// when the master's site is. The bench's fast settings (a lease under a second): the
/// witness must renew its contact well within it.
#[test]
fn the_witness_view_holds_steady_while_a_data_site_is_stopped() {
    common::cluster::run_serial(async {
        let lease = Duration::from_millis(700);
        let mut c = common::cluster::Cluster::new();
        for (flag, value) in [
            ("--probe-interval", "50ms"),
            ("--raft-heartbeat", "50ms"),
            ("--raft-election-timeout", "100ms"),
            ("--lease", "700ms"),
            ("--down-after", "1s"),
        ] {
            c.set_timing(flag, value);
        }
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        for (node, port) in c.nodes.iter_mut().zip(&ports) {
            node.extra_args
                .push(format!("--sentinel-bind=127.0.0.1:{port}"));
            node.extra_args
                .push(format!("--sentinel-password={AGENT_PASSWORD}"));
        }
        c.start_all();
        let m = c.wait_stable_master(SETTLE).await;
        let r = 1 - m;
        let witness = ports[c.index_of("site-c")];
        let old = format!("127.0.0.1:{}", c.nodes[m].redis().port());
        let new = format!("127.0.0.1:{}", c.nodes[r].redis().port());

        c.nodes[r].redis().stop();
        assert!(c.signal_agent(r, "STOP"));
        let seen = named_masters(witness, lease * 5);
        c.nodes[r].redis().cont();
        assert!(c.signal_agent(r, "CONT"));
        assert_eq!(seen, vec![Some(old.clone())], "replica site stopped");
        c.wait_stable_master(SETTLE).await;

        c.nodes[m].redis().stop();
        assert!(c.signal_agent(m, "STOP"));
        let seen = named_masters(witness, Duration::from_secs(4));
        assert_eq!(seen, vec![Some(old), Some(new)], "master site stopped");
        c.nodes[m].redis().cont();
        assert!(c.signal_agent(m, "CONT"));
    });
}
