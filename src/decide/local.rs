//! What a data agent does to its own Redis: a pure plan from the committed
//! state, the local probe and how recently a quorum-holding coordinator confirmed contact.

use super::lease::is_isolated;
use crate::addr::{RedisAddr, same_redis_addr};
use crate::model::{
    ClusterState, MemberKind, Millis, NodeId, RedisHealth, RedisRole, RedisStatus, Switchover,
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocalAction {
    /// `REPLICAOF NO ONE`
    Promote,
    /// `REPLICAOF host port` on a replica that follows the wrong master (or none). Its
    /// clients knew it as a read-only replica already, so they keep their connections.
    ReplicateFrom { host: String, port: u16 },
    /// `REPLICAOF host port` on a master, with its normal and pubsub clients closed in the
    /// same transaction (as Sentinel does), so that every client reconnects and finds the
    /// new master. One transaction rather than two actions: the probe that follows cannot
    /// tell whether clients were closed, so a kill that failed after the role change would
    /// never be retried.
    Demote { host: String, port: u16 },
    /// `CLIENT PAUSE <ms> WRITE` (renewed every cycle while isolated)
    PauseWrites,
    /// `CLIENT UNPAUSE`
    Unpause,
    /// `REPLICAOF 127.0.0.1 0` on a replica: it stops following a master whose process is
    /// gone or was replaced, so it cannot full-resync that process's (possibly empty) data.
    /// It stays a read-only replica with its data and replication id, ready to be promoted
    /// or to follow a master that is the committed process again.
    Detach,
}

/// Where a detached replica points: port 0 is refused at once, so its Redis never syncs.
pub const DETACHED_HOST: &str = "127.0.0.1";
pub const DETACHED_PORT: u16 = 0;

/// What a replica's agent last found at the committed master's Redis address (it holds a
/// connection there for the write probe).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum MasterFound {
    /// Not probed, or no answer in time (paused, partitioned): nothing is known.
    #[default]
    Unknown,
    /// Connection refused (no process listens there), or accepted and closed before Redis
    /// answered (a proxy or relay in front of it whose backend is gone).
    Gone,
    /// A Redis answered, with this run_id.
    Process(String),
}

#[derive(Clone, Debug)]
pub struct LocalView<'a> {
    pub self_id: NodeId,
    pub state: &'a ClusterState,
    pub redis: &'a RedisHealth,
    /// Time since the last confirmed contact with a quorum-holding coordinator; `None` if never.
    pub contact_age: Option<Millis>,
    /// Whether this agent may have left its Redis paused.
    pub fenced: bool,
    pub lease: Millis,
    /// What the committed master's Redis answered to this agent, when it is another node.
    pub master_found: &'a MasterFound,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalPlan {
    pub actions: Vec<LocalAction>,
    pub reason: String,
}

/// Plan the next actions on the local Redis. Idempotent: when Redis already matches the
/// committed state the plan is empty (apart from renewing a fence), so it can run every probe.
pub fn plan_local(view: &LocalView<'_>) -> LocalPlan {
    let status = match view.redis {
        RedisHealth::Up(status) => status,
        RedisHealth::Down { .. } => return LocalPlan::new(Vec::new(), "local redis down"),
    };

    // Without recent quorum contact another node may already have been elected:
    // a master must stop taking writes before the coordinator's down_after runs out.
    if is_isolated(view.contact_age, view.lease) {
        let since = view
            .contact_age
            .map_or_else(|| "ever".to_string(), |age| format!("for {} ms", age.0));
        return match status.role {
            RedisRole::Master => LocalPlan::new(
                vec![LocalAction::PauseWrites],
                format!("no confirmed quorum contact {since}: fencing writes"),
            ),
            RedisRole::Replica => LocalPlan::new(
                Vec::new(),
                format!("no confirmed quorum contact {since}; a replica has nothing to fence"),
            ),
        };
    }

    if view.state.paused {
        return plan_paused(view, status);
    }
    if let Some(plan) = view
        .state
        .switchover
        .as_ref()
        .and_then(|sw| plan_switchover_role(view, status, sw))
    {
        return plan;
    }
    match view.state.master {
        None if view.fenced => LocalPlan::new(
            vec![LocalAction::Unpause],
            "no master elected yet; quorum contact is back, lifting the fence",
        ),
        None => LocalPlan::new(Vec::new(), "no master elected yet"),
        Some(master) if master == view.self_id => plan_as_master(view, status),
        Some(master) => plan_as_replica(view, status, master),
    }
}

