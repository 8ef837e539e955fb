//! The connector against libpq's semantics: certificates made at test time
//! (rcgen), TLS handshakes in process (tokio-rustls over a duplex pipe), a
//! minimal fake PostgreSQL server on a loopback port for the driver-level
//! paths (password file, fallbacks, classification through the driver's
//! error chain), and the real server for the end-to-end checks.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::db::conninfo::tests::TempDir;
use crate::db::conninfo::{ConnInfo, Env};

// ---------------------------------------------------------------- PKI

struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = KeyPair::generate().expect("key");
        Self {
            issuer: CertifiedIssuer::self_signed(params, key).expect("CA"),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf certificate for `names` (DNS names or IP addresses).
    fn issue(&self, names: &[&str]) -> Leaf {
        let params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .expect("params");
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        Leaf {
            cert: cert.der().clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
        }
    }
}

struct Leaf {
    cert: CertificateDer<'static>,
    cert_pem: String,
    key_pem: String,
    key_der: Vec<u8>,
}

impl Leaf {
    fn self_signed(names: &[&str]) -> Self {
        let params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .expect("params");
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("self-signed");
        Self {
            cert: cert.der().clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
        }
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key_der.clone().into())
    }

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

fn env_with_home(home: &TempDir) -> Env {
    let mut env = Env::from_vars(Vec::<(String, String)>::new());
    env.os_user = Some("tester".into());
    env.home = Some(home.0.clone());
    env
}

