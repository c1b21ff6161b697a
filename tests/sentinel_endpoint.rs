//! The Sentinel-compatible endpoint against stock clients: redis-rs's own Sentinel
//! client and pub/sub, raw RESP2/RESP3 connections, and the Python `redis` package.
//!
//! The endpoint runs in-process on 127.0.0.1, fed by a `watch` channel the test
//! controls; the Redis servers it names are real `redis-server` processes.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use redis::sentinel::{SentinelClientBuilder, SentinelServerType};
use redis::{ConnectionAddr, ProtocolVersion, PushKind, Value};
use redis_orchestrator::sentinel::{Endpoint, ReplicaView, SentinelConfig, SentinelView, serve};
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

fn endpoint(name: &str, port: u16) -> Endpoint {
    Endpoint {
        name: name.to_string(),
        host: "127.0.0.1".to_string(),
        port,
    }
}

fn replica(name: &str, port: u16, healthy: bool) -> ReplicaView {
    ReplicaView {
        endpoint: endpoint(name, port),
        link_up: healthy,
        healthy,
        offset: Some(0),
    }
}

fn view(epoch: u64, master: u16, replicas: Vec<ReplicaView>) -> SentinelView {
    SentinelView {
        epoch,
        master: Some(endpoint("master", master)),
        replicas,
        quorum: 2,
        stale: false,
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

fn bulk(text: &str) -> Value {
    Value::BulkString(text.as_bytes().to_vec())
}

/// A primary and its replica, both real redis-servers with a password.
fn primary_and_replica() -> (RedisServer, RedisServer) {
    let options = ServerOptions {
        requirepass: Some(PASSWORD.to_string()),
        masterauth: Some(PASSWORD.to_string()),
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
        assert_eq!(listed[1]["flags"], "slave,s_down");
        assert_eq!(listed[1]["master-link-status"], "err");
        let addr: (String, u16) = command(&["SENTINEL", "get-master-addr-by-name", MASTER_NAME])
            .query(&mut direct)
            .expect("get-master-addr-by-name");
        assert_eq!(addr, ("127.0.0.1".to_string(), primary.port()));
        let err = command(&["COMMAND"])
            .query::<Value>(&mut direct)
            .expect_err("COMMAND is unknown here");
        assert!(
            err.to_string().contains("unknown command 'COMMAND'"),
            "{protocol:?}: {err}"
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
    assert_eq!(pattern.read(), message(false, Some("*"), payload));
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
        b"PING\r\n".to_vec(),
        b"*2\r\n$4\r\nPING\r\n:12\r\n".to_vec(),
        b"*1\r\n$-x\r\n".to_vec(),
        b"\x00\x01\x02\xff\r\n".to_vec(),
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
        eprintln!(
            "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
             !!! SKIPPED: the Python `redis` package is missing, so the stock-client\n\
             !!! Sentinel test did not run. Install it: python3 -m pip install redis\n\
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
