//! `SENTINEL` and `INFO`: what the endpoint reports, in Sentinel 7's field names,
//! field order and formats.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use super::command::{COMPAT_VERSION, Context, echo, wrong_arity};
use super::resp::Reply;
use super::{Health, Instance, PeerSentinel, SentinelView};
use crate::model::RedisRole;

/// Sentinel's `parallel-syncs`: each agent reconfigures only its own Redis, one at a time.
const PARALLEL_SYNCS: u32 = 1;

pub(super) fn sentinel(ctx: &Context<'_>, rest: &[Vec<u8>]) -> Reply {
    let (config, view) = (ctx.config, ctx.view);
    let Some((sub, args)) = rest.split_first() else {
        return wrong_arity("sentinel");
    };
    let sub = sub.to_ascii_lowercase();
    let sub_text = String::from_utf8_lossy(&sub).into_owned();
    let named = |args: &[Vec<u8>]| match args {
        [name] => Ok(name.as_slice() == config.master_name.as_bytes()),
        _ => Err(wrong_arity(&format!("sentinel|{sub_text}"))),
    };
    let no_such_master = || Reply::error("ERR No such master with that name");
    match sub.as_slice() {
        b"get-master-addr-by-name" => match (named(args), &view.master) {
            (Err(e), _) => e,
            (Ok(true), Some(m)) if !view.stale => Reply::Array(vec![
                Reply::bulk(&m.endpoint.host),
                Reply::bulk(m.endpoint.port.to_string()),
            ]),
            (Ok(_), _) => Reply::NullArray,
        },
        b"masters" if args.is_empty() => Reply::Array(
            view.master
                .as_ref()
                .map(|m| Reply::string_map(&master_table(ctx, m)))
                .into_iter()
                .collect(),
        ),
        b"masters" => wrong_arity("sentinel|masters"),
        b"master" => match (named(args), &view.master) {
            (Err(e), _) => e,
            (Ok(true), Some(m)) => Reply::string_map(&master_table(ctx, m)),
            (Ok(_), _) => no_such_master(),
        },
        b"replicas" | b"slaves" => match named(args) {
            Err(e) => e,
            Ok(true) => Reply::Array(
                view.replicas
                    .iter()
                    .map(|r| Reply::string_map(&replica_table(ctx, r)))
                    .collect(),
            ),
            Ok(false) => no_such_master(),
        },
        b"sentinels" => match named(args) {
            Err(e) => e,
            Ok(true) => Reply::Array(
                view.sentinels
                    .iter()
                    .map(|s| Reply::string_map(&sentinel_table(ctx, s)))
                    .collect(),
            ),
            Ok(false) => no_such_master(),
        },
        b"ckquorum" => match (named(args), &view.master) {
            (Err(e), _) => e,
            (Ok(true), Some(_)) => ckquorum(view),
            (Ok(_), _) => no_such_master(),
        },
        b"myid" if args.is_empty() => Reply::bulk(&view.myid),
        b"myid" => wrong_arity("sentinel|myid"),
        b"info-cache" => {
            let wanted = args.is_empty()
                || args
                    .iter()
                    .any(|a| a.as_slice() == config.master_name.as_bytes());
            match &view.master {
                Some(m) if wanted => info_cache(ctx, m),
                _ => Reply::Array(Vec::new()),
            }
        }
        b"pending-scripts" => Reply::Array(Vec::new()),
        b"config" => match args.split_first() {
            Some((get, params)) if get.eq_ignore_ascii_case(b"get") && !params.is_empty() => {
                config_get(params)
            }
            _ => refused(&format!("{sub_text} set")),
        },
        b"help" => Reply::Array(
            HELP.iter()
                .map(|line| Reply::Simple(line.to_string()))
                .collect(),
        ),
        b"failover"
        | b"monitor"
        | b"remove"
        | b"set"
        | b"reset"
        | b"flushconfig"
        | b"simulate-failure"
        | b"debug"
        | b"is-master-down-by-addr" => refused(&sub_text),
        _ => Reply::error(format!(
            "ERR unknown subcommand '{}'. Try SENTINEL HELP.",
            echo(&sub)
        )),
    }
}

