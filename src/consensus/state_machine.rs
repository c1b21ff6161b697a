//! The replicated ClusterState, persisted in redb.
