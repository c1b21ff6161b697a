//! The Kubernetes adapter against a mocked API server (`tower_test::mock::pair`, the way
//! kube-client tests itself): every request's method, path, query, content type and body is
//! compared with the exact expected one, and also checked against the RBAC rules the
//! manifests grant (`REQUIRED_PERMISSIONS`). Time is paused where the adapter waits, so
//! retries and timeouts run instantly.

use std::time::Duration;

use http::{Request, Response};
use kube::client::Body;
use redis_orchestrator::config::KubernetesMode;
use redis_orchestrator::kube::client::{build_client, check_apis};
use redis_orchestrator::kube::{
    ClusterApi, KubeAdapter, KubeError, KubeSettings, PodSummary, REQUIRED_PERMISSIONS, USER_AGENT,
    Wait,
};
use redis_orchestrator::model::RedisRole;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tower_test::mock;

const NS: &str = "redis-multisite-a";
const POD: &str = "redis-0";
const UID: &str = "7d3c1a52-0b1e-4c55-9d0e-2f8f1f7b6a11";
const POD_IP: &str = "10.244.1.7";
const POD_URI: &str = "/api/v1/namespaces/redis-multisite-a/pods/redis-0";
const PATCH_URI: &str =
    "/api/v1/namespaces/redis-multisite-a/pods/redis-0?&fieldManager=redis-orchestrator";
const SLICES_URI: &str = "/apis/discovery.k8s.io/v1/namespaces/redis-multisite-a/endpointslices";
const SLICE_URI: &str =
    "/apis/discovery.k8s.io/v1/namespaces/redis-multisite-a/endpointslices/redis-master";
// kube-client leaves the "?" of an empty query in place.
const SERVICES_URI: &str = "/api/v1/namespaces/redis-multisite-a/services?";
const MERGE_PATCH: &str = "application/merge-patch+json";
const JSON: &str = "application/json";

type Handle = mock::Handle<Request<Body>, Response<Body>>;
type Responder = mock::SendResponse<Response<Body>>;

enum Reply {
    Json(u16, Value),
    /// A watch answer: one JSON event per line, then the end of the stream.
    Events(Vec<Value>),
    /// Never answer (the responder is kept alive, so the client sees no error, only silence).
    Hang,
}

/// One expected request and the scripted answer.
struct Exchange {
    method: &'static str,
    uri: String,
    content_type: Option<&'static str>,
    body: Option<Value>,
    reply: Reply,
}

impl Exchange {
    fn get(uri: &str) -> Exchange {
        Exchange {
            method: "GET",
            uri: uri.to_string(),
            content_type: None,
            body: None,
            reply: Reply::Json(200, json!({})),
        }
    }

    fn write(method: &'static str, uri: &str, content_type: &'static str, body: Value) -> Exchange {
        Exchange {
            method,
            uri: uri.to_string(),
            content_type: Some(content_type),
            body: Some(body),
            reply: Reply::Json(200, json!({})),
        }
    }

    fn reply(mut self, code: u16, body: Value) -> Exchange {
        self.reply = Reply::Json(code, body);
        self
    }

    fn reply_events(mut self, events: Vec<Value>) -> Exchange {
        self.reply = Reply::Events(events);
        self
    }

    fn hang(mut self) -> Exchange {
        self.reply = Reply::Hang;
        self
    }
}

/// The RBAC verb and resource a request needs, from its method and path.
fn rbac_of(method: &str, path: &str) -> (String, String, String) {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", "v1", rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => panic!("unexpected API path {path}"),
    };
    let (resource, named) = match rest {
        ["namespaces", ns, resource, name] => {
            assert_eq!(*ns, NS, "every call stays in the own namespace");
            (*resource, !name.is_empty())
        }
        ["namespaces", ns, resource] => {
            assert_eq!(*ns, NS, "every call stays in the own namespace");
            (*resource, false)
        }
        _ => panic!("not a namespaced resource path: {path}"),
    };
    let verb = match (method, named) {
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("PATCH", _) => "patch",
        ("PUT", _) => "update",
        ("POST", _) => "create",
        ("DELETE", _) => "delete",
        other => panic!("unexpected method {other:?}"),
    };
    (group.to_string(), resource.to_string(), verb.to_string())
}

/// Discovery documents, readable by every account (the default system:discovery role).
fn is_discovery(path: &str) -> bool {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    matches!(parts.as_slice(), ["api", _] | ["apis", _, _])
}

fn assert_permitted(method: &str, path: &str, query: &str) {
    if is_discovery(path) {
        assert_eq!(method, "GET", "discovery is read-only");
        return;
    }
    let (group, resource, mut verb) = rbac_of(method, path);
    if query.split('&').any(|kv| kv == "watch=true") {
        verb = "watch".to_string();
    }
    let granted = REQUIRED_PERMISSIONS.iter().any(|p| {
        p.api_group == group && p.resource == resource && p.verbs.contains(&verb.as_str())
    });
    assert!(
        granted,
        "{method} {path} needs {verb} on {group}/{resource}, which the Role does not grant"
    );
}

