//! Invariants over a whole recorded [`Records`] history.
//!
//! - **At most one writable master.** Each node's acknowledged writes are grouped into
//!   write windows (consecutive acknowledgements less than [`Bounds::window_gap`] apart).
//!   Two windows of different nodes that intersect mean two Redis nodes acknowledged writes
//!   at the same time. The worst overlap is reported; when there is none, the closest
//!   approach between two nodes' windows (the shortest handover) is reported instead.
//!   Times are acknowledgement times seen by the writers, on one monotonic clock.
//! - **Epochs.** Per agent, the epoch in `/state` never decreases; no two answers ever name
//!   different masters for one epoch.
//! - **Convergence.** After every heal, a poll round where all three agents answer, agree on
//!   epoch and master, exactly that master is writable and unfenced, and the other data node
//!   replicates with a live link, comes within [`Bounds::converge`].
//! - **Lost acknowledged writes** are counted by the caller (it needs the final data) and
//!   passed in; they are reported, not a violation: Redis replication is asynchronous.
//!
//! For comparing systems it also totals the dual-write overlap (ms, and the writes the
//! master whose window ended first acknowledged meanwhile) and the time without any
//! acknowledged write (gaps of at least [`Bounds::outage_gap`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use super::topology::Site;
use super::workload::{Ack, EventKind, Records, Sample};

#[derive(Clone, Debug)]
pub struct Bounds {
    /// Acknowledgements of one node further apart than this start a new write window.
    pub window_gap: Duration,
    /// Every heal must be followed by convergence within this.
    pub converge: Duration,
    /// A gap between two acknowledged writes (of any writer) at least this long counts,
    /// whole, as unavailability. Three writers acknowledge every few ms when all is well.
    pub outage_gap: Duration,
}

impl Default for Bounds {
    fn default() -> Bounds {
        Bounds {
            window_gap: Duration::from_millis(500),
            converge: Duration::from_secs(10),
            outage_gap: Duration::from_millis(100),
        }
    }
}

/// A time span during which one node acknowledged writes.
#[derive(Clone, Debug, PartialEq)]
pub struct Window {
    pub node: Site,
    pub start: Duration,
    pub end: Duration,
    pub acks: usize,
}

/// The closest pair of write windows of two different nodes.
#[derive(Clone, Debug, PartialEq)]
pub struct Approach {
    pub first: Window,
    pub second: Window,
    /// Positive: both acknowledged writes during this long. Negative: the gap between them.
    pub overlap_ms: i64,
}

#[derive(Clone, Debug)]
pub struct Failover {
    /// When the poller first saw the new epoch.
    pub seen_at: Duration,
    pub epoch: u64,
    pub master: String,
}

#[derive(Clone, Debug)]
pub struct Convergence {
    pub heal: String,
    pub healed_at: Duration,
    /// `None`: not converged before the next fault or the end of the run.
    pub took: Option<Duration>,
}

#[derive(Clone, Debug, Default)]
pub struct Report {
    pub acks: usize,
    pub failed_writes: u64,
    pub windows: usize,
    pub closest: Option<Approach>,
    pub failovers: Vec<Failover>,
    /// Longest time without any acknowledged write, and when it began.
    pub max_unavailable: (Duration, Duration),
    /// Sum of all gaps of at least [`Bounds::outage_gap`] without an acknowledged write.
    pub unavailable_total: Duration,
    /// Sum of the overlaps of write windows of two nodes.
    pub overlap_total_ms: i64,
    /// Acknowledgement times of writes taken, during an overlap, by the node whose window
    /// ended first (the master that was on its way out).
    pub overlap_acks: Vec<Duration>,
    pub convergence: Vec<Convergence>,
    pub lost: Vec<Ack>,
    pub violations: Vec<String>,
}

