//! Three Raft nodes in one process talking signed HTTP through `PeerNetwork`.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use openraft::error::{InitializeError, RaftError};
use openraft::{BasicNode, ServerState};
use redis_orchestrator::auth::Verifier;
use redis_orchestrator::client::SignedClient;
use redis_orchestrator::consensus::{
    PeerNetwork, Raft, RpcKind, ServeRpcError, StateMachineStore, open_storage, serve_rpc,
};
use redis_orchestrator::http::SignatureGuard;
use redis_orchestrator::http::raft_rpc::{RaftPeer, router};
use redis_orchestrator::metrics::Metrics;
use redis_orchestrator::model::{CommandResponse, NodeId};
use redis_orchestrator::wire::Hello;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// Simulates a partition: every RPC gets 503 while `offline` is set.
async fn unless_offline(
    axum::extract::State(offline): axum::extract::State<Arc<AtomicBool>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if offline.load(Ordering::Relaxed) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    next.run(req).await
}

struct TestNode {
    id: NodeId,
    addr: String,
    raft: Raft,
    sm: StateMachineStore,
    net: PeerNetwork,
    offline: Arc<AtomicBool>,
    stop: Option<oneshot::Sender<()>>,
    _dir: TempDir,
}

impl TestNode {
    async fn kill(&mut self) {
        self.raft.shutdown().await.expect("shutdown");
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Start one node per secret, all initialized with the same full membership.
async fn start_cluster(secrets: &[&[u8]]) -> Vec<TestNode> {
    common::raft::install_crypto();
    let mut listeners = Vec::new();
    for _ in secrets {
        listeners.push(TcpListener::bind("127.0.0.1:0").await.expect("bind"));
    }
    let members: BTreeMap<NodeId, BasicNode> = listeners
        .iter()
        .zip(1..)
        .map(|(l, id)| {
            (
                id,
                BasicNode::new(l.local_addr().expect("addr").to_string()),
            )
        })
        .collect();

    let mut nodes = Vec::new();
    for ((listener, secret), id) in listeners.into_iter().zip(secrets).zip(1..) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, sm) = open_storage(dir.path()).await.expect("storage");
        let net = PeerNetwork::new(SignedClient::new(Some(secret), None).expect("client"));
        let raft = Raft::new(
            id,
            common::raft::fast_config(100, 400),
            net.clone(),
            log,
            sm.clone(),
        )
        .await
        .expect("raft");
        let offline = Arc::new(AtomicBool::new(false));
        // The production peer router, served over the bare Raft node.
        let peer = RaftPeer {
            raft: raft.clone(),
            hello: Hello {
                node: id,
                raft: None,
            },
        };
        let guard = SignatureGuard {
            verifier: Some(Arc::new(Verifier::new(secret))),
            metrics: Arc::new(Metrics::new()),
        };
        let app = router(Arc::new(peer), guard).layer(axum::middleware::from_fn_with_state(
            offline.clone(),
            unless_offline,
        ));
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        nodes.push(TestNode {
            id,
            addr: members[&id].addr.clone(),
            raft,
            sm,
            net,
            offline,
            stop: Some(stop),
            _dir: dir,
        });
    }
    for node in &nodes {
        // A node that already took a vote request from an initialized peer refuses
        // to initialize; it learns the same membership from that peer instead.
        match node.raft.initialize(members.clone()).await {
            Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
            Err(e) => panic!("initialize node {}: {e}", node.id),
        }
    }
    nodes
}

/// The one leader every live node agrees on.
async fn agreed_leader(nodes: &[&TestNode]) -> NodeId {
    common::raft::eventually(Duration::from_secs(10), "one agreed leader", || {
        let metrics: Vec<_> = nodes
            .iter()
            .map(|n| n.raft.metrics().borrow().clone())
            .collect();
        let leaders: Vec<NodeId> = metrics
            .iter()
            .filter(|m| m.state == ServerState::Leader)
            .map(|m| m.id)
            .collect();
        let [leader] = leaders[..] else { return None };
        metrics
            .iter()
            .all(|m| m.current_leader == Some(leader))
            .then_some(leader)
    })
    .await
}

