//! TLS against libpq's semantics: certificates made at test time (rcgen)
//! and TLS handshakes in process (tokio-rustls over a duplex pipe). The
//! PKI helpers here serve `db::connect::open`'s tests too.

use std::sync::Arc;

use rustls::pki_types::{PrivateKeyDer, ServerName};
use rustls::RootCertStore;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::identity::{key_mode_too_open, load_key};
use super::roots::load_certs;
use super::*;
// The TLS parameters are read from connection strings, as an operator
// writes them (test code only: `tls` itself knows nothing of `connect`).
use crate::db::connect::tests::TempDir;
use crate::db::connect::{ConnInfo, Env};

// ---------------------------------------------------------------- PKI

// The tests' one source of certificates (rcgen), shared with
// `tests/it/libpq.rs` and `scripts/pg-server tls` (examples/test_certs.rs).
#[path = "../../../tests/pki/mod.rs"]
mod pki;

pub(crate) use pki::{Ca, Leaf};

/// A rustls server presenting a leaf certificate.
pub(crate) trait ServerConfigExt {
    /// A server config with this certificate; asking for a client
    /// certificate signed by `client_ca` when one is given.
    fn server_config(&self, client_ca: Option<&Ca>) -> Arc<rustls::ServerConfig>;
}

impl ServerConfigExt for Leaf {
    fn server_config(&self, client_ca: Option<&Ca>) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("versions");
        let builder = match client_ca {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                roots.add(ca.issuer.der().clone()).expect("client CA");
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .expect("client verifier");
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        Arc::new(
            builder
                .with_single_cert(vec![self.cert.clone()], self.key())
                .expect("server config"),
        )
    }
}

pub(crate) fn env_with_home(home: &TempDir) -> Env {
    let mut env = Env::from_vars(Vec::<(String, String)>::new());
    env.os_user = Some("tester".into());
    env.home = Some(home.0.clone());
    env
}

