//! The rest of libpq's connection parameters (SPEC §12), end to end with the
//! binary in an environment of the test's own ([`Home`]):
//!
//! - connection service files: `PGSERVICE` + `PGSERVICEFILE`,
//!   `~/.pg_service.conf`, `PGSYSCONFDIR/pg_service.conf`, `service=` in a
//!   URL or key=value string reach the private TLS server with host, port,
//!   user, database, sslmode and sslrootcert from the file; parameters given
//!   directly win over the service's, the service's over the environment's;
//!   an unknown service is a bad command line naming the files looked in;
//! - `sslpassword` opens an encrypted client key (and its absence or a
//!   wrong one is named);
//! - `sslcrl` and `sslcrldir`: a revocation list that revokes the server's
//!   certificate refuses the server, one that does not lets it in; a client
//!   certificate the server's own list revokes is refused with its cause;
//! - `sslsni`: the host name goes in the TLS handshake unless `sslsni=0`
//!   (or `PGSSLSNI=0`), seen by a TLS-terminating proxy in front of the
//!   plain test server.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::{
    assert_code, assert_no_panic, assert_one_line_error, assert_stderr_has, assert_success,
    json_summary, output, server_url, stdout, url_encode, Home, Server, TestDb,
};
use crate::pki::Ca;

/// A service section for the TLS server: every parameter but the password.
fn section(name: &str, db: &TestDb, port: u16) -> String {
    let tls = db.tls();
    format!(
        "# relink's test service\n[{name}]\nhost={host}\nport={port}\nuser={user}\n\
         dbname={dbname}\nsslmode=verify-full\nsslrootcert={ca}\n\n[other]\nhost=nowhere.invalid\n",
        host = tls.host,
        user = tls.pw_user,
        dbname = db.name,
        ca = tls.ca,
    )
}

/// `status --format json` succeeds and shows this database (no runs yet,
/// or the run of the test).
#[track_caller]
fn status_ok(out: &std::process::Output) -> serde_json::Value {
    assert_success(out);
    assert_no_panic(out);
    serde_json::from_str(stdout(out).trim()).expect("status JSON")
}

#[tokio::test]
async fn a_service_file_reaches_the_tls_server_and_direct_parameters_win() {
    let db = TestDb::on(Server::Tls, "svc").await;
    let tls = db.tls();
    let home = Home::new("svc");
    let file = home.write(
        "services/pg_service.conf",
        &section("relink-tls", &db, tls.port),
        0o644,
    );
    let file = file.to_string_lossy().into_owned();
    let with_service = || {
        let mut cmd = home.relink();
        cmd.env("PGSERVICE", "relink-tls")
            .env("PGSERVICEFILE", &file)
            .env("PGPASSWORD", &tls.pw);
        cmd
    };

    // PGSERVICE + PGSERVICEFILE alone: the whole migration.
    assert_success(&output(with_service(), &["generate", "--profiles", "200"]));
    let out = output(with_service(), &["run", "--format", "json"]);
    assert_success(&out);
    let created = json_summary(&out)["links_created"].as_u64().expect("links");
    assert!(created > 100, "{created}");
    assert!(
        db.count("SELECT count(*) FROM relink.ledger").await > 0,
        "the run wrote to the service's database"
    );
    // (Over TLS, verified: the server refuses anything unencrypted, and
    // only the service file names the CA.)
    let status = status_ok(&output(with_service(), &["status", "--format", "json"]));
    assert_eq!(status["runs"][0]["status"], "completed", "{status}");
    assert_success(&output(with_service(), &["verify", "--strict"]));

    // The service's parameters win over the environment's (libpq's order):
    // PGPORT and PGHOST point nowhere.
    let mut cmd = with_service();
    cmd.env("PGPORT", "1").env("PGHOST", "nowhere.invalid");
    status_ok(&output(cmd, &["status", "--format", "json"]));

    // service= in a URL and in a key=value string.
    for conninfo in [
        "postgres://?service=relink-tls".to_owned(),
        "service=relink-tls".to_owned(),
    ] {
        let mut cmd = home.relink_url(&conninfo);
        cmd.env("PGSERVICEFILE", &file).env("PGPASSWORD", &tls.pw);
        status_ok(&output(cmd, &["status", "--format", "json"]));
    }

    // A URL's own host and port win over the service's: with a service
    // whose port is wrong, the URL's port connects, and without it the
    // service's port is the one tried.
    let wrong = home.write(
        "services/wrong-port.conf",
        &section("relink-tls", &db, 1),
        0o644,
    );
    let wrong = wrong.to_string_lossy().into_owned();
    let mut cmd = home.relink_url(&format!(
        "postgres://{}:{}/?service=relink-tls",
        tls.host, tls.port
    ));
    cmd.env("PGSERVICEFILE", &wrong).env("PGPASSWORD", &tls.pw);
    status_ok(&output(cmd, &["status", "--format", "json"]));
    let mut cmd = home.relink_url("postgres://?service=relink-tls");
    cmd.env("PGSERVICEFILE", &wrong).env("PGPASSWORD", &tls.pw);
    assert_one_line_error(
        &output(cmd, &["status"]),
        1,
        &["localhost:1", "cannot reach the server"],
    );
    // The URL's database wins too: the one named there does not exist.
    let mut cmd = home.relink_url("postgres:///no_such_db?service=relink-tls");
    cmd.env("PGSERVICEFILE", &file).env("PGPASSWORD", &tls.pw);
    assert_one_line_error(
        &output(cmd, &["status"]),
        1,
        &["database \"no_such_db\" does not exist"],
    );

    // ~/.pg_service.conf, then PGSYSCONFDIR/pg_service.conf.
    home.write(
        ".pg_service.conf",
        &section("in-home", &db, tls.port),
        0o644,
    );
    let sysconf = home.path().join("etc");
    home.write(
        "etc/pg_service.conf",
        &section("in-etc", &db, tls.port),
        0o644,
    );
    for name in ["in-home", "in-etc"] {
        let mut cmd = home.relink();
        cmd.env("PGSERVICE", name)
            .env("PGSYSCONFDIR", &sysconf)
            .env("PGPASSWORD", &tls.pw);
        status_ok(&output(cmd, &["status", "--format", "json"]));
    }

    // A service defined nowhere: a bad command line naming where relink
    // looked, never ignored.
    let mut cmd = home.relink();
    cmd.env("PGSERVICE", "missing")
        .env("PGSERVICEFILE", &file)
        .env("PGSYSCONFDIR", &sysconf)
        .env("PGPASSWORD", &tls.pw);
    let err = assert_one_line_error(
        &output(cmd, &["status"]),
        2,
        &["definition of service \"missing\" not found", &file],
    );
    assert!(!err.contains(&tls.pw), "{err}");
}

