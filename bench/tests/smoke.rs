//! One short run of every scenario against real processes: the benchmark produces
//! sane figures for both systems, and our planned switchover loses no acknowledged write.

use std::time::Duration;

use bench::procs::{self, ServerCommand};
use bench::report::{OURS, Record, SENTINEL, scaling_table, table};
use bench::scenario::{
    BINARY, COORDINATOR, CPU, DISCOVERY, FIRST_NEW_ACK, LOST, RSS, RunContext, Scenario,
    WRITE_UNAVAILABLE,
};
use bench::{Options, binary};

fn find<'a>(records: &'a [Record], scenario: &str, system: &str) -> &'a Record {
    records
        .iter()
        .find(|r| r.scenario == scenario && r.system == system && r.role.is_none())
        .unwrap_or_else(|| panic!("no {scenario} record for {system}: {records:#?}"))
}

fn metric(r: &Record, name: &str) -> f64 {
    *r.metrics
        .get(name)
        .unwrap_or_else(|| panic!("{name} missing in {r:?}"))
}

#[test]
fn one_short_run_of_every_scenario() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The debug agent next to this test, rebuilt first if its sources changed.
    let agent_bin = binary::agent_binary("debug", true).expect("agent binary");
    let options = Options {
        context: RunContext {
            agent_bin,
            io_timeout: Duration::from_millis(100),
            warmup: Duration::from_millis(500),
            idle_window: Duration::from_secs(2),
            server: ServerCommand {
                // $RORC_REDIS_SERVER runs it on another server, e.g. valkey-server.
                program: procs::default_redis_server(),
                // A silent master is noticed by its replica after repl-timeout; keep it short.
                args: vec!["--repl-timeout".into(), "3".into()],
            },
        },
        runs: 1,
        scenarios: vec![
            Scenario::Kill,
            Scenario::HostLoss,
            Scenario::Switchover,
            Scenario::Footprint,
            Scenario::Scaling,
        ],
        down_after: vec![Duration::from_secs(1)],
        ours_defaults: false,
        ours_fast_crash: false,
        sentinel_defaults: false,
        scaling: vec![2, 4],
        keep_logs: None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut sink = |_: &Record| Ok(());
    let records = runtime
        .block_on(bench::run(&options, &mut sink))
        .expect("benchmark");
    println!("{}", table(&records));

    let failed: Vec<&Record> = records.iter().filter(|r| r.error.is_some()).collect();
    assert!(failed.is_empty(), "failed runs: {failed:#?}");
    for scenario in ["kill", "host-loss", "switchover"] {
        for system in [OURS, SENTINEL] {
            let r = find(&records, scenario, system);
            for name in [WRITE_UNAVAILABLE, DISCOVERY] {
                let v = metric(r, name);
                assert!(v > 0.0 && v < 60_000.0, "{scenario} {system} {name} = {v}");
            }
            assert!(metric(r, LOST) >= 0.0);
        }
    }
    assert_eq!(
        metric(find(&records, "switchover", OURS), LOST),
        0.0,
        "our planned switchover lost acknowledged writes"
    );

    let idle = |role: &str| {
        records
            .iter()
            .filter(|r| r.config == "idle (defaults)" && r.role.as_deref() == Some(role))
            .collect::<Vec<_>>()
    };
    // Two data agents and the witness, one of them the Raft leader; three sentinels.
    for (role, at_least, at_most) in [
        (COORDINATOR, 1, 1),
        ("data agent", 1, 2),
        ("witness", 0, 1),
        ("sentinel", 3, 3),
    ] {
        let measured = idle(role);
        assert!(
            (at_least..=at_most).contains(&measured.len()),
            "idle {role}: {measured:#?}"
        );
        for r in measured {
            assert!(metric(r, RSS) > 1.0 && metric(r, CPU) >= 0.0, "{r:?}");
        }
    }
    assert_eq!(
        idle(COORDINATOR).len() + idle("data agent").len() + idle("witness").len(),
        3,
        "every agent measured once"
    );
    for system in [OURS, SENTINEL] {
        let size = records
            .iter()
            .find(|r| r.config == "binary" && r.system == system)
            .map(|r| metric(r, BINARY));
        assert!(
            size.is_some_and(|s| s > 0.1),
            "{system} binary size {size:?}"
        );
    }
    for n in [2, 4] {
        let config = format!("{n} data nodes");
        let (agents, cluster): (Vec<&Record>, Vec<&Record>) = records
            .iter()
            .filter(|r| r.scenario == "scaling" && r.config == config)
            .partition(|r| r.role.is_some());
        assert_eq!(agents.len(), n + 1, "{n} data agents and the witness");
        assert_eq!(
            agents
                .iter()
                .filter(|r| r.role.as_deref() == Some(COORDINATOR))
                .count(),
            1
        );
        assert_eq!(cluster.len(), 1, "one failover record: {cluster:#?}");
        let failover = metric(cluster[0], FIRST_NEW_ACK);
        assert!(
            failover > 0.0 && failover < 60_000.0,
            "{n} nodes failover {failover}"
        );
    }
    let scaling = scaling_table(&records).expect("scaling table of 2 and 4 nodes");
    assert!(scaling.contains("per node"), "{scaling}");
}