/// Write windows per node, in time order.
pub fn windows(acks: &[Ack], gap: Duration) -> Vec<Window> {
    let mut by_node: BTreeMap<Site, Vec<Duration>> = BTreeMap::new();
    for a in acks {
        by_node.entry(a.node).or_default().push(a.at);
    }
    let mut out = Vec::new();
    for (node, mut times) in by_node {
        times.sort();
        let mut current: Option<Window> = None;
        for t in times {
            match current.as_mut() {
                Some(w) if t.saturating_sub(w.end) <= gap => {
                    w.end = t;
                    w.acks += 1;
                }
                _ => {
                    out.extend(current.take());
                    current = Some(Window {
                        node,
                        start: t,
                        end: t,
                        acks: 1,
                    });
                }
            }
        }
        out.extend(current);
    }
    out.sort_by_key(|w| w.start);
    out
}

fn signed_ms(later: Duration, earlier: Duration) -> i64 {
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    ms(later) - ms(earlier)
}

/// The pair of windows of different nodes with the largest overlap (or smallest gap).
pub fn closest_approach(windows: &[Window]) -> Option<Approach> {
    let mut best: Option<Approach> = None;
    for (i, x) in windows.iter().enumerate() {
        for y in &windows[i + 1..] {
            if x.node == y.node {
                continue;
            }
            let overlap_ms = signed_ms(x.end.min(y.end), x.start.max(y.start));
            if best.as_ref().is_none_or(|b| overlap_ms > b.overlap_ms) {
                best = Some(Approach {
                    first: x.clone(),
                    second: y.clone(),
                    overlap_ms,
                });
            }
        }
    }
    best
}

/// One writable, agreed master with a live replica: the cluster is settled.
pub fn converged(views: &[Option<Sample>; 3]) -> Option<Site> {
    let all: Vec<&Sample> = views.iter().map(Option::as_ref).collect::<Option<_>>()?;
    let master = all[0].master.as_deref()?;
    if all
        .iter()
        .any(|v| v.epoch != all[0].epoch || v.master.as_deref() != Some(master))
    {
        return None;
    }
    let m = Site::from_name(master)?;
    let mv = all[m.index()];
    if !(mv.is_master && !mv.fenced && mv.role == "master") {
        return None;
    }
    let others_ok = Site::ALL.into_iter().filter(|&s| s != m).all(|s| {
        let v = all[s.index()];
        !v.is_master
            && (!s.is_data() || (v.role == "replica" && v.link_up == Some(true) && !v.fenced))
    });
    others_ok.then_some(m)
}

/// Check every invariant over the history; `lost` are acknowledged writes missing from
/// the final master.
pub fn check(records: &Records, bounds: &Bounds, lost: Vec<Ack>) -> Report {
    let mut report = Report {
        acks: records.acks.len(),
        failed_writes: records.failed_writes,
        lost,
        ..Report::default()
    };

    let windows = windows(&records.acks, bounds.window_gap);
    report.windows = windows.len();
    report.closest = closest_approach(&windows);
    for (i, x) in windows.iter().enumerate() {
        for y in windows[i + 1..].iter().filter(|y| y.node != x.node) {
            let overlap = signed_ms(x.end.min(y.end), x.start.max(y.start));
            if overlap >= 0 {
                report.overlap_total_ms += overlap;
                let (from, to) = (x.start.max(y.start), x.end.min(y.end));
                let outgoing = if x.end <= y.end { x.node } else { y.node };
                report.overlap_acks.extend(
                    records
                        .acks
                        .iter()
                        .filter(|a| a.node == outgoing && a.at >= from && a.at <= to)
                        .map(|a| a.at),
                );
                report.violations.push(format!(
                    "two writable masters: {} acknowledged {} writes in {}..{} and {} {} writes in {}..{} (overlap {overlap} ms)",
                    x.node.name(),
                    x.acks,
                    secs(x.start),
                    secs(x.end),
                    y.node.name(),
                    y.acks,
                    secs(y.start),
                    secs(y.end)
                ));
            }
        }
    }

    let mut times: Vec<Duration> = records.acks.iter().map(|a| a.at).collect();
    times.sort();
    report.max_unavailable = times
        .windows(2)
        .map(|w| (w[1] - w[0], w[0]))
        .max()
        .unwrap_or_default();
    report.unavailable_total = times
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|gap| *gap >= bounds.outage_gap)
        .sum();

    check_epochs(records, &mut report);
    check_convergence(records, bounds, &mut report);
    report
}

