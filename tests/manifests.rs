//! The multi-site manifests under `deploy/multisite/` checked without a cluster: every
//! document parses into its k8s-openapi type (and back, so a misspelt field fails), the
//! orchestrator's arguments go through the real CLI parser and validation with each pod's own
//! identity, and the objects agree with each other (peers, selectors and the labels the
//! agent sets, ports, references, probes, volumes, RBAC, secrets, image).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use clap::Parser;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Namespace, PersistentVolumeClaim, PodSpec, Secret, Service,
    ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use redis_orchestrator::config::{AgentArgs, Settings};
use redis_orchestrator::kube::{
    KubeSettings, MASTER_PORT_NAME, POD_NAME_SELECTOR_KEYS, REQUIRED_PERMISSIONS, ROLE_LABEL,
};
use redis_orchestrator::model::RedisRole;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

const ORCHESTRATOR: &str = "orchestrator";
/// The label the StatefulSet controller gives each of its pods.
const STATEFULSET_POD_NAME: &str = "statefulset.kubernetes.io/pod-name";
const SITES: [(&str, &str); 3] = [
    ("site-a-manifests", "redis-multisite-a"),
    ("site-b-manifests", "redis-multisite-b"),
    ("site-c-manifests", "redis-multisite-c"),
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/multisite")
}

/// One parsed object, with the file it came from.
struct Located<T> {
    file: String,
    namespace: String,
    object: T,
}

#[derive(Default)]
struct Manifests {
    files: Vec<String>,
    namespaces: Vec<Located<Namespace>>,
    service_accounts: Vec<Located<ServiceAccount>>,
    roles: Vec<Located<Role>>,
    role_bindings: Vec<Located<RoleBinding>>,
    secrets: Vec<Located<Secret>>,
    config_maps: Vec<Located<ConfigMap>>,
    stateful_sets: Vec<Located<StatefulSet>>,
    deployments: Vec<Located<Deployment>>,
    services: Vec<Located<Service>>,
    claims: Vec<Located<PersistentVolumeClaim>>,
}

/// The first place where `written` holds something `back` lost or changed, as a path.
/// Keys only in `back` are fine: the serializer adds `apiVersion`/`kind` to embedded objects
/// such as volume claim templates.
fn first_difference(written: &Value, back: &Value, path: &str) -> Option<String> {
    match (written, back) {
        (Value::Object(x), Value::Object(y)) => x.iter().find_map(|(k, p)| match y.get(k) {
            Some(q) => first_difference(p, q, &format!("{path}.{k}")),
            None => Some(format!("{path}.{k}")),
        }),
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (p, q))| first_difference(p, q, &format!("{path}[{i}]"))),
        _ if written == back => None,
        _ => Some(path.to_string()),
    }
}

/// Parse into `T` and serialize back: any field `T` does not know is lost on the way, so a
/// misspelt or misplaced field fails here instead of being ignored by the API server.
fn typed<T: DeserializeOwned + Serialize>(file: &str, value: &Value) -> T {
    let object: T = serde_json::from_value(value.clone())
        .unwrap_or_else(|e| panic!("{file}: not a valid {}: {e}", value["kind"]));
    let back = serde_json::to_value(&object).expect("serialize");
    if let Some(path) = first_difference(value, &back, "") {
        panic!(
            "{file}: {} field {path} is unknown to the Kubernetes type (misspelt or misplaced?)",
            value["kind"]
        );
    }
    object
}

fn load() -> Manifests {
    let mut paths = Vec::new();
    let mut dirs = vec![root()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read deploy/multisite") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                paths.push(path);
            }
        }
    }
    paths.sort();
    let mut m = Manifests::default();
    for path in paths {
        let file = path
            .strip_prefix(root())
            .expect("under root")
            .to_string_lossy()
            .to_string();
        m.files.push(file.clone());
        let text = std::fs::read_to_string(&path).expect("read manifest");
        let docs: Vec<Value> =
            serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{file}: not YAML: {e}"));
        assert!(!docs.is_empty(), "{file}: no document");
        for doc in docs {
            let namespace = doc["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let at = |file: &str| (file.to_string(), namespace.clone());
            macro_rules! push {
                ($list:ident) => {{
                    let (file, namespace) = at(&file);
                    let object = typed(&file, &doc);
                    m.$list.push(Located {
                        file,
                        namespace,
                        object,
                    });
                }};
            }
            match doc["kind"].as_str() {
                Some("Namespace") => push!(namespaces),
                Some("ServiceAccount") => push!(service_accounts),
                Some("Role") => push!(roles),
                Some("RoleBinding") => push!(role_bindings),
                Some("Secret") => push!(secrets),
                Some("ConfigMap") => push!(config_maps),
                Some("StatefulSet") => push!(stateful_sets),
                Some("Deployment") => push!(deployments),
                Some("Service") => push!(services),
                Some("PersistentVolumeClaim") => push!(claims),
                other => panic!("{file}: unexpected kind {other:?}"),
            }
        }
    }
    m
}

