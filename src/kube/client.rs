//! The real [`ClusterApi`](super::ClusterApi): kube-rs against the API server.
//!
//! Every call is bounded by [`KubeSettings::request_timeout`] and turned into a
//! [`KubeError`]. Observations are cached behind async mutexes that are held for a whole
//! `ensure_*` operation, so two concurrent callers cannot race a stale cache into a write.
//! The watch of the own pod only refreshes the label cache; the next `ensure_role_label`
//! (every member cycle) then repairs a label someone changed.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ::kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use ::kube::{Client, Config};
use futures_util::{StreamExt, pin_mut};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Map, Value};
use tokio::sync::Mutex;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::views::{PodView, ServiceView};
use super::{
    BoxFuture, ClusterApi, EPOCH_ANNOTATION, FIELD_MANAGER, KubeError, KubeSettings, MANAGED_BY,
    MANAGED_BY_LABEL, MASTER_PORT_NAME, POD_NAME_SELECTOR_KEYS, PodInfo, PodSummary, ROLE_LABEL,
    SERVICE_NAME_LABEL, USER_AGENT, error_chain,
};
use crate::config::KubernetesMode;
use crate::model::RedisRole;

/// A value read from (or written to) the API, and when.
#[derive(Clone, Debug)]
struct Observed<T> {
    value: T,
    at: Instant,
}

impl<T> Observed<T> {
    fn now(value: T) -> Observed<T> {
        Observed {
            value,
            at: Instant::now(),
        }
    }
}

/// Where the master EndpointSlice should point.
#[derive(Clone, Debug, PartialEq, Eq)]
struct MasterTarget {
    epoch: u64,
    ip: IpAddr,
    port: u16,
}

/// What the last look at the master EndpointSlice found.
#[derive(Clone, Debug, PartialEq, Eq)]
enum SliceSeen {
    /// It points at this target.
    PointsAt(MasterTarget),
    /// It was written for this newer epoch than ours at the time.
    Newer(u64),
}

/// The own pod's role label as last observed; `None` when unknown after a failed write.
type LabelCache = Arc<Mutex<Option<Observed<Option<String>>>>>;

/// Aborts the task when dropped, so the watch ends with its adapter.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Talks to the API server for one pod. Build it with [`KubeAdapter::detect`] in the agent,
/// or [`KubeAdapter::connect`] with any [`Client`] (tests use a mocked one).
pub struct KubeAdapter {
    client: Client,
    settings: KubeSettings,
    pod: PodInfo,
    label: LabelCache,
    /// The master EndpointSlice as last observed; `None` when unknown.
    endpoints: Mutex<Option<Observed<SliceSeen>>>,
    /// The watch of the own pod, once started.
    watch: Option<AbortOnDrop>,
}

impl KubeAdapter {
    /// `None` outside Kubernetes (`--kubernetes=off`, or `auto` without a service-account
    /// token); else a client from the in-cluster configuration (or a kubeconfig) and the own
    /// pod read from the API. Requires the pod name and namespace in a cluster.
    pub async fn detect(settings: &KubeSettings) -> Result<Option<KubeAdapter>, KubeError> {
        let reason = match settings.mode {
            KubernetesMode::Off => {
                info!("--kubernetes=off: no pod labels, no master endpoints");
                return Ok(None);
            }
            KubernetesMode::Auto if !settings.token_path.exists() => {
                info!(
                    token = %settings.token_path.display(),
                    "not in Kubernetes (no service-account token): no pod labels, no master endpoints"
                );
                return Ok(None);
            }
            KubernetesMode::Auto => "service-account token found",
            KubernetesMode::On => "--kubernetes=on",
        };
        check_identity(settings)?;
        let config = Config::infer()
            .await
            .map_err(|e| KubeError::Config(error_chain(&e)))?;
        let client = build_client(config)?;
        check_apis(&client, settings).await?;
        let adapter = KubeAdapter::connect(client, settings.clone()).await?;
        info!(
            reason,
            user_agent = USER_AGENT,
            pod = %adapter.pod.name,
            namespace = %adapter.pod.namespace,
            uid = %adapter.pod.uid,
            ip = %adapter.pod.ip,
            "Kubernetes integration on"
        );
        Ok(Some(adapter))
    }