fn check_epochs(records: &Records, report: &mut Report) {
    let mut last_epoch: [Option<(u64, Duration)>; 3] = [None; 3];
    let mut master_of_epoch: BTreeMap<u64, (String, Site, Duration)> = BTreeMap::new();
    let mut seen_max = 0;
    for round in &records.rounds {
        for site in Site::ALL {
            let Some(v) = &round.views[site.index()] else {
                continue;
            };
            // A node recovering a lost Raft store says so and claims no epoch; once it is
            // back, its epoch must not be below what it showed before the loss.
            if v.recovering {
                continue;
            }
            if let Some((prev, prev_at)) = last_epoch[site.index()]
                && v.epoch < prev
            {
                report.violations.push(format!(
                    "epoch went backwards on {}: {prev} at {} then {} at {}",
                    site.name(),
                    secs(prev_at),
                    v.epoch,
                    secs(round.at)
                ));
            }
            last_epoch[site.index()] = Some((v.epoch, round.at));
            let Some(master) = &v.master else { continue };
            match master_of_epoch.get(&v.epoch) {
                Some((m, by, at)) if m != master => report.violations.push(format!(
                    "epoch {} has two masters: {} said {m} at {}, {} says {master} at {}",
                    v.epoch,
                    by.name(),
                    secs(*at),
                    site.name(),
                    secs(round.at)
                )),
                Some(_) => {}
                None => {
                    master_of_epoch.insert(v.epoch, (master.clone(), site, round.at));
                }
            }
            if v.epoch > seen_max {
                if seen_max > 0 {
                    report.failovers.push(Failover {
                        seen_at: round.at,
                        epoch: v.epoch,
                        master: master.clone(),
                    });
                }
                seen_max = v.epoch;
            }
        }
    }
}

fn check_convergence(records: &Records, bounds: &Bounds, report: &mut Report) {
    for (i, heal) in records.events.iter().enumerate() {
        if heal.kind != EventKind::Heal {
            continue;
        }
        let next_fault = records.events[i + 1..]
            .iter()
            .find(|e| e.kind == EventKind::Inject)
            .map(|e| e.at);
        let took = records
            .rounds
            .iter()
            .filter(|r| r.at >= heal.at && next_fault.is_none_or(|n| r.at < n))
            .find(|r| converged(&r.views).is_some())
            .map(|r| r.at - heal.at);
        match took {
            Some(t) if t > bounds.converge => report.violations.push(format!(
                "slow convergence after healing {}: {} ms (bound {} ms)",
                heal.label,
                t.as_millis(),
                bounds.converge.as_millis()
            )),
            None => report.violations.push(format!(
                "no convergence after healing {} at {}",
                heal.label,
                secs(heal.at)
            )),
            Some(_) => {}
        }
        report.convergence.push(Convergence {
            heal: heal.label.clone(),
            healed_at: heal.at,
            took,
        });
    }
}

fn secs(d: Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}

