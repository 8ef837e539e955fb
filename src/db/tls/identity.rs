//! The client's identity: its private key (`sslkey`), read as libpq reads
//! it — PEM or DER, its permissions checked by libpq's rule, an encrypted
//! PKCS#8 key opened with `sslpassword` — for the certificate `sslcert`.

use std::path::Path;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::PrivateKeyDer;

use super::TlsError;
use crate::db::secret::Password;

/// A private key, PEM (PKCS#8, PKCS#1 or SEC1) or DER as libpq accepts,
/// after libpq's permission check: no access for group or others, except
/// that a root-owned key may be group-readable (0640) for system-wide keys.
/// An encrypted PKCS#8 key (`BEGIN ENCRYPTED PRIVATE KEY`, PBES2 as
/// `openssl pkcs8 -topk8 -v2` writes it) is decrypted with `password`
/// (libpq's `sslpassword`).
pub(super) fn load_key(
    path: &Path,
    password: Option<&Password>,
) -> Result<PrivateKeyDer<'static>, TlsError> {
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
pub(super) fn key_mode_too_open(mode: u32, owner: u32) -> bool {
    let forbidden = if owner == 0 { 0o037 } else { 0o077 };
    mode & forbidden != 0
}