/// A pod as its workload will create it.
struct PodView {
    file: String,
    namespace: String,
    workload: String,
    witness_workload: bool,
    /// The name the pod gets (`redis-0`; a generated one for the Deployment).
    pod_name: String,
    hostname: String,
    subdomain: String,
    labels: BTreeMap<String, String>,
    spec: PodSpec,
    claim_templates: Vec<String>,
}

impl PodView {
    fn dns_name(&self) -> String {
        format!(
            "{}.{}.{}.svc.cluster.local",
            self.hostname, self.subdomain, self.namespace
        )
    }

    fn orchestrator(&self) -> &Container {
        self.spec
            .containers
            .iter()
            .find(|c| c.name == ORCHESTRATOR)
            .unwrap_or_else(|| panic!("{}: no {ORCHESTRATOR} container", self.file))
    }

    fn container(&self, name: &str) -> Option<&Container> {
        self.spec.containers.iter().find(|c| c.name == name)
    }

    /// Labels the pod carries at run time, one set per role the agent can give it: the
    /// template's, the StatefulSet controller's pod name, and the agent's role label.
    fn label_variants(&self) -> Vec<BTreeMap<String, String>> {
        if self.witness_workload {
            return vec![self.labels.clone()];
        }
        let mut running = self.labels.clone();
        running.insert(STATEFULSET_POD_NAME.to_string(), self.pod_name.clone());
        [RedisRole::Master, RedisRole::Replica]
            .into_iter()
            .map(|role| {
                let mut labels = running.clone();
                labels.insert(ROLE_LABEL.to_string(), role.to_string());
                labels
            })
            .collect()
    }
}

fn pods(m: &Manifests) -> Vec<PodView> {
    let mut pods = Vec::new();
    for s in &m.stateful_sets {
        let spec = &s.object.spec.as_ref().expect("statefulset spec");
        assert_eq!(spec.replicas, Some(1), "{}: one data node per site", s.file);
        let name = s.object.metadata.name.clone().expect("name");
        let template = &spec.template;
        let pod_spec = template.spec.clone().expect("pod spec");
        let pod_name = format!("{name}-0");
        pods.push(PodView {
            file: s.file.clone(),
            namespace: s.namespace.clone(),
            workload: name,
            witness_workload: false,
            hostname: pod_spec
                .hostname
                .clone()
                .unwrap_or_else(|| pod_name.clone()),
            subdomain: spec.service_name.clone().expect("serviceName"),
            pod_name,
            labels: template
                .metadata
                .as_ref()
                .and_then(|m| m.labels.clone())
                .unwrap_or_default(),
            claim_templates: spec
                .volume_claim_templates
                .iter()
                .flatten()
                .filter_map(|c| c.metadata.name.clone())
                .collect(),
            spec: pod_spec,
        });
    }
    for d in &m.deployments {
        let spec = d.object.spec.as_ref().expect("deployment spec");
        assert_eq!(spec.replicas, Some(1), "{}: one witness", d.file);
        let name = d.object.metadata.name.clone().expect("name");
        let pod_spec = spec.template.spec.clone().expect("pod spec");
        // A Deployment's pods get generated names: the witness cannot be found by POD_NAME.
        let pod_name = format!("{name}-6b9f7c5d4-x2x4q");
        pods.push(PodView {
            file: d.file.clone(),
            namespace: d.namespace.clone(),
            workload: name,
            witness_workload: true,
            hostname: pod_spec
                .hostname
                .clone()
                .unwrap_or_else(|| pod_name.clone()),
            subdomain: pod_spec.subdomain.clone().unwrap_or_default(),
            pod_name,
            labels: spec
                .template
                .metadata
                .as_ref()
                .and_then(|m| m.labels.clone())
                .unwrap_or_default(),
            claim_templates: Vec::new(),
            spec: pod_spec,
        });
    }
    pods
}

fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    let prefix = format!("{name}=");
    args.iter().find_map(|a| a.strip_prefix(&prefix))
}

fn env_field_ref<'a>(container: &'a Container, var: &str) -> Option<&'a str> {
    container
        .env
        .iter()
        .flatten()
        .find(|e| e.name == var)?
        .value_from
        .as_ref()?
        .field_ref
        .as_ref()
        .map(|f| f.field_path.as_str())
}

fn env_secret<'a>(container: &'a Container, var: &str) -> Option<(&'a str, &'a str)> {
    let r = container
        .env
        .iter()
        .flatten()
        .find(|e| e.name == var)?
        .value_from
        .as_ref()?
        .secret_key_ref
        .as_ref()?;
    Some((r.name.as_str(), r.key.as_str()))
}

