//! Where Raft leadership should sit: on the witness, when the cluster has one.
//!
//! A witness has no Redis: coordinating there costs no data site anything, and losing a
//! data site never takes the coordinator down with the master (which adds an election to
//! the failover). openraft 0.9 has no leadership transfer, so a witness that follows a data
//! agent campaigns itself. Its vote request carries a higher term; the old leader grants it
//! once openraft's leader lease on votes has run out (the maximum election timeout after its
//! own election), and with the witness's own vote that is a majority of up to three voters.
//! The other followers still refuse any vote within a lease of their last heartbeat, which is
//! why larger voter sets are left alone: there the campaign would fail and cost an election.

use crate::model::Millis;

/// One look, from a witness, at the leader it follows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WitnessView {
    /// This node is a witness and a voter.
    pub witness_voter: bool,
    /// Its own durable vote and log protect its candidacy: not a node that started with an
    /// empty store and is still asking its peers or recovering a lost one (it may have voted
    /// in terms it no longer knows).
    pub vote_guard_open: bool,
    /// How many voters the membership has.
    pub voters: usize,
    pub leader: Leader,
    /// How long this node has known the current leader at its current term.
    pub led_for: Millis,
    /// How long since this node's log last grew.
    pub log_quiet_for: Millis,
    /// Every entry of this node's log is applied: no entry is half-way through a commit here.
    pub log_applied: bool,
    /// A planned switchover is under way (its steps belong to the leader that runs it).
    pub switchover_pending: bool,
    /// Since this node last campaigned to take the leadership over, if ever.
    pub since_last_campaign: Option<Millis>,
    /// The last acknowledged report's round trip to the leader, if measured lately.
    pub round_trip_to_leader: Option<Millis>,
}

/// Who leads, as a witness sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leader {
    /// No leader is known, or this node leads.
    NoneOrThisNode,
    /// Another witness.
    Witness,
    /// A data member.
    Data,
    /// A node the committed state does not list yet (it registers through the log).
    Unregistered,
}

/// How patient a witness is before it takes the leadership over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TakeoverTiming {
    /// A leader must have led this long; far more than openraft's leader lease (the maximum
    /// election timeout), so the old leader grants the vote.
    pub settle: Millis,
    /// The log must have been still this long, so this node holds every entry the leader has.
    pub quiet: Millis,
    /// Never campaign again sooner than this after a campaign: a witness that cannot keep the
    /// leadership (a flaky link) must not keep taking it.
    pub retry: Millis,
    /// The slowest round trip to the old leader at which the witness leads: half a heartbeat.
    /// openraft gives each AppendEntries one heartbeat, and the old leader with the witness is
    /// the quorum that would acknowledge it; a slower link would fence the master.
    pub max_round_trip: Millis,
}

impl TakeoverTiming {
    /// At `--raft-election-timeout` `election_min`: settle after four of them (twice the
    /// leader lease), at least 2 s; a quiet log for 1 s (four heartbeats at the defaults);
    /// one campaign a minute at most; a round trip of at most half of `--raft-heartbeat`.
    pub fn for_raft(election_min: Millis, heartbeat: Millis) -> TakeoverTiming {
        TakeoverTiming {
            settle: Millis(election_min.0.saturating_mul(4).max(2_000)),
            quiet: Millis(1_000),
            retry: Millis(60_000),
            max_round_trip: Millis(heartbeat.0 / 2),
        }
    }
}

/// What the witness does now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WitnessStep {
    /// Nothing to take over, now or later without a change of leader or log.
    Follow,
    /// Nothing yet; look again after this long (unless something changes first).
    LookAgainIn(Millis),
    /// Campaign for the leadership now.
    Campaign,
}

/// How often a witness whose link to the leader is too slow looks again.
const SLOW_LINK_RECHECK: Millis = Millis(10_000);