pub(crate) fn info(text: &str, env: &Env) -> ConnInfo {
    ConnInfo::resolve(Some(text), env).unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// One in-process handshake: our client config for `info` against a
/// rustls server, the client asking for `server_name`.
async fn handshake(
    info: &ConnInfo,
    server: Arc<rustls::ServerConfig>,
    server_name: &str,
) -> Result<(), rustls::Error> {
    let client = Arc::new(client_config(&info.tls()).expect("client config"));
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let server_side = tokio::spawn(async move {
        let accepted = tokio_rustls::TlsAcceptor::from(server)
            .accept(server_io)
            .await;
        if let Ok(mut stream) = accepted {
            let mut byte = [0u8; 1];
            let _ = stream.read(&mut byte).await;
        }
    });
    let name = ServerName::try_from(server_name.to_owned()).expect("server name");
    let result = tokio_rustls::TlsConnector::from(client)
        .connect(name, client_io)
        .await;
    server_side.abort();
    match result {
        Ok(mut stream) => {
            stream.shutdown().await.ok();
            Ok(())
        }
        Err(io) => Err(io
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
            .cloned()
            .unwrap_or_else(|| rustls::Error::General(io.to_string()))),
    }
}

fn is_cert_error(
    result: &Result<(), rustls::Error>,
    wanted: fn(&rustls::CertificateError) -> bool,
) -> bool {
    matches!(result, Err(rustls::Error::InvalidCertificate(e)) if wanted(e))
}

// ------------------------------------------------ verifier and connector

#[test]
fn key_permissions_follow_libpq() {
    assert!(!key_mode_too_open(0o100600, 1000));
    assert!(!key_mode_too_open(0o100400, 1000));
    assert!(key_mode_too_open(0o100640, 1000));
    assert!(key_mode_too_open(0o100604, 1000));
    assert!(
        !key_mode_too_open(0o100640, 0),
        "root-owned keys may be group-readable"
    );
    assert!(key_mode_too_open(0o100660, 0));
    assert!(key_mode_too_open(0o100644, 0));
}

#[test]
fn key_and_certificate_files() {
    let dir = TempDir::new("tls-files");
    let leaf = Leaf::self_signed(&["client"]);
    let pem = dir.file("k.pem", &leaf.key_pem, 0o600);
    assert!(load_key(&pem, None).is_ok());
    let der = dir.0.join("k.der");
    std::fs::write(&der, &leaf.key_der).expect("write");
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&der, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    assert!(load_key(&der, None).is_ok(), "DER keys, as libpq accepts");
    let open = dir.file("open.pem", &leaf.key_pem, 0o644);
    let err = load_key(&open, None).expect_err("open key").to_string();
    assert!(
        err.contains(&format!("chmod 600 {}", open.display())),
        "{err}"
    );
    let junk = dir.file("junk.pem", "not a key", 0o600);
    assert!(load_key(&junk, None)
        .expect_err("junk")
        .to_string()
        .contains("no PEM or DER"));
    let empty = dir.file("empty.crt", "nothing here", 0o644);
    let err = load_certs(&empty, "root certificate file").expect_err("empty");
    assert!(err.to_string().contains("BEGIN CERTIFICATE"), "{err}");
}

#[tokio::test]
async fn verify_full_checks_the_name_verify_ca_does_not() {
    let home = TempDir::new("tls-name");
    let env = env_with_home(&home);
    let ca = Ca::new("test CA");
    let root = home.file("ca.pem", &ca.pem(), 0o644);
    let server = ca
        .issue(&["db.example.test", "127.0.0.1"])
        .server_config(None);
    let full = info(
        &format!("host=x sslmode=verify-full sslrootcert={}", root.display()),
        &env,
    );
    let ca_only = info(
        &format!("host=x sslmode=verify-ca sslrootcert={}", root.display()),
        &env,
    );

    assert_eq!(
        handshake(&full, server.clone(), "db.example.test").await,
        Ok(())
    );
    assert_eq!(
        handshake(&full, server.clone(), "127.0.0.1").await,
        Ok(()),
        "IP SAN"
    );
    let wrong = handshake(&full, server.clone(), "other.example.test").await;
    assert!(
        is_cert_error(&wrong, |e| matches!(
            e,
            rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. }
        )),
        "{wrong:?}"
    );
    let wrong_ip = handshake(&full, server.clone(), "127.0.0.2").await;
    assert!(wrong_ip.is_err(), "{wrong_ip:?}");
    assert_eq!(
        handshake(&ca_only, server, "other.example.test").await,
        Ok(())
    );
}

#[tokio::test]
async fn unknown_ca_is_rejected_when_verifying_only() {
    let home = TempDir::new("tls-ca");
    let env = env_with_home(&home);
    let trusted = Ca::new("trusted CA");
    let root = home.file("ca.pem", &trusted.pem(), 0o644);
    let server = Ca::new("unknown CA")
        .issue(&["db.example.test"])
        .server_config(None);
    for mode in ["verify-ca", "verify-full", "require", "prefer"] {
        // With a root certificate, libpq checks the chain in every TLS mode.
        let with_root = info(
            &format!("host=x sslmode={mode} sslrootcert={}", root.display()),
            &env,
        );
        let result = handshake(&with_root, server.clone(), "db.example.test").await;
        assert!(
            is_cert_error(&result, |e| matches!(
                e,
                rustls::CertificateError::UnknownIssuer
            )),
            "{mode}: {result:?}"
        );
    }
    for mode in ["require", "prefer", "allow"] {
        let no_root = info(&format!("host=x sslmode={mode}"), &env);
        assert_eq!(
            handshake(&no_root, server.clone(), "anything.test").await,
            Ok(()),
            "{mode}"
        );
    }
    // The default ~/.postgresql/root.crt counts as configured.
    home.file(".postgresql/root.crt", &trusted.pem(), 0o644);
    let default_root = info("host=x sslmode=require", &env);
    assert!(handshake(&default_root, server, "db.example.test")
        .await
        .is_err());
}

