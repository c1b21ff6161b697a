//! redis-rs implementation of [`RedisNode`](super::RedisNode).
//!
//! One multiplexed connection is cached and shared by all calls. It is opened
//! lazily and forgotten after any failure that is not a Redis error reply, so
//! the next call reconnects. Both connecting (including AUTH and the TLS
//! handshake) and every response are bounded by [`CONNECT_TIMEOUT`] and
//! [`RESPONSE_TIMEOUT`], so a hung redis-server turns into
//! [`RedisError::Unreachable`] instead of a stuck agent.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, ConnectionAddr, FromRedisValue, IntoConnectionInfo, ProtocolVersion,
    PushInfo, PushKind,
};
use tokio::sync::{Mutex, Notify};

use super::{MasterProbe, RedisConfig, RedisError, RedisNode};
use crate::model::{RedisRole, RedisStatus};

/// Bound on TCP connect, TLS handshake and AUTH together.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Bound on the answer to any one command.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);

/// A [`RedisNode`] talking to one redis-server over a cached connection.
pub struct RedisClient {
    client: redis::Client,
    /// `host:port`, for error messages.
    addr: String,
    connection_config: AsyncConnectionConfig,
    password: Option<String>,
    config: RedisConfig,
    cache: Mutex<Cache>,
    /// A client of the master this Redis replicates from, for write probes; rebuilt when
    /// the master's address changes.
    master: Mutex<Option<(String, Arc<RedisClient>)>>,
    /// Woken by redis-rs when a connection of ours closes (its `Disconnection` push).
    closed: Arc<Notify>,
}

/// The channel of the write probe: nobody subscribes, so a `PUBLISH` changes nothing.
const WRITE_PROBE_CHANNEL: &str = "__redis-orchestrator:write-probe";

/// The cached connection, tagged so that a caller whose command failed only
/// forgets the connection it used, never a newer one opened meanwhile.
#[derive(Default)]
struct Cache {
    next_generation: u64,
    current: Option<(u64, MultiplexedConnection)>,
}

/// A connection handed to one call.
struct Lease {
    conn: MultiplexedConnection,
    generation: u64,
    /// Opened by an earlier call, so it may have been closed since.
    reused: bool,
}

impl RedisClient {
    /// Builds the client without connecting; the first call connects.
    pub fn new(config: RedisConfig) -> Result<Self, RedisError> {
        Self::with_close_notify(config, Arc::new(Notify::new()))
    }

    /// [`new`](Self::new), waking `closed` when one of its connections closes.
    fn with_close_notify(config: RedisConfig, closed: Arc<Notify>) -> Result<Self, RedisError> {
        let kept = config.clone();
        if config.host.is_empty() || config.port == 0 {
            return Err(RedisError::Unreachable(format!(
                "invalid redis address {:?}:{}",
                config.host, config.port
            )));
        }
        let addr_text = format!("{}:{}", config.host, config.port);
        let addr = if config.tls {
            ConnectionAddr::TcpTls {
                host: config.host,
                port: config.port,
                insecure: config.tls_skip_verify,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(config.host, config.port)
        };
        // Built field by field rather than from a URL, so no password
        // character needs escaping.
        // RESP3: redis-rs reports a closed connection only to a push sender, and only on
        // RESP3 connections (Redis 6 and later, Valkey).
        let mut settings =
            redis::RedisConnectionInfo::default().set_protocol(ProtocolVersion::RESP3);
        if let Some(password) = &config.password {
            settings = settings.set_password(password);
        }
        let info = addr
            .into_connection_info()
            .map_err(|e| RedisError::Unreachable(format!("invalid redis config: {e}")))?
            .set_redis_settings(settings);
        let client = match (&config.tls_ca_file, config.tls) {
            (Some(ca), true) => {
                let root_cert = std::fs::read(ca).map_err(|e| {
                    RedisError::Unreachable(format!(
                        "cannot read --redis-tls-ca-file {}: {e}",
                        ca.display()
                    ))
                })?;
                let certs = redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                };
                redis::Client::build_with_tls(info, certs)
            }
            _ => redis::Client::open(info),
        }
        .map_err(|e| RedisError::Unreachable(format!("invalid redis config: {e}")))?;
        let on_push = closed.clone();
        let connection_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_push_sender(move |push: PushInfo| {
                if push.kind == PushKind::Disconnection {
                    on_push.notify_one();
                }
                Ok::<(), std::convert::Infallible>(())
            });
        Ok(Self {
            client,
            addr: addr_text,
            connection_config,
            password: config.password,
            config: kept,
            cache: Mutex::new(Cache::default()),
            master: Mutex::new(None),
            closed,
        })
    }