const HELP: &[&str] = &[
    "SENTINEL <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "CKQUORUM <master-name>",
    "    Check if the current Sentinel configuration is able to reach the quorum",
    "    needed to failover a master and the majority needed to authorize the",
    "    failover.",
    "CONFIG GET <param> [param param param ...]",
    "    Get global Sentinel configuration parameter.",
    "GET-MASTER-ADDR-BY-NAME <master-name>",
    "    Return the ip and port number of the master with that name.",
    "INFO-CACHE <master-name>",
    "    Return last cached INFO output from masters and all its replicas.",
    "MASTER <master-name>",
    "    Show the state and info of the specified master.",
    "MASTERS",
    "    Show a list of monitored masters and their state.",
    "MYID",
    "    Return the ID of the Sentinel instance.",
    "PENDING-SCRIPTS",
    "    Get pending scripts information.",
    "REPLICAS <master-name>",
    "    Show a list of replicas for this master and their state.",
    "SENTINELS <master-name>",
    "    Show a list of Sentinel instances for this master and their state.",
    "Changing the configuration (SET, MONITOR, REMOVE, FAILOVER, RESET, CONFIG SET) is",
    "    refused: redis-orchestrator decides the master by consensus; use its API.",
];

fn refused(what: &str) -> Reply {
    Reply::error(format!(
        "ERR SENTINEL {what} is not supported: redis-orchestrator decides the master by consensus (use its API)"
    ))
}

/// The global parameters `SENTINEL CONFIG GET` knows, with this endpoint's values.
fn config_get(params: &[Vec<u8>]) -> Reply {
    const PARAMS: &[(&str, &str)] = &[
        ("resolve-hostnames", "no"),
        ("announce-hostnames", "no"),
        ("announce-ip", ""),
        ("announce-port", "0"),
        ("sentinel-user", ""),
        ("loglevel", "notice"),
    ];
    let pairs: Vec<(&str, &str)> = PARAMS
        .iter()
        .filter(|(name, _)| {
            params
                .iter()
                .any(|p| super::glob::matches(&p.to_ascii_lowercase(), name.as_bytes()))
        })
        .copied()
        .collect();
    Reply::string_map(&pairs)
}

/// Sentinel's answer: `+OK` when enough Sentinels are usable for both the quorum and a
/// majority, else a `NOQUORUM` error saying which is missing. Here both are the
/// majority of the Raft voters.
fn ckquorum(view: &SentinelView) -> Reply {
    let usable = view.usable;
    let no_quorum = usable < view.quorum;
    let no_majority = usable < view.voters / 2 + 1;
    if !no_quorum && !no_majority {
        return Reply::Simple(format!(
            "OK {usable} usable Sentinels. Quorum and failover authorization can be reached"
        ));
    }
    let mut text = format!("NOQUORUM {usable} usable Sentinels. ");
    if no_quorum {
        text.push_str(
            "Not enough available Sentinels to reach the specified quorum for this master",
        );
    }
    if no_majority {
        if no_quorum {
            text.push_str(". ");
        }
        text.push_str(
            "Not enough available Sentinels to reach the majority and authorize a failover",
        );
    }
    Reply::Error(text)
}

fn millis(d: Duration) -> String {
    d.as_millis().to_string()
}

/// Milliseconds from `t` to now, `0` when unknown (as Sentinel writes "never").
fn since(now: Instant, t: Option<Instant>) -> String {
    t.map_or_else(
        || "0".to_string(),
        |t| millis(now.saturating_duration_since(t)),
    )
}

