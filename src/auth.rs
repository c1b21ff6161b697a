//! Request and reply signing shared by peers and the CLI.
//!
//! A request carries `X-Orchestrator-Timestamp`, `-Nonce`, `-Content-Sha256` (hex SHA-256
//! of the body) and `-Signature` = hex HMAC-SHA256(secret,
//! `METHOD\nAUTHORITY\nPATH\nTIMESTAMP\nNONCE\nCONTENT_SHA256`). AUTHORITY is the
//! `host:port` the request is addressed to, so a request signed for one agent is refused
//! by every other. The signature is checked from the headers alone, before any body byte
//! is read; the body read afterwards must match the signed digest. The verifier rejects
//! clock skew over 30 s, a nonce seen before inside that window, and any change to
//! method, target, path or body. Comparison is constant-time (`Mac::verify_slice`).
//!
//! A reply to a signed request carries `X-Orchestrator-Reply-Signature` = hex
//! HMAC-SHA256(secret, `reply\nNONCE\nSTATUS\nhex(SHA-256(body))`) over the request's
//! nonce, so a peer that does not know the secret cannot answer for one that does.

use std::collections::HashMap;
use std::sync::Mutex;

use hmac::{Hmac, KeyInit, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

pub const TIMESTAMP_HEADER: &str = "x-orchestrator-timestamp";
pub const NONCE_HEADER: &str = "x-orchestrator-nonce";
pub const CONTENT_DIGEST_HEADER: &str = "x-orchestrator-content-sha256";
pub const SIGNATURE_HEADER: &str = "x-orchestrator-signature";
pub const REPLY_SIGNATURE_HEADER: &str = "x-orchestrator-reply-signature";

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
    #[error("signed for another agent")]
    WrongTarget,
    #[error("body does not match its signed digest")]
    BodyMismatch,
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
            AuthError::WrongTarget => "wrong_target",
            AuthError::BodyMismatch => "body_mismatch",
            AuthError::Overloaded => "overloaded",
        }
    }
}

/// The header values of a signed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    pub timestamp: String,
    pub nonce: String,
    pub digest: String,
    pub signature: String,
}

impl SignedHeaders {
    pub fn pairs(&self) -> [(&'static str, &str); 4] {
        [
            (TIMESTAMP_HEADER, self.timestamp.as_str()),
            (NONCE_HEADER, self.nonce.as_str()),
            (CONTENT_DIGEST_HEADER, self.digest.as_str()),
            (SIGNATURE_HEADER, self.signature.as_str()),
        ]
    }
}

/// Hex SHA-256 of a body, as signed.
pub fn body_digest(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

fn canonical(
    method: &str,
    authority: &str,
    path: &str,
    timestamp: &str,
    nonce: &str,
    digest: &str,
) -> String {
    format!("{method}\n{authority}\n{path}\n{timestamp}\n{nonce}\n{digest}")
}

fn mac(secret: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length, so this cannot fail.
    <HmacSha256 as KeyInit>::new_from_slice(secret).expect("HMAC accepts any key length")
}

/// Sign a request to the agent at `authority` (`host:port` as addressed). `path` is the
/// path plus query string as sent.
pub fn sign(
    secret: &[u8],
    method: &str,
    authority: &str,
    path: &str,
    body: &[u8],
    now_unix: u64,
) -> SignedHeaders {
    let mut nonce_bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut nonce_bytes);
    let nonce = hex::encode(nonce_bytes);
    let timestamp = now_unix.to_string();
    let digest = body_digest(body);
    let mut m = mac(secret);
    m.update(canonical(method, authority, path, &timestamp, &nonce, &digest).as_bytes());
    let signature = hex::encode(m.finalize().into_bytes());
    SignedHeaders {
        timestamp,
        nonce,
        digest,
        signature,
    }
}

fn reply_mac(secret: &[u8], nonce: &str, status: u16, body: &[u8]) -> HmacSha256 {
    let mut m = mac(secret);
    m.update(format!("reply\n{nonce}\n{status}\n{}", body_digest(body)).as_bytes());
    m
}

/// The reply signature header value for the answer to the request with `nonce`.
pub fn sign_reply(secret: &[u8], nonce: &str, status: u16, body: &[u8]) -> String {
    hex::encode(
        reply_mac(secret, nonce, status, body)
            .finalize()
            .into_bytes(),
    )
}

/// Check a reply to our request with `nonce`.
pub fn verify_reply(
    secret: &[u8],
    nonce: &str,
    status: u16,
    body: &[u8],
    signature: Option<&str>,
) -> Result<(), AuthError> {
    let tag =
        hex::decode(signature.ok_or(AuthError::Missing)?).map_err(|_| AuthError::Malformed)?;
    reply_mac(secret, nonce, status, body)
        .verify_slice(&tag)
        .map_err(|_| AuthError::BadSignature)
}

/// Checks signatures and remembers nonces for the skew window.
pub struct Verifier {
    secret: Vec<u8>,
    /// The `host:port` names this agent answers to; empty: any (a bare test server).
    authorities: Vec<String>,
    seen_nonces: Mutex<HashMap<String, u64>>,
}

impl Verifier {
    pub fn new(secret: &[u8]) -> Self {
        Verifier {
            secret: secret.to_vec(),
            authorities: Vec::new(),
            seen_nonces: Mutex::new(HashMap::new()),
        }
    }

