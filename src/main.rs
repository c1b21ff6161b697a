use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use redis_orchestrator::agent::Agent;
use redis_orchestrator::config::{AgentArgs, ElectionMode, Settings};
use redis_orchestrator::kube::{ClusterApi, KubeAdapter, KubeSettings};
use std::io::IsTerminal;

use redis_orchestrator::config::LogFormat;
use tracing::{error, info, warn};
use tracing_subscriber::filter::{Targets, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[derive(Debug, Parser)]
#[command(
    name = "redis-orchestrator",
    version,
    about = "Consensus-safe Redis failover across sites",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub agent: AgentArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a local three-site cluster (two Redis data nodes and a witness) on 127.0.0.1 and watch it fail over.
    Demo(redis_orchestrator::demo::DemoArgs),
    #[command(flatten)]
    Ctl(redis_orchestrator::cli::CtlCommand),
}

fn main() -> ExitCode {
    // reqwest is built without a default TLS provider; install ring once for the process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    // One thread: the agent waits on the network almost all the time, and redb's blocking
    // commits run on tokio's blocking pool. Worker threads would only add their stacks,
    // malloc arenas and cross-thread wake-ups.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("redis-orchestrator: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Some(Command::Demo(args)) => runtime.block_on(redis_orchestrator::demo::run(args)),
        Some(Command::Ctl(command)) => runtime.block_on(redis_orchestrator::cli::run(command)),
        None => runtime.block_on(run_agent(cli.agent)),
    }
}

/// Logs go to stderr: JSON by default when stderr is not a terminal (a container's log
/// collector), text otherwise; ANSI colours only on a terminal.
fn init_logging(debug: bool, format: Option<LogFormat>) {
    let terminal = std::io::stderr().is_terminal();
    let format = format.unwrap_or(if terminal {
        LogFormat::Text
    } else {
        LogFormat::Json
    });
    let filter = log_filter(std::env::var("RUST_LOG").ok().as_deref(), debug);
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(filter_fn(|meta| !is_openraft_rpc_noise(meta)));
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(terminal);
    match format {
        LogFormat::Text => registry.with(layer.with_target(false)).init(),
        LogFormat::Json => registry.with(layer.json().flatten_event(true)).init(),
    }
}

/// RUST_LOG when set and valid, else the default for `--debug`. RUST_LOG is a
/// `target=level` list, like env_logger's; EnvFilter's span and field directives are not
/// supported (they cost some 65 KB of the binary). An unparsable RUST_LOG falls back to
/// the default, as before.
fn log_filter(rust_log: Option<&str>, debug: bool) -> Targets {
    // kube-client logs every failed request at ERROR, without saying which; the adapter
    // reports each failure itself, with the operation and the whole cause, once.
    let default = if debug {
        "debug,openraft=info,hyper=info,reqwest=info,h2=info,kube_client::client::builder=off"
    } else {
        "info,openraft=error,kube_client::client::builder=off"
    };
    rust_log
        .and_then(|value| value.parse::<Targets>().ok())
        .unwrap_or_else(|| default.parse().expect("the built-in log filter parses"))
}

/// openraft logs at ERROR every failed RPC to a peer (each heartbeat, each vote request)
/// and a refused `initialize` (a peer's vote can arrive between our `is_initialized` check
/// and the call). Both are normal while the other sites are not deployed yet; the Raft
/// network logs an unreachable peer once instead (`consensus::network`), and the agent
/// logs whether it bootstrapped. Matched by the events' fields, not their text: per-peer
/// RPC failures carry `err` (replication) or `target` (votes, leadership checks), the
/// refused initialize carries `last_log_id` and `vote`.
fn is_openraft_rpc_noise(meta: &tracing::Metadata<'_>) -> bool {
    if !meta.is_event()
        || !meta.target().starts_with("openraft")
        || *meta.level() > tracing::Level::WARN
    {
        return false;
    }
    let has = |name: &str| meta.fields().field(name).is_some();
    match meta.target() {
        "openraft::replication" => has("err"),
        "openraft::core::raft_core" => has("target"),
        "openraft::engine::engine_impl" => has("last_log_id") && has("vote"),
        _ => false,
    }
}