    /// Read the own pod through `client`, waiting (bounded by
    /// [`KubeSettings::pod_ip_wait`]) for its IP and through transient API errors.
    pub async fn connect(client: Client, settings: KubeSettings) -> Result<KubeAdapter, KubeError> {
        check_identity(&settings)?;
        let pods: Api<PodView> = Api::namespaced(client.clone(), &settings.namespace);
        let (ns, name) = (&settings.namespace, &settings.pod_name);
        let attempts = settings.pod_ip_wait.attempts.max(1);
        let mut attempt = 1;
        let pod = loop {
            let last = attempt >= attempts;
            match call(&settings, || format!("get pod {ns}/{name}"), pods.get(name)).await {
                Ok(pod) if pod_ip(&pod).is_some() => break pod,
                Ok(_) if last => {
                    return Err(KubeError::PodIpMissing {
                        namespace: ns.clone(),
                        name: name.clone(),
                        attempts,
                    });
                }
                Ok(_) => debug!(attempt, "own pod has no IP yet"),
                Err(e) if e.is_transient() && !last => {
                    warn!(attempt, error = %e, "cannot read own pod yet")
                }
                Err(e) => return Err(e),
            }
            attempt += 1;
            tokio::time::sleep(settings.pod_ip_wait.interval).await;
        };
        let info = PodInfo {
            name: name.clone(),
            namespace: ns.clone(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            ip: pod_ip(&pod).unwrap_or_default(),
        };
        let label = role_label(&pod);
        Ok(KubeAdapter {
            client,
            settings,
            pod: info,
            label: Arc::new(Mutex::new(Some(Observed::now(label)))),
            endpoints: Mutex::new(None),
            watch: None,
        })
    }

    /// Watch the own pod from now on (until the adapter is dropped): every change the API
    /// server reports refreshes the label cache, so a removed or edited `redis-role` label
    /// is rewritten by the next [`ClusterApi::ensure_role_label`] instead of at the resync.
    /// A failing watch is retried with backoff (1 s doubling to 30 s) and logged once.
    pub fn watch_own_pod(&mut self) {
        let task = watch_label(
            self.pods(),
            self.pod.name.clone(),
            self.pod.uid.clone(),
            self.label.clone(),
        );
        self.watch = Some(AbortOnDrop(tokio::spawn(task)));
    }

    pub fn pod_info(&self) -> &PodInfo {
        &self.pod
    }

    fn pods(&self) -> Api<PodView> {
        Api::namespaced(self.client.clone(), &self.pod.namespace)
    }

    async fn call<T>(
        &self,
        op: impl FnOnce() -> String,
        request: impl Future<Output = Result<T, ::kube::Error>>,
    ) -> Result<T, KubeError> {
        call(&self.settings, op, request).await
    }

    fn fresh<T>(&self, observed: &Observed<T>) -> bool {
        observed.at.elapsed() < self.settings.resync
    }

    /// See [`ClusterApi::ensure_role_label`].
    pub async fn ensure_role_label(&self, desired: Option<RedisRole>) -> Result<(), KubeError> {
        let want = desired.map(|r| r.to_string());
        let mut cache = self.label.lock().await;
        let current = match cache.as_ref() {
            Some(seen) if self.fresh(seen) => Some(seen.value.clone()),
            // Stale: someone may have edited the label since; look before writing.
            Some(_) => {
                let name = &self.pod.name;
                match self
                    .call(|| format!("get pod {name}"), self.pods().get(name))
                    .await
                {
                    Ok(pod) => {
                        let seen = role_label(&pod);
                        *cache = Some(Observed::now(seen.clone()));
                        Some(seen)
                    }
                    Err(e) => {
                        *cache = None;
                        return Err(e);
                    }
                }
            }
            // Unknown after a failed write: the merge patch is idempotent, just send it.
            None => None,
        };
        if current.as_ref() == Some(&want) {
            return Ok(());
        }
        let mut labels = Map::new();
        labels.insert(ROLE_LABEL.to_string(), Value::from(want.clone()));
        let mut metadata = Map::new();
        // The UID pins the patch to this pod's incarnation: a pod recreated under the same
        // name is not ours to label, and the API server refuses the changed UID.
        if !self.pod.uid.is_empty() {
            metadata.insert("uid".to_string(), Value::from(self.pod.uid.clone()));
        }
        metadata.insert("labels".to_string(), Value::Object(labels));
        let patch = Value::Object(Map::from_iter([(
            "metadata".to_string(),
            Value::Object(metadata),
        )]));
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PatchParams::default()
        };
        let name = &self.pod.name;
        let result = self
            .call(
                || format!("patch pod {name}"),
                self.pods().patch(name, &params, &Patch::Merge(&patch)),
            )
            .await;
        match result {
            Ok(pod) => {
                let now = role_label(&pod);
                info!(
                    pod = %name,
                    label = ROLE_LABEL,
                    from = current.flatten().as_deref().unwrap_or("(unknown or none)"),
                    to = want.as_deref().unwrap_or("(none)"),
                    "pod label set"
                );
                *cache = Some(Observed::now(now));
                Ok(())
            }
            Err(e) => {
                *cache = None;
                Err(e)
            }
        }
    }

