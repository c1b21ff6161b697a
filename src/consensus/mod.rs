//! openraft glue: type config, durable storage and the signed HTTP transport.

pub mod log_store;
pub mod network;
pub mod recovery;
pub mod rejoin;
pub mod state_machine;

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageIOError};

use crate::model::{Command, CommandResponse, NodeId};

pub use log_store::LogStore;
pub use network::{PeerNetwork, RpcKind, ServeRpcError, serve_rpc, serve_rpc_guarded};
pub use state_machine::StateMachineStore;

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Command,
        R = CommandResponse,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;

/// Why the Raft core no longer runs, if it does not: it panicked (its task ended and
/// dropped the metrics sender), hit a storage error, or shut down. Nothing but a restart
/// of the process brings it back, so `/health` reports it.
pub fn core_failure(raft: &Raft) -> Option<String> {
    let metrics = raft.metrics();
    if metrics.has_changed().is_err() {
        return Some("the raft core has stopped (its task ended)".to_string());
    }
    let m = metrics.borrow();
    match (&m.running_state, m.state) {
        (Err(fatal), _) => Some(format!("the raft core has stopped: {fatal}")),
        (Ok(()), openraft::ServerState::Shutdown) => Some("the raft core is shut down".to_string()),
        _ => None,
    }
}

/// Short names for openraft's generic types, instantiated for [`TypeConfig`].
pub mod typ {
    use openraft::BasicNode;

    use super::TypeConfig;
    use crate::model::NodeId;

    pub type Entry = openraft::Entry<TypeConfig>;
    pub type LogId = openraft::LogId<NodeId>;
    pub type Vote = openraft::Vote<NodeId>;
    pub type StoredMembership = openraft::StoredMembership<NodeId, BasicNode>;
    pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, BasicNode>;
    pub type Snapshot = openraft::Snapshot<TypeConfig>;
    pub type StorageError = openraft::StorageError<NodeId>;
    pub type RaftMetrics = openraft::RaftMetrics<NodeId, BasicNode>;

    pub type RaftError<E = openraft::error::Infallible> = openraft::error::RaftError<NodeId, E>;
    pub type RPCError<E = openraft::error::Infallible> =
        openraft::error::RPCError<NodeId, BasicNode, RaftError<E>>;
    pub type ClientWriteError = openraft::error::ClientWriteError<NodeId, BasicNode>;
    pub type ClientWriteResponse = openraft::raft::ClientWriteResponse<TypeConfig>;
    pub type InitializeError = openraft::error::InitializeError<NodeId, BasicNode>;
    pub type InstallSnapshotError = openraft::error::InstallSnapshotError;

    pub type AppendEntriesRequest = openraft::raft::AppendEntriesRequest<TypeConfig>;
    pub type AppendEntriesResponse = openraft::raft::AppendEntriesResponse<NodeId>;
    pub type VoteRequest = openraft::raft::VoteRequest<NodeId>;
    pub type VoteResponse = openraft::raft::VoteResponse<NodeId>;
    pub type InstallSnapshotRequest = openraft::raft::InstallSnapshotRequest<TypeConfig>;
    pub type InstallSnapshotResponse = openraft::raft::InstallSnapshotResponse<NodeId>;
}

/// File name of the single redb database holding log, vote and state machine.
pub const DB_FILE: &str = "raft.redb";

/// Why the Raft storage could not be opened at start-up.
#[derive(Debug, thiserror::Error)]
pub enum StorageOpenError {
    #[error("cannot create storage directory {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{} is locked by another process (is another agent using the same data directory?)",
        path.display()
    )]
    Locked { path: PathBuf },
    #[error("cannot open {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: redb::DatabaseError,
    },
    #[error("cannot read stored Raft state from {}: {source}", path.display())]
    Read { path: PathBuf, source: DbError },
    #[error("storage open task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Open (or create) `dir/raft.redb` and return the log store and state machine sharing it.
pub async fn open_storage(dir: &Path) -> Result<(LogStore, StateMachineStore), StorageOpenError> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || open_blocking(&dir)).await?
}

fn open_blocking(dir: &Path) -> Result<(LogStore, StateMachineStore), StorageOpenError> {
    std::fs::create_dir_all(dir).map_err(|source| StorageOpenError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let path = dir.join(DB_FILE);
    let db = redb::Database::create(&path).map_err(|source| match source {
        redb::DatabaseError::DatabaseAlreadyOpen => StorageOpenError::Locked { path: path.clone() },
        source => StorageOpenError::Open {
            path: path.clone(),
            source,
        },
    })?;
    let read_err = |source| StorageOpenError::Read {
        path: path.clone(),
        source,
    };
    // Creating every table up front lets read transactions assume they exist.
    let txn = db.begin_write().map_err(|e| read_err(e.into()))?;
    log_store::create_tables(&txn).map_err(read_err)?;
    let applied = state_machine::create_tables_and_load(&txn).map_err(read_err)?;
    txn.commit().map_err(|e| read_err(e.into()))?;

    let db = Arc::new(db);
    Ok((
        LogStore::new(db.clone()),
        StateMachineStore::new(db, applied),
    ))
}

/// A failure inside a redb transaction or while (de)serializing what it stores.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("redb: {0}")]
    Redb(#[from] redb::Error),
    #[error("stored data does not decode: {0}")]
    Codec(#[from] serde_json::Error),
    #[error("storage task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

macro_rules! db_error_from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for DbError {
            fn from(e: $t) -> Self {
                DbError::Redb(e.into())
            }
        }
    )*};
}
db_error_from_redb!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

impl DbError {
    fn into_storage(self, subject: ErrorSubject<NodeId>, verb: ErrorVerb) -> typ::StorageError {
        StorageIOError::new(subject, verb, AnyError::new(&self)).into()
    }
}

/// Run a synchronous redb job off the async workers; redb commits block on fsync.
async fn blocking<T, F>(job: F) -> Result<T, DbError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, DbError> + Send + 'static,
{
    tokio::task::spawn_blocking(job).await?
}
