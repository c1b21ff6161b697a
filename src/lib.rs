//! redis-orchestrator: consensus-safe Redis failover across sites.
//!
//! Architecture in one pass:
//! - [`consensus`] runs one Raft group over every `--raft-peers` entry (witness included);
//!   the replicated [`model::ClusterState`] names the Redis master and its epoch.
//! - Every agent probes its Redis and sends a [`model::NodeReport`] to the Raft leader
//!   (the coordinator), which runs the pure [`decide::decide`] and commits its commands.
//! - Every data agent runs [`decide::local::plan_local`] on each committed change and probe,
//!   and applies the plan to its Redis through [`redis::RedisNode`]; it fences its Redis
//!   when it loses contact with a quorum for `--lease`.
//! - In Kubernetes, [`kube`] is the only module that calls the API: it labels the own pod
//!   `redis-role=master|replica` (routing the `redis` and `redis-readonly` Services), keeps the
//!   `redis-master` EndpointSlice on the committed master, and finds a LoadBalancer address.

#![forbid(unsafe_code)]

pub mod addr;
pub mod agent;
pub mod auth;
pub mod cli;
pub mod client;
pub mod config;
pub mod consensus;
pub mod decide;
pub mod demo;
pub mod duration;
pub mod http;
pub mod kube;
pub mod metrics;
pub mod model;
pub mod redis;
pub mod sentinel;
pub mod tls;
pub mod wire;

/// The guarded data of a poisoned mutex: every lock here guards values that no panic can
/// leave half-updated (maps and sets replaced or inserted into whole).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