/// `min-replicas-to-write` the local Redis should have now; `None` unless it is a master.
///
/// A master that Redis itself stops from taking writes once its replicas are gone is what
/// covers the moments the agent cannot act: a Redis that was stopped (SIGSTOP, a long
/// stall) while a failover was committed resumes with its replica gone, and refuses the
/// writes queued on its sockets before its agent can demote it. So a master keeps 1 while
/// it has a replica online, and drops to 0 only while it is the committed, quorum-confirmed
/// master without any (a lone master still takes writes; the lease fences it if isolated).
pub fn min_replicas_to_write(view: &LocalView<'_>) -> Option<u32> {
    let status = view.redis.status()?;
    if status.role != RedisRole::Master {
        return None;
    }
    let confirmed = view.state.master == Some(view.self_id)
        && view.state.master_run_id.as_deref() == Some(status.run_id.as_str())
        && !is_isolated(view.contact_age, view.lease);
    Some(if confirmed && status.online_replicas == 0 {
        0
    } else {
        1
    })
}

impl LocalPlan {
    fn new(actions: Vec<LocalAction>, reason: impl Into<String>) -> LocalPlan {
        LocalPlan {
            actions,
            reason: reason.into(),
        }
    }
}

/// Maintenance pause: only lift a fence from the committed master itself; change no role.
fn plan_paused(view: &LocalView<'_>, status: &RedisStatus) -> LocalPlan {
    let is_committed_master = view.state.master == Some(view.self_id)
        && status.role == RedisRole::Master
        && view.state.master_run_id.as_deref() == Some(status.run_id.as_str());
    if is_committed_master && view.fenced {
        return LocalPlan::new(
            vec![LocalAction::Unpause],
            "paused for maintenance; quorum contact is back, lifting the fence on the master",
        );
    }
    LocalPlan::new(Vec::new(), "paused for maintenance: only reporting")
}

/// During a switchover the master pauses its writes (renewed every cycle) so its offset
/// is final, and the target stays the replica it is until the coordinator commits it;
/// everyone else reconciles as usual (`None`).
fn plan_switchover_role(
    view: &LocalView<'_>,
    status: &RedisStatus,
    sw: &Switchover,
) -> Option<LocalPlan> {
    let target = view.state.member_name(sw.to);
    if sw.to == view.self_id {
        let from = view.state.member_name(sw.from);
        return Some(LocalPlan::new(
            Vec::new(),
            format!("switchover: catching up with {from} to take over"),
        ));
    }
    if sw.from != view.self_id || status.role != RedisRole::Master {
        return None;
    }
    Some(LocalPlan::new(
        vec![LocalAction::PauseWrites],
        format!("switchover: writes paused while {target} catches up"),
    ))
}

/// Append `Unpause` when a fence may still hold: always last, after any role change.
fn then_unpause(mut actions: Vec<LocalAction>, fenced: bool) -> Vec<LocalAction> {
    if fenced {
        actions.push(LocalAction::Unpause);
    }
    actions
}

/// Another data member's name and Redis address (the first by node id), if any.
fn other_data_redis(view: &LocalView<'_>) -> Option<(String, String, u16)> {
    view.state
        .members
        .iter()
        .filter(|(id, m)| **id != view.self_id && m.kind == MemberKind::Data)
        .find_map(|(_, m)| {
            let RedisAddr { host, port } = RedisAddr::parse(m.redis_addr.as_deref()?)?;
            Some((m.name.clone(), host, port))
        })
}

