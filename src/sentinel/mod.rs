//! Sentinel-compatible endpoint (`--sentinel-bind`, usually port 26379), so stock
//! Redis clients find the committed master across sites the way they find it with
//! Redis Sentinel.
//!
//! The endpoint only reports; it never decides. Its input is a [`SentinelView`] the
//! agent publishes on a `tokio::sync::watch` channel (see [`view_from_state`]), and
//! every change of the committed master is published to subscribers as
//! `+switch-master <name> <old-ip> <old-port> <new-ip> <new-port>`.
//!
//! Layout: [`resp`] encodes replies (RESP2 and RESP3), `decode` splits the input with
//! the redis crate's parser, [`command`] is the command set as a pure function, and
//! `server` runs the sockets.

pub mod command;
mod decode;
mod glob;
pub mod resp;
mod server;

use std::fmt;
use std::io;
use std::time::Duration;

pub use server::serve;

use crate::addr::split_host_port;
use crate::model::{ClusterState, Member, MemberKind};

/// Port assumed for a `redis_addr` written without one.
const DEFAULT_REDIS_PORT: u16 = 6379;

/// A Redis server as clients should reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Member name, for logs; Sentinel itself names instances by address.
    pub name: String,
    pub host: String,
    pub port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaView {
    pub endpoint: Endpoint,
    /// Its replication link to the master is up (`master-link-status`).
    pub link_up: bool,
    /// False marks it `s_down`: clients skip it when picking a replica.
    pub healthy: bool,
    /// Replication offset (`slave-repl-offset`), when known.
    pub offset: Option<u64>,
}

/// What the endpoint reports: plain data, fed by the agent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SentinelView {
    /// The committed epoch (`config-epoch`).
    pub epoch: u64,
    /// The committed master; `None` before the first one is chosen.
    pub master: Option<Endpoint>,
    pub replicas: Vec<ReplicaView>,
    /// Votes needed to commit a master change (`quorum`).
    pub quorum: u32,
    /// This agent cannot vouch that its committed state is current (it lost contact
    /// with a quorum). The master is then flagged `s_down,o_down` and
    /// `get-master-addr-by-name` answers null, so clients ask another endpoint
    /// instead of following a possibly deposed master.
    pub stale: bool,
}

/// The view of the replicated state alone. Replica health is not part of it, so
/// every replica is reported healthy with its link up; the agent may refine that
/// from reports.
pub fn view_from_state(state: &ClusterState) -> SentinelView {
    let master = state.master_member().and_then(endpoint_of);
    let mut replicas: Vec<ReplicaView> = state
        .members
        .iter()
        .filter(|(id, member)| Some(**id) != state.master && member.kind == MemberKind::Data)
        .filter_map(|(_, member)| endpoint_of(member))
        .map(|endpoint| ReplicaView {
            endpoint,
            link_up: true,
            healthy: true,
            offset: None,
        })
        .collect();
    replicas.sort_by(|a, b| a.endpoint.name.cmp(&b.endpoint.name));
    // Every registered member votes (witness included), so a change needs a majority of them.
    let quorum = u32::try_from(state.members.len() / 2 + 1).unwrap_or(u32::MAX);
    SentinelView {
        epoch: state.epoch,
        master,
        replicas,
        quorum,
        stale: false,
    }
}

fn endpoint_of(member: &Member) -> Option<Endpoint> {
    let addr = member.redis_addr.as_deref()?;
    let (host, port) = split_host_port(addr, DEFAULT_REDIS_PORT).ok()?;
    Some(Endpoint {
        name: member.name.clone(),
        host,
        port,
    })
}

/// Settings of the endpoint.
#[derive(Clone)]
pub struct SentinelConfig {
    /// The name clients ask for (`--sentinel-master-name`).
    pub master_name: String,
    /// Required with `AUTH`/`HELLO ... AUTH` when set: the Redis password, so clients
    /// use one secret for Sentinel and Redis.
    pub password: Option<String>,
}

// Hand-written so the password never reaches a log line.
impl fmt::Debug for SentinelConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentinelConfig")
            .field("master_name", &self.master_name)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Why one client connection ended early. Never fatal to the endpoint.
#[derive(Debug, thiserror::Error)]
pub enum SentinelError {
    // Sent to the client after "ERR " before closing, as Redis words it.
    #[error("Protocol error: {0}")]
    Protocol(String),
    #[error("Protocol error: request larger than {0} bytes")]
    RequestTooLarge(usize),
    #[error("client did not read its replies within {0:?}")]
    WriteTimeout(Duration),
    #[error(transparent)]
    Io(#[from] io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, kind: MemberKind, redis_addr: Option<&str>) -> Member {
        Member {
            name: name.to_string(),
            site: format!("site-{name}"),
            kind,
            redis_addr: redis_addr.map(str::to_string),
            api_addr: format!("{name}:8080"),
            raft_addr: format!("{name}:7000"),
            priority: 100,
            no_promote: false,
        }
    }

    fn state() -> ClusterState {
        let mut state = ClusterState::default();
        for (id, m) in [
            (1, member("b", MemberKind::Data, Some("10.0.0.2:6380"))),
            (2, member("a", MemberKind::Data, Some("[fd00::1]:6379"))),
            (3, member("w", MemberKind::Witness, None)),
            (4, member("c", MemberKind::Data, Some("redis-c.example"))),
        ] {
            state.members.insert(id, m);
        }
        state
    }

    #[test]
    fn before_any_master_all_data_members_are_replicas() {
        let view = view_from_state(&state());
        assert_eq!(view.master, None);
        assert_eq!(view.epoch, 0);
        let names: Vec<&str> = view
            .replicas
            .iter()
            .map(|r| r.endpoint.name.as_str())
            .collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(view.quorum, 3);
    }

    #[test]
    fn the_committed_master_is_reported_from_its_redis_addr() {
        // Set directly rather than through a command: only the committed result matters here.
        let mut state = state();
        state.master = Some(2);
        state.epoch = 1;
        let view = view_from_state(&state);
        assert_eq!(view.epoch, 1);
        assert_eq!(
            view.master,
            Some(Endpoint {
                name: "a".into(),
                host: "fd00::1".into(),
                port: 6379
            })
        );
        assert_eq!(view.replicas.len(), 2);
        let c = &view.replicas[1];
        assert_eq!(
            (c.endpoint.host.as_str(), c.endpoint.port),
            ("redis-c.example", 6379)
        );
        assert!(c.healthy && c.link_up && c.offset.is_none());
    }

    #[test]
    fn the_password_stays_out_of_debug_output() {
        let config = SentinelConfig {
            master_name: "mymaster".into(),
            password: Some("hunter2".into()),
        };
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