pub fn witness_step(view: &WitnessView, timing: &TakeoverTiming) -> WitnessStep {
    if !view.witness_voter || view.voters > 3 {
        return WitnessStep::Follow;
    }
    match view.leader {
        Leader::NoneOrThisNode | Leader::Witness => return WitnessStep::Follow,
        // Its registration is a change of the log, which brings a new look.
        Leader::Unregistered => return WitnessStep::LookAgainIn(timing.quiet),
        Leader::Data => {}
    }
    let waits = [
        timing.settle.0.saturating_sub(view.led_for.0),
        timing.quiet.0.saturating_sub(view.log_quiet_for.0),
        view.since_last_campaign
            .map_or(0, |since| timing.retry.0.saturating_sub(since.0)),
    ];
    let wait = waits.into_iter().max().unwrap_or(0);
    if wait > 0 {
        return WitnessStep::LookAgainIn(Millis(wait));
    }
    match view.round_trip_to_leader {
        // The next report measures it (a witness reports every keep-alive).
        None => return WitnessStep::LookAgainIn(timing.quiet),
        Some(rtt) if rtt > timing.max_round_trip => {
            return WitnessStep::LookAgainIn(SLOW_LINK_RECHECK);
        }
        Some(_) => {}
    }
    if !view.log_applied || view.switchover_pending || !view.vote_guard_open {
        // The first two end with a change of the log, which brings a new look; the guard
        // opens as the log comes back.
        return WitnessStep::LookAgainIn(timing.quiet);
    }
    WitnessStep::Campaign
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settled() -> WitnessView {
        WitnessView {
            witness_voter: true,
            vote_guard_open: true,
            voters: 3,
            leader: Leader::Data,
            led_for: Millis(2_000),
            log_quiet_for: Millis(1_000),
            log_applied: true,
            switchover_pending: false,
            since_last_campaign: None,
            round_trip_to_leader: Some(Millis(3)),
        }
    }

    #[test]
    fn a_witness_takes_the_leadership_only_from_a_settled_data_leader() {
        let timing = TakeoverTiming::for_raft(Millis(500), Millis(250));
        assert_eq!(
            timing,
            TakeoverTiming {
                settle: Millis(2_000),
                quiet: Millis(1_000),
                retry: Millis(60_000),
                max_round_trip: Millis(125),
            }
        );
        type Change = fn(&mut WitnessView);
        let rows: &[(&str, Change, WitnessStep)] = &[
            ("settled, quiet, applied", |_| {}, WitnessStep::Campaign),
            ("two voters", |v| v.voters = 2, WitnessStep::Campaign),
            (
                "a data agent never campaigns for this",
                |v| v.witness_voter = false,
                WitnessStep::Follow,
            ),
            (
                "this node leads, or none does",
                |v| v.leader = Leader::NoneOrThisNode,
                WitnessStep::Follow,
            ),
            (
                "another witness leads",
                |v| v.leader = Leader::Witness,
                WitnessStep::Follow,
            ),
            (
                "the leader has not registered yet",
                |v| v.leader = Leader::Unregistered,
                WitnessStep::LookAgainIn(Millis(1_000)),
            ),
            (
                "five voters: the followers' leases refuse the vote",
                |v| v.voters = 5,
                WitnessStep::Follow,
            ),
            (
                "a leader known for 1.2 s",
                |v| v.led_for = Millis(1_200),
                WitnessStep::LookAgainIn(Millis(800)),
            ),
            (
                "the log grew 300 ms ago",
                |v| v.log_quiet_for = Millis(300),
                WitnessStep::LookAgainIn(Millis(700)),
            ),
            (
                "the longest wait counts",
                |v| {
                    v.led_for = Millis(1_900);
                    v.log_quiet_for = Millis(200);
                },
                WitnessStep::LookAgainIn(Millis(800)),
            ),
            (
                "campaigned 20 s ago",
                |v| v.since_last_campaign = Some(Millis(20_000)),
                WitnessStep::LookAgainIn(Millis(40_000)),
            ),
            (
                "campaigned a minute ago",
                |v| v.since_last_campaign = Some(Millis(60_000)),
                WitnessStep::Campaign,
            ),
            (
                "an entry is not applied yet",
                |v| v.log_applied = false,
                WitnessStep::LookAgainIn(Millis(1_000)),
            ),
            (
                "a store lost or still being asked about",
                |v| v.vote_guard_open = false,
                WitnessStep::LookAgainIn(Millis(1_000)),
            ),
            (
                "a round trip to the leader of half a heartbeat",
                |v| v.round_trip_to_leader = Some(Millis(125)),
                WitnessStep::Campaign,
            ),
            (
                "a slower one: its AppendEntries would miss their heartbeat",
                |v| v.round_trip_to_leader = Some(Millis(126)),
                WitnessStep::LookAgainIn(Millis(10_000)),
            ),
            (
                "no report to this leader measured lately",
                |v| v.round_trip_to_leader = None,
                WitnessStep::LookAgainIn(Millis(1_000)),
            ),
            (
                "a switchover is under way",
                |v| v.switchover_pending = true,
                WitnessStep::LookAgainIn(Millis(1_000)),
            ),
        ];
        for (name, change, want) in rows {
            let mut view = settled();
            change(&mut view);
            assert_eq!(witness_step(&view, &timing), *want, "{name}");
        }
        assert_eq!(
            TakeoverTiming::for_raft(Millis(2_000), Millis(250)).settle,
            Millis(8_000),
            "twice the leader lease of a long election timeout"
        );
    }
}