/// Answer `script` in order, asserting each request; return the handle (to check that no
/// further request comes) and the responders of requests left hanging.
fn serve(mut handle: Handle, script: Vec<Exchange>) -> JoinHandle<(Handle, Vec<Responder>)> {
    tokio::spawn(async move {
        let mut hanging = Vec::new();
        for (i, ex) in script.into_iter().enumerate() {
            let Some((request, respond)) = handle.next_request().await else {
                panic!("request {i} ({} {}) never came", ex.method, ex.uri);
            };
            let (parts, body) = request.into_parts();
            let uri = parts
                .uri
                .path_and_query()
                .map(|pq| pq.as_str().to_string())
                .unwrap_or_default();
            assert_eq!(
                (parts.method.as_str(), uri.as_str()),
                (ex.method, ex.uri.as_str()),
                "request {i}"
            );
            assert_permitted(
                parts.method.as_str(),
                parts.uri.path(),
                parts.uri.query().unwrap_or_default(),
            );
            let content_type = parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok());
            assert_eq!(content_type, ex.content_type, "content type of request {i}");
            let bytes = body.collect_bytes().await.expect("request body");
            match &ex.body {
                Some(want) => {
                    let got: Value = serde_json::from_slice(&bytes).expect("JSON request body");
                    assert_eq!(&got, want, "body of request {i} ({} {})", ex.method, ex.uri);
                }
                None => assert!(bytes.is_empty(), "request {i} must have no body"),
            }
            match ex.reply {
                Reply::Json(code, body) => {
                    let response = Response::builder()
                        .status(code)
                        .header(http::header::CONTENT_TYPE, JSON)
                        .body(Body::from(serde_json::to_vec(&body).expect("serialize")))
                        .expect("response");
                    respond.send_response(response);
                }
                Reply::Events(events) => {
                    let mut lines = Vec::new();
                    for event in events {
                        lines.extend(serde_json::to_vec(&event).expect("serialize"));
                        lines.push(b'\n');
                    }
                    let response = Response::builder()
                        .status(200)
                        .header(http::header::CONTENT_TYPE, JSON)
                        .body(Body::from(lines))
                        .expect("response");
                    respond.send_response(response);
                }
                Reply::Hang => hanging.push(respond),
            }
        }
        (handle, hanging)
    })
}

/// Wait for the script, drop the adapter, and check it sent nothing more.
async fn finish(server: JoinHandle<(Handle, Vec<Responder>)>, adapter: KubeAdapter) {
    let (mut handle, hanging) = server.await.expect("mock server");
    drop(adapter);
    drop(hanging);
    if let Some((request, _)) = handle.next_request().await {
        panic!("unexpected request {} {}", request.method(), request.uri());
    }
}

fn mock_client() -> (kube::Client, Handle) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(service, NS), handle)
}

fn settings() -> KubeSettings {
    KubeSettings {
        mode: KubernetesMode::On,
        pod_name: POD.to_string(),
        namespace: NS.to_string(),
        label_selector: "app=redis".to_string(),
        lb_service: false,
        master_endpoints_service: Some("redis-master".to_string()),
        token_path: "/nonexistent/serviceaccount/token".into(),
        request_timeout: Duration::from_secs(5),
        pod_ip_wait: Wait {
            attempts: 3,
            interval: Duration::from_secs(1),
        },
        lb_wait: Wait {
            attempts: 3,
            interval: Duration::from_secs(5),
        },
        resync: Duration::from_secs(60),
    }
}

fn pod(role: Option<&str>, ip: Option<&str>) -> Value {
    let mut labels = json!({"app": "redis", "site": "site-a"});
    if let Some(role) = role {
        labels["redis-role"] = json!(role);
    }
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": POD, "namespace": NS, "uid": UID, "labels": labels},
        "status": {"phase": "Running"}
    });
    if let Some(ip) = ip {
        pod["status"]["podIP"] = json!(ip);
    }
    pod
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code
    })
}

fn label_patch(role: Option<&str>) -> Value {
    json!({"metadata": {"uid": UID, "labels": {"redis-role": role}}})
}

/// Connect with the own pod carrying `role`, answering the start-up read.
async fn connected(
    settings: KubeSettings,
    role: Option<&str>,
    script: Vec<Exchange>,
) -> (KubeAdapter, JoinHandle<(Handle, Vec<Responder>)>) {
    let (client, handle) = mock_client();
    let mut full = vec![Exchange::get(POD_URI).reply(200, pod(role, Some(POD_IP)))];
    full.extend(script);
    let server = serve(handle, full);
    let adapter = KubeAdapter::connect(client, settings)
        .await
        .expect("connect");
    (adapter, server)
}

// === start-up ===

#[tokio::test(start_paused = true)]
async fn connect_reads_the_own_pod_and_waits_for_its_ip() {
    let (client, handle) = mock_client();
    let server = serve(
        handle,
        vec![
            Exchange::get(POD_URI).reply(200, pod(None, None)),
            Exchange::get(POD_URI).reply(500, status(500, "InternalError", "etcd timeout")),
            Exchange::get(POD_URI).reply(200, pod(Some("replica"), Some(POD_IP))),
        ],
    );
    let adapter = KubeAdapter::connect(client, settings())
        .await
        .expect("connect");
    let info = adapter.pod_info().clone();
    assert_eq!(
        (
            info.name.as_str(),
            info.namespace.as_str(),
            info.uid.as_str(),
            info.ip.as_str()
        ),
        (POD, NS, UID, POD_IP)
    );
    finish(server, adapter).await;
}

