//! The one HTTP client agents and tools use to talk to agents: every request signed with
//! the shared secret, never through an `HTTP(S)_PROXY` from the environment, bounded in
//! time, and a peer that rejects our signature logged once (until it accepts again).
//! The Raft network, the reports, operator forwarding, the CLI, the demo and the tests
//! all go through [`SignedClient`]; [`ApiClient`] adds the API's JSON conventions.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::auth;
use crate::tls::{Reloading, TlsError, TlsFiles};
use crate::wire::StateView;

/// How long a connection attempt to a peer may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a signed request got no successful answer.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Nothing accepted the connection (peer down, not deployed yet, wrong address).
    #[error("cannot reach agent at {addr}: {source}")]
    Connect {
        addr: String,
        source: reqwest::Error,
    },
    #[error("request to {addr} failed: {source}")]
    Http {
        addr: String,
        source: reqwest::Error,
    },
    #[error("{addr} rejected our request signature (is the shared secret the same on every site?)")]
    Unauthorized { addr: String },
    #[error("{addr} answered {status}: {body}")]
    Status {
        addr: String,
        status: u16,
        body: String,
    },
    /// The answer is not signed with the shared secret: whatever answered is not one of
    /// our agents, so its answer is not used.
    #[error(
        "{addr} answered without a valid reply signature ({reason}): not an agent that knows the shared secret"
    )]
    BadReply {
        addr: String,
        reason: auth::AuthError,
    },
}

/// An answer whose signature (when a secret is set) was verified.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Plain HTTP, or HTTPS with a client rebuilt when the certificate files change.
#[derive(Clone)]
enum Transport {
    Plain(reqwest::Client),
    Tls(Arc<Reloading<reqwest::Client>>),
}

/// Idle pooled connections are dropped before the agents' header timeout closes them, so a
/// request never races a server closing its connection.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

fn builder(timeout: Option<Duration>) -> reqwest::ClientBuilder {
    let builder = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(CONNECT_TIMEOUT)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT);
    match timeout {
        Some(t) => builder.timeout(t),
        None => builder,
    }
}

/// TLS settings for the plain-HTTP client, which never speaks HTTPS: without them reqwest
/// would load and keep the whole system certificate store (~20 M instructions at every
/// start, and the parsed roots stay on the heap of an idle agent).
fn no_trusted_roots() -> rustls::ClientConfig {
    rustls::ClientConfig::builder()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth()
}

/// Signs and sends requests; clones share the connection pool and the rejection log.
#[derive(Clone)]
pub struct SignedClient {
    transport: Transport,
    secret: Option<Arc<[u8]>>,
    /// Addresses whose last answer was 401; the warning is logged when one is added.
    rejected_by: Arc<Mutex<HashSet<String>>>,
}

impl SignedClient {
    /// `timeout` bounds every request unless the call sets its own. Needs a process-wide
    /// rustls crypto provider installed first (reqwest is built without one).
    pub fn new(secret: Option<&[u8]>, timeout: Option<Duration>) -> Result<Self, reqwest::Error> {
        Ok(SignedClient {
            transport: Transport::Plain(
                builder(timeout)
                    .tls_backend_preconfigured(no_trusted_roots())
                    .build()?,
            ),
            secret: secret.map(Arc::from),
            rejected_by: Arc::default(),
        })
    }

    /// Like [`new`](Self::new), over HTTPS when `tls` is given: agents are verified
    /// against its CA, and present its certificate when it asks for client auth.
    pub fn with_tls(
        secret: Option<&[u8]>,
        timeout: Option<Duration>,
        tls: Option<&TlsFiles>,
    ) -> Result<Self, String> {
        let Some(files) = tls else {
            return Self::new(secret, timeout).map_err(|e| e.to_string());
        };
        let reloading = Reloading::new(files.clone(), move |f| {
            let config = f.client_config()?;
            builder(timeout)
                .https_only(true)
                .tls_backend_preconfigured(config)
                .build()
                .map_err(|e| TlsError(format!("cannot build the HTTPS client: {e}")))
        })
        .map_err(|e| e.to_string())?;
        Ok(SignedClient {
            transport: Transport::Tls(Arc::new(reloading)),
            secret: secret.map(Arc::from),
            rejected_by: Arc::default(),
        })
    }

    fn transport(&self) -> (reqwest::Client, &'static str) {
        match &self.transport {
            Transport::Plain(c) => (c.clone(), "http"),
            Transport::Tls(r) => (r.current(), "https"),
        }
    }

