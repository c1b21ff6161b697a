//! Whether a peer's Raft AppendEntries fit in the heartbeat openraft gives each one, and
//! when the agent says so: pure rules over measured round trips and a monotonic instant.
//!
//! openraft abandons an AppendEntries that has not completed within `--raft-heartbeat`. A
//! leader whose peers all answer later than that never confirms its quorum, so no lease
//! renews and the master fences itself, while followers still hear the heartbeats and
//! elect nobody else. The rule cannot be bent (a stale acknowledgement must never count as
//! fresh); these rules only decide how the agent explains it.

use std::time::{Duration, Instant};

/// How often a lasting condition is logged again.
pub const REPEAT: Duration = Duration::from_secs(30);

/// How long a peer's AppendEntries must fit the heartbeat before a spell of abandoned ones
/// counts as over: a round trip hovering at the limit makes one spell, not a warning and
/// its all-clear every few heartbeats.
pub const SPELL_ENDS_AFTER: Duration = Duration::from_secs(10);

/// How long the agent still waits for an answer openraft has abandoned, only to measure
/// the round trip: four heartbeats, at least a second. Longer counts as no answer.
pub fn late_answer_wait(heartbeat: Duration) -> Duration {
    (heartbeat * 4).max(Duration::from_secs(1))
}

/// A round trip beyond 3/4 of the heartbeat (openraft's own "soft" limit) is close to it.
fn beyond_three_quarters(round_trip: Duration, heartbeat: Duration) -> bool {
    round_trip * 4 > heartbeat * 3
}

/// How one answered AppendEntries fared against the heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timing {
    /// Answered while openraft waited, with room to spare.
    InTime,
    /// Answered while openraft waited, after more than 3/4 of the heartbeat.
    NearLimit,
    /// Answered after openraft had given up on it at the heartbeat: the answer is discarded.
    Abandoned,
    /// openraft stopped waiting early (its replication to the peer ended, e.g. the leader
    /// stepped down): says nothing about the round trip.
    Cancelled,
}

/// Judge an AppendEntries answered after `round_trip`; `awaited` is whether openraft still
/// waited for the answer when it came. openraft started its clock a little before ours, so
/// an answer it abandoned at the heartbeat may measure a hair less here: one it stopped
/// waiting for counts as abandoned once beyond 3/4 of the heartbeat.
pub fn judge(round_trip: Duration, awaited: bool, heartbeat: Duration) -> Timing {
    match (awaited, beyond_three_quarters(round_trip, heartbeat)) {
        (true, false) => Timing::InTime,
        (true, true) => Timing::NearLimit,
        (false, true) => Timing::Abandoned,
        (false, false) => Timing::Cancelled,
    }
}

/// What the agent logs about one peer after an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notice {
    /// The first abandoned AppendEntries since the peer last kept up.
    Abandoning,
    /// Still abandoning: `abandoned` more since the last notice, the spell `lasted` so far.
    StillAbandoning { abandoned: u64, lasted: Duration },
    /// The peer keeps up again after `abandoned` in all over `lasted`.
    KeepsUp { abandoned: u64, lasted: Duration },
    /// An answer close to the limit, outside a spell of abandoned ones.
    NearLimit,
}

/// A run of abandoned AppendEntries to one peer.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Spell {
    since: Instant,
    last_abandoned: Instant,
    noticed_at: Instant,
    abandoned: u64,
    unnoticed: u64,
}

/// One peer's history, as far as the notices need it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerWatch {
    spell: Option<Spell>,
    near_noticed_at: Option<Instant>,
}

impl PeerWatch {
    /// Record one answer judged `timing` at `now`; what to log, if anything.
    pub fn observe(&mut self, timing: Timing, now: Instant) -> Option<Notice> {
        match timing {
            Timing::Cancelled => None,
            Timing::Abandoned => self.abandoned(now),
            Timing::InTime | Timing::NearLimit => {
                if let Some(spell) = &self.spell {
                    if now.saturating_duration_since(spell.last_abandoned) < SPELL_ENDS_AFTER {
                        return None;
                    }
                    let notice = Notice::KeepsUp {
                        abandoned: spell.abandoned,
                        lasted: spell.last_abandoned.saturating_duration_since(spell.since),
                    };
                    self.spell = None;
                    return Some(notice);
                }
                let due = self
                    .near_noticed_at
                    .is_none_or(|at| now.saturating_duration_since(at) >= REPEAT);
                (timing == Timing::NearLimit && due).then(|| {
                    self.near_noticed_at = Some(now);
                    Notice::NearLimit
                })
            }
        }
    }