    /// See [`ClusterApi::ensure_master_endpoints`].
    pub async fn ensure_master_endpoints(
        &self,
        epoch: u64,
        master_ip: &str,
        port: u16,
    ) -> Result<(), KubeError> {
        let Some(service) = self.settings.master_endpoints_service.as_deref() else {
            return Ok(());
        };
        let ip: IpAddr = master_ip
            .trim()
            .parse()
            .map_err(|_| KubeError::InvalidAddress(master_ip.to_string()))?;
        let want = MasterTarget { epoch, ip, port };
        let mut cache = self.endpoints.lock().await;
        if let Some(seen) = cache.as_ref().filter(|seen| self.fresh(seen)) {
            match &seen.value {
                SliceSeen::PointsAt(target) if *target == want => return Ok(()),
                SliceSeen::Newer(newer) if *newer > epoch => return Ok(()),
                _ => {}
            }
        }
        let result = self.write_master_slice(service, &want).await;
        *cache = result.as_ref().ok().cloned().map(Observed::now);
        result.map(|_| ())
    }

    /// Read the slice and create or replace it unless it is right or newer. The replace
    /// carries the resourceVersion just read, so a concurrent writer makes it fail (409)
    /// instead of being overwritten by an older epoch.
    async fn write_master_slice(
        &self,
        service: &str,
        want: &MasterTarget,
    ) -> Result<SliceSeen, KubeError> {
        let ns = &self.pod.namespace;
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), ns);
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PostParams::default()
        };
        let existing = self
            .call(
                || format!("get endpointslice {ns}/{service}"),
                api.get_opt(service),
            )
            .await?;
        let Some(slice) = existing else {
            let slice = master_slice(
                ObjectMeta {
                    name: Some(service.to_string()),
                    ..ObjectMeta::default()
                },
                service,
                want,
            );
            self.call(
                || format!("create endpointslice {ns}/{service}"),
                api.create(&params, &slice),
            )
            .await?;
            info!(service, epoch = want.epoch, master = %want.ip, port = want.port, "created the master EndpointSlice");
            return Ok(SliceSeen::PointsAt(want.clone()));
        };
        let stored = slice_epoch(&slice);
        if let Some(stored) = stored
            && stored > want.epoch
        {
            info!(
                service,
                stored_epoch = stored,
                our_epoch = want.epoch,
                "master EndpointSlice left alone: it was written for a newer epoch"
            );
            return Ok(SliceSeen::Newer(stored));
        }
        let desired = master_slice(slice.metadata.clone(), service, want);
        if desired == slice {
            return Ok(SliceSeen::PointsAt(want.clone()));
        }
        self.call(
            || format!("replace endpointslice {ns}/{service}"),
            api.replace(service, &params, &desired),
        )
        .await?;
        info!(
            service,
            from_epoch = ?stored,
            epoch = want.epoch,
            master = %want.ip,
            port = want.port,
            "master EndpointSlice now points at the committed master"
        );
        Ok(SliceSeen::PointsAt(want.clone()))
    }

    /// See [`ClusterApi::list_pods`].
    pub async fn list_pods(&self) -> Result<Vec<PodSummary>, KubeError> {
        let selector = self.settings.label_selector.trim();
        let params = if selector.is_empty() {
            ListParams::default()
        } else {
            ListParams::default().labels(selector)
        };
        let ns = &self.pod.namespace;
        let list = self
            .call(
                || format!("list pods in {ns} ({selector})"),
                self.pods().list(&params),
            )
            .await?;
        Ok(list.items.iter().map(pod_summary).collect())
    }

    /// See [`ClusterApi::lb_advertise_host`].
    pub async fn lb_advertise_host(&self) -> Result<Option<String>, KubeError> {
        if !self.settings.lb_service {
            return Ok(None);
        }
        let attempts = self.settings.lb_wait.attempts.max(1);
        let mut attempt = 1;
        loop {
            let last = attempt >= attempts;
            let outcome = match self.probe_load_balancer().await {
                Ok(outcome) => outcome,
                Err(e) if e.is_transient() && !last => {
                    warn!(attempt, attempts, error = %e, "--lb-service: cannot list Services yet");
                    LbProbe::Error
                }
                Err(e) => return Err(e),
            };
            match outcome {
                LbProbe::Found {
                    service,
                    selector_key,
                    address,
                    how,
                } => {
                    info!(
                        %service,
                        selector = %format!("{selector_key}={}", self.pod.name),
                        %address,
                        how,
                        pod_ip = %self.pod.ip,
                        "--lb-service: advertising the LoadBalancer address for Redis replication instead of the pod IP"
                    );
                    return Ok(Some(address));
                }
                LbProbe::Ambiguous(services) => {
                    return Err(KubeError::AmbiguousLoadBalancer {
                        pod: self.pod.name.clone(),
                        services: services.join(", "),
                    });
                }
                LbProbe::NoService(seen) if last => {
                    return Err(KubeError::NoLoadBalancerService {
                        namespace: self.pod.namespace.clone(),
                        pod: self.pod.name.clone(),
                        seen: if seen.is_empty() {
                            "none".to_string()
                        } else {
                            seen.join(", ")
                        },
                    });
                }
                LbProbe::NoIngress(service) if last => {
                    return Err(KubeError::LoadBalancerPending { service, attempts });
                }
                LbProbe::NoService(_) => info!(
                    attempt,
                    attempts,
                    pod = %self.pod.name,
                    "--lb-service: waiting for a LoadBalancer Service that selects this pod"
                ),
                LbProbe::NoIngress(service) => info!(
                    attempt,
                    attempts,
                    %service,
                    "--lb-service: waiting for the LoadBalancer's ingress address"
                ),
                LbProbe::Error => {}
            }
            attempt += 1;
            tokio::time::sleep(self.settings.lb_wait.interval).await;
        }
    }

    async fn probe_load_balancer(&self) -> Result<LbProbe, KubeError> {
        let ns = &self.pod.namespace;
        let api: Api<ServiceView> = Api::namespaced(self.client.clone(), ns);
        let list = self
            .call(
                || format!("list services in {ns}"),
                api.list(&ListParams::default()),
            )
            .await?;
        let balancers: Vec<&ServiceView> = list
            .items
            .iter()
            .filter(|s| {
                s.spec.as_ref().and_then(|spec| spec.type_.as_deref()) == Some("LoadBalancer")
            })
            .collect();
        let mine: Vec<(&ServiceView, &str)> = balancers
            .iter()
            .filter_map(|s| selector_key_naming(s, &self.pod.name).map(|key| (*s, key)))
            .collect();
        let name_of = |s: &ServiceView| s.metadata.name.clone().unwrap_or_default();
        match mine.as_slice() {
            [] => Ok(LbProbe::NoService(
                balancers.iter().map(|s| name_of(s)).collect(),
            )),
            [(service, key)] => Ok(match self.ingress_address(service).await {
                Some((address, how)) => LbProbe::Found {
                    service: name_of(service),
                    selector_key: key.to_string(),
                    address,
                    how,
                },
                None => LbProbe::NoIngress(name_of(service)),
            }),
            many => Ok(LbProbe::Ambiguous(
                many.iter().map(|(s, _)| name_of(s)).collect(),
            )),
        }
    }

    /// The first ingress IP, else the first ingress hostname that resolves (IPv4 preferred,
    /// as replicas and EndpointSlices need an address, and cloud hostnames take a while to
    /// appear in DNS).
    async fn ingress_address(&self, service: &ServiceView) -> Option<(String, String)> {
        let ingress = service
            .status
            .as_ref()?
            .load_balancer
            .as_ref()?
            .ingress
            .as_ref()?;
        if let Some(ip) = ingress
            .iter()
            .filter_map(|i| i.ip.as_deref())
            .find(|ip| !ip.is_empty())
        {
            return Some((ip.to_string(), "ingress IP".to_string()));
        }
        for hostname in ingress
            .iter()
            .filter_map(|i| i.hostname.as_deref())
            .filter(|h| !h.is_empty())
        {
            let lookup = tokio::net::lookup_host((hostname, 0));
            match tokio::time::timeout(self.settings.request_timeout, lookup).await {
                Ok(Ok(addrs)) => {
                    let ips: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
                    if let Some(ip) = ips.iter().find(|ip| ip.is_ipv4()).or(ips.first()) {
                        return Some((ip.to_string(), format!("ingress hostname {hostname}")));
                    }
                }
                Ok(Err(e)) => debug!(hostname, error = %e, "ingress hostname does not resolve yet"),
                Err(_) => debug!(hostname, "ingress hostname lookup timed out"),
            }
        }
        None
    }
}

