//! TLS for PostgreSQL connections with libpq's meaning of every `sslmode`,
//! on a pure-Rust stack (rustls with the *ring* provider: no system OpenSSL,
//! no C toolchain beyond what *ring* builds).
//!
//! - [`TlsParams`]: the TLS parameters a connection string resolves to
//!   (`sslmode`, `sslrootcert`, `sslcert`/`sslkey`/`sslpassword`,
//!   `sslcrl`/`sslcrldir`, `sslsni`); [`super::connect`] resolves them.
//! - `roots`: the trusted roots (`sslrootcert` file or `system`) and the
//!   revocation lists.
//! - `identity`: the client certificate and its private key (libpq's
//!   permission rule, `sslpassword` for an encrypted key).
//! - [`verify`]: the server-certificate check each `sslmode` asks for.
//! - [`diagnose`]: a failed handshake's rustls error, found in the driver's
//!   error chain, as a typed [`TlsFailure`].
//! - [`make_tls_connect`] puts them together for tokio-postgres and the pool.
//!
//! This module sits under `db/` rather than at the top of `src/`: it is the
//! database connection's TLS and nothing else's (relink serves nothing over
//! TLS), and `ls src/` is meant to show the data's stages. It knows nothing
//! of hosts, passwords or how sessions are opened (`connect` does), so
//! `connect` depends on it and never the other way round.
//!
//! Verification by mode, as in libpq (libpq-ssl.html, "SSL Mode
//! Descriptions"): `verify-full` checks the chain and the host name
//! (an IP address against the certificate's IP addresses); `verify-ca` the
//! chain only; `require`, `prefer` and `allow` check the chain only when a
//! root certificate is configured (libpq's documented fallback for
//! `require`, which its code applies to every mode), and nothing otherwise.

pub mod diagnose;
mod identity;
mod roots;
pub mod verify;

use std::path::PathBuf;
use std::sync::Arc;

use rustls::ClientConfig;

use super::secret::Password;
use crate::text_enum::text_enum;

pub use diagnose::{find_rustls_error, TlsFailure};
pub use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plaintext only.
    Disable,
    /// Plaintext first; TLS if the server refuses plaintext.
    Allow,
    /// TLS if the server offers it, else plaintext (libpq's default).
    Prefer,
    /// TLS or nothing; the certificate is not checked unless a root
    /// certificate is configured (then as `VerifyCa`).
    Require,
    /// TLS, and the server's certificate chains to a trusted root.
    VerifyCa,
    /// `VerifyCa`, and the certificate names the host connected to.
    VerifyFull,
}

text_enum!(SslMode "sslmode" {
    Disable = "disable",
    Allow = "allow",
    Prefer = "prefer",
    Require = "require",
    VerifyCa = "verify-ca",
    VerifyFull = "verify-full",
});

impl SslMode {
    /// Whether the server's certificate must be verified whatever files exist.
    pub fn verifies(self) -> bool {
        matches!(self, Self::VerifyCa | Self::VerifyFull)
    }
}

/// libpq's `sslrootcert`: the trusted roots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCert {
    /// A PEM file of CA certificates (given, or `~/.postgresql/root.crt`).
    File(PathBuf),
    /// The operating system's trust store (`sslrootcert=system`).
    System,
}

/// A client certificate and its private key, both PEM files; the key
/// possibly encrypted, with `sslpassword` to open it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// libpq's `sslpassword` (kept out of `Debug` by [`Password`]).
    pub key_password: Option<Password>,
}

/// Certificate revocation lists the server's certificate is checked
/// against (libpq's `sslcrl` and `sslcrldir`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Revocations {
    /// `sslcrl`, else `~/.postgresql/root.crl` if it exists.
    pub file: Option<PathBuf>,
    /// `sslcrldir`: every CRL file in it.
    pub dir: Option<PathBuf>,
}

impl Revocations {
    pub fn is_empty(&self) -> bool {
        self.file.is_none() && self.dir.is_none()
    }
}

/// The TLS parameters of one connection, as resolved from the connection
/// string, service file, environment and `~/.postgresql/`.
#[derive(Debug, Clone, Copy)]
pub struct TlsParams<'a> {
    pub sslmode: SslMode,
    /// The trusted roots, if any are configured.
    pub rootcert: Option<&'a RootCert>,
    pub client_cert: Option<&'a ClientCert>,
    /// CRLs for the server's certificate (used when the chain is checked).
    pub revocations: &'a Revocations,
    /// libpq's `sslsni`: send the host name in the handshake.
    pub sslsni: bool,
}

impl TlsParams<'_> {
    /// Whether the server's certificate chain is checked: always for
    /// `verify-*`, and — as libpq does — in every other TLS mode when a root
    /// certificate is configured (libpq documents this for `require`; its
    /// code does it for `prefer` and `allow` too).
    pub fn verifies_chain(&self) -> bool {
        self.sslmode.verifies() || (self.sslmode != SslMode::Disable && self.rootcert.is_some())
    }
}