fn info(text: &str, env: &Env) -> ConnInfo {
    ConnInfo::resolve(Some(text), env).unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// One in-process handshake: our client config for `info` against a
/// rustls server, the client asking for `server_name`.
async fn handshake(
    info: &ConnInfo,
    server: Arc<rustls::ServerConfig>,
    server_name: &str,
) -> Result<(), rustls::Error> {
    let client = Arc::new(client_config(info).expect("client config"));
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
    let err = client_config(&open).expect_err("open key").to_string();
    assert!(err.contains("chmod 600"), "{err}");
}

#[test]
fn the_connector_is_shareable() {
    fn shareable<T: Clone + Send + Sync + 'static>() {}
    shareable::<MakeRustlsConnect>();
    shareable::<Connector>();
    // And deadpool accepts it directly, should anyone want from_config.
    let env = env_with_home(&TempDir::new("tls-deadpool"));
    let conn = info("host=h sslmode=require", &env);
    let tls = make_tls_connect(&conn).expect("connector");
    let _ = deadpool_postgres::Manager::from_config(
        conn.config_for(&conn.targets[0], tokio_postgres::config::SslMode::Require),
        tls,
        deadpool_postgres::ManagerConfig::default(),
    );
}

/// A CRL of `ca` revoking `serials`, valid from `from` to `until` (years).
fn crl(ca: &Ca, serials: &[u64], from: i32, until: i32) -> String {
    let params = rcgen::CertificateRevocationListParams {
        this_update: rcgen::date_time_ymd(from, 1, 1),
        next_update: rcgen::date_time_ymd(until, 1, 1),
        crl_number: rcgen::SerialNumber::from(1_u64),
        issuing_distribution_point: None,
        revoked_certs: serials
            .iter()
            .map(|serial| rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from(*serial),
                revocation_time: rcgen::date_time_ymd(from, 1, 1),
                reason_code: None,
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    };
    params
        .signed_by(&ca.issuer)
        .expect("CRL")
        .pem()
        .expect("PEM")
}

#[tokio::test]
async fn revocation_lists_are_checked_as_openssl_checks_them_for_libpq() {
    let home = TempDir::new("tls-crl");
    let env = env_with_home(&home);
    let ca = Ca::new("CRL CA");
    let root = home.file("ca.pem", &ca.pem(), 0o644);
    let mut params = CertificateParams::new(vec!["db.example.test".to_owned()]).expect("params");
    params.serial_number = Some(rcgen::SerialNumber::from(7_u64));
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &ca.issuer).expect("sign");
    let server = Leaf {
        cert: cert.der().clone(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        key_der: key.serialize_der(),
    }
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
        shake(with(&crl(&ca, &[3], 2020, 2099), "verify-full")).await,
        Ok(())
    );
    // One that does: revoked, in verify-ca too.
    for mode in ["verify-full", "verify-ca"] {
        let result = shake(with(&crl(&ca, &[7], 2020, 2099), mode)).await;
        assert!(
            is_cert_error(&result, |e| matches!(e, rustls::CertificateError::Revoked)),
            "{mode}: {result:?}"
        );
    }
    // A list past its next update: refused, as OpenSSL refuses it.
    let result = shake(with(&crl(&ca, &[], 2020, 2021), "verify-full")).await;
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
        &crl(&Ca::new("other CA"), &[], 2020, 2099),
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
    let file = home.file("revoking.crl", &crl(&ca, &[7], 2020, 2099), 0o644);
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
    let err = client_config(&info(
        &format!(
            "host=db.example.test sslmode=verify-full sslrootcert={} sslcrl={}",
            root.display(),
            junk.display()
        ),
        &env,
    ))
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

// --------------------------------------------------- fake PostgreSQL server

/// A PostgreSQL server just sufficient for the startup phase: SSLRequest,
/// startup packet, cleartext password (optional), AuthenticationOk,
/// ReadyForQuery; then it idles until the client leaves.
#[derive(Clone, Default)]
struct Fake {
    tls: Option<Arc<rustls::ServerConfig>>,
    password: Option<String>,
    /// pg_hba.conf with `hostssl` lines only.
    reject_plaintext: bool,
    /// Accepts and never answers.
    silent: bool,
    /// Answers the startup packet with this error (SQLSTATE, message).
    refuse: Option<(&'static str, &'static str)>,
    /// Reports `in_hot_standby=on` at startup, as a PostgreSQL 14+ standby.
    hot_standby: bool,
    /// Answers every simple query with one row of three booleans, as
    /// relink's session check reads them: in recovery (`hot_standby`),
    /// read-only (likewise), relink's startup settings in force (yes).
    answers: bool,
}

struct Running {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Fake {
    async fn start(self) -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        let task = tokio::spawn(async move {
            // Bounded: no test needs more than a handful of connections.
            for _ in 0..16 {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let fake = self.clone();
                tokio::spawn(async move {
                    let _ = fake.serve(stream).await;
                });
            }
        });
        Running {
            addr,
            connections,
            task,
        }
    }

    async fn serve(self, mut stream: TcpStream) -> std::io::Result<()> {
        if self.silent {
            tokio::time::sleep(std::time::Duration::from_secs(30)).await;
            return Ok(());
        }
        let mut head = [0u8; 8];
        stream.read_exact(&mut head).await?;
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let code = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        if len == 8 && code == 80_877_103 {
            return match &self.tls {
                Some(config) => {
                    stream.write_all(b"S").await?;
                    let tls = tokio_rustls::TlsAcceptor::from(config.clone())
                        .accept(stream)
                        .await?;
                    self.startup(tls, true, None).await
                }
                None => {
                    stream.write_all(b"N").await?;
                    self.startup(stream, false, None).await
                }
            };
        }
        self.startup(stream, false, Some(len)).await
    }

    async fn startup<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut s: S,
        tls: bool,
        started: Option<u32>,
    ) -> std::io::Result<()> {
        let (len, read) = match started {
            Some(len) => (len, 8),
            None => (read_u32(&mut s).await?, 4),
        };
        let mut rest = vec![0u8; usize::try_from(len).expect("len") - read];
        s.read_exact(&mut rest).await?;
        if !tls && self.reject_plaintext {
            return send_error(
                &mut s,
                "28000",
                "no pg_hba.conf entry for host \"127.0.0.1\", user \"u\", database \"d\", no encryption",
            )
            .await;
        }
        if let Some((code, message)) = self.refuse {
            return send_error(&mut s, code, message).await;
        }
        if let Some(password) = &self.password {
            s.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 3]).await?;
            s.flush().await?;
            let mut tag = [0u8; 1];
            s.read_exact(&mut tag).await?;
            let len = read_u32(&mut s).await?;
            let mut body = vec![0u8; usize::try_from(len).expect("len") - 4];
            s.read_exact(&mut body).await?;
            if body.strip_suffix(&[0]).unwrap_or(&body) != password.as_bytes() {
                return send_error(
                    &mut s,
                    "28P01",
                    "password authentication failed for user \"u\"",
                )
                .await;
            }
        }
        s.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 0]).await?;
        if self.hot_standby {
            let body = b"in_hot_standby\0on\0";
            let len = u32::try_from(body.len() + 4).expect("len");
            s.write_all(b"S").await?;
            s.write_all(&len.to_be_bytes()).await?;
            s.write_all(body).await?;
        }
        s.write_all(&[b'Z', 0, 0, 0, 5, b'I']).await?;
        s.flush().await?;
        if self.answers {
            return self.answer(s).await;
        }
        let mut buf = [0u8; 256];
        while s.read(&mut buf).await? > 0 {}
        Ok(())
    }

    /// Answers simple queries (see [`Fake::answers`]) until the client
    /// leaves.
    async fn answer<S: AsyncRead + AsyncWrite + Unpin>(&self, mut s: S) -> std::io::Result<()> {
        let flag = if self.hot_standby { b't' } else { b'f' };
        loop {
            let mut tag = [0u8; 1];
            if s.read(&mut tag).await? == 0 {
                return Ok(());
            }
            let len = read_u32(&mut s).await?;
            let mut body = vec![0u8; usize::try_from(len).expect("len") - 4];
            s.read_exact(&mut body).await?;
            match tag[0] {
                b'Q' => {
                    let mut description = vec![0, 3];
                    for name in [&b"a"[..], b"b", b"c"] {
                        description.extend_from_slice(name);
                        description.push(0);
                        // table oid, column, type oid (bool), size, modifier, format
                        description.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 16, 0, 1]);
                        description.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0, 0]);
                    }
                    let mut row = vec![0, 3];
                    for value in [flag, flag, b't'] {
                        row.extend_from_slice(&[0, 0, 0, 1, value]);
                    }
                    for (tag, body) in [
                        (b'T', description),
                        (b'D', row),
                        (b'C', b"SELECT 1\0".to_vec()),
                        (b'Z', b"I".to_vec()),
                    ] {
                        let len = u32::try_from(body.len() + 4).expect("len");
                        s.write_all(&[tag]).await?;
                        s.write_all(&len.to_be_bytes()).await?;
                        s.write_all(&body).await?;
                    }
                    s.flush().await?;
                }
                b'X' => return Ok(()),
                _ => {}
            }
        }
    }
}

