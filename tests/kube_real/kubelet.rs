//! A process-based kubelet: for every Pod the controllers create, it creates the pod's Node,
//! binds the pod to it (pods/binding), gives the pod a network namespace and an IP, starts
//! each container's command/args/env as a local process inside it, restarts a container
//! that exits, evaluates the readiness probes and patches the pod's `/status`.
//!
//! Images are not run: the container's command is run from the host's PATH, and an image
//! without a command maps to its entrypoint (`redis-orchestrator:*` → our binary). Volume
//! mounts are bind mounts inside the pod's private mount namespace (the one
//! `ip netns exec` makes), of per-pod directories: a ConfigMap's keys as files, a PVC or
//! emptyDir as an empty directory kept across container restarts. The service-account
//! volume is replaced by KUBECONFIG (a TokenRequest token of the pod's ServiceAccount).
//! DNS: every pod's `/etc/hosts` lists `<hostname>.<subdomain>.<namespace>.svc.cluster.local`
//! of every pod with a subdomain, as the headless Services would publish them.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Container, Node, Pod, Secret};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use serde_json::json;
use tokio::process::{Child, Command};

use super::net::PodNet;

/// The image of our agent; a container of it without `command` runs this binary.
const AGENT_IMAGE: &str = "redis-orchestrator:";
const AGENT_BIN: &str = env!("CARGO_BIN_EXE_redis-orchestrator");
/// Wait before restarting an exited container (the real kubelet backs off from 10 s).
const RESTART_DELAY: Duration = Duration::from_millis(500);
const PROBE_EVERY: Duration = Duration::from_millis(500);

pub struct Kubelet {
    client: Client,
    net: PodNet,
    root: PathBuf,
    api_port: u16,
    /// Namespace → kubeconfig of its ServiceAccount.
    kubeconfigs: HashMap<String, PathBuf>,
    /// Namespace → pod IP of the one pod the namespace runs.
    ips: HashMap<String, Ipv4Addr>,
    pods: BTreeMap<(String, String), RunningPod>,
    nodes: Vec<String>,
    /// Namespace → LoadBalancer ingress IPs that forward to its pod (added to its eth0).
    balancers: HashMap<String, Vec<Ipv4Addr>>,
    /// Mount points this kubelet had to create on the host (removed again when empty).
    made_dirs: Vec<PathBuf>,
}

struct RunningPod {
    uid: String,
    netns: String,
    ip: Ipv4Addr,
    hosts_file: PathBuf,
    containers: Vec<RunningContainer>,
    ready: Option<bool>,
    last_probe: Option<Instant>,
}

pub struct RunningContainer {
    pub name: String,
    program: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// (host directory, mount path).
    mounts: Vec<(PathBuf, String)>,
    hostname: String,
    readiness: Option<Readiness>,
    pub log: PathBuf,
    child: Option<Child>,
    exited_at: Option<Instant>,
    pub restarts: u32,
}

enum Readiness {
    Exec(Vec<String>),
    Http { port: u16, path: String },
    Tcp,
}

impl Kubelet {
    pub fn new(
        client: Client,
        net: PodNet,
        root: PathBuf,
        api_port: u16,
        kubeconfigs: HashMap<String, PathBuf>,
        ips: HashMap<String, Ipv4Addr>,
    ) -> Kubelet {
        Kubelet {
            client,
            net,
            root,
            api_port,
            kubeconfigs,
            ips,
            pods: BTreeMap::new(),
            nodes: Vec::new(),
            balancers: HashMap::new(),
            made_dirs: Vec::new(),
        }
    }

    /// The pid of a running container of pod `namespace/name`.
    pub fn pid(&self, namespace: &str, pod: &str, container: &str) -> Option<u32> {
        let p = self.pods.get(&(namespace.to_string(), pod.to_string()))?;
        let c = p.containers.iter().find(|c| c.name == container)?;
        c.child.as_ref().and_then(Child::id)
    }

    pub fn containers(&self) -> impl Iterator<Item = (&str, &str, &RunningContainer)> {
        self.pods.iter().flat_map(|((ns, pod), p)| {
            p.containers
                .iter()
                .map(move |c| (ns.as_str(), pod.as_str(), c))
        })
    }

    /// Route `addr` (a LoadBalancer's ingress IP) to the pods of `namespace` admitted from
    /// now on.
    pub fn load_balancer(&mut self, namespace: &str, addr: Ipv4Addr) {
        self.balancers
            .entry(namespace.to_string())
            .or_default()
            .push(addr);
    }