#[tokio::test(start_paused = true)]
async fn connect_gives_up_without_a_pod_ip_and_on_refusals() {
    let (client, handle) = mock_client();
    let script = (0..3)
        .map(|_| Exchange::get(POD_URI).reply(200, pod(None, None)))
        .collect();
    let server = serve(handle, script);
    let e = KubeAdapter::connect(client, settings())
        .await
        .err()
        .expect("no IP");
    assert!(
        matches!(e, KubeError::PodIpMissing { attempts: 3, .. }),
        "{e}"
    );
    let (mut handle, _) = server.await.expect("server");
    assert!(handle.next_request().await.is_none());

    // 403 needs a human (RBAC): no retry.
    let (client, handle) = mock_client();
    let server = serve(
        handle,
        vec![Exchange::get(POD_URI).reply(
            403,
            status(403, "Forbidden", "pods \"redis-0\" is forbidden"),
        )],
    );
    let e = KubeAdapter::connect(client, settings())
        .await
        .err()
        .expect("forbidden");
    assert_eq!(e.status_code(), Some(403));
    assert!(
        e.to_string().contains("get pod redis-multisite-a/redis-0"),
        "{e}"
    );
    let (mut handle, _) = server.await.expect("server");
    assert!(handle.next_request().await.is_none());
}

#[tokio::test]
async fn detect_is_off_outside_a_cluster_and_needs_the_pod_identity() {
    let mut s = settings();
    s.mode = KubernetesMode::Off;
    assert!(KubeAdapter::detect(&s).await.expect("off").is_none());
    s.mode = KubernetesMode::Auto;
    assert!(
        KubeAdapter::detect(&s).await.expect("no token").is_none(),
        "auto without a service-account token means not in Kubernetes"
    );

    s.mode = KubernetesMode::On;
    s.pod_name.clear();
    let e = KubeAdapter::detect(&s).await.err().expect("no pod name");
    assert!(
        matches!(
            e,
            KubeError::MissingIdentity {
                env: "POD_NAME",
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("metadata.name"), "{e}");

    let mut s = settings();
    s.namespace.clear();
    let e = KubeAdapter::detect(&s).await.err().expect("no namespace");
    assert!(e.to_string().contains("POD_NAMESPACE"), "{e}");

    let (client, mut handle) = mock_client();
    let e = KubeAdapter::connect(client, s)
        .await
        .err()
        .expect("connect checks the identity too");
    assert!(matches!(e, KubeError::MissingIdentity { .. }));
    assert!(handle.next_request().await.is_none(), "no request was made");
}

// === role label ===

#[tokio::test(start_paused = true)]
async fn label_is_a_merge_patch_and_no_call_when_already_right() {
    assert_eq!(RedisRole::Master.to_string(), "master", "the label value");
    let (adapter, server) = connected(
        settings(),
        Some("replica"),
        vec![
            Exchange::write("PATCH", PATCH_URI, MERGE_PATCH, label_patch(Some("master")))
                .reply(200, pod(Some("master"), Some(POD_IP))),
            Exchange::write("PATCH", PATCH_URI, MERGE_PATCH, label_patch(None))
                .reply(200, pod(None, Some(POD_IP))),
        ],
    )
    .await;
    // Already replica (read at start-up): nothing is sent.
    adapter
        .ensure_role_label(Some(RedisRole::Replica))
        .await
        .expect("no-op");
    adapter
        .ensure_role_label(Some(RedisRole::Master))
        .await
        .expect("patched");
    for _ in 0..3 {
        adapter
            .ensure_role_label(Some(RedisRole::Master))
            .await
            .expect("cached");
    }
    // None removes the label with a null in the merge patch.
    adapter.ensure_role_label(None).await.expect("removed");
    adapter.ensure_role_label(None).await.expect("cached");
    finish(server, adapter).await;
}

#[tokio::test(start_paused = true)]
async fn label_errors_are_returned_and_the_next_call_retries() {
    let patch = || Exchange::write("PATCH", PATCH_URI, MERGE_PATCH, label_patch(Some("master")));
    let (adapter, server) = connected(
        settings(),
        Some("replica"),
        vec![
            patch().reply(409, status(409, "Conflict", "the object has been modified")),
            patch().reply(
                500,
                status(500, "InternalError", "etcdserver: request timed out"),
            ),
            patch().hang(),
            patch().reply(502, json!("<html>bad gateway</html>")),
            patch().reply(200, pod(Some("master"), Some(POD_IP))),
        ],
    )
    .await;
    let api: &dyn ClusterApi = &adapter;
    let e = api
        .ensure_role_label(Some(RedisRole::Master))
        .await
        .expect_err("409");
    assert_eq!(e.status_code(), Some(409));
    assert!(e.to_string().contains("patch pod redis-0"), "{e}");
    let e = api
        .ensure_role_label(Some(RedisRole::Master))
        .await
        .expect_err("500");
    assert_eq!(e.status_code(), Some(500));
    let e = api
        .ensure_role_label(Some(RedisRole::Master))
        .await
        .expect_err("timeout");
    assert!(matches!(e, KubeError::Timeout { .. }), "{e}");
    assert!(e.is_transient());
    let e = api
        .ensure_role_label(Some(RedisRole::Master))
        .await
        .expect_err("non-JSON 502 from a proxy");
    assert_eq!(e.status_code(), Some(502));
    api.ensure_role_label(Some(RedisRole::Master))
        .await
        .expect("retried");
    api.ensure_role_label(Some(RedisRole::Master))
        .await
        .expect("now right: no call");
    finish(server, adapter).await;
}

#[tokio::test(start_paused = true)]
async fn label_is_read_again_after_resync_and_repaired() {
    let (adapter, server) = connected(
        settings(),
        Some("master"),
        vec![
            // Someone relabelled the pod by hand meanwhile.
            Exchange::get(POD_URI).reply(200, pod(Some("replica"), Some(POD_IP))),
            Exchange::write("PATCH", PATCH_URI, MERGE_PATCH, label_patch(Some("master")))
                .reply(200, pod(Some("master"), Some(POD_IP))),
            Exchange::get(POD_URI).reply(200, pod(Some("master"), Some(POD_IP))),
        ],
    )
    .await;
    adapter
        .ensure_role_label(Some(RedisRole::Master))
        .await
        .expect("fresh: no call");
    tokio::time::advance(Duration::from_secs(61)).await;
    adapter
        .ensure_role_label(Some(RedisRole::Master))
        .await
        .expect("repaired");
    tokio::time::advance(Duration::from_secs(61)).await;
    adapter
        .ensure_role_label(Some(RedisRole::Master))
        .await
        .expect("read, already right: no write");
    finish(server, adapter).await;
}

// === master endpoints ===

fn slice_body(epoch: u64, ip: &str, port: u16, metadata_extra: Value) -> Value {
    let mut metadata = json!({
        "name": "redis-master",
        "labels": {
            "kubernetes.io/service-name": "redis-master",
            "endpointslice.kubernetes.io/managed-by": "redis-orchestrator"
        },
        "annotations": {"redis-orchestrator/epoch": epoch.to_string()}
    });
    if let (Some(m), Some(extra)) = (metadata.as_object_mut(), metadata_extra.as_object()) {
        for (k, v) in extra {
            m.insert(k.clone(), v.clone());
        }
    }
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": metadata,
        "addressType": if ip.contains(':') { "IPv6" } else { "IPv4" },
        "endpoints": [{"addresses": [ip], "conditions": {"ready": true}}],
        "ports": [{"name": "redis", "port": port, "protocol": "TCP"}]
    })
}

