//! redb-backed Raft log and vote.