/// A certificate or key file that cannot be used. Messages name the file
/// and the fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {}", .path.display())]
    Unreadable {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {} holds no usable PEM certificate (expected \"-----BEGIN CERTIFICATE-----\" blocks)", .path.display())]
    NoCertificate { what: &'static str, path: PathBuf },
    #[error("no trusted root certificates found in the operating system's store for sslrootcert=system{}: install the CA certificates package (ca-certificates) or point SSL_CERT_FILE at a PEM bundle", detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    NoSystemRoots { detail: Option<String> },
    #[error("private key file {} is not a regular file", .path.display())]
    KeyNotRegular { path: PathBuf },
    #[error("private key file {} has permissions {mode:04o}, so group or others can access it; libpq refuses such a key and so does relink: run chmod 600 {}", .path.display(), .path.display())]
    KeyPermissions { path: PathBuf, mode: u32 },
    #[error("private key file {} holds no PEM or DER private key (PKCS#8, PKCS#1 RSA or SEC1 EC)", .path.display())]
    NoKey { path: PathBuf },
    #[error("private key file {} is encrypted and no sslpassword is set: set sslpassword to its password", .path.display())]
    KeyEncrypted { path: PathBuf },
    #[error("private key file {} cannot be decrypted with sslpassword ({problem}): check the password", .path.display())]
    KeyDecrypt { path: PathBuf, problem: String },
    #[error("private key file {} is encrypted in OpenSSL's traditional format (\"Proc-Type: 4,ENCRYPTED\"), which relink does not read: convert it to encrypted PKCS#8 with `openssl pkcs8 -topk8 -v2 aes-256-cbc -in OLD -out NEW` and point sslkey at NEW", .path.display())]
    KeyLegacyEncryption { path: PathBuf },
    #[error("cannot read the certificate revocation list {} ({problem}): sslcrl and sslcrldir take PEM or DER CRLs, version 2 (with the CRL number and authority key identifier extensions, as CAs issue them)", .path.display())]
    BadCrl { path: PathBuf, problem: String },
    // `problem` is not a `#[source]`: shown once, inside the message, so
    // that the fix stays at the end of the one-line error.
    #[error("client certificate {} and private key {} do not belong together ({problem}): set sslcert and sslkey to a certificate and the private key it was issued for", .cert.display(), .key.display())]
    ClientCert {
        cert: PathBuf,
        key: PathBuf,
        problem: rustls::Error,
    },
    #[error("cannot set up TLS: {0}")]
    Config(#[from] rustls::Error),
}

/// The crypto provider: *ring*, chosen over aws-lc-rs because aws-lc-rs
/// needs cmake (and on some targets nasm) to build; both are pure Rust at
/// run time.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The TLS connector for `info`, for tokio-postgres and deadpool-postgres
/// alike (it is `Clone + Send + Sync`: an `Arc` of the rustls config). It
/// hands the server certificate's hash to tokio-postgres, so SCRAM channel
/// binding (SCRAM-SHA-256-PLUS) works as `channel_binding` asks.
///
/// With `sslmode=disable` the connector is still built (tokio-postgres
/// needs one) but never used, so no file is read.
///
/// # Errors
/// When a certificate or key file cannot be read or used, or a private key
/// is open to group or others.
pub fn make_tls_connect(params: &TlsParams<'_>) -> Result<MakeRustlsConnect, TlsError> {
    Ok(MakeRustlsConnect::new(client_config(params)?))
}

/// The rustls client configuration for `info`.
///
/// # Errors
/// As [`make_tls_connect`].
pub fn client_config(info: &TlsParams<'_>) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let verifier = if info.sslmode == SslMode::Disable {
        verify::PgServerVerifier::no_verification(&provider)
    } else {
        match (info.rootcert, info.verifies_chain()) {
            (Some(root), true) => {
                let (roots, pinned) = roots::load_roots(root)?;
                verify::PgServerVerifier::new(
                    &provider,
                    roots,
                    pinned,
                    info.sslmode == SslMode::VerifyFull,
                )
                .with_crls(roots::load_crls(info.revocations)?)
            }
            // resolve() refuses verify-* without roots; other modes
            // without roots encrypt without checking, as libpq does.
            _ => verify::PgServerVerifier::no_verification(&provider),
        }
    };
    let mut config = builder_for(provider, verifier, info)?;
    // libpq's sslsni (on by default). rustls never sends an IP address.
    config.enable_sni = info.sslsni;
    Ok(config)
}

/// The rustls configuration with `verifier` and the client certificate.
fn builder_for(
    provider: Arc<rustls::crypto::CryptoProvider>,
    verifier: verify::PgServerVerifier,
    info: &TlsParams<'_>,
) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let client_cert = info
        .client_cert
        .filter(|_| info.sslmode != SslMode::Disable);
    Ok(match client_cert {
        Some(client) => {
            let certs = roots::load_certs(&client.cert, "client certificate")?;
            let key = identity::load_key(&client.key, client.key_password.as_ref())?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|problem| TlsError::ClientCert {
                    cert: client.cert.clone(),
                    key: client.key.clone(),
                    problem,
                })?
        }
        None => builder.with_no_client_auth(),
    })
}

#[cfg(test)]
pub(crate) mod tests;
