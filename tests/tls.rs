//! TLS on real processes (issue 11, items 1 and 2): the agents' two ports over HTTPS and
//! mTLS, certificate rotation without a restart, bad certificates refused at start-up,
//! and the agent's Redis adapter against a TLS-only redis-server with TLS replication.
//! Certificates are generated here for each test run; no key is ever committed.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{Cluster, SECRET, run_serial};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use redis_orchestrator::client::{ApiClient, SignedClient};
use redis_orchestrator::redis::client::RedisClient;
use redis_orchestrator::redis::{RedisConfig, RedisNode};
use redis_orchestrator::tls::TlsFiles;

const SETTLE: Duration = Duration::from_secs(30);

/// A test CA that signs certificates for 127.0.0.1 into files in its directory.
struct Pki {
    dir: tempfile::TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
    name: String,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key"))
            .expect("CA certificate");
        let pki = Pki {
            dir: tempfile::tempdir().expect("dir"),
            ca,
            name: name.to_string(),
        };
        std::fs::write(pki.ca_file(), pki.ca.pem()).expect("write CA");
        pki
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.path().join(format!("{}-ca.pem", self.name))
    }

    /// A server-and-client certificate for 127.0.0.1, written as `<file>.crt`/`.key`.
    fn issue(&self, file: &str) -> (PathBuf, PathBuf) {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{file} ({})", self.name));
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.ca).expect("sign");
        let (crt, key_path) = (
            self.dir.path().join(format!("{file}.crt")),
            self.dir.path().join(format!("{file}.key")),
        );
        std::fs::write(&crt, cert.pem()).expect("write cert");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        (crt, key_path)
    }

    fn files(&self, file: &str, client_auth: bool) -> TlsFiles {
        let (cert, key) = self.issue(file);
        TlsFiles {
            cert,
            key,
            ca: self.ca_file(),
            client_auth,
        }
    }
}

fn tls_args(files: &TlsFiles) -> Vec<String> {
    let mut args = vec![
        format!("--tls-cert-file={}", files.cert.display()),
        format!("--tls-key-file={}", files.key.display()),
        format!("--tls-ca-file={}", files.ca.display()),
    ];
    if files.client_auth {
        args.push("--tls-client-auth".to_string());
    }
    args
}

/// True if a GET /health reaches the agent and is answered 200.
async fn health(client: &SignedClient, addr: &str) -> Result<(), String> {
    client
        .call(
            reqwest::Method::GET,
            addr,
            "/health",
            None,
            Some(Duration::from_secs(2)),
        )
        .await
        .map(|_| ())
        .map_err(|e| format!("{e} ({e:?})"))
}

