//! Sentinel's pub/sub events, derived by comparing two consecutive views.
//!
//! Payloads follow Sentinel's formats: `master <name> <ip> <port>` for the master,
//! `slave <ip>:<port> <ip> <port> @ <name> <master-ip> <master-port>` for a replica,
//! `sentinel <runid> <ip> <port> @ ...` for another Sentinel.
//!
//! What maps to what:
//! - `+sdown`/`-sdown`: a node's Redis is down for `--redis-down-after` (or its agent
//!   silent for `--down-after`), and back; for peers, their agent silent and back.
//! - `+odown`/`-odown`: the master's `s_down`, because the health it rests on is the
//!   coordinator's, which a quorum follows.
//! - A master change: on the coordinator's endpoint, Sentinel's failover-leader sequence
//!   (`+new-epoch`, `+try-failover`, `+elected-leader`, `+failover-state-*`,
//!   `+selected-slave`, `+promoted-slave`, `+failover-end`); on the others
//!   `+new-epoch` and `+config-update-from` naming the coordinator. Everywhere then
//!   `+switch-master` and `+slave` for every replica of the new master.
//! - A planned switchover starts the leader sequence when it is committed; abandoned, it
//!   ends with `-failover-abort-slave-timeout`.
//! - `+slave`: a new replica; `+convert-to-slave`: a node last seen as master reports as
//!   a replica (the old master rejoined and its agent demoted it); `+sentinel`: a new peer.

use super::{Instance, PeerSentinel, SentinelView};
use crate::model::RedisRole;

/// `(channel, payload)` pairs in publication order.
pub type Events = Vec<(String, String)>;