fn plan_as_master(view: &LocalView<'_>, status: &RedisStatus) -> LocalPlan {
    let me = view.state.member_name(view.self_id);
    if view.state.master_run_id.as_deref() != Some(status.run_id.as_str()) {
        // This Redis is not the process that was elected: it may have restarted empty.
        // Never promote it, and keep it from taking writes until the coordinator fails over.
        // Nor may it stay a master: a replica still pointed at this address would resync
        // from it and drop its data. As a replica (of another data member, whose own link
        // is down) it refuses every sync (NOMASTERLINK) until the failover.
        return match status.role {
            RedisRole::Master => match other_data_redis(view) {
                Some((name, host, port)) => LocalPlan::new(
                    vec![LocalAction::PauseWrites, LocalAction::Demote { host, port }],
                    format!(
                        "local redis on {me} restarted: demoting it to replicate from {name} so \
                         no replica resyncs from its possibly empty data; waiting for failover"
                    ),
                ),
                None => LocalPlan::new(
                    vec![LocalAction::PauseWrites],
                    format!("local redis on {me} restarted; waiting for failover"),
                ),
            },
            RedisRole::Replica => LocalPlan::new(
                Vec::new(),
                format!("local redis on {me} restarted; waiting for failover, not promoting"),
            ),
        };
    }
    match status.role {
        RedisRole::Replica => LocalPlan::new(
            then_unpause(vec![LocalAction::Promote], view.fenced),
            format!(
                "{me} is master at epoch {}: promoting local redis",
                view.state.epoch
            ),
        ),
        RedisRole::Master if view.fenced => LocalPlan::new(
            vec![LocalAction::Unpause],
            format!("{me} is still master and quorum contact is back: lifting the fence"),
        ),
        RedisRole::Master => LocalPlan::new(Vec::new(), format!("{me} already master")),
    }
}

/// How the committed master's Redis was found gone or replaced by another process, if it
/// was: then this node's Redis must not replicate from it.
pub fn master_replaced(state: &ClusterState, found: &MasterFound) -> Option<String> {
    match found {
        MasterFound::Gone => Some("is gone (refused, or hung up on connect)".to_string()),
        MasterFound::Process(run_id) => state
            .master_run_id
            .as_deref()
            .filter(|committed| *committed != run_id)
            .map(|committed| {
                format!("answers as another process (run_id {run_id}, elected {committed})")
            }),
        MasterFound::Unknown => None,
    }
}

fn plan_as_replica(view: &LocalView<'_>, status: &RedisStatus, master: NodeId) -> LocalPlan {
    let Some(member) = view.state.members.get(&master) else {
        return LocalPlan::new(
            Vec::new(),
            format!("committed master node {master} is not a registered member"),
        );
    };
    let name = &member.name;
    let Some(addr) = member.redis_addr.as_deref() else {
        return LocalPlan::new(
            Vec::new(),
            format!("committed master {name} has no redis address"),
        );
    };
    let Some(RedisAddr { host, port }) = RedisAddr::parse(addr) else {
        return LocalPlan::new(
            Vec::new(),
            format!("committed address {addr:?} of master {name} is invalid"),
        );
    };
    let following = status.role == RedisRole::Replica
        && status
            .master_addr
            .as_deref()
            .is_some_and(|a| same_redis_addr(a, addr));
    let detached = status.role == RedisRole::Replica && is_detached(status);
    // A master process that exited, or one that answers at its address but is not the
    // process that was elected (restarted, maybe empty), must not feed this replica a full
    // resync: detach until the coordinator replaces it or the committed process answers.
    let replaced = master_replaced(view.state, view.master_found);
    if let Some(what) = &replaced {
        if detached {
            return LocalPlan::new(
                then_unpause(Vec::new(), view.fenced),
                format!(
                    "detached: master {name}'s redis {what}; waiting for the coordinator to replace it"
                ),
            );
        }
        return match status.role {
            RedisRole::Replica => LocalPlan::new(
                then_unpause(vec![LocalAction::Detach], view.fenced),
                format!(
                    "master {name}'s redis {what}: detaching local redis so it cannot resync \
                     from it, keeping its data until the coordinator replaces {name}"
                ),
            ),
            // Not the elected master either: it stops taking writes, and keeps its data.
            RedisRole::Master => LocalPlan::new(
                then_unpause(
                    vec![LocalAction::Demote {
                        host: DETACHED_HOST.to_string(),
                        port: DETACHED_PORT,
                    }],
                    view.fenced,
                ),
                format!(
                    "{name} is master at epoch {} but its redis {what}: demoting local redis \
                     detached, closing its clients",
                    view.state.epoch
                ),
            ),
        };
    }
    if following {
        return LocalPlan::new(
            then_unpause(Vec::new(), view.fenced),
            if view.fenced {
                format!("already replicating from {name}; lifting the fence")
            } else {
                format!("already replicating from {name}")
            },
        );
    }
    if detached && view.master_found == &MasterFound::Unknown {
        return LocalPlan::new(
            then_unpause(Vec::new(), view.fenced),
            format!("detached: waiting until master {name}'s redis answers as the elected process"),
        );
    }
    // Demote before unpausing: writes held by the pause must fail (their connections are
    // closed), not be acknowledged by a master whose data the coming resync erases.
    let epoch = view.state.epoch;
    let (action, reason) = match status.role {
        RedisRole::Master => (
            LocalAction::Demote { host, port },
            format!(
                "{name} is master at epoch {epoch}: demoting local redis to replicate from {addr}, closing its clients"
            ),
        ),
        RedisRole::Replica => (
            LocalAction::ReplicateFrom { host, port },
            format!("{name} is master at epoch {epoch}: replicating from {addr}"),
        ),
    };
    LocalPlan::new(then_unpause(vec![action], view.fenced), reason)
}

