//! Request signing shared by peers and the CLI.
//!
//! `X-Orchestrator-Signature` = hex HMAC-SHA256(secret,
//! `METHOD\nPATH\nTIMESTAMP\nNONCE\nhex(SHA-256(body))`). The verifier rejects
//! clock skew over 30 s, a nonce seen before inside that window, and any change
//! to method, path or body. Comparison is constant-time (`Mac::verify_slice`).

use std::collections::HashMap;
use std::sync::Mutex;

use hmac::{Hmac, KeyInit, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

pub const TIMESTAMP_HEADER: &str = "x-orchestrator-timestamp";
pub const NONCE_HEADER: &str = "x-orchestrator-nonce";
pub const SIGNATURE_HEADER: &str = "x-orchestrator-signature";

/// Largest accepted difference between the signer's and our clock, in seconds.
pub const MAX_SKEW_SECS: u64 = 30;

/// Bound on remembered nonces, so a flood of signed requests cannot exhaust memory.
const MAX_REMEMBERED_NONCES: usize = 100_000;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing signature headers")]
    Missing,
    #[error("malformed signature headers")]
    Malformed,
    #[error("timestamp outside the {MAX_SKEW_SECS}s window")]
    Stale,
    #[error("nonce already used")]
    Replayed,
    #[error("signature does not match (shared secret differs, or request altered)")]
    BadSignature,
    #[error("too many requests in the replay window")]
    Overloaded,
}

impl AuthError {
    /// Short label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Malformed => "malformed",
            AuthError::Stale => "stale",
            AuthError::Replayed => "replayed",
            AuthError::BadSignature => "bad_signature",
            AuthError::Overloaded => "overloaded",
        }
    }
}

/// The three header values of a signed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    pub timestamp: String,
    pub nonce: String,
    pub signature: String,
}

impl SignedHeaders {
    pub fn pairs(&self) -> [(&'static str, &str); 3] {
        [
            (TIMESTAMP_HEADER, self.timestamp.as_str()),
            (NONCE_HEADER, self.nonce.as_str()),
            (SIGNATURE_HEADER, self.signature.as_str()),
        ]
    }
}

fn canonical(method: &str, path: &str, timestamp: &str, nonce: &str, body: &[u8]) -> String {
    let body_digest = hex::encode(Sha256::digest(body));
    format!("{method}\n{path}\n{timestamp}\n{nonce}\n{body_digest}")
}

fn mac(secret: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length, so this cannot fail.
    <HmacSha256 as KeyInit>::new_from_slice(secret).expect("HMAC accepts any key length")
}

/// Sign a request. `path` is the path plus query string as sent.
pub fn sign(secret: &[u8], method: &str, path: &str, body: &[u8], now_unix: u64) -> SignedHeaders {
    let mut nonce_bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut nonce_bytes);
    let nonce = hex::encode(nonce_bytes);
    let timestamp = now_unix.to_string();
    let mut m = mac(secret);
    m.update(canonical(method, path, &timestamp, &nonce, body).as_bytes());
    let signature = hex::encode(m.finalize().into_bytes());
    SignedHeaders {
        timestamp,
        nonce,
        signature,
    }
}

/// Checks signatures and remembers nonces for the skew window.
pub struct Verifier {
    secret: Vec<u8>,
    seen_nonces: Mutex<HashMap<String, u64>>,
}

impl Verifier {
    pub fn new(secret: &[u8]) -> Self {
        Verifier {
            secret: secret.to_vec(),
            seen_nonces: Mutex::new(HashMap::new()),
        }
    }