    /// A client of `host:port` with our credentials, kept while the address stays the same.
    async fn master_client(&self, host: &str, port: u16) -> Result<Arc<RedisClient>, RedisError> {
        let addr = crate::addr::join_host_port(host, port);
        let mut master = self.master.lock().await;
        if let Some((known, client)) = master.as_ref()
            && *known == addr
        {
            return Ok(client.clone());
        }
        // Its connection closing (the master exited) wakes the member loop like ours does.
        let client = Arc::new(RedisClient::with_close_notify(
            RedisConfig {
                host: host.to_string(),
                port,
                ..self.config.clone()
            },
            self.closed.clone(),
        )?);
        *master = Some((addr, client.clone()));
        Ok(client)
    }

    /// Drops the cached connection, whatever its generation: a command still held on it
    /// (paused) would delay every later one.
    async fn forget_current(&self) {
        self.cache.lock().await.current = None;
    }

    /// The cached connection, or a new one. The lock is held while connecting
    /// so concurrent callers share one attempt instead of racing.
    async fn lease(&self) -> Result<Lease, RedisError> {
        let mut cache = self.cache.lock().await;
        if let Some((generation, conn)) = &cache.current {
            return Ok(Lease {
                conn: conn.clone(),
                generation: *generation,
                reused: true,
            });
        }
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&self.connection_config)
            .await
            .map_err(|e| connect_error(&format!("connect to {}", self.addr), &e))?;
        let generation = cache.next_generation;
        cache.next_generation += 1;
        cache.current = Some((generation, conn.clone()));
        Ok(Lease {
            conn,
            generation,
            reused: false,
        })
    }

    async fn forget(&self, generation: u64) {
        let mut cache = self.cache.lock().await;
        if cache
            .current
            .as_ref()
            .is_some_and(|(g, _)| *g == generation)
        {
            cache.current = None;
        }
    }

    /// Runs one command. A cached connection found closed (the server
    /// restarted or dropped an idle client since the last call) says nothing
    /// about the server now, so that case alone is retried once on a fresh
    /// connection; every [`RedisNode`] operation is safe to repeat.
    async fn run<T: FromRedisValue>(&self, name: &str, cmd: &redis::Cmd) -> Result<T, RedisError> {
        self.retrying(
            name,
            |mut conn| async move { cmd.query_async(&mut conn).await },
        )
        .await
    }

    /// [`run`](Self::run) for a pipeline or `MULTI` transaction.
    async fn run_pipeline(&self, name: &str, pipe: &redis::Pipeline) -> Result<(), RedisError> {
        self.retrying(
            name,
            |mut conn| async move { pipe.query_async(&mut conn).await },
        )
        .await
    }

    async fn retrying<T, F, Fut>(&self, name: &str, query: F) -> Result<T, RedisError>
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let lease = self.lease().await?;
        match query(lease.conn).await {
            Ok(value) => Ok(value),
            Err(e) if lease.reused && e.is_connection_dropped() => {
                self.forget(lease.generation).await;
                let lease = self.lease().await?;
                let result = query(lease.conn).await;
                self.settle(name, lease.generation, result).await
            }
            Err(e) => self.settle(name, lease.generation, Err(e)).await,
        }
    }

    /// The replica authenticates to its new master with our own password: every Redis
    /// of the cluster shares it.
    async fn set_masterauth(&self) -> Result<(), RedisError> {
        let Some(password) = &self.password else {
            return Ok(());
        };
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("SET").arg("masterauth").arg(password);
        self.run("CONFIG SET masterauth", &cmd).await
    }

    /// Classifies a command's error, forgetting the connection unless Redis
    /// itself answered (an error reply leaves the connection usable).
    async fn settle<T>(
        &self,
        name: &str,
        generation: u64,
        result: redis::RedisResult<T>,
    ) -> Result<T, RedisError> {
        match result {
            Ok(value) => Ok(value),
            Err(e) => {
                if e.code().is_none() {
                    self.forget(generation).await;
                }
                Err(command_error(name, &e))
            }
        }
    }
}

impl RedisNode for RedisClient {
    async fn closed(&self) {
        self.closed.notified().await;
    }