fn stored_slice(epoch: u64, ip: &str, version: &str) -> Value {
    slice_body(
        epoch,
        ip,
        6379,
        json!({"namespace": NS, "resourceVersion": version, "uid": "slice-uid"}),
    )
}

#[tokio::test(start_paused = true)]
async fn master_endpoints_are_created_when_missing() {
    let created = slice_body(4, "10.244.2.9", 6379, json!({}));
    let (adapter, server) = connected(
        settings(),
        Some("replica"),
        vec![
            Exchange::get(SLICE_URI).reply(
                404,
                status(404, "NotFound", "endpointslices \"redis-master\" not found"),
            ),
            Exchange::write(
                "POST",
                &format!("{SLICES_URI}?&fieldManager=redis-orchestrator"),
                JSON,
                created.clone(),
            )
            .reply(201, stored_slice(4, "10.244.2.9", "100")),
        ],
    )
    .await;
    adapter
        .ensure_master_endpoints(4, "10.244.2.9", 6379)
        .await
        .expect("created");
    adapter
        .ensure_master_endpoints(4, "10.244.2.9", 6379)
        .await
        .expect("already right: no call");
    finish(server, adapter).await;
}

#[tokio::test(start_paused = true)]
async fn master_endpoints_follow_a_newer_epoch_with_optimistic_locking() {
    let put_uri = format!("{SLICE_URI}?&fieldManager=redis-orchestrator");
    let replaced = stored_slice(5, "10.245.0.4", "41");
    let (adapter, server) = connected(
        settings(),
        Some("replica"),
        vec![
            Exchange::get(SLICE_URI).reply(200, stored_slice(4, "10.244.2.9", "41")),
            // The resourceVersion just read makes a concurrent writer's change a 409.
            Exchange::write("PUT", &put_uri, JSON, replaced.clone())
                .reply(409, status(409, "Conflict", "the object has been modified")),
            Exchange::get(SLICE_URI).reply(200, stored_slice(4, "10.244.2.9", "41")),
            Exchange::write("PUT", &put_uri, JSON, replaced.clone())
                .reply(200, stored_slice(5, "10.245.0.4", "42")),
            // Same epoch, the master's pod came back with a new IP: follow it.
            Exchange::get(SLICE_URI).reply(200, stored_slice(5, "10.245.0.4", "42")),
            Exchange::write("PUT", &put_uri, JSON, stored_slice(5, "10.245.0.8", "42"))
                .reply(200, stored_slice(5, "10.245.0.8", "43")),
        ],
    )
    .await;
    let e = adapter
        .ensure_master_endpoints(5, "10.245.0.4", 6379)
        .await
        .expect_err("conflict");
    assert_eq!(e.status_code(), Some(409));
    adapter
        .ensure_master_endpoints(5, "10.245.0.4", 6379)
        .await
        .expect("retried");
    adapter
        .ensure_master_endpoints(5, "10.245.0.4", 6379)
        .await
        .expect("cached");
    adapter
        .ensure_master_endpoints(5, "10.245.0.8", 6379)
        .await
        .expect("new address");
    finish(server, adapter).await;
}

