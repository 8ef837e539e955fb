//! The one source of the tests' certificates: rcgen, in Rust. The unit
//! tests (`src/db/tls/tests.rs`) and the integration tests
//! (`tests/it/libpq.rs`) make theirs with it in process, and
//! `scripts/pg-server tls` writes the TLS server's set with
//! `examples/test_certs.rs` ([`write_server_set`]), which includes this
//! file. Keys are ECDSA P-256 (PKCS#8), which PostgreSQL, libpq and
//! rustls all read.

#![allow(dead_code)] // Each includer uses its part.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams,
    SerialNumber, SigningKey as _,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest as _, Sha256};

/// A certificate authority.
pub struct Ca {
    pub issuer: CertifiedIssuer<'static, KeyPair>,
    /// The subject's common name.
    name: String,
}

impl Ca {
    /// A self-signed CA with subject `CN=name`.
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("key");
        Self {
            issuer: CertifiedIssuer::self_signed(params, key).expect("CA"),
            name: name.to_owned(),
        }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf certificate for `names` (DNS names or IP addresses).
    pub fn issue(&self, names: &[&str]) -> Leaf {
        self.issue_with(names, |_| {})
    }

    /// A leaf for `names`, its parameters changed by `adjust` first.
    pub fn issue_with(&self, names: &[&str], adjust: impl FnOnce(&mut CertificateParams)) -> Leaf {
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .expect("params");
        adjust(&mut params);
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        Leaf::new(cert.der().clone(), cert.pem(), &key)
    }

    /// A CRL (version 2, with the CRL number and authority key identifier
    /// extensions, as CAs issue them) revoking `serials`, valid from the
    /// start of year `from` to the start of year `until`.
    pub fn crl(&self, serials: &[u64], from: i32, until: i32) -> String {
        self.crl_of(
            &serials
                .iter()
                .map(|s| SerialNumber::from(*s))
                .collect::<Vec<_>>(),
            from,
            until,
        )
    }

    fn crl_of(&self, serials: &[SerialNumber], from: i32, until: i32) -> String {
        let params = CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(from, 1, 1),
            next_update: rcgen::date_time_ymd(until, 1, 1),
            crl_number: SerialNumber::from(1_u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|serial| RevokedCertParams {
                    serial_number: serial.clone(),
                    revocation_time: rcgen::date_time_ymd(from, 1, 1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params
            .signed_by(&self.issuer)
            .expect("CRL")
            .pem()
            .expect("CRL PEM")
    }

    /// An empty CRL of version 1 (no version field, no extensions), which
    /// rcgen does not write: encoded here and signed with the CA's key.
    pub fn v1_crl(&self) -> Vec<u8> {
        let algorithm = tlv(0x30, &tlv(0x06, &ECDSA_WITH_SHA256));
        let mut tbs = algorithm.clone();
        tbs.extend(subject_of(self.issuer.der()));
        tbs.extend(tlv(0x17, b"240101000000Z"));
        tbs.extend(tlv(0x17, b"491231000000Z"));
        let tbs = tlv(0x30, &tbs);
        let signature = self.issuer.key().sign(&tbs).expect("sign");
        let mut bits = vec![0];
        bits.extend(signature);
        let mut list = tbs;
        list.extend(algorithm);
        list.extend(tlv(0x03, &bits));
        tlv(0x30, &list)
    }

    /// OpenSSL's hash of this CA's subject (`openssl x509 -subject_hash`),
    /// the name `openssl rehash` gives its CRLs (`<hash>.r0`) in a
    /// directory for `sslcrldir`: SHA-1 of the subject's canonical encoding
    /// (its RDN sets, values as lowercased UTF8String with white space
    /// folded; here the one CN), its first four bytes little-endian.
    pub fn subject_hash(&self) -> String {
        let value = self
            .name
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase();
        let mut attribute = tlv(0x06, &COMMON_NAME);
        attribute.extend(tlv(0x0c, value.as_bytes()));
        let canonical = tlv(0x31, &tlv(0x30, &attribute));
        let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &canonical);
        let digest = digest.as_ref();
        format!(
            "{:08x}",
            u32::from_le_bytes([digest[0], digest[1], digest[2], digest[3]])
        )
    }
}

/// A leaf certificate and its key.
pub struct Leaf {
    pub cert: CertificateDer<'static>,
    pub cert_pem: String,
    pub key_pem: String,
    pub key_der: Vec<u8>,
}

impl Leaf {
    fn new(cert: CertificateDer<'static>, cert_pem: String, key: &KeyPair) -> Self {
        Self {
            cert,
            cert_pem,
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
        }
    }

    /// A self-signed leaf for `names`.
    pub fn self_signed(names: &[&str]) -> Self {
        let params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .expect("params");
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("self-signed");
        Self::new(cert.der().clone(), cert.pem(), &key)
    }

    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key_der.clone().into())
    }

    /// The key encrypted with `password` (PKCS#8, PBES2 with PBKDF2-SHA256
    /// and AES-256-CBC, as `openssl pkcs8 -topk8 -v2 aes-256-cbc` writes
    /// it). Salt and IV come from the key itself: a throwaway test key
    /// needs no randomness beyond its own.
    pub fn encrypted_key_pem(&self, password: &str) -> String {
        let seed = Sha256::digest(&self.key_der);
        let salt = &seed[..16];
        let iv: [u8; 16] = seed[16..32].try_into().expect("16 bytes");
        let params = pkcs8::pkcs5::pbes2::Parameters::pbkdf2_sha256_aes256cbc(2048, salt, &iv)
            .expect("PBES2 parameters");
        pkcs8::PrivateKeyInfo::try_from(self.key_der.as_slice())
            .expect("PKCS#8")
            .encrypt_with_params(params, password)
            .expect("encrypt")
            .to_pem("ENCRYPTED PRIVATE KEY", pkcs8::LineEnding::LF)
            .expect("PEM")
            .to_string()
    }
}

