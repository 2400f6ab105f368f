//! TLS for `wss://` URLs: which certificate authorities the client trusts, and what a refused
//! certificate says.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};

use crate::error::ClientError;

/// The certificate authorities a client trusts for `wss://` URLs.
///
/// [`Tls::default`] trusts the public web's roots (Mozilla's list, built into the client
/// through `webpki-roots`, so it does not depend on the machine's store). Add a private CA
/// (staging, an internal load balancer) with [`Tls::add_ca_pem`] or [`Tls::add_ca_file`];
/// [`Tls::private_only`] trusts nothing but the CAs added to it.
#[derive(Clone)]
pub struct Tls {
    public_roots: bool,
    private: Vec<CertificateDer<'static>>,
    /// Built on the first `wss://` attempt and shared by the later ones.
    built: Arc<OnceLock<Arc<ClientConfig>>>,
}

impl Default for Tls {
    fn default() -> Self {
        Tls {
            public_roots: true,
            private: Vec::new(),
            built: Arc::default(),
        }
    }
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("public_roots", &self.public_roots)
            .field("private_cas", &self.private.len())
            .finish()
    }
}

impl Tls {
    /// Trusts only the CAs added with [`Tls::add_ca_pem`] or [`Tls::add_ca_file`], not the
    /// public web's roots.
    pub fn private_only() -> Tls {
        Tls {
            public_roots: false,
            ..Tls::default()
        }
    }

    /// Also trusts every certificate in `pem` (one or more `BEGIN CERTIFICATE` blocks).
    /// Text without a certificate, or a certificate that does not parse, is a
    /// [`ClientError::Config`].
    pub fn add_ca_pem(mut self, pem: &[u8]) -> Result<Tls, ClientError> {
        let mut added = 0;
        for certificate in CertificateDer::pem_slice_iter(pem) {
            let certificate = certificate.map_err(|error| {
                ClientError::Config(format!("a CA certificate does not parse: {error}"))
            })?;
            // Checked here so a bad CA is a configuration error, not a refused server later.
            let mut probe = RootCertStore::empty();
            probe.add(certificate.clone()).map_err(|error| {
                ClientError::Config(format!("a CA certificate is not usable as a root: {error}"))
            })?;
            self.private.push(certificate);
            added += 1;
        }
        if added == 0 {
            return Err(ClientError::Config(
                "no `BEGIN CERTIFICATE` block in the CA text".to_owned(),
            ));
        }
        self.built = Arc::default();
        Ok(self)
    }

    /// Also trusts every certificate in the PEM file at `path`.
    pub fn add_ca_file(self, path: impl AsRef<Path>) -> Result<Tls, ClientError> {
        let path = path.as_ref();
        let pem = std::fs::read(path).map_err(|error| {
            ClientError::Config(format!("reading the CA file {}: {error}", path.display()))
        })?;
        self.add_ca_pem(&pem)
            .map_err(|error| ClientError::Config(format!("{}: {error}", path.display())))
    }

    /// The rustls settings for this set of roots.
    pub(crate) fn client_config(&self) -> Result<Arc<ClientConfig>, ClientError> {
        if let Some(built) = self.built.get() {
            return Ok(built.clone());
        }
        let mut roots = RootCertStore::empty();
        if self.public_roots {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        for certificate in &self.private {
            roots.add(certificate.clone()).map_err(|error| {
                ClientError::Config(format!("a CA certificate is not usable as a root: {error}"))
            })?;
        }
        if roots.is_empty() {
            return Err(ClientError::Config(
                "a wss:// URL with no trusted certificate authority (Tls::private_only without \
                 a CA)"
                    .to_owned(),
            ));
        }
        // ring, and not the process-wide default provider, which the application may set to
        // something else. rustls deprecates ring's provider for its lack of post-quantum key
        // exchange; aws-lc-rs has it but builds C for minutes and needs cmake. Revisit when a
        // post-quantum group matters more than the build.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| ClientError::Config(format!("TLS settings: {error}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(self.built.get_or_init(|| Arc::new(config)).clone())
    }
}

/// What a failed TLS handshake with `host` means for the client: a refused certificate is
/// final ([`ClientError::Certificate`]); anything else is an ordinary failed attempt. `None`
/// when `error` did not come from TLS.
pub(crate) fn handshake_failure(host: &str, error: &std::io::Error) -> Option<ClientError> {
    let tls = error.get_ref()?.downcast_ref::<rustls::Error>()?;
    Some(match tls {
        rustls::Error::InvalidCertificate(refused) => {
            let hint = match refused {
                rustls::CertificateError::UnknownIssuer => {
                    " (signed by a certificate authority the client does not trust: add a \
                     private CA with `Tls::add_ca_pem`)"
                }
                _ => "",
            };
            ClientError::Certificate(format!(
                "the certificate of `{host}` was refused: {refused}{hint}",
            ))
        }
        rustls::Error::NoCertificatesPresented => {
            ClientError::Certificate(format!("`{host}` presented no certificate"))
        }
        other => ClientError::Connect(format!("the TLS handshake with `{host}` failed: {other}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_without_a_certificate_is_a_configuration_error() {
        for pem in [
            &b""[..],
            b"hello",
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        ] {
            let error = Tls::default().add_ca_pem(pem).expect_err("refused");
            assert!(matches!(error, ClientError::Config(_)), "{error:?}");
        }
    }

    #[test]
    fn a_certificate_block_that_does_not_parse_is_a_configuration_error() {
        let pem = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let error = Tls::default().add_ca_pem(pem).expect_err("refused");
        assert!(matches!(error, ClientError::Config(_)), "{error:?}");
    }

    #[test]
    fn a_missing_ca_file_names_the_file() {
        let error = Tls::default()
            .add_ca_file("/nonexistent/ca.pem")
            .expect_err("refused");
        assert!(error.to_string().contains("/nonexistent/ca.pem"), "{error}");
    }

    #[test]
    fn private_only_without_a_ca_cannot_connect_anywhere() {
        let error = Tls::private_only().client_config().expect_err("refused");
        assert!(matches!(error, ClientError::Config(_)), "{error:?}");
        assert!(Tls::default().client_config().is_ok());
    }

    #[test]
    fn only_tls_errors_are_classified() {
        let plain = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(handshake_failure("h", &plain), None);
        let expired = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::Expired),
        );
        let error = handshake_failure("h", &expired).expect("a TLS error");
        assert!(error.is_fatal(), "{error:?}");
        let alert = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::HandshakeFailure),
        );
        let error = handshake_failure("h", &alert).expect("a TLS error");
        assert!(!error.is_fatal(), "{error:?}");
    }
}
