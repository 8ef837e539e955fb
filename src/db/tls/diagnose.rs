//! A failed handshake, told by the type of its rustls error: which of the
//! server-certificate checks failed, or which alert the server sent. The
//! error is found in the driver's error chain, where tokio-rustls wraps it
//! in an `io::Error`. What to do about each is the caller's message
//! (`db::connect::diagnose`).

use rustls::{AlertDescription, CertificateError};

/// What went wrong in a TLS handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFailure {
    /// The server's certificate does not name the host connected to.
    NameMismatch,
    /// The server's certificate is expired or not yet valid.
    Expired,
    /// A revocation list revokes the server's certificate (`revoked`), or
    /// cannot vouch for it (no list for an issuer, a list out of date).
    Revocation { revoked: bool },
    /// The server's certificate does not chain to a trusted root.
    NotTrusted,
    /// The server refused the client certificate as revoked.
    ClientCertRevoked,
    /// The server ended the handshake with an alert about certificates or
    /// access: typically a client certificate it wants or refuses.
    Refused,
    /// Any other failure.
    Other,
}

impl TlsFailure {
    /// The failure `err` stands for.
    pub fn of(err: &rustls::Error) -> Self {
        match err {
            rustls::Error::InvalidCertificate(cert) => match cert {
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => Self::NameMismatch,
                CertificateError::Expired
                | CertificateError::ExpiredContext { .. }
                | CertificateError::NotValidYet
                | CertificateError::NotValidYetContext { .. } => Self::Expired,
                CertificateError::Revoked => Self::Revocation { revoked: true },
                CertificateError::UnknownRevocationStatus
                | CertificateError::ExpiredRevocationList
                | CertificateError::ExpiredRevocationListContext { .. } => {
                    Self::Revocation { revoked: false }
                }
                _ => Self::NotTrusted,
            },
            rustls::Error::AlertReceived(AlertDescription::CertificateRevoked) => {
                Self::ClientCertRevoked
            }
            rustls::Error::AlertReceived(
                AlertDescription::BadCertificate
                | AlertDescription::CertificateRequired
                | AlertDescription::UnknownCA
                | AlertDescription::CertificateUnknown
                | AlertDescription::UnsupportedCertificate
                | AlertDescription::AccessDenied
                | AlertDescription::HandshakeFailure,
            ) => Self::Refused,
            _ => Self::Other,
        }
    }
}

/// The rustls error in `err`'s source chain. tokio-rustls wraps it in an
/// `io::Error`, whose `source()` skips the wrapped error itself, so each
/// `io::Error` is opened with `get_ref()`.
pub fn find_rustls_error<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = err.source();
    while let Some(current) = cause {
        if let Some(tls) = current.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(inner) = current
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
                return Some(tls);
            }
        }
        cause = current.source();
    }
    None
}
