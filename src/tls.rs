//! TLS for the agent's ports and its peer client: PEM files named by `--tls-cert-file`,
//! `--tls-key-file` and `--tls-ca-file`, re-read when they change on disk (cert-manager
//! rotates them in place), so new handshakes use the new certificate without a restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// How often the files' modification times are checked, at most.
const RECHECK: Duration = Duration::from_secs(2);

/// The certificate files of one agent (or CLI), as given on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    /// Servers require a client certificate signed by the CA; clients present theirs.
    pub client_auth: bool,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(pub String);

fn read(what: &str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError(format!("cannot read {what} {}: {e}", path.display())))
}

fn certs(what: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError(format!("bad PEM in {what} {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError(format!(
            "no certificate in {what} {}",
            path.display()
        )));
    }
    Ok(certs)
}

impl TlsFiles {
    fn key(&self) -> Result<PrivateKeyDer<'static>, TlsError> {
        let pem = read("--tls-key-file", &self.key)?;
        PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
            TlsError(format!(
                "no usable private key in --tls-key-file {}: {e}",
                self.key.display()
            ))
        })
    }

    fn roots(&self) -> Result<Arc<RootCertStore>, TlsError> {
        let mut roots = RootCertStore::empty();
        for cert in certs("--tls-ca-file", &self.ca)? {
            roots.add(cert).map_err(|e| {
                TlsError(format!(
                    "bad CA certificate in --tls-ca-file {}: {e}",
                    self.ca.display()
                ))
            })?;
        }
        Ok(Arc::new(roots))
    }

    /// The server side of both ports.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let builder = ServerConfig::builder();
        let builder = if self.client_auth {
            let verifier = WebPkiClientVerifier::builder(self.roots()?)
                .build()
                .map_err(|e| TlsError(format!("cannot use --tls-ca-file for client auth: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder
            .with_single_cert(certs("--tls-cert-file", &self.cert)?, self.key()?)
            .map_err(|e| TlsError(format!("certificate and key do not fit: {e}")))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// The client side: peers verified against the CA; our certificate presented for mTLS.
    pub fn client_config(&self) -> Result<ClientConfig, TlsError> {
        let builder = ClientConfig::builder().with_root_certificates(self.roots()?);
        let config = if self.client_auth {
            builder
                .with_client_auth_cert(certs("--tls-cert-file", &self.cert)?, self.key()?)
                .map_err(|e| TlsError(format!("certificate and key do not fit: {e}")))?
        } else {
            builder.with_no_client_auth()
        };
        Ok(config)
    }

    /// Modification times (and sizes) of the three files: a change means "read again".
    fn stamp(&self) -> Vec<Option<(SystemTime, u64)>> {
        [&self.cert, &self.key, &self.ca]
            .into_iter()
            .map(|p| {
                std::fs::metadata(p)
                    .ok()
                    .and_then(|m| Some((m.modified().ok()?, m.len())))
            })
            .collect()
    }
}

struct Cached<T> {
    value: T,
    stamp: Vec<Option<(SystemTime, u64)>>,
    checked: Instant,
}

type Builder<T> = Box<dyn Fn(&TlsFiles) -> Result<T, TlsError> + Send + Sync>;

/// A value built from the files, rebuilt when they change. A rebuild that fails (a
/// half-written file during rotation) keeps the previous value and is tried again.
pub struct Reloading<T> {
    files: TlsFiles,
    build: Builder<T>,
    cached: Mutex<Cached<T>>,
}

impl<T: Clone> Reloading<T> {
    /// Build once now: a bad file is an error at start-up.
    pub fn new(
        files: TlsFiles,
        build: impl Fn(&TlsFiles) -> Result<T, TlsError> + Send + Sync + 'static,
    ) -> Result<Self, TlsError> {
        let stamp = files.stamp();
        let value = build(&files)?;
        Ok(Reloading {
            files,
            build: Box::new(build),
            cached: Mutex::new(Cached {
                value,
                stamp,
                checked: Instant::now(),
            }),
        })
    }

    /// The current value, rebuilt first if the files changed since the last check.
    pub fn current(&self) -> T {
        let mut cached = self
            .cached
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if cached.checked.elapsed() >= RECHECK {
            cached.checked = Instant::now();
            let stamp = self.files.stamp();
            if stamp != cached.stamp {
                match (self.build)(&self.files) {
                    Ok(value) => {
                        tracing::info!(cert = %self.files.cert.display(), "TLS files changed: reloaded");
                        cached.value = value;
                        cached.stamp = stamp;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "TLS files changed but cannot be loaded; keeping the previous ones");
                    }
                }
            }
        }
        cached.value.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_or_bad_files_are_errors_with_the_path() {
        let dir = tempfile::tempdir().expect("dir");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").expect("write");
        let files = TlsFiles {
            cert: dir.path().join("missing.pem"),
            key: junk.clone(),
            ca: junk.clone(),
            client_auth: false,
        };
        let e = files.server_config().expect_err("missing cert");
        assert!(e.0.contains("missing.pem"), "{e}");
        let files = TlsFiles {
            cert: junk.clone(),
            ..files
        };
        let e = files.server_config().expect_err("junk cert");
        assert!(e.0.contains("no certificate in --tls-cert-file"), "{e}");
    }
}
