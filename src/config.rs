//! Command-line flags (compatible with the original Go tool) and their validation
//! into [`Settings`]. Parsing is separate from the process environment so tests
//! can feed it any arguments.

use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{Args, ValueEnum};

use crate::addr::{join_host_port, node_id, split_host_port};
use crate::decide::lease::LeaseTimings;
use crate::model::NodeId;

/// Port used for a `--raft-peers` entry written without one.
pub const DEFAULT_RAFT_PORT: u16 = 7000;

/// Whether the agent talks to the Kubernetes API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KubernetesMode {
    /// Inside a cluster when the service-account token is mounted.
    Auto,
    /// Always: fail at start-up if the API cannot be reached.
    On,
    /// Never: static peers, no labels (the local demo and most tests).
    Off,
}

/// How log lines are written to stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event (colours only on a terminal).
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ElectionMode {
    /// Accepted for compatibility; the agent always uses Raft consensus.
    Deterministic,
    Raft,
}

/// Flags of the agent. Booleans accept both `--flag` and `--flag=true|false`.
#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// Host of the local redis-server.
    #[arg(long, default_value = "localhost")]
    pub redis_host: String,
    #[arg(long, default_value_t = 6379)]
    pub redis_port: u16,
    /// Password for the local Redis (requirepass) and for replication (masterauth).
    #[arg(
        long,
        env = "REDIS_PASSWORD",
        hide_env_values = true,
        default_value = ""
    )]
    pub redis_password: String,
    /// TLS to Redis (minimum TLS 1.2).
    #[arg(long, value_parser = BoolishValueParser::new(), num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub redis_tls: bool,
    /// Skip TLS certificate verification (unsafe; logged loudly).
    #[arg(long, value_parser = BoolishValueParser::new(), num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub redis_tls_skip_verify: bool,
    /// PEM CA that signs the local Redis's TLS certificate (with --redis-tls; default: the platform has none, so set it or --redis-tls-skip-verify).
    #[arg(long, env = "REDIS_TLS_CA_FILE", default_value = "")]
    pub redis_tls_ca_file: String,
    /// Accepted for compatibility; replicas follow the master's advertised address instead.
    #[arg(long, default_value = "redis")]
    pub redis_service: String,
    /// Accepted for compatibility; replicas follow the master's advertised address instead.
    #[arg(long, default_value = "")]
    pub master_service: String,
    /// Accepted for compatibility: the agent reconciles every --probe-interval.
    #[arg(long, value_parser = parse_duration, default_value = "15s")]
    pub sync_interval: Duration,
    #[arg(long, env = "POD_NAME", default_value = "")]
    pub pod_name: String,
    #[arg(long, env = "POD_NAMESPACE", default_value = "")]
    pub namespace: String,
    /// Pods listed in the status view (Kubernetes, own namespace).
    #[arg(long, default_value = "app=redis")]
    pub label_selector: String,
    /// Kubernetes integration: auto (when a service-account token is mounted), on or off.
    #[arg(long, value_enum, default_value = "auto")]
    pub kubernetes: KubernetesMode,
    /// Selector-less Service in the own namespace whose EndpointSlice follows the committed master; empty disables.
    #[arg(long, default_value = "redis-master")]
    pub master_endpoints_service: String,
    #[arg(long, value_enum, default_value = "deterministic")]
    pub election_mode: ElectionMode,
    /// Address the Raft/peer port listens on.
    #[arg(long, default_value = "0.0.0.0:7000")]
    pub raft_bind: String,
    /// Comma-separated host:port of every agent (both data nodes and the witness); a host without port means :7000.
    #[arg(long, default_value = "")]
    pub raft_peers: String,
    /// This agent's own entry in --raft-peers (else found by POD_NAME/hostname or local address).
    #[arg(long, default_value = "")]
    pub raft_advertise: String,
    #[arg(long, default_value = "/var/lib/redis-orchestrator/raft")]
    pub raft_data_dir: PathBuf,
    /// Accepted for compatibility: every agent may bootstrap, with the identical voter set.
    #[arg(long, default_value = "auto")]
    pub raft_bootstrap: String,
    /// Advertise the external IP of the LoadBalancer Service that selects this pod (Kubernetes) for Redis replication.
    #[arg(long, value_parser = BoolishValueParser::new(), num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub lb_service: bool,
    /// Secret shared by all agents; signs every peer and API request.
    #[arg(
        long,
        env = "SHARED_SECRET",
        hide_env_values = true,
        default_value = ""
    )]
    pub shared_secret: String,
    /// Witness mode: no Redis, votes only. Requires --election-mode=raft.
    #[arg(long, value_parser = BoolishValueParser::new(), num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub standalone: bool,
    /// Standby site: replicate, never become master.
    #[arg(long, value_parser = BoolishValueParser::new(), num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub no_promote: bool,
    /// Verbose logs.
    #[arg(long, value_parser = BoolishValueParser::new(), num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub debug: bool,
    /// Log format on stderr: text or json (default: json when stderr is not a terminal, else text).
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Address the HTTP API listens on.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub api_bind: String,
    /// Address of the Sentinel-compatible endpoint for stock Redis clients, e.g. 0.0.0.0:26379 (empty: off).
    #[arg(long, default_value = "")]
    pub sentinel_bind: String,
    /// Master name the Sentinel endpoint answers to (what clients pass to master_for).
    #[arg(long, default_value = "mymaster")]
    pub sentinel_master_name: String,
    /// Address other agents list for this agent's Sentinel endpoint (default: --sentinel-bind, or the own --raft-peers host with its port when it binds 0.0.0.0).
    #[arg(long, default_value = "")]
    pub sentinel_announce: String,
    /// Password the Sentinel endpoint requires, on every agent including the witness (default: --redis-password).
    #[arg(
        long,
        env = "SENTINEL_PASSWORD",
        hide_env_values = true,
        default_value = ""
    )]
    pub sentinel_password: String,
    /// Site name shown in status and logs.
    #[arg(long, env = "SITE", default_value = "")]
    pub site: String,
    /// Member name (default: POD_NAME, else the own --raft-peers entry).
    #[arg(long, env = "NODE_NAME", default_value = "")]
    pub node_name: String,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Tie-breaker between equally up-to-date candidates: higher wins.
    #[arg(long, default_value_t = 100)]
    pub priority: u32,
    /// How often the local Redis is probed and reported.
    #[arg(long, value_parser = parse_duration, default_value = "200ms")]
    pub probe_interval: Duration,
    /// The master's agent must see its Redis refuse connections this long before failover.
    /// The agent holds a connection to its Redis and looks again at once when it closes,
    /// so this counts from the process's exit; it only guards against a restart so quick
    /// that the port is back before it runs out.
    #[arg(long, value_parser = parse_duration, default_value = "50ms")]
    pub redis_down_after: Duration,
    /// Silence from the master's agent before failover (if no replica still sees the master).
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub down_after: Duration,
    /// A master without confirmed quorum contact for this long pauses writes. Must be < --down-after.
    #[arg(long, value_parser = parse_duration, default_value = "3s")]
    pub lease: Duration,
    /// How long a planned switchover may hold the master's writes paused waiting for the target to catch up before it is abandoned.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub switchover_timeout: Duration,
    /// Refuse a failover candidate lagging more than this many bytes.
    #[arg(long, default_value_t = 1_048_576)]
    pub max_lag_on_failover: u64,
    /// Redis address replicas use to reach this node (default: host of the own --raft-peers entry and --redis-port).
    #[arg(long, default_value = "")]
    pub redis_announce: String,
    /// Raft heartbeat interval.
    #[arg(long, value_parser = parse_duration, default_value = "250ms")]
    pub raft_heartbeat: Duration,
    /// Minimum Raft election timeout (the maximum is twice this).
    #[arg(long, value_parser = parse_duration, default_value = "500ms")]
    pub raft_election_timeout: Duration,
}

