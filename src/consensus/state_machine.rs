//! The replicated ClusterState, persisted in redb.
//!
//! Every `apply` batch writes the new state, last applied log id and last
//! membership in one transaction before returning, so a restart resumes from
//! there instead of replaying the whole log. Snapshots (meta + JSON state) are
//! stored in the same table.

use std::io::Cursor;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::RaftStateMachine;
use openraft::{
    EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder, StorageError,
};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::typ::{Entry, LogId, Snapshot, SnapshotMeta, StoredMembership};
use super::{DbError, TypeConfig, blocking};
use crate::model::{ClusterState, CommandResponse, NodeId};

const SM: TableDefinition<&str, &[u8]> = TableDefinition::new("state_machine");

const KEY_APPLIED: &str = "applied";
const KEY_SNAPSHOT_META: &str = "snapshot_meta";
const KEY_SNAPSHOT_DATA: &str = "snapshot_data";

/// Everything that must change atomically when entries are applied.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Applied {
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    state: ClusterState,
}

pub(crate) fn create_tables_and_load(txn: &WriteTransaction) -> Result<Applied, DbError> {
    let table = txn.open_table(SM)?;
    let applied = match table.get(KEY_APPLIED)? {
        Some(v) => serde_json::from_slice(v.value())?,
        None => Applied::default(),
    };
    Ok(applied)
}

/// The state machine; cheap to clone, every clone shares state and database.
#[derive(Clone)]
pub struct StateMachineStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Arc<Database>,
    applied: Mutex<Applied>,
    published: watch::Sender<ClusterState>,
}

impl StateMachineStore {
    pub(crate) fn new(db: Arc<Database>, applied: Applied) -> Self {
        let (published, _) = watch::channel(applied.state.clone());
        StateMachineStore {
            inner: Arc::new(Inner {
                db,
                applied: Mutex::new(applied),
                published,
            }),
        }
    }

    /// A receiver that always holds the latest applied state.
    pub fn subscribe(&self) -> watch::Receiver<ClusterState> {
        self.inner.published.subscribe()
    }

    /// The latest applied state.
    pub fn current(&self) -> ClusterState {
        self.inner.published.borrow().clone()
    }

    fn applied(&self) -> MutexGuard<'_, Applied> {
        // The guarded value is only ever replaced whole, so a poisoned lock still holds
        // a consistent value.
        self.inner
            .applied
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Make `next` the in-memory state and tell subscribers; call only once it is on disk.
    fn publish(&self, next: Applied) {
        let state = next.state.clone();
        *self.applied() = next;
        self.inner.published.send_replace(state);
    }

    fn snapshot_of(applied: &Applied) -> Result<(SnapshotMeta, Vec<u8>), DbError> {
        let data = serde_json::to_vec(&applied.state)?;
        // The state is a deterministic function of the log, so the last log id names it.
        let snapshot_id = match &applied.last_applied {
            Some(id) => format!(
                "{}-{}-{}",
                id.leader_id.term, id.leader_id.node_id, id.index
            ),
            None => "empty".to_string(),
        };
        let meta = SnapshotMeta {
            last_log_id: applied.last_applied,
            last_membership: applied.last_membership.clone(),
            snapshot_id,
        };
        Ok((meta, data))
    }
}