    fn abandoned(&mut self, now: Instant) -> Option<Notice> {
        let Some(spell) = &mut self.spell else {
            self.spell = Some(Spell {
                since: now,
                last_abandoned: now,
                noticed_at: now,
                abandoned: 1,
                unnoticed: 0,
            });
            return Some(Notice::Abandoning);
        };
        spell.abandoned += 1;
        spell.unnoticed += 1;
        spell.last_abandoned = now;
        if now.saturating_duration_since(spell.noticed_at) < REPEAT {
            return None;
        }
        spell.noticed_at = now;
        let abandoned = std::mem::take(&mut spell.unnoticed);
        Some(Notice::StillAbandoning {
            abandoned,
            lasted: now.saturating_duration_since(spell.since),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn an_answer_is_judged_against_the_heartbeat() {
        let cases = [
            // (round trip, still awaited, heartbeat, timing)
            (1, true, 250, Timing::InTime),
            (187, true, 250, Timing::InTime),
            (188, true, 250, Timing::NearLimit),
            (249, true, 250, Timing::NearLimit),
            // openraft gave up at the heartbeat; the answer came later.
            (101, false, 100, Timing::Abandoned),
            // Our clock started after openraft's: a hair under the heartbeat still counts.
            (99, false, 100, Timing::Abandoned),
            // openraft stopped waiting long before the heartbeat: not a timing at all.
            (20, false, 100, Timing::Cancelled),
            (75, false, 100, Timing::Cancelled),
        ];
        for (round_trip, awaited, heartbeat, timing) in cases {
            assert_eq!(
                judge(ms(round_trip), awaited, ms(heartbeat)),
                timing,
                "{round_trip} ms, awaited {awaited}, heartbeat {heartbeat} ms"
            );
        }
    }

    #[test]
    fn an_abandoned_answer_is_still_awaited_a_few_heartbeats() {
        for (heartbeat, wait) in [(100, 1_000), (250, 1_000), (400, 1_600), (1_000, 4_000)] {
            assert_eq!(late_answer_wait(ms(heartbeat)), ms(wait), "{heartbeat} ms");
        }
    }

    #[test]
    fn a_spell_of_abandoned_answers_is_noticed_at_its_start_every_repeat_and_its_end() {
        use Timing::{Abandoned, Cancelled, InTime, NearLimit};
        let t0 = Instant::now();
        let at = |n: u64| t0 + ms(n);
        let mut watch = PeerWatch::default();
        let steps = [
            // (at ms, timing, notice)
            (0, InTime, None),
            (100, Abandoned, Some(Notice::Abandoning)),
            (200, Abandoned, None),
            // A round trip hovering at the limit stays one spell.
            (300, NearLimit, None),
            (400, InTime, None),
            (500, Cancelled, None),
            (29_000, Abandoned, None),
            (
                30_100,
                Abandoned,
                Some(Notice::StillAbandoning {
                    abandoned: 3,
                    lasted: ms(30_000),
                }),
            ),
            (30_200, Abandoned, None),
            // Fitting again, but not for long enough yet.
            (40_100, InTime, None),
            (
                40_200,
                NearLimit,
                Some(Notice::KeepsUp {
                    abandoned: 5,
                    lasted: ms(30_100),
                }),
            ),
            // Outside a spell, close calls are noticed at most every REPEAT.
            (40_300, NearLimit, Some(Notice::NearLimit)),
            (50_000, NearLimit, None),
            (70_300, NearLimit, Some(Notice::NearLimit)),
            (70_400, InTime, None),
            // A new spell starts loudly again.
            (80_000, Abandoned, Some(Notice::Abandoning)),
        ];
        for (now, timing, notice) in steps {
            assert_eq!(
                watch.observe(timing, at(now)),
                notice,
                "{timing:?} at {now} ms"
            );
        }
    }
}