async fn read_u32<S: AsyncRead + Unpin>(s: &mut S) -> std::io::Result<u32> {
    let mut bytes = [0u8; 4];
    s.read_exact(&mut bytes).await?;
    Ok(u32::from_be_bytes(bytes))
}

async fn send_error<S: AsyncWrite + Unpin>(
    s: &mut S,
    code: &str,
    message: &str,
) -> std::io::Result<()> {
    let mut fields = Vec::new();
    for (tag, value) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', code),
        (b'M', message),
    ] {
        fields.push(tag);
        fields.extend_from_slice(value.as_bytes());
        fields.push(0);
    }
    fields.push(0);
    let len = u32::try_from(fields.len() + 4).expect("len");
    s.write_all(b"E").await?;
    s.write_all(&len.to_be_bytes()).await?;
    s.write_all(&fields).await?;
    s.flush().await
}

fn connector(text: &str, env: &Env) -> Connector {
    Connector::new(info(text, env), SessionOptions::default()).expect("connector")
}

fn problem(err: &ConnectError) -> &Problem {
    err.last_problem().expect("a classified problem")
}

#[tokio::test]
async fn certificate_failures_are_classified_through_the_driver() {
    let home = TempDir::new("fake-tls");
    let env = env_with_home(&home);
    let ca = Ca::new("fake CA");
    let root = home.file("ca.pem", &ca.pem(), 0o644);
    let fake = Fake {
        tls: Some(ca.issue(&["db.example.test"]).server_config(None)),
        ..Fake::default()
    }
    .start()
    .await;
    let port = fake.addr.port();

    let base = format!(
        "hostaddr=127.0.0.1 port={port} user=u dbname=d sslrootcert={}",
        root.display()
    );
    connector(
        &format!("host=db.example.test sslmode=verify-full {base}"),
        &env,
    )
    .connect()
    .await
    .expect("verify-full with the right name");
    connector(
        &format!("host=wrong.example.test sslmode=verify-ca {base}"),
        &env,
    )
    .connect()
    .await
    .expect("verify-ca ignores the name");

    let err = connector(
        &format!("host=wrong.example.test sslmode=verify-full {base}"),
        &env,
    )
    .connect()
    .await
    .expect_err("name mismatch");
    assert!(
        matches!(problem(&err), Problem::CertNameMismatch { .. }),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("wrong.example.test") && text.contains("sslmode=verify-ca"),
        "{text}"
    );

    let other = home.file("other.pem", &Ca::new("other CA").pem(), 0o644);
    let err = connector(
        &format!("host=db.example.test hostaddr=127.0.0.1 port={port} user=u sslmode=verify-ca sslrootcert={}", other.display()),
        &env,
    )
    .connect()
    .await
    .expect_err("unknown CA");
    assert!(
        matches!(problem(&err), Problem::CertNotTrusted { .. }),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("sslrootcert=FILE") && text.contains("sslrootcert=system"),
        "{text}"
    );
    assert!(text.contains(&other.display().to_string()), "{text}");
    // libpq stops at a TLS failure rather than trying the next host.
    assert!(matches!(&err, ConnectError::Failed { failures, .. } if failures.len() == 1));
}