async fn wait_applied(node: &TestNode, epoch: u64) {
    let mut rx = node.sm.subscribe();
    tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|s| s.epoch == epoch))
        .await
        .unwrap_or_else(|_| panic!("node {} never applied epoch {epoch}", node.id))
        .expect("state machine dropped");
}

async fn shutdown_all(nodes: &mut [TestNode]) {
    for node in nodes {
        if node.stop.is_some() {
            node.kill().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_replicate_and_fail_over() {
    let mut nodes = start_cluster(&[b"shared", b"shared", b"shared"]).await;
    let all: Vec<&TestNode> = nodes.iter().collect();
    let leader = agreed_leader(&all).await;

    let leader_node = &nodes[(leader - 1) as usize];
    for command in [
        common::raft::register(leader, &leader_node.addr),
        common::raft::set_master(leader, 1),
    ] {
        let written = leader_node.raft.client_write(command).await.expect("write");
        assert_eq!(written.data, CommandResponse::Applied);
    }
    for node in &nodes {
        wait_applied(node, 1).await;
        assert_eq!(node.sm.current().master, Some(leader));
    }

    nodes[(leader - 1) as usize].kill().await;
    let survivors: Vec<&TestNode> = nodes.iter().filter(|n| n.id != leader).collect();
    let next = agreed_leader(&survivors).await;
    assert_ne!(next, leader);

    let next_node = &nodes[(next - 1) as usize];
    next_node
        .raft
        .client_write(common::raft::register(next, &next_node.addr))
        .await
        .expect("register after failover");
    let written = next_node
        .raft
        .client_write(common::raft::set_master(next, 2))
        .await
        .expect("write after failover");
    assert_eq!(written.data, CommandResponse::Applied);
    for node in nodes.iter().filter(|n| n.id != leader) {
        wait_applied(node, 2).await;
    }
    for node in &nodes {
        assert!(node.net.rejected_peers().is_empty(), "node {}", node.id);
    }
    shutdown_all(&mut nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_node_catches_up_from_a_snapshot() {
    let mut nodes = start_cluster(&[b"shared", b"shared", b"shared"]).await;
    let all: Vec<&TestNode> = nodes.iter().collect();
    let leader = agreed_leader(&all).await;
    let leader_node = &nodes[(leader - 1) as usize];
    let lagging = nodes.iter().find(|n| n.id != leader).expect("a follower");

    lagging.offline.store(true, Ordering::Relaxed);
    let mut last = None;
    for command in [
        common::raft::register(leader, &leader_node.addr),
        common::raft::set_master(leader, 1),
    ] {
        let written = leader_node.raft.client_write(command).await.expect("write");
        assert_eq!(written.data, CommandResponse::Applied);
        // The write's own log id: metrics may not show it as applied yet.
        last = Some(written.log_id);
    }
    let last = last.expect("two writes");
    leader_node
        .raft
        .trigger()
        .snapshot()
        .await
        .expect("snapshot");
    leader_node
        .raft
        .wait(Some(Duration::from_secs(5)))
        .snapshot(last, "leader snapshot")
        .await
        .expect("snapshot built");
    leader_node
        .raft
        .trigger()
        .purge_log(last.index)
        .await
        .expect("purge");
    leader_node
        .raft
        .wait(Some(Duration::from_secs(5)))
        .purged(Some(last), "leader purged its log")
        .await
        .expect("purged");
    assert_eq!(lagging.sm.current().epoch, 0);

    // The entries are gone from the leader's log: only a snapshot can catch it up.
    lagging.offline.store(false, Ordering::Relaxed);
    wait_applied(lagging, 1).await;
    lagging
        .raft
        .wait(Some(Duration::from_secs(5)))
        .snapshot(last, "follower installed the snapshot")
        .await
        .expect("snapshot installed");
    assert_eq!(lagging.sm.current(), leader_node.sm.current());
    shutdown_all(&mut nodes).await;
}

/// Everything this test binary logs, so the 401 warning can be counted.
fn captured_logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        struct Capture;
        impl Write for Capture {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                captured_logs()
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let _ = tracing_subscriber::fmt()
            .with_env_filter("redis_orchestrator=warn")
            .with_ansi(false)
            .with_writer(|| Capture)
            .try_init();
        Mutex::new(Vec::new())
    })
}

fn warnings_about(addr: &str) -> usize {
    let logs = captured_logs().lock().unwrap_or_else(|p| p.into_inner());
    String::from_utf8_lossy(&logs)
        .lines()
        .filter(|l| l.contains("rejected our signature") && l.contains(&format!("peer {addr} ")))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_secret_never_joins() {
    captured_logs();
    let mut nodes = start_cluster(&[b"shared", b"shared", b"other"]).await;
    let pair: Vec<&TestNode> = nodes[..2].iter().collect();
    let leader = agreed_leader(&pair).await;

    let (a, b, odd) = (&nodes[0], &nodes[1], &nodes[2]);
    let mut expected = vec![a.addr.clone(), b.addr.clone()];
    expected.sort();
    common::raft::eventually(Duration::from_secs(10), "odd node sees both 401s", || {
        (odd.net.rejected_peers() == expected).then_some(())
    })
    .await;
    let leader_node = &nodes[(leader - 1) as usize];
    common::raft::eventually(
        Duration::from_secs(5),
        "leader sees the odd node's 401",
        || (leader_node.net.rejected_peers() == vec![odd.addr.clone()]).then_some(()),
    )
    .await;

    leader_node
        .raft
        .client_write(common::raft::register(leader, &leader_node.addr))
        .await
        .expect("write");
    leader_node
        .raft
        .client_write(common::raft::set_master(leader, 1))
        .await
        .expect("write");
    wait_applied(a, 1).await;
    wait_applied(b, 1).await;

    // Several more heartbeats and elections hit 401 meanwhile; none may warn again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let odd_metrics = odd.raft.metrics().borrow().clone();
    assert_eq!(odd_metrics.current_leader, None, "odd node found a leader");
    assert_ne!(odd_metrics.state, ServerState::Leader);
    assert_eq!(odd.sm.current().epoch, 0);
    assert_eq!(warnings_about(&a.addr), 1);
    assert_eq!(warnings_about(&b.addr), 1);
    let about_odd = warnings_about(&odd.addr);
    assert!(
        (1..=2).contains(&about_odd),
        "{about_odd} warnings about the odd node"
    );

    shutdown_all(&mut nodes).await;
}

#[tokio::test]
async fn garbage_requests_are_bad_requests() {
    common::raft::install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, sm) = open_storage(dir.path()).await.expect("storage");
    let net = PeerNetwork::new(SignedClient::new(None, None).expect("client"));
    let raft = Raft::new(1, common::raft::fast_config(100, 400), net, log, sm)
        .await
        .expect("raft");
    for kind in [RpcKind::Append, RpcKind::Vote, RpcKind::Snapshot] {
        for body in [
            &b"\xff\x00garbage"[..],
            b"",
            b"{}",
            b"[1,2,3]",
            b"{\"vote\":7}",
        ] {
            match serve_rpc(&raft, kind, body).await {
                Err(ServeRpcError::BadRequest(_)) => {}
                other => panic!("{kind:?} {body:?}: {other:?}"),
            }
        }
    }
    assert_eq!(RpcKind::from_path_segment("append"), Some(RpcKind::Append));
    assert_eq!(RpcKind::from_path_segment("vote"), Some(RpcKind::Vote));
    assert_eq!(
        RpcKind::from_path_segment("snapshot"),
        Some(RpcKind::Snapshot)
    );
    assert_eq!(RpcKind::from_path_segment("purge"), None);
    raft.shutdown().await.expect("shutdown");
}
