//! The witness's half of leader placement (`decide::leadership`): it looks at who leads and
//! how still its log is, and campaigns when the rule says so. It wakes only when the leader,
//! the membership or (while a takeover is pending) the log changes, or when the rule asked
//! to look again: an idle cluster costs it nothing.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::ServerState;
use tokio::time::Instant;
use tracing::{info, warn};

use super::consensus::{Consensus, RaftConsensus};
use super::millis;
use crate::consensus::recovery::{Guard, VoteGuard};
use crate::decide::leadership::{Leader, TakeoverTiming, WitnessStep, WitnessView, witness_step};
use crate::lock;
use crate::metrics::Metrics;
use crate::model::{MemberKind, Millis, NodeId};

/// How long the last acknowledged report took to a remote leader, and when: a witness
/// leads only where its link to the old leader (with it, a quorum) answers well within a
/// heartbeat, or its own AppendEntries would not be acknowledged in time and the master
/// would fence.
#[derive(Debug, Default)]
pub struct LeaderRoundTrip(Mutex<Option<(NodeId, Duration, Instant)>>);

impl LeaderRoundTrip {
    pub fn record(&self, leader: NodeId, round_trip: Duration) {
        *lock(&self.0) = Some((leader, round_trip, Instant::now()));
    }

    /// The last round trip to `leader`, if measured within `fresh`.
    fn to(&self, leader: NodeId, fresh: Duration) -> Option<Millis> {
        lock(&self.0)
            .filter(|(to, _, at)| *to == leader && at.elapsed() <= fresh)
            .map(|(_, round_trip, _)| millis(round_trip))
    }
}

fn since(moment: Instant) -> Millis {
    millis(moment.elapsed())
}

/// A witness reports at least every keep-alive (at most 1 s): a round trip older than a few
/// of them is not this link's present.
const ROUND_TRIP_FRESH: Duration = Duration::from_secs(5);

/// Runs for as long as the Raft core does.
pub async fn take_over_from_data_leaders(
    consensus: Arc<RaftConsensus>,
    me: NodeId,
    vote_guard: Arc<VoteGuard>,
    round_trip: Arc<LeaderRoundTrip>,
    timing: TakeoverTiming,
    metrics: Arc<Metrics>,
) {
    let mut server = consensus.raft.server_metrics();
    let mut data = consensus.raft.data_metrics();
    let mut known_leader = None;
    let mut leader_since = Instant::now();
    let mut known_log = None;
    let mut log_since = Instant::now();
    let mut last_campaign: Option<Instant> = None;
    loop {
        let (term_and_leader, voters, is_voter, leading) = {
            let s = server.borrow_and_update();
            let membership = s.membership_config.membership();
            (
                (s.vote.leader_id().term, s.current_leader),
                membership.voter_ids().count(),
                membership.voter_ids().any(|id| id == me),
                s.state == ServerState::Leader,
            )
        };
        if known_leader != Some(term_and_leader) {
            known_leader = Some(term_and_leader);
            leader_since = Instant::now();
        }
        let (last_log, applied) = {
            let d = data.borrow_and_update();
            (d.last_log, d.last_applied)
        };
        if known_log != Some(last_log) {
            known_log = Some(last_log);
            log_since = Instant::now();
        }
        let state = consensus.state();
        let leader = match term_and_leader.1.filter(|id| *id != me && !leading) {
            None => Leader::NoneOrThisNode,
            Some(id) => match state.members.get(&id).map(|m| m.kind) {
                Some(MemberKind::Data) => Leader::Data,
                Some(MemberKind::Witness) => Leader::Witness,
                None => Leader::Unregistered,
            },
        };
        let view = WitnessView {
            witness_voter: is_voter,
            vote_guard_open: vote_guard.get() == Guard::Open,
            voters,
            leader,
            led_for: since(leader_since),
            log_quiet_for: since(log_since),
            log_applied: applied == last_log,
            switchover_pending: state.switchover.is_some(),
            since_last_campaign: last_campaign.map(since),
            round_trip_to_leader: term_and_leader
                .1
                .and_then(|id| round_trip.to(id, ROUND_TRIP_FRESH)),
        };
        let look_again = match witness_step(&view, &timing) {
            WitnessStep::Follow => None,
            WitnessStep::LookAgainIn(wait) => Some(Duration::from_millis(wait.0)),
            WitnessStep::Campaign => {
                let leader_name = term_and_leader
                    .1
                    .and_then(|id| state.members.get(&id))
                    .map_or("", |m| m.name.as_str());
                info!(
                    leader = leader_name,
                    term = term_and_leader.0,
                    led_for_ms = view.led_for.0,
                    "taking the Raft leadership over from data agent {leader_name}: a witness \
                     leads at no data site's cost, and losing a data site then never takes \
                     the coordinator with the master"
                );
                metrics.witness_takeovers.inc();
                last_campaign = Some(Instant::now());
                if let Err(e) = consensus.raft.trigger().elect().await {
                    warn!(error = %e, "the Raft core stopped; no more leadership takeovers");
                    return;
                }
                continue;
            }
        };
        let log_watched = look_again.is_some();
        tokio::select! {
            changed = server.changed() => if changed.is_err() { return },
            changed = data.changed(), if log_watched => if changed.is_err() { return },
            () = tokio::time::sleep(look_again.unwrap_or_default()), if log_watched => {}
        }
    }
}