/// One look at the Services for `--lb-service`.
enum LbProbe {
    Found {
        service: String,
        selector_key: String,
        address: String,
        how: String,
    },
    /// No LoadBalancer Service names the pod; the names of those seen.
    NoService(Vec<String>),
    NoIngress(String),
    Ambiguous(Vec<String>),
    /// A transient API error, already logged.
    Error,
}

impl ClusterApi for KubeAdapter {
    fn pod_info(&self) -> &PodInfo {
        KubeAdapter::pod_info(self)
    }

    fn lb_advertise_host(&self) -> BoxFuture<'_, Result<Option<String>, KubeError>> {
        Box::pin(KubeAdapter::lb_advertise_host(self))
    }

    fn ensure_role_label(
        &self,
        desired: Option<RedisRole>,
    ) -> BoxFuture<'_, Result<(), KubeError>> {
        Box::pin(KubeAdapter::ensure_role_label(self, desired))
    }

    fn ensure_master_endpoints<'a>(
        &'a self,
        epoch: u64,
        master_ip: &'a str,
        port: u16,
    ) -> BoxFuture<'a, Result<(), KubeError>> {
        Box::pin(KubeAdapter::ensure_master_endpoints(
            self, epoch, master_ip, port,
        ))
    }

    fn list_pods(&self) -> BoxFuture<'_, Result<Vec<PodSummary>, KubeError>> {
        Box::pin(KubeAdapter::list_pods(self))
    }
}

