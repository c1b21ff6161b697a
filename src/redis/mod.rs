//! The local Redis, behind a small trait so the reconcile loop can be tested
//! with a fake ([`fake::FakeRedis`]) and run against real redis-server.

pub mod client;
pub mod fake;

use std::future::Future;
use std::time::Duration;

use crate::model::{DownKind, RedisStatus};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedisError {
    /// Connection refused: no process listens on the port.
    #[error("connection refused: {0}")]
    Refused(String),
    /// Accepted, then closed (EOF or reset) before Redis answered a new connection: nothing
    /// serves behind the address, as when a proxy's backend is gone.
    #[error("hung up on connect: {0}")]
    HungUp(String),
    /// Timed out, reset, TLS or auth failure: the process may be alive.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// Redis refused our credentials (NOAUTH, WRONGPASS, NOPERM): alive, but not ours to command.
    #[error("redis refuses the agent's credentials (check --redis-password): {0}")]
    Auth(String),
    /// Redis answered with an error to a command.
    #[error("command failed: {0}")]
    Command(String),
}

impl RedisError {
    pub fn down_kind(&self) -> DownKind {
        match self {
            RedisError::Refused(_) => DownKind::Refused,
            RedisError::Auth(_) => DownKind::Unauthorized,
            RedisError::HungUp(_) | RedisError::Unreachable(_) | RedisError::Command(_) => {
                DownKind::Unreachable
            }
        }
    }
}

/// Operations on one local redis-server. Every operation is safe to repeat.
pub trait RedisNode: Send + Sync + 'static {
    /// Resolves when a connection the agent held to this Redis, or to the master whose
    /// writes it probes, has closed (EOF or reset) since the last call: the sign that the
    /// process exited, sooner than any poll. Only a
    /// probe decides what it means (a refused reconnect is a dead Redis; a working one is
    /// not), so a spurious wake-up costs one probe.
    fn closed(&self) -> impl Future<Output = ()> + Send;
    /// INFO server/replication/keyspace parsed into a status.
    fn probe(&self) -> impl Future<Output = Result<RedisStatus, RedisError>> + Send;
    /// `REPLICAOF NO ONE`.
    fn promote(&self) -> impl Future<Output = Result<(), RedisError>> + Send;
    /// `CONFIG SET masterauth` (when a password is set), then `REPLICAOF host port`.
    fn replicate_from(
        &self,
        host: &str,
        port: u16,
    ) -> impl Future<Output = Result<(), RedisError>> + Send;
    /// `CONFIG SET masterauth` (when a password is set), then in one `MULTI`: `REPLICAOF
    /// host port`, `CLIENT KILL TYPE normal`, `CLIENT KILL TYPE pubsub`. The kills skip
    /// the calling connection (`SKIPME yes` is their default), so the agent keeps its own.
    fn demote(&self, host: &str, port: u16) -> impl Future<Output = Result<(), RedisError>> + Send;
    /// `CLIENT PAUSE <ms> WRITE`.
    fn pause_writes(
        &self,
        duration: Duration,
    ) -> impl Future<Output = Result<(), RedisError>> + Send;
    /// `CLIENT UNPAUSE`.
    fn unpause(&self) -> impl Future<Output = Result<(), RedisError>> + Send;
    /// What the Redis at `host:port` (the master this one replicates from, reached with the
    /// same credentials) is, and whether it takes a harmless write, within `timeout`:
    /// `INFO server` for its run_id, then `PUBLISH` on a channel of ours, which
    /// `CLIENT PAUSE WRITE` holds like any write. `Err`: not reached at all
    /// ([`RedisError::Refused`] when nothing listens).
    fn probe_master(
        &self,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> impl Future<Output = Result<MasterProbe, RedisError>> + Send;
    /// `CONFIG SET min-replicas-to-write <count> min-replicas-max-lag <s>` (whole seconds).
    fn set_min_replicas(
        &self,
        count: u32,
        max_lag: Duration,
    ) -> impl Future<Output = Result<(), RedisError>> + Send;
    /// `CONFIG SET repl-ping-replica-period <s> repl-timeout <s>` (whole seconds).
    fn tune_replication(
        &self,
        ping_period: Duration,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), RedisError>> + Send;
}

/// What a replica's agent found at its master's Redis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MasterProbe {
    /// `None` when it did not answer `INFO` in time (paused, hung).
    pub run_id: Option<String>,
    /// Whether the probe's `PUBLISH` was answered: held (paused) or refused writes are not.
    pub accepts_writes: bool,
}

/// How to reach the local Redis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisConfig {
    pub host: String,
    pub port: u16,
    pub password: Option<String>,
    pub tls: bool,
    pub tls_skip_verify: bool,
    /// PEM CA the server certificate is verified against (`--redis-tls-ca-file`).
    pub tls_ca_file: Option<std::path::PathBuf>,
}