/// Parse and validate the orchestrator's arguments as its pod will run them: `POD_NAME` and
/// `POD_NAMESPACE` come from the downward API, the hostname from the pod spec.
fn pod_settings(pod: &PodView) -> Settings {
    let c = pod.orchestrator();
    assert_eq!(
        env_field_ref(c, "POD_NAME"),
        Some("metadata.name"),
        "{}: POD_NAME from the downward API",
        pod.file
    );
    assert_eq!(
        env_field_ref(c, "POD_NAMESPACE"),
        Some("metadata.namespace"),
        "{}: POD_NAMESPACE from the downward API",
        pod.file
    );
    let args = c.args.clone().unwrap_or_default();
    assert!(
        flag(&args, "--pod-name").is_none() && flag(&args, "--namespace").is_none(),
        "{}: identity comes from the environment",
        pod.file
    );
    let mut argv = vec!["redis-orchestrator".to_string()];
    argv.extend(args);
    argv.push(format!("--pod-name={}", pod.pod_name));
    argv.push(format!("--namespace={}", pod.namespace));
    /// The agent's flags as the binary parses them when no subcommand is given.
    #[derive(clap::Parser)]
    struct AgentCli {
        #[command(flatten)]
        agent: AgentArgs,
    }
    let cli = AgentCli::try_parse_from(&argv)
        .unwrap_or_else(|e| panic!("{}: orchestrator args do not parse: {e}", pod.file));
    // Entries resolve to nothing local here, as in a pod before DNS publishes them.
    cli.agent
        .settings_with(&pod.hostname, &|_| false)
        .unwrap_or_else(|e| panic!("{}: orchestrator args do not validate: {e}", pod.file))
}

fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn service_name(s: &Located<Service>) -> &str {
    s.object.metadata.name.as_deref().unwrap_or_default()
}

fn selector_of(s: &Located<Service>) -> Option<&BTreeMap<String, String>> {
    s.object.spec.as_ref()?.selector.as_ref()
}

// === tests ===

#[test]
fn the_seed_layout_and_every_document_parses_into_its_type() {
    let m = load();
    let mut want: Vec<String> = Vec::new();
    for (dir, _) in SITES {
        let files: &[&str] = if dir == "site-c-manifests" {
            &[
                "namespace",
                "rbac",
                "secret",
                "witness-deployment",
                "services",
            ]
        } else {
            &[
                "namespace",
                "rbac",
                "secret",
                "configmap",
                "statefulset",
                "services",
                "loadbalancer-services",
            ]
        };
        want.extend(files.iter().map(|f| format!("{dir}/{f}.yaml")));
    }
    want.push("global-loadbalancer-services.yaml".to_string());
    want.sort();
    assert_eq!(m.files, want, "exactly the seed's file layout");
    // Each site's objects live in that site's namespace; the global ones in site A's.
    let all_namespaced = m
        .service_accounts
        .iter()
        .map(|l| (&l.file, &l.namespace))
        .chain(m.roles.iter().map(|l| (&l.file, &l.namespace)))
        .chain(m.role_bindings.iter().map(|l| (&l.file, &l.namespace)))
        .chain(m.secrets.iter().map(|l| (&l.file, &l.namespace)))
        .chain(m.config_maps.iter().map(|l| (&l.file, &l.namespace)))
        .chain(m.stateful_sets.iter().map(|l| (&l.file, &l.namespace)))
        .chain(m.deployments.iter().map(|l| (&l.file, &l.namespace)))
        .chain(m.services.iter().map(|l| (&l.file, &l.namespace)))
        .chain(m.claims.iter().map(|l| (&l.file, &l.namespace)));
    for (file, ns) in all_namespaced {
        let expected = SITES
            .iter()
            .find(|(dir, _)| file.starts_with(dir))
            .map_or("redis-multisite-a", |(_, ns)| ns);
        assert_eq!(ns, expected, "{file}: namespace");
    }
    let namespaces: BTreeSet<String> = m
        .namespaces
        .iter()
        .filter_map(|n| n.object.metadata.name.clone())
        .collect();
    assert_eq!(
        namespaces,
        SITES.iter().map(|(_, ns)| ns.to_string()).collect()
    );
}

#[test]
fn orchestrator_args_parse_and_validate_with_each_pods_identity() {
    let m = load();
    let pods = pods(&m);
    assert_eq!(pods.len(), 3, "two data nodes and the witness");
    for pod in &pods {
        let s = pod_settings(pod);
        assert_eq!(
            s.me.host,
            pod.dns_name(),
            "{}: the agent finds its own --raft-peers entry ({})",
            pod.file,
            s.me_found_by
        );
        assert_eq!(
            s.witness, pod.witness_workload,
            "{}: --standalone",
            pod.file
        );
        assert!(
            s.ignored_flags.is_empty(),
            "{}: no compatibility-only flags ({:?}): replication never goes through the local `redis` Service",
            pod.file,
            s.ignored_flags
        );
        if pod.witness_workload {
            assert_eq!(s.redis_announce, None);
        } else {
            // Replicas reach the master at its own pod DNS name, in whichever site it runs.
            assert_eq!(
                s.redis_announce,
                Some(format!("{}:6379", pod.dns_name())),
                "{}",
                pod.file
            );
        }
        let k = KubeSettings::from(&s);
        assert_eq!(
            (k.pod_name.as_str(), k.namespace.as_str()),
            (pod.pod_name.as_str(), pod.namespace.as_str())
        );
        assert_eq!(k.master_endpoints_service.as_deref(), Some("redis-master"));
        assert_eq!(
            s.site,
            format!("site-{}", &pod.namespace[pod.namespace.len() - 1..])
        );
    }
}

