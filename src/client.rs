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
}

/// Signs and sends requests; clones share the connection pool and the rejection log.
#[derive(Clone)]
pub struct SignedClient {
    http: reqwest::Client,
    secret: Option<Arc<[u8]>>,
    /// Addresses whose last answer was 401; the warning is logged when one is added.
    rejected_by: Arc<Mutex<HashSet<String>>>,
}

impl SignedClient {
    /// `timeout` bounds every request unless the call sets its own. Needs a process-wide
    /// rustls crypto provider installed first (reqwest is built without one).
    pub fn new(secret: Option<&[u8]>, timeout: Option<Duration>) -> Result<Self, reqwest::Error> {
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT);
        if let Some(t) = timeout {
            builder = builder.timeout(t);
        }
        Ok(SignedClient {
            http: builder.build()?,
            secret: secret.map(Arc::from),
            rejected_by: Arc::default(),
        })
    }

    /// Send `method path` to `addr`, signed, and return the response whatever its status.
    pub async fn send(
        &self,
        method: reqwest::Method,
        addr: &str,
        path: &str,
        body: Option<Vec<u8>>,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response, SendError> {
        let bytes = body.as_deref().unwrap_or_default();
        let mut req = self
            .http
            .request(method.clone(), format!("http://{addr}{path}"));
        if let Some(secret) = &self.secret {
            for (name, value) in
                auth::sign(secret, method.as_str(), path, bytes, auth::unix_now()).pairs()
            {
                req = req.header(name, value);
            }
        }
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        if let Some(body) = body {
            req = req.header("content-type", "application/json").body(body);
        }
        let resp = req.send().await.map_err(|source| {
            let addr = addr.to_string();
            if source.is_connect() {
                SendError::Connect { addr, source }
            } else {
                SendError::Http { addr, source }
            }
        })?;
        if resp.status() == reqwest::StatusCode::UNAUTHORIZED {
            self.note_rejected(addr);
        } else {
            self.rejected().remove(addr);
        }
        Ok(resp)
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
        let resp = self.send(method, addr, path, body, timeout).await?;
        let status = resp.status();
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(SendError::Unauthorized {
                addr: addr.to_string(),
            });
        }
        if !status.is_success() {
            return Err(SendError::Status {
                addr: addr.to_string(),
                status: status.as_u16(),
                body: resp.text().await.unwrap_or_default(),
            });
        }
        let body = resp.bytes().await.map_err(|source| SendError::Http {
            addr: addr.to_string(),
            source,
        })?;
        Ok(body.to_vec())
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

    pub fn from_signed(client: SignedClient) -> Self {
        ApiClient { client }
    }

    /// Send a signed request with an optional JSON body and return the raw response.
    pub async fn send(
        &self,
        method: reqwest::Method,
        addr: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<reqwest::Response, ApiError> {
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