#[tokio::test(start_paused = true)]
async fn master_endpoints_never_go_back_to_an_older_epoch() {
    let (adapter, server) = connected(
        settings(),
        Some("replica"),
        vec![
            Exchange::get(SLICE_URI).reply(200, stored_slice(7, "10.245.0.4", "50")),
            // A newer epoch than the stored one is written again.
            Exchange::get(SLICE_URI).reply(200, stored_slice(7, "10.245.0.4", "50")),
            Exchange::write(
                "PUT",
                &format!("{SLICE_URI}?&fieldManager=redis-orchestrator"),
                JSON,
                stored_slice(8, "10.244.2.9", "50"),
            )
            .reply(200, stored_slice(8, "10.244.2.9", "51")),
        ],
    )
    .await;
    // This agent lags behind (epoch 6): it must leave epoch 7 in place.
    adapter
        .ensure_master_endpoints(6, "10.244.2.9", 6379)
        .await
        .expect("left alone");
    adapter
        .ensure_master_endpoints(6, "10.244.2.9", 6379)
        .await
        .expect("known newer: no call");
    adapter
        .ensure_master_endpoints(8, "10.244.2.9", 6379)
        .await
        .expect("newer than stored");
    finish(server, adapter).await;
}

#[tokio::test(start_paused = true)]
async fn master_endpoints_no_write_when_already_right_or_disabled() {
    let (adapter, server) = connected(
        settings(),
        Some("replica"),
        vec![
            Exchange::get(SLICE_URI).reply(200, stored_slice(3, "10.244.2.9", "9")),
            // After the resync period the slice is read again (someone may have deleted it).
            Exchange::get(SLICE_URI).reply(200, stored_slice(3, "10.244.2.9", "9")),
        ],
    )
    .await;
    adapter
        .ensure_master_endpoints(3, "10.244.2.9", 6379)
        .await
        .expect("right");
    adapter
        .ensure_master_endpoints(3, "10.244.2.9", 6379)
        .await
        .expect("cached");
    tokio::time::advance(Duration::from_secs(61)).await;
    adapter
        .ensure_master_endpoints(3, "10.244.2.9", 6379)
        .await
        .expect("read again, still right");
    let e = adapter
        .ensure_master_endpoints(3, "redis-0.redis-headless", 6379)
        .await
        .expect_err("a hostname is not an endpoint address");
    assert!(matches!(e, KubeError::InvalidAddress(_)));
    finish(server, adapter).await;

    let mut disabled = settings();
    disabled.master_endpoints_service = None;
    let (adapter, server) = connected(disabled, Some("replica"), vec![]).await;
    adapter
        .ensure_master_endpoints(3, "10.244.2.9", 6379)
        .await
        .expect("disabled: no call");
    finish(server, adapter).await;
}

#[tokio::test(start_paused = true)]
async fn master_endpoints_for_an_ipv6_master() {
    let (adapter, server) = connected(
        settings(),
        Some("replica"),
        vec![
            Exchange::get(SLICE_URI).reply(404, status(404, "NotFound", "not found")),
            Exchange::write(
                "POST",
                &format!("{SLICES_URI}?&fieldManager=redis-orchestrator"),
                JSON,
                slice_body(1, "fd00::12", 6380, json!({})),
            )
            .reply(
                201,
                slice_body(1, "fd00::12", 6380, json!({"resourceVersion": "1"})),
            ),
        ],
    )
    .await;
    adapter
        .ensure_master_endpoints(1, "fd00::12", 6380)
        .await
        .expect("created");
    finish(server, adapter).await;
}

// === LoadBalancer discovery ===

fn lb_settings() -> KubeSettings {
    KubeSettings {
        lb_service: true,
        ..settings()
    }
}

fn service(name: &str, kind: &str, selector: Value, ingress: Option<Value>) -> Value {
    let mut svc = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"type": kind, "selector": selector, "ports": [{"name": "redis", "port": 6379}]},
        "status": {"loadBalancer": {}}
    });
    if let Some(ingress) = ingress {
        svc["status"]["loadBalancer"]["ingress"] = ingress;
    }
    svc
}

fn services(items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": "ServiceList", "metadata": {"resourceVersion": "1"}, "items": items})
}

fn list_services(items: Vec<Value>) -> Exchange {
    Exchange::get(SERVICES_URI).reply(200, services(items))
}