    async fn probe(&self) -> Result<RedisStatus, RedisError> {
        let mut cmd = redis::cmd("INFO");
        cmd.arg("server").arg("replication").arg("keyspace");
        let text: String = self.run("INFO", &cmd).await?;
        parse_info(&text).map_err(|e| RedisError::Command(format!("INFO: {e}")))
    }

    async fn promote(&self) -> Result<(), RedisError> {
        let mut cmd = redis::cmd("REPLICAOF");
        cmd.arg("NO").arg("ONE");
        self.run("REPLICAOF NO ONE", &cmd).await
    }

    async fn replicate_from(&self, host: &str, port: u16) -> Result<(), RedisError> {
        self.set_masterauth().await?;
        let mut cmd = redis::cmd("REPLICAOF");
        cmd.arg(host).arg(port);
        self.run("REPLICAOF", &cmd).await
    }

    async fn demote(&self, host: &str, port: u16) -> Result<(), RedisError> {
        self.set_masterauth().await?;
        // One transaction: Redis never is a replica whose old clients were left connected.
        // All three commands run during CLIENT PAUSE WRITE (none is a write); the writes
        // held by the pause are dropped with their connections, never acknowledged.
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("REPLICAOF")
            .arg(host)
            .arg(port)
            .ignore()
            .cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("normal")
            .ignore()
            .cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("pubsub")
            .ignore();
        self.run_pipeline("REPLICAOF + CLIENT KILL", &pipe).await
    }

    async fn pause_writes(&self, duration: Duration) -> Result<(), RedisError> {
        // Saturate absurd durations; Redis rejects what it cannot represent.
        let ms = crate::duration::whole_millis(duration);
        let mut cmd = redis::cmd("CLIENT");
        cmd.arg("PAUSE").arg(ms).arg("WRITE");
        self.run("CLIENT PAUSE", &cmd).await
    }

    async fn unpause(&self) -> Result<(), RedisError> {
        let mut cmd = redis::cmd("CLIENT");
        cmd.arg("UNPAUSE");
        self.run("CLIENT UNPAUSE", &cmd).await
    }

    async fn probe_master(
        &self,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<MasterProbe, RedisError> {
        let master = self.master_client(host, port).await?;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut info = redis::cmd("INFO");
        info.arg("server");
        let mut publish = redis::cmd("PUBLISH");
        publish.arg(WRITE_PROBE_CHANNEL).arg("probe");
        // Both go out at once on the one connection: Redis answers in order, so the answers
        // come in one read, and a paused master's held PUBLISH does not delay the INFO.
        let (info, published) = tokio::join!(
            tokio::time::timeout_at(deadline, master.run::<String>("INFO", &info)),
            tokio::time::timeout_at(deadline, master.run::<i64>("PUBLISH", &publish)),
        );
        let run_id = match info {
            Ok(Ok(text)) => text
                .lines()
                .find_map(|l| l.strip_prefix("run_id:"))
                .map(|id| id.trim().to_string()),
            Ok(Err(e)) => return Err(e),
            Err(_) => None,
        };
        let accepts_writes = match published {
            Ok(Ok(_)) => true,
            Ok(Err(RedisError::Command(_))) => false,
            Ok(Err(e)) => return Err(e),
            Err(_) => false,
        };
        if run_id.is_none() || !accepts_writes {
            // A command still held on the connection (paused) would delay every later one.
            master.forget_current().await;
        }
        Ok(MasterProbe {
            run_id,
            accepts_writes,
        })
    }

    async fn set_min_replicas(&self, count: u32, max_lag: Duration) -> Result<(), RedisError> {
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("SET")
            .arg("min-replicas-to-write")
            .arg(count)
            .arg("min-replicas-max-lag")
            .arg(max_lag.as_secs().max(1));
        self.run("CONFIG SET min-replicas-to-write", &cmd).await
    }

    async fn tune_replication(
        &self,
        ping_period: Duration,
        timeout: Duration,
    ) -> Result<(), RedisError> {
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("SET")
            .arg("repl-ping-replica-period")
            .arg(ping_period.as_secs().max(1))
            .arg("repl-timeout")
            .arg(timeout.as_secs().max(1));
        self.run("CONFIG SET repl-timeout", &cmd).await
    }
}

/// A failure to get an answer at all: refused when nothing listens,
/// unreachable otherwise (timeout, reset, TLS or AUTH failure while connecting).
fn transport_error(context: &str, e: &redis::RedisError) -> RedisError {
    if is_auth(e) {
        RedisError::Auth(format!("{context}: {e}"))
    } else if is_refused(e) {
        RedisError::Refused(format!("{context}: {e}"))
    } else {
        RedisError::Unreachable(format!("{context}: {e}"))
    }
}

/// A failed connect. A connection accepted and then closed before Redis answered means no
/// Redis serves there: a TCP proxy or relay in front of it accepts for a backend that is gone.
fn connect_error(context: &str, e: &redis::RedisError) -> RedisError {
    match transport_error(context, e) {
        RedisError::Unreachable(text) if e.is_connection_dropped() => RedisError::HungUp(text),
        other => other,
    }
}

/// The failure of a command on an open connection. An error reply is a
/// [`RedisError::Command`], except authentication errors: they mean we cannot
/// use this Redis at all.
fn command_error(name: &str, e: &redis::RedisError) -> RedisError {
    match e.code() {
        _ if is_auth(e) => RedisError::Auth(format!("{name}: {e}")),
        Some(_) => RedisError::Command(format!("{name}: {e}")),
        None => transport_error(name, e),
    }
}

/// Redis answered, but not to us: a wrong or missing password, or an ACL user without the
/// rights the agent needs. Also what redis-rs makes of a failed AUTH while connecting.
fn is_auth(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(e.code(), Some("NOAUTH" | "WRONGPASS" | "NOPERM"))
}

/// Whether an io::Error of kind ConnectionRefused is anywhere in the chain.
fn is_refused(e: &redis::RedisError) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        if as_io_error(err).is_some_and(|io| io.kind() == io::ErrorKind::ConnectionRefused) {
            return true;
        }
        current = err.source();
    }
    false
}