fn check_identity(settings: &KubeSettings) -> Result<(), KubeError> {
    if settings.pod_name.trim().is_empty() {
        return Err(KubeError::MissingIdentity {
            what: "the pod name",
            env: "POD_NAME",
            field_path: "metadata.name",
            flag: "--pod-name",
        });
    }
    if settings.namespace.trim().is_empty() {
        return Err(KubeError::MissingIdentity {
            what: "the namespace",
            env: "POD_NAMESPACE",
            field_path: "metadata.namespace",
            flag: "--namespace",
        });
    }
    Ok(())
}

/// Run one API request within the request timeout, naming the operation in any error.
async fn call<T>(
    settings: &KubeSettings,
    op: impl FnOnce() -> String,
    request: impl Future<Output = Result<T, ::kube::Error>>,
) -> Result<T, KubeError> {
    match tokio::time::timeout(settings.request_timeout, request).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(::kube::Error::Api(status))) => Err(KubeError::Api {
            op: op(),
            code: status.code,
            reason: status.reason,
            message: status.message,
        }),
        Ok(Err(other)) => Err(KubeError::Transport {
            op: op(),
            detail: error_chain(&other),
            source: Box::new(other),
        }),
        Err(_) => Err(KubeError::Timeout {
            op: op(),
            timeout: settings.request_timeout,
        }),
    }
}

