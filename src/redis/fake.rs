//! An in-memory [`RedisNode`] for unit tests of the loops: a role, an offset, a
//! replication link and a pause, every command recorded, failures injected on demand.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::{MasterProbe, RedisError, RedisNode};
use crate::model::{RedisRole, RedisStatus};

/// What the fake Redis holds; tests read and change it through [`FakeRedis::with`].
#[derive(Clone, Debug)]
pub struct FakeState {
    pub run_id: String,
    pub role: RedisRole,
    /// `host:port` it replicates from, as `REPLICAOF` set it.
    pub master_addr: Option<String>,
    pub link_up: bool,
    pub offset: u64,
    /// Length of the last `CLIENT PAUSE`, until `CLIENT UNPAUSE`.
    pub paused: Option<Duration>,
    /// Every call fails with this while set (the process is gone, or refuses us).
    pub failing: Option<RedisError>,
    /// Every command received, `INFO` included, in order.
    pub commands: Vec<String>,
    /// What a write probe of the master this one replicates from finds (not recorded in
    /// `commands`: it goes to another Redis).
    pub master_writable: bool,
    /// The master does not answer the write probe (paused): it takes the whole timeout.
    pub master_hangs: bool,
    /// The probe of the master fails with this (refused: nothing listens; hung up: a proxy
    /// in front of it accepts for a backend that is gone).
    pub master_fails: Option<RedisError>,
    /// The run_id the master's Redis answers with (`None`: the fake does not say).
    pub master_run_id: Option<String>,
    /// `min-replicas-to-write` as last set (not recorded in `commands`: a setting the
    /// agent keeps in line every cycle, not a role change).
    pub min_replicas: u32,
}

/// Cheap to clone; clones share one state.
#[derive(Clone)]
pub struct FakeRedis {
    state: Arc<Mutex<FakeState>>,
    closed: Arc<tokio::sync::Notify>,
}

impl FakeRedis {
    pub fn master(run_id: &str) -> FakeRedis {
        FakeRedis {
            state: Arc::new(Mutex::new(FakeState {
                run_id: run_id.to_string(),
                role: RedisRole::Master,
                master_addr: None,
                link_up: false,
                offset: 0,
                paused: None,
                failing: None,
                commands: Vec::new(),
                master_writable: true,
                master_hangs: false,
                master_fails: None,
                master_run_id: None,
                min_replicas: 0,
            })),
            closed: Arc::new(tokio::sync::Notify::new()),
        }
    }

    pub fn replica_of(run_id: &str, master_addr: &str) -> FakeRedis {
        let fake = FakeRedis::master(run_id);
        fake.with(|s| {
            s.role = RedisRole::Replica;
            s.master_addr = Some(master_addr.to_string());
            s.link_up = true;
        });
        fake
    }

    fn lock(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn with<T>(&self, change: impl FnOnce(&mut FakeState) -> T) -> T {
        change(&mut self.lock())
    }

    /// The process exits: every call fails as refused, and the held connection closes.
    pub fn exit(&self) {
        self.with(|s| s.failing = Some(RedisError::Refused("connection refused".into())));
        self.closed.notify_one();
    }

    pub fn snapshot(&self) -> FakeState {
        self.lock().clone()
    }

    /// The commands that change something (everything but `INFO`).
    pub fn changes(&self) -> Vec<String> {
        self.lock()
            .commands
            .iter()
            .filter(|c| *c != "INFO")
            .cloned()
            .collect()
    }

    pub fn clear_commands(&self) {
        self.lock().commands.clear();
    }

    fn command(&self, name: String) -> Result<MutexGuard<'_, FakeState>, RedisError> {
        let mut state = self.lock();
        if let Some(e) = &state.failing {
            return Err(e.clone());
        }
        state.commands.push(name);
        Ok(state)
    }
}

impl RedisNode for FakeRedis {
    async fn probe(&self) -> Result<RedisStatus, RedisError> {
        let s = self.command("INFO".into())?;
        Ok(RedisStatus {
            run_id: s.run_id.clone(),
            role: s.role,
            master_addr: s.master_addr.clone(),
            master_link_up: s.role == RedisRole::Replica && s.link_up,
            repl_offset: s.offset,
            keys: 0,
            online_replicas: 0,
        })
    }

    async fn promote(&self) -> Result<(), RedisError> {
        let mut s = self.command("REPLICAOF NO ONE".into())?;
        s.role = RedisRole::Master;
        s.master_addr = None;
        s.link_up = false;
        Ok(())
    }

    async fn replicate_from(&self, host: &str, port: u16) -> Result<(), RedisError> {
        let mut s = self.command(format!("REPLICAOF {host} {port}"))?;
        s.role = RedisRole::Replica;
        s.master_addr = Some(crate::addr::join_host_port(host, port));
        s.link_up = true;
        Ok(())
    }

    async fn demote(&self, host: &str, port: u16) -> Result<(), RedisError> {
        let mut s = self.command(format!(
            "MULTI REPLICAOF {host} {port}; CLIENT KILL TYPE normal; CLIENT KILL TYPE pubsub EXEC"
        ))?;
        s.role = RedisRole::Replica;
        s.master_addr = Some(crate::addr::join_host_port(host, port));
        s.link_up = true;
        Ok(())
    }

    async fn closed(&self) {
        self.closed.notified().await;
    }

    async fn pause_writes(&self, duration: Duration) -> Result<(), RedisError> {
        let mut s = self.command(format!("CLIENT PAUSE {} WRITE", duration.as_millis()))?;
        s.paused = Some(duration);
        Ok(())
    }

    async fn unpause(&self) -> Result<(), RedisError> {
        let mut s = self.command("CLIENT UNPAUSE".into())?;
        s.paused = None;
        Ok(())
    }

    async fn probe_master(
        &self,
        _host: &str,
        _port: u16,
        timeout: Duration,
    ) -> Result<MasterProbe, RedisError> {
        let (hangs, fails) = {
            let s = self.lock();
            (s.master_hangs, s.master_fails.clone())
        };
        if let Some(e) = fails {
            return Err(e);
        }
        if hangs {
            tokio::time::sleep(timeout).await;
            return Ok(MasterProbe {
                run_id: None,
                accepts_writes: false,
            });
        }
        let s = self.lock();
        Ok(MasterProbe {
            run_id: s.master_run_id.clone(),
            accepts_writes: s.master_writable,
        })
    }

    async fn set_min_replicas(&self, count: u32, _max_lag: Duration) -> Result<(), RedisError> {
        let mut s = self.lock();
        if let Some(e) = &s.failing {
            return Err(e.clone());
        }
        s.min_replicas = count;
        Ok(())
    }

    async fn tune_replication(
        &self,
        ping_period: Duration,
        timeout: Duration,
    ) -> Result<(), RedisError> {
        self.command(format!(
            "CONFIG SET repl-ping-replica-period {} repl-timeout {}",
            ping_period.as_secs(),
            timeout.as_secs()
        ))
        .map(drop)
    }
}
