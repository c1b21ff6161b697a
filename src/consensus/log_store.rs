//! redb-backed Raft log and vote.
//!
//! Every write is one redb write transaction committed with the default
//! `Durability::Immediate`, so it is on disk when the call returns.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    ErrorSubject, ErrorVerb, LogState, OptionalSend, RaftLogId, RaftLogReader, StorageError,
};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::typ::{Entry, LogId, Vote};
use super::{DbError, TypeConfig, blocking};
use crate::model::NodeId;

/// Log index -> JSON-encoded entry.
const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
/// Vote, committed and last purged log id, each JSON-encoded.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_log_meta");

const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_LAST_PURGED: &str = "last_purged";

pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<(), DbError> {
    txn.open_table(LOGS)?;
    txn.open_table(META)?;
    Ok(())
}

/// Raft log store; cheap to clone, every clone shares the database.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    pub(crate) fn new(db: Arc<Database>) -> Self {
        LogStore { db }
    }

    async fn read_meta<T>(&self, key: &'static str) -> Result<Option<T>, DbError>
    where
        T: DeserializeOwned + Send + 'static,
    {
        let db = self.db.clone();
        blocking(move || {
            let txn = db.begin_read()?;
            let table = txn.open_table(META)?;
            match table.get(key)? {
                Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
                None => Ok(None),
            }
        })
        .await
    }

    async fn write_meta<T>(&self, key: &'static str, value: &T) -> Result<(), DbError>
    where
        T: Serialize,
    {
        let bytes = serde_json::to_vec(value)?;
        let db = self.db.clone();
        blocking(move || {
            let txn = db.begin_write()?;
            txn.open_table(META)?.insert(key, bytes.as_slice())?;
            txn.commit()?;
            Ok(())
        })
        .await
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError<NodeId>> {
        // The job must be 'static, so copy the bounds out of the borrowed range.
        let bounds: (Bound<u64>, Bound<u64>) =
            (range.start_bound().cloned(), range.end_bound().cloned());
        let db = self.db.clone();
        blocking(move || {
            let txn = db.begin_read()?;
            let table = txn.open_table(LOGS)?;
            let mut entries = Vec::new();
            for item in table.range(bounds)? {
                let (_, v) = item?;
                entries.push(serde_json::from_slice(v.value())?);
            }
            Ok(entries)
        })
        .await
        .map_err(|e| e.into_storage(ErrorSubject::Logs, ErrorVerb::Read))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let db = self.db.clone();
        blocking(move || {
            let txn = db.begin_read()?;
            let meta = txn.open_table(META)?;
            let last_purged_log_id: Option<LogId> = match meta.get(KEY_LAST_PURGED)? {
                Some(v) => Some(serde_json::from_slice(v.value())?),
                None => None,
            };
            let logs = txn.open_table(LOGS)?;
            let last_log_id = match logs.last()? {
                Some((_, v)) => {
                    let entry: Entry = serde_json::from_slice(v.value())?;
                    Some(*entry.get_log_id())
                }
                None => last_purged_log_id,
            };
            Ok(LogState {
                last_purged_log_id,
                last_log_id,
            })
        })
        .await
        .map_err(|e| e.into_storage(ErrorSubject::Logs, ErrorVerb::Read))
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError<NodeId>> {
        self.write_meta(KEY_VOTE, vote)
            .await
            .map_err(|e| e.into_storage(ErrorSubject::Vote, ErrorVerb::Write))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError<NodeId>> {
        self.read_meta(KEY_VOTE)
            .await
            .map_err(|e| e.into_storage(ErrorSubject::Vote, ErrorVerb::Read))
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId>,
    ) -> Result<(), StorageError<NodeId>> {
        self.write_meta(KEY_COMMITTED, &committed)
            .await
            .map_err(|e| e.into_storage(ErrorSubject::Store, ErrorVerb::Write))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError<NodeId>> {
        // The stored value is itself an Option: `null` once committed was reset.
        self.read_meta::<Option<LogId>>(KEY_COMMITTED)
            .await
            .map(Option::flatten)
            .map_err(|e| e.into_storage(ErrorSubject::Store, ErrorVerb::Read))
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let encoded = entries
            .into_iter()
            .map(|e| Ok((e.get_log_id().index, serde_json::to_vec(&e)?)))
            .collect::<Result<Vec<_>, DbError>>();
        let db = self.db.clone();
        let result = match encoded {
            Ok(encoded) => {
                blocking(move || {
                    let txn = db.begin_write()?;
                    {
                        let mut table = txn.open_table(LOGS)?;
                        for (index, bytes) in &encoded {
                            table.insert(index, bytes.as_slice())?;
                        }
                    }
                    txn.commit()?;
                    Ok(())
                })
                .await
            }
            Err(e) => Err(e),
        };
        // The commit above was durable, so the flush can be reported now.
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(e.into_storage(ErrorSubject::Logs, ErrorVerb::Write))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError<NodeId>> {
        let db = self.db.clone();
        blocking(move || {
            let txn = db.begin_write()?;
            txn.open_table(LOGS)?
                .retain_in(log_id.index.., |_, _| false)?;
            txn.commit()?;
            Ok(())
        })
        .await
        .map_err(|e| e.into_storage(ErrorSubject::Log(log_id), ErrorVerb::Delete))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError<NodeId>> {
        let db = self.db.clone();
        blocking(move || {
            let purged = serde_json::to_vec(&log_id)?;
            // One transaction: the purge marker and the deletion land together.
            let txn = db.begin_write()?;
            txn.open_table(META)?
                .insert(KEY_LAST_PURGED, purged.as_slice())?;
            txn.open_table(LOGS)?
                .retain_in(..=log_id.index, |_, _| false)?;
            txn.commit()?;
            Ok(())
        })
        .await
        .map_err(|e| e.into_storage(ErrorSubject::Log(log_id), ErrorVerb::Delete))
    }
}