#[test]
fn cluster_forms_and_fails_over_over_mtls_and_refuses_other_clients() {
    run_serial(async {
        let pki = Pki::new("cluster");
        let mut c = Cluster::new();
        for (i, node) in c.nodes.iter_mut().enumerate() {
            node.extra_args = tls_args(&pki.files(&format!("agent-{i}"), true));
        }
        let operator = pki.files("operator", true);
        c.api = ApiClient::with_tls(
            Some(SECRET.as_bytes()),
            Duration::from_millis(800),
            Some(&operator),
        )
        .expect("TLS client");
        c.start_all();
        let m = c.wait_stable_master(SETTLE).await;
        let before = c.state(m).await.expect("state");
        c.nodes[m].redis_mut().kill();
        c.wait_until("a failover over TLS", SETTLE, |states| {
            let running: Vec<_> = states.iter().enumerate().filter(|(i, _)| *i != m).collect();
            running.iter().all(|(_, s)| {
                s.as_ref().is_some_and(|s| {
                    s.epoch > before.epoch && s.master != before.master && s.master.is_some()
                })
            })
        })
        .await;

        let api = c.nodes[0].api_addr();
        let peer = c.nodes[0].raft_addr();
        // Plain HTTP gets no answer on either port.
        let plain = SignedClient::new(None, Some(Duration::from_secs(2))).expect("client");
        for addr in [&api, &peer] {
            let e = health(&plain, addr).await.expect_err("plain HTTP refused");
            eprintln!("plain HTTP to {addr}: {e}");
        }
        // A client that trusts another CA refuses the agents' certificates.
        let other = Pki::new("other");
        let wrong_ca = SignedClient::with_tls(
            None,
            Some(Duration::from_secs(2)),
            Some(&other.files("x", true)),
        )
        .expect("client");
        let e = health(&wrong_ca, &api).await.expect_err("wrong CA refused");
        assert!(
            e.contains("certificate") || e.contains("UnknownIssuer") || e.contains("connect"),
            "{e}"
        );
        // The right CA but no client certificate: the agent refuses the handshake.
        let no_cert = SignedClient::with_tls(
            None,
            Some(Duration::from_secs(2)),
            Some(&pki.files("anon", false)),
        )
        .expect("client");
        for addr in [&api, &peer] {
            let e = health(&no_cert, addr)
                .await
                .expect_err("mTLS without a client certificate");
            eprintln!("no client certificate to {addr}: {e}");
        }
        // A client certificate from another CA is refused as well.
        let foreign = SignedClient::with_tls(
            None,
            Some(Duration::from_secs(2)),
            Some(&TlsFiles {
                ca: pki.ca_file(),
                ..other.files("foreign", true)
            }),
        )
        .expect("client");
        health(&foreign, &api)
            .await
            .expect_err("client certificate of another CA");
        // The operator's client works, and so does the CLI with the same flags.
        let good = SignedClient::with_tls(None, Some(Duration::from_secs(2)), Some(&operator))
            .expect("client");
        health(&good, &api).await.expect("mTLS client");
        let out = Command::new(common::cluster::binary())
            .arg("status")
            .arg(format!("--agent={api}"))
            .args(tls_args(&operator))
            .env("SHARED_SECRET", SECRET)
            .output()
            .expect("run the CLI");
        assert!(
            out.status.success(),
            "CLI over mTLS: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = Command::new(common::cluster::binary())
            .arg("status")
            .arg(format!("--agent={api}"))
            .env("SHARED_SECRET", SECRET)
            .output()
            .expect("run the CLI");
        assert!(
            !out.status.success(),
            "the CLI without TLS must fail against HTTPS"
        );
    });
}

/// Start one witness agent alone (its own one-voter cluster) with TLS files.
fn start_witness(dir: &Path, files: &TlsFiles) -> (std::process::Child, String, PathBuf) {
    let raft = format!("127.0.0.1:{}", common::free_port());
    let api = format!("127.0.0.1:{}", common::free_port());
    let log_path = dir.join("agent.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let child = Command::new(common::cluster::binary())
        .arg(format!("--raft-peers={raft}"))
        .arg(format!("--raft-advertise={raft}"))
        .arg(format!("--raft-bind={raft}"))
        .arg(format!("--api-bind={api}"))
        .arg(format!("--raft-data-dir={}", dir.join("raft").display()))
        .args(["--standalone", "--election-mode=raft", "--kubernetes=off"])
        .args(tls_args(files))
        .env("SHARED_SECRET", SECRET)
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("spawn agent");
    (child, api, log_path)
}

#[test]
fn rotated_certificates_are_used_by_new_handshakes_without_a_restart() {
    run_serial(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let old = Pki::new("old");
        let new = Pki::new("new");
        let dir = tempfile::tempdir().expect("dir");
        // The agent's files live at fixed paths, replaced in place as cert-manager does.
        let live = TlsFiles {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
            ca: dir.path().join("ca.crt"),
            client_auth: false,
        };
        let install = |pki: &Pki, name: &str| {
            let f = pki.files(name, false);
            std::fs::copy(&f.cert, &live.cert).expect("cert");
            std::fs::copy(&f.key, &live.key).expect("key");
            std::fs::copy(&f.ca, &live.ca).expect("ca");
        };
        install(&old, "agent-v1");
        let (mut child, api, log) = start_witness(dir.path(), &live);
        let trusts_old = SignedClient::with_tls(
            None,
            Some(Duration::from_secs(2)),
            Some(&old.files("c1", false)),
        )
        .expect("client");
        let trusts_new = SignedClient::with_tls(
            None,
            Some(Duration::from_secs(2)),
            Some(&new.files("c2", false)),
        )
        .expect("client");
        let deadline = Instant::now() + Duration::from_secs(10);
        while health(&trusts_old, &api).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "agent not up: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        health(&trusts_new, &api)
            .await
            .expect_err("not yet the new certificate");

        install(&new, "agent-v2");
        let rotated = Instant::now();
        while health(&trusts_new, &api).await.is_err() {
            assert!(
                rotated.elapsed() < Duration::from_secs(10),
                "the new certificate was not picked up: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!(
            "new certificate served {:?} after the files changed",
            rotated.elapsed()
        );
        // A new connection: the old client's pooled one predates the rotation.
        let trusts_old = SignedClient::with_tls(
            None,
            Some(Duration::from_secs(2)),
            Some(&old.files("c3", false)),
        )
        .expect("client");
        health(&trusts_old, &api)
            .await
            .expect_err("the old certificate is gone");
        assert!(child.try_wait().expect("wait").is_none(), "no restart");
        let _ = child.kill();
        let _ = child.wait();
    });
}

#[test]
fn a_bad_or_unreadable_certificate_exits_2_with_a_reason() {
    let pki = Pki::new("bad");
    let good = pki.files("agent", false);
    let dir = tempfile::tempdir().expect("dir");
    let junk = dir.path().join("junk.pem");
    std::fs::write(
        &junk,
        "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
    )
    .expect("junk");
    let other_key = pki.files("other", false).key;
    let cases = [
        (
            TlsFiles {
                cert: dir.path().join("missing.crt"),
                ..good.clone()
            },
            "missing.crt",
        ),
        (
            TlsFiles {
                cert: junk.clone(),
                ..good.clone()
            },
            "--tls-cert-file",
        ),
        (
            TlsFiles {
                ca: junk.clone(),
                ..good.clone()
            },
            "--tls-ca-file",
        ),
        (
            TlsFiles {
                key: other_key,
                ..good.clone()
            },
            "do not fit",
        ),
    ];
    for (files, reason) in cases {
        let raft = format!("127.0.0.1:{}", common::free_port());
        let out = Command::new(common::cluster::binary())
            .arg(format!("--raft-peers={raft}"))
            .arg(format!("--raft-advertise={raft}"))
            .arg(format!("--raft-bind={raft}"))
            .arg(format!("--api-bind=127.0.0.1:{}", common::free_port()))
            .arg(format!(
                "--raft-data-dir={}",
                dir.path().join("raft").display()
            ))
            .args(["--standalone", "--election-mode=raft", "--kubernetes=off"])
            .args(tls_args(&files))
            .stdin(Stdio::null())
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{reason}: {stderr}");
        assert!(stderr.contains(reason), "{reason}: {stderr}");
    }
}

/// A redis-server that speaks TLS only (`--port 0`), replicating over TLS too.
struct TlsRedis {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl TlsRedis {
    fn start(pki: &Pki, name: &str) -> TlsRedis {
        let files = pki.files(name, false);
        let dir = tempfile::tempdir().expect("dir");
        let port = common::free_port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .arg("--tls-cert-file")
            .arg(&files.cert)
            .arg("--tls-key-file")
            .arg(&files.key)
            .arg("--tls-ca-cert-file")
            .arg(&files.ca)
            .args(["--tls-auth-clients", "no", "--tls-replication", "yes"])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--repl-diskless-sync-delay",
                "0",
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("redis-server (with TLS) not startable: {e}"));
        TlsRedis {
            child,
            port,
            _dir: dir,
        }
    }

    fn config(&self, ca: Option<PathBuf>) -> RedisConfig {
        RedisConfig {
            host: "127.0.0.1".to_string(),
            port: self.port,
            password: None,
            tls: true,
            tls_skip_verify: false,
            tls_ca_file: ca,
        }
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn redis_adapter_over_tls_with_tls_replication() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pki = Pki::new("redis");
    let master = TlsRedis::start(&pki, "redis-a");
    let replica = TlsRedis::start(&pki, "redis-b");
    let a = RedisClient::new(master.config(Some(pki.ca_file()))).expect("client");
    let b = RedisClient::new(replica.config(Some(pki.ca_file()))).expect("client");
    let deadline = Instant::now() + Duration::from_secs(5);
    while a.probe().await.is_err() || b.probe().await.is_err() {
        assert!(
            Instant::now() < deadline,
            "TLS redis-servers not up: {:?}",
            a.probe().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Write through a stock TLS client, then make b a replica through the adapter.
    let url = format!("rediss://127.0.0.1:{}/", master.port);
    let writer = redis::Client::build_with_tls(
        url.as_str(),
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(std::fs::read(pki.ca_file()).expect("ca")),
        },
    )
    .expect("TLS client");
    let mut conn = writer
        .get_multiplexed_async_connection()
        .await
        .expect("connect over TLS");
    for i in 0..10 {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(i)
            .query_async(&mut conn)
            .await
            .expect("SET");
    }
    b.replicate_from("127.0.0.1", master.port)
        .await
        .expect("REPLICAOF over the adapter");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = b.probe().await.expect("probe replica");
        if s.master_link_up && s.keys == 10 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replication over TLS did not complete: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Without the CA, or without TLS, the TLS-only server is unreachable.
    let other = Pki::new("other");
    for config in [
        master.config(Some(other.ca_file())),
        RedisConfig {
            tls: false,
            ..master.config(None)
        },
    ] {
        let client = RedisClient::new(config.clone()).expect("client");
        let e = client.probe().await.expect_err("must not connect");
        eprintln!("{config:?}: {e}");
    }
    // --redis-tls-skip-verify connects without checking.
    let insecure = RedisClient::new(RedisConfig {
        tls_skip_verify: true,
        ..master.config(None)
    })
    .expect("client");
    insecure.probe().await.expect("skip-verify connects");
}
