//! TLS for PostgreSQL connections with libpq's meaning of every `sslmode`,
//! on a pure-Rust stack (rustls with the *ring* provider: no system OpenSSL,
//! no C toolchain beyond what *ring* builds), and connecting one session
//! the way libpq does (hosts in order, `target_session_attrs`, the password
//! file per host, `allow`/`prefer` fallbacks), for single connections and
//! the pool alike.
//!
//! - [`make_tls_connect`] builds the connector for a [`ConnInfo`]: the
//!   trusted roots (`sslrootcert` file or `system`), the server-certificate
//!   check the `sslmode` asks for ([`verify::PgServerVerifier`]) with the
//!   revocation lists of `sslcrl`/`sslcrldir`, the client certificate
//!   (`sslcert`/`sslkey`, the key decrypted with `sslpassword`) and
//!   `sslsni`.
//! - [`Connector`] connects one session and builds the pool's manager.
//! - [`diagnose`] turns a failed connection into a cause and a fix.
//!
//! Verification by mode, as in libpq (libpq-ssl.html, "SSL Mode
//! Descriptions"): `verify-full` checks the chain and the host name
//! (an IP address against the certificate's IP addresses); `verify-ca` the
//! chain only; `require`, `prefer` and `allow` check the chain only when a
//! root certificate is configured (libpq's documented fallback for
//! `require`, which its code applies to every mode), and nothing otherwise.

mod connect;
mod diagnose;
pub mod verify;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use super::conninfo::{ConnInfo, Password, Revocations, RootCert, SslMode};

pub use connect::{ConnectError, Connector, HostFailure, SessionOptions};
pub use diagnose::{diagnose, explain, Problem};
pub use tokio_postgres_rustls::MakeRustlsConnect;

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
pub fn make_tls_connect(info: &ConnInfo) -> Result<MakeRustlsConnect, TlsError> {
    Ok(MakeRustlsConnect::new(client_config(info)?))
}

