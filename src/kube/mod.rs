//! The Kubernetes adapter: the only module that talks to the Kubernetes API.
//!
//! What it does for the agent, each call idempotent and safe to repeat every cycle:
//! - [`KubeAdapter::detect`] at start-up: `None` outside a cluster, else the own pod's
//!   identity ([`PodInfo`]) read from the API;
//! - [`ClusterApi::ensure_role_label`]: the own pod's `redis-role` label by JSON merge patch,
//!   which routes the `redis` (master) and `redis-readonly` (replica) Services;
//! - [`ClusterApi::ensure_master_endpoints`]: the EndpointSlice of the selector-less
//!   `--master-endpoints-service`, so `redis-master.<namespace>` reaches the committed master
//!   in whichever site it lives;
//! - [`ClusterApi::lb_advertise_host`]: the address of the LoadBalancer Service that selects
//!   this pod (`--lb-service`), for cross-cluster replication;
//! - [`ClusterApi::list_pods`]: pods matching `--label-selector`, for a status view;
//! - [`KubeAdapter::watch_own_pod`]: a watch on the own pod, so a label someone removed or
//!   changed is seen (and repaired by the next cycle) at once, not at the next resync.
//!
//! At start-up [`KubeAdapter::detect`] checks by discovery that the API server serves every
//! resource the flags need, and names what is missing. Requests carry the User-Agent
//! [`USER_AGENT`].
//!
//! Errors are returned, never panicked on: the caller logs them and retries (backing off a
//! lasting one). Observations are cached (for [`KubeSettings::resync`]) so a cycle that finds
//! everything right makes no API call at all.
//!
//! Label ordering is the caller's duty and [`desired_role_label`] encodes it: the label says
//! `master` only once the local Redis is the writable committed master, and it moves away
//! from `master` in the same cycle that decides to demote or fence, before that happens.

pub mod client;
pub mod testing;
mod views;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

pub use crate::wire::PodSummary;
pub use client::KubeAdapter;

use crate::config::{KubernetesMode, Settings};
use crate::model::RedisRole;

/// The pod label that the `redis` and `redis-readonly` Services select on.
pub const ROLE_LABEL: &str = "redis-role";
/// Field manager recorded by the API server for every write of ours.
pub const FIELD_MANAGER: &str = "redis-orchestrator";
/// Annotation on the master EndpointSlice holding the epoch it was written for.
pub const EPOCH_ANNOTATION: &str = "redis-orchestrator/epoch";
/// Label tying an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Label telling the EndpointSlice controllers that this slice is not theirs.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// Our value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "redis-orchestrator";
/// Name of the port in the master EndpointSlice; the Service's port must carry the same name.
pub const MASTER_PORT_NAME: &str = "redis";
/// Mounted into every pod whose service account token is automounted.
pub const SERVICE_ACCOUNT_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
/// Selector keys by which a LoadBalancer Service names exactly one pod (as the original did).
pub const POD_NAME_SELECTOR_KEYS: [&str; 3] =
    ["statefulset.kubernetes.io/pod-name", "pod-name", "pod"];

/// Sent with every API request, so audit logs and API priority rules can tell us apart.
pub const USER_AGENT: &str = concat!("redis-orchestrator/", env!("CARGO_PKG_VERSION"));

/// One RBAC rule the adapter needs in its own namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Permission {
    pub api_group: &'static str,
    pub resource: &'static str,
    pub verbs: &'static [&'static str],
}

/// Every API verb the adapter uses, so the shipped Role can grant exactly these (the
/// manifest tests compare, the adapter tests check each request against it).
pub const REQUIRED_PERMISSIONS: &[Permission] = &[
    // get: own pod at start-up and on resync; list: status view; patch: the role label;
    // watch: the own pod (by field selector), so a changed label is repaired at once.
    Permission {
        api_group: "",
        resource: "pods",
        verbs: &["get", "list", "watch", "patch"],
    },
    // list: find the LoadBalancer Service that selects this pod (`--lb-service`).
    Permission {
        api_group: "",
        resource: "services",
        verbs: &["list"],
    },
    // The master EndpointSlice: read, create once, then replace with optimistic locking.
    Permission {
        api_group: "discovery.k8s.io",
        resource: "endpointslices",
        verbs: &["get", "create", "update"],
    },
];

