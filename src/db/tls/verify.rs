//! The server-certificate check for each `sslmode`. rustls only offers
//! "verify everything" (chain and name); libpq's modes need two more:
//! `verify-ca` (chain, any name) and `require`/`prefer`/`allow` without a
//! root certificate (nothing). One verifier covers the three levels so the
//! handshake signatures are always checked the same way.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

/// How much of the server's certificate to check.
#[derive(Debug)]
enum Check {
    /// Encryption only (libpq's `require` without a root certificate): any
    /// certificate is accepted.
    Nothing,
    /// The chain must lead to a trusted root; with `name`, the certificate
    /// must also carry the host name (or IP address) connected to.
    Chain {
        roots: Arc<RootCertStore>,
        /// The root file's certificates as given, so that a server
        /// certificate listed there itself is trusted (see `load_roots`).
        pinned: Vec<CertificateDer<'static>>,
        name: bool,
    },
}

/// A [`ServerCertVerifier`] with libpq's `sslmode` semantics.
#[derive(Debug)]
pub struct PgServerVerifier {
    check: Check,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PgServerVerifier {
    /// Checks the chain against `roots` (and `pinned` certificates), and
    /// the name when `check_name` (`verify-full`).
    pub fn new(
        provider: &CryptoProvider,
        roots: RootCertStore,
        pinned: Vec<CertificateDer<'static>>,
        check_name: bool,
    ) -> Self {
        Self {
            check: Check::Chain {
                roots: Arc::new(roots),
                pinned,
                name: check_name,
            },
            algorithms: provider.signature_verification_algorithms,
        }
    }

    /// Accepts any certificate (but still checks that the server holds its
    /// key, through the handshake signature).
    pub fn no_verification(provider: &CryptoProvider) -> Self {
        Self {
            check: Check::Nothing,
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for PgServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Check::Chain {
            roots,
            pinned,
            name,
        } = &self.check
        else {
            return Ok(ServerCertVerified::assertion());
        };
        let cert = ParsedCertificate::try_from(end_entity)?;
        if !pinned.iter().any(|p| p.as_ref() == end_entity.as_ref()) {
            verify_server_cert_signed_by_trust_anchor(
                &cert,
                roots,
                intermediates,
                now,
                self.algorithms.all,
            )?;
        }
        if *name {
            verify_server_name(&cert, server_name)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