#[tokio::test(start_paused = true)]
async fn lb_ingress_ip_of_the_service_selecting_this_pod() {
    let (adapter, server) = connected(
        lb_settings(),
        None,
        vec![list_services(vec![
            // Selects the pod but is not a LoadBalancer.
            service(
                "redis-headless",
                "ClusterIP",
                json!({"statefulset.kubernetes.io/pod-name": POD}),
                None,
            ),
            // A LoadBalancer for every master: not this pod's own.
            service(
                "redis-master-lb",
                "LoadBalancer",
                json!({"app": "redis", "redis-role": "master"}),
                Some(json!([{"ip": "198.51.100.1"}])),
            ),
            service(
                "redis-0-lb",
                "LoadBalancer",
                json!({"statefulset.kubernetes.io/pod-name": POD}),
                Some(json!([{"ip": "203.0.113.10"}])),
            ),
        ])],
    )
    .await;
    let host = adapter.lb_advertise_host().await.expect("found");
    assert_eq!(host.as_deref(), Some("203.0.113.10"));
    finish(server, adapter).await;
}

#[tokio::test]
async fn lb_ingress_hostname_is_resolved() {
    let (adapter, server) = connected(
        lb_settings(),
        None,
        vec![list_services(vec![service(
            "redis-0-lb",
            "LoadBalancer",
            json!({"pod-name": POD}),
            Some(json!([{"hostname": "localhost"}])),
        )])],
    )
    .await;
    let host = adapter.lb_advertise_host().await.expect("found");
    assert_eq!(host.as_deref(), Some("127.0.0.1"));
    finish(server, adapter).await;
}

#[tokio::test(start_paused = true)]
async fn lb_waits_for_the_ingress_then_uses_it() {
    let lb = |ingress| service("redis-0-lb", "LoadBalancer", json!({"pod": POD}), ingress);
    let (adapter, server) = connected(
        lb_settings(),
        None,
        vec![
            list_services(vec![]),
            list_services(vec![lb(None)]),
            list_services(vec![lb(Some(json!([{"ip": "203.0.113.77"}])))]),
        ],
    )
    .await;
    let started = tokio::time::Instant::now();
    let host = adapter.lb_advertise_host().await.expect("found");
    assert_eq!(host.as_deref(), Some("203.0.113.77"));
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(10),
        "two waits of 5 s"
    );
    finish(server, adapter).await;
}

#[tokio::test(start_paused = true)]
async fn lb_gives_up_when_no_ingress_appears() {
    let lb = service(
        "redis-0-lb",
        "LoadBalancer",
        json!({"statefulset.kubernetes.io/pod-name": POD}),
        None,
    );
    let (adapter, server) = connected(
        lb_settings(),
        None,
        (0..3).map(|_| list_services(vec![lb.clone()])).collect(),
    )
    .await;
    let e = adapter.lb_advertise_host().await.expect_err("pending");
    assert!(
        matches!(&e, KubeError::LoadBalancerPending { service, attempts: 3 } if service == "redis-0-lb"),
        "{e}"
    );
    finish(server, adapter).await;
}

#[tokio::test(start_paused = true)]
async fn lb_no_matching_service_and_selectors_without_the_pod_name() {
    let not_mine = vec![
        // Selects every data pod, but does not name this one.
        service(
            "redis-master-lb",
            "LoadBalancer",
            json!({"app": "redis", "site": "site-a"}),
            Some(json!([{"ip": "198.51.100.1"}])),
        ),
        // Names another pod.
        service(
            "redis-1-lb",
            "LoadBalancer",
            json!({"statefulset.kubernetes.io/pod-name": "redis-1"}),
            Some(json!([{"ip": "198.51.100.2"}])),
        ),
        // Names this pod under a key the adapter does not accept.
        service(
            "odd-lb",
            "LoadBalancer",
            json!({"name": POD}),
            Some(json!([{"ip": "198.51.100.3"}])),
        ),
    ];
    let (adapter, server) = connected(
        lb_settings(),
        None,
        (0..3).map(|_| list_services(not_mine.clone())).collect(),
    )
    .await;
    let e = adapter
        .lb_advertise_host()
        .await
        .expect_err("none selects the pod");
    assert!(matches!(e, KubeError::NoLoadBalancerService { .. }), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("redis-master-lb, redis-1-lb, odd-lb") && text.contains("pod redis-0"),
        "{text}"
    );
    finish(server, adapter).await;
}

#[tokio::test(start_paused = true)]
async fn lb_two_services_for_the_pod_is_an_error_and_off_means_no_call() {
    let (adapter, server) = connected(
        lb_settings(),
        None,
        vec![list_services(vec![
            service(
                "redis-0-lb",
                "LoadBalancer",
                json!({"statefulset.kubernetes.io/pod-name": POD}),
                Some(json!([{"ip": "203.0.113.10"}])),
            ),
            service(
                "redis-0-lb-2",
                "LoadBalancer",
                json!({"pod": POD}),
                Some(json!([{"ip": "203.0.113.11"}])),
            ),
        ])],
    )
    .await;
    let e = adapter.lb_advertise_host().await.expect_err("ambiguous");
    assert!(matches!(e, KubeError::AmbiguousLoadBalancer { .. }), "{e}");
    finish(server, adapter).await;

    let (adapter, server) = connected(settings(), None, vec![]).await;
    assert_eq!(adapter.lb_advertise_host().await.expect("off"), None);
    finish(server, adapter).await;
}

