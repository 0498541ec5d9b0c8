//! https for both clients (feature `tls`): rustls with the `ring` crypto provider.
//!
//! The finished rustls config is handed to reqwest, so the process-wide default provider is
//! never installed or read: an application that picks another provider for itself is not
//! affected. Without the feature the same names exist, and a CA file is a configuration error.

use std::error::Error as StdError;
use std::path::Path;

use crate::error::Error;

/// The TLS settings of a client: whom it trusts.
#[cfg(feature = "tls")]
#[derive(Clone)]
pub(crate) struct Tls {
    config: rustls::ClientConfig,
}

#[cfg(feature = "tls")]
impl Tls {
    /// Trust only the certificates in `ca_file` (PEM), like the Python client with
    /// `LEITSTAND_CA_FILE`; without one, the system's trust store.
    pub fn new(ca_file: Option<&Path>) -> Result<Tls, Error> {
        use std::sync::Arc;

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config(format!("cannot set up TLS: {e}")))?;
        let builder = match ca_file {
            Some(path) => builder.with_root_certificates(load_roots(path)?),
            None => {
                let verifier = rustls_platform_verifier::Verifier::new(provider).map_err(|e| {
                    Error::Config(format!("cannot read the system's TLS trust store: {e}"))
                })?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(verifier))
            }
        };
        Ok(Tls {
            config: builder.with_no_client_auth(),
        })
    }

    /// The rustls config for `reqwest`'s `tls_backend_preconfigured`.
    pub fn rustls_config(&self) -> rustls::ClientConfig {
        self.config.clone()
    }
}

#[cfg(feature = "tls")]
fn load_roots(path: &Path) -> Result<rustls::RootCertStore, Error> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    let invalid = |why: String| {
        Error::Config(format!(
            "LEITSTAND_CA_FILE/ca_file {}: {why}",
            path.display()
        ))
    };
    // Read first: the PEM parser's own message for a missing file does not name the cause.
    let pem = std::fs::read(path).map_err(|e| invalid(format!("cannot be read ({e})")))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| invalid(format!("is not valid PEM ({e:?})")))?;
        roots
            .add(cert)
            .map_err(|e| invalid(format!("holds a certificate rustls cannot use ({e})")))?;
    }
    if roots.is_empty() {
        return Err(invalid(
            "holds no certificate (expected PEM: -----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    Ok(roots)
}

/// Without the `tls` feature: nothing to configure, and a CA file cannot be used.
#[cfg(not(feature = "tls"))]
#[derive(Clone)]
pub(crate) struct Tls;

#[cfg(not(feature = "tls"))]
impl Tls {
    pub fn new(ca_file: Option<&Path>) -> Result<Tls, Error> {
        match ca_file {
            Some(path) => Err(Error::Config(format!(
                "LEITSTAND_CA_FILE/ca_file {} is set, but this build has no TLS: enable the \
                 leitstand_producer crate's `tls` feature",
                path.display()
            ))),
            None => Ok(Tls),
        }
    }
}

/// Whether a failed attempt failed in TLS itself (untrusted or invalid certificate, a server
/// that does not speak TLS): retrying cannot fix that, the configuration must change.
pub(crate) fn is_tls_failure(error: &(dyn StdError + 'static)) -> bool {
    #[cfg(feature = "tls")]
    {
        let mut next = Some(error);
        while let Some(error) = next {
            if error.is::<rustls::Error>() {
                return true;
            }
            // rustls errors arrive wrapped in (nested) io::Errors, whose `source()` skips the
            // wrapped error itself: descend into it instead.
            next = match error.downcast_ref::<std::io::Error>() {
                Some(io) => io.get_ref().map(|inner| inner as &(dyn StdError + 'static)),
                None => error.source(),
            };
        }
        false
    }
    #[cfg(not(feature = "tls"))]
    {
        let _ = error;
        false
    }
}