type Table = Vec<(&'static str, String)>;

/// Fields every instance kind starts with; `flags` is Sentinel's comma-separated set.
fn common(name: String, host: &str, port: u16, runid: &str, flags: &[&str]) -> Table {
    vec![
        ("name", name),
        ("ip", host.to_string()),
        ("port", port.to_string()),
        ("runid", runid.to_string()),
        ("flags", flags.join(",")),
        ("link-pending-commands", "0".to_string()),
        ("link-refcount", "1".to_string()),
    ]
}

/// The ping fields: the agents' probe reports stand in for Sentinel's pings.
fn pings(now: Instant, health: &Health, table: &mut Table) {
    // A ping is outstanding only while the node does not answer.
    let pending = health
        .down_since
        .or(health.link_down_since.filter(|_| health.last_ok.is_none()));
    table.push((
        "last-ping-sent",
        if health.s_down() {
            since(now, pending)
        } else {
            "0".to_string()
        },
    ));
    table.push((
        "last-ok-ping-reply",
        since(now, health.last_ok.or(health.reported_at)),
    ));
    table.push(("last-ping-reply", since(now, health.reported_at)));
}

fn role_fields(now: Instant, health: &Health, default: RedisRole, table: &mut Table) {
    table.push(("info-refresh", since(now, health.reported_at)));
    let role = health.role.unwrap_or(default);
    table.push((
        "role-reported",
        match role {
            RedisRole::Master => "master",
            RedisRole::Replica => "slave",
        }
        .to_string(),
    ));
    table.push(("role-reported-time", since(now, health.role_since)));
}

pub(super) fn master_table(ctx: &Context<'_>, master: &Instance) -> Table {
    let (view, now) = (ctx.view, ctx.now);
    let health = &master.health;
    let down = view.master_down();
    let mut flags = Vec::new();
    if down {
        flags.extend(["s_down", "o_down"]);
    }
    flags.push("master");
    if health.disconnected {
        flags.push("disconnected");
    }
    if view.failover_to.is_some() {
        flags.push("failover_in_progress");
    }
    let mut table = common(
        ctx.config.master_name.clone(),
        &master.endpoint.host,
        master.endpoint.port,
        &health.run_id,
        &flags,
    );
    if view.failover_to.is_some() {
        table.push(("failover-state", "wait_promotion".to_string()));
    }
    pings(now, health, &mut table);
    if down {
        // Stale: down from this endpoint's point of view since it lost contact.
        let at = health.down_since.or(health.reported_at);
        table.push(("s-down-time", since(now, at)));
        table.push(("o-down-time", since(now, at)));
    }
    table.push(("down-after-milliseconds", millis(view.down_after)));
    role_fields(now, health, RedisRole::Master, &mut table);
    table.extend([
        ("config-epoch", view.epoch.to_string()),
        ("num-slaves", view.replicas.len().to_string()),
        ("num-other-sentinels", view.sentinels.len().to_string()),
        ("quorum", view.quorum.to_string()),
        ("failover-timeout", millis(view.failover_timeout)),
        ("parallel-syncs", PARALLEL_SYNCS.to_string()),
    ]);
    table
}

/// Sentinel names a replica by its address.
pub(super) fn replica_table(ctx: &Context<'_>, replica: &Instance) -> Table {
    let (view, now) = (ctx.view, ctx.now);
    let health = &replica.health;
    let mut flags = Vec::new();
    if health.s_down() {
        flags.push("s_down");
    }
    flags.push("slave");
    if health.disconnected {
        flags.push("disconnected");
    }
    let endpoint = &replica.endpoint;
    let mut table = common(
        endpoint.addr(),
        &endpoint.host,
        endpoint.port,
        &health.run_id,
        &flags,
    );
    pings(now, health, &mut table);
    if health.s_down() {
        table.push(("s-down-time", since(now, health.down_since)));
    }
    table.push(("down-after-milliseconds", millis(view.down_after)));
    role_fields(now, health, RedisRole::Replica, &mut table);
    let (master_host, master_port) = health
        .master_addr
        .clone()
        .unwrap_or_else(|| ("?".to_string(), 0));
    table.extend([
        (
            "master-link-down-time",
            if health.link_up {
                "0".to_string()
            } else {
                since(now, health.link_down_since)
            },
        ),
        (
            "master-link-status",
            if health.link_up { "ok" } else { "err" }.to_string(),
        ),
        ("master-host", master_host),
        ("master-port", master_port.to_string()),
        ("slave-priority", replica.priority.to_string()),
        ("slave-repl-offset", health.offset.to_string()),
        ("replica-announced", "1".to_string()),
    ]);
    table
}

fn sentinel_table(ctx: &Context<'_>, peer: &PeerSentinel) -> Table {
    let (view, now) = (ctx.view, ctx.now);
    let flags: &[&str] = if peer.down_since.is_some() {
        &["s_down", "sentinel"]
    } else {
        &["sentinel"]
    };
    let mut table = common(
        peer.runid.clone(),
        &peer.host,
        peer.port,
        &peer.runid,
        flags,
    );
    table.extend([
        (
            "last-ping-sent",
            peer.down_since
                .map_or_else(|| "0".to_string(), |d| since(now, Some(d))),
        ),
        ("last-ok-ping-reply", since(now, peer.last_seen)),
        ("last-ping-reply", since(now, peer.last_seen)),
    ]);
    if peer.down_since.is_some() {
        table.push(("s-down-time", since(now, peer.down_since)));
    }
    table.extend([
        ("down-after-milliseconds", millis(view.down_after)),
        ("last-hello-message", since(now, peer.last_seen)),
        (
            "voted-leader",
            view.coordinator.clone().unwrap_or_else(|| "?".to_string()),
        ),
        ("voted-leader-epoch", view.epoch.to_string()),
    ]);
    table
}

/// `SENTINEL INFO-CACHE`: Sentinel caches each instance's INFO; the agents report the
/// replication part of it, so that is what is shown, with its age.
fn info_cache(ctx: &Context<'_>, master: &Instance) -> Reply {
    let now = ctx.now;
    let entry = |i: &Instance| {
        let h = &i.health;
        let text = h.reported_at.filter(|_| h.role.is_some()).map(|_| {
            let mut s = format!("# Server\r\nrun_id:{}\r\ntcp_port:{}\r\n\r\n# Replication\r\n", h.run_id, i.endpoint.port);
            match h.role {
                Some(RedisRole::Replica) => {
                    let (host, port) = h.master_addr.clone().unwrap_or_else(|| ("?".into(), 0));
                    s.push_str(&format!(
                        "role:slave\r\nmaster_host:{host}\r\nmaster_port:{port}\r\nmaster_link_status:{}\r\nslave_repl_offset:{}\r\nslave_priority:{}\r\n",
                        if h.link_up { "up" } else { "down" },
                        h.offset,
                        i.priority
                    ));
                }
                _ => s.push_str("role:master\r\n"),
            }
            s.push_str(&format!("master_repl_offset:{}\r\n", h.offset));
            s
        });
        let age = h
            .reported_at
            .map_or(0, |t| now.saturating_duration_since(t).as_millis());
        Reply::Array(vec![
            Reply::Int(i64::try_from(age).unwrap_or(i64::MAX)),
            text.map_or(Reply::Null, Reply::bulk),
        ])
    };
    let entries = std::iter::once(master)
        .chain(&ctx.view.replicas)
        .map(entry)
        .collect();
    Reply::Array(vec![
        Reply::bulk(&ctx.config.master_name),
        Reply::Array(entries),
    ])
}

/// Sections Sentinel's `INFO` has that this endpoint can fill truthfully.
const SECTIONS: &[&str] = &["server", "clients", "stats", "sentinel"];

/// `INFO [section ...]`: `default`, `all` and `everything` mean every section;
/// unknown sections are left out, as Redis does.
pub(super) fn info(ctx: &Context<'_>, args: &[Vec<u8>]) -> String {
    let wanted: Vec<String> = args
        .iter()
        .map(|a| String::from_utf8_lossy(a).to_lowercase())
        .collect();
    let all = wanted.is_empty()
        || wanted
            .iter()
            .any(|w| matches!(w.as_str(), "default" | "all" | "everything"));
    SECTIONS
        .iter()
        .filter(|s| all || wanted.iter().any(|w| w == *s))
        .map(|s| section(ctx, s))
        .collect::<Vec<_>>()
        .join("\r\n")
}

fn section(ctx: &Context<'_>, name: &str) -> String {
    let (view, clients, now) = (ctx.view, ctx.clients, ctx.now);
    let mut lines: Vec<String> = Vec::new();
    match name {
        "server" => {
            let uptime = now.saturating_duration_since(clients.started).as_secs();
            let unix_us = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros());
            lines.push("# Server".into());
            lines.push(format!("redis_version:{COMPAT_VERSION}"));
            lines.push("redis_mode:sentinel".into());
            lines.push(format!(
                "os:{} {}",
                std::env::consts::OS,
                std::env::consts::ARCH
            ));
            lines.push(format!("arch_bits:{}", usize::BITS));
            lines.push(format!("process_id:{}", std::process::id()));
            lines.push(format!("run_id:{}", view.myid));
            lines.push(format!("tcp_port:{}", clients.port));
            lines.push(format!("server_time_usec:{unix_us}"));
            lines.push(format!("uptime_in_seconds:{uptime}"));
            lines.push(format!("uptime_in_days:{}", uptime / 86_400));
            lines.push(format!(
                "orchestrator_version:{}",
                env!("CARGO_PKG_VERSION")
            ));
        }
        "clients" => {
            lines.push("# Clients".into());
            lines.push(format!("connected_clients:{}", clients.count()));
            lines.push(format!("maxclients:{}", clients.max_clients));
            lines.push("blocked_clients:0".into());
        }
        "stats" => {
            lines.push("# Stats".into());
            lines.push(format!(
                "total_connections_received:{}",
                clients.total_connections.load(Ordering::Relaxed)
            ));
            lines.push(format!(
                "total_commands_processed:{}",
                clients.total_commands.load(Ordering::Relaxed)
            ));
            lines.push(format!(
                "rejected_connections:{}",
                clients.rejected_connections.load(Ordering::Relaxed)
            ));
        }
        _ => {
            lines.push("# Sentinel".into());
            lines.push(format!(
                "sentinel_masters:{}",
                u8::from(view.master.is_some())
            ));
            lines.push("sentinel_tilt:0".into());
            lines.push("sentinel_tilt_since_seconds:-1".into());
            lines.push("sentinel_running_scripts:0".into());
            lines.push("sentinel_scripts_queue_length:0".into());
            lines.push("sentinel_simulate_failure_flags:0".into());
            if let Some(m) = &view.master {
                let status = if view.master_down() { "odown" } else { "ok" };
                lines.push(format!(
                    "master0:name={},status={status},address={}:{},slaves={},sentinels={}",
                    ctx.config.master_name,
                    m.endpoint.host,
                    m.endpoint.port,
                    view.replicas.len(),
                    view.sentinels.len() + 1
                ));
            }
        }
    }
    let mut text = lines.join("\r\n");
    text.push_str("\r\n");
    text
}