    /// The UID of the pod whose containers run now.
    pub fn running_uid(&self, namespace: &str, pod: &str) -> Option<&str> {
        let p = self.pods.get(&(namespace.to_string(), pod.to_string()))?;
        Some(p.uid.as_str())
    }

    /// Kill a pod's containers and remove its network namespace.
    async fn stop(&mut self, key: &(String, String)) {
        let Some(mut pod) = self.pods.remove(key) else {
            return;
        };
        for c in &mut pod.containers {
            if let Some(child) = &mut c.child {
                let _ = child.kill().await;
            }
        }
        self.net.remove_pod(&pod.netns);
    }

    /// One pass: admit new pods, restart exited containers, probe and report status.
    pub async fn sync(&mut self) -> Result<(), String> {
        let all: Api<Pod> = Api::all(self.client.clone());
        let list = all
            .list(&ListParams::default())
            .await
            .map_err(|e| format!("list pods: {e}"))?;
        let mut dns_changed = false;
        for pod in &list.items {
            let ns = pod.metadata.namespace.clone().unwrap_or_default();
            let name = pod.metadata.name.clone().unwrap_or_default();
            let key = (ns.clone(), name.clone());
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            if self.pods.get(&key).is_some_and(|p| p.uid != uid) {
                self.stop(&key).await;
                dns_changed = true;
            }
            if pod.metadata.deletion_timestamp.is_some() {
                // A bound pod is gone once its kubelet says its containers are: stop them,
                // then delete the object for good.
                self.stop(&key).await;
                let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
                let params = DeleteParams {
                    grace_period_seconds: Some(0),
                    preconditions: Some(Preconditions {
                        uid: Some(uid),
                        resource_version: None,
                    }),
                    ..DeleteParams::default()
                };
                match api.delete(&name, &params).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                    Err(e) => return Err(format!("delete {ns}/{name}: {e}")),
                }
                dns_changed = true;
                continue;
            }
            if !self.pods.contains_key(&key) {
                let running = self.admit(pod).await?;
                self.pods.insert(key.clone(), running);
                dns_changed = true;
            }
        }
        let gone: Vec<_> = self
            .pods
            .keys()
            .filter(|(ns, name)| {
                !list.items.iter().any(|p| {
                    p.metadata.namespace.as_ref() == Some(ns)
                        && p.metadata.name.as_ref() == Some(name)
                })
            })
            .cloned()
            .collect();
        for key in gone {
            self.stop(&key).await;
            dns_changed = true;
        }
        if dns_changed {
            self.write_hosts(&list.items)?;
        }
        let keys: Vec<_> = self.pods.keys().cloned().collect();
        for key in keys {
            self.tend(&key).await?;
        }
        Ok(())
    }

    /// Node, binding, namespace, IP, first status; then the containers.
    async fn admit(&mut self, pod: &Pod) -> Result<RunningPod, String> {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let spec = pod.spec.as_ref().ok_or("pod without spec")?;
        let ip = *self
            .ips
            .get(&ns)
            .ok_or_else(|| format!("no pod IP planned for namespace {ns}"))?;
        let node = format!("node-{ns}");
        if !self.nodes.contains(&node) {
            let nodes: Api<Node> = Api::all(self.client.clone());
            let object: Node = serde_json::from_value(json!({"metadata": {"name": node}}))
                .map_err(|e| e.to_string())?;
            match nodes.create(&PostParams::default(), &object).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(format!("create node {node}: {e}")),
            }
            self.nodes.push(node.clone());
        }
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        if spec.node_name.is_none() {
            let binding = json!({
                "apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": name},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node},
            });
            pods.create_subresource::<_, serde_json::Value>(
                "binding",
                &name,
                &PostParams::default(),
                &binding,
            )
            .await
            .map_err(|e| format!("bind {ns}/{name}: {e}"))?;
        }
        let short = format!("{}-{}", ns.rsplit('-').next().unwrap_or("x"), name);
        let short: String = short.chars().take(20).collect();
        let netns = self.net.add_pod(&short, ip, "")?;
        self.net.relay_loopback(&netns, self.api_port)?;
        for &addr in self.balancers.get(&ns).into_iter().flatten() {
            self.net.add_address(&netns, addr)?;
        }
        let hosts_file = Path::new("/etc/netns").join(&netns).join("hosts");
        let pod_dir = self.root.join(format!("{ns}-{name}"));
        let hostname = spec.hostname.clone().unwrap_or_else(|| name.clone());
        let mut containers = Vec::new();
        for c in &spec.containers {
            containers.push(
                self.container(pod, c, &pod_dir, ip, &node, &hostname)
                    .await?,
            );
        }
        let mut running = RunningPod {
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            netns,
            ip,
            hosts_file,
            containers,
            ready: None,
            last_probe: None,
        };
        self.patch_status(&ns, &name, &running, false).await?;
        running.ready = Some(false);
        Ok(running)
    }

    async fn container(
        &mut self,
        pod: &Pod,
        c: &Container,
        pod_dir: &Path,
        ip: Ipv4Addr,
        node: &str,
        hostname: &str,
    ) -> Result<RunningContainer, String> {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let agent = c.image.as_deref().unwrap_or("").starts_with(AGENT_IMAGE);
        let mut env = self.resolve_env(pod, c, ip, node).await?;
        let lookup: HashMap<String, String> = env.iter().cloned().collect();
        let mut argv: Vec<String> = match (&c.command, agent) {
            (Some(cmd), _) => cmd.iter().map(|s| expand(s, &lookup)).collect(),
            (None, true) => vec![AGENT_BIN.to_string()],
            (None, false) => {
                return Err(format!(
                    "container {} (image {:?}) has no command, and the harness knows no entrypoint for its image",
                    c.name, c.image
                ));
            }
        };
        argv.extend(c.args.iter().flatten().map(|s| expand(s, &lookup)));
        if agent {
            // What the mounted service-account token gives in a real pod: API access as the
            // pod's ServiceAccount.
            argv.push("--kubernetes=on".into());
            let kc = self
                .kubeconfigs
                .get(&ns)
                .ok_or_else(|| format!("no kubeconfig for namespace {ns}"))?;
            env.push(("KUBECONFIG".into(), kc.display().to_string()));
        }
        let program = argv.remove(0);
        let mut mounts = Vec::new();
        for m in c.volume_mounts.iter().flatten() {
            if let Some(dir) = self.volume(pod, &m.name, pod_dir).await? {
                self.ensure_mount_point(Path::new(&m.mount_path))?;
                mounts.push((dir, m.mount_path.clone()));
            }
        }
        let readiness = c.readiness_probe.as_ref().map(|p| {
            if let Some(exec) = &p.exec {
                Readiness::Exec(exec.command.clone().unwrap_or_default())
            } else if let Some(get) = &p.http_get {
                Readiness::Http {
                    port: port_number(c, &get.port),
                    path: get.path.clone().unwrap_or_else(|| "/".into()),
                }
            } else {
                Readiness::Tcp
            }
        });
        std::fs::create_dir_all(pod_dir).map_err(|e| format!("{}: {e}", pod_dir.display()))?;
        Ok(RunningContainer {
            name: c.name.clone(),
            program,
            args: argv,
            env,
            mounts,
            hostname: hostname.to_string(),
            readiness,
            log: pod_dir.join(format!("{}.log", c.name)),
            child: None,
            exited_at: None,
            restarts: 0,
        })
    }

    async fn resolve_env(
        &self,
        pod: &Pod,
        c: &Container,
        ip: Ipv4Addr,
        node: &str,
    ) -> Result<Vec<(String, String)>, String> {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        if c.env_from.is_some() {
            return Err(format!(
                "container {}: envFrom is not supported here",
                c.name
            ));
        }
        let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into());
        let mut env = vec![("PATH".to_string(), path)];
        for var in c.env.iter().flatten() {
            let lookup: HashMap<String, String> = env.iter().cloned().collect();
            let value = if let Some(v) = &var.value {
                expand(v, &lookup)
            } else if let Some(from) = &var.value_from {
                if let Some(f) = &from.field_ref {
                    match f.field_path.as_str() {
                        "metadata.name" => pod.metadata.name.clone().unwrap_or_default(),
                        "metadata.namespace" => ns.clone(),
                        "metadata.uid" => pod.metadata.uid.clone().unwrap_or_default(),
                        "status.podIP" => ip.to_string(),
                        "spec.nodeName" => node.to_string(),
                        other => return Err(format!("fieldRef {other} is not supported here")),
                    }
                } else if let Some(s) = &from.secret_key_ref {
                    let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &ns);
                    let secret = secrets
                        .get(&s.name)
                        .await
                        .map_err(|e| format!("secret {ns}/{}: {e}", s.name))?;
                    let bytes = secret
                        .data
                        .and_then(|d| d.get(&s.key).cloned())
                        .ok_or_else(|| format!("secret {ns}/{} has no key {}", s.name, s.key))?;
                    String::from_utf8(bytes.0).map_err(|e| e.to_string())?
                } else if let Some(k) = &from.config_map_key_ref {
                    let maps: Api<ConfigMap> = Api::namespaced(self.client.clone(), &ns);
                    let map = maps
                        .get(&k.name)
                        .await
                        .map_err(|e| format!("configmap {ns}/{}: {e}", k.name))?;
                    map.data
                        .and_then(|d| d.get(&k.key).cloned())
                        .ok_or_else(|| format!("configmap {ns}/{} has no key {}", k.name, k.key))?
                } else {
                    return Err(format!("env {}: unsupported valueFrom", var.name));
                }
            } else {
                String::new()
            };
            env.push((var.name.clone(), value));
        }
        Ok(env)
    }

    /// The host directory behind volume `name`, or None for the service-account volume.
    async fn volume(
        &self,
        pod: &Pod,
        name: &str,
        pod_dir: &Path,
    ) -> Result<Option<PathBuf>, String> {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
        let v = volumes
            .and_then(|vs| vs.iter().find(|v| v.name == name))
            .ok_or_else(|| format!("volume {name} is not in the pod spec"))?;
        let dir = pod_dir.join("volumes").join(name);
        if v.projected.is_some() {
            return Ok(None);
        }
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if let Some(cm) = &v.config_map {
            let maps: Api<ConfigMap> = Api::namespaced(self.client.clone(), &ns);
            let map = maps
                .get(&cm.name)
                .await
                .map_err(|e| format!("configmap {ns}/{}: {e}", cm.name))?;
            for (key, value) in map.data.iter().flatten() {
                std::fs::write(dir.join(key), value).map_err(|e| format!("{key}: {e}"))?;
            }
        } else if v.persistent_volume_claim.is_none() && v.empty_dir.is_none() {
            return Err(format!(
                "volume {name}: only configMap, PVC and emptyDir are supported"
            ));
        }
        Ok(Some(dir))
    }

    /// Bind mounts need an existing mount point; create it (and remember it) if absent.
    fn ensure_mount_point(&mut self, path: &Path) -> Result<(), String> {
        let mut missing = Vec::new();
        let mut p = Some(path);
        while let Some(dir) = p {
            if dir.exists() {
                break;
            }
            missing.push(dir.to_path_buf());
            p = dir.parent();
        }
        std::fs::create_dir_all(path).map_err(|e| format!("{}: {e}", path.display()))?;
        self.made_dirs.extend(missing.into_iter().rev());
        Ok(())
    }

    /// Every pod's /etc/hosts: localhost, and the headless-Service name of every pod.
    fn write_hosts(&self, pods: &[Pod]) -> Result<(), String> {
        let mut text = String::from("127.0.0.1 localhost\n");
        for pod in pods {
            let ns = pod.metadata.namespace.clone().unwrap_or_default();
            let name = pod.metadata.name.clone().unwrap_or_default();
            let Some(spec) = &pod.spec else { continue };
            let (Some(sub), Some(running)) =
                (&spec.subdomain, self.pods.get(&(ns.clone(), name.clone())))
            else {
                continue;
            };
            let host = spec.hostname.clone().unwrap_or(name);
            text.push_str(&format!(
                "{} {host}.{sub}.{ns}.svc.cluster.local\n",
                running.ip
            ));
        }
        for running in self.pods.values() {
            // Written in place: `ip netns exec` bind-mounts this inode over /etc/hosts.
            std::fs::write(&running.hosts_file, &text)
                .map_err(|e| format!("{}: {e}", running.hosts_file.display()))?;
        }
        Ok(())
    }

    /// Restart exited containers, probe readiness, patch status when it changes.
    async fn tend(&mut self, key: &(String, String)) -> Result<(), String> {
        let Some(pod) = self.pods.get_mut(key) else {
            return Ok(());
        };
        for c in &mut pod.containers {
            let exited = match &mut c.child {
                Some(child) => child.try_wait().map_err(|e| e.to_string())?.is_some(),
                None => true,
            };
            if exited && c.child.is_some() {
                c.child = None;
                c.exited_at = Some(Instant::now());
                c.restarts += 1;
            }
            let due = c.exited_at.is_none_or(|t| t.elapsed() >= RESTART_DELAY);
            if c.child.is_none() && due {
                c.child = Some(c.start(&pod.netns)?);
                c.exited_at = None;
            }
        }
        if pod.last_probe.is_some_and(|t| t.elapsed() < PROBE_EVERY) {
            return Ok(());
        }
        pod.last_probe = Some(Instant::now());
        let mut ready = true;
        for c in &pod.containers {
            ready &= c.child.is_some() && c.probe(&pod.netns, pod.ip).await;
        }
        if pod.ready != Some(ready) {
            let (ns, name) = key;
            let pod = &self.pods[key];
            self.patch_status(ns, name, pod, ready).await?;
            if let Some(p) = self.pods.get_mut(key) {
                p.ready = Some(ready);
            }
        }
        Ok(())
    }

    async fn patch_status(
        &self,
        ns: &str,
        name: &str,
        pod: &RunningPod,
        ready: bool,
    ) -> Result<(), String> {
        let flag = if ready { "True" } else { "False" };
        let statuses: Vec<_> = pod
            .containers
            .iter()
            .map(|c| {
                json!({
                    "name": c.name, "ready": ready && c.child.is_some(),
                    "restartCount": c.restarts, "image": "", "imageID": "",
                    "started": c.child.is_some(),
                    "state": if c.child.is_some() { json!({"running": {}}) } else { json!({"waiting": {"reason": "Restarting"}}) },
                })
            })
            .collect();
        let status = json!({"status": {
            "phase": "Running",
            "podIP": pod.ip.to_string(),
            "podIPs": [{"ip": pod.ip.to_string()}],
            "hostIP": pod.ip.to_string(),
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Initialized", "status": "True"},
                {"type": "ContainersReady", "status": flag},
                {"type": "Ready", "status": flag},
            ],
            "containerStatuses": statuses,
        }});
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .map_err(|e| format!("patch status of {ns}/{name}: {e}"))?;
        Ok(())
    }
}