/// `err` as an io::Error. redis-rs keeps the io::Error of a failed connect in
/// an `Arc` and hands out the `Arc` itself as the source, so look inside it too.
fn as_io_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a io::Error> {
    err.downcast_ref::<io::Error>().or_else(|| {
        err.downcast_ref::<Arc<dyn std::error::Error + Send + Sync>>()
            .and_then(|inner| inner.downcast_ref::<io::Error>())
    })
}

/// Parses the text of `INFO server replication keyspace`.
///
/// Lines without a `:` (section headers, blank lines) are skipped; unknown
/// fields are ignored. `run_id`, `role` and `master_repl_offset` are required,
/// and for a replica `master_host` and `master_port` too.
pub fn parse_info(text: &str) -> Result<RedisStatus, String> {
    let mut run_id = None;
    let mut role = None;
    let mut master_host = None;
    let mut master_port = None;
    let mut link_up = false;
    let mut offset = None;
    let mut keys: u64 = 0;
    let mut online_replicas: u32 = 0;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        match key {
            "run_id" => run_id = Some(value),
            "role" => {
                role = Some(match value {
                    "master" => RedisRole::Master,
                    "slave" => RedisRole::Replica,
                    other => return Err(format!("unknown role {other:?}")),
                });
            }
            "master_host" => master_host = Some(value),
            "master_port" => {
                let port = value
                    .parse::<u16>()
                    .map_err(|_| format!("bad master_port {value:?}"))?;
                master_port = Some(port);
            }
            "master_link_status" => link_up = value == "up",
            "master_repl_offset" => {
                offset = Some(
                    value
                        .parse::<u64>()
                        .map_err(|_| format!("bad master_repl_offset {value:?}"))?,
                );
            }
            replica
                if is_replica_key(replica)
                    && value.split(',').any(|field| field == "state=online") =>
            {
                online_replicas = online_replicas.saturating_add(1);
            }
            db if is_db_key(db) => {
                let count = value
                    .split(',')
                    .find_map(|field| field.strip_prefix("keys="))
                    .and_then(|n| n.parse::<u64>().ok())
                    .ok_or_else(|| format!("bad keyspace line {line:?}"))?;
                keys = keys
                    .checked_add(count)
                    .ok_or_else(|| "key count overflows".to_string())?;
            }
            _ => {}
        }
    }
    let run_id = run_id
        .filter(|id| !id.is_empty())
        .ok_or("no run_id in INFO")?;
    let role = role.ok_or("no role in INFO")?;
    let repl_offset = offset.ok_or("no master_repl_offset in INFO")?;
    let master_addr = match role {
        RedisRole::Master => None,
        RedisRole::Replica => match (master_host, master_port) {
            (Some(host), Some(port)) if !host.is_empty() => {
                Some(crate::addr::join_host_port(host, port))
            }
            _ => return Err("replica without master_host/master_port".to_string()),
        },
    };
    Ok(RedisStatus {
        run_id: run_id.to_string(),
        role,
        master_addr,
        master_link_up: role == RedisRole::Replica && link_up,
        repl_offset,
        keys,
        online_replicas,
    })
}