/// The own pod, read once at start-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub ip: String,
}

/// Bounded waiting: how many tries, and the pause between two.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wait {
    pub attempts: u32,
    pub interval: Duration,
}

/// What the adapter needs from the agent's settings, plus its timing.
#[derive(Clone, Debug)]
pub struct KubeSettings {
    pub mode: KubernetesMode,
    pub pod_name: String,
    pub namespace: String,
    pub label_selector: String,
    pub lb_service: bool,
    pub master_endpoints_service: Option<String>,
    /// Whose presence means "inside a cluster" in `auto` mode.
    pub token_path: PathBuf,
    /// Bound on every single API call.
    pub request_timeout: Duration,
    /// Reading the own pod until the kubelet has published its IP.
    pub pod_ip_wait: Wait,
    /// Waiting for a LoadBalancer Service and its ingress address.
    pub lb_wait: Wait,
    /// How long a cached observation (label, EndpointSlice) is trusted before it is read
    /// again, so a change made by someone else is repaired.
    pub resync: Duration,
}

impl KubeSettings {
    /// Defaults: 5 s per call, pod IP within 30 s, LoadBalancer within 5 min, re-read every minute.
    pub fn from_settings(s: &Settings) -> KubeSettings {
        KubeSettings {
            mode: s.kubernetes,
            pod_name: s.pod_name.clone(),
            namespace: s.namespace.clone(),
            label_selector: s.label_selector.clone(),
            lb_service: s.lb_service,
            master_endpoints_service: s.master_endpoints_service.clone(),
            token_path: PathBuf::from(SERVICE_ACCOUNT_TOKEN),
            request_timeout: Duration::from_secs(5),
            pod_ip_wait: Wait {
                attempts: 30,
                interval: Duration::from_secs(1),
            },
            lb_wait: Wait {
                attempts: 60,
                interval: Duration::from_secs(5),
            },
            resync: Duration::from_secs(60),
        }
    }
}

impl From<&Settings> for KubeSettings {
    fn from(s: &Settings) -> KubeSettings {
        KubeSettings::from_settings(s)
    }
}

/// Failures of the adapter. None is fatal to a running agent: the caller logs and retries.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// In a cluster (or `--kubernetes=on`) but the pod's own name or namespace is unknown.
    #[error(
        "running in Kubernetes but {what} is empty: set {env} from the downward API (fieldRef {field_path}) or pass {flag}"
    )]
    MissingIdentity {
        what: &'static str,
        env: &'static str,
        field_path: &'static str,
        flag: &'static str,
    },
    /// No kubeconfig and no in-cluster configuration, or an unusable one.
    #[error("cannot configure the Kubernetes client: {0}")]
    Config(String),
    /// The API server refused: 403 (RBAC), 404, 409 (conflict), 422 (invalid), 5xx ...
    #[error("Kubernetes API {op}: HTTP {code} {reason}: {message}")]
    Api {
        op: String,
        code: u16,
        reason: String,
        message: String,
    },
    /// No answer within [`KubeSettings::request_timeout`].
    #[error("Kubernetes API {op}: no answer within {}", crate::duration::format(*.timeout))]
    Timeout { op: String, timeout: Duration },
    /// Connection, TLS, authentication or decoding failure. `detail` is the whole chain of
    /// causes ("client error (Connect)" alone does not say that a certificate was refused).
    #[error("Kubernetes API {op}: {detail}")]
    Transport {
        op: String,
        detail: String,
        #[source]
        source: Box<::kube::Error>,
    },
    /// The API server does not serve a resource the flags need (an older Kubernetes, or an
    /// API group turned off).
    #[error("the Kubernetes API server does not serve {}", missing.join("; "))]
    MissingApi { missing: Vec<String> },
    /// The kubelet never published the own pod's IP.
    #[error("pod {namespace}/{name} has no IP after {attempts} reads")]
    PodIpMissing {
        namespace: String,
        name: String,
        attempts: u32,
    },
    /// `--lb-service`, but no LoadBalancer Service names this pod in its selector.
    #[error(
        "--lb-service: no LoadBalancer Service in namespace {namespace} selects pod {pod} by statefulset.kubernetes.io/pod-name, pod-name or pod (LoadBalancer Services seen: {seen})"
    )]
    NoLoadBalancerService {
        namespace: String,
        pod: String,
        seen: String,
    },
    /// `--lb-service`, but more than one LoadBalancer Service names this pod.
    #[error("--lb-service: several LoadBalancer Services select pod {pod}: {services}")]
    AmbiguousLoadBalancer { pod: String, services: String },
    /// The LoadBalancer Service exists but never got a usable ingress address.
    #[error(
        "--lb-service: Service {service} has no ingress IP or resolvable hostname after {attempts} tries"
    )]
    LoadBalancerPending { service: String, attempts: u32 },
    /// An address handed to the adapter is not an IP address.
    #[error("{0:?} is not an IP address")]
    InvalidAddress(String),
    /// The master's Redis address does not resolve to an IP address.
    #[error("cannot resolve the master's Redis address {addr:?}: {reason}")]
    Resolve { addr: String, reason: String },
}