#[test]
fn member_names_are_unique_and_name_the_site() {
    let m = load();
    let pods = pods(&m);
    let names: BTreeSet<String> = pods.iter().map(|p| pod_settings(p).name).collect();
    assert_eq!(names.len(), pods.len(), "member names {names:?} are unique");
    for pod in &pods {
        let s = pod_settings(pod);
        // Both StatefulSets name their pod redis-0; a Deployment's pod name changes on
        // every restart: neither may be the member name.
        assert_eq!(s.name, s.site, "{}: --node-name is the site", pod.file);
    }
}

/// What `KubeAdapter::lb_advertise_host` looks for: exactly one LoadBalancer Service of
/// the pod's namespace selecting the pod by name.
#[test]
fn each_data_pod_has_the_one_load_balancer_service_lb_service_needs() {
    let m = load();
    for pod in pods(&m).iter().filter(|p| !p.witness_workload) {
        let by_name: Vec<&str> = m
            .services
            .iter()
            .filter(|s| s.namespace == pod.namespace)
            .filter(|s| {
                s.object.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer")
            })
            .filter(|s| {
                selector_of(s).is_some_and(|sel| {
                    POD_NAME_SELECTOR_KEYS
                        .iter()
                        .any(|k| sel.get(*k) == Some(&pod.pod_name))
                })
            })
            .map(service_name)
            .collect();
        assert_eq!(by_name, ["redis-0-peer"], "{}", pod.file);
    }
}

#[test]
fn raft_peers_are_identical_across_sites_and_name_every_pod() {
    let m = load();
    let pods = pods(&m);
    let lists: BTreeSet<String> = pods
        .iter()
        .map(|p| {
            let args = p.orchestrator().args.clone().unwrap_or_default();
            flag(&args, "--raft-peers")
                .unwrap_or_else(|| panic!("{}: no --raft-peers", p.file))
                .to_string()
        })
        .collect();
    assert_eq!(
        lists.len(),
        1,
        "identical --raft-peers everywhere: {lists:?}"
    );
    let settings: Vec<Settings> = pods.iter().map(pod_settings).collect();
    let peers: BTreeSet<String> = settings[0].peers.iter().map(|p| p.addr.clone()).collect();
    let own: BTreeSet<String> = pods
        .iter()
        .map(|p| format!("{}:7000", p.dns_name()))
        .collect();
    assert_eq!(peers, own, "every pod's DNS name, and nothing else");
    let sites: BTreeSet<&str> = settings.iter().map(|s| s.site.as_str()).collect();
    assert_eq!(sites.len(), 3, "one site each");
}

#[test]
fn service_selectors_match_the_pods_and_the_labels_the_agent_sets() {
    let m = load();
    let pods = pods(&m);
    for p in &pods {
        let (selector, file) = match m
            .stateful_sets
            .iter()
            .find(|s| s.file == p.file && s.object.metadata.name.as_ref() == Some(&p.workload))
        {
            Some(s) => (
                s.object
                    .spec
                    .as_ref()
                    .and_then(|s| s.selector.match_labels.clone()),
                &s.file,
            ),
            None => {
                let d = m
                    .deployments
                    .iter()
                    .find(|d| d.file == p.file)
                    .expect("workload");
                (
                    d.object
                        .spec
                        .as_ref()
                        .and_then(|s| s.selector.match_labels.clone()),
                    &d.file,
                )
            }
        };
        let selector = selector.unwrap_or_default();
        assert!(
            !selector.is_empty() && selects(&selector, &p.labels),
            "{file}: workload selector"
        );
        assert!(
            !p.labels.contains_key(ROLE_LABEL),
            "{file}: the agent owns {ROLE_LABEL}; the template must not set it"
        );
    }
    let master = || RedisRole::Master.to_string();
    let replica = || RedisRole::Replica.to_string();
    for svc in &m.services {
        let name = service_name(svc);
        let local: Vec<&PodView> = pods
            .iter()
            .filter(|p| p.namespace == svc.namespace)
            .collect();
        let Some(selector) = selector_of(svc) else {
            assert_eq!(
                name, "redis-master",
                "{}: only redis-master has no selector",
                svc.file
            );
            continue;
        };
        for p in &local {
            for labels in p.label_variants() {
                let role = labels.get(ROLE_LABEL).cloned();
                let want = match name {
                    "redis" | "redis-master-lb" | "redis-master-global-lb" => {
                        role == Some(master())
                    }
                    "redis-readonly" | "redis-readonly-lb" | "redis-readonly-global-lb" => {
                        role == Some(replica())
                    }
                    "redis-headless" => true,
                    // --lb-service's per-pod Service: the pod whatever its role.
                    "redis-0-peer" => p.pod_name == "redis-0",
                    other => panic!("{}: no expectation for Service {other}", svc.file),
                };
                assert_eq!(
                    selects(selector, &labels),
                    want,
                    "{}: Service {name} selecting pod {} labelled {labels:?}",
                    svc.file,
                    p.pod_name
                );
            }
        }
    }
    // Each site routes its own data pod's roles (the witness site has no Redis).
    for (dir, ns) in SITES {
        let names: BTreeSet<&str> = m
            .services
            .iter()
            .filter(|s| s.namespace == ns && s.file.starts_with(dir))
            .map(service_name)
            .collect();
        let want: &[&str] = if dir == "site-c-manifests" {
            &["redis-headless", "redis-master"]
        } else {
            &[
                "redis",
                "redis-0-peer",
                "redis-headless",
                "redis-master",
                "redis-master-lb",
                "redis-readonly",
                "redis-readonly-lb",
            ]
        };
        assert_eq!(names, want.iter().copied().collect(), "{dir}: Services");
    }
}

