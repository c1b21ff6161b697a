//! A data agent's contact with the cluster and when it must fence its Redis: pure rules
//! over the coordinator's acknowledgements and the agent's monotonic clock.

use super::local::LocalAction;
use crate::model::{Millis, ReportAck};

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
