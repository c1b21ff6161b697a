//! The operator CLI against a real cluster: status, switchover, history, members, and
//! clear errors for a wrong secret or an unreachable agent.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::cluster::{Cluster, SECRET, binary, run_serial};

fn ctl(args: &[&str], secret: &str) -> Output {
    Command::new(binary())
        .args(args)
        .env("SHARED_SECRET", secret)
        .env_remove("ORCHESTRATOR_AGENT")
        .output()
        .expect("run the CLI")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn cli_reports_status_switches_over_and_explains_errors() {
    run_serial(async {
        let mut c = Cluster::new();
        c.start_all();
        let m = c.wait_stable_master(Duration::from_secs(25)).await;
        let agent = c.nodes[2].api_addr();

        let out = ctl(&["status", "--agent", &agent], SECRET);
        assert!(out.status.success(), "{out:?}");
        let text = stdout(&out);
        assert!(
            text.contains(&format!("master {} at epoch 1", c.nodes[m].name)),
            "{text}"
        );
        for header in ["MEMBER", "ROLE", "OFFSET", "LAG", "RAFT", "HEALTH"] {
            assert!(text.contains(header), "{text}");
        }
        assert_eq!(
            text.lines().filter(|l| l.contains(" ok")).count(),
            3,
            "three healthy members: {text}"
        );

        let out = ctl(&["status", "--agent", &agent, "--output", "json"], SECRET);
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json status");
        assert_eq!(json["members"].as_array().map(Vec::len), Some(3));
        assert_eq!(json["master"], serde_json::json!(c.nodes[m].name));

        let target = c.nodes[1 - m].name.clone();
        let out = ctl(
            &[
                "switchover",
                "--to",
                &target,
                "--agent",
                &agent,
                "--timeout",
                "15s",
            ],
            SECRET,
        );
        assert!(out.status.success(), "{out:?}");
        let done: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json answer");
        assert_eq!(
            (done["to"].clone(), done["epoch"].clone()),
            (serde_json::json!(target), serde_json::json!(2))
        );

        let text = stdout(&ctl(&["history", "--agent", &agent], SECRET));
        assert!(
            text.contains("first master") && text.contains("switchover from"),
            "{text}"
        );
        let text = stdout(&ctl(&["members", "--agent", &agent], SECRET));
        assert_eq!(text.matches("voter").count(), 3, "{text}");

        let out = ctl(&["status", "--agent", &agent], "wrong-secret");
        assert_eq!(out.status.code(), Some(1));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("shared secret"),
            "{out:?}"
        );
        let out = ctl(
            &["status", "--agent", "127.0.0.1:1", "--timeout", "1s"],
            SECRET,
        );
        assert_eq!(out.status.code(), Some(1));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("cannot reach agent"),
            "{out:?}"
        );
    });
}
