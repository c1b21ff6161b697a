//! A small client for the agent API, signing requests with the shared secret.
//! Used by the demo and the tests (and by anything scripting the API).

use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::auth;
use crate::http::api::StateView;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("cannot reach agent at {addr}: {source}")]
    Unreachable {
        addr: String,
        source: reqwest::Error,
    },
    #[error("agent at {addr} rejected the request signature (is the shared secret right?)")]
    Unauthorized { addr: String },
    #[error("agent at {addr} answered {status}: {body}")]
    Status {
        addr: String,
        status: u16,
        body: String,
    },
    #[error("agent at {addr} sent an unreadable answer: {source}")]
    Decode {
        addr: String,
        source: reqwest::Error,
    },
}

#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    secret: Option<Vec<u8>>,
}

impl ApiClient {
    pub fn new(secret: Option<&[u8]>, timeout: Duration) -> Result<Self, reqwest::Error> {
        Ok(Self::with_client(
            reqwest::Client::builder().timeout(timeout).build()?,
            secret,
        ))
    }

    pub fn with_client(http: reqwest::Client, secret: Option<&[u8]>) -> Self {
        ApiClient {
            http,
            secret: secret.map(<[u8]>::to_vec),
        }
    }

    /// Send a signed request with an optional JSON body and return the raw response.
    pub async fn send(
        &self,
        method: reqwest::Method,
        addr: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<reqwest::Response, ApiError> {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let mut req = self
            .http
            .request(method.clone(), format!("http://{addr}{path}"));
        if let Some(secret) = &self.secret {
            for (name, value) in
                auth::sign(secret, method.as_str(), path, &bytes, auth::unix_now()).pairs()
            {
                req = req.header(name, value);
            }
        }
        if body.is_some() {
            req = req.header("content-type", "application/json").body(bytes);
        }
        req.send().await.map_err(|source| ApiError::Unreachable {
            addr: addr.to_string(),
            source,
        })
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        addr: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<T, ApiError> {
        let resp = self.send(method, addr, path, body).await?;
        let status = resp.status();
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(ApiError::Unauthorized {
                addr: addr.to_string(),
            });
        }
        if !status.is_success() {
            return Err(ApiError::Status {
                addr: addr.to_string(),
                status: status.as_u16(),
                body: resp.text().await.unwrap_or_default(),
            });
        }
        resp.json().await.map_err(|source| ApiError::Decode {
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