/// A client for `config` that names itself with [`USER_AGENT`].
pub fn build_client(mut config: Config) -> Result<Client, KubeError> {
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(USER_AGENT),
    ));
    Client::try_from(config).map_err(|e| KubeError::Config(error_chain(&e)))
}

/// Discovery at start-up: the API server must serve `pods` (v1), `services` (v1) with
/// `--lb-service`, and `discovery.k8s.io/v1` `endpointslices` with
/// `--master-endpoints-service`. Names every one missing, rather than reading the 404 of
/// a missing API as "not created yet" later on.
pub async fn check_apis(client: &Client, settings: &KubeSettings) -> Result<(), KubeError> {
    let mut needed: Vec<(&str, &str, String)> = vec![("v1", "pods", "the own pod".to_string())];
    if settings.lb_service {
        needed.push(("v1", "services", "--lb-service".to_string()));
    }
    if let Some(service) = &settings.master_endpoints_service {
        needed.push((
            "discovery.k8s.io/v1",
            "endpointslices",
            format!("--master-endpoints-service={service} (Kubernetes 1.21 or later)"),
        ));
    }
    let mut missing = Vec::new();
    let mut served: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (group_version, resource, why) in needed {
        if !served.contains_key(group_version) {
            let request = async {
                if group_version.contains('/') {
                    client.list_api_group_resources(group_version).await
                } else {
                    client.list_core_api_resources(group_version).await
                }
            };
            let names = match call(settings, || format!("discover {group_version}"), request).await
            {
                Ok(list) => list.resources.into_iter().map(|r| r.name).collect(),
                // The whole group version is absent.
                Err(KubeError::Api { code: 404, .. }) => Vec::new(),
                Err(e) => return Err(e),
            };
            served.insert(group_version, names);
        }
        if !served[group_version].iter().any(|name| name == resource) {
            missing.push(format!("{group_version} {resource}, needed by {why}"));
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(KubeError::MissingApi { missing })
    }
}

/// First and longest pause between two watches of the own pod that failed.
const WATCH_RETRY_FIRST: Duration = Duration::from_secs(1);
const WATCH_RETRY_MAX: Duration = Duration::from_secs(30);
/// How long the API server keeps one watch open before we start the next.
const WATCH_SECONDS: u32 = 290;

/// The watch task of [`KubeAdapter::watch_own_pod`]: watch, and watch again when the
/// server ends it; back off and log once while it fails (403 without the watch verb, ...).
async fn watch_label(api: Api<PodView>, name: String, uid: String, cache: LabelCache) {
    let mut delay = WATCH_RETRY_FIRST;
    let mut failing = false;
    loop {
        match watch_once(&api, &name, &uid, &cache).await {
            Ok(()) => {
                if std::mem::take(&mut failing) {
                    info!(pod = %name, "watching the own pod again");
                }
                delay = WATCH_RETRY_FIRST;
            }
            Err(e) => {
                if !std::mem::replace(&mut failing, true) {
                    warn!(pod = %name, error = %e, "cannot watch the own pod; its label is still checked every resync; retrying with backoff");
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(WATCH_RETRY_MAX);
            }
        }
    }
}

/// One watch of the own pod by field selector, from resourceVersion 0 so it starts with
/// the current pod (no 410 for a version compacted away). Returns when the server ends it.
async fn watch_once(
    api: &Api<PodView>,
    name: &str,
    uid: &str,
    cache: &LabelCache,
) -> Result<(), KubeError> {
    let op = || format!("watch pod {name}");
    let params = WatchParams::default()
        .fields(&format!("metadata.name={name}"))
        .timeout(WATCH_SECONDS);
    let transport = |e: ::kube::Error| KubeError::Transport {
        op: op(),
        detail: error_chain(&e),
        source: Box::new(e),
    };
    let events = api.watch(&params, "0").await.map_err(|e| match e {
        ::kube::Error::Api(status) => KubeError::Api {
            op: op(),
            code: status.code,
            reason: status.reason,
            message: status.message,
        },
        e => transport(e),
    })?;
    pin_mut!(events);
    let mut seen_any = false;
    while let Some(event) = events.next().await {
        match event.map_err(transport)? {
            WatchEvent::Added(pod) | WatchEvent::Modified(pod) => {
                // A pod recreated under our name is not ours to describe.
                if !uid.is_empty() && pod.metadata.uid.as_deref() != Some(uid) {
                    continue;
                }
                let label = role_label(&pod);
                let mut cached = cache.lock().await;
                let changed = cached.as_ref().is_some_and(|c| c.value != label);
                if changed && seen_any {
                    info!(pod = %name, label = ROLE_LABEL, now = label.as_deref().unwrap_or("(none)"), "own pod's label changed; repairing it if needed");
                }
                *cached = Some(Observed::now(label));
                seen_any = true;
            }
            WatchEvent::Deleted(_) | WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(status) => {
                return Err(KubeError::Api {
                    op: op(),
                    code: status.code,
                    reason: status.reason,
                    message: status.message,
                });
            }
        }
    }
    Ok(())
}

fn pod_ip(pod: &PodView) -> Option<String> {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .filter(|ip| !ip.is_empty())
}

fn role_label(pod: &PodView) -> Option<String> {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(ROLE_LABEL))
        .cloned()
}

fn pod_summary(pod: &PodView) -> PodSummary {
    let ready = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    PodSummary {
        name: pod.metadata.name.clone().unwrap_or_default(),
        ip: pod_ip(pod),
        labels: pod.metadata.labels.clone().unwrap_or_default(),
        ready,
    }
}

/// The selector key by which `service` names exactly `pod`, if any.
fn selector_key_naming(service: &ServiceView, pod: &str) -> Option<&'static str> {
    let selector = service.spec.as_ref()?.selector.as_ref()?;
    POD_NAME_SELECTOR_KEYS
        .into_iter()
        .find(|key| selector.get(*key).map(String::as_str) == Some(pod))
}