    /// Send `method path` to `addr`, signed for `addr`, and return the answer whatever
    /// its status. With a secret, any answer but a 401 must carry a valid reply signature.
    pub async fn send(
        &self,
        method: reqwest::Method,
        addr: &str,
        path: &str,
        body: Option<Vec<u8>>,
        timeout: Option<Duration>,
    ) -> Result<Reply, SendError> {
        let bytes = body.as_deref().unwrap_or_default();
        let (http, scheme) = self.transport();
        // The signed authority is sent as-is (reqwest would drop a default port).
        let mut req = http
            .request(method.clone(), format!("{scheme}://{addr}{path}"))
            .header(reqwest::header::HOST, addr);
        let mut nonce = None;
        if let Some(secret) = &self.secret {
            let signed = auth::sign(secret, method.as_str(), addr, path, bytes, auth::unix_now());
            for (name, value) in signed.pairs() {
                req = req.header(name, value);
            }
            nonce = Some(signed.nonce);
        }
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        if let Some(body) = body {
            req = req.header("content-type", "application/json").body(body);
        }
        let http_error = |source: reqwest::Error| {
            let addr = addr.to_string();
            if source.is_connect() {
                SendError::Connect { addr, source }
            } else {
                SendError::Http { addr, source }
            }
        };
        let resp = req.send().await.map_err(http_error)?;
        let status = resp.status().as_u16();
        let reply_signature = resp
            .headers()
            .get(auth::REPLY_SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = resp.bytes().await.map_err(http_error)?.to_vec();
        if status == 401 {
            self.note_rejected(addr);
            return Ok(Reply { status, body });
        }
        self.rejected().remove(addr);
        if let (Some(secret), Some(nonce)) = (&self.secret, &nonce) {
            auth::verify_reply(secret, nonce, status, &body, reply_signature.as_deref()).map_err(
                |reason| SendError::BadReply {
                    addr: addr.to_string(),
                    reason,
                },
            )?;
        }
        Ok(Reply { status, body })
    }

    /// Send, and return the body of a 2xx answer; anything else is an error.
    pub async fn call(
        &self,
        method: reqwest::Method,
        addr: &str,
        path: &str,
        body: Option<Vec<u8>>,
        timeout: Option<Duration>,
    ) -> Result<Vec<u8>, SendError> {
        let reply = self.send(method, addr, path, body, timeout).await?;
        if reply.status == 401 {
            return Err(SendError::Unauthorized {
                addr: addr.to_string(),
            });
        }
        if !(200..300).contains(&reply.status) {
            return Err(SendError::Status {
                addr: addr.to_string(),
                status: reply.status,
                body: String::from_utf8_lossy(&reply.body).into_owned(),
            });
        }
        Ok(reply.body)
    }

    /// Addresses whose last answer was a 401, sorted.
    pub fn rejected_peers(&self) -> Vec<String> {
        let mut peers: Vec<String> = self.rejected().iter().cloned().collect();
        peers.sort();
        peers
    }

    fn rejected(&self) -> MutexGuard<'_, HashSet<String>> {
        // A set of strings cannot be left half-updated, so poisoning is harmless.
        self.rejected_by
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn note_rejected(&self, addr: &str) {
        if self.rejected().insert(addr.to_string()) {
            tracing::warn!(
                peer = addr,
                "peer {addr} rejected our signature: the shared secret likely differs between sites"
            );
        }
    }
}

/// Why an API call failed, as the CLI and tools report it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Send(#[from] SendError),
    #[error("agent at {addr} sent an unreadable answer: {source}")]
    Decode {
        addr: String,
        source: serde_json::Error,
    },
}

impl ApiError {
    /// The HTTP status of a non-2xx answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Send(SendError::Status { status, .. }) => Some(*status),
            ApiError::Send(SendError::Unauthorized { .. }) => Some(401),
            _ => None,
        }
    }
}

/// The agent API over a [`SignedClient`], with JSON bodies.
#[derive(Clone)]
pub struct ApiClient {
    client: SignedClient,
}

impl ApiClient {
    pub fn new(secret: Option<&[u8]>, timeout: Duration) -> Result<Self, reqwest::Error> {
        Ok(ApiClient {
            client: SignedClient::new(secret, Some(timeout))?,
        })
    }

    /// Over HTTPS when `tls` is given (see [`SignedClient::with_tls`]).
    pub fn with_tls(
        secret: Option<&[u8]>,
        timeout: Duration,
        tls: Option<&TlsFiles>,
    ) -> Result<Self, String> {
        Ok(ApiClient {
            client: SignedClient::with_tls(secret, Some(timeout), tls)?,
        })
    }

    pub fn from_signed(client: SignedClient) -> Self {
        ApiClient { client }
    }

    /// Send a signed request with an optional JSON body and return the answer.
    pub async fn send(
        &self,
        method: reqwest::Method,
        addr: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Reply, ApiError> {
        let bytes = body.map(|b| b.to_string().into_bytes());
        Ok(self.client.send(method, addr, path, bytes, None).await?)
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        addr: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<T, ApiError> {
        let bytes = body.map(|b| b.to_string().into_bytes());
        let answer = self.client.call(method, addr, path, bytes, None).await?;
        serde_json::from_slice(&answer).map_err(|source| ApiError::Decode {
            addr: addr.to_string(),
            source,
        })
    }

    pub async fn get<T: DeserializeOwned>(&self, addr: &str, path: &str) -> Result<T, ApiError> {
        self.json(reqwest::Method::GET, addr, path, None).await
    }

    pub async fn post<T: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<T, ApiError> {
        self.json(reqwest::Method::POST, addr, path, Some(body))
            .await
    }

    pub async fn state(&self, addr: &str) -> Result<StateView, ApiError> {
        self.get(addr, "/state").await
    }
}
