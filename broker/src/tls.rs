//! TLS for both planes (rustls, ring provider): the listener's certificate and
//! key, and the CA a node trusts when it connects to other nodes.
//!
//! Files are PEM. The key never leaves this module's `ServerConfig`; nothing here
//! logs certificate or key bytes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// A certificate, key or CA file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{key}: cannot read {}: {reason}", path.display())]
    File {
        key: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{key}: {} holds no PEM certificate", path.display())]
    NoCertificate { key: &'static str, path: PathBuf },
    #[error("tls: the certificate and key do not make a server configuration: {0}")]
    Config(String),
}

fn certificates(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::File {
            key,
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            key,
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The listener's TLS acceptor: HTTP/1.1 over TLS 1.2 or 1.3.
///
/// # Errors
/// Unreadable files, no certificate, a key that does not match.
pub fn acceptor(cert_file: &Path, key_file: &Path) -> Result<TlsAcceptor, TlsError> {
    let chain = certificates("tls.cert_file", cert_file)?;
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| TlsError::File {
        key: "tls.key_file",
        path: key_file.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| TlsError::Config(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A `reqwest` client builder for node-to-node requests: rustls, trusting only
/// the CA in `ca_file` (with none, peers are plain HTTP: an `https://` URL fails).
///
/// # Errors
/// An unreadable CA file or one without a certificate.
pub fn peer_client_builder(ca_file: Option<&Path>) -> Result<reqwest::ClientBuilder, TlsError> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false);
    if let Some(path) = ca_file {
        for cert in certificates("tls.ca_file", path)? {
            let cert =
                reqwest::Certificate::from_der(cert.as_ref()).map_err(|e| TlsError::File {
                    key: "tls.ca_file",
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })?;
            builder = builder.add_root_certificate(cert);
        }
    }
    Ok(builder)
}