fn slice_epoch(slice: &EndpointSlice) -> Option<u64> {
    slice
        .metadata
        .annotations
        .as_ref()?
        .get(EPOCH_ANNOTATION)?
        .parse()
        .ok()
}

/// The master EndpointSlice for `target`, keeping whatever else `metadata` holds
/// (resourceVersion for the optimistic lock, other labels and annotations).
fn master_slice(mut metadata: ObjectMeta, service: &str, target: &MasterTarget) -> EndpointSlice {
    let labels = metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(SERVICE_NAME_LABEL.to_string(), service.to_string());
    labels.insert(MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string());
    metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(EPOCH_ANNOTATION.to_string(), target.epoch.to_string());
    EndpointSlice {
        metadata,
        address_type: match target.ip {
            IpAddr::V4(_) => "IPv4",
            IpAddr::V6(_) => "IPv6",
        }
        .to_string(),
        endpoints: vec![Endpoint {
            addresses: vec![target.ip.to_string()],
            conditions: Some(EndpointConditions {
                ready: Some(true),
                ..EndpointConditions::default()
            }),
            ..Endpoint::default()
        }],
        ports: Some(vec![EndpointPort {
            name: Some(MASTER_PORT_NAME.to_string()),
            port: Some(i32::from(target.port)),
            protocol: Some("TCP".to_string()),
            ..EndpointPort::default()
        }]),
    }
}
