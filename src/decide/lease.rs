//! A data agent's contact with the cluster and when it must fence its Redis: pure rules
//! over the coordinator's acknowledgements and the agent's monotonic clock.

use std::time::Duration;

use super::local::LocalAction;
use crate::model::{Millis, ReportAck};

/// The Raft and probe timings a master's lease must outlast.
#[derive(Clone, Copy, Debug)]
pub struct LeaseTimings {
    pub election_timeout: Duration,
    pub heartbeat: Duration,
    pub probe_interval: Duration,
}

impl LeaseTimings {
    /// The longest a master's last acknowledged report can go unrenewed across a Raft leader
    /// change, not counting how long before the loss that report was sent. Its contact is
    /// dated by the old leader's quorum acknowledgement (up to a heartbeat old); openraft
    /// followers then wait out the leader's lease (the maximum election timeout, twice the
    /// minimum) and a random election timeout (up to twice the minimum again) before
    /// campaigning; the master's next probe reports to the winner.
    pub fn leader_change(&self) -> Duration {
        self.election_timeout * 4 + self.heartbeat + self.probe_interval
    }

    /// The shortest lease with which a leader change never fences a healthy master: one
    /// that leaves a keep-alive of at least a probe interval.
    pub fn shortest_lease(&self) -> Duration {
        self.leader_change() + self.probe_interval
    }
}

/// How often an agent whose view has not changed reports anyway: four reports per lease, so
/// a lost one or two never fence a healthy master, never slower than once a second so the
/// coordinator's picture of offsets stays fresh, and often enough that the contact a master
/// holds when its Raft leader is lost outlives the re-election. Never more often than the
/// probe interval.
pub fn keep_alive_interval(lease: Duration, timings: &LeaseTimings) -> Duration {
    (lease / 4)
        .min(Duration::from_secs(1))
        .min(lease.saturating_sub(timings.leader_change()))
        .max(timings.probe_interval)
}

/// The latest confirmed quorum contact after an ack to a report sent at `sent_at`.
///
/// Only a coordinator that a quorum acknowledged counts, and its contact is dated
/// `sent_at - quorum_ack_age`, never later than the acknowledgement itself whatever the
/// network delay. A coordinator ahead of our applied epoch does not renew the lease: it may
/// have elected our successor already, and with our stale state the reconcile would lift
/// the fence as "still master" until the new epoch reaches us.
pub fn renewed_contact(
    previous: Option<Millis>,
    ack: &ReportAck,
    sent_at: Millis,
    applied_epoch: u64,
) -> Option<Millis> {
    let Some(age) = ack.quorum_ack_age_ms.filter(|_| ack.epoch <= applied_epoch) else {
        return previous;
    };
    let contact = Millis(sent_at.0.saturating_sub(age));
    Some(previous.map_or(contact, |c| c.max(contact)))
}

/// Without confirmed quorum contact within the lease another master may already be
/// elected: the agent must not let its Redis take writes.
pub fn is_isolated(contact_age: Option<Millis>, lease: Millis) -> bool {
    contact_age.is_none_or(|age| age > lease)
}

/// How long one `CLIENT PAUSE` holds: long enough that a crashed agent leaves its Redis
/// fenced until a new master is committed; renewed every cycle while isolated.
pub fn fence_pause(down_after: Millis) -> Millis {
    Millis(down_after.0.saturating_mul(6).max(30_000))
}