#[tokio::test]
async fn a_self_signed_server_certificate_in_the_root_file_is_trusted() {
    let home = TempDir::new("tls-pinned");
    let env = env_with_home(&home);
    let leaf = Leaf::self_signed(&["localhost"]);
    let root = home.file("server.crt", &leaf.cert_pem, 0o644);
    let server = leaf.server_config(None);
    let full = info(
        &format!("host=x sslmode=verify-full sslrootcert={}", root.display()),
        &env,
    );
    assert_eq!(handshake(&full, server.clone(), "localhost").await, Ok(()));
    assert!(handshake(&full, server.clone(), "db.example.test")
        .await
        .is_err());
    let other = Leaf::self_signed(&["localhost"]).server_config(None);
    assert!(
        handshake(&full, other, "localhost").await.is_err(),
        "only the listed certificate"
    );
}

#[tokio::test]
async fn client_certificates() {
    let home = TempDir::new("tls-client");
    let env = env_with_home(&home);
    let ca = Ca::new("server and client CA");
    let server = ca.issue(&["db.example.test"]).server_config(Some(&ca));
    let client = ca.issue(&["alice"]);
    let cert = home.file("alice.crt", &client.cert_pem, 0o644);
    let key = home.file("alice.key", &client.key_pem, 0o600);
    let with_cert = info(
        &format!(
            "host=x sslmode=require sslcert={} sslkey={}",
            cert.display(),
            key.display()
        ),
        &env,
    );
    assert_eq!(
        handshake(&with_cert, server.clone(), "db.example.test").await,
        Ok(())
    );

    // The default ~/.postgresql/postgresql.crt and .key are used too.
    home.file(".postgresql/postgresql.crt", &client.cert_pem, 0o644);
    home.file(".postgresql/postgresql.key", &client.key_pem, 0o600);
    let defaults = info("host=x sslmode=require", &env);
    assert!(defaults.client_cert.is_some());
    assert_eq!(
        handshake(&defaults, server, "db.example.test").await,
        Ok(())
    );

    let open_key = home.file("open.key", &client.key_pem, 0o644);
    let open = info(
        &format!(
            "host=x sslmode=require sslcert={} sslkey={}",
            cert.display(),
            open_key.display()
        ),
        &env,
    );
    let err = client_config(&open.tls())
        .expect_err("open key")
        .to_string();
    assert!(err.contains("chmod 600"), "{err}");
}

#[test]
fn the_connector_is_shareable() {
    fn shareable<T: Clone + Send + Sync + 'static>() {}
    shareable::<MakeRustlsConnect>();
    // And deadpool accepts it directly, should anyone want from_config.
    let env = env_with_home(&TempDir::new("tls-deadpool"));
    let conn = info("host=h sslmode=require", &env);
    let tls = make_tls_connect(&conn.tls()).expect("connector");
    let _ = deadpool_postgres::Manager::from_config(
        conn.config_for(&conn.targets[0], tokio_postgres::config::SslMode::Require),
        tls,
        deadpool_postgres::ManagerConfig::default(),
    );
}