/// A server certificate for `name` (serverAuth), signed by `ca`.
pub fn server_cert(ca: &Ca, name: &str) -> (Leaf, SerialNumber) {
    leaf_for(ca, name, ExtendedKeyUsagePurpose::ServerAuth)
}

/// A client certificate for user `user` (its CN; clientAuth), signed by
/// `ca`.
pub fn client_cert(ca: &Ca, user: &str) -> (Leaf, SerialNumber) {
    leaf_for(ca, user, ExtendedKeyUsagePurpose::ClientAuth)
}

fn leaf_for(ca: &Ca, name: &str, usage: ExtendedKeyUsagePurpose) -> (Leaf, SerialNumber) {
    let serial = random_serial();
    let server = usage == ExtendedKeyUsagePurpose::ServerAuth;
    let names: &[&str] = if server { &[name] } else { &[] };
    let leaf = ca.issue_with(names, |params| {
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(serial.clone());
    });
    (leaf, serial)
}

/// A serial number never given twice: 16 bytes of a fresh key's hash.
fn random_serial() -> SerialNumber {
    let key = KeyPair::generate().expect("key");
    let mut bytes = Sha256::digest(key.serialize_der())[..16].to_vec();
    bytes[0] &= 0x7f; // positive
    SerialNumber::from_slice(&bytes)
}

/// The TLS server's certificates (see `scripts/pg-server tls`), written
/// into `dir` (which must exist): keys 0600, the rest 0644.
///
/// # Panics
/// When a file cannot be written.
pub fn write_server_set(dir: &Path, cert_user: &str, key_password: &str) {
    let ca = Ca::new("relink test CA");
    let untrusted = Ca::new("relink untrusted test CA (trusted by nobody)");
    let (server, server_serial) = server_cert(&ca, "localhost");
    let (client, _) = client_cert(&ca, cert_user);
    let (revoked, revoked_serial) = client_cert(&ca, cert_user);
    let write = |name: &str, text: &[u8], mode: u32| {
        let path = dir.join(name);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        file.write_all(text)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    };
    write("ca.crt", ca.pem().as_bytes(), 0o644);
    write("ca.key", ca.issuer.key().serialize_pem().as_bytes(), 0o600);
    write("untrusted-ca.crt", untrusted.pem().as_bytes(), 0o644);
    write("server.crt", server.cert_pem.as_bytes(), 0o644);
    write("server.key", server.key_pem.as_bytes(), 0o600);
    write("client.crt", client.cert_pem.as_bytes(), 0o644);
    write("client.key", client.key_pem.as_bytes(), 0o600);
    std::fs::create_dir_all(dir.join("extra/crldir")).expect("extra/crldir");
    write(
        "extra/client.enc.key",
        client.encrypted_key_pem(key_password).as_bytes(),
        0o600,
    );
    write(
        "extra/revoked-client.crt",
        revoked.cert_pem.as_bytes(),
        0o644,
    );
    write(
        "extra/revoked-client.key",
        revoked.key_pem.as_bytes(),
        0o600,
    );
    let (from, until) = (2024, 2124);
    write(
        "extra/empty.crl",
        ca.crl_of(&[], from, until).as_bytes(),
        0o644,
    );
    write(
        "extra/clients-revoked.crl",
        ca.crl_of(&[revoked_serial], from, until).as_bytes(),
        0o644,
    );
    let server_revoked = ca.crl_of(&[server_serial], from, until);
    write("extra/server-revoked.crl", server_revoked.as_bytes(), 0o644);
    write(
        &format!("extra/crldir/{}.r0", ca.subject_hash()),
        server_revoked.as_bytes(),
        0o644,
    );
    let v1 = pkcs8::der::pem::encode_string("X509 CRL", pkcs8::LineEnding::LF, &ca.v1_crl())
        .expect("PEM");
    write("extra/v1.crl", v1.as_bytes(), 0o644);
}

/// commonName (2.5.4.3).
const COMMON_NAME: [u8; 3] = [0x55, 0x04, 0x03];

/// ecdsa-with-SHA256 (1.2.840.10045.4.3.2), the signature of rcgen's
/// default keys.
const ECDSA_WITH_SHA256: [u8; 8] = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];

/// A DER tag-length-value.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(u8::try_from(len).expect("short"));
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | u8::try_from(bytes.len()).expect("length of length"));
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// The first DER element of `der`: (the whole element, its content).
fn read_tlv(der: &[u8]) -> (&[u8], &[u8]) {
    let first = der[1];
    let (len, head) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        let len = der[2..2 + n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, 2 + n)
    };
    (&der[..head + len], &der[head..head + len])
}

/// The subject Name of a certificate, as encoded in it.
fn subject_of(cert: &[u8]) -> Vec<u8> {
    let (_, certificate) = read_tlv(cert);
    let (_, mut tbs) = read_tlv(certificate);
    // version [0], serial, signature, issuer, validity, subject
    let mut fields = Vec::new();
    while !tbs.is_empty() && fields.len() < 6 {
        let (element, _) = read_tlv(tbs);
        fields.push(element);
        tbs = &tbs[element.len()..];
    }
    fields[5].to_vec()
}