#[test]
fn master_endpoints_service_is_selectorless_with_the_adapters_port_name() {
    let m = load();
    for (_, ns) in SITES {
        let svc = m
            .services
            .iter()
            .find(|s| s.namespace == ns && service_name(s) == "redis-master")
            .unwrap_or_else(|| panic!("{ns}: no redis-master Service"));
        let spec = svc.object.spec.as_ref().expect("spec");
        assert!(
            spec.selector.is_none(),
            "{}: the agent writes its endpoints",
            svc.file
        );
        assert_ne!(
            spec.cluster_ip.as_deref(),
            Some("None"),
            "a stable virtual IP"
        );
        let ports = spec.ports.as_ref().expect("ports");
        assert!(
            ports
                .iter()
                .any(|p| p.name.as_deref() == Some(MASTER_PORT_NAME)),
            "{}: the EndpointSlice's port is named {MASTER_PORT_NAME}",
            svc.file
        );
    }
}

#[test]
fn headless_services_publish_not_ready_pods() {
    let m = load();
    // Each pod's DNS subdomain is a headless Service of its namespace that selects it.
    for p in pods(&m) {
        let svc = m
            .services
            .iter()
            .find(|s| s.namespace == p.namespace && service_name(s) == p.subdomain)
            .unwrap_or_else(|| {
                panic!(
                    "{}: no Service {} for the pod's DNS name",
                    p.file, p.subdomain
                )
            });
        assert!(
            selects(selector_of(svc).expect("selector"), &p.labels),
            "{}",
            p.file
        );
    }
    for svc in m
        .services
        .iter()
        .filter(|s| service_name(s) == "redis-headless")
    {
        let spec = svc.object.spec.as_ref().expect("spec");
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"), "{}", svc.file);
        assert_eq!(
            spec.publish_not_ready_addresses,
            Some(true),
            "{}: peers resolve each other before they are Ready",
            svc.file
        );
    }
}

#[test]
fn service_ports_exist_on_the_selected_containers() {
    let m = load();
    let pods = pods(&m);
    for svc in &m.services {
        let Some(selector) = selector_of(svc) else {
            continue;
        };
        let selected: Vec<&PodView> = pods
            .iter()
            .filter(|p| p.namespace == svc.namespace)
            .filter(|p| p.label_variants().iter().any(|l| selects(selector, l)))
            .collect();
        assert!(
            !selected.is_empty(),
            "{}: {} selects no pod",
            svc.file,
            service_name(svc)
        );
        for port in svc
            .object
            .spec
            .as_ref()
            .and_then(|s| s.ports.as_ref())
            .into_iter()
            .flatten()
        {
            let target = port
                .target_port
                .clone()
                .unwrap_or(IntOrString::Int(port.port));
            for p in &selected {
                let found = p
                    .spec
                    .containers
                    .iter()
                    .flat_map(|c| c.ports.iter().flatten())
                    .any(|cp| match &target {
                        IntOrString::String(name) => cp.name.as_ref() == Some(name),
                        IntOrString::Int(n) => cp.container_port == *n,
                    });
                assert!(
                    found,
                    "{}: Service {} port {target:?} is not a container port of {}",
                    svc.file,
                    service_name(svc),
                    p.pod_name
                );
            }
        }
    }
}