// === status view ===

#[tokio::test(start_paused = true)]
async fn list_pods_by_label_selector() {
    let mut ready = pod(Some("master"), Some(POD_IP));
    ready["status"]["conditions"] = json!([{"type": "Ready", "status": "True"}]);
    let mut other = pod(None, None);
    other["metadata"]["name"] = json!("redis-1");
    let (adapter, server) = connected(
        settings(),
        Some("master"),
        vec![Exchange::get(&format!(
            "/api/v1/namespaces/{NS}/pods?&labelSelector=app%3Dredis"
        ))
        .reply(
            200,
            json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [ready, other]}),
        )],
    )
    .await;
    let pods = adapter.list_pods().await.expect("listed");
    let labels = |role: Option<&str>| {
        let mut l: std::collections::BTreeMap<String, String> =
            [("app", "redis"), ("site", "site-a")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        if let Some(role) = role {
            l.insert("redis-role".into(), role.into());
        }
        l
    };
    assert_eq!(
        pods,
        vec![
            PodSummary {
                name: POD.into(),
                ip: Some(POD_IP.into()),
                labels: labels(Some("master")),
                ready: true,
            },
            PodSummary {
                name: "redis-1".into(),
                ip: None,
                labels: labels(None),
                ready: false,
            },
        ]
    );
    finish(server, adapter).await;
}

// === discovery at start-up ===

fn resources(group_version: &str, names: &[&str]) -> Value {
    let items: Vec<Value> = names
        .iter()
        .map(|n| {
            json!({"name": n, "singularName": "", "namespaced": true, "kind": "X", "verbs": ["get"]})
        })
        .collect();
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": items})
}

const CORE_DISCOVERY: &str = "/api/v1";
const SLICE_DISCOVERY: &str = "/apis/discovery.k8s.io/v1";

#[tokio::test]
async fn discovery_names_every_missing_api() {
    // Everything served: one look per group version.
    let (client, handle) = mock_client();
    let mut s = settings();
    s.lb_service = true;
    let server = serve(
        handle,
        vec![
            Exchange::get(CORE_DISCOVERY)
                .reply(200, resources("v1", &["pods", "pods/status", "services"])),
            Exchange::get(SLICE_DISCOVERY)
                .reply(200, resources("discovery.k8s.io/v1", &["endpointslices"])),
        ],
    );
    check_apis(&client, &s).await.expect("all served");
    let (mut handle, _) = server.await.expect("server");
    drop(client);
    assert!(handle.next_request().await.is_none());

    // Kubernetes 1.20: no discovery.k8s.io/v1 at all (404), and services left out.
    let (client, handle) = mock_client();
    let server = serve(
        handle,
        vec![
            Exchange::get(CORE_DISCOVERY).reply(200, resources("v1", &["pods"])),
            Exchange::get(SLICE_DISCOVERY)
                .reply(404, status(404, "NotFound", "404 page not found")),
        ],
    );
    let e = check_apis(&client, &s).await.expect_err("missing");
    let text = e.to_string();
    assert!(
        matches!(&e, KubeError::MissingApi { missing } if missing.len() == 2),
        "{text}"
    );
    assert!(
        text.contains("v1 services, needed by --lb-service"),
        "{text}"
    );
    assert!(
        text.contains(
            "discovery.k8s.io/v1 endpointslices, needed by --master-endpoints-service=redis-master"
        ),
        "{text}"
    );
    server.await.expect("server");

    // Without the flags that need them, neither is asked for.
    let (client, handle) = mock_client();
    let mut s = settings();
    s.master_endpoints_service = None;
    let server = serve(
        handle,
        vec![Exchange::get(CORE_DISCOVERY).reply(200, resources("v1", &["pods"]))],
    );
    check_apis(&client, &s).await.expect("pods only");
    let (mut handle, _) = server.await.expect("server");
    drop(client);
    assert!(handle.next_request().await.is_none());

    // A refusal is not "missing": it is reported as it is.
    let (client, handle) = mock_client();
    let server = serve(
        handle,
        vec![Exchange::get(CORE_DISCOVERY).reply(403, status(403, "Forbidden", "no"))],
    );
    let e = check_apis(&client, &settings()).await.expect_err("403");
    assert_eq!(e.status_code(), Some(403), "{e}");
    server.await.expect("server");
}

// === watch of the own pod ===

const WATCH_URI: &str = "/api/v1/namespaces/redis-multisite-a/pods?&watch=true&timeoutSeconds=290&fieldSelector=metadata.name%3Dredis-0&allowWatchBookmarks=true&resourceVersion=0";

