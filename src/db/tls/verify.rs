//! The server-certificate check for each `sslmode`. rustls only offers
//! "verify everything" (chain and name); libpq's modes need two more:
//! `verify-ca` (chain, any name) and `require`/`prefer`/`allow` without a
//! root certificate (nothing). One verifier covers the three levels so the
//! handshake signatures are always checked the same way. With `sslcrl` or
//! `sslcrldir`, a chain check also asks the revocation lists, as libpq's
//! OpenSSL does (every certificate of the chain, a certificate whose issuer
//! has no list refused, an expired list refused).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, ServerName, UnixTime};
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
        /// Revocation lists (`sslcrl`, `sslcrldir`); none: no revocation
        /// check.
        crls: Vec<webpki::CertRevocationList<'static>>,
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
                crls: Vec::new(),
            },
            algorithms: provider.signature_verification_algorithms,
        }
    }

    /// Checks the chain against revocation lists too (parsed by the caller
    /// already: a list webpki cannot read is skipped here).
    #[must_use]
    pub fn with_crls(mut self, lists: Vec<CertificateRevocationListDer<'static>>) -> Self {
        if let Check::Chain { crls, .. } = &mut self.check {
            *crls = lists
                .iter()
                .filter_map(|der| webpki::OwnedCertRevocationList::from_der(der.as_ref()).ok())
                .map(webpki::CertRevocationList::from)
                .collect();
        }
        self
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
            crls,
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
            if !crls.is_empty() {
                check_revocation(
                    end_entity,
                    intermediates,
                    roots,
                    crls,
                    now,
                    &self.algorithms,
                )?;
            }
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

/// The chain checked again with revocation lists: rustls's own check
/// (above) has no lists, so webpki's is called directly with them, and
/// its revocation errors are given rustls's names.
fn check_revocation(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    roots: &RootCertStore,
    crls: &[webpki::CertRevocationList<'static>],
    now: UnixTime,
    algorithms: &WebPkiSupportedAlgorithms,
) -> Result<(), rustls::Error> {
    use rustls::CertificateError;
    let cert = webpki::EndEntityCert::try_from(end_entity).map_err(|e| {
        rustls::Error::General(format!("cannot parse the server's certificate: {e}"))
    })?;
    let lists: Vec<&webpki::CertRevocationList<'_>> = crls.iter().collect();
    let Ok(builder) = webpki::RevocationOptionsBuilder::new(&lists) else {
        return Ok(());
    };
    let revocation = builder
        .with_depth(webpki::RevocationCheckDepth::Chain)
        .with_status_policy(webpki::UnknownStatusPolicy::Deny)
        .with_expiration_policy(webpki::ExpirationPolicy::Enforce)
        .build();
    cert.verify_for_usage(
        algorithms.all,
        &roots.roots,
        intermediates,
        now,
        webpki::KeyUsage::server_auth(),
        Some(revocation),
        None,
    )
    .map(drop)
    .map_err(|e| {
        rustls::Error::InvalidCertificate(match e {
            webpki::Error::CertRevoked => CertificateError::Revoked,
            webpki::Error::UnknownRevocationStatus => CertificateError::UnknownRevocationStatus,
            webpki::Error::CrlExpired { .. } => CertificateError::ExpiredRevocationList,
            other => CertificateError::Other(rustls::OtherError(Arc::new(other))),
        })
    })
}