#[test]
fn referenced_secrets_config_maps_accounts_and_claims_exist() {
    let m = load();
    let has_secret_key = |ns: &str, name: &str, key: &str| {
        m.secrets.iter().any(|s| {
            s.namespace == ns
                && s.object.metadata.name.as_deref() == Some(name)
                && (s.object.string_data.iter().flatten().any(|(k, _)| k == key)
                    || s.object.data.iter().flatten().any(|(k, _)| k == key))
        })
    };
    let named = |list: &[(&str, String)], ns: &str, name: &str| {
        list.iter().any(|(n, x)| *n == ns && x == name)
    };
    let accounts: Vec<(&str, String)> = m
        .service_accounts
        .iter()
        .map(|s| {
            (
                s.namespace.as_str(),
                s.object.metadata.name.clone().unwrap_or_default(),
            )
        })
        .collect();
    let config_maps: Vec<(&str, String)> = m
        .config_maps
        .iter()
        .map(|c| {
            (
                c.namespace.as_str(),
                c.object.metadata.name.clone().unwrap_or_default(),
            )
        })
        .collect();
    let claims: Vec<(&str, String)> = m
        .claims
        .iter()
        .map(|c| {
            (
                c.namespace.as_str(),
                c.object.metadata.name.clone().unwrap_or_default(),
            )
        })
        .collect();
    for p in pods(&m) {
        let ns = p.namespace.as_str();
        let account = p
            .spec
            .service_account_name
            .clone()
            .expect("serviceAccountName");
        assert!(
            named(&accounts, ns, &account),
            "{}: ServiceAccount {account}",
            p.file
        );
        let mut volumes: BTreeSet<String> = p.claim_templates.iter().cloned().collect();
        for v in p.spec.volumes.iter().flatten() {
            volumes.insert(v.name.clone());
            if let Some(cm) = &v.config_map {
                assert!(
                    named(&config_maps, ns, &cm.name),
                    "{}: ConfigMap {}",
                    p.file,
                    cm.name
                );
            }
            if let Some(pvc) = &v.persistent_volume_claim {
                assert!(
                    named(&claims, ns, &pvc.claim_name),
                    "{}: PVC {}",
                    p.file,
                    pvc.claim_name
                );
            }
            // The only Secret volume allowed is an optional one (the agents' TLS files).
            let optional_secret = v.secret.as_ref().is_none_or(|s| s.optional == Some(true));
            assert!(
                optional_secret && v.host_path.is_none(),
                "{}: volume {}",
                p.file,
                v.name
            );
        }
        for c in &p.spec.containers {
            for e in c.env.iter().flatten() {
                let Some(from) = &e.value_from else { continue };
                if let Some(r) = &from.secret_key_ref {
                    assert!(
                        has_secret_key(ns, &r.name, &r.key),
                        "{}: Secret {}/{}",
                        p.file,
                        r.name,
                        r.key
                    );
                }
                if let Some(r) = &from.config_map_key_ref {
                    assert!(
                        named(&config_maps, ns, &r.name),
                        "{}: ConfigMap {}",
                        p.file,
                        r.name
                    );
                }
            }
            for mount in c.volume_mounts.iter().flatten() {
                assert!(
                    volumes.contains(&mount.name),
                    "{}: volume {} of {}",
                    p.file,
                    mount.name,
                    c.name
                );
            }
        }
    }
    for b in &m.role_bindings {
        let ns = b.namespace.as_str();
        let role = &b.object.role_ref;
        assert_eq!(role.kind, "Role", "{}: namespaced permissions only", b.file);
        assert!(
            m.roles
                .iter()
                .any(|r| r.namespace == ns && r.object.metadata.name.as_ref() == Some(&role.name)),
            "{}: Role {}",
            b.file,
            role.name
        );
        for s in b.object.subjects.iter().flatten() {
            assert_eq!(s.kind, "ServiceAccount");
            assert_eq!(s.namespace.as_deref(), Some(ns), "{}", b.file);
            assert!(
                named(&accounts, ns, &s.name),
                "{}: ServiceAccount {}",
                b.file,
                s.name
            );
        }
    }
}

#[test]
fn probes_are_ready_and_health_on_the_api_port() {
    let m = load();
    for p in pods(&m) {
        let c = p.orchestrator();
        let http_port = c
            .ports
            .iter()
            .flatten()
            .find(|cp| cp.name.as_deref() == Some("http"))
            .expect("http port");
        assert_eq!(http_port.container_port, 8080, "the --api-bind default");
        for (probe, path) in [
            (&c.readiness_probe, "/ready"),
            (&c.liveness_probe, "/health"),
        ] {
            let get = probe
                .as_ref()
                .and_then(|pr| pr.http_get.as_ref())
                .unwrap_or_else(|| panic!("{}: no {path} probe", p.file));
            assert_eq!(get.path.as_deref(), Some(path), "{}", p.file);
            assert_eq!(get.port, IntOrString::String("http".into()), "{}", p.file);
        }
        let raft = c
            .ports
            .iter()
            .flatten()
            .find(|cp| cp.name.as_deref() == Some("raft"));
        assert_eq!(
            raft.map(|r| r.container_port),
            Some(7000),
            "the --raft-bind default"
        );
    }
}