#[tokio::test]
async fn tls_availability_and_fallbacks() {
    let env = env_with_home(&TempDir::new("fake-fallback"));
    let plain = Fake::default().start().await;
    let port = plain.addr.port();
    let err = connector(
        &format!("host=127.0.0.1 port={port} user=u sslmode=require"),
        &env,
    )
    .connect()
    .await
    .expect_err("no TLS");
    assert_eq!(
        problem(&err),
        &Problem::ServerLacksTls {
            sslmode: crate::db::conninfo::SslMode::Require
        }
    );
    assert!(err.to_string().contains("does not support TLS"), "{err}");
    for mode in ["prefer", "allow", "disable"] {
        connector(
            &format!("host=127.0.0.1 port={port} user=u sslmode={mode}"),
            &env,
        )
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{mode}: {e}"));
    }

    // A server that admits only TLS sessions.
    let ca = Ca::new("hostssl CA");
    let tls_only = Fake {
        tls: Some(ca.issue(&["db.example.test"]).server_config(None)),
        reject_plaintext: true,
        ..Fake::default()
    }
    .start()
    .await;
    let port = tls_only.addr.port();
    let err = connector(
        &format!("host=127.0.0.1 port={port} user=u sslmode=disable"),
        &env,
    )
    .connect()
    .await
    .expect_err("plaintext refused");
    assert!(
        matches!(problem(&err), Problem::ServerRequiresTls { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("sslmode=require"), "{err}");
    // allow: plaintext first, then TLS when refused.
    connector(
        &format!("host=127.0.0.1 port={port} user=u sslmode=allow"),
        &env,
    )
    .connect()
    .await
    .expect("allow falls back to TLS");
    assert_eq!(tls_only.connections.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn password_file_is_read_per_host_when_asked() {
    let home = TempDir::new("fake-pgpass");
    let fake = Fake {
        password: Some("from-file".into()),
        ..Fake::default()
    }
    .start()
    .await;
    let port = fake.addr.port();
    let passfile = home.file(
        "pgpass",
        &format!("other:{port}:*:*:nope\n127.0.0.1:{port}:d:u:from-file\n"),
        0o600,
    );
    let mut env = env_with_home(&home);
    let text = format!(
        "host=127.0.0.1 port={port} user=u dbname=d sslmode=disable passfile={}",
        passfile.display()
    );
    let conn = connector(&text, &env);
    conn.connect().await.expect("password from the file");
    assert_eq!(
        fake.connections.load(Ordering::SeqCst),
        2,
        "asked, then answered"
    );
    conn.connect().await.expect("again");
    assert_eq!(
        fake.connections.load(Ordering::SeqCst),
        3,
        "remembered for the pool"
    );

    // Wrong password in the file: named as the source.
    let wrong = home.file("wrong", "*:*:*:*:bad-pass\n", 0o600);
    let err = connector(
        &format!(
            "host=127.0.0.1 port={port} user=u dbname=d sslmode=disable passfile={}",
            wrong.display()
        ),
        &env,
    )
    .connect()
    .await
    .expect_err("wrong password");
    assert!(
        matches!(problem(&err), Problem::PasswordWrong { .. }),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains(&wrong.display().to_string()) && !text.contains("bad-pass"),
        "{text}"
    );

    // No password anywhere.
    let none = home.file("none", "", 0o600);
    let err = connector(
        &format!(
            "host=127.0.0.1 port={port} user=u dbname=d sslmode=disable passfile={}",
            none.display()
        ),
        &env,
    )
    .connect()
    .await
    .expect_err("no password");
    let text = err.to_string();
    assert!(
        text.contains("PGPASSWORD") && text.contains(&format!("127.0.0.1:{port}:d:u:PASSWORD")),
        "{text}"
    );

    // A password file open to others is refused, naming the fix.
    let open = home.file("open", "*:*:*:*:from-file\n", 0o644);
    let err = connector(
        &format!(
            "host=127.0.0.1 port={port} user=u dbname=d sslmode=disable passfile={}",
            open.display()
        ),
        &env,
    )
    .connect()
    .await
    .expect_err("open password file");
    let text = err.to_string();
    assert!(
        text.contains(&format!("chmod 600 {}", open.display())) && !text.contains("from-file"),
        "{text}"
    );

    // PGPASSWORD beats the file.
    env = Env::from_vars([("PGPASSWORD", "from-file")]);
    env.os_user = Some("u".into());
    connector(
        &format!(
            "host=127.0.0.1 port={port} dbname=d sslmode=disable passfile={}",
            open.display()
        ),
        &env,
    )
    .connect()
    .await
    .expect("PGPASSWORD");
}

#[tokio::test]
async fn hosts_are_tried_in_order_like_libpq() {
    let env = env_with_home(&TempDir::new("fake-hosts"));
    // A port nobody listens on.
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let good = Fake::default().start().await;
    let silent = Fake {
        silent: true,
        ..Fake::default()
    }
    .start()
    .await;
    let text = format!(
        "host=127.0.0.1,127.0.0.1,127.0.0.1 port={closed},{},{} user=u sslmode=disable connect_timeout=2",
        silent.addr.port(),
        good.addr.port()
    );
    let started = std::time::Instant::now();
    connector(&text, &env).connect().await.expect("third host");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));

    // Once a server answered with an authentication failure, libpq stops.
    let guarded = Fake {
        password: Some("right".into()),
        ..Fake::default()
    }
    .start()
    .await;
    let text = format!(
        "host=127.0.0.1,127.0.0.1 port={},{} user=u password=wrong sslmode=disable",
        guarded.addr.port(),
        good.addr.port()
    );
    let err = connector(&text, &env)
        .connect()
        .await
        .expect_err("stops at the first host");
    assert!(
        matches!(&err, ConnectError::Failed { failures, .. } if failures.len() == 1),
        "{err}"
    );
    assert!(!err.to_string().contains("password=wrong"));
    assert!(!err.is_transient());

    let text = format!("host=127.0.0.1,127.0.0.1 port={closed},{closed} user=u sslmode=disable");
    let err = connector(&text, &env)
        .connect()
        .await
        .expect_err("nobody there");
    assert!(
        matches!(problem(&err), Problem::Unreachable { .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{closed}")),
        "{err}"
    );
    assert!(err.is_transient());
}

#[tokio::test]
async fn a_writing_session_on_a_standby_is_refused_naming_the_fix() {
    let env = env_with_home(&TempDir::new("fake-standby"));
    let standby = Fake {
        hot_standby: true,
        answers: true,
        ..Fake::default()
    }
    .start()
    .await;
    let primary = Fake::default().start().await;
    // Under target_session_attrs=any the first host that answers is the
    // one (libpq's rule): a writing session stops there, saying why.
    let text = format!(
        "host=127.0.0.1,127.0.0.1 port={},{} user=u sslmode=disable",
        standby.addr.port(),
        primary.addr.port()
    );
    let err = connector(&text, &env)
        .connect()
        .await
        .expect_err("a standby takes no writes");
    assert!(
        matches!(&err, ConnectError::Failed { failures, .. } if failures.len() == 1),
        "{err}"
    );
    assert_eq!(problem(&err), &Problem::StandbyForWrites);
    assert!(
        err.to_string().contains("target_session_attrs=read-write"),
        "{err}"
    );
    // A failover may be promoting it: worth retrying mid-run.
    assert!(err.is_transient());
    // A read-only session (dry run, verify, status) may read there.
    let reader = Connector::new(
        info(&text, &env),
        SessionOptions {
            read_only: true,
            ..SessionOptions::default()
        },
    )
    .expect("connector");
    reader.connect().await.expect("reads on the standby");
}

#[tokio::test]
async fn the_session_check_is_bounded_by_connect_timeout() {
    let env = env_with_home(&TempDir::new("fake-check"));
    // Lets the client in, then never answers a query.
    let mute = Fake::default().start().await;
    let text = format!(
        "host=127.0.0.1 port={} user=u sslmode=disable connect_timeout=2 \
         target_session_attrs=read-write",
        mute.addr.port()
    );
    let started = std::time::Instant::now();
    let err = connector(&text, &env)
        .connect()
        .await
        .expect_err("no answer to the check");
    assert!(started.elapsed() < std::time::Duration::from_secs(6));
    assert!(matches!(problem(&err), Problem::Timeout { .. }), "{err}");
}

#[tokio::test]
async fn server_refusals_are_classified() {
    let env = env_with_home(&TempDir::new("fake-refusals"));
    for (code, message, wanted) in [
        (
            "28000",
            "connection requires a valid client certificate",
            "sslcert",
        ),
        (
            "28000",
            "pg_hba.conf rejects connection for host \"127.0.0.1\"",
            "pg_hba.conf",
        ),
        ("3D000", "database \"d\" does not exist", "PGDATABASE"),
    ] {
        let fake = Fake {
            refuse: Some((code, message)),
            ..Fake::default()
        }
        .start()
        .await;
        let text = format!(
            "host=127.0.0.1 port={} user=u dbname=d sslmode=disable",
            fake.addr.port()
        );
        let err = connector(&text, &env).connect().await.expect_err(message);
        assert!(err.to_string().contains(wanted), "{err}");
    }

    // A server starting up or shutting down (a failover in progress): relink
    // goes on to the next host, where libpq would stop.
    let starting = Fake {
        refuse: Some(("57P03", "the database system is starting up")),
        ..Fake::default()
    }
    .start()
    .await;
    let good = Fake::default().start().await;
    let text = format!(
        "host=127.0.0.1,127.0.0.1 port={},{} user=u sslmode=disable",
        starting.addr.port(),
        good.addr.port()
    );
    connector(&text, &env)
        .connect()
        .await
        .expect("the second host");
}

// ------------------------------------------------------------ real server

/// The test server: `TEST_DATABASE_URL` (set by `make test`), else the
/// passwordless postgres on 127.0.0.1:5432.
fn server_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

fn server(extra: &str, session: SessionOptions) -> Connector {
    let url = server_url();
    let sep = if url.contains('?') { '&' } else { '?' };
    let mut env = Env::from_vars(Vec::<(String, String)>::new());
    env.os_user = Some("postgres".into());
    let text = format!("{url}{sep}{extra}");
    Connector::new(info(&text, &env), session).expect("connector")
}

async fn uses_tls(client: &tokio_postgres::Client) -> bool {
    client
        .query_one(
            "SELECT ssl FROM pg_catalog.pg_stat_ssl WHERE pid = pg_catalog.pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_stat_ssl")
        .get(0)
}

#[tokio::test]
async fn real_server_sslmodes() {
    let (client, _task) = server("sslmode=disable", SessionOptions::default())
        .connect()
        .await
        .expect("disable");
    assert!(!uses_tls(&client).await);
    let ssl_on = client
        .query_one("SHOW ssl", &[])
        .await
        .expect("SHOW ssl")
        .get::<_, String>(0)
        == "on";
    let tcp = server("sslmode=disable", SessionOptions::default())
        .info()
        .targets
        .iter()
        .all(|t| matches!(t.host, crate::db::conninfo::Host::Tcp(_)));
    let (client, _task) = server("sslmode=prefer", SessionOptions::default())
        .connect()
        .await
        .expect("prefer works with or without TLS");
    assert_eq!(uses_tls(&client).await, ssl_on && tcp);
    match server("sslmode=require", SessionOptions::default())
        .connect()
        .await
    {
        Ok((client, _task)) => assert!(ssl_on && uses_tls(&client).await),
        Err(err) => {
            assert!(!ssl_on || !tcp, "{err}");
            assert!(
                matches!(problem(&err), Problem::ServerLacksTls { .. }),
                "{err}"
            );
        }
    }
}

#[tokio::test]
async fn real_server_session_options_and_attrs() {
    let session = SessionOptions {
        application_name: Some("relink test".into()),
        settings: vec![
            ("statement_timeout".into(), "1234ms".into()),
            ("search_path".into(), "\"a b\",public".into()),
        ],
        read_only: true,
    };
    let conn = server(
        "sslmode=disable&target_session_attrs=read-write",
        session.clone(),
    );
    let (client, _task) = conn
        .connect()
        .await
        .expect("the primary, though relink's session is read-only");
    let row = client
        .query_one(
            "SELECT current_setting('application_name'), current_setting('statement_timeout'), \
                    current_setting('default_transaction_read_only'), current_setting('search_path')",
            &[],
        )
        .await
        .expect("settings");
    assert_eq!(row.get::<_, String>(0), "relink test");
    assert_eq!(row.get::<_, String>(1), "1234ms");
    assert_eq!(row.get::<_, String>(2), "on");
    assert_eq!(row.get::<_, String>(3), "\"a b\",public");

    let (client, _task) = server("sslmode=disable&application_name=mine", session)
        .connect()
        .await
        .expect("connect");
    let name: String = client
        .query_one("SELECT current_setting('application_name')", &[])
        .await
        .expect("name")
        .get(0);
    assert_eq!(name, "mine", "the operator's application_name wins");

    let err = server(
        "sslmode=disable&target_session_attrs=standby",
        SessionOptions::default(),
    )
    .connect()
    .await
    .expect_err("no standby");
    assert!(
        matches!(problem(&err), Problem::WrongSessionKind { .. }),
        "{err}"
    );
    server(
        "sslmode=disable&target_session_attrs=prefer-standby",
        SessionOptions::default(),
    )
    .connect()
    .await
    .expect("prefer-standby settles for the primary");
    server(
        "sslmode=disable&target_session_attrs=primary",
        SessionOptions::default(),
    )
    .connect()
    .await
    .expect("primary");
}

#[tokio::test]
async fn real_server_pool() {
    let conn = server("sslmode=prefer", SessionOptions::default());
    let pool =
        deadpool_postgres::Pool::builder(conn.manager(deadpool_postgres::ManagerConfig::default()))
            .max_size(2)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .expect("pool");
    let client = pool.get().await.expect("pooled connection");
    let one: i32 = client
        .query_one("SELECT 1", &[])
        .await
        .expect("query")
        .get(0);
    assert_eq!(one, 1);
}

/// With the server's own (self-signed) certificate as root, where this
/// process can read it: verify-full by the name it carries, and a name
/// mismatch when connecting by address.
#[tokio::test]
async fn real_server_verification_with_its_own_certificate() {
    let (client, _task) = server("sslmode=disable", SessionOptions::default())
        .connect()
        .await
        .expect("disable");
    let row = client
        .query_one(
            "SELECT current_setting('ssl'), current_setting('ssl_cert_file')",
            &[],
        )
        .await
        .expect("settings");
    let (ssl, cert_file): (String, String) = (row.get(0), row.get(1));
    let target = server("sslmode=disable", SessionOptions::default())
        .info()
        .targets[0]
        .clone();
    let Some(addr) = (match &target.host {
        crate::db::conninfo::Host::Tcp(name) => name.parse::<std::net::IpAddr>().ok(),
        crate::db::conninfo::Host::Unix(_) => None,
    }) else {
        return; // not a TCP address: nothing to verify
    };
    let pem = std::fs::read_to_string(&cert_file).unwrap_or_default();
    if ssl != "on" || !pem.contains("BEGIN CERTIFICATE") {
        return; // the server has no TLS, or its certificate is not readable here
    }
    let names: Vec<String> = {
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).expect("server certificate");
        let parsed = rustls::server::ParsedCertificate::try_from(&der).expect("parse");
        ["localhost", "db.example.test"]
            .iter()
            .filter(|n| {
                rustls::client::verify_server_name(
                    &parsed,
                    &ServerName::try_from(**n).expect("name"),
                )
                .is_ok()
            })
            .map(|n| (*n).to_owned())
            .collect()
    };
    let mut env = Env::from_vars(Vec::<(String, String)>::new());
    env.os_user = Some("postgres".into());
    let base = format!(
        "hostaddr={addr} port={} user=postgres dbname=postgres sslrootcert={cert_file}",
        target.port
    );
    if let Some(name) = names.first() {
        let conn = Connector::new(
            info(&format!("host={name} sslmode=verify-full {base}"), &env),
            SessionOptions::default(),
        )
        .expect("connector");
        let (client, _task) = conn
            .connect()
            .await
            .expect("verify-full by the certificate's name");
        assert!(uses_tls(&client).await);
    }
    let conn = Connector::new(
        info(
            &format!("host=wrong.example.test sslmode=verify-full {base}"),
            &env,
        ),
        SessionOptions::default(),
    )
    .expect("connector");
    let err = conn.connect().await.expect_err("wrong name");
    assert!(
        matches!(
            problem(&err),
            Problem::CertNameMismatch { .. } | Problem::CertNotTrusted { .. }
        ),
        "{err}"
    );
}