impl KubeError {
    /// The HTTP status of an API refusal.
    pub fn status_code(&self) -> Option<u16> {
        match self {
            KubeError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Worth retrying unchanged: no answer, a broken connection, throttling or a server error.
    /// Refusals such as 403 or 404 need someone to change something first.
    pub fn is_transient(&self) -> bool {
        match self {
            KubeError::Timeout { .. } | KubeError::Transport { .. } => true,
            KubeError::Api { code, .. } => *code == 429 || *code >= 500,
            _ => false,
        }
    }
}

/// `error` and every cause under it, in one line: "a: b: c", leaving out a cause whose text
/// the previous one already contains.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![error.to_string()];
    let mut cause = error.source();
    while let Some(e) = cause {
        let text = e.to_string();
        if parts.last().is_none_or(|last| !last.contains(&text)) {
            parts.push(text);
        }
        cause = e.source();
    }
    parts.join(": ")
}

/// A boxed future, so [`ClusterApi`] can be used as `dyn ClusterApi` by the agent and tests.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Everything the agent asks of Kubernetes. [`KubeAdapter`] is the real implementation,
/// [`testing::FakeCluster`] a recording fake for tests of the agent.
pub trait ClusterApi: Send + Sync {
    /// The own pod as read at start-up.
    fn pod_info(&self) -> &PodInfo;

    /// With `--lb-service`: the IP of the LoadBalancer Service selecting this pod (an ingress
    /// hostname is resolved), waiting with bounded retries for it to be provisioned.
    /// `Ok(None)` without `--lb-service`.
    fn lb_advertise_host(&self) -> BoxFuture<'_, Result<Option<String>, KubeError>>;

    /// Make the own pod's `redis-role` label `desired` (`None`: no label) with a JSON merge
    /// patch. No API call when the last observation already matches.
    fn ensure_role_label(&self, desired: Option<RedisRole>)
    -> BoxFuture<'_, Result<(), KubeError>>;

    /// Point the master EndpointSlice at `master_ip:port` for `epoch`. Never replaces a slice
    /// written for a newer epoch; no write when it is already right; no call at all when
    /// `--master-endpoints-service` is empty.
    fn ensure_master_endpoints<'a>(
        &'a self,
        epoch: u64,
        master_ip: &'a str,
        port: u16,
    ) -> BoxFuture<'a, Result<(), KubeError>>;

    /// Pods of the own namespace matching `--label-selector`.
    fn list_pods(&self) -> BoxFuture<'_, Result<Vec<PodSummary>, KubeError>>;
}

/// The IP (IPv4 preferred) and port of a member's `host:port` Redis address, as
/// [`ClusterApi::ensure_master_endpoints`] needs: an EndpointSlice holds addresses, not names.
/// DNS may be slow; callers bound this like any other call in their loop.
pub async fn resolve_redis_addr(addr: &str) -> Result<(String, u16), KubeError> {
    let resolve_error = |reason: String| KubeError::Resolve {
        addr: addr.to_string(),
        reason,
    };
    let (host, port) = crate::addr::split_host_port(addr.trim(), 6379).map_err(resolve_error)?;
    let ips: Vec<std::net::IpAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| resolve_error(e.to_string()))?
        .map(|a| a.ip())
        .collect();
    ips.iter()
        .find(|ip| ip.is_ipv4())
        .or(ips.first())
        .map(|ip| (ip.to_string(), port))
        .ok_or_else(|| resolve_error("no address".to_string()))
}