/// The rustls client configuration for `info`.
///
/// # Errors
/// As [`make_tls_connect`].
pub fn client_config(info: &ConnInfo) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let verifier = if info.sslmode == SslMode::Disable {
        verify::PgServerVerifier::no_verification(&provider)
    } else {
        match (&info.rootcert, info.verifies_chain()) {
            (Some(root), true) => {
                let (roots, pinned) = load_roots(root)?;
                verify::PgServerVerifier::new(
                    &provider,
                    roots,
                    pinned,
                    info.sslmode == SslMode::VerifyFull,
                )
                .with_crls(load_crls(&info.revocations)?)
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
    info: &ConnInfo,
) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let client_cert = info
        .client_cert
        .as_ref()
        .filter(|_| info.sslmode != SslMode::Disable);
    Ok(match client_cert {
        Some(client) => {
            let certs = load_certs(&client.cert, "client certificate")?;
            let key = load_key(&client.key, client.key_password.as_ref())?;
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

/// The trusted roots, and for a file also its certificates as given: a
/// server whose certificate is itself in the file (a self-signed server
/// certificate copied into `root.crt`, a common setup) is trusted as
/// OpenSSL, and so libpq, trusts it; webpki alone would not.
fn load_roots(root: &RootCert) -> Result<(RootCertStore, Vec<CertificateDer<'static>>), TlsError> {
    let mut store = RootCertStore::empty();
    match root {
        RootCert::System => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(TlsError::NoSystemRoots {
                    detail: found.errors.first().map(ToString::to_string),
                });
            }
            Ok((store, Vec::new()))
        }
        RootCert::File(path) => {
            let certs = load_certs(path, "root certificate file")?;
            let (added, _) = store.add_parsable_certificates(certs.iter().cloned());
            if added == 0 {
                return Err(TlsError::NoCertificate {
                    what: "root certificate file",
                    path: path.clone(),
                });
            }
            Ok((store, certs))
        }
    }
}

/// All certificates of a PEM file.
fn load_certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Unreadable {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// Every CRL of `sslcrl` (a PEM file may hold several, or one DER CRL) and
/// of the files in `sslcrldir` (libpq wants the directory prepared with
/// `openssl rehash`; relink reads every file in it, whatever its name).
fn load_crls(
    revocations: &Revocations,
) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let mut files = Vec::new();
    files.extend(revocations.file.clone());
    if let Some(dir) = &revocations.dir {
        let entries = std::fs::read_dir(dir).map_err(|source| TlsError::Unreadable {
            what: "CRL directory",
            path: dir.clone(),
            source,
        })?;
        let mut found: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        found.sort();
        files.extend(found);
    }
    let mut crls = Vec::new();
    for path in files {
        let bytes = std::fs::read(&path).map_err(|source| TlsError::Unreadable {
            what: "certificate revocation list",
            path: path.clone(),
            source,
        })?;
        let pem: Vec<_> = CertificateRevocationListDer::pem_slice_iter(&bytes)
            .filter_map(Result::ok)
            .collect();
        let found = if pem.is_empty() {
            vec![CertificateRevocationListDer::from(bytes)]
        } else {
            pem
        };
        for crl in found {
            // Parsed here, so a CRL webpki cannot use is refused by name
            // before connecting rather than at the handshake.
            webpki::OwnedCertRevocationList::from_der(crl.as_ref()).map_err(|e| {
                TlsError::BadCrl {
                    path: path.clone(),
                    problem: format!("{e:?}"),
                }
            })?;
            crls.push(crl);
        }
    }
    Ok(crls)
}

/// A private key, PEM (PKCS#8, PKCS#1 or SEC1) or DER as libpq accepts,
/// after libpq's permission check: no access for group or others, except
/// that a root-owned key may be group-readable (0640) for system-wide keys.
/// An encrypted PKCS#8 key (`BEGIN ENCRYPTED PRIVATE KEY`, PBES2 as
/// `openssl pkcs8 -topk8 -v2` writes it) is decrypted with `password`
/// (libpq's `sslpassword`).
fn load_key(path: &Path, password: Option<&Password>) -> Result<PrivateKeyDer<'static>, TlsError> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(path).map_err(|source| TlsError::Unreadable {
        what: "private key file",
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_file() {
        return Err(TlsError::KeyNotRegular {
            path: path.to_path_buf(),
        });
    }
    if key_mode_too_open(meta.mode(), meta.uid()) {
        return Err(TlsError::KeyPermissions {
            path: path.to_path_buf(),
            mode: meta.mode() & 0o777,
        });
    }
    let bytes = std::fs::read(path).map_err(|source| TlsError::Unreadable {
        what: "private key file",
        path: path.to_path_buf(),
        source,
    })?;
    if let Some(encrypted) = encrypted_pkcs8(&bytes) {
        let Some(password) = password else {
            return Err(TlsError::KeyEncrypted {
                path: path.to_path_buf(),
            });
        };
        return decrypt_key(&encrypted, password).map_err(|problem| TlsError::KeyDecrypt {
            path: path.to_path_buf(),
            problem,
        });
    }
    if bytes
        .windows(b"Proc-Type: 4,ENCRYPTED".len())
        .any(|w| w == b"Proc-Type: 4,ENCRYPTED")
    {
        return Err(TlsError::KeyLegacyEncryption {
            path: path.to_path_buf(),
        });
    }
    PrivateKeyDer::from_pem_slice(&bytes)
        .ok()
        .or_else(|| PrivateKeyDer::try_from(bytes).ok())
        .ok_or_else(|| TlsError::NoKey {
            path: path.to_path_buf(),
        })
}

/// The DER of an encrypted PKCS#8 key, PEM (`ENCRYPTED PRIVATE KEY`) or
/// DER; None for anything else.
fn encrypted_pkcs8(bytes: &[u8]) -> Option<Vec<u8>> {
    use pkcs8::der::pem::PemLabel as _;
    let der = match pkcs8::der::pem::decode_vec(bytes) {
        Ok((label, der)) if label == pkcs8::EncryptedPrivateKeyInfo::PEM_LABEL => der,
        Ok(_) => return None,
        Err(_) => bytes.to_vec(),
    };
    pkcs8::EncryptedPrivateKeyInfo::try_from(der.as_slice())
        .is_ok()
        .then_some(der)
}

/// Decrypts an encrypted PKCS#8 key; the problem in words on failure (a
/// wrong password shows as a padding or decoding error).
fn decrypt_key(der: &[u8], password: &Password) -> Result<PrivateKeyDer<'static>, String> {
    let info = pkcs8::EncryptedPrivateKeyInfo::try_from(der).map_err(|e| e.to_string())?;
    let plain = info
        .decrypt(password.expose())
        .map_err(|e| format!("{e}; a wrong password, or an encryption scheme other than PBES2"))?;
    Ok(PrivateKeyDer::Pkcs8(plain.as_bytes().to_vec().into()))
}

/// libpq's rule (fe-secure-openssl.c): a key owned by root may have mode
/// 0640 or less; any other key 0600 or less.
fn key_mode_too_open(mode: u32, owner: u32) -> bool {
    let forbidden = if owner == 0 { 0o037 } else { 0o077 };
    mode & forbidden != 0
}

#[cfg(test)]
mod tests;
