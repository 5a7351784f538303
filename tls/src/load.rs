//! Building rustls configurations from PEM files.

use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{ClientAuth, ClientTlsFiles, ServerTlsFiles};
use crate::error::TlsError;

/// The one crypto provider of every configuration: ring.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn pem_error(what: &'static str, path: &Path, error: rustls_pki_types::pem::Error) -> TlsError {
    let source = match error {
        rustls_pki_types::pem::Error::Io(source) => source,
        other => std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{other:?}")),
    };
    TlsError::Read { what, path: path.to_path_buf(), source }
}

pub(crate) fn certificates(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|error| pem_error(what, path, error))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| pem_error(what, path, error))?;
    if certificates.is_empty() {
        return Err(TlsError::Empty { what, path: path.to_path_buf() });
    }
    Ok(certificates)
}

pub(crate) fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|error| match error {
        rustls_pki_types::pem::Error::NoItemsFound => {
            TlsError::Empty { what: "private key", path: path.to_path_buf() }
        }
        other => pem_error("private key", path, other),
    })
}

fn roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for certificate in certificates("CA bundle", path)? {
        roots
            .add(certificate)
            .map_err(|source| TlsError::Config { context: "CA bundle", source })?;
    }
    Ok(Arc::new(roots))
}

/// A server configuration from `files`.
pub(crate) fn server_config(files: &ServerTlsFiles) -> Result<ServerConfig, TlsError> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Config { context: "protocol versions", source })?;
    let builder = match (files.client_auth, &files.ca) {
        (ClientAuth::None, _) => builder.with_no_client_auth(),
        (auth, Some(ca)) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider);
            let verifier = match auth {
                ClientAuth::Optional => verifier.allow_unauthenticated(),
                _ => verifier,
            };
            let verifier = verifier.build().map_err(|error| TlsError::Verifier {
                path: ca.clone(),
                reason: error.to_string(),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
        (_, None) => {
            return Err(TlsError::Incomplete("client authentication needs a CA bundle (--tls-ca)"))
        }
    };
    let chain = certificates("certificate chain", &files.cert)?;
    let key = private_key(&files.key)?;
    builder
        .with_single_cert(chain, key)
        .map_err(|source| TlsError::Config { context: "certificate and key", source })
}

/// A client configuration from `files`.
pub(crate) fn client_config(files: &ClientTlsFiles) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let verifier =
        WebPkiServerVerifier::builder_with_provider(roots(&files.ca)?, Arc::clone(&provider))
            .build()
            .map_err(|error| TlsError::Verifier {
                path: files.ca.clone(),
                reason: error.to_string(),
            })?;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Config { context: "protocol versions", source })?
        .with_webpki_verifier(verifier);
    match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(certificates("certificate chain", cert)?, private_key(key)?)
            .map_err(|source| TlsError::Config { context: "client certificate and key", source }),
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(_), None) | (None, Some(_)) => {
            Err(TlsError::Incomplete("a client certificate needs both --tls-cert and --tls-key"))
        }
    }
}
