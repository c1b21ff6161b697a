//! `cargo run --release -p bench -- [--runs N] [--down-after 1s,5s] [--json out.jsonl]`:
//! redis-orchestrator and Redis Sentinel side by side on 127.0.0.1.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use bench::procs::ServerCommand;
use bench::report::{JsonLines, Record, scaling_table, table};
use bench::scenario::{RunContext, Scenario};
use bench::{Options, binary};
use clap::Parser;

fn duration(s: &str) -> Result<Duration, String> {
    redis_orchestrator::duration::parse(s)
}

#[derive(Debug, Parser)]
#[command(
    name = "bench",
    about = "Failover time, lost writes, memory and CPU: redis-orchestrator vs Redis Sentinel on 127.0.0.1"
)]
struct Args {
    /// Runs per scenario and configuration.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Detection timeouts at which both systems run with equal settings
    /// (Sentinel down-after-milliseconds; our --down-after and --redis-down-after).
    #[arg(long, value_delimiter = ',', value_parser = duration, default_value = "1s,5s")]
    down_after: Vec<Duration>,
    /// Raw results, one JSON object per line.
    #[arg(long, default_value = "bench-results.jsonl")]
    json: PathBuf,
    /// Scenarios to run.
    #[arg(
        long,
        value_delimiter = ',',
        value_enum,
        default_value = "kill,host-loss,switchover,footprint,scaling"
    )]
    scenarios: Vec<Scenario>,
    /// Skip the runs of ours with its default settings.
    #[arg(long)]
    no_ours_defaults: bool,
    /// Skip the kill runs of ours with --down-after at each timeout but the default
    /// --redis-down-after (50 ms).
    #[arg(long)]
    no_fast_crash: bool,
    /// Also run Sentinel with its default settings (down-after 30 s: slow).
    #[arg(long)]
    sentinel_defaults: bool,
    /// How long idle CPU is measured.
    #[arg(long, value_parser = duration, default_value = "30s")]
    idle_window: Duration,
    /// Data node counts for the scaling scenario.
    #[arg(long, value_delimiter = ',', default_value = "2,4,8,16")]
    scaling_nodes: Vec<usize>,
    /// Bound on the client's Redis connects and answers and on each discovery request.
    #[arg(long, value_parser = duration, default_value = "100ms")]
    io_timeout: Duration,
    /// Writing before each failure is injected.
    #[arg(long, value_parser = duration, default_value = "1s")]
    warmup: Duration,
    /// Redis `repl-timeout` in seconds for every redis-server of both systems
    /// (default: Redis's own, 60 s).
    #[arg(long)]
    repl_timeout: Option<u32>,
    /// Server binary for every Redis of both systems, and for Sentinel (run with
    /// `--sentinel`): e.g. a valkey-server to run both on Valkey. Default: $RORC_REDIS_SERVER,
    /// else redis-server.
    #[arg(long, default_value_os_t = bench::procs::default_redis_server())]
    redis_server: PathBuf,
    /// Agent binary (default: target/release/redis-orchestrator, rebuilt first under cargo).
    #[arg(long)]
    agent_bin: Option<PathBuf>,
    /// Keep every run's process logs under this directory.
    #[arg(long)]
    keep_logs: Option<PathBuf>,
    /// Run nothing: print the table of the JSON lines in these files (e.g. earlier runs).
    #[arg(long, num_args = 1..)]
    report: Vec<PathBuf>,
}

fn read_records(files: &[PathBuf]) -> anyhow::Result<Vec<Record>> {
    let mut records = Vec::new();
    for file in files {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("read {}", file.display()))?;
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            records.push(
                serde_json::from_str(line)
                    .with_context(|| format!("{} line {}", file.display(), i + 1))?,
            );
        }
    }
    Ok(records)
}

/// The summary table, and the scaling figures by cluster size when there are some.
fn print_tables(records: &[Record]) {
    println!("{}", table(records));
    if let Some(scaling) = scaling_table(records) {
        println!("scaling (medians; per node: growth per added data node)\n{scaling}");
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !args.report.is_empty() {
        return match read_records(&args.report) {
            Ok(records) => {
                print_tables(&records);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("bench: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    // reqwest is built without a default TLS provider; the API client needs one installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let agent_bin = match args.agent_bin.clone() {
        Some(p) => p,
        None => match binary::agent_binary("release", true) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("bench: {e:#}");
                return ExitCode::FAILURE;
            }
        },
    };
    let options = Options {
        context: RunContext {
            agent_bin,
            io_timeout: args.io_timeout,
            warmup: args.warmup,
            idle_window: args.idle_window,
            server: ServerCommand {
                program: args.redis_server.clone(),
                args: args
                    .repl_timeout
                    .map(|t| vec!["--repl-timeout".to_string(), t.to_string()])
                    .unwrap_or_default(),
            },
        },
        runs: args.runs.max(1),
        scenarios: args.scenarios.clone(),
        down_after: args.down_after.clone(),
        ours_defaults: !args.no_ours_defaults,
        ours_fast_crash: !args.no_fast_crash,
        sentinel_defaults: args.sentinel_defaults,
        scaling: args.scaling_nodes.clone(),
        keep_logs: args.keep_logs.clone(),
    };
    let mut json = match JsonLines::create(&args.json) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("bench: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let mut sink = |r: &Record| json.write(r);
        tokio::select! {
            result = bench::run(&options, &mut sink) => match result {
                Ok(records) => {
                    print_tables(&records);
                    println!("raw runs: {}", args.json.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("bench: {e:#}");
                    ExitCode::FAILURE
                }
            },
            // Dropping the benchmark future drops every cluster, which SIGKILLs its processes.
            _ = tokio::signal::ctrl_c() => {
                eprintln!("bench: interrupted; every process stopped; partial results in {}", args.json.display());
                ExitCode::from(130)
            }
        }
    })
}