    /// Accept only requests signed for one of `authorities` (or the address the
    /// connection arrived on, see [`verify_head`](Self::verify_head)).
    pub fn bound_to(mut self, authorities: Vec<String>) -> Self {
        self.authorities = authorities;
        self
    }

    pub fn secret(&self) -> &[u8] {
        &self.secret
    }

    /// Whether a request addressed to `authority` is for this agent. `local` is the
    /// address the connection arrived on (`ip:port`), which is always ours.
    fn is_ours(&self, authority: &str, local: Option<std::net::SocketAddr>) -> bool {
        if self.authorities.is_empty() {
            return true;
        }
        let authority = authority.to_ascii_lowercase();
        self.authorities
            .iter()
            .any(|a| a.eq_ignore_ascii_case(&authority))
            || local.is_some_and(|l| {
                authority == l.to_string() || authority == format!("localhost:{}", l.port())
            })
    }

    /// Verify a request from its headers alone, before its body is read. Returns the
    /// signed body digest, which the body must then match ([`check_body`]). A nonce is
    /// only remembered once the signature is valid, so unsigned noise cannot fill the
    /// replay cache.
    pub fn verify_head(
        &self,
        method: &str,
        authority: &str,
        local: Option<std::net::SocketAddr>,
        path: &str,
        headers: Option<&SignedHeaders>,
        now_unix: u64,
    ) -> Result<String, AuthError> {
        let h = headers.ok_or(AuthError::Missing)?;
        let ts: u64 = h.timestamp.parse().map_err(|_| AuthError::Malformed)?;
        if h.nonce.is_empty() || h.nonce.len() > 128 || h.digest.len() != 64 {
            return Err(AuthError::Malformed);
        }
        let tag = hex::decode(&h.signature).map_err(|_| AuthError::Malformed)?;
        if ts.abs_diff(now_unix) > MAX_SKEW_SECS {
            return Err(AuthError::Stale);
        }
        let mut m = mac(&self.secret);
        m.update(canonical(method, authority, path, &h.timestamp, &h.nonce, &h.digest).as_bytes());
        m.verify_slice(&tag).map_err(|_| AuthError::BadSignature)?;
        if !self.is_ours(authority, local) {
            return Err(AuthError::WrongTarget);
        }

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
        Ok(h.digest.clone())
    }