#[tokio::test]
async fn sslpassword_opens_an_encrypted_client_key() {
    let db = TestDb::on(Server::Tls, "sslpassword").await;
    let tls = db.tls();
    let home = Home::new("sslpassword");
    // relink refuses a key others can read, as libpq does: a private copy.
    let key = home.copy(&tls.client_key_encrypted, "client.enc.key", 0o600);
    let key = key.to_string_lossy().into_owned();
    let url = |password: Option<&str>| {
        let mut extra = vec![
            ("sslcert", tls.client_cert.as_str()),
            ("sslkey", key.as_str()),
        ];
        if let Some(password) = password {
            extra.push(("sslpassword", password));
        }
        tls.url(&tls.cert_user, None, &db.name, &extra)
    };
    let out = output(
        home.relink_url(&url(Some(&tls.client_key_password))),
        &["status", "--format", "json"],
    );
    status_ok(&out);

    let err = assert_one_line_error(
        &output(home.relink_url(&url(None)), &["status"]),
        1,
        &["is encrypted and no sslpassword is set", &key],
    );
    assert!(!err.contains(&tls.client_key_password), "{err}");
    let err = assert_one_line_error(
        &output(home.relink_url(&url(Some("not-the-password"))), &["status"]),
        1,
        &["cannot be decrypted with sslpassword", "check the password"],
    );
    assert!(!err.contains("not-the-password"), "{err}");
}

#[tokio::test]
async fn revocation_lists_refuse_a_revoked_certificate_on_either_side() {
    let db = TestDb::on(Server::Tls, "sslcrl").await;
    let tls = db.tls();
    let home = Home::new("sslcrl");
    let url = |extra: &[(&str, &str)]| tls.url(&tls.pw_user, Some(&tls.pw), &db.name, extra);

    // A list revoking nothing: the server passes (the list is read, and the
    // CA's list vouches for the server's certificate).
    status_ok(&output(
        home.relink_url(&url(&[("sslcrl", &tls.empty_crl)])),
        &["status", "--format", "json"],
    ));
    // The CA's list revoking the server's certificate: refused, before
    // anything is written; the same from a directory (sslcrldir) and from
    // PGSSLCRL.
    for (extra, env) in [
        (vec![("sslcrl", tls.server_revoked_crl.as_str())], None),
        (
            vec![("sslcrldir", tls.server_revoked_crl_dir.as_str())],
            None,
        ),
        (vec![], Some(("PGSSLCRL", tls.server_revoked_crl.as_str()))),
        (
            vec![],
            Some(("PGSSLCRLDIR", tls.server_revoked_crl_dir.as_str())),
        ),
    ] {
        let mut cmd = home.relink_url(&url(&extra));
        if let Some((name, value)) = env {
            cmd.env(name, value);
        }
        assert_one_line_error(
            &output(cmd, &["status"]),
            1,
            &["the server's certificate is revoked", "sslcrl/sslcrldir"],
        );
    }
    assert_eq!(
        db.count("SELECT count(*) FROM pg_namespace WHERE nspname = 'relink'")
            .await,
        0
    );
    // A version 1 list (no extensions) is refused by name before
    // connecting, never ignored.
    assert_one_line_error(
        &output(
            home.relink_url(&url(&[("sslcrl", &tls.v1_crl)])),
            &["status"],
        ),
        1,
        &[
            &format!("cannot read the certificate revocation list {}", tls.v1_crl),
            "version 2",
        ],
    );

    // A client certificate the server's list (ssl_crl_file) revokes.
    let key = home.copy(&tls.revoked_client_key, "revoked.key", 0o600);
    let revoked = tls.url(
        &tls.cert_user,
        None,
        &db.name,
        &[
            ("sslcert", &tls.revoked_client_cert),
            ("sslkey", &key.to_string_lossy()),
        ],
    );
    assert_one_line_error(
        &output(home.relink_url(&revoked), &["status"]),
        1,
        &[
            "the server refused the client certificate as revoked",
            "sslcert",
        ],
    );
    // The same login with its valid certificate gets in.
    status_ok(&output(
        home.relink_url(&db.cert_url()),
        &["status", "--format", "json"],
    ));
}

