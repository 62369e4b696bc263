//! STARTTLS's client side: the rustls configurations for opportunistic and required TLS, and the handshake.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{self, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, DigitallySignedStruct, ProtocolVersion, RootCertStore, SignatureScheme,
};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::options::{ClientOptions, TlsPolicy};

/// The TLS client configurations of one transport, built once: loading the system's
/// roots reads hundreds of certificates.
pub struct TlsSetup {
    provider: Arc<CryptoProvider>,
    /// Any certificate is accepted (opportunistic TLS).
    opportunistic: TlsConnector,
    /// Certificates must chain to a trusted root and name the MX host (required TLS).
    /// Built when the transport is made if its policy is required, else at the first
    /// handshake of a route that requires TLS; an error (an unreadable CA file) fails
    /// those handshakes, never one that falls back to any certificate.
    verified: OnceLock<Result<TlsConnector, String>>,
    ca_file: Option<PathBuf>,
}

impl TlsSetup {
    /// Builds the configurations `options` needs; the error says what could not be read.
    pub fn new(options: &ClientOptions) -> Result<Self, String> {
        let provider = Arc::new(crypto::aws_lc_rs::default_provider());
        let opportunistic = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider.clone())))
            .with_no_client_auth();
        let setup = Self {
            provider,
            opportunistic: TlsConnector::from(Arc::new(opportunistic)),
            verified: OnceLock::new(),
            ca_file: options.ca_file.clone(),
        };
        if options.tls == TlsPolicy::Required {
            setup.verified()?;
        }
        Ok(setup)
    }

    /// The configuration that checks certificates, built at its first use.
    fn verified(&self) -> Result<&TlsConnector, String> {
        self.verified
            .get_or_init(|| {
                let roots = trusted_roots(self.ca_file.as_deref())?;
                let config = ClientConfig::builder_with_provider(self.provider.clone())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| e.to_string())?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                Ok(TlsConnector::from(Arc::new(config)))
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Runs the handshake on `tcp`. Under required TLS the certificate must be valid
    /// for `mx` (or, when `mx` is not a DNS name, for `address`).
    pub async fn handshake(
        &self,
        policy: TlsPolicy,
        mx: &str,
        address: IpAddr,
        tcp: TcpStream,
    ) -> Result<TlsStream<TcpStream>, String> {
        let connector = match policy {
            TlsPolicy::Required => self.verified()?,
            _ => &self.opportunistic,
        };
        let name = ServerName::try_from(mx.trim_end_matches('.').to_owned())
            .unwrap_or_else(|_| ServerName::IpAddress(address.into()));
        connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())
    }
}

/// The version a TLS connection negotiated, as outcomes report it.
pub fn version_name(stream: &TlsStream<TcpStream>) -> &'static str {
    match stream.get_ref().1.protocol_version() {
        Some(ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "TLS",
    }
}

/// The system's roots (Debian's ca-certificates) plus the configured CA file.
fn trusted_roots(ca_file: Option<&Path>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    // Unreadable system certificates are skipped, as every TLS client does; a CA
    // file the user named must be read whole.
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "ca_file {}: no PEM certificate in it",
                path.display()
            ));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
        }
    }
    if roots.is_empty() {
        return Err(
            "tls=\"required\" but no trusted root certificates were found: install \
             ca-certificates or give ca_file"
                .into(),
        );
    }
    Ok(roots)
}

/// Opportunistic TLS (RFC 7435): the certificate is not checked, because an MX found
/// through plain DNS cannot be authenticated anyway, and refusing would only push the
/// mail to plaintext. The handshake signatures are still verified, so the session key
/// belongs to whoever holds the certificate's key.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
