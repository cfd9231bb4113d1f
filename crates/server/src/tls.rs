//! TLS for both front ends (rustls with the ring provider): a certificate and key, and optionally a CA whose
//! client certificates are required (mutual TLS).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Where the TLS material is.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// PEM CA certificates; when set, clients must present a certificate signed by one of them.
    pub client_ca: Option<PathBuf>,
}

/// What can go wrong setting TLS up; every message names the file.
#[derive(Debug, thiserror::Error)]
#[error("TLS: {0}")]
pub struct TlsError(String);

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError(format!("cannot read {}: {e}", path.display())))
}

impl TlsFiles {
    /// The rustls server configuration for HTTP (ALPN h2 and http/1.1).
    ///
    /// # Errors
    /// [`TlsError`] naming the file that is missing or not PEM of the right kind.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        // Installing twice is harmless; the first provider stays.
        drop(rustls::crypto::ring::default_provider().install_default());
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(&self.cert)?)
            .collect::<Result<_, _>>()
            .map_err(|e| TlsError(format!("{}: {e}", self.cert.display())))?;
        if certs.is_empty() {
            return Err(TlsError(format!("{} holds no PEM certificate", self.cert.display())));
        }
        let key = PrivateKeyDer::from_pem_slice(&read(&self.key)?)
            .map_err(|e| TlsError(format!("{}: no PEM private key ({e})", self.key.display())))?;
        let builder = rustls::ServerConfig::builder();
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(&read(ca)?) {
                    let cert = cert.map_err(|e| TlsError(format!("{}: {e}", ca.display())))?;
                    roots.add(cert).map_err(|e| TlsError(format!("{}: {e}", ca.display())))?;
                }
                let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
                    .build()
                    .map_err(|e| TlsError(format!("{}: {e}", ca.display())))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(certs, key)
            .map_err(|e| TlsError(format!("{} and {}: {e}", self.cert.display(), self.key.display())))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// tonic's TLS configuration for gRPC.
    ///
    /// # Errors
    /// [`TlsError`] naming the unreadable file.
    pub fn grpc_config(&self) -> Result<tonic::transport::ServerTlsConfig, TlsError> {
        drop(rustls::crypto::ring::default_provider().install_default());
        let identity = tonic::transport::Identity::from_pem(read(&self.cert)?, read(&self.key)?);
        let mut config = tonic::transport::ServerTlsConfig::new().identity(identity);
        if let Some(ca) = &self.client_ca {
            config = config.client_ca_root(tonic::transport::Certificate::from_pem(read(ca)?));
        }
        Ok(config)
    }
}
