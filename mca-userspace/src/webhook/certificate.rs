//! The webhook's serving certificate, read from a `kubernetes.io/tls` Secret's files
//! (`tls.crt`, `tls.key`) and read again when they change: the operator rotates it before
//! expiry and the kubelet swaps the mounted files, so new handshakes get the new one without
//! a restart.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::SystemTime,
};

use rustls::{
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};

/// Why the certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Not a PEM certificate chain and private key rustls can use.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
}

/// The certificate and key files, and what was last loaded from them.
#[derive(Debug)]
pub struct FileCertificate {
    cert: PathBuf,
    key: PathBuf,
    loaded: Mutex<(Option<SystemTime>, Arc<CertifiedKey>)>,
}

impl FileCertificate {
    /// Loads `cert` (PEM chain) and `key` (PEM private key).
    pub fn load(cert: &Path, key: &Path) -> Result<Self, Error> {
        let stamp = stamp(cert, key);
        let certified = read(cert, key)?;
        Ok(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            loaded: Mutex::new((stamp, Arc::new(certified))),
        })
    }

    /// The current certificate, read again if the files changed since.
    fn current(&self) -> Arc<CertifiedKey> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        let now = stamp(&self.cert, &self.key);
        if now != loaded.0 {
            match read(&self.cert, &self.key) {
                Ok(certified) => {
                    tracing::info!(cert = %self.cert.display(), "serving certificate reloaded");
                    *loaded = (now, Arc::new(certified));
                }
                // Half-written files during a swap: keep serving the old pair.
                Err(error) => tracing::warn!(%error, "serving certificate not reloaded"),
            }
        }
        Arc::clone(&loaded.1)
    }
}

impl ResolvesServerCert for FileCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// When the files last changed (the later of the two).
fn stamp(cert: &Path, key: &Path) -> Option<SystemTime> {
    let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    modified(cert).max(modified(key))
}

fn read(cert: &Path, key: &Path) -> Result<CertifiedKey, Error> {
    let bytes = |path: &Path| {
        std::fs::read(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })
    };
    let invalid = |path: &Path, message: String| Error::Invalid {
        path: path.to_owned(),
        message,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes(cert)?)
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(invalid(cert, "no certificate in it".to_owned()));
    }
    let private =
        PrivateKeyDer::from_pem_slice(&bytes(key)?).map_err(|e| invalid(key, e.to_string()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&private)
        .map_err(|e| invalid(key, e.to_string()))?;
    Ok(CertifiedKey::new(chain, signing))
}
