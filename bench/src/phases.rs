//! Where a failover's time goes, read from our agents' JSON logs after a run: the
//! coordinator's decision, the commit of the new master, its agent's promotion. With the
//! bench's own moments (the event, the first acknowledged write on the new master) these
//! split the failover into detect, commit, promote and client rediscovery.

use std::path::Path;
use std::time::SystemTime;

use serde::Deserialize;

/// One log line, as far as the phases need it.
#[derive(Deserialize)]
struct Line {
    timestamp: String,
    message: String,
    #[serde(default)]
    command: Option<String>,
}

/// The agents' moments of one failover, each the first after the event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Moments {
    /// The failed master's agent logs its Redis down (a SIGKILL; not a host loss).
    pub seen: Option<SystemTime>,
    /// The coordinator decides the failover: its decision before the commit.
    pub decided: Option<SystemTime>,
    /// The new master is committed.
    pub committed: Option<SystemTime>,
    /// The new master's agent has promoted its Redis.
    pub promoted: Option<SystemTime>,
}

struct Event {
    at: SystemTime,
    agent: usize,
    message: String,
    set_master: bool,
}

/// The moments after `since` in the `agent.log` of every node directory under `run_dir`.
/// Lines that are not the agent's JSON (a panic message, say) are skipped.
pub fn moments(run_dir: &Path, since: SystemTime) -> Moments {
    let mut events = Vec::new();
    let Ok(nodes) = std::fs::read_dir(run_dir) else {
        return Moments::default();
    };
    for (agent, node) in nodes.flatten().enumerate() {
        let Ok(text) = std::fs::read_to_string(node.path().join("agent.log")) else {
            continue;
        };
        for line in text.lines() {
            let Ok(line) = serde_json::from_str::<Line>(line) else {
                continue;
            };
            let Ok(at) = humantime::parse_rfc3339(&line.timestamp) else {
                continue;
            };
            if at >= since {
                events.push(Event {
                    at,
                    agent,
                    set_master: line
                        .command
                        .as_deref()
                        .is_some_and(|c| c.starts_with("SetMaster")),
                    message: line.message,
                });
            }
        }
    }
    events.sort_by_key(|e| e.at);
    of_events(&events)
}

fn of_events(events: &[Event]) -> Moments {
    let first = |message: &str, from: SystemTime| {
        events
            .iter()
            .find(|e| e.message == message && e.at >= from)
            .map(|e| e.at)
    };
    let commit = events
        .iter()
        .find(|e| e.message.starts_with("committed") && e.set_master);
    let decided = commit.and_then(|c| {
        events
            .iter()
            .rev()
            .filter(|e| e.at <= c.at && e.agent == c.agent)
            .find(|e| e.message == "coordinator decided")
            .map(|e| e.at)
    });
    let committed = commit.map(|c| c.at);
    Moments {
        seen: first("local redis is down", SystemTime::UNIX_EPOCH),
        decided,
        committed,
        promoted: committed.and_then(|c| first("promoted local redis to master", c)),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn write_log(dir: &Path, node: &str, lines: &[(&str, &str, Option<&str>)]) {
        let node_dir = dir.join(node);
        std::fs::create_dir_all(&node_dir).unwrap();
        let text: Vec<String> = lines
            .iter()
            .map(|(at, message, command)| {
                let mut v =
                    serde_json::json!({"timestamp": at, "level": "INFO", "message": message});
                if let Some(c) = command {
                    v["command"] = serde_json::json!(c);
                }
                v.to_string()
            })
            .chain(std::iter::once(
                "thread 'main' panicked: not json".to_string(),
            ))
            .collect();
        std::fs::write(node_dir.join("agent.log"), text.join("\n")).unwrap();
    }

    #[test]
    fn the_moments_of_a_failover_come_from_the_coordinator_and_the_new_master() {
        let dir = tempfile::tempdir().unwrap();
        let at = |s: &str| humantime::parse_rfc3339(s).unwrap();
        write_log(
            dir.path(),
            "data-1",
            &[
                ("2026-12-02T03:00:00.000Z", "local redis is down", None),
                ("2026-12-02T03:00:01.000Z", "local redis is down", None),
            ],
        );
        write_log(
            dir.path(),
            "data-2",
            &[
                ("2026-12-02T03:00:00.700Z", "coordinator decided", None),
                ("2026-12-02T03:00:01.050Z", "coordinator decided", None),
                (
                    "2026-12-02T03:00:01.060Z",
                    "committed",
                    Some("Register { .. }"),
                ),
                (
                    "2026-12-02T03:00:01.070Z",
                    "committed",
                    Some("SetMaster { node: 2 }"),
                ),
                (
                    "2026-12-02T03:00:01.300Z",
                    "promoted local redis to master",
                    None,
                ),
            ],
        );
        let m = moments(dir.path(), at("2026-12-02T03:00:00.900Z"));
        assert_eq!(
            m,
            Moments {
                seen: Some(at("2026-12-02T03:00:01.000Z")),
                decided: Some(at("2026-12-02T03:00:01.050Z")),
                committed: Some(at("2026-12-02T03:00:01.070Z")),
                promoted: Some(at("2026-12-02T03:00:01.300Z")),
            }
        );
        let none = moments(
            dir.path(),
            at("2026-12-02T03:00:01.071Z") + Duration::from_secs(1),
        );
        assert_eq!(none, Moments::default());
    }
}
