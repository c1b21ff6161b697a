//! The seed's deployment on a real Kubernetes control plane (etcd, kube-apiserver and
//! kube-controller-manager from `scripts/k8s-control-plane.sh`): every manifest of
//! `deploy/multisite/` is applied, the real StatefulSet and Deployment controllers make the
//! Pods, a process-based kubelet (tests/kube_real/kubelet.rs) runs their containers in
//! network namespaces, and the real EndpointSlice controller routes the Services by the
//! labels our agents set while running as the manifests' ServiceAccount.
//!
//! Needs root (network namespaces), redis-server, redis-cli, curl, unshare, and the control
//! plane's binaries (built once into a cache; ~15 min cold). With `CI` set a missing piece
//! fails the test; elsewhere it is skipped with the reason.

#[path = "kube_real/kubelet.rs"]
mod kubelet;
#[path = "kube_real/net.rs"]
mod net;
#[path = "kube_real/plane.rs"]
mod plane;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams};
use redis_orchestrator::client::ApiClient;
use redis_orchestrator::wire::SwitchoverDone;
use serde_json::json;
use tokio::runtime::Handle;
use tokio::sync::Mutex;

use kubelet::Kubelet;
use net::PodNet;
use plane::ControlPlane;

const NS_A: &str = "redis-multisite-a";
const NS_B: &str = "redis-multisite-b";
const NS_C: &str = "redis-multisite-c";
const NAMESPACES: [&str; 3] = [NS_A, NS_B, NS_C];
/// The seed's order: site A, B, C, then the global LoadBalancer Services.
const SITE_DIRS: [&str; 3] = ["site-a-manifests", "site-b-manifests", "site-c-manifests"];
const GLOBAL: &str = "global-loadbalancer-services.yaml";
const SERVICE_ACCOUNT: &str = "redis-orchestrator";
const AGENT_PORT: u16 = 8080;
/// SIGKILLs of the master's redis-server, for a median of the time to reroute.
const KILLS: usize = 3;

fn pod_ip(ns: &str) -> Ipv4Addr {
    match ns {
        NS_A => Ipv4Addr::new(10, 97, 0, 1),
        NS_B => Ipv4Addr::new(10, 97, 0, 2),
        _ => Ipv4Addr::new(10, 97, 0, 3),
    }
}

fn multisite() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/multisite")
}

/// What this machine lacks for the test, if anything.
fn missing() -> Option<String> {
    for tool in ["redis-server", "redis-cli", "curl", "unshare", "ip"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Some(format!("{tool} is not installed"));
        }
    }
    net::unavailable().or_else(plane::unavailable)
}