impl RunningContainer {
    /// `ip netns exec` gives a private mount namespace; `unshare --uts` the pod's hostname.
    /// Each step execs the next, so the child's pid is the container program's own.
    fn start(&self, netns: &str) -> Result<Child, String> {
        const SCRIPT: &str = r#"hostname "$1" && shift
while [ "$1" != "--" ]; do mount --bind "$1" "$2" || exit 1; shift 2; done
shift
exec "$@""#;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("{}: {e}", self.log.display()))?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns", "exec", netns, "unshare", "--uts", "--", "sh", "-c", SCRIPT, "sh",
        ])
        .arg(&self.hostname);
        for (dir, path) in &self.mounts {
            cmd.arg(dir).arg(path);
        }
        cmd.arg("--").arg(&self.program).args(&self.args);
        cmd.env_clear()
            .envs(self.env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .kill_on_drop(true);
        cmd.spawn()
            .map_err(|e| format!("start container {}: {e}", self.name))
    }

    async fn probe(&self, netns: &str, ip: Ipv4Addr) -> bool {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", netns]);
        match &self.readiness {
            None | Some(Readiness::Tcp) => return true,
            Some(Readiness::Exec(argv)) => {
                cmd.args(argv).env_clear().envs(self.env.iter().cloned());
            }
            Some(Readiness::Http { port, path }) => {
                cmd.args(["curl", "-fsS", "-o", "/dev/null", "-m", "2"])
                    .arg(format!("http://{ip}:{port}{path}"));
            }
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        matches!(
            tokio::time::timeout(Duration::from_secs(3), cmd.status()).await,
            Ok(Ok(status)) if status.success()
        )
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        for pod in self.pods.values_mut() {
            for c in &mut pod.containers {
                if let Some(child) = &mut c.child {
                    let _ = child.start_kill();
                }
            }
        }
        // PodNet's drop (after this) kills whatever is left inside the namespaces.
        for dir in self.made_dirs.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// A named or numbered container port.
fn port_number(c: &Container, port: &IntOrString) -> u16 {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).unwrap_or(0),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .unwrap_or(0),
    }
}

/// Kubernetes' `$(VAR)` expansion: a defined variable is replaced, `$$` is a literal `$`,
/// anything else is kept as written.
pub fn expand(text: &str, env: &HashMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('(')
            && let Some(end) = body.find(')')
            && let Some(value) = env.get(&body[..end])
        {
            out.push_str(value);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}