/// Whether a replica points at the detached address.
pub fn is_detached(status: &RedisStatus) -> bool {
    status.master_addr.as_deref().is_some_and(|a| {
        RedisAddr::parse(a).is_some_and(|p| p.host == DETACHED_HOST && p.port == DETACHED_PORT)
    })
}

#[cfg(test)]
mod min_replicas_tests {
    use super::*;
    use crate::model::Member;

    fn master(run_id: &str, online_replicas: u32) -> RedisHealth {
        RedisHealth::Up(RedisStatus {
            run_id: run_id.to_string(),
            role: RedisRole::Master,
            master_addr: None,
            master_link_up: false,
            repl_offset: 100,
            keys: 1,
            online_replicas,
        })
    }

    #[test]
    fn a_master_needs_a_replica_for_writes_unless_it_is_the_confirmed_master_alone() {
        let mut state = ClusterState {
            epoch: 3,
            master: Some(1),
            master_run_id: Some("run-a".into()),
            ..ClusterState::default()
        };
        state.members.insert(
            1,
            Member {
                name: "a".into(),
                site: String::new(),
                kind: MemberKind::Data,
                redis_addr: Some("a:6379".into()),
                api_addr: String::new(),
                raft_addr: String::new(),
                priority: 0,
                no_promote: false,
                sentinel_addr: None,
            },
        );
        let replica = RedisHealth::Up(RedisStatus {
            role: RedisRole::Replica,
            master_addr: Some("b:6379".into()),
            ..master("run-a", 0).status().cloned().expect("up")
        });
        // (self, redis, contact age, expected)
        let cases = [
            (1, master("run-a", 1), Some(0), Some(1)),
            (1, master("run-a", 0), Some(0), Some(0)),
            (1, master("run-a", 0), Some(20_000), Some(1)),
            (1, master("run-a", 0), None, Some(1)),
            (1, master("restarted", 0), Some(0), Some(1)),
            (2, master("run-b", 0), Some(0), Some(1)),
            (1, replica, Some(0), None),
            (
                1,
                RedisHealth::Down {
                    kind: crate::model::DownKind::Refused,
                    for_ms: 0,
                    error: String::new(),
                },
                Some(0),
                None,
            ),
        ];
        for (me, redis, age, want) in cases {
            let view = LocalView {
                self_id: me,
                state: &state,
                redis: &redis,
                contact_age: age.map(Millis),
                fenced: false,
                lease: Millis(10_000),
                master_found: &MasterFound::Unknown,
            };
            assert_eq!(min_replicas_to_write(&view), want, "{me} {redis:?} {age:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DownKind, Member, MemberKind};

    use LocalAction::{Demote, Detach, PauseWrites, Promote, ReplicateFrom, Unpause};

    const LEASE: u64 = 10_000;
    /// This agent.
    const A: NodeId = 1;
    /// The other data node.
    const B: NodeId = 2;
    const B_ADDR: &str = "b.example:6380";

    fn member(name: &str, redis_addr: &str) -> Member {
        Member {
            name: name.to_string(),
            site: format!("site-{name}"),
            kind: MemberKind::Data,
            redis_addr: Some(redis_addr.to_string()),
            api_addr: format!("{name}:8080"),
            raft_addr: format!("{name}:7000"),
            priority: 0,
            no_promote: false,
            sentinel_addr: None,
        }
    }

    /// a and b registered; `master` elected at epoch 3 with `run_id`.
    fn state(master: Option<NodeId>, run_id: &str) -> ClusterState {
        let mut state = ClusterState {
            epoch: 3,
            master,
            master_run_id: master.map(|_| run_id.to_string()),
            ..ClusterState::default()
        };
        state.members.insert(A, member("a", "a.example:6379"));
        state.members.insert(B, member("b", B_ADDR));
        state
    }

    fn with_b_addr(mut state: ClusterState, addr: &str) -> ClusterState {
        state.members.insert(B, member("b", addr));
        state
    }

    fn as_master(run_id: &str) -> RedisHealth {
        RedisHealth::Up(RedisStatus {
            run_id: run_id.to_string(),
            role: RedisRole::Master,
            master_addr: None,
            master_link_up: false,
            repl_offset: 100,
            keys: 1,
            online_replicas: 0,
        })
    }

    fn as_replica_of(run_id: &str, master_addr: Option<&str>, link: bool) -> RedisHealth {
        RedisHealth::Up(RedisStatus {
            run_id: run_id.to_string(),
            role: RedisRole::Replica,
            master_addr: master_addr.map(str::to_string),
            master_link_up: link,
            repl_offset: 100,
            keys: 1,
            online_replicas: 0,
        })
    }

    fn replicate_from_b() -> LocalAction {
        ReplicateFrom {
            host: "b.example".to_string(),
            port: 6380,
        }
    }

    fn demote_to_b() -> LocalAction {
        Demote {
            host: "b.example".to_string(),
            port: 6380,
        }
    }

    fn plan(
        state: &ClusterState,
        redis: &RedisHealth,
        contact_age: Option<u64>,
        fenced: bool,
    ) -> LocalPlan {
        plan_with(state, redis, contact_age, fenced, &MasterFound::Unknown)
    }

    /// A plan in quorum contact, with what the probe found at the master's Redis.
    fn plan_found(
        state: &ClusterState,
        redis: &RedisHealth,
        master_found: &MasterFound,
        fenced: bool,
    ) -> LocalPlan {
        plan_with(state, redis, CONTACT, fenced, master_found)
    }

    fn plan_with(
        state: &ClusterState,
        redis: &RedisHealth,
        contact_age: Option<u64>,
        fenced: bool,
        master_found: &MasterFound,
    ) -> LocalPlan {
        plan_local(&LocalView {
            self_id: A,
            state,
            redis,
            contact_age: contact_age.map(Millis),
            fenced,
            lease: Millis(LEASE),
            master_found,
        })
    }

    /// (case, state, local redis, contact age, fenced, expected actions, expected reason)
    type Row<'a> = (
        &'a str,
        &'a ClusterState,
        RedisHealth,
        Option<u64>,
        bool,
        Vec<LocalAction>,
        &'a str,
    );

    /// (case, local redis, what the master's address answered, fenced, actions, reason)
    type DetachRow<'a> = (
        &'a str,
        &'a RedisHealth,
        &'a MasterFound,
        bool,
        Vec<LocalAction>,
        &'a str,
    );

    /// Contact well inside the lease.
    const CONTACT: Option<u64> = Some(1_000);

    #[test]
    fn plan_table() {
        let no_master = state(None, "");
        let a_master = state(Some(A), "run-a");
        let b_master = state(Some(B), "run-b");
        let refused = RedisHealth::Down {
            kind: DownKind::Refused,
            for_ms: 1,
            error: "connection refused".to_string(),
        };
        let cases: Vec<Row<'_>> = vec![
            (
                "redis down",
                &a_master,
                refused.clone(),
                CONTACT,
                true,
                vec![],
                "local redis down",
            ),
            (
                "redis down while isolated",
                &a_master,
                refused,
                None,
                false,
                vec![],
                "local redis down",
            ),
            (
                "isolated master fences",
                &a_master,
                as_master("run-a"),
                Some(LEASE + 1),
                false,
                vec![PauseWrites],
                "no confirmed quorum contact for 10001 ms: fencing writes",
            ),
            (
                "isolated master renews the fence",
                &a_master,
                as_master("run-a"),
                Some(LEASE + 1),
                true,
                vec![PauseWrites],
                "no confirmed quorum contact for 10001 ms: fencing writes",
            ),
            (
                "never contacted master fences",
                &no_master,
                as_master("run-x"),
                None,
                false,
                vec![PauseWrites],
                "no confirmed quorum contact ever: fencing writes",
            ),
            (
                "isolated replica does nothing",
                &b_master,
                as_replica_of("run-a", Some("elsewhere:6379"), false),
                Some(LEASE + 1),
                false,
                vec![],
                "no confirmed quorum contact for 10001 ms; a replica has nothing to fence",
            ),
            (
                "contact exactly at the lease still counts",
                &a_master,
                as_master("run-a"),
                Some(LEASE),
                false,
                vec![],
                "a already master",
            ),
            (
                "no master yet",
                &no_master,
                as_master("run-a"),
                CONTACT,
                false,
                vec![],
                "no master elected yet",
            ),
            (
                "no master yet, fence lifted",
                &no_master,
                as_master("run-a"),
                CONTACT,
                true,
                vec![Unpause],
                "no master elected yet; quorum contact is back, lifting the fence",
            ),
            (
                "elected replica promotes",
                &a_master,
                as_replica_of("run-a", Some(B_ADDR), true),
                CONTACT,
                false,
                vec![Promote],
                "a is master at epoch 3: promoting local redis",
            ),
            (
                "elected fenced replica promotes, then unpauses",
                &a_master,
                as_replica_of("run-a", Some(B_ADDR), false),
                CONTACT,
                true,
                vec![Promote, Unpause],
                "a is master at epoch 3: promoting local redis",
            ),
            (
                "already master",
                &a_master,
                as_master("run-a"),
                CONTACT,
                false,
                vec![],
                "a already master",
            ),
            (
                "still master after isolation: unpause",
                &a_master,
                as_master("run-a"),
                CONTACT,
                true,
                vec![Unpause],
                "a is still master and quorum contact is back: lifting the fence",
            ),
            (
                "restarted master redis is paused and made a replica, not trusted",
                &a_master,
                as_master("run-a2"),
                CONTACT,
                false,
                vec![PauseWrites, demote_to_b()],
                "local redis on a restarted: demoting it to replicate from b so no replica resyncs from its possibly empty data; waiting for failover",
            ),
            (
                "restarted replica redis is not promoted",
                &a_master,
                as_replica_of("run-a2", Some(B_ADDR), false),
                CONTACT,
                true,
                vec![],
                "local redis on a restarted; waiting for failover, not promoting",
            ),
            (
                "deposed master demotes and closes its clients",
                &b_master,
                as_master("run-a"),
                CONTACT,
                false,
                vec![demote_to_b()],
                "b is master at epoch 3: demoting local redis to replicate from b.example:6380, closing its clients",
            ),
            (
                "fenced deposed master demotes, closing clients, before unpausing",
                &b_master,
                as_master("run-a"),
                CONTACT,
                true,
                vec![demote_to_b(), Unpause],
                "b is master at epoch 3: demoting local redis to replicate from b.example:6380, closing its clients",
            ),
            (
                "a restarted stale master (new run id) is demoted too",
                &b_master,
                as_master("run-a2"),
                CONTACT,
                true,
                vec![demote_to_b(), Unpause],
                "b is master at epoch 3: demoting local redis to replicate from b.example:6380, closing its clients",
            ),
            (
                "replica of the wrong master is repointed",
                &b_master,
                as_replica_of("run-a", Some("old.example:6379"), true),
                CONTACT,
                false,
                vec![replicate_from_b()],
                "b is master at epoch 3: replicating from b.example:6380",
            ),
            (
                "replica with no master is pointed",
                &b_master,
                as_replica_of("run-a", None, false),
                CONTACT,
                true,
                vec![replicate_from_b(), Unpause],
                "b is master at epoch 3: replicating from b.example:6380",
            ),
            (
                "already replicating",
                &b_master,
                as_replica_of("run-a", Some(B_ADDR), true),
                CONTACT,
                false,
                vec![],
                "already replicating from b",
            ),
            (
                "already replicating with the link down: redis retries by itself",
                &b_master,
                as_replica_of("run-a", Some(B_ADDR), false),
                CONTACT,
                false,
                vec![],
                "already replicating from b",
            ),
            (
                "already replicating, fence lifted",
                &b_master,
                as_replica_of("run-a", Some(B_ADDR), true),
                CONTACT,
                true,
                vec![Unpause],
                "already replicating from b; lifting the fence",
            ),
        ];
        for (case, state, redis, contact_age, fenced, actions, reason) in cases {
            let got = plan(state, &redis, contact_age, fenced);
            assert_eq!(got.actions, actions, "{case}");
            assert_eq!(got.reason, reason, "{case}");
        }
    }