/// What one reconcile cycle knows, for [`desired_role_label`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoleFacts {
    /// A witness has no Redis and never carries the label.
    pub witness: bool,
    /// The committed cluster state names this node as master.
    pub committed_master_is_self: bool,
    /// The latest probe saw the local Redis answer with role master.
    pub local_redis_is_master: bool,
    /// Writes are paused now, or this cycle's plan pauses them or demotes the local Redis.
    pub losing_writes: bool,
}

/// The label this pod must carry. `master` requires both the committed state and the local
/// Redis to agree (so the label never leads a promotion) and writes to be allowed (so it is
/// removed in the cycle that decides to fence or demote, before that action runs). Every
/// other data node is a `replica`, including one whose Redis is down: its pod is then not
/// Ready and no Service routes to it anyway.
pub fn desired_role_label(facts: RoleFacts) -> Option<RedisRole> {
    if facts.witness {
        None
    } else if facts.committed_master_is_self && facts.local_redis_is_master && !facts.losing_writes
    {
        Some(RedisRole::Master)
    } else {
        Some(RedisRole::Replica)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(master: bool, local_master: bool, losing: bool) -> RoleFacts {
        RoleFacts {
            witness: false,
            committed_master_is_self: master,
            local_redis_is_master: local_master,
            losing_writes: losing,
        }
    }

    #[test]
    fn master_label_only_when_committed_local_and_writable() {
        use RedisRole::{Master, Replica};
        let cases = [
            // Committed as master but Redis not promoted yet: not before the promotion.
            (facts(true, false, false), Some(Replica)),
            (facts(true, true, false), Some(Master)),
            // About to be fenced or demoted: label moves first.
            (facts(true, true, true), Some(Replica)),
            // An old master the cluster replaced: away from master before REPLICAOF.
            (facts(false, true, false), Some(Replica)),
            (facts(false, false, false), Some(Replica)),
        ];
        for (f, want) in cases {
            assert_eq!(desired_role_label(f), want, "{f:?}");
        }
        let witness = RoleFacts {
            witness: true,
            ..facts(true, true, false)
        };
        assert_eq!(desired_role_label(witness), None);
    }

    #[test]
    fn error_chain_names_every_distinct_cause() {
        #[derive(Debug, thiserror::Error)]
        #[error("client error (Connect)")]
        struct Outer(#[source] std::io::Error);
        let inner = std::io::Error::other("invalid peer certificate: CaUsedAsEndEntity");
        assert_eq!(
            error_chain(&Outer(inner)),
            "client error (Connect): invalid peer certificate: CaUsedAsEndEntity"
        );
        #[derive(Debug, thiserror::Error)]
        #[error("wrapped: {0}")]
        struct Repeats(#[source] std::io::Error);
        assert_eq!(
            error_chain(&Repeats(std::io::Error::other("refused"))),
            "wrapped: refused"
        );
        assert!(
            USER_AGENT.starts_with("redis-orchestrator/0."),
            "{USER_AGENT}"
        );
    }

    #[tokio::test]
    async fn redis_addresses_resolve_to_an_ip() {
        let r = |a: &'static str| async move { resolve_redis_addr(a).await };
        assert_eq!(
            r("10.244.1.7:6379").await.expect("ip"),
            ("10.244.1.7".to_string(), 6379)
        );
        assert_eq!(
            r("[fd00::12]:6380").await.expect("ipv6"),
            ("fd00::12".to_string(), 6380)
        );
        assert_eq!(
            r("localhost:6381").await.expect("name"),
            ("127.0.0.1".to_string(), 6381)
        );
        assert!(matches!(
            r("localhost:notaport").await,
            Err(KubeError::Resolve { .. })
        ));
    }
}