/// Whether this cycle's writes are, or are about to be, refused: the pod must lose the
/// `master` label before a fence or demotion runs.
pub fn losing_writes(fenced: bool, actions: &[LocalAction]) -> bool {
    fenced
        || actions.iter().any(|a| {
            matches!(
                a,
                LocalAction::PauseWrites
                    | LocalAction::ReplicateFrom { .. }
                    | LocalAction::Demote { .. }
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(quorum_ack_age_ms: Option<u64>, epoch: u64) -> ReportAck {
        ReportAck {
            quorum_ack_age_ms,
            epoch,
            master: None,
            master_offset: None,
            health: Default::default(),
        }
    }

    #[test]
    fn the_keep_alive_leaves_room_for_a_leader_change_within_the_lease() {
        let ms = Duration::from_millis;
        let timings = |election, heartbeat, probe| LeaseTimings {
            election_timeout: ms(election),
            heartbeat: ms(heartbeat),
            probe_interval: ms(probe),
        };
        let cases = [
            // (lease, election timeout, heartbeat, probe, keep-alive)
            // The defaults: a re-election takes 2.45 s of the 3 s lease.
            (3_000, 500, 250, 200, 550),
            // A long lease: four per lease, at most one a second.
            (8_000, 500, 250, 200, 1_000),
            (2_000, 100, 50, 50, 500),
            // The shortest lease accepted: one report every probe.
            (1_650, 300, 250, 100, 100),
            (2_500, 300, 250, 100, 625),
        ];
        for (lease, election, heartbeat, probe, want) in cases {
            let t = timings(election, heartbeat, probe);
            let keep_alive = keep_alive_interval(ms(lease), &t);
            assert_eq!(keep_alive, ms(want), "lease {lease} ms, {t:?}");
            assert!(
                keep_alive + t.leader_change() <= ms(lease),
                "the contact outlives a leader change: lease {lease} ms, {t:?}"
            );
        }
        assert_eq!(timings(300, 250, 100).shortest_lease(), ms(1_650));
    }

    #[test]
    fn contact_renews_only_from_a_confirmed_coordinator_not_ahead_of_us() {
        let cases = [
            // (previous, ack, sent_at, applied epoch, want)
            (None, ack(Some(30), 3), 1_000, 3, Some(970)),
            (None, ack(Some(5_000), 3), 1_000, 3, Some(0)),
            (Some(Millis(990)), ack(Some(30), 3), 1_000, 3, Some(990)),
            (Some(Millis(500)), ack(Some(30), 3), 1_000, 5, Some(970)),
            (Some(Millis(500)), ack(None, 3), 1_000, 3, Some(500)),
            (None, ack(None, 3), 1_000, 3, None),
            (Some(Millis(500)), ack(Some(0), 4), 1_000, 3, Some(500)),
        ];
        for (previous, ack, sent_at, applied, want) in cases {
            assert_eq!(
                renewed_contact(previous, &ack, Millis(sent_at), applied),
                want.map(Millis),
                "{previous:?} {ack:?} {sent_at} {applied}"
            );
        }
    }

    #[test]
    fn isolated_past_the_lease_or_without_any_contact() {
        let lease = Millis(3_000);
        assert!(is_isolated(None, lease));
        assert!(!is_isolated(Some(Millis(0)), lease));
        assert!(!is_isolated(Some(Millis(3_000)), lease));
        assert!(is_isolated(Some(Millis(3_001)), lease));
    }

    #[test]
    fn fence_pause_outlasts_a_failover() {
        assert_eq!(fence_pause(Millis(1_000)), Millis(30_000));
        assert_eq!(fence_pause(Millis(10_000)), Millis(60_000));
        assert_eq!(fence_pause(Millis(u64::MAX)), Millis(u64::MAX));
    }

    #[test]
    fn writes_are_lost_on_fence_pause_or_demotion() {
        let demote = LocalAction::ReplicateFrom {
            host: "a".into(),
            port: 6379,
        };
        let cases = [
            (false, vec![], false),
            (true, vec![], true),
            (false, vec![LocalAction::Promote], false),
            (false, vec![LocalAction::PauseWrites], true),
            (false, vec![demote.clone(), LocalAction::Unpause], true),
            (
                false,
                vec![LocalAction::Demote {
                    host: "a".into(),
                    port: 6379,
                }],
                true,
            ),
            (true, vec![LocalAction::Unpause], true),
        ];
        for (fenced, actions, want) in cases {
            assert_eq!(
                losing_writes(fenced, &actions),
                want,
                "{fenced} {actions:?}"
            );
        }
    }
}
