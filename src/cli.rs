//! The operator CLI: subcommands of the same binary that talk to any agent's API,
//! signing requests with the shared secret.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;

use crate::client::{ApiClient, ApiError};
use crate::wire::{HistoryEntry, PeerView, StateView};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// Where the agent is and how to sign requests.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// API address (host:port) of any agent.
    #[arg(long, env = "ORCHESTRATOR_AGENT", default_value = "127.0.0.1:8080")]
    pub agent: String,
    /// The cluster's shared secret.
    #[arg(
        long,
        env = "SHARED_SECRET",
        hide_env_values = true,
        default_value = ""
    )]
    pub shared_secret: String,
    #[arg(long, value_enum, default_value = "table")]
    pub output: Output,
    #[command(flatten)]
    pub tls: crate::config::TlsArgs,
    /// Give up on an agent after this long.
    #[arg(long, value_parser = crate::duration::parse, default_value = "5s")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Subcommand)]
pub enum CtlCommand {
    /// Every member with its Redis role, epoch, offset and lag, Raft state and health.
    Status(ClientArgs),
    /// Members of the Raft group (voters and learners).
    Members(ClientArgs),
    /// Hand the master role to another data node without losing acknowledged writes.
    Switchover {
        /// Target member name (default: the most up-to-date healthy replica).
        #[arg(long)]
        to: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Stop automatic failover and demotion (maintenance); reconcile only reports.
    Pause(ClientArgs),
    /// End a maintenance pause.
    Resume(ClientArgs),
    /// Every committed master change with its reason.
    History(ClientArgs),
    /// Add a Raft voter (`host:port` of its peer port).
    AddVoter {
        address: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Add a Raft learner (non-voter).
    AddNonvoter {
        address: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Take a dead member out of the voter set (refused unless a live majority remains).
    Remove {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// One row of `status`.
#[derive(Debug, Serialize)]
struct MemberStatus {
    member: String,
    site: String,
    kind: String,
    role: String,
    epoch: Option<u64>,
    offset: Option<u64>,
    lag: Option<u64>,
    raft: String,
    health: String,
}

#[derive(Debug, Serialize)]
struct ClusterStatus {
    master: Option<String>,
    epoch: u64,
    coordinator: Option<String>,
    paused: bool,
    switchover: Option<String>,
    members: Vec<MemberStatus>,
}

fn client(args: &ClientArgs) -> Result<ApiClient, String> {
    let secret = (!args.shared_secret.is_empty()).then_some(args.shared_secret.as_bytes());
    let tls = args.tls.files().map_err(|e| e.to_string())?;
    ApiClient::with_tls(secret, args.timeout, tls.as_ref())
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// Write to stdout; a closed pipe (`| head`) is not an error worth a panic.
fn emit(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

fn print_json<T: Serialize>(value: &T) -> Result<(), String> {
    serde_json::to_string_pretty(value)
        .map(|text| emit(&format!("{text}\n")))
        .map_err(|e| e.to_string())
}

/// A plain table with a header row and column widths fitted to the content.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

async fn status(args: &ClientArgs) -> Result<(), String> {
    let api = client(args)?;
    let first = api.state(&args.agent).await.map_err(|e| e.to_string())?;
    let mut views: Vec<(crate::wire::MemberView, Result<StateView, ApiError>)> = Vec::new();
    for member in &first.members {
        let view = if member.api_addr == args.agent || member.id == first.node_id {
            Ok(first.clone())
        } else {
            api.state(&member.api_addr).await
        };
        views.push((member.clone(), view));
    }
    let master_offset = views
        .iter()
        .filter_map(|(_, v)| v.as_ref().ok())
        .find(|v| v.is_master)
        .and_then(|v| v.repl_offset);
    let members = views
        .into_iter()
        .map(|(m, view)| match view {
            Ok(v) => MemberStatus {
                member: m.name,
                site: m.site,
                kind: format!("{:?}", m.kind).to_lowercase(),
                lag: match (v.role.as_str(), master_offset, v.repl_offset) {
                    ("replica", Some(master), Some(own)) => Some(master.saturating_sub(own)),
                    _ => None,
                },
                role: v.role,
                epoch: Some(v.epoch),
                offset: v.repl_offset,
                raft: v.raft_state,
                health: if v.fenced {
                    "fenced".into()
                } else if !v.is_healthy {
                    v.redis_error.unwrap_or_else(|| "redis down".into())
                } else if v.master_link_up == Some(false) {
                    "link down".into()
                } else {
                    "ok".into()
                },
            },
            Err(e) => MemberStatus {
                member: m.name,
                site: m.site,
                kind: format!("{:?}", m.kind).to_lowercase(),
                role: "?".into(),
                epoch: None,
                offset: None,
                lag: None,
                raft: "?".into(),
                health: format!("unreachable: {e}"),
            },
        })
        .collect();
    let cluster = ClusterStatus {
        master: first.master.clone(),
        epoch: first.epoch,
        coordinator: first.raft_leader.clone(),
        paused: first.paused,
        switchover: first.switchover.clone(),
        members,
    };
    if args.output == Output::Json {
        return print_json(&cluster);
    }
    emit(&format!(
        "master {} at epoch {}, coordinator {}{}{}\n",
        opt(cluster.master.as_deref()),
        cluster.epoch,
        opt(cluster.coordinator.as_deref()),
        if cluster.paused {
            "  [PAUSED: no automatic failover]"
        } else {
            ""
        },
        cluster
            .switchover
            .as_deref()
            .map(|s| format!("  [switchover {s}]"))
            .unwrap_or_default()
    ));
    let rows: Vec<Vec<String>> = cluster
        .members
        .iter()
        .map(|m| {
            vec![
                m.member.clone(),
                m.site.clone(),
                m.kind.clone(),
                m.role.clone(),
                opt(m.epoch),
                opt(m.offset),
                opt(m.lag),
                m.raft.clone(),
                m.health.clone(),
            ]
        })
        .collect();
    emit(&table(
        &[
            "MEMBER", "SITE", "KIND", "ROLE", "EPOCH", "OFFSET", "LAG", "RAFT", "HEALTH",
        ],
        &rows,
    ));
    Ok(())
}

async fn members(args: &ClientArgs) -> Result<(), String> {
    let peers: Vec<PeerView> = client(args)?
        .get(&args.agent, "/raft/peers")
        .await
        .map_err(|e| e.to_string())?;
    if args.output == Output::Json {
        return print_json(&peers);
    }
    let rows: Vec<Vec<String>> = peers
        .iter()
        .map(|p| {
            vec![
                opt(p.name.as_deref()),
                p.address.clone(),
                p.kind
                    .map_or("-".to_string(), |k| format!("{k:?}").to_lowercase()),
                if p.voter { "voter" } else { "learner" }.to_string(),
                if p.leader { "leader" } else { "" }.to_string(),
            ]
        })
        .collect();
    emit(&table(
        &["NAME", "ADDRESS", "KIND", "MEMBERSHIP", "RAFT"],
        &rows,
    ));
    Ok(())
}

async fn history(args: &ClientArgs) -> Result<(), String> {
    let entries: Vec<HistoryEntry> = client(args)?
        .get(&args.agent, "/history")
        .await
        .map_err(|e| e.to_string())?;
    if args.output == Output::Json {
        return print_json(&entries);
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|h| {
            let offsets = h
                .candidates
                .iter()
                .map(|c| format!("{}={}", c.name, c.offset))
                .collect::<Vec<_>>();
            vec![
                h.epoch.to_string(),
                h.at.clone(),
                opt(h.from.as_deref()),
                h.to.clone(),
                offsets.join(" "),
                h.reason.clone(),
            ]
        })
        .collect();
    emit(&table(
        &["EPOCH", "TIME", "FROM", "TO", "OFFSETS", "REASON"],
        &rows,
    ));
    Ok(())
}

/// POST and print the answer (pretty JSON, which reads fine as a table of one row too).
async fn post(args: &ClientArgs, path: &str, body: serde_json::Value) -> Result<(), String> {
    let answer: serde_json::Value = client(args)?
        .post(&args.agent, path, &body)
        .await
        .map_err(|e| e.to_string())?;
    print_json(&answer)
}

pub async fn run(command: CtlCommand) -> ExitCode {
    let result = match &command {
        CtlCommand::Status(a) => status(a).await,
        CtlCommand::Members(a) => members(a).await,
        CtlCommand::History(a) => history(a).await,
        CtlCommand::Switchover { to, client } => {
            post(client, "/switchover", serde_json::json!({ "to": to })).await
        }
        CtlCommand::Pause(a) => post(a, "/pause", serde_json::json!({})).await,
        CtlCommand::Resume(a) => post(a, "/resume", serde_json::json!({})).await,
        CtlCommand::AddVoter { address, client } => {
            post(
                client,
                "/raft/add-voter",
                serde_json::json!({ "id": address, "address": address }),
            )
            .await
        }
        CtlCommand::AddNonvoter { address, client } => {
            post(
                client,
                "/raft/add-nonvoter",
                serde_json::json!({ "id": address, "address": address }),
            )
            .await
        }
        CtlCommand::Remove { name, client } => {
            post(client, "/raft/remove", serde_json::json!({ "name": name })).await
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("redis-orchestrator: {e}");
            ExitCode::FAILURE
        }
    }
}
