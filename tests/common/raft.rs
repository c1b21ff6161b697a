//! Helpers shared by the consensus integration tests.
// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use openraft::Config;
use redis_orchestrator::model::{Command, Member, MemberKind, NodeId};

/// reqwest is built without a crypto provider; install ring once per test binary.
pub fn install_crypto() {
    // Err only means another test installed it already.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Timeouts small enough for fast tests, large enough for a debug build that fsyncs.
pub fn fast_config(heartbeat_ms: u64, election_min_ms: u64) -> Arc<Config> {
    let config = Config {
        cluster_name: "test".to_string(),
        heartbeat_interval: heartbeat_ms,
        election_timeout_min: election_min_ms,
        election_timeout_max: election_min_ms * 2,
        ..Default::default()
    };
    Arc::new(config.validate().expect("valid raft config"))
}

pub fn data_member(id: NodeId, raft_addr: &str) -> Member {
    Member {
        name: format!("node-{id}"),
        site: format!("site-{id}"),
        kind: MemberKind::Data,
        redis_addr: Some(format!("10.0.0.{id}:6379")),
        api_addr: format!("10.0.0.{id}:8080"),
        raft_addr: raft_addr.to_string(),
        priority: 1,
        no_promote: false,
        sentinel_addr: None,
    }
}

pub fn register(id: NodeId, raft_addr: &str) -> Command {
    Command::Register {
        id,
        member: data_member(id, raft_addr),
    }
}

pub fn set_master(node: NodeId, epoch: u64) -> Command {
    Command::SetMaster {
        node,
        epoch,
        run_id: format!("run-{epoch}"),
        reason: "test".to_string(),
        at_unix_ms: 0,
        candidates: Vec::new(),
    }
}

/// Poll `check` every 20 ms until it returns `Some`, or panic after `limit`.
pub async fn eventually<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