/// TLS of the agent's two ports and of every client of them (agents, CLI, demo).
#[derive(Debug, Clone, Default, Args)]
pub struct TlsArgs {
    /// PEM certificate (chain) of this agent: with it both ports serve HTTPS only. Needs --tls-key-file and --tls-ca-file; re-read when the file changes.
    #[arg(long, env = "TLS_CERT_FILE", default_value = "")]
    pub tls_cert_file: String,
    /// PEM private key of --tls-cert-file.
    #[arg(long, env = "TLS_KEY_FILE", default_value = "")]
    pub tls_key_file: String,
    /// PEM CA every agent's certificate is verified against.
    #[arg(long, env = "TLS_CA_FILE", default_value = "")]
    pub tls_ca_file: String,
    /// Both ports require a client certificate signed by --tls-ca-file (mTLS); clients present --tls-cert-file.
    #[arg(long, env = "TLS_CLIENT_AUTH", value_parser = BoolishValueParser::new(), num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub tls_client_auth: bool,
}

impl TlsArgs {
    /// `None` without TLS; all three files are needed together.
    pub fn files(&self) -> Result<Option<crate::tls::TlsFiles>, ConfigError> {
        let given = [&self.tls_cert_file, &self.tls_key_file, &self.tls_ca_file]
            .iter()
            .filter(|f| !f.is_empty())
            .count();
        match given {
            0 if self.tls_client_auth => Err(err(
                "--tls-client-auth needs --tls-cert-file, --tls-key-file and --tls-ca-file",
            )),
            0 => Ok(None),
            3 => Ok(Some(crate::tls::TlsFiles {
                cert: PathBuf::from(&self.tls_cert_file),
                key: PathBuf::from(&self.tls_key_file),
                ca: PathBuf::from(&self.tls_ca_file),
                client_auth: self.tls_client_auth,
            })),
            _ => Err(err(
                "--tls-cert-file, --tls-key-file and --tls-ca-file go together",
            )),
        }
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::duration::parse(s)
}

/// A validation failure; the binary prints it and exits 2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn err(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

/// One `--raft-peers` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// `host:port`, normalized (port added when missing).
    pub addr: String,
    pub host: String,
    pub port: u16,
    pub id: NodeId,
}