#[tokio::test]
async fn revocation_lists_are_checked_as_openssl_checks_them_for_libpq() {
    let home = TempDir::new("tls-crl");
    let env = env_with_home(&home);
    let ca = Ca::new("CRL CA");
    let root = home.file("ca.pem", &ca.pem(), 0o644);
    let server = ca
        .issue_with(&["db.example.test"], |params| {
            params.serial_number = Some(rcgen::SerialNumber::from(7_u64));
        })
        .server_config(None);
    let with = |crl_text: &str, mode: &str| {
        let file = home.file(&format!("{}.crl", crl_text.len()), crl_text, 0o644);
        info(
            &format!(
                "host=db.example.test sslmode={mode} sslrootcert={} sslcrl={}",
                root.display(),
                file.display()
            ),
            &env,
        )
    };
    let shake = |info: ConnInfo| {
        let server = server.clone();
        async move { handshake(&info, server, "db.example.test").await }
    };
    // A current list that does not name the certificate: it passes.
    assert_eq!(
        shake(with(&ca.crl(&[3], 2020, 2099), "verify-full")).await,
        Ok(())
    );
    // One that does: revoked, in verify-ca too.
    for mode in ["verify-full", "verify-ca"] {
        let result = shake(with(&ca.crl(&[7], 2020, 2099), mode)).await;
        assert!(
            is_cert_error(&result, |e| matches!(e, rustls::CertificateError::Revoked)),
            "{mode}: {result:?}"
        );
    }
    // A list past its next update: refused, as OpenSSL refuses it.
    let result = shake(with(&ca.crl(&[], 2020, 2021), "verify-full")).await;
    assert!(
        is_cert_error(&result, |e| matches!(
            e,
            rustls::CertificateError::ExpiredRevocationList
                | rustls::CertificateError::ExpiredRevocationListContext { .. }
        )),
        "{result:?}"
    );
    // Only another CA's list: the issuer has none, so the status is
    // unknown, and refused.
    let result = shake(with(
        &Ca::new("other CA").crl(&[], 2020, 2099),
        "verify-full",
    ))
    .await;
    assert!(
        is_cert_error(&result, |e| matches!(
            e,
            rustls::CertificateError::UnknownRevocationStatus
        )),
        "{result:?}"
    );
    // Without a chain check (require, no root), no list is consulted, as
    // in libpq.
    let file = home.file("revoking.crl", &ca.crl(&[7], 2020, 2099), 0o644);
    let unverified = info(
        &format!(
            "host=db.example.test sslmode=require sslcrl={}",
            file.display()
        ),
        &env,
    );
    assert_eq!(shake(unverified).await, Ok(()));
    // A file that is no CRL is refused by name when the connector is made.
    let junk = home.file("junk.crl", "not a list", 0o644);
    let junk_conn = info(
        &format!(
            "host=db.example.test sslmode=verify-full sslrootcert={} sslcrl={}",
            root.display(),
            junk.display()
        ),
        &env,
    );
    let err = client_config(&junk_conn.tls())
        .expect_err("junk")
        .to_string();
    assert!(err.contains(&junk.display().to_string()), "{err}");
}

#[test]
fn an_encrypted_key_is_opened_with_its_password_only() {
    let dir = TempDir::new("tls-encrypted");
    let leaf = Leaf::self_signed(&["client"]);
    let secret = pkcs8::PrivateKeyInfo::try_from(leaf.key_der.as_slice()).expect("PKCS#8");
    // Fixed salt and IV: a test needs no randomness to encrypt.
    let params =
        pkcs8::pkcs5::pbes2::Parameters::pbkdf2_sha256_aes256cbc(2048, b"saltsalt", &[7; 16])
            .expect("PBES2 parameters");
    let encrypted = secret
        .encrypt_with_params(params, b"key-pw-S3CRET")
        .expect("encrypt");
    let pem = encrypted
        .to_pem("ENCRYPTED PRIVATE KEY", pkcs8::LineEnding::LF)
        .expect("PEM");
    let path = dir.file("enc.pem", &pem, 0o600);
    let der = dir.0.join("enc.der");
    std::fs::write(&der, encrypted.as_bytes()).expect("write");
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&der, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let right = Password::new("key-pw-S3CRET");
    for file in [&path, &der] {
        match load_key(file, Some(&right)).expect("decrypts") {
            PrivateKeyDer::Pkcs8(key) => assert_eq!(key.secret_pkcs8_der(), leaf.key_der),
            other => panic!("{other:?}"),
        }
        let err = load_key(file, None).expect_err("no password").to_string();
        assert!(err.contains("set sslpassword"), "{err}");
        let err = load_key(file, Some(&Password::new("Wr0ng-X")))
            .expect_err("wrong password")
            .to_string();
        assert!(err.contains("cannot be decrypted"), "{err}");
        assert!(!err.contains("S3CRET") && !err.contains("Wr0ng-X"), "{err}");
    }
    // A plain key ignores sslpassword, as in libpq.
    let plain = dir.file("plain.pem", &leaf.key_pem, 0o600);
    assert!(load_key(&plain, Some(&right)).is_ok());
    // OpenSSL's traditional encryption: refused, naming the conversion.
    let legacy = dir.file(
        "legacy.pem",
        "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n",
        0o600,
    );
    let err = load_key(&legacy, Some(&right))
        .expect_err("legacy")
        .to_string();
    assert!(err.contains("openssl pkcs8 -topk8"), "{err}");
}