    /// [`verify_head`](Self::verify_head) and [`check_body`] together.
    pub fn verify(
        &self,
        method: &str,
        authority: &str,
        path: &str,
        headers: Option<&SignedHeaders>,
        body: &[u8],
        now_unix: u64,
    ) -> Result<(), AuthError> {
        let digest = self.verify_head(method, authority, None, path, headers, now_unix)?;
        check_body(&digest, body)
    }
}

/// The body read after [`Verifier::verify_head`] must be the one that was signed.
pub fn check_body(signed_digest: &str, body: &[u8]) -> Result<(), AuthError> {
    let actual = body_digest(body);
    if bool::from(subtle::ConstantTimeEq::ct_eq(
        actual.as_bytes(),
        signed_digest.to_ascii_lowercase().as_bytes(),
    )) {
        Ok(())
    } else {
        Err(AuthError::BodyMismatch)
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
    const A: &str = "a.example:7000";

    /// name, headers, method, authority, path, body, now, expected error
    type Case<'a> = (
        &'a str,
        Option<SignedHeaders>,
        &'a str,
        &'a str,
        &'a str,
        &'a [u8],
        u64,
        AuthError,
    );

    fn verifier(secret: &[u8]) -> Verifier {
        Verifier::new(secret).bound_to(vec![A.to_string()])
    }

    #[test]
    fn accepts_a_fresh_signature_once() {
        let v = verifier(b"s3cret");
        let h = sign(b"s3cret", "POST", A, "/raft/vote", b"{}", NOW);
        assert_eq!(
            v.verify("POST", A, "/raft/vote", Some(&h), b"{}", NOW + 5),
            Ok(())
        );
        assert_eq!(
            v.verify("POST", A, "/raft/vote", Some(&h), b"{}", NOW + 6),
            Err(AuthError::Replayed)
        );
    }

    #[test]
    fn rejects_every_kind_of_bad_request() {
        let v = verifier(b"s3cret");
        let good = sign(b"s3cret", "POST", A, "/report", b"body", NOW);
        let b = "b.example:7000";
        let cases: Vec<Case> = vec![
            (
                "unsigned",
                None,
                "POST",
                A,
                "/report",
                b"body",
                NOW,
                AuthError::Missing,
            ),
            (
                "wrong secret",
                Some(sign(b"other", "POST", A, "/report", b"body", NOW)),
                "POST",
                A,
                "/report",
                b"body",
                NOW,
                AuthError::BadSignature,
            ),
            (
                "tampered body",
                Some(good.clone()),
                "POST",
                A,
                "/report",
                b"bodY",
                NOW,
                AuthError::BodyMismatch,
            ),
            (
                "other path",
                Some(good.clone()),
                "POST",
                A,
                "/state",
                b"body",
                NOW,
                AuthError::BadSignature,
            ),
            (
                "other method",
                Some(good.clone()),
                "GET",
                A,
                "/report",
                b"body",
                NOW,
                AuthError::BadSignature,
            ),
            (
                "other target",
                Some(good.clone()),
                "POST",
                b,
                "/report",
                b"body",
                NOW,
                AuthError::BadSignature,
            ),
            (
                "signed for another agent",
                Some(sign(b"s3cret", "POST", b, "/report", b"body", NOW)),
                "POST",
                b,
                "/report",
                b"body",
                NOW,
                AuthError::WrongTarget,
            ),
            (
                "stale",
                Some(good.clone()),
                "POST",
                A,
                "/report",
                b"body",
                NOW + 31,
                AuthError::Stale,
            ),
            (
                "from the future",
                Some(good.clone()),
                "POST",
                A,
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
                A,
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
                A,
                "/report",
                b"body",
                NOW,
                AuthError::Malformed,
            ),
        ];
        for (name, headers, method, authority, path, body, now, want) in cases {
            assert_eq!(
                v.verify(method, authority, path, headers.as_ref(), body, now),
                Err(want),
                "{name}"
            );
        }
        // Only the tampered body got past the header check, so only its nonce is spent:
        // a fresh genuine request still passes.
        let fresh = sign(b"s3cret", "POST", A, "/report", b"body", NOW);
        assert_eq!(
            v.verify("POST", A, "/report", Some(&fresh), b"body", NOW),
            Ok(())
        );
    }

    #[test]
    fn the_connection_address_is_always_ours() {
        let v = verifier(b"k");
        let local: std::net::SocketAddr = "127.0.0.1:8080".parse().expect("addr");
        for authority in ["127.0.0.1:8080", "localhost:8080"] {
            let h = sign(b"k", "GET", authority, "/state", b"", NOW);
            let got = v.verify_head("GET", authority, Some(local), "/state", Some(&h), NOW);
            assert_eq!(got, Ok(body_digest(b"")), "{authority}");
        }
        let h = sign(b"k", "GET", "127.0.0.1:8081", "/state", b"", NOW);
        let got = v.verify_head(
            "GET",
            "127.0.0.1:8081",
            Some(local),
            "/state",
            Some(&h),
            NOW,
        );
        assert_eq!(got, Err(AuthError::WrongTarget));
    }

    #[test]
    fn nonces_expire_after_the_window() {
        let v = verifier(b"k");
        let a = sign(b"k", "GET", A, "/state", b"", NOW);
        assert_eq!(v.verify("GET", A, "/state", Some(&a), b"", NOW), Ok(()));
        let b = sign(b"k", "GET", A, "/state", b"", NOW + 100);
        assert_eq!(
            v.verify("GET", A, "/state", Some(&b), b"", NOW + 100),
            Ok(())
        );
        let remembered = v.seen_nonces.lock().map(|s| s.len()).unwrap_or(0);
        assert_eq!(remembered, 1, "the first nonce expired and was dropped");
    }

    #[test]
    fn replies_are_bound_to_the_nonce_status_and_body() {
        let sig = sign_reply(b"k", "n1", 200, b"{}");
        assert_eq!(verify_reply(b"k", "n1", 200, b"{}", Some(&sig)), Ok(()));
        for (name, secret, nonce, status, body, sig) in [
            ("unsigned", &b"k"[..], "n1", 200, &b"{}"[..], None),
            ("other secret", b"x", "n1", 200, b"{}", Some(sig.as_str())),
            ("other request", b"k", "n2", 200, b"{}", Some(sig.as_str())),
            ("other status", b"k", "n1", 500, b"{}", Some(sig.as_str())),
            ("other body", b"k", "n1", 200, b"[]", Some(sig.as_str())),
        ] {
            assert!(
                verify_reply(secret, nonce, status, body, sig).is_err(),
                "{name}"
            );
        }
    }
}