/// What changed from `old` to `new`, as Sentinel would have published it.
pub fn events(master_name: &str, old: &SentinelView, new: &SentinelView) -> Events {
    let mut out = Events::new();
    let mut push = |channel: &str, payload: String| out.push((channel.to_string(), payload));
    let master_id = |view: &SentinelView| {
        view.master.as_ref().map(|m| {
            format!(
                "master {master_name} {} {}",
                m.endpoint.host, m.endpoint.port
            )
        })
    };
    let under = |view: &SentinelView| {
        view.master.as_ref().map_or_else(
            || format!("@ {master_name} ? 0"),
            |m| format!("@ {master_name} {} {}", m.endpoint.host, m.endpoint.port),
        )
    };
    let slave = |i: &Instance, view: &SentinelView| {
        format!(
            "slave {} {} {} {}",
            i.endpoint.addr(),
            i.endpoint.host,
            i.endpoint.port,
            under(view)
        )
    };
    let sentinel = |s: &PeerSentinel, view: &SentinelView| {
        format!("sentinel {} {} {} {}", s.runid, s.host, s.port, under(view))
    };
    let quorum = format!("#quorum {}/{}", new.quorum, new.quorum);

    let switched = match (&old.master, &new.master) {
        (Some(from), Some(to)) => {
            from.endpoint.addr() != to.endpoint.addr() || old.epoch != new.epoch
        }
        _ => false,
    };
    let leader = new.is_coordinator();

    match (&old.master, &new.master) {
        (Some(from), Some(to)) if switched => {
            let old_master = master_id(old).unwrap_or_default();
            // The master may have been flagged and replaced between two views.
            let old_now_down = new.instance(from.node).is_some_and(|i| i.health.s_down());
            if !old.master_down() && old_now_down {
                push("+sdown", old_master.clone());
                push("+odown", format!("{old_master} {quorum}"));
            }
            push("+new-epoch", new.epoch.to_string());
            let promoted = new
                .instance(to.node)
                .or(old.instance(to.node))
                .unwrap_or(to);
            let promoted = slave(promoted, old);
            if leader {
                if old.failover_to.is_none() {
                    failover_start(&mut push, &old_master, &promoted);
                }
                push("+promoted-slave", promoted.clone());
                push("+failover-state-reconf-slaves", old_master.clone());
                push("+failover-end", old_master);
            } else if let Some(s) = new
                .coordinator
                .as_ref()
                .and_then(|c| new.sentinels.iter().find(|s| &s.runid == c))
            {
                push("+config-update-from", sentinel(s, old));
            }
            push(
                "+switch-master",
                format!(
                    "{master_name} {} {} {} {}",
                    from.endpoint.host, from.endpoint.port, to.endpoint.host, to.endpoint.port
                ),
            );
            for replica in &new.replicas {
                push("+slave", slave(replica, new));
            }
            for replica in new.replicas.iter().filter(|r| r.health.s_down()) {
                push("+sdown", slave(replica, new));
            }
        }
        (_, Some(_)) => {
            let master = master_id(new).unwrap_or_default();
            if old.master.is_some() {
                match (old.master_down(), new.master_down()) {
                    (false, true) => {
                        push("+sdown", master.clone());
                        push("+odown", format!("{master} {quorum}"));
                    }
                    (true, false) => {
                        push("-sdown", master.clone());
                        push("-odown", master.clone());
                    }
                    _ => {}
                }
            }
            match (old.failover_to, new.failover_to) {
                (None, Some(to)) if leader => {
                    if let Some(target) = new.instance(to) {
                        failover_start(&mut push, &master, &slave(target, new));
                    }
                }
                (Some(_), None) if leader => push("-failover-abort-slave-timeout", master),
                _ => {}
            }
            for replica in &new.replicas {
                let Some(before) = old.replicas.iter().find(|r| r.node == replica.node) else {
                    push("+slave", slave(replica, new));
                    continue;
                };
                let id = slave(replica, new);
                match (before.health.s_down(), replica.health.s_down()) {
                    (false, true) => push("+sdown", id.clone()),
                    (true, false) => push("-sdown", id.clone()),
                    _ => {}
                }
                if before.health.role == Some(RedisRole::Master)
                    && replica.health.role == Some(RedisRole::Replica)
                {
                    push("+convert-to-slave", id);
                }
            }
        }
        (_, None) => {}
    }

    for peer in &new.sentinels {
        let id = sentinel(peer, new);
        match old.sentinels.iter().find(|s| s.runid == peer.runid) {
            None => push("+sentinel", id),
            Some(before) => match (before.down_since.is_some(), peer.down_since.is_some()) {
                (false, true) => push("+sdown", id),
                (true, false) => push("-sdown", id),
                _ => {}
            },
        }
    }
    out
}