    #[test]
    fn a_replica_detaches_from_a_master_process_that_is_gone_or_replaced() {
        let b_master = state(Some(B), "run-b");
        let detached_addr = format!("{DETACHED_HOST}:{DETACHED_PORT}");
        let following = as_replica_of("run-a", Some(B_ADDR), false);
        let detached = as_replica_of("run-a", Some(&detached_addr), false);
        let old_master = as_master("run-a");
        let gone = MasterFound::Gone;
        let restarted = MasterFound::Process("run-b2".to_string());
        let elected = MasterFound::Process("run-b".to_string());
        let unknown = MasterFound::Unknown;
        let detach_master = Demote {
            host: DETACHED_HOST.to_string(),
            port: DETACHED_PORT,
        };
        let cases: Vec<DetachRow<'_>> = vec![
            (
                "master's process exited",
                &following,
                &gone,
                false,
                vec![Detach],
                "master b's redis is gone (refused, or hung up on connect): detaching local redis so it \
                 cannot resync from it, keeping its data until the coordinator replaces b",
            ),
            (
                "master restarted as another process",
                &following,
                &restarted,
                false,
                vec![Detach],
                "master b's redis answers as another process (run_id run-b2, elected run-b): \
                 detaching local redis so it cannot resync from it, keeping its data until the \
                 coordinator replaces b",
            ),
            (
                "master paused or partitioned: nothing known, keep following",
                &following,
                &unknown,
                false,
                vec![],
                "already replicating from b",
            ),
            (
                "the elected process answers",
                &following,
                &elected,
                false,
                vec![],
                "already replicating from b",
            ),
            (
                "detached, master still gone",
                &detached,
                &gone,
                false,
                vec![],
                "detached: master b's redis is gone (refused, or hung up on connect); waiting for the \
                 coordinator to replace it",
            ),
            (
                "detached and fenced: the fence still lifts",
                &detached,
                &restarted,
                true,
                vec![Unpause],
                "detached: master b's redis answers as another process (run_id run-b2, elected \
                 run-b); waiting for the coordinator to replace it",
            ),
            (
                "detached, master not reached",
                &detached,
                &unknown,
                false,
                vec![],
                "detached: waiting until master b's redis answers as the elected process",
            ),
            (
                "detached, the elected process answers again",
                &detached,
                &elected,
                false,
                vec![replicate_from_b()],
                "b is master at epoch 3: replicating from b.example:6380",
            ),
            (
                "an old master whose successor's process is gone",
                &old_master,
                &gone,
                false,
                vec![detach_master],
                "b is master at epoch 3 but its redis is gone (refused, or hung up on connect): demoting \
                 local redis detached, closing its clients",
            ),
            (
                "an old master whose successor answers",
                &old_master,
                &elected,
                false,
                vec![demote_to_b()],
                "b is master at epoch 3: demoting local redis to replicate from b.example:6380, \
                 closing its clients",
            ),
        ];
        for (case, redis, found, fenced, actions, reason) in cases {
            let got = plan_found(&b_master, redis, found, fenced);
            assert_eq!(got.actions, actions, "{case}");
            assert_eq!(got.reason, reason, "{case}");
        }
        let detached_status = detached.status().map(is_detached);
        assert_eq!(detached_status, Some(true));
        assert_eq!(following.status().map(is_detached), Some(false));
    }

    #[test]
    fn plan_is_idempotent_once_applied() {
        // After the planned role change, the next probe shows it done and the plan is empty.
        let b_master = state(Some(B), "run-b");
        let before = plan(&b_master, &as_master("run-a"), CONTACT, false);
        assert_eq!(before.actions, vec![demote_to_b()]);
        let after = plan(
            &b_master,
            &as_replica_of("run-a", Some(B_ADDR), false),
            CONTACT,
            false,
        );
        assert!(after.actions.is_empty(), "{after:?}");

        let a_master = state(Some(A), "run-a");
        let before = plan(
            &a_master,
            &as_replica_of("run-a", Some(B_ADDR), false),
            CONTACT,
            false,
        );
        assert_eq!(before.actions, vec![Promote]);
        let after = plan(&a_master, &as_master("run-a"), CONTACT, false);
        assert!(after.actions.is_empty(), "{after:?}");
    }

    #[test]
    fn invalid_committed_address_means_no_action() {
        for addr in [
            "b.example:notaport",
            "b.example",
            "b.example:70000",
            ":6379",
        ] {
            let state = with_b_addr(state(Some(B), "run-b"), addr);
            let got = plan(&state, &as_master("run-a"), CONTACT, true);
            assert!(got.actions.is_empty(), "{addr}: {got:?}");
            assert_eq!(
                got.reason,
                format!("committed address {addr:?} of master b is invalid")
            );
        }
    }

    #[test]
    fn ipv6_master_address_is_bracketed() {
        let state = with_b_addr(state(Some(B), "run-b"), "[fd00::2]:6379");
        let got = plan(&state, &as_master("run-a"), CONTACT, false);
        assert_eq!(
            got.actions,
            vec![Demote {
                host: "fd00::2".to_string(),
                port: 6379
            }]
        );
        // The probe brackets the bare host Redis reports: that is the same endpoint.
        let got = plan(
            &state,
            &as_replica_of("run-a", Some("[fd00::2]:6379"), true),
            CONTACT,
            false,
        );
        assert!(got.actions.is_empty(), "{got:?}");
    }

    #[test]
    fn unregistered_master_means_no_action() {
        let mut state = state(Some(B), "run-b");
        state.members.remove(&B);
        let got = plan(&state, &as_master("run-a"), CONTACT, true);
        assert!(got.actions.is_empty());
        assert_eq!(
            got.reason,
            "committed master node 2 is not a registered member"
        );
    }

    fn switching(from: NodeId, to: NodeId) -> ClusterState {
        let mut state = state(Some(from), if from == A { "run-a" } else { "run-b" });
        state.switchover = Some(Switchover { from, to, epoch: 3 });
        state
    }

    #[test]
    fn switchover_pauses_the_master_and_leaves_the_target_alone() {
        let handing = switching(A, B);
        for fenced in [false, true] {
            let got = plan(&handing, &as_master("run-a"), CONTACT, fenced);
            assert_eq!(
                got.actions,
                vec![PauseWrites],
                "renewed every cycle: {got:?}"
            );
            assert_eq!(got.reason, "switchover: writes paused while b catches up");
        }
        let isolated = plan(&handing, &as_master("run-a"), Some(LEASE + 1), false);
        assert_eq!(isolated.actions, vec![PauseWrites]);

        let taking = switching(B, A);
        let got = plan(
            &taking,
            &as_replica_of("run-a", Some(B_ADDR), true),
            CONTACT,
            false,
        );
        assert!(
            got.actions.is_empty(),
            "the target waits for the commit: {got:?}"
        );
        assert_eq!(got.reason, "switchover: catching up with b to take over");
    }

    #[test]
    fn switchover_ends_with_demotion_then_unpause_on_the_old_master() {
        // The paused old master during the handover, then once the target is committed
        // (SetMaster clears the intent): its clients are closed while still paused.
        let handing = switching(A, B);
        let during = plan(&handing, &as_master("run-a"), CONTACT, true);
        assert_eq!(during.actions, vec![PauseWrites]);
        let committed = state(Some(B), "run-b");
        let after = plan(&committed, &as_master("run-a"), CONTACT, true);
        assert_eq!(after.actions, vec![demote_to_b(), Unpause]);
        // And the demotion is not repeated once the probe shows it done.
        let done = plan(
            &committed,
            &as_replica_of("run-a", Some(B_ADDR), true),
            CONTACT,
            false,
        );
        assert!(done.actions.is_empty(), "{done:?}");
    }

    #[test]
    fn paused_cluster_changes_no_role_but_still_fences() {
        let mut paused = state(Some(B), "run-b");
        paused.paused = true;
        let got = plan(&paused, &as_master("run-a"), CONTACT, false);
        assert!(got.actions.is_empty(), "no demotion while paused: {got:?}");
        let got = plan(&paused, &as_master("run-a"), Some(LEASE + 1), false);
        assert_eq!(
            got.actions,
            vec![PauseWrites],
            "an isolated master fences even when paused"
        );
        let got = plan(&paused, &as_master("run-a"), CONTACT, true);
        assert!(
            got.actions.is_empty(),
            "not the committed master: keep the fence: {got:?}"
        );

        let mut mine = state(Some(A), "run-a");
        mine.paused = true;
        let got = plan(&mine, &as_master("run-a"), CONTACT, true);
        assert_eq!(
            got.actions,
            vec![Unpause],
            "the committed master gets its fence lifted"
        );
        let got = plan(
            &mine,
            &as_replica_of("run-a", Some(B_ADDR), true),
            CONTACT,
            false,
        );
        assert!(got.actions.is_empty(), "no promotion while paused: {got:?}");
    }
}