#[tokio::test(start_paused = true)]
async fn a_label_removed_by_someone_else_is_seen_by_the_watch_and_repaired() {
    let (mut adapter, server) = connected(
        settings(),
        Some("master"),
        vec![
            Exchange::get(WATCH_URI).reply_events(vec![
                json!({"type": "ADDED", "object": pod(Some("master"), Some(POD_IP))}),
                json!({"type": "MODIFIED", "object": pod(None, Some(POD_IP))}),
            ]),
            // The server ended that watch: the next one starts at once.
            Exchange::get(WATCH_URI).hang(),
            Exchange::write("PATCH", PATCH_URI, MERGE_PATCH, label_patch(Some("master")))
                .reply(200, pod(Some("master"), Some(POD_IP))),
        ],
    )
    .await;
    adapter.watch_own_pod();
    // Let the watch task take both events (paused time only moves once every task idles).
    tokio::time::sleep(Duration::from_millis(100)).await;
    adapter
        .ensure_role_label(Some(RedisRole::Master))
        .await
        .expect("repaired well before the 60 s resync");
    adapter
        .ensure_role_label(Some(RedisRole::Master))
        .await
        .expect("right again: no call");
    finish(server, adapter).await;
}

#[tokio::test(start_paused = true)]
async fn a_refused_watch_is_retried_with_backoff() {
    let refused = || Exchange::get(WATCH_URI).reply(403, status(403, "Forbidden", "no watch verb"));
    let (mut adapter, server) = connected(
        settings(),
        Some("replica"),
        vec![
            refused(),
            refused(),
            refused(),
            Exchange::get(WATCH_URI).hang(),
        ],
    )
    .await;
    let started = tokio::time::Instant::now();
    adapter.watch_own_pod();
    let (handle, hanging) = server.await.expect("server");
    // 1 s, 2 s, 4 s between the tries: not a tight loop.
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(7) && waited < Duration::from_secs(8),
        "{waited:?}"
    );
    drop(adapter);
    drop(hanging);
    let mut handle = handle;
    assert!(handle.next_request().await.is_none());
}

// === the client: User-Agent and TLS errors, over real loopback sockets ===

/// Answer one HTTP request on `listener` with `body`; returns the request's head.
async fn answer_once(listener: tokio::net::TcpListener, body: Value) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut socket, _) = listener.accept().await.expect("accept");
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = socket.read(&mut buf).await.expect("read request");
        assert!(n > 0, "request cut short");
        head.extend_from_slice(&buf[..n]);
    }
    let body = serde_json::to_vec(&body).expect("serialize");
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    socket.write_all(response.as_bytes()).await.expect("write");
    socket.write_all(&body).await.expect("write body");
    String::from_utf8_lossy(&head).into_owned()
}

#[tokio::test]
async fn requests_carry_the_user_agent() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let server = tokio::spawn(answer_once(listener, pod(Some("replica"), Some(POD_IP))));
    let mut config = kube::Config::new(url.parse().expect("url"));
    config.default_namespace = NS.to_string();
    let client = build_client(config).expect("client");
    let adapter = KubeAdapter::connect(client, settings())
        .await
        .expect("connect");
    assert_eq!(adapter.pod_info().ip, POD_IP);
    let head = server.await.expect("server").to_ascii_lowercase();
    assert!(
        head.starts_with("get /api/v1/namespaces/redis-multisite-a/pods/redis-0 "),
        "{head}"
    );
    let want = format!("\r\nuser-agent: {}\r\n", USER_AGENT.to_ascii_lowercase());
    assert!(head.contains(&want), "{head}");
}

/// A serving certificate that is its own CA (what `openssl req -x509` makes by default, and
/// what a quick self-signed API server has) is refused by rustls; the error must say so.
#[tokio::test]
async fn a_refused_serving_certificate_is_named_in_the_error() {
    let have_openssl = std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_openssl {
        assert!(
            std::env::var_os("CI").is_none(),
            "openssl is needed for this test in CI"
        );
        eprintln!("skipped: no openssl to serve a self-signed certificate");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key, der) = (
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
        dir.path().join("cert.der"),
    );
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let path = |p: &std::path::Path| p.to_str().expect("utf-8 path").to_string();
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=127.0.0.1",
        "-addext",
        "subjectAltName=IP:127.0.0.1",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-keyout",
        &path(&key),
        "-out",
        &path(&cert),
    ]);
    openssl(&[
        "x509",
        "-in",
        &path(&cert),
        "-outform",
        "DER",
        "-out",
        &path(&der),
    ]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut server = std::process::Command::new("openssl")
        .args(["s_server", "-quiet", "-www", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-cert", &path(&cert), "-key", &path(&key)])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl s_server");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "s_server never listened"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut config = kube::Config::new(format!("https://127.0.0.1:{port}").parse().expect("url"));
    config.default_namespace = NS.to_string();
    config.root_cert = Some(vec![std::fs::read(&der).expect("der")]);
    let client = build_client(config).expect("client");
    let mut s = settings();
    s.pod_ip_wait.attempts = 1;
    let e = KubeAdapter::connect(client, s)
        .await
        .err()
        .expect("refused");
    let _ = server.kill();
    let _ = server.wait();
    let text = e.to_string();
    assert!(matches!(e, KubeError::Transport { .. }), "{text}");
    assert!(
        text.contains("invalid peer certificate") && text.contains("CaUsedAsEndEntity"),
        "the reason is named: {text}"
    );
}