impl Peer {
    pub fn parse(entry: &str) -> Result<Peer, ConfigError> {
        let entry = entry.trim();
        let (host, port) = split_host_port(entry, DEFAULT_RAFT_PORT)
            .map_err(|e| err(format!("bad --raft-peers entry {entry:?}: {e}")))?;
        let addr = join_host_port(&host, port);
        Ok(Peer {
            id: node_id(&addr),
            addr,
            host,
            port,
        })
    }
}

/// Validated configuration of one agent.
#[derive(Clone, Debug)]
pub struct Settings {
    pub peers: Vec<Peer>,
    pub me: Peer,
    /// How the own entry was found, for the start-up log.
    pub me_found_by: String,
    pub name: String,
    pub site: String,
    pub witness: bool,
    pub no_promote: bool,
    pub priority: u32,
    pub raft_bind: SocketAddr,
    pub api_bind: SocketAddr,
    pub api_advertise: String,
    /// Where the Sentinel-compatible endpoint listens; `None`: off.
    pub sentinel_bind: Option<SocketAddr>,
    pub sentinel_master_name: String,
    /// What other agents list for this endpoint; `None` when it is off.
    pub sentinel_announce: Option<String>,
    /// Required by the endpoint when set.
    pub sentinel_password: Option<String>,
    pub raft_data_dir: PathBuf,
    pub redis: Option<crate::redis::RedisConfig>,
    pub redis_announce: Option<String>,
    /// True when `--redis-announce` was given, so a LoadBalancer address must not replace it.
    pub redis_announce_from_flag: bool,
    pub secret: Option<Vec<u8>>,
    /// HTTPS on both ports and to every peer.
    pub tls: Option<crate::tls::TlsFiles>,
    pub probe_interval: Duration,
    pub redis_down_after: Duration,
    pub down_after: Duration,
    pub lease: Duration,
    pub max_lag_on_failover: u64,
    pub switchover_timeout: Duration,
    pub raft_heartbeat: Duration,
    pub raft_election_timeout: Duration,
    pub pod_name: String,
    pub namespace: String,
    pub kubernetes: KubernetesMode,
    pub label_selector: String,
    pub lb_service: bool,
    /// `None` when `--master-endpoints-service` is empty.
    pub master_endpoints_service: Option<String>,
    pub debug: bool,
    /// Flags accepted only for compatibility that were set to a non-default value.
    pub ignored_flags: Vec<String>,
}

/// How the agent tells which `--raft-peers` entry is its own.
pub struct SelfLookup<'a> {
    pub advertise: &'a str,
    pub pod_name: &'a str,
    pub namespace: &'a str,
    pub hostname: &'a str,
    /// Whether an entry's host resolves to an address of this machine.
    pub is_local: &'a dyn Fn(&str) -> bool,
    pub raft_bind_port: u16,
}