/// `slave0`, `slave1`, ...: one replica of a master.
fn is_replica_key(key: &str) -> bool {
    key.strip_prefix("slave")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// `db0`, `db15`, ...: a keyspace line.
fn is_db_key(key: &str) -> bool {
    key.strip_prefix("db")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUN_ID: &str = "d3a7958298defb07365bce328b5fc8239efc9496";

    /// Joins lines the way Redis sends them: CRLF after each.
    fn info(lines: &[&str]) -> String {
        lines.iter().map(|l| format!("{l}\r\n")).collect()
    }

    fn server_section() -> Vec<&'static str> {
        vec![
            "# Server",
            "redis_version:7.0.15",
            "redis_mode:standalone",
            "process_id:11395",
            "run_id:d3a7958298defb07365bce328b5fc8239efc9496",
            "tcp_port:7701",
            "uptime_in_seconds:0",
            "executable:/usr/bin/redis-server",
            "config_file:",
            "",
        ]
    }

    fn master_text(keyspace: &[&'static str]) -> String {
        let mut lines = server_section();
        lines.extend([
            "# Replication",
            "role:master",
            "connected_slaves:1",
            "slave0:ip=127.0.0.1,port=7702,state=online,offset=1234,lag=0",
            "master_failover_state:no-failover",
            "master_replid:ae1af05d9c9b7e2d8cf7a4313dad689788ee6bf7",
            "master_replid2:0000000000000000000000000000000000000000",
            "master_repl_offset:1234",
            "second_repl_offset:-1",
            "repl_backlog_active:1",
            "repl_backlog_size:1048576",
            "repl_backlog_first_byte_offset:1",
            "repl_backlog_histlen:1233",
            "",
            "# Keyspace",
        ]);
        lines.extend(keyspace);
        info(&lines)
    }

    fn replica_text(link: &'static str) -> String {
        let mut lines = server_section();
        lines.extend([
            "# Replication",
            "role:slave",
            "master_host:10.0.0.7",
            "master_port:6380",
            link,
            "master_last_io_seconds_ago:0",
            "master_sync_in_progress:0",
            "slave_read_repl_offset:14",
            "slave_repl_offset:14",
            "slave_priority:100",
            "slave_read_only:1",
            "replica_announced:1",
            "connected_slaves:0",
            "master_failover_state:no-failover",
            "master_replid:cc9def8a86f6b850be350dcaf3db489409ddcb84",
            "master_replid2:0000000000000000000000000000000000000000",
            "master_repl_offset:14",
            "second_repl_offset:-1",
            "",
            "# Keyspace",
            "db0:keys=1,expires=0,avg_ttl=0",
        ]);
        info(&lines)
    }

    #[test]
    fn master_with_keyspace() {
        let status = parse_info(&master_text(&[
            "db0:keys=3,expires=1,avg_ttl=1000",
            "db5:keys=4,expires=0,avg_ttl=0,subexpiry=0",
        ]))
        .unwrap();
        assert_eq!(
            status,
            RedisStatus {
                run_id: RUN_ID.to_string(),
                role: RedisRole::Master,
                master_addr: None,
                master_link_up: false,
                repl_offset: 1234,
                keys: 7,
                online_replicas: 1,
            }
        );
    }

    #[test]
    fn master_with_empty_keyspace() {
        let status = parse_info(&master_text(&[])).unwrap();
        assert_eq!(status.role, RedisRole::Master);
        assert_eq!(status.keys, 0);
    }

    #[test]
    fn master_without_keyspace_section() {
        let text = master_text(&[]).replace("# Keyspace\r\n", "");
        assert_eq!(parse_info(&text).unwrap().keys, 0);
    }

    #[test]
    fn replica_link_up() {
        let status = parse_info(&replica_text("master_link_status:up")).unwrap();
        assert_eq!(
            status,
            RedisStatus {
                run_id: RUN_ID.to_string(),
                role: RedisRole::Replica,
                master_addr: Some("10.0.0.7:6380".to_string()),
                master_link_up: true,
                repl_offset: 14,
                keys: 1,
                online_replicas: 0,
            }
        );
    }

    #[test]
    fn replica_link_down() {
        let text =
            replica_text("master_link_status:down") + "master_link_down_since_seconds:-1\r\n";
        let status = parse_info(&text).unwrap();
        assert_eq!(status.role, RedisRole::Replica);
        assert!(!status.master_link_up);
        assert_eq!(status.master_addr.as_deref(), Some("10.0.0.7:6380"));
    }

    #[test]
    fn ipv6_master_host_is_bracketed() {
        let text = replica_text("master_link_status:up").replace("10.0.0.7", "fd00::7");
        let status = parse_info(&text).unwrap();
        assert_eq!(status.master_addr.as_deref(), Some("[fd00::7]:6380"));
    }

    #[test]
    fn accepts_bare_newlines() {
        let text = master_text(&["db0:keys=2,expires=0,avg_ttl=0"]).replace("\r\n", "\n");
        assert_eq!(parse_info(&text).unwrap().keys, 2);
    }

    #[test]
    fn refused_connect_is_refused_other_io_errors_are_unreachable() {
        let refused = redis::RedisError::from(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert!(matches!(
            transport_error("connect", &refused),
            RedisError::Refused(_)
        ));
        for kind in [
            io::ErrorKind::TimedOut,
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::BrokenPipe,
        ] {
            let err = redis::RedisError::from(io::Error::from(kind));
            assert!(matches!(
                command_error("INFO", &err),
                RedisError::Unreachable(_)
            ));
        }
    }

    /// A TCP relay whose backend is gone accepts and closes: no Redis serves there.
    #[tokio::test]
    async fn a_master_address_that_accepts_and_closes_hangs_up() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("local addr").port();
        let acceptor = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                drop(socket);
            }
        });
        let local = RedisClient::new(RedisConfig {
            host: "127.0.0.1".into(),
            port: 1,
            password: None,
            tls: false,
            tls_skip_verify: false,
            tls_ca_file: None,
        })
        .expect("client");
        let probe = local
            .probe_master("127.0.0.1", port, Duration::from_secs(1))
            .await;
        assert!(
            matches!(probe, Err(RedisError::HungUp(_))),
            "hung up, not merely unreachable: {probe:?}"
        );
        acceptor.abort();
        // Awaited, the aborted task has dropped its listener.
        let _ = acceptor.await;
        let refused = local
            .probe_master("127.0.0.1", port, Duration::from_secs(1))
            .await;
        assert!(
            matches!(refused, Err(RedisError::Refused(_))),
            "refused once nothing listens: {refused:?}"
        );
    }

    #[test]
    fn error_replies_are_command_errors_except_auth() {
        let reply = |code: &str| redis::make_extension_error(code.to_string(), None);
        assert!(matches!(
            command_error("REPLICAOF", &reply("ERR")),
            RedisError::Command(_)
        ));
        for code in ["NOAUTH", "WRONGPASS", "NOPERM"] {
            assert!(
                matches!(command_error("INFO", &reply(code)), RedisError::Auth(_)),
                "{code}"
            );
        }
        let failed_auth = redis::RedisError::from((
            redis::ErrorKind::AuthenticationFailed,
            "Password authentication failed",
        ));
        assert!(matches!(
            transport_error("connect", &failed_auth),
            RedisError::Auth(_)
        ));
    }

    #[test]
    fn malformed_input_is_an_error() {
        let master = master_text(&[]);
        let replica = replica_text("master_link_status:up");
        let cases = [
            String::new(),
            "garbage without structure".to_string(),
            "\u{0}\u{ff}:::\r\n:\r\n".to_string(),
            master.replace("run_id:", "runid:"),
            master.replace(RUN_ID, ""),
            master.replace("role:master", "role:sentinel"),
            master.replace("role:master", "nothing"),
            master.replace("master_repl_offset:1234", "master_repl_offset:x"),
            master.replace("master_repl_offset:1234", "master_repl_offset:-1"),
            master.replace("master_repl_offset:", "offset:"),
            master_text(&["db0:expires=0,avg_ttl=0"]),
            master_text(&["db0:keys=many,expires=0"]),
            master_text(&["db0:keys=18446744073709551615", "db1:keys=1"]),
            replica.replace("master_host:10.0.0.7\r\n", ""),
            replica.replace("master_port:6380", "master_port:99999"),
        ];
        for text in cases {
            assert!(parse_info(&text).is_err(), "accepted {text:?}");
        }
    }
}