#[test]
fn seed_deployment_on_a_real_control_plane() {
    if let Some(why) = missing() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set and the real-cluster test cannot run: {why}"
        );
        eprintln!("skipping the real-cluster test: {why}");
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let started = Instant::now();
    let plane = ControlPlane::up().unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "control plane up at {} in {:.1} s",
        plane.server,
        started.elapsed().as_secs_f64()
    );
    let pods = PodNet::create().unwrap_or_else(|e| panic!("pod network: {e}"));
    // The observer's HTTP calls to the agents start in the hub namespace, on the bridge.
    let hub = net::runtime_in(&pods.hub).unwrap_or_else(|e| panic!("hub runtime: {e}"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let outcome = rt.block_on(scenario(&plane, pods, hub.handle().clone()));
    drop(rt);
    drop(hub);
    if let Err(e) = outcome {
        for component in ["kube-apiserver", "kube-controller-manager"] {
            eprintln!(
                "--- last lines of {component}:\n{}",
                plane.log_tail(component, 15)
            );
        }
        panic!("{e}");
    }
    eprintln!(
        "real-cluster test wall time: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

async fn scenario(plane: &ControlPlane, pods: PodNet, hub: Handle) -> Result<(), String> {
    let client = admin_client(plane).await?;
    apply_manifests(plane, &client).await?;
    let root = tempfile::Builder::new()
        .prefix("rorc-kubelet-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let mut kubeconfigs = HashMap::new();
    for ns in NAMESPACES {
        kubeconfigs.insert(
            ns.to_string(),
            service_account_kubeconfig(plane, ns, root.path())?,
        );
    }
    let ips = NAMESPACES.map(|ns| (ns.to_string(), pod_ip(ns))).into();
    let kubelet = Arc::new(Mutex::new(Kubelet::new(
        client.clone(),
        pods,
        root.path().to_path_buf(),
        plane.port,
        kubeconfigs,
        ips,
    )));
    let runner = {
        let kubelet = kubelet.clone();
        tokio::spawn(async move {
            let mut last = String::new();
            loop {
                if let Err(e) = kubelet.lock().await.sync().await
                    && e != last
                {
                    eprintln!("kubelet: {e}");
                    last = e;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let outcome = behaviour(&client, &kubelet, &hub).await;
    runner.abort();
    let _ = runner.await;
    let kubelet = kubelet.lock().await;
    // Refused calls are the likeliest cause of a failed step too: always named.
    let calls = agent_calls_accepted(&kubelet).and_then(|()| audited_calls_accepted(plane));
    let checked = match (outcome, calls) {
        (Ok(()), calls) => calls,
        (Err(e), Ok(())) => Err(e),
        (Err(e), Err(calls)) => Err(format!("{e}\n{calls}")),
    };
    if checked.is_err() {
        for (ns, pod, c) in kubelet.containers() {
            eprintln!(
                "--- {ns}/{pod} {} (restarts {}), last lines:\n{}",
                c.name,
                c.restarts,
                tail(&c.log, 25)
            );
        }
    }
    checked
}

async fn admin_client(plane: &ControlPlane) -> Result<Client, String> {
    let kc = kube::config::Kubeconfig::read_from(plane.kubeconfig()).map_err(|e| e.to_string())?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| e.to_string())?;
    Client::try_from(config).map_err(|e| e.to_string())
}

/// Namespaces first (a server-side dry run of a namespaced object needs its namespace),
/// then a server-side dry run of every manifest, then the real apply in the seed's order.
async fn apply_manifests(plane: &ControlPlane, client: &Client) -> Result<(), String> {
    let dir = multisite();
    let t = Instant::now();
    for site in SITE_DIRS {
        let file = dir.join(site).join("namespace.yaml");
        plane.kubectl(&["apply", "-f", &file.display().to_string()])?;
    }
    let mut all = vec!["apply".to_string(), "--dry-run=server".into()];
    for path in SITE_DIRS
        .iter()
        .map(|s| dir.join(s))
        .chain([dir.join(GLOBAL)])
    {
        all.extend(["-f".into(), path.display().to_string()]);
    }
    let args: Vec<&str> = all.iter().map(String::as_str).collect();
    let dry = plane.kubectl(&args)?;
    let objects = dry
        .lines()
        .filter(|l| l.contains("(server dry run)"))
        .count();
    if objects < 20 {
        return Err(format!(
            "server dry run covered only {objects} objects:\n{dry}"
        ));
    }
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), NS_A);
    let left = sets
        .list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?;
    if !left.items.is_empty() {
        return Err("the dry run created a StatefulSet".into());
    }
    for path in SITE_DIRS
        .iter()
        .map(|s| dir.join(s))
        .chain([dir.join(GLOBAL)])
    {
        plane.kubectl(&["apply", "-f", &path.display().to_string()])?;
    }
    eprintln!(
        "{objects} objects passed the server-side dry run and were applied in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A kubeconfig with a TokenRequest token of the namespace's ServiceAccount.
fn service_account_kubeconfig(
    plane: &ControlPlane,
    ns: &str,
    dir: &Path,
) -> Result<PathBuf, String> {
    let token = plane.kubectl(&[
        "create",
        "token",
        SERVICE_ACCOUNT,
        "-n",
        ns,
        "--duration=2h",
    ])?;
    let file = dir.join(format!("{ns}.kubeconfig"));
    let user = format!("system:serviceaccount:{ns}:{SERVICE_ACCOUNT}");
    plane.write_kubeconfig(&file, &user, token.trim())?;
    Ok(file)
}

/// The one pod a namespace runs.
async fn only_pod(client: &Client, ns: &str) -> Result<Pod, String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let list = pods
        .list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?;
    match <[Pod; 1]>::try_from(list.items) {
        Ok([pod]) => Ok(pod),
        Err(items) => Err(format!("{ns} has {} pods, expected one", items.len())),
    }
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn role(pod: &Pod) -> Option<String> {
    pod.metadata.labels.as_ref()?.get("redis-role").cloned()
}

/// Addresses of the ready endpoints in the Service's EndpointSlices, sorted.
async fn routed(client: &Client, ns: &str, service: &str) -> Result<Vec<String>, String> {
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let list = slices
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={service}")))
        .await
        .map_err(|e| e.to_string())?;
    let mut ips: Vec<String> = list
        .items
        .iter()
        .flat_map(|s| s.endpoints.iter())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
        .flat_map(|e| e.addresses.iter().cloned())
        .collect();
    ips.sort();
    Ok(ips)
}

/// Which data site holds the master, as the Services and labels say.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Layout {
    master: &'static str,
    replica: &'static str,
}

impl Layout {
    fn flipped(self) -> Layout {
        Layout {
            master: self.replica,
            replica: self.master,
        }
    }
}

/// Wait until the agent of `ns` reports its Redis healthy and linked to the master.
async fn wait_in_sync(hub: &Handle, secret: &str, ns: &'static str) -> Result<(), String> {
    let addr = format!("{}:{AGENT_PORT}", pod_ip(ns));
    let secret = secret.to_string();
    hub.spawn(async move {
        let api = ApiClient::new(Some(secret.as_bytes()), Duration::from_secs(5))
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let last = api.state(&addr).await;
            if let Ok(view) = &last
                && view.is_healthy
                && view.master_link_up == Some(true)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the replica in {ns} is not in sync after 30 s: {last:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Progress of one move of the master towards `want`, each the first time it was seen.
#[derive(Default)]
struct Moved {
    redis: Option<Duration>,
    label: Option<Duration>,
    master_slices: Option<Duration>,
    readonly: Option<Duration>,
}

impl Moved {
    fn done(&self) -> bool {
        self.redis.is_some()
            && self.label.is_some()
            && self.master_slices.is_some()
            && self.readonly.is_some()
    }
}

/// One look at everything that routes to the master: `redis` (only in the master's site),
/// `redis-readonly` (only in the replica's), `redis-master` (the master everywhere), labels.
async fn observe(
    client: &Client,
    want: Layout,
    t0: Instant,
    moved: &mut Moved,
) -> Result<(), String> {
    let (m_ip, r_ip) = (
        pod_ip(want.master).to_string(),
        pod_ip(want.replica).to_string(),
    );
    let now = t0.elapsed();
    if moved.redis.is_none()
        && routed(client, want.master, "redis").await? == [m_ip.clone()]
        && routed(client, want.replica, "redis").await?.is_empty()
    {
        moved.redis = Some(now);
    }
    if moved.label.is_none() {
        let (m, r) = (
            only_pod(client, want.master).await?,
            only_pod(client, want.replica).await?,
        );
        if role(&m).as_deref() == Some("master") && role(&r).as_deref() == Some("replica") {
            moved.label = Some(now);
        }
    }
    if moved.master_slices.is_none() {
        let mut all = true;
        for ns in NAMESPACES {
            all &= routed(client, ns, "redis-master").await? == [m_ip.clone()];
        }
        if all {
            moved.master_slices = Some(now);
        }
    }
    if moved.readonly.is_none()
        && routed(client, want.replica, "redis-readonly").await? == [r_ip]
        && routed(client, want.master, "redis-readonly")
            .await?
            .is_empty()
    {
        moved.readonly = Some(now);
    }
    Ok(())
}

async fn wait_moved(
    client: &Client,
    want: Layout,
    t0: Instant,
    limit: Duration,
) -> Result<Moved, String> {
    let mut moved = Moved::default();
    while !moved.done() {
        if t0.elapsed() > limit {
            return Err(format!(
                "master not routed to {} within {limit:?}: redis {:?}, label {:?}, redis-master {:?}, redis-readonly {:?}",
                want.master, moved.redis, moved.label, moved.master_slices, moved.readonly
            ));
        }
        if let Err(e) = observe(client, want, t0, &mut moved).await {
            eprintln!("observe: {e}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(moved)
}

fn report(what: &str, m: &Moved) {
    let ms = |d: Option<Duration>| d.map_or(-1.0, |d| d.as_secs_f64() * 1000.0);
    eprintln!(
        "{what}: `redis` Service endpoints on the new master after {:.0} ms; old pod relabelled \
         replica (new one master) after {:.0} ms; every `redis-master` slice after {:.0} ms; \
         `redis-readonly` after {:.0} ms",
        ms(m.redis),
        ms(m.label),
        ms(m.master_slices),
        ms(m.readonly)
    );
}

async fn behaviour(
    client: &Client,
    kubelet: &Arc<Mutex<Kubelet>>,
    hub: &Handle,
) -> Result<(), String> {
    let t = Instant::now();
    let limit = Duration::from_secs(90);
    loop {
        let mut ready = 0;
        for ns in NAMESPACES {
            if only_pod(client, ns).await.is_ok_and(|p| is_ready(&p)) {
                ready += 1;
            }
        }
        if ready == NAMESPACES.len() {
            break;
        }
        if t.elapsed() > limit {
            return Err(format!("only {ready} of 3 pods Ready after {limit:?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "all three pods Ready (readiness probes passing) {:.1} s after the kubelet started",
        t.elapsed().as_secs_f64()
    );
    // The first election picks either data site; find it from the labels.
    let mut first = None;
    while first.is_none() {
        if t.elapsed() > limit {
            return Err("no data pod labelled master".into());
        }
        for (m, r) in [(NS_A, NS_B), (NS_B, NS_A)] {
            if only_pod(client, m)
                .await
                .is_ok_and(|p| role(&p).as_deref() == Some("master"))
            {
                first = Some(Layout {
                    master: m,
                    replica: r,
                });
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let layout = first.ok_or("no master")?;
    wait_moved(client, layout, Instant::now(), limit).await?;
    eprintln!(
        "routed: master in {}, replica in {}",
        layout.master, layout.replica
    );

    // Unplanned: SIGKILL of the master's redis-server, KILLS times, each once the other
    // site's replica is in sync again (else there is no one to fail over to).
    let secret = shared_secret(client).await?;
    let mut current = layout;
    let mut to_redis = Vec::new();
    for round in 1..=KILLS {
        wait_in_sync(hub, &secret, current.replica).await?;
        let master_pod = only_pod(client, current.master).await?;
        let name = master_pod.metadata.name.clone().unwrap_or_default();
        let pid = kubelet
            .lock()
            .await
            .pid(current.master, &name, "redis")
            .ok_or("the master's redis container is not running")?;
        let pid = i32::try_from(pid).map_err(|e| e.to_string())?;
        let t0 = Instant::now();
        // SAFETY: kill(2) has no memory effects; the pid is a child the kubelet started.
        if unsafe { libc::kill(pid, libc::SIGKILL) } != 0 {
            return Err(format!("kill {pid}: {}", std::io::Error::last_os_error()));
        }
        current = current.flipped();
        let moved = wait_moved(client, current, t0, Duration::from_secs(30)).await?;
        report(
            &format!("SIGKILL {round}/{KILLS} of the master's redis-server"),
            &moved,
        );
        to_redis.extend(moved.redis);
    }
    to_redis.sort();
    let ms = |d: &Duration| format!("{:.0}", d.as_secs_f64() * 1000.0);
    eprintln!(
        "SIGKILL -> `redis` Service endpoints on the new master, real EndpointSlice controller: \
         median {} ms, min {} ms, max {} ms over {} kills",
        to_redis.get(to_redis.len() / 2).map_or("-".into(), ms),
        to_redis.first().map_or("-".into(), ms),
        to_redis.last().map_or("-".into(), ms),
        to_redis.len()
    );

    // Planned: a signed POST /switchover to the witness, which forwards it to the leader.
    wait_in_sync(hub, &secret, current.replica).await?;
    let addr = format!("{}:{AGENT_PORT}", pod_ip(NS_C));
    // Refused (409) until the restarted Redis has caught up as a healthy replica; timed from
    // the request that is accepted.
    let (done, t0) = hub
        .spawn(async move {
            let api = ApiClient::new(Some(secret.as_bytes()), Duration::from_secs(30))
                .map_err(|e| e.to_string())?;
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut refusals = 0;
            loop {
                let sent = Instant::now();
                match api
                    .post::<SwitchoverDone>(&addr, "/switchover", &json!({}))
                    .await
                {
                    Ok(done) => {
                        eprintln!("switchover refused {refusals} times before it was accepted");
                        return Ok::<_, String>((done, sent));
                    }
                    Err(e) if Instant::now() < deadline => {
                        if refusals == 0 {
                            eprintln!("switchover not accepted yet: {e}");
                        }
                        refusals += 1;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(e) => return Err(format!("switchover: {e}")),
                }
            }
        })
        .await
        .map_err(|e| e.to_string())??;
    eprintln!(
        "switchover {} -> {} committed in {} ms",
        done.from, done.to, done.took_ms
    );
    let moved = wait_moved(client, current.flipped(), t0, Duration::from_secs(30)).await?;
    report("planned switchover", &moved);
    lb_service(client, kubelet, hub).await
}

/// The per-pod LoadBalancer Service's ingress IP. Inside the pod network: the replica of the
/// other site replicates from it, and the kubelet puts it on the pod's eth0 as the load
/// balancer would forward it there.
const LB_IP: Ipv4Addr = Ipv4Addr::new(10, 97, 0, 102);
/// The selector keys by which `--lb-service` recognises a Service of its own pod.
const POD_NAME_KEYS: [&str; 3] = ["statefulset.kubernetes.io/pod-name", "pod-name", "pod"];

/// `--lb-service` on site B: the manifests' per-pod LoadBalancer Service gets an ingress IP
/// (patched here, as a cloud controller would), site B's StatefulSet gets the flag, and the
/// restarted agent advertises that address instead of its pod IP.
async fn lb_service(
    client: &Client,
    kubelet: &Arc<Mutex<Kubelet>>,
    hub: &Handle,
) -> Result<(), String> {
    let ns = NS_B;
    let old = only_pod(client, ns).await?;
    let pod = old.metadata.name.clone().unwrap_or_default();
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let list = services
        .list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?;
    let mine: Vec<String> = list
        .items
        .iter()
        .filter(|s| s.spec.as_ref().and_then(|p| p.type_.as_deref()) == Some("LoadBalancer"))
        .filter(|s| {
            let selector = s.spec.as_ref().and_then(|p| p.selector.as_ref());
            POD_NAME_KEYS
                .iter()
                .any(|k| selector.and_then(|m| m.get(*k)) == Some(&pod))
        })
        .filter_map(|s| s.metadata.name.clone())
        .collect();
    let service = match mine.as_slice() {
        [one] => one.clone(),
        [] => {
            return Err(format!(
                "--lb-service: the manifests ship no LoadBalancer Service that selects pod {ns}/{pod} by name, so the flag has nothing to find"
            ));
        }
        many => return Err(format!("several per-pod LoadBalancer Services: {many:?}")),
    };
    services
        .patch_status(
            &service,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"loadBalancer": {"ingress": [{"ip": LB_IP.to_string()}]}}}),
            ),
        )
        .await
        .map_err(|e| format!("patch status of {ns}/{service}: {e}"))?;
    kubelet.lock().await.load_balancer(ns, LB_IP);
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    let set = sets.get("redis").await.map_err(|e| e.to_string())?;
    // Strategic merge: containers merge by name, and `args` is replaced whole.
    let mut args = set
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.containers.iter().find(|c| c.name == "orchestrator"))
        .and_then(|c| c.args.clone())
        .ok_or("no orchestrator container with args in site B's StatefulSet")?;
    args.push("--lb-service".into());
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "orchestrator", "args": args}]}}}});
    sets.patch("redis", &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .map_err(|e| format!("add --lb-service to {ns}/redis: {e}"))?;
    // The StatefulSet controller replaces the pod; the kubelet stops the old one.
    let old_uid = old.metadata.uid.clone().unwrap_or_default();
    let t = Instant::now();
    loop {
        let replaced = only_pod(client, ns)
            .await
            .is_ok_and(|p| p.metadata.uid.as_deref() != Some(&old_uid) && is_ready(&p));
        let running = kubelet
            .lock()
            .await
            .running_uid(ns, &pod)
            .is_some_and(|u| u != old_uid);
        if replaced && running {
            break;
        }
        if t.elapsed() > Duration::from_secs(60) {
            return Err(format!("{ns}/{pod} not replaced and Ready within 60 s"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let addr = format!("{}:{AGENT_PORT}", pod_ip(ns));
    let secret = shared_secret(client).await?;
    let view = hub
        .spawn(async move {
            let api = ApiClient::new(Some(secret.as_bytes()), Duration::from_secs(5))
                .map_err(|e| e.to_string())?;
            api.state(&addr).await.map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())??;
    let want = format!("{LB_IP}:6379");
    if view.redis_addr.as_deref() != Some(want.as_str()) {
        return Err(format!(
            "with --lb-service the agent advertises {:?}, not {want} from Service {service}",
            view.redis_addr
        ));
    }
    eprintln!(
        "--lb-service: {ns}/{pod} restarted with the flag in {:.1} s and advertises {want} \
         (the ingress IP of Service {service})",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn shared_secret(client: &Client) -> Result<String, String> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS_C);
    let s = secrets
        .get("redis-secret")
        .await
        .map_err(|e| e.to_string())?;
    let bytes = s
        .data
        .and_then(|d| d.get("shared-secret").cloned())
        .ok_or("redis-secret has no shared-secret")?;
    String::from_utf8(bytes.0).map_err(|e| e.to_string())
}

/// Every agent ran as its ServiceAccount with the Kubernetes integration on, and none of its
/// API calls was refused (403), aimed at something missing (404) or invalid (422).
fn agent_calls_accepted(kubelet: &Kubelet) -> Result<(), String> {
    let mut refused = Vec::new();
    let mut agents = 0;
    for (ns, pod, c) in kubelet.containers() {
        if c.name != "orchestrator" {
            continue;
        }
        agents += 1;
        let text = std::fs::read_to_string(&c.log).map_err(|e| e.to_string())?;
        if !text.contains("Kubernetes integration on") {
            return Err(format!(
                "{ns}/{pod}: the agent never turned the Kubernetes integration on"
            ));
        }
        refused.extend(
            text.lines()
                .filter(|l| {
                    ["HTTP 403", "HTTP 404", "HTTP 422"]
                        .iter()
                        .any(|c| l.contains(c))
                })
                .map(|l| format!("{ns}/{pod}: {l}")),
        );
    }
    if agents != 3 {
        return Err(format!("{agents} agents ran, expected 3"));
    }
    if !refused.is_empty() {
        return Err(format!("API calls refused:\n{}", refused.join("\n")));
    }
    eprintln!("3 agents ran as their ServiceAccount; no API call answered 403, 404 or 422");
    Ok(())
}

/// The API server's audit log: every request made with a token of the manifests'
/// ServiceAccount was accepted. The one 404 allowed is the GET of the redis-master
/// EndpointSlice before the agent first creates it.
fn audited_calls_accepted(plane: &ControlPlane) -> Result<(), String> {
    let path = plane.dir().join("logs/audit.log");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let suffix = format!(":{SERVICE_ACCOUNT}");
    let mut calls: std::collections::BTreeMap<String, usize> = Default::default();
    let mut refused = Vec::new();
    for line in text.lines() {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let user = event["user"]["username"].as_str().unwrap_or("");
        if !(user.starts_with("system:serviceaccount:") && user.ends_with(&suffix)) {
            continue;
        }
        let verb = event["verb"].as_str().unwrap_or("?");
        let object = &event["objectRef"];
        let resource = match (object["resource"].as_str(), object["subresource"].as_str()) {
            (Some(r), Some(sub)) => format!("{r}/{sub}"),
            (Some(r), None) => r.to_string(),
            (None, _) => event["requestURI"].as_str().unwrap_or("?").to_string(),
        };
        let code = event["responseStatus"]["code"].as_u64().unwrap_or(0);
        *calls.entry(format!("{verb} {resource}")).or_default() += 1;
        let absent_slice = code == 404 && verb == "get" && resource == "endpointslices";
        if matches!(code, 403 | 404 | 422) && !absent_slice {
            refused.push(format!(
                "{user}: {verb} {} -> {code}",
                event["requestURI"].as_str().unwrap_or("?")
            ));
        }
    }
    if calls.is_empty() {
        return Err("the audit log holds no request of the agents' ServiceAccounts".into());
    }
    let summary: Vec<String> = calls.iter().map(|(k, n)| format!("{k} x{n}")).collect();
    if !refused.is_empty() {
        return Err(format!(
            "audit log: requests of the agents' ServiceAccounts refused:\n{}",
            refused.join("\n")
        ));
    }
    eprintln!(
        "audit log: every request of the agents' ServiceAccounts accepted: {}",
        summary.join(", ")
    );
    Ok(())
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