impl Report {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }

    /// Lost acknowledged writes in percent of all acknowledged writes.
    pub fn lost_percent(&self) -> f64 {
        if self.acks == 0 {
            0.0
        } else {
            100.0 * self.lost.len() as f64 / self.acks as f64
        }
    }

    /// Slowest convergence after a heal.
    pub fn worst_convergence(&self) -> Option<Duration> {
        self.convergence.iter().filter_map(|c| c.took).max()
    }

    /// A human-readable summary.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "acknowledged writes     {} ({} failed or refused attempts)",
            self.acks, self.failed_writes
        );
        let _ = writeln!(
            out,
            "failovers               {}{}",
            self.failovers.len(),
            self.failovers
                .iter()
                .map(|f| format!(
                    " [epoch {} -> {} at {}]",
                    f.epoch,
                    f.master,
                    secs(f.seen_at)
                ))
                .collect::<String>()
        );
        let _ = writeln!(
            out,
            "max unavailability      {} ms (from {})",
            self.max_unavailable.0.as_millis(),
            secs(self.max_unavailable.1)
        );
        let dual = match &self.closest {
            Some(a) if a.overlap_ms >= 0 => format!(
                "{} ms ({} and {} at {})",
                a.overlap_ms,
                a.first.node.name(),
                a.second.node.name(),
                secs(a.first.start.max(a.second.start))
            ),
            Some(a) => format!(
                "none; closest handover {} ms ({} -> {} at {})",
                -a.overlap_ms,
                a.first.node.name(),
                a.second.node.name(),
                secs(a.first.end.min(a.second.end))
            ),
            None => "none; writes went to one node only".to_string(),
        };
        let _ = writeln!(
            out,
            "worst dual-master overlap {dual} [{} write windows]",
            self.windows
        );
        let _ = writeln!(
            out,
            "dual-write overlap total {} ms, {} writes acked by the outgoing master meanwhile",
            self.overlap_total_ms,
            self.overlap_acks.len()
        );
        let _ = writeln!(
            out,
            "unavailability total    {} ms (gaps >= 100 ms without an acknowledged write)",
            self.unavailable_total.as_millis()
        );
        let _ = writeln!(
            out,
            "lost acknowledged writes {} [{:.3}% of acks]",
            lost_summary(&self.lost),
            self.lost_percent()
        );
        let conv: Vec<Duration> = self.convergence.iter().filter_map(|c| c.took).collect();
        if conv.is_empty() {
            let _ = writeln!(out, "convergence after heal  (no heals)");
        } else {
            let mean = conv.iter().sum::<Duration>() / u32::try_from(conv.len()).unwrap_or(1);
            let _ = writeln!(
                out,
                "convergence after heal  {} heals, mean {} ms, max {} ms",
                self.convergence.len(),
                mean.as_millis(),
                conv.iter().max().copied().unwrap_or_default().as_millis()
            );
        }
        let _ = writeln!(out, "violations              {}", self.violations.len());
        for v in &self.violations {
            let _ = writeln!(out, "  - {v}");
        }
        out
    }
}

