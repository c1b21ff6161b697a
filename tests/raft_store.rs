//! Storage conformance (openraft's own suite) and durability across a restart.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{BasicNode, LogId, ServerState, StorageError, StorageIOError};
use redis_orchestrator::consensus::{
    LogStore, PeerNetwork, Raft, StateMachineStore, StorageOpenError, TypeConfig, open_storage,
};
use redis_orchestrator::model::{Command, CommandResponse, NodeId};
use tempfile::TempDir;

struct RedbBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for RedbBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<NodeId>> {
        let dir = tempfile::tempdir().map_err(|e| StorageIOError::write(&e))?;
        let (log, sm) = open_storage(dir.path())
            .await
            .map_err(|e| StorageIOError::write(&e))?;
        Ok((dir, log, sm))
    }
}

/// The suite builds its own tokio runtimes, so it must not run inside one.
#[test]
fn openraft_storage_suite() {
    Suite::test_all(RedbBuilder).expect("storage suite");
}

#[tokio::test]
async fn second_open_of_the_same_dir_reports_the_lock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _held = open_storage(dir.path()).await.expect("first open");
    let err = match open_storage(dir.path()).await {
        Err(e) => e,
        Ok(_) => panic!("second open must fail while the first is held"),
    };
    assert!(matches!(err, StorageOpenError::Locked { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("raft.redb") && message.contains("locked"),
        "{message}"
    );
}

#[tokio::test]
async fn unusable_dir_names_the_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").expect("write file");
    let err = match open_storage(&file.join("raft")).await {
        Err(e) => e,
        Ok(_) => panic!("a directory under a regular file cannot be created"),
    };
    assert!(matches!(err, StorageOpenError::CreateDir { .. }), "{err:?}");
    assert!(err.to_string().contains("not-a-dir"), "{err}");
}

/// Open storage, waiting out a previous in-process Raft: `Raft::shutdown` joins the core
/// task only, and its state machine worker drops its handle on the database a moment later.
async fn open_when_released(dir: &TempDir) -> (LogStore, StateMachineStore) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        match open_storage(dir.path()).await {
            Err(StorageOpenError::Locked { .. }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            opened => return opened.expect("open storage"),
        }
    }
}

async fn start_raft(log: &LogStore, sm: &StateMachineStore) -> Raft {
    let net = PeerNetwork::new(
        redis_orchestrator::client::SignedClient::new(None, None).expect("http client"),
    );
    Raft::new(
        1,
        common::raft::fast_config(50, 150),
        net,
        log.clone(),
        sm.clone(),
    )
    .await
    .expect("raft")
}

/// A fresh single-node cluster that has elected itself.
async fn start_initialized(dir: &TempDir) -> (Raft, LogStore, StateMachineStore) {
    let (log, sm) = open_when_released(dir).await;
    let raft = start_raft(&log, &sm).await;
    raft.initialize(BTreeMap::from([(1, BasicNode::new(ADDR))]))
        .await
        .expect("initialize");
    wait_leader(&raft).await;
    (raft, log, sm)
}

const ADDR: &str = "127.0.0.1:1";

async fn wait_leader(raft: &Raft) {
    raft.wait(Some(Duration::from_secs(5)))
        .state(ServerState::Leader, "single node becomes leader")
        .await
        .expect("leader");
}

/// Write, expect `Applied`, and return the entry's log id (metrics may lag behind it).
async fn write_applied(raft: &Raft, command: Command) -> LogId<NodeId> {
    let written = raft.client_write(command).await.expect("write");
    assert_eq!(written.data, CommandResponse::Applied);
    written.log_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_and_vote_survive_a_restart() {
    common::raft::install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");

    let (raft, mut log, sm) = start_initialized(&dir).await;
    write_applied(&raft, common::raft::register(1, ADDR)).await;
    let last = write_applied(&raft, common::raft::set_master(1, 1)).await;
    assert_eq!(sm.current().epoch, 1);
    let vote_before = log.read_vote().await.expect("read vote").expect("a vote");
    raft.shutdown().await.expect("shutdown");
    drop((raft, log, sm));

    let (mut log, mut sm) = open_when_released(&dir).await;
    let state = sm.current();
    assert_eq!(state.epoch, 1);
    assert_eq!(state.master, Some(1));
    assert_eq!(
        state.master_member().map(|m| m.name.as_str()),
        Some("node-1")
    );
    assert_eq!(*sm.subscribe().borrow(), state);
    assert_eq!(sm.applied_state().await.expect("applied").0, Some(last));
    assert_eq!(log.read_vote().await.expect("read vote"), Some(vote_before));
    assert_eq!(
        log.get_log_state().await.expect("log state").last_log_id,
        Some(last)
    );

    let raft = start_raft(&log, &sm).await;
    wait_leader(&raft).await;
    assert!(raft.metrics().borrow().current_term >= vote_before.leader_id().term);
    write_applied(&raft, common::raft::set_master(1, 2)).await;
    assert_eq!(sm.current().epoch, 2);
    let stale = raft
        .client_write(common::raft::set_master(1, 2))
        .await
        .expect("write");
    assert!(matches!(stale.data, CommandResponse::Rejected(_)));
    raft.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_and_purge_survive_a_restart() {
    common::raft::install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");

    let (raft, log, sm) = start_initialized(&dir).await;
    write_applied(&raft, common::raft::register(1, ADDR)).await;
    let last = write_applied(&raft, common::raft::set_master(1, 1)).await;
    raft.trigger().snapshot().await.expect("trigger snapshot");
    raft.wait(Some(Duration::from_secs(5)))
        .snapshot(last, "snapshot built")
        .await
        .expect("snapshot");
    raft.trigger()
        .purge_log(last.index)
        .await
        .expect("trigger purge");
    raft.wait(Some(Duration::from_secs(5)))
        .purged(Some(last), "log purged")
        .await
        .expect("purged");
    raft.shutdown().await.expect("shutdown");
    drop((raft, log, sm));

    let (mut log, mut sm) = open_when_released(&dir).await;
    assert_eq!(sm.current().epoch, 1);
    let log_state = log.get_log_state().await.expect("log state");
    assert_eq!(log_state.last_purged_log_id, Some(last));
    assert_eq!(log_state.last_log_id, Some(last));
    let snapshot = sm
        .get_current_snapshot()
        .await
        .expect("read snapshot")
        .expect("a snapshot");
    assert_eq!(snapshot.meta.last_log_id, Some(last));

    let raft = start_raft(&log, &sm).await;
    wait_leader(&raft).await;
    write_applied(&raft, common::raft::set_master(1, 2)).await;
    assert_eq!(sm.current().epoch, 2);
    raft.shutdown().await.expect("shutdown");
}