    /// Verify one request. A nonce is only remembered once the signature is valid,
    /// so unsigned noise cannot fill the replay cache.
    pub fn verify(
        &self,
        method: &str,
        path: &str,
        headers: Option<&SignedHeaders>,
        body: &[u8],
        now_unix: u64,
    ) -> Result<(), AuthError> {
        let h = headers.ok_or(AuthError::Missing)?;
        let ts: u64 = h.timestamp.parse().map_err(|_| AuthError::Malformed)?;
        if h.nonce.is_empty() || h.nonce.len() > 128 {
            return Err(AuthError::Malformed);
        }
        let tag = hex::decode(&h.signature).map_err(|_| AuthError::Malformed)?;
        if ts.abs_diff(now_unix) > MAX_SKEW_SECS {
            return Err(AuthError::Stale);
        }
        let mut m = mac(&self.secret);
        m.update(canonical(method, path, &h.timestamp, &h.nonce, body).as_bytes());
        m.verify_slice(&tag).map_err(|_| AuthError::BadSignature)?;

        let mut seen = self
            .seen_nonces
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        seen.retain(|_, expires| *expires >= now_unix);
        if seen.contains_key(&h.nonce) {
            return Err(AuthError::Replayed);
        }
        if seen.len() >= MAX_REMEMBERED_NONCES {
            return Err(AuthError::Overloaded);
        }
        seen.insert(h.nonce.clone(), ts + 2 * MAX_SKEW_SECS);
        Ok(())
    }
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    /// name, headers, method, path, body, now, expected error
    type Case<'a> = (
        &'a str,
        Option<SignedHeaders>,
        &'a str,
        &'a str,
        &'a [u8],
        u64,
        AuthError,
    );

    #[test]
    fn accepts_a_fresh_signature_once() {
        let v = Verifier::new(b"s3cret");
        let h = sign(b"s3cret", "POST", "/raft/vote", b"{}", NOW);
        assert_eq!(
            v.verify("POST", "/raft/vote", Some(&h), b"{}", NOW + 5),
            Ok(())
        );
        assert_eq!(
            v.verify("POST", "/raft/vote", Some(&h), b"{}", NOW + 6),
            Err(AuthError::Replayed)
        );
    }

    #[test]
    fn rejects_every_kind_of_bad_request() {
        let v = Verifier::new(b"s3cret");
        let good = sign(b"s3cret", "POST", "/report", b"body", NOW);
        let cases: Vec<Case> = vec![
            (
                "unsigned",
                None,
                "POST",
                "/report",
                b"body",
                NOW,
                AuthError::Missing,
            ),
            (
                "wrong secret",
                Some(sign(b"other", "POST", "/report", b"body", NOW)),
                "POST",
                "/report",
                b"body",
                NOW,
                AuthError::BadSignature,
            ),
            (
                "tampered body",
                Some(good.clone()),
                "POST",
                "/report",
                b"bodY",
                NOW,
                AuthError::BadSignature,
            ),
            (
                "other path",
                Some(good.clone()),
                "POST",
                "/state",
                b"body",
                NOW,
                AuthError::BadSignature,
            ),
            (
                "other method",
                Some(good.clone()),
                "GET",
                "/report",
                b"body",
                NOW,
                AuthError::BadSignature,
            ),
            (
                "stale",
                Some(good.clone()),
                "POST",
                "/report",
                b"body",
                NOW + 31,
                AuthError::Stale,
            ),
            (
                "from the future",
                Some(good.clone()),
                "POST",
                "/report",
                b"body",
                NOW - 31,
                AuthError::Stale,
            ),
            (
                "garbage signature",
                Some(SignedHeaders {
                    signature: "zz".into(),
                    ..good.clone()
                }),
                "POST",
                "/report",
                b"body",
                NOW,
                AuthError::Malformed,
            ),
            (
                "garbage timestamp",
                Some(SignedHeaders {
                    timestamp: "soon".into(),
                    ..good.clone()
                }),
                "POST",
                "/report",
                b"body",
                NOW,
                AuthError::Malformed,
            ),
        ];
        for (name, headers, method, path, body, now, want) in cases {
            assert_eq!(
                v.verify(method, path, headers.as_ref(), body, now),
                Err(want),
                "{name}"
            );
        }
        // None of the rejections consumed the nonce: the genuine request still passes.
        assert_eq!(
            v.verify("POST", "/report", Some(&good), b"body", NOW),
            Ok(())
        );
    }

    #[test]
    fn nonces_expire_after_the_window() {
        let v = Verifier::new(b"k");
        let a = sign(b"k", "GET", "/state", b"", NOW);
        assert_eq!(v.verify("GET", "/state", Some(&a), b"", NOW), Ok(()));
        let b = sign(b"k", "GET", "/state", b"", NOW + 100);
        assert_eq!(v.verify("GET", "/state", Some(&b), b"", NOW + 100), Ok(()));
        let remembered = v.seen_nonces.lock().map(|s| s.len()).unwrap_or(0);
        assert_eq!(remembered, 1, "the first nonce expired and was dropped");
    }
}
