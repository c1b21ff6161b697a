//! Side-by-side benchmark of redis-orchestrator and Redis Sentinel on 127.0.0.1:
//! failover time, lost acknowledged writes, memory and CPU. `main.rs` is the command;
//! the smoke test drives [`run`] with small settings.

pub mod binary;
pub mod discovery;
pub mod ours;
pub mod phases;
pub mod procs;
pub mod report;
pub mod scenario;
pub mod sentinel;
pub mod writer;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use ours::Timing;
use report::Record;
use scenario::{RunContext, Scenario, System};
use sentinel::SentinelTiming;

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    pub context: RunContext,
    pub runs: usize,
    pub scenarios: Vec<Scenario>,
    /// Detection timeouts at which both systems run, with equal settings.
    pub down_after: Vec<Duration>,
    /// Also run ours with its default settings.
    pub ours_defaults: bool,
    /// In the kill scenario, also run ours at each `down_after` with the default
    /// `--redis-down-after` (50 ms).
    pub ours_fast_crash: bool,
    /// Also run Sentinel with its default settings (30 s down-after).
    pub sentinel_defaults: bool,
    /// Data node counts for the scaling scenario.
    pub scaling: Vec<usize>,
    /// Keep every run's logs under this directory instead of deleting them.
    pub keep_logs: Option<PathBuf>,
}

impl Options {
    fn systems(&self, scenario: Scenario) -> Vec<System> {
        let mut systems = Vec::new();
        for d in &self.down_after {
            systems.push(System::Ours(Timing::equal(*d)));
            let fast_crash = Timing::equal_fast_crash(*d);
            // At 5 s that is exactly the defaults, which run anyway when asked for.
            let same_as_defaults = self.ours_defaults && *d == Timing::defaults().down_after;
            if self.ours_fast_crash && scenario == Scenario::Kill && !same_as_defaults {
                systems.push(System::Ours(fast_crash));
            }
            systems.push(System::Sentinel(SentinelTiming::equal(*d)));
        }
        if self.ours_defaults {
            systems.push(System::Ours(Timing::defaults()));
        }
        if self.sentinel_defaults {
            systems.push(System::Sentinel(SentinelTiming::defaults()));
        }
        systems
    }
}

/// A directory for one run: kept under `--keep-logs`, else deleted when dropped.
enum RunDir {
    Kept(PathBuf),
    Temp(tempfile::TempDir),
}

impl RunDir {
    fn new(opts: &Options, name: &str) -> Result<RunDir> {
        Ok(match &opts.keep_logs {
            Some(base) => {
                // A fresh directory: an agent finding Raft state of an earlier run would rejoin it.
                let mut dir = base.join(name);
                let mut n = 1;
                while dir.exists() {
                    n += 1;
                    dir = base.join(format!("{name}.{n}"));
                }
                std::fs::create_dir_all(&dir)?;
                RunDir::Kept(dir)
            }
            None => RunDir::Temp(tempfile::Builder::new().prefix("bench-").tempdir()?),
        })
    }

    fn path(&self) -> &std::path::Path {
        match self {
            RunDir::Kept(p) => p,
            RunDir::Temp(t) => t.path(),
        }
    }
}

fn failed(scenario: &str, system: &str, config: &str, run: usize, e: &anyhow::Error) -> Record {
    Record {
        error: Some(format!("{e:#}")),
        ..Record::new(scenario, system, config, run)
    }
}

fn summary(r: &Record) -> String {
    r.metrics
        .iter()
        .map(|(k, v)| format!("{k} {v:.1}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Run every selected scenario; each record goes to `sink` as soon as it exists.
/// A failed run becomes a record with `error` set, and the benchmark goes on.
pub async fn run(
    opts: &Options,
    sink: &mut dyn FnMut(&Record) -> Result<()>,
) -> Result<Vec<Record>> {
    let mut all = Vec::new();
    let mut emit = |records: Vec<Record>, all: &mut Vec<Record>| -> Result<()> {
        for r in records {
            sink(&r)?;
            all.push(r);
        }
        Ok(())
    };
    let ctx = &opts.context;
    for &scenario in &opts.scenarios {
        match scenario {
            s @ (Scenario::Kill | Scenario::HostLoss | Scenario::Switchover) => {
                for system in opts.systems(s) {
                    for run in 1..=opts.runs {
                        let name = format!("{}-{}-{run}", s.name(), system.slug());
                        let dir = RunDir::new(opts, &name)?;
                        let records =
                            match scenario::failover_run(s, &system, ctx, run, dir.path()).await {
                                Ok(outcome) => {
                                    eprintln!("{name}: {}", summary(&outcome.run));
                                    let mut v = vec![outcome.run];
                                    v.extend(outcome.peak_rss);
                                    v
                                }
                                Err(e) => {
                                    eprintln!("{name}: FAILED: {e:#}");
                                    vec![Record {
                                        error: Some(format!("{e:#}")),
                                        ..system.record(s.name(), run)
                                    }]
                                }
                            };
                        emit(records, &mut all)?;
                    }
                }
            }
            Scenario::Footprint => {
                emit(
                    scenario::binary_sizes(&ctx.agent_bin, &ctx.server)?,
                    &mut all,
                )?;
                for run in 1..=opts.runs {
                    let name = format!("footprint-{run}");
                    let dir = RunDir::new(opts, &name)?;
                    let records = match scenario::footprint_run(ctx, run, dir.path()).await {
                        Ok(r) => {
                            eprintln!("{name}: {} processes measured", r.len());
                            r
                        }
                        Err(e) => {
                            eprintln!("{name}: FAILED: {e:#}");
                            vec![failed("footprint", "both", "idle (defaults)", run, &e)]
                        }
                    };
                    emit(records, &mut all)?;
                }
            }
            Scenario::Scaling => {
                for &n in &opts.scaling {
                    for run in 1..=opts.runs {
                        let name = format!("scaling-{n}-{run}");
                        let dir = RunDir::new(opts, &name)?;
                        let records = match scenario::scaling_run(ctx, n, run, dir.path()).await {
                            Ok(r) => {
                                eprintln!("{name}: {} records", r.len());
                                r
                            }
                            Err(e) => {
                                eprintln!("{name}: FAILED: {e:#}");
                                vec![failed(
                                    "scaling",
                                    report::OURS,
                                    &scenario::scaling_config(n),
                                    run,
                                    &e,
                                )]
                            }
                        };
                        emit(records, &mut all)?;
                    }
                }
            }
        }
    }
    Ok(all)
}