#[test]
fn raft_data_is_on_a_persistent_volume_for_data_nodes_and_the_witness() {
    let m = load();
    for p in pods(&m) {
        let s = pod_settings(&p);
        let c = p.orchestrator();
        let mount = c
            .volume_mounts
            .iter()
            .flatten()
            .filter(|vm| s.raft_data_dir.starts_with(&vm.mount_path))
            .max_by_key(|vm| vm.mount_path.len())
            .unwrap_or_else(|| panic!("{}: --raft-data-dir is not on a volume", p.file));
        let persistent = p.claim_templates.contains(&mount.name)
            || p.spec
                .volumes
                .iter()
                .flatten()
                .any(|v| v.name == mount.name && v.persistent_volume_claim.is_some());
        assert!(
            persistent,
            "{}: volume {} is not a PersistentVolumeClaim",
            p.file, mount.name
        );
        assert_ne!(mount.read_only, Some(true));
    }
}

#[test]
fn witness_has_its_dns_name_and_is_never_two() {
    let m = load();
    let pods = pods(&m);
    let witness = pods.iter().find(|p| p.witness_workload).expect("witness");
    assert_eq!(witness.spec.hostname.as_deref(), Some("redis-witness"));
    assert_eq!(witness.spec.subdomain.as_deref(), Some("redis-headless"));
    let headless = m
        .services
        .iter()
        .find(|s| s.namespace == witness.namespace && service_name(s) == "redis-headless")
        .expect("the subdomain's headless Service");
    assert!(selects(
        selector_of(headless).expect("selector"),
        &witness.labels
    ));
    let d = &m.deployments[0].object;
    let strategy = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref());
    assert_eq!(
        strategy,
        Some("Recreate"),
        "the old witness stops before a new one votes"
    );
}

#[test]
fn rbac_grants_exactly_what_the_adapter_uses() {
    let m = load();
    let want: BTreeSet<(String, String, String)> = REQUIRED_PERMISSIONS
        .iter()
        .flat_map(|p| {
            p.verbs.iter().map(|v| {
                (
                    p.api_group.to_string(),
                    p.resource.to_string(),
                    v.to_string(),
                )
            })
        })
        .collect();
    assert_eq!(m.roles.len(), 3);
    for role in &m.roles {
        let mut granted = BTreeSet::new();
        for rule in role.object.rules.iter().flatten() {
            assert!(rule.resource_names.is_none() && rule.non_resource_urls.is_none());
            for group in rule.api_groups.iter().flatten() {
                for resource in rule.resources.iter().flatten() {
                    for verb in &rule.verbs {
                        granted.insert((group.clone(), resource.clone(), verb.clone()));
                    }
                }
            }
        }
        assert_eq!(granted, want, "{}", role.file);
    }
}

#[test]
fn secrets_are_identical_across_sites_with_generation_advice() {
    let m = load();
    assert_eq!(m.secrets.len(), 3);
    let first = &m.secrets[0].object.string_data;
    let keys: BTreeSet<&str> = first.iter().flatten().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, BTreeSet::from(["redis-password", "shared-secret"]));
    for s in &m.secrets {
        assert_eq!(
            &s.object.string_data, first,
            "{}: same values in every site",
            s.file
        );
        let text = std::fs::read_to_string(root().join(&s.file)).expect("read");
        assert!(text.contains("openssl rand -base64 32"), "{}", s.file);
    }
}

#[test]
fn redis_and_the_agent_share_the_password_from_the_secret() {
    let m = load();
    for p in pods(&m).iter().filter(|p| !p.witness_workload) {
        let redis = p.container("redis").expect("redis container");
        let args = redis.args.clone().unwrap_or_default();
        for option in ["--requirepass", "--masterauth"] {
            let at = args
                .iter()
                .position(|a| a == option)
                .unwrap_or_else(|| panic!("{}: {option}", p.file));
            assert_eq!(
                args.get(at + 1).map(String::as_str),
                Some("$(REDIS_PASSWORD)")
            );
        }
        let secret = ("redis-secret", "redis-password");
        assert_eq!(
            env_secret(redis, "REDIS_PASSWORD"),
            Some(secret),
            "{}",
            p.file
        );
        assert_eq!(
            env_secret(p.orchestrator(), "REDIS_PASSWORD"),
            Some(secret),
            "{}",
            p.file
        );
        let conf = m
            .config_maps
            .iter()
            .find(|c| c.namespace == p.namespace)
            .and_then(|c| c.object.data.as_ref())
            .and_then(|d| d.get("redis.conf"))
            .expect("redis.conf");
        assert!(
            !conf.lines().any(|l| l.trim_start().starts_with("replicaof")
                || l.trim_start().starts_with("requirepass")),
            "{}: replication and the password are set by the agent and the Secret",
            p.file
        );
    }
    for p in &pods(&m) {
        assert_eq!(
            env_secret(p.orchestrator(), "SHARED_SECRET"),
            Some(("redis-secret", "shared-secret")),
            "{}",
            p.file
        );
    }
}