async fn run_agent(args: AgentArgs) -> ExitCode {
    let mut settings = match args.settings() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("redis-orchestrator: error: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(settings.debug, args.log_format);
    // A bad or unreadable certificate is a configuration error, like a bad flag.
    let server_tls = match &settings.tls {
        None => None,
        Some(files) => {
            let checked = files.client_config().and_then(|_| {
                redis_orchestrator::tls::Reloading::new(files.clone(), |f| f.server_config())
            });
            match checked {
                Ok(reloading) => Some(Arc::new(reloading)),
                Err(e) => {
                    eprintln!("redis-orchestrator: error: TLS: {e}");
                    return ExitCode::from(2);
                }
            }
        }
    };
    if settings.secret.is_none() {
        warn!(
            "NO SHARED SECRET: peer and API requests are NOT authenticated. Set --shared-secret or SHARED_SECRET (identical on every site)."
        );
    }
    if args.redis_tls_skip_verify {
        warn!("--redis-tls-skip-verify: the Redis TLS certificate is NOT verified");
    }
    if args.election_mode == ElectionMode::Deterministic && !settings.witness {
        info!(
            "--election-mode=deterministic is treated as raft: the master is always chosen by consensus"
        );
    }
    if !settings.ignored_flags.is_empty() {
        info!(flags = ?settings.ignored_flags, "accepted for compatibility, no effect: replicas follow the master's advertised address and reconcile runs every --probe-interval");
    }
    info!(
        name = %settings.name,
        site = %settings.site,
        node_id = settings.me.id,
        raft_addr = %settings.me.addr,
        found_by = %settings.me_found_by,
        witness = settings.witness,
        redis_announce = ?settings.redis_announce,
        peers = settings.peers.len(),
        "starting agent"
    );
    let mut kube = match KubeAdapter::detect(&KubeSettings::from(&settings)).await {
        Ok(k) => k,
        Err(e) => {
            error!("kubernetes: {e}");
            eprintln!("redis-orchestrator: error: kubernetes: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut listeners = match Listeners::bind(&settings).await {
        Ok(l) => l,
        Err(e) => {
            error!("{e}");
            eprintln!("redis-orchestrator: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(k) = &mut kube
        && !settings.witness
    {
        k.watch_own_pod();
    }
    if let (Some(k), true) = (&kube, settings.lb_service) {
        let waited = serve_while_waiting(listeners.api, k.lb_advertise_host()).await;
        let (found, api) = match waited {
            Ok(w) => w,
            Err(e) => {
                error!("{e}");
                eprintln!("redis-orchestrator: error: {e}");
                return ExitCode::FAILURE;
            }
        };
        listeners.api = api;
        match found {
            Ok(Some(host)) => settings.advertise_lb_host(&host),
            Ok(None) => {}
            Err(e) => {
                error!("--lb-service: {e}");
                eprintln!("redis-orchestrator: error: --lb-service: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let cluster_api = kube.map(|k| Arc::new(k) as Arc<dyn ClusterApi>);
    let started = async {
        let agent = Agent::open(settings, cluster_api).await?;
        redis_orchestrator::http::spawn_servers(
            agent.clone(),
            listeners.raft,
            listeners.api,
            server_tls,
        );
        agent.start(listeners.sentinel).await?;
        Ok::<_, redis_orchestrator::agent::StartError>(agent)
    };
    let agent = match started.await {
        Ok(a) => a,
        Err(e) => {
            error!("{e}");
            eprintln!("redis-orchestrator: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    wait_for_shutdown_signal().await;
    info!("shutting down");
    agent.shutdown().await;
    ExitCode::SUCCESS
}

async fn wait_for_shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// While `--lb-service` waits for the LoadBalancer's address (minutes in a cloud), the API
/// port already answers: `/health` 200 for the liveness probe, everything else (`/ready`
/// too) 503. The agent then serves the same socket: a duplicate of it is served meanwhile,
/// so connections queued at the hand-over are kept.
async fn serve_while_waiting<T>(
    api: tokio::net::TcpListener,
    wait: impl std::future::Future<Output = T>,
) -> Result<(T, tokio::net::TcpListener), String> {
    const WAITING: &str = "waiting for the LoadBalancer address (--lb-service)";
    let cannot = |e: std::io::Error| format!("cannot serve the API port while waiting: {e}");
    let kept = api.into_std().map_err(cannot)?;
    let interim = kept
        .try_clone()
        .and_then(tokio::net::TcpListener::from_std)
        .map_err(cannot)?;
    let router = axum::Router::new()
        .route(
            "/health",
            axum::routing::get(|| async { format!("ok: {WAITING}") }),
        )
        .fallback(|| async { (axum::http::StatusCode::SERVICE_UNAVAILABLE, WAITING) });
    let server = tokio::spawn(async move { axum::serve(interim, router).await });
    let found = wait.await;
    server.abort();
    // The aborted server's listener is dropped with it: only `kept` accepts from now on.
    let _ = server.await;
    let api = tokio::net::TcpListener::from_std(kept).map_err(cannot)?;
    Ok((found, api))
}

/// The agent's ports, bound before anything else starts so a taken port fails at once.
struct Listeners {
    raft: tokio::net::TcpListener,
    api: tokio::net::TcpListener,
    sentinel: Option<tokio::net::TcpListener>,
}

impl Listeners {
    async fn bind(settings: &Settings) -> Result<Listeners, String> {
        async fn bind(
            what: &str,
            addr: std::net::SocketAddr,
        ) -> Result<tokio::net::TcpListener, String> {
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on {addr} ({what}): {e}"))
        }
        Ok(Listeners {
            raft: bind("Raft/peer port", settings.raft_bind).await?,
            api: bind("API port", settings.api_bind).await?,
            sentinel: match settings.sentinel_bind {
                Some(addr) => Some(bind("Sentinel endpoint", addr).await?),
                None => None,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::log_filter;
    use tracing::Level;

    #[test]
    fn rust_log_overrides_the_default_and_a_bad_one_is_ignored() {
        let quiet = log_filter(None, false);
        assert!(quiet.would_enable("redis_orchestrator::agent", &Level::INFO));
        assert!(!quiet.would_enable("redis_orchestrator::agent", &Level::DEBUG));
        assert!(!quiet.would_enable("openraft::core", &Level::WARN));
        assert!(!quiet.would_enable("kube_client::client::builder", &Level::ERROR));

        let debug = log_filter(None, true);
        assert!(debug.would_enable("redis_orchestrator::agent", &Level::DEBUG));
        assert!(!debug.would_enable("hyper::proto", &Level::DEBUG));
        assert!(debug.would_enable("openraft::core", &Level::INFO));

        let custom = log_filter(Some("warn,redis_orchestrator::kube=debug"), false);
        assert!(custom.would_enable("redis_orchestrator::kube::client", &Level::DEBUG));
        assert!(!custom.would_enable("redis_orchestrator::agent", &Level::INFO));
        assert!(custom.would_enable("openraft::core", &Level::WARN));

        let invalid = log_filter(Some("info,openraft=loud"), false);
        assert!(!invalid.would_enable("openraft::core", &Level::WARN));
        assert!(invalid.would_enable("redis_orchestrator::agent", &Level::INFO));
    }
}