// ------------------------------------------------------------------ sslsni

/// A TLS-terminating proxy for PostgreSQL: answers relink's SSLRequest,
/// completes the handshake with a certificate for `localhost` (signed by a
/// CA of the test's own), records the server name the client sent (SNI),
/// and passes the decrypted session on to the plain test server.
struct SniProxy {
    port: u16,
    /// The CA to verify the proxy with (PEM file).
    ca: String,
    /// The SNI of each handshake, in order (None: no server name sent).
    seen: Arc<Mutex<Vec<Option<String>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl SniProxy {
    async fn start(home: &Home) -> Self {
        let ca = Ca::new("relink SNI test CA");
        let leaf = ca.issue(&["localhost"]);
        let ca_file = home.write("sni-ca.pem", &ca.pem(), 0o644);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![leaf.cert.clone()], leaf.key())
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let backend = url::Url::parse(&server_url()).expect("the test server's URL");
        let backend = format!(
            "{}:{}",
            backend.host_str().unwrap_or("127.0.0.1"),
            backend.port().unwrap_or(5432)
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let seen = seen.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let (acceptor, seen, backend) =
                        (acceptor.clone(), seen.clone(), backend.clone());
                    tokio::spawn(async move {
                        let _ = relay(client, acceptor, seen, &backend).await;
                    });
                }
            }
        });
        Self {
            port,
            ca: ca_file.to_string_lossy().into_owned(),
            seen,
            task,
        }
    }

    fn seen(&self) -> Vec<Option<String>> {
        self.seen.lock().expect("seen").clone()
    }
}

impl Drop for SniProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One session through the proxy: SSLRequest, handshake (recording the
/// SNI), then bytes both ways to the backend.
async fn relay(
    mut client: TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    seen: Arc<Mutex<Vec<Option<String>>>>,
    backend: &str,
) -> std::io::Result<()> {
    let mut request = [0u8; 8];
    client.read_exact(&mut request).await?;
    if request != [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f] {
        return Ok(()); // not an SSLRequest: relink always asks for TLS here
    }
    client.write_all(b"S").await?;
    let mut tls = acceptor.accept(client).await?;
    let name = tls.get_ref().1.server_name().map(str::to_owned);
    if let Ok(mut seen) = seen.lock() {
        seen.push(name);
    }
    let mut server = TcpStream::connect(backend).await?;
    tokio::io::copy_bidirectional(&mut tls, &mut server).await?;
    Ok(())
}

// Multi-threaded: the proxy serves while the test waits on relink.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslsni_sends_the_host_name_unless_turned_off() {
    let db = TestDb::new("sslsni").await;
    let home = Home::new("sslsni");
    let proxy = SniProxy::start(&home).await;
    let base = url::Url::parse(&db.url).expect("url");
    let conninfo = |host: &str, extra: &str| {
        format!(
            "postgres://{}@{host}:{}/{}?sslmode=verify-full&sslrootcert={}{extra}",
            base.username(),
            proxy.port,
            db.name,
            url_encode(&proxy.ca)
        )
    };
    for (extra, env, expected) in [
        ("", None, Some("localhost")),
        ("&sslsni=1", None, Some("localhost")),
        ("&sslsni=0", None, None),
        ("", Some("0"), None),
    ] {
        let before = proxy.seen().len();
        let mut cmd = home.relink_url(&conninfo("localhost", extra));
        if let Some(value) = env {
            cmd.env("PGSSLSNI", value);
        }
        let out = output(cmd, &["status", "--format", "json"]);
        status_ok(&out);
        let seen = proxy.seen();
        let handshakes = &seen[before..];
        assert!(!handshakes.is_empty(), "{extra}: no handshake seen");
        assert!(
            handshakes.iter().all(|s| s.as_deref() == expected),
            "{extra} {env:?}: {handshakes:?}"
        );
    }
    // An IP address is never sent as a server name (RFC 6066), as in libpq.
    let before = proxy.seen().len();
    let ip = conninfo("127.0.0.1", "").replace("verify-full", "verify-ca");
    status_ok(&output(
        home.relink_url(&ip),
        &["status", "--format", "json"],
    ));
    assert!(proxy.seen()[before..].iter().all(Option::is_none));

    let out = output(
        home.relink_url(&conninfo("localhost", "&sslsni=yes")),
        &["status"],
    );
    assert_code(&out, 2);
    assert_stderr_has(
        &out,
        "invalid value \"yes\" for connection parameter \"sslsni\"",
    );
}