#[test]
fn pods_meet_the_restricted_pod_security_profile() {
    let m = load();
    for n in &m.namespaces {
        let labels = n.object.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            labels
                .get("pod-security.kubernetes.io/enforce")
                .map(String::as_str),
            Some("restricted"),
            "{}",
            n.file
        );
    }
    for p in pods(&m) {
        let pod = p
            .spec
            .security_context
            .as_ref()
            .expect("pod securityContext");
        assert_eq!(pod.run_as_non_root, Some(true), "{}", p.file);
        assert_eq!(
            pod.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
            Some("RuntimeDefault"),
            "{}",
            p.file
        );
        for c in &p.spec.containers {
            let sc = c
                .security_context
                .as_ref()
                .expect("container securityContext");
            assert_eq!(
                sc.allow_privilege_escalation,
                Some(false),
                "{} {}",
                p.file,
                c.name
            );
            assert_eq!(
                sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
                Some(vec!["ALL".to_string()]),
                "{} {}",
                p.file,
                c.name
            );
            assert!(
                sc.run_as_user.is_some_and(|u| u > 0),
                "{} {}: numeric non-root user",
                p.file,
                c.name
            );
        }
        assert_eq!(
            p.orchestrator()
                .security_context
                .as_ref()
                .and_then(|s| s.run_as_user),
            Some(65532),
            "{}: the Dockerfile's USER",
            p.file
        );
    }
}

#[test]
fn the_image_is_the_one_the_dockerfile_builds() {
    let m = load();
    let image = format!("redis-orchestrator:{}", env!("CARGO_PKG_VERSION"));
    for p in pods(&m) {
        assert_eq!(
            p.orchestrator().image.as_deref(),
            Some(image.as_str()),
            "{}",
            p.file
        );
    }
    let dockerfile =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile"))
            .expect("Dockerfile at the root");
    let last_stage: Vec<&str> = dockerfile
        .rsplit_once("\nFROM ")
        .map(|(_, stage)| stage)
        .expect("a multi-stage build")
        .lines()
        .collect();
    assert!(
        last_stage.contains(&"USER 65532:65532"),
        "non-root runtime user"
    );
    assert!(
        last_stage
            .iter()
            .any(|l| l.starts_with("ENTRYPOINT [\"/usr/local/bin/redis-orchestrator\"]")),
        "the binary is the entrypoint"
    );
    let readme = std::fs::read_to_string(root().join("../README.md")).expect("deploy/README.md");
    assert!(
        readme.contains(&format!("docker build -t {image} .")),
        "deploy/README.md builds {image}"
    );
}

/// The build stage's `COPY` sources, in order.
fn build_stage_copies(dockerfile: &str) -> Vec<String> {
    let build_stage = dockerfile
        .split("\nFROM ")
        .nth(1)
        .expect("a build stage after the first FROM");
    build_stage
        .lines()
        .filter_map(|l| l.strip_prefix("COPY "))
        .filter(|l| !l.starts_with("--from"))
        .flat_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let sources = words.len().saturating_sub(1);
            words[..sources]
                .iter()
                .map(|w| w.to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn the_image_build_copies_every_file_cargo_reads() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dockerfile = std::fs::read_to_string(repo.join("Dockerfile")).expect("Dockerfile");
    let copied = build_stage_copies(&dockerfile);
    // build.rs sets the link options and reads the order file; without them the image's
    // binary would build, silently unstripped and unordered.
    for needed in [
        "Cargo.toml",
        "Cargo.lock",
        "build.rs",
        "symbol-order.txt",
        "src",
    ] {
        assert!(
            copied.iter().any(|c| c == needed),
            "the Dockerfile's build stage copies {needed}: {copied:?}"
        );
    }
    // A workspace whose member is missing does not build at all.
    let manifest = std::fs::read_to_string(repo.join("Cargo.toml")).expect("Cargo.toml");
    let members: Vec<&str> = manifest
        .lines()
        .find_map(|l| l.strip_prefix("members = ["))
        .expect("a workspace members line")
        .split('"')
        .skip(1)
        .step_by(2)
        .collect();
    assert!(members.contains(&"bench"), "members parsed: {members:?}");
    for member in members.iter().filter(|m| **m != ".") {
        assert!(
            copied.iter().any(|c| c == *member),
            "the Dockerfile's build stage copies workspace member {member}: {copied:?}"
        );
    }
    // And cargo takes the copied tree as it is, with the lock file as committed.
    let context = tempfile::tempdir().expect("tempdir");
    for source in &copied {
        let from = repo.join(source);
        let to = context.path().join(source);
        copy_tree(&from, &to);
    }
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--locked",
            "--offline",
            "--no-deps",
            "--format-version=1",
        ])
        .current_dir(context.path())
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo reads the image's build context: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn copy_tree(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).expect("mkdir");
        for entry in std::fs::read_dir(from).expect("read_dir") {
            let entry = entry.expect("dir entry");
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        std::fs::copy(from, to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    }
}