fn lost_summary(lost: &[Ack]) -> String {
    if lost.is_empty() {
        return "0".to_string();
    }
    let mut by_node: BTreeMap<Site, (usize, Duration, Duration)> = BTreeMap::new();
    for a in lost {
        let e = by_node.entry(a.node).or_insert((0, a.at, a.at));
        e.0 += 1;
        e.1 = e.1.min(a.at);
        e.2 = e.2.max(a.at);
    }
    let parts: Vec<String> = by_node
        .iter()
        .map(|(node, (n, from, to))| {
            format!(
                "{n} acked by {} in {}..{}",
                node.name(),
                secs(*from),
                secs(*to)
            )
        })
        .collect();
    format!("{} ({})", lost.len(), parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(node: Site, ms: u64) -> Ack {
        Ack {
            writer: Site::C,
            node,
            key: format!("k{ms}"),
            sent: Duration::from_millis(ms),
            at: Duration::from_millis(ms),
        }
    }

    #[test]
    fn a_clean_handover_is_a_gap_not_an_overlap() {
        let acks: Vec<Ack> = (0..10)
            .map(|i| ack(Site::A, i * 10))
            .chain((0..10).map(|i| ack(Site::B, 2_000 + i * 10)))
            .chain((0..10).map(|i| ack(Site::A, 9_000 + i * 10)))
            .collect();
        let report = check(
            &Records {
                acks,
                ..Records::default()
            },
            &Bounds::default(),
            Vec::new(),
        );
        assert!(report.ok(), "{}", report.summary());
        assert_eq!(report.windows, 3);
        assert_eq!(
            report.closest.map(|c| c.overlap_ms),
            Some(-(2_000 - 90)),
            "closest handover is A's last ack at 90 ms to B's first at 2000 ms"
        );
        assert_eq!(
            report.max_unavailable.0,
            Duration::from_millis(9_000 - 2_090)
        );
    }

    #[test]
    fn interleaved_acks_of_two_nodes_are_a_violation() {
        let acks = vec![
            ack(Site::A, 0),
            ack(Site::A, 100),
            ack(Site::B, 150),
            ack(Site::A, 200),
            ack(Site::B, 300),
        ];
        let report = check(
            &Records {
                acks,
                ..Records::default()
            },
            &Bounds::default(),
            Vec::new(),
        );
        assert!(!report.ok());
        assert_eq!(report.closest.map(|c| c.overlap_ms), Some(50));
    }

    fn sample(epoch: u64, master: &str, is_master: bool, role: &str) -> Option<Sample> {
        Some(Sample {
            epoch,
            master: Some(master.to_string()),
            is_master,
            role: role.to_string(),
            fenced: false,
            link_up: (role == "replica").then_some(true),
            raft_state: "Follower".into(),
            raft_leader: None,
            recovering: false,
        })
    }

    #[test]
    fn epochs_must_not_go_back_or_name_two_masters() {
        let round = |ms, views| super::super::workload::Round {
            at: Duration::from_millis(ms),
            views,
        };
        let rounds = vec![
            round(
                0,
                [
                    sample(2, "site-a", true, "master"),
                    sample(2, "site-a", false, "replica"),
                    sample(2, "site-a", false, "witness"),
                ],
            ),
            round(
                100,
                [
                    sample(1, "site-a", true, "master"),
                    sample(2, "site-b", false, "replica"),
                    None,
                ],
            ),
        ];
        let report = check(
            &Records {
                rounds,
                ..Records::default()
            },
            &Bounds::default(),
            Vec::new(),
        );
        assert_eq!(report.violations.len(), 2, "{:?}", report.violations);
    }

    #[test]
    fn a_node_recovering_a_lost_store_claims_no_epoch_but_must_come_back_level() {
        let round = |ms, views| super::super::workload::Round {
            at: Duration::from_millis(ms),
            views,
        };
        let recovering = Some(Sample {
            recovering: true,
            master: None,
            ..sample(0, "", false, "replica").expect("a sample")
        });
        let rounds = |after: Option<Sample>| {
            vec![
                round(0, [sample(5, "site-a", true, "master"), None, None]),
                round(100, [recovering.clone(), None, None]),
                round(200, [after, None, None]),
            ]
        };
        let violations = |rounds| {
            check(
                &Records {
                    rounds,
                    ..Records::default()
                },
                &Bounds::default(),
                Vec::new(),
            )
            .violations
        };
        assert_eq!(
            violations(rounds(sample(5, "site-a", true, "master"))),
            Vec::<String>::new()
        );
        assert_eq!(
            violations(rounds(sample(4, "site-a", true, "master"))).len(),
            1,
            "recovered to an older epoch"
        );
        let mut forgot = recovering.clone();
        if let Some(v) = forgot.as_mut() {
            v.recovering = false;
        }
        assert_eq!(
            violations(vec![
                round(0, [sample(5, "site-a", true, "master"), None, None]),
                round(100, [forgot, None, None]),
            ])
            .len(),
            1,
            "epoch 0 without saying it recovers"
        );
    }

    #[test]
    fn converged_needs_one_unfenced_master_and_a_linked_replica() {
        let good = [
            sample(3, "site-b", false, "replica"),
            sample(3, "site-b", true, "master"),
            sample(3, "site-b", false, "witness"),
        ];
        assert_eq!(converged(&good), Some(Site::B));
        let mut unlinked = good.clone();
        if let Some(v) = unlinked[0].as_mut() {
            v.link_up = Some(false);
        }
        assert_eq!(converged(&unlinked), None);
        let mut silent = good.clone();
        silent[2] = None;
        assert_eq!(converged(&silent), None);
    }
}
