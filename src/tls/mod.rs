//! TLS for listeners: rustls server configs with ALPN h2 + http/1.1 and a
//! certificate chosen by SNI among several (`sni.rs`).

mod sni;

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use sni::SniResolver;

/// Why a certificate pair could not be used; the text names the file.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TlsError {
    #[error("{0}")]
    Cert(String),
    #[error("{0}")]
    Key(String),
}

/// The crypto provider fulcrum uses everywhere (ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a PEM certificate chain and private key and checks that they match.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let cert_path = cert.display();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| TlsError::Cert(format!("cannot read certificate {cert_path}: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Cert(format!("invalid PEM in {cert_path}: {e}")))?;
    if chain.is_empty() {
        return Err(TlsError::Cert(format!(
            "no certificate found in {cert_path}"
        )));
    }
    webpki::EndEntityCert::try_from(&chain[0])
        .map_err(|e| TlsError::Cert(format!("invalid certificate in {cert_path}: {e}")))?;
    let key_path = key.display();
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| TlsError::Key(format!("cannot read private key {key_path}: {e}")))?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| {
        TlsError::Key(format!(
            "private key {key_path} does not fit certificate {cert_path}: {e}"
        ))
    })
}

/// Builds the rustls server config of one listener from its certificate
/// and key files, in order of preference; `resumption` off: no session is
/// kept and no ticket sent.
pub fn server_config<'a>(
    pairs: impl IntoIterator<Item = (&'a Path, &'a Path)>,
    resumption: bool,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certificates = pairs
        .into_iter()
        .map(|(cert, key)| load_certified_key(cert, key).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()?;
    let mut server = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Cert(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver::new(certificates)));
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    if !resumption {
        server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        server.send_tls13_tickets = 0;
    }
    Ok(Arc::new(server))
}
