//! The trusted roots (`sslrootcert`: a PEM file, or `system` for the
//! operating system's store) and the certificate revocation lists
//! (`sslcrl`, `sslcrldir`) the server's certificate is checked against.

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer};
use rustls::RootCertStore;

use super::{Revocations, RootCert, TlsError};

/// The trusted roots, and for a file also its certificates as given: a
/// server whose certificate is itself in the file (a self-signed server
/// certificate copied into `root.crt`, a common setup) is trusted as
/// OpenSSL, and so libpq, trusts it; webpki alone would not.
pub(super) fn load_roots(
    root: &RootCert,
) -> Result<(RootCertStore, Vec<CertificateDer<'static>>), TlsError> {
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
pub(super) fn load_certs(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
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
pub(super) fn load_crls(
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