fn write_snapshot(txn: &WriteTransaction, meta: &SnapshotMeta, data: &[u8]) -> Result<(), DbError> {
    let meta_bytes = serde_json::to_vec(meta)?;
    let mut table = txn.open_table(SM)?;
    table.insert(KEY_SNAPSHOT_META, meta_bytes.as_slice())?;
    table.insert(KEY_SNAPSHOT_DATA, data)?;
    Ok(())
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError<NodeId>> {
        let applied = self.applied().clone();
        let (meta, data) = Self::snapshot_of(&applied)
            .map_err(|e| e.into_storage(ErrorSubject::Snapshot(None), ErrorVerb::Read))?;
        let db = self.inner.db.clone();
        let (stored_meta, stored_data) = (meta.clone(), data.clone());
        blocking(move || {
            let txn = db.begin_write()?;
            let newer_stored = {
                let table = txn.open_table(SM)?;
                match table.get(KEY_SNAPSHOT_META)? {
                    Some(v) => {
                        let current: SnapshotMeta = serde_json::from_slice(v.value())?;
                        current.last_log_id > stored_meta.last_log_id
                    }
                    None => false,
                }
            };
            // A snapshot installed meanwhile may be newer than this one; keep it.
            if !newer_stored {
                write_snapshot(&txn, &stored_meta, &stored_data)?;
            }
            txn.commit()?;
            Ok(())
        })
        .await
        .map_err(|e| {
            e.into_storage(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Write,
            )
        })?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership), StorageError<NodeId>> {
        let applied = self.applied();
        Ok((applied.last_applied, applied.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResponse>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // Work on a copy so a failed write leaves memory matching the disk.
        let mut next = self.applied().clone();
        let mut responses = Vec::new();
        for entry in entries {
            next.last_applied = Some(entry.log_id);
            let response = match &entry.payload {
                EntryPayload::Blank => CommandResponse::Applied,
                EntryPayload::Normal(command) => next.state.apply(command),
                EntryPayload::Membership(membership) => {
                    next.last_membership =
                        StoredMembership::new(Some(entry.log_id), membership.clone());
                    CommandResponse::Applied
                }
            };
            responses.push(response);
        }
        let Some(last) = next.last_applied else {
            return Ok(responses);
        };
        let bytes = serde_json::to_vec(&next).map_err(|e| {
            DbError::from(e).into_storage(ErrorSubject::Apply(last), ErrorVerb::Write)
        })?;
        let db = self.inner.db.clone();
        blocking(move || {
            let txn = db.begin_write()?;
            txn.open_table(SM)?.insert(KEY_APPLIED, bytes.as_slice())?;
            txn.commit()?;
            Ok(())
        })
        .await
        .map_err(|e| e.into_storage(ErrorSubject::Apply(last), ErrorVerb::Write))?;
        self.publish(next);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let subject = || ErrorSubject::Snapshot(Some(meta.signature()));
        let data = snapshot.into_inner();
        let state: ClusterState = serde_json::from_slice(&data)
            .map_err(|e| DbError::from(e).into_storage(subject(), ErrorVerb::Read))?;
        let next = Applied {
            last_applied: meta.last_log_id,
            last_membership: meta.last_membership.clone(),
            state,
        };
        let applied_bytes = serde_json::to_vec(&next)
            .map_err(|e| DbError::from(e).into_storage(subject(), ErrorVerb::Write))?;
        let db = self.inner.db.clone();
        let stored_meta = meta.clone();
        blocking(move || {
            // State and snapshot replace the old ones together.
            let txn = db.begin_write()?;
            write_snapshot(&txn, &stored_meta, &data)?;
            txn.open_table(SM)?
                .insert(KEY_APPLIED, applied_bytes.as_slice())?;
            txn.commit()?;
            Ok(())
        })
        .await
        .map_err(|e| e.into_storage(subject(), ErrorVerb::Write))?;
        self.publish(next);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError<NodeId>> {
        let db = self.inner.db.clone();
        blocking(move || {
            let txn = db.begin_read()?;
            let table = txn.open_table(SM)?;
            let (Some(meta), Some(data)) =
                (table.get(KEY_SNAPSHOT_META)?, table.get(KEY_SNAPSHOT_DATA)?)
            else {
                return Ok(None);
            };
            Ok(Some(Snapshot {
                meta: serde_json::from_slice(meta.value())?,
                snapshot: Box::new(Cursor::new(data.value().to_vec())),
            }))
        })
        .await
        .map_err(|e| e.into_storage(ErrorSubject::Snapshot(None), ErrorVerb::Read))
    }
}