/// The first half of Sentinel's leader sequence: from deciding to fail over to waiting
/// for the chosen replica's promotion.
fn failover_start(push: &mut impl FnMut(&str, String), master: &str, target: &str) {
    push("+try-failover", master.to_string());
    push("+elected-leader", master.to_string());
    push("+failover-state-select-slave", master.to_string());
    push("+selected-slave", target.to_string());
    push("+failover-state-send-slaveof-noone", target.to_string());
    push("+failover-state-wait-promotion", target.to_string());
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::sentinel::{Endpoint, Health};

    fn node(id: u64, port: u16) -> Instance {
        Instance {
            node: id,
            endpoint: Endpoint {
                name: format!("n{id}"),
                host: "10.0.0.1".into(),
                port,
            },
            health: Health {
                role: Some(if id == 1 {
                    RedisRole::Master
                } else {
                    RedisRole::Replica
                }),
                link_up: id != 1,
                ..Health::default()
            },
            priority: 100,
        }
    }

    fn down(mut i: Instance) -> Instance {
        i.health.down_since = Some(Instant::now() - Duration::from_secs(1));
        i.health.link_up = false;
        i
    }

    fn role(mut i: Instance, role: RedisRole) -> Instance {
        i.health.role = Some(role);
        i
    }

    fn peer(runid: &str, port: u16) -> PeerSentinel {
        PeerSentinel {
            runid: runid.into(),
            host: "10.0.0.9".into(),
            port,
            down_since: None,
            last_seen: None,
        }
    }

    /// Node 1 (port 6001) master, node 2 (6002) replica, seen by "me"; "lead" coordinates.
    fn base() -> SentinelView {
        SentinelView {
            myid: "me".into(),
            epoch: 1,
            master: Some(node(1, 6001)),
            replicas: vec![node(2, 6002)],
            sentinels: vec![peer("lead", 26001)],
            voters: 3,
            usable: 3,
            quorum: 2,
            coordinator: Some("lead".into()),
            ..SentinelView::default()
        }
    }

    fn run(old: &SentinelView, new: &SentinelView) -> Vec<String> {
        events("mymaster", old, new)
            .into_iter()
            .map(|(c, p)| format!("{c} {p}"))
            .collect()
    }

    const M1: &str = "master mymaster 10.0.0.1 6001";
    const S2: &str = "slave 10.0.0.1:6002 10.0.0.1 6002 @ mymaster 10.0.0.1 6001";

    #[test]
    fn nothing_changes_nothing_is_published() {
        assert!(run(&base(), &base()).is_empty());
        let mut offsets = base();
        offsets.replicas[0].health.offset = 99;
        assert!(run(&base(), &offsets).is_empty());
    }

    #[test]
    fn replica_and_master_down_and_up() {
        let cases: Vec<(SentinelView, SentinelView, Vec<String>)> = vec![
            (
                base(),
                SentinelView {
                    replicas: vec![down(node(2, 6002))],
                    ..base()
                },
                vec![format!("+sdown {S2}")],
            ),
            (
                SentinelView {
                    replicas: vec![down(node(2, 6002))],
                    ..base()
                },
                base(),
                vec![format!("-sdown {S2}")],
            ),
            (
                base(),
                SentinelView {
                    master: Some(down(node(1, 6001))),
                    ..base()
                },
                vec![format!("+sdown {M1}"), format!("+odown {M1} #quorum 2/2")],
            ),
            (
                SentinelView {
                    master: Some(down(node(1, 6001))),
                    ..base()
                },
                base(),
                vec![format!("-sdown {M1}"), format!("-odown {M1}")],
            ),
            (
                base(),
                SentinelView {
                    stale: true,
                    ..base()
                },
                vec![format!("+sdown {M1}"), format!("+odown {M1} #quorum 2/2")],
            ),
            (
                SentinelView {
                    replicas: vec![],
                    ..base()
                },
                base(),
                vec![format!("+slave {S2}")],
            ),
            (
                SentinelView {
                    replicas: vec![role(down(node(2, 6002)), RedisRole::Master)],
                    ..base()
                },
                base(),
                vec![format!("-sdown {S2}"), format!("+convert-to-slave {S2}")],
            ),
            (
                SentinelView {
                    sentinels: vec![],
                    ..base()
                },
                base(),
                vec!["+sentinel sentinel lead 10.0.0.9 26001 @ mymaster 10.0.0.1 6001".into()],
            ),
        ];
        for (i, (old, new, want)) in cases.into_iter().enumerate() {
            assert_eq!(run(&old, &new), want, "case {i}");
        }
    }

    /// The master is killed and node 2 promoted, as one step (views coalesced).
    fn failed_over(coordinator: &str) -> (SentinelView, SentinelView) {
        let old = SentinelView {
            coordinator: Some(coordinator.into()),
            ..base()
        };
        let new = SentinelView {
            epoch: 2,
            master: Some(role(node(2, 6002), RedisRole::Master)),
            replicas: vec![down(node(1, 6001))],
            ..old.clone()
        };
        (old, new)
    }

    #[test]
    fn a_failover_seen_by_a_follower_endpoint() {
        let (old, new) = failed_over("lead");
        assert_eq!(
            run(&old, &new),
            [
                format!("+sdown {M1}"),
                format!("+odown {M1} #quorum 2/2"),
                "+new-epoch 2".to_string(),
                "+config-update-from sentinel lead 10.0.0.9 26001 @ mymaster 10.0.0.1 6001".into(),
                "+switch-master mymaster 10.0.0.1 6001 10.0.0.1 6002".into(),
                "+slave slave 10.0.0.1:6001 10.0.0.1 6001 @ mymaster 10.0.0.1 6002".into(),
                "+sdown slave 10.0.0.1:6001 10.0.0.1 6001 @ mymaster 10.0.0.1 6002".into(),
            ]
        );
        // Flagged down one view earlier: no second +sdown of the master.
        let flagged = SentinelView {
            master: Some(down(node(1, 6001))),
            ..old
        };
        let got = run(&flagged, &new);
        assert_eq!(got[0], "+new-epoch 2");
    }

    #[test]
    fn a_failover_seen_by_the_coordinator_endpoint() {
        let (old, new) = failed_over("me");
        let got = run(&old, &new);
        let channels: Vec<&str> = got
            .iter()
            .map(|e| e.split(' ').next().unwrap_or(""))
            .collect();
        assert_eq!(
            channels,
            [
                "+sdown",
                "+odown",
                "+new-epoch",
                "+try-failover",
                "+elected-leader",
                "+failover-state-select-slave",
                "+selected-slave",
                "+failover-state-send-slaveof-noone",
                "+failover-state-wait-promotion",
                "+promoted-slave",
                "+failover-state-reconf-slaves",
                "+failover-end",
                "+switch-master",
                "+slave",
                "+sdown",
            ]
        );
        assert_eq!(got[3], format!("+try-failover {M1}"));
        assert_eq!(got[6], format!("+selected-slave {S2}"));
        assert_eq!(got[11], format!("+failover-end {M1}"));
    }

    #[test]
    fn a_planned_switchover_on_the_coordinator() {
        let old = SentinelView {
            coordinator: Some("me".into()),
            ..base()
        };
        let begun = SentinelView {
            failover_to: Some(2),
            ..old.clone()
        };
        let got = run(&old, &begun);
        assert_eq!(
            got.first().map(String::as_str),
            Some(format!("+try-failover {M1}").as_str())
        );
        assert_eq!(got.len(), 6);
        let done = SentinelView {
            epoch: 2,
            master: Some(role(node(2, 6002), RedisRole::Master)),
            replicas: vec![node(1, 6001)],
            failover_to: None,
            ..begun.clone()
        };
        let got = run(&begun, &done);
        assert_eq!(got[0], "+new-epoch 2");
        assert_eq!(got[1], format!("+promoted-slave {S2}"));
        assert!(!got.iter().any(|e| e.starts_with("+try-failover")));
        assert!(got.contains(&"+switch-master mymaster 10.0.0.1 6001 10.0.0.1 6002".to_string()));
        // The old master reports as a replica once demoted.
        let demoted = SentinelView {
            replicas: vec![role(node(1, 6001), RedisRole::Replica)],
            ..done.clone()
        };
        assert_eq!(
            run(&done, &demoted),
            ["+convert-to-slave slave 10.0.0.1:6001 10.0.0.1 6001 @ mymaster 10.0.0.1 6002"]
        );
        assert_eq!(
            run(&begun, &old),
            [format!("-failover-abort-slave-timeout {M1}")]
        );
    }

    #[test]
    fn no_switch_without_an_old_master() {
        let none = SentinelView {
            master: None,
            ..base()
        };
        assert!(
            !run(&none, &base())
                .iter()
                .any(|e| e.starts_with("+switch-master"))
        );
        assert!(run(&base(), &none).is_empty());
        let again = SentinelView { epoch: 2, ..base() };
        assert!(
            run(&base(), &again)
                .contains(&"+switch-master mymaster 10.0.0.1 6001 10.0.0.1 6001".to_string())
        );
    }
}