/// Find the own entry: `--raft-advertise`, else `POD_NAME.`/hostname prefix,
/// else the only entry that resolves to a local address with our Raft port.
pub fn find_self(peers: &[Peer], lookup: &SelfLookup<'_>) -> Result<(Peer, String), ConfigError> {
    let tried = || {
        peers
            .iter()
            .map(|p| p.addr.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !lookup.advertise.is_empty() {
        let wanted = Peer::parse(lookup.advertise)?;
        return peers
            .iter()
            .find(|p| p.addr == wanted.addr)
            .map(|p| (p.clone(), "--raft-advertise".to_string()))
            .ok_or_else(|| {
                err(format!(
                    "--raft-advertise {} is not one of --raft-peers ({})",
                    wanted.addr,
                    tried()
                ))
            });
    }
    for (label, name) in [("POD_NAME", lookup.pod_name), ("hostname", lookup.hostname)] {
        if name.is_empty() {
            continue;
        }
        let mut matches: Vec<&Peer> = peers
            .iter()
            .filter(|p| p.host == name || p.host.starts_with(&format!("{name}.")))
            .collect();
        // The seed names every data pod `redis-0`, one per namespace.
        if matches.len() > 1 && !lookup.namespace.is_empty() {
            let ns = format!(".{}.", lookup.namespace);
            matches.retain(|p| p.host.contains(&ns));
        }
        if let [only] = matches.as_slice() {
            return Ok(((*only).clone(), format!("{label} {name}")));
        }
    }
    let local: Vec<&Peer> = peers
        .iter()
        .filter(|p| p.port == lookup.raft_bind_port && (lookup.is_local)(&p.host))
        .collect();
    match local.as_slice() {
        [only] => Ok(((*only).clone(), "local address".to_string())),
        [] => Err(err(format!(
            "cannot tell which --raft-peers entry is this node: tried {} (by POD_NAME {:?}, hostname {:?}, local addresses); set --raft-advertise",
            tried(),
            lookup.pod_name,
            lookup.hostname
        ))),
        many => Err(err(format!(
            "several --raft-peers entries are local ({}); set --raft-advertise",
            many.iter()
                .map(|p| p.addr.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// True if `host` resolves to an address this machine can bind.
pub fn resolves_to_local_address(host: &str) -> bool {
    let Ok(addrs) = (host, 0u16).to_socket_addrs() else {
        return false;
    };
    addrs
        .into_iter()
        .any(|a| UdpSocket::bind((a.ip(), 0)).is_ok())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn parse_bind(flag: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| {
        err(format!(
            "bad {flag} {value:?}: expected ip:port, e.g. 0.0.0.0:7000"
        ))
    })
}

impl AgentArgs {
    /// Validate the flags into settings, using the real host for self-lookup.
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        let host = hostname();
        self.settings_with(&host, &resolves_to_local_address)
    }

    pub fn settings_with(
        &self,
        hostname: &str,
        is_local: &dyn Fn(&str) -> bool,
    ) -> Result<Settings, ConfigError> {
        if self.standalone && self.election_mode != ElectionMode::Raft {
            return Err(err("--standalone (witness) requires --election-mode=raft"));
        }
        if self.lease >= self.down_after {
            return Err(err(format!(
                "--lease ({}) must be shorter than --down-after ({}): an isolated master must stop writes before a new one can be chosen",
                crate::duration::format(self.lease),
                crate::duration::format(self.down_after)
            )));
        }
        for (flag, d) in [
            ("--probe-interval", self.probe_interval),
            ("--lease", self.lease),
            ("--redis-down-after", self.redis_down_after),
            ("--raft-heartbeat", self.raft_heartbeat),
            ("--switchover-timeout", self.switchover_timeout),
        ] {
            if d.is_zero() {
                return Err(err(format!("{flag} must be greater than 0")));
            }
        }
        if self.raft_election_timeout <= self.raft_heartbeat {
            return Err(err(
                "--raft-election-timeout must be longer than --raft-heartbeat",
            ));
        }
        if self.probe_interval >= self.lease {
            return Err(err("--probe-interval must be shorter than --lease"));
        }
        // A leader change must not fence a healthy master: the lease has to outlast the
        // slowest re-election plus the age of the contact the master holds when it starts.
        let shortest = LeaseTimings {
            election_timeout: self.raft_election_timeout,
            heartbeat: self.raft_heartbeat,
            probe_interval: self.probe_interval,
        }
        .shortest_lease();
        if self.lease < shortest {
            return Err(err(format!(
                "--lease ({}) must be at least four --raft-election-timeout plus --raft-heartbeat, two --probe-interval and 50 ms ({}), or a Raft leader change could fence the master",
                crate::duration::format(self.lease),
                crate::duration::format(shortest)
            )));
        }
        // Margin between the old master fencing itself and the earliest new master, for
        // processing delays and clock-rate differences between hosts.
        let ack_window = self.down_after.saturating_sub(self.lease) / 2;
        if ack_window < self.raft_heartbeat * 2 {
            return Err(err(format!(
                "--down-after ({}) must exceed --lease ({}) by at least four --raft-heartbeat ({})",
                crate::duration::format(self.down_after),
                crate::duration::format(self.lease),
                crate::duration::format(self.raft_heartbeat)
            )));
        }
        if self.raft_peers.trim().is_empty() {
            return Err(err(
                "--raft-peers is required: comma-separated host:port of every agent, witness included",
            ));
        }
        let mut peers: Vec<Peer> = Vec::new();
        for entry in self.raft_peers.split(',').filter(|e| !e.trim().is_empty()) {
            let peer = Peer::parse(entry)?;
            if peers.iter().any(|p| p.addr == peer.addr) {
                return Err(err(format!("--raft-peers lists {} twice", peer.addr)));
            }
            peers.push(peer);
        }
        let raft_bind = parse_bind("--raft-bind", &self.raft_bind)?;
        let api_bind = parse_bind("--api-bind", &self.api_bind)?;
        let sentinel_bind = if self.sentinel_bind.is_empty() {
            None
        } else {
            Some(parse_bind("--sentinel-bind", &self.sentinel_bind)?)
        };
        // The name is one word of the space-separated `+switch-master` message.
        let master_name = &self.sentinel_master_name;
        if master_name.is_empty() || !master_name.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(err(format!(
                "bad --sentinel-master-name {master_name:?}: expected one word of printable ASCII"
            )));
        }
        let lookup = SelfLookup {
            advertise: &self.raft_advertise,
            pod_name: &self.pod_name,
            namespace: &self.namespace,
            hostname,
            is_local,
            raft_bind_port: raft_bind.port(),
        };
        let (me, me_found_by) = find_self(&peers, &lookup)?;

        let redis = (!self.standalone).then(|| crate::redis::RedisConfig {
            host: self.redis_host.clone(),
            port: self.redis_port,
            password: (!self.redis_password.is_empty()).then(|| self.redis_password.clone()),
            tls: self.redis_tls,
            tls_skip_verify: self.redis_tls_skip_verify,
            tls_ca_file: (!self.redis_tls_ca_file.is_empty())
                .then(|| PathBuf::from(&self.redis_tls_ca_file)),
        });
        let redis_announce = if self.standalone {
            None
        } else if self.redis_announce.is_empty() {
            Some(join_host_port(&me.host, self.redis_port))
        } else {
            let (h, p) = split_host_port(&self.redis_announce, self.redis_port).map_err(|e| {
                err(format!(
                    "bad --redis-announce {:?}: {e}",
                    self.redis_announce
                ))
            })?;
            Some(join_host_port(&h, p))
        };
        let sentinel_announce = match (sentinel_bind, self.sentinel_announce.as_str()) {
            (None, _) => None,
            (Some(bind), "") if bind.ip().is_unspecified() => {
                Some(join_host_port(&me.host, bind.port()))
            }
            (Some(bind), "") => Some(join_host_port(&bind.ip().to_string(), bind.port())),
            (Some(bind), announce) => {
                let (h, p) = split_host_port(announce, bind.port())
                    .map_err(|e| err(format!("bad --sentinel-announce {announce:?}: {e}")))?;
                Some(join_host_port(&h, p))
            }
        };
        let sentinel_password = [&self.sentinel_password, &self.redis_password]
            .into_iter()
            .find(|p| !p.is_empty())
            .cloned();
        let master_endpoints_service = match self.master_endpoints_service.trim() {
            "" => None,
            svc if is_dns_label(svc) => Some(svc.to_string()),
            svc => {
                return Err(err(format!(
                    "bad --master-endpoints-service {svc:?}: a Service name is lowercase letters, digits and '-', starts with a letter, at most 63 characters"
                )));
            }
        };
        let name = [&self.node_name, &self.pod_name]
            .into_iter()
            .find(|n| !n.is_empty())
            .cloned()
            .unwrap_or_else(|| me.addr.clone());

        let mut ignored_flags = Vec::new();
        if self.redis_service != "redis" {
            ignored_flags.push("--redis-service".to_string());
        }
        if !self.master_service.is_empty() {
            ignored_flags.push("--master-service".to_string());
        }
        if self.sync_interval != Duration::from_secs(15) {
            ignored_flags.push("--sync-interval".to_string());
        }

        let tls = self.tls.files()?;
        Ok(Settings {
            tls,
            api_advertise: join_host_port(&me.host, api_bind.port()),
            peers,
            me,
            me_found_by,
            name,
            site: self.site.clone(),
            witness: self.standalone,
            no_promote: self.no_promote,
            priority: self.priority,
            raft_bind,
            api_bind,
            sentinel_bind,
            sentinel_master_name: self.sentinel_master_name.clone(),
            sentinel_announce,
            sentinel_password,
            raft_data_dir: self.raft_data_dir.clone(),
            redis,
            redis_announce,
            redis_announce_from_flag: !self.standalone && !self.redis_announce.is_empty(),
            secret: (!self.shared_secret.is_empty())
                .then(|| self.shared_secret.as_bytes().to_vec()),
            probe_interval: self.probe_interval,
            redis_down_after: self.redis_down_after,
            down_after: self.down_after,
            lease: self.lease,
            max_lag_on_failover: self.max_lag_on_failover,
            switchover_timeout: self.switchover_timeout,
            raft_heartbeat: self.raft_heartbeat,
            raft_election_timeout: self.raft_election_timeout,
            pod_name: self.pod_name.clone(),
            namespace: self.namespace.clone(),
            kubernetes: self.kubernetes,
            label_selector: self.label_selector.clone(),
            lb_service: self.lb_service,
            master_endpoints_service,
            debug: self.debug,
            ignored_flags,
        })
    }
}

/// A DNS-1035 label, the form of a Service name.
fn is_dns_label(s: &str) -> bool {
    s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

impl Settings {
    /// The timings the lease must outlast, as [`LeaseTimings`] wants them.
    pub fn lease_timings(&self) -> LeaseTimings {
        LeaseTimings {
            election_timeout: self.raft_election_timeout,
            heartbeat: self.raft_heartbeat,
            probe_interval: self.probe_interval,
        }
    }

    /// The `host:port` names requests to this agent are signed for: its `--raft-peers`
    /// entry, its API address, and its bind addresses unless they are wildcards. (The
    /// address a connection arrived on is accepted too, see `auth::Verifier`.)
    pub fn own_authorities(&self) -> Vec<String> {
        let mut names = vec![self.me.addr.clone(), self.api_advertise.clone()];
        for bind in [self.raft_bind, self.api_bind] {
            if !bind.ip().is_unspecified() {
                names.push(join_host_port(&bind.ip().to_string(), bind.port()));
            }
        }
        names
    }

    /// Advertise the LoadBalancer address found by `--lb-service` for Redis replication,
    /// unless `--redis-announce` names an address explicitly. The Raft address stays the
    /// own `--raft-peers` entry: node ids are derived from it.
    pub fn advertise_lb_host(&mut self, host: &str) {
        let Some(redis) = &self.redis else {
            return;
        };
        if !self.redis_announce_from_flag {
            self.redis_announce = Some(join_host_port(host, redis.port));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEERS: &str = "redis-0.redis-headless.redis-multisite-a.svc.cluster.local:7000,redis-0.redis-headless.redis-multisite-b.svc.cluster.local:7000,redis-witness.redis-headless.redis-multisite-c.svc.cluster.local";

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        agent: AgentArgs,
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        use clap::Parser;
        let mut full = vec!["redis-orchestrator"];
        full.extend_from_slice(args);
        Cli::try_parse_from(full)
    }

    fn settings(args: &[&str]) -> Result<Settings, ConfigError> {
        let cli = parse(args).map_err(|e| err(e.to_string()))?;
        cli.agent.settings_with("nohost", &|_| false)
    }

    #[test]
    fn every_original_flag_parses() {
        let cli = parse(&[
            "--redis-host=localhost",
            "--redis-port=6380",
            "--redis-password=pw",
            "--redis-tls",
            "--redis-tls-skip-verify=true",
            "--redis-service=redis",
            "--master-service=redis-master",
            "--sync-interval=15s",
            "--pod-name=redis-0",
            "--namespace=redis-multisite-a",
            "--label-selector=app=redis",
            "--election-mode=raft",
            "--raft-bind=0.0.0.0:7000",
            &format!("--raft-peers={PEERS}"),
            "--raft-data-dir=/data/raft",
            "--raft-bootstrap=true",
            "--lb-service=false",
            "--shared-secret=s",
            "--standalone=false",
            "--no-promote",
            "--debug=true",
        ])
        .expect("original flags parse");
        let a = cli.agent;
        assert_eq!(a.redis_port, 6380);
        assert!(a.redis_tls && a.redis_tls_skip_verify && a.no_promote && a.debug);
        assert!(!a.standalone && !a.lb_service);
        assert_eq!(a.election_mode, ElectionMode::Raft);
        assert_eq!(a.sync_interval, Duration::from_secs(15));
    }

    #[test]
    fn boolean_flags_take_both_forms() {
        for (args, want) in [
            (vec!["--standalone"], true),
            (vec!["--standalone=true"], true),
            (vec!["--standalone=false"], false),
            (vec![], false),
        ] {
            let cli = parse(&args).expect("parses");
            assert_eq!(cli.agent.standalone, want, "{args:?}");
        }
    }

    #[test]
    fn finds_itself_by_pod_name_and_resolves_the_seed_peers() {
        let s = settings(&[
            "--election-mode=raft",
            &format!("--raft-peers={PEERS}"),
            "--pod-name=redis-0",
        ]);
        // Two entries start with "redis-0.": ambiguous by pod name alone, so it must fail clearly.
        let e = s.expect_err("ambiguous pod name");
        assert!(e.0.contains("cannot tell which --raft-peers entry"), "{e}");
        let s = settings(&[
            &format!("--raft-peers={PEERS}"),
            "--pod-name=redis-0",
            "--namespace=redis-multisite-b",
        ])
        .expect("namespace disambiguates");
        assert_eq!(
            s.me.addr,
            "redis-0.redis-headless.redis-multisite-b.svc.cluster.local:7000"
        );
        assert_eq!(s.me_found_by, "POD_NAME redis-0");
        assert_eq!(s.name, "redis-0");

        let s = settings(&[
            &format!("--raft-peers={PEERS}"),
            "--pod-name=redis-witness",
            "--standalone",
            "--election-mode=raft",
        ])
        .expect("witness finds itself");
        assert_eq!(
            s.me.addr,
            "redis-witness.redis-headless.redis-multisite-c.svc.cluster.local:7000"
        );
        assert!(s.witness && s.redis.is_none() && s.redis_announce.is_none());
        assert_eq!(s.peers.len(), 3);
    }

    #[test]
    fn finds_itself_by_advertise_then_local_address() {
        let peers = "--raft-peers=10.0.0.1:7000,10.0.0.2:7000,10.0.0.3";
        let s = settings(&[peers, "--raft-advertise=10.0.0.2:7000"]).expect("advertise");
        assert_eq!(s.me.addr, "10.0.0.2:7000");
        assert_eq!(s.redis_announce.as_deref(), Some("10.0.0.2:6379"));
        assert_eq!(s.api_advertise, "10.0.0.2:8080");

        let cli = parse(&[peers]).expect("parses");
        let s = cli
            .agent
            .settings_with("h", &|host| host == "10.0.0.3")
            .expect("local");
        assert_eq!(s.me.addr, "10.0.0.3:7000");
        assert_eq!(s.me_found_by, "local address");
    }

    #[test]
    fn node_ids_are_stable_and_distinct() {
        let a = Peer::parse("a.example:7000").expect("a");
        let a2 = Peer::parse("a.example").expect("a without port");
        let b = Peer::parse("b.example:7000").expect("b");
        assert_eq!(a.id, a2.id);
        assert_ne!(a.id, b.id);
        assert_eq!(a.id, node_id("a.example:7000"));
    }

    #[test]
    fn bad_values_are_rejected_with_a_reason() {
        let peers = "--raft-peers=10.0.0.1:7000,10.0.0.2:7000";
        let me = "--raft-advertise=10.0.0.1:7000";
        let cases: Vec<(Vec<&str>, &str)> = vec![
            (vec![peers, me, "--down-after=5"], "missing unit"),
            (vec![peers, me, "--lease=ten"], "invalid duration"),
            (
                vec![peers, me, "--lease=5s", "--down-after=5s"],
                "--lease (5s) must be shorter than --down-after (5s)",
            ),
            (
                vec![peers, me, "--standalone"],
                "requires --election-mode=raft",
            ),
            (vec![me], "--raft-peers is required"),
            (vec!["--raft-peers=a:70000", me], "bad port"),
            (
                vec![peers, "--raft-advertise=10.9.9.9:7000"],
                "is not one of --raft-peers",
            ),
            (vec![peers, me, "--api-bind=localhost"], "bad --api-bind"),
            (
                vec![peers, me, "--sentinel-bind=26379"],
                "bad --sentinel-bind",
            ),
            (
                vec![peers, me, "--sentinel-master-name=my master"],
                "bad --sentinel-master-name",
            ),
            (
                vec![peers, me, "--sentinel-master-name="],
                "bad --sentinel-master-name",
            ),
            (
                vec!["--raft-peers=a:1,a:1", "--raft-advertise=a:1"],
                "twice",
            ),
            (vec![peers, me, "--election-mode=paxos"], "invalid value"),
            (
                vec![peers, me, "--probe-interval=5s"],
                "--probe-interval must be shorter than --lease",
            ),
            (
                vec![peers, me, "--lease=2s"],
                "a Raft leader change could fence the master",
            ),
            // At the defaults a re-election and a report take 2.45 s; 2.65 s leaves a probe.
            (
                vec![peers, me, "--lease=2640ms"],
                "a Raft leader change could fence the master",
            ),
            (
                vec![peers, me, "--lease=4800ms"],
                "by at least four --raft-heartbeat",
            ),
        ];
        for (args, want) in cases {
            let e = settings(&args).expect_err(&format!("{args:?} must fail"));
            assert!(e.0.contains(want), "{args:?}: got {e}");
        }
        settings(&[peers, me, "--lease=2650ms"]).expect("the shortest lease at the defaults");
    }

    #[test]
    fn sentinel_endpoint_is_off_by_default() {
        let peers = "--raft-peers=10.0.0.1:7000,10.0.0.2:7000";
        let me = "--raft-advertise=10.0.0.1:7000";
        let s = settings(&[peers, me]).expect("defaults");
        assert_eq!(s.sentinel_bind, None);
        assert_eq!(s.sentinel_master_name, "mymaster");
        let s = settings(&[
            peers,
            me,
            "--sentinel-bind=0.0.0.0:26379",
            "--sentinel-master-name=orders",
        ])
        .expect("sentinel flags");
        assert_eq!(
            s.sentinel_bind,
            Some("0.0.0.0:26379".parse().expect("addr"))
        );
        assert_eq!(s.sentinel_master_name, "orders");
        assert_eq!(s.sentinel_announce.as_deref(), Some("10.0.0.1:26379"));
    }

    #[test]
    fn sentinel_announce_and_password_defaults() {
        let peers = "--raft-peers=10.0.0.1:7000,10.0.0.2:7000";
        let me = "--raft-advertise=10.0.0.1:7000";
        let s = settings(&[peers, me, "--redis-password=r"]).expect("no endpoint");
        assert_eq!(s.sentinel_announce, None);
        assert_eq!(s.sentinel_password.as_deref(), Some("r"));
        let s = settings(&[peers, me, "--sentinel-bind=127.0.0.1:26380"]).expect("bound");
        assert_eq!(s.sentinel_announce.as_deref(), Some("127.0.0.1:26380"));
        assert_eq!(s.sentinel_password, None);
        let s = settings(&[
            peers,
            me,
            "--standalone",
            "--election-mode=raft",
            "--redis-password=r",
            "--sentinel-password=s",
            "--sentinel-bind=0.0.0.0:26379",
            "--sentinel-announce=sentinel.example",
        ])
        .expect("witness");
        assert_eq!(
            s.sentinel_announce.as_deref(),
            Some("sentinel.example:26379")
        );
        assert_eq!(s.sentinel_password.as_deref(), Some("s"), "the witness too");
    }

    #[test]
    fn kubernetes_flags_and_lb_address() {
        let peers = "--raft-peers=10.0.0.1:7000,10.0.0.2:7000,10.0.0.3:7000";
        let me = "--raft-advertise=10.0.0.1:7000";
        let s = settings(&[peers, me]).expect("defaults");
        assert_eq!(s.kubernetes, KubernetesMode::Auto);
        assert_eq!(s.master_endpoints_service.as_deref(), Some("redis-master"));
        assert_eq!(s.label_selector, "app=redis");
        assert!(!s.lb_service);

        let s = settings(&[
            peers,
            me,
            "--kubernetes=off",
            "--master-endpoints-service=",
            "--lb-service",
            "--label-selector=app=redis,site=site-a",
        ])
        .expect("set");
        assert_eq!(s.kubernetes, KubernetesMode::Off);
        assert_eq!(s.master_endpoints_service, None);
        assert!(s.lb_service);
        assert_eq!(s.label_selector, "app=redis,site=site-a");
        assert_eq!(
            settings(&[peers, me, "--kubernetes", "on"])
                .expect("on")
                .kubernetes,
            KubernetesMode::On
        );

        for bad in ["Redis-Master", "redis_master", "-redis", "redis-"] {
            let flag = format!("--master-endpoints-service={bad}");
            let e = settings(&[peers, me, &flag]).expect_err(bad);
            assert!(e.0.contains("bad --master-endpoints-service"), "{e}");
        }
        assert!(settings(&[peers, me, "--kubernetes=maybe"]).is_err());

        // The LoadBalancer address replaces the default announce, never an explicit one.
        let mut s = settings(&[peers, me, "--redis-port=6380"]).expect("announce");
        s.advertise_lb_host("203.0.113.10");
        assert_eq!(s.redis_announce.as_deref(), Some("203.0.113.10:6380"));
        let mut s = settings(&[peers, me, "--redis-announce=redis-a.example:6379"]).expect("flag");
        s.advertise_lb_host("203.0.113.10");
        assert_eq!(s.redis_announce.as_deref(), Some("redis-a.example:6379"));
        let mut s =
            settings(&[peers, me, "--standalone", "--election-mode=raft"]).expect("witness");
        s.advertise_lb_host("203.0.113.10");
        assert_eq!(s.redis_announce, None);
    }
}
