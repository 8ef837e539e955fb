//! relink over TLS (SPEC §12), end to end: the binary against the private
//! TLS-only server (`scripts/pg-server tls`), which refuses unencrypted TCP
//! as AWS RDS with `rds.force_ssl` does, so every command that succeeds here
//! went over TLS.
//!
//! - Every command with `sslmode=require`, with `verify-full` +
//!   `sslrootcert`, with a client certificate, from libpq's environment and
//!   through several hosts migrates exactly what a plain connection does.
//! - A certificate relink must not trust, a host name the certificate does
//!   not name, and an unencrypted session stop every command before
//!   anything is written, with one line naming the cause and the fix.
//! - Every `sslmode`, `sslrootcert` file, bundle and `system`, the default
//!   files under `~/.postgresql/`, md5 and SCRAM with channel binding, the
//!   password from `PGPASSWORD` and the password file (whose permissions
//!   are checked), `target_session_attrs=read-write` past an unreachable
//!   host and past a replica, the session guards, and no password in any
//!   output.
//!
//! Each test has its own database. Every relink here runs with none of the
//! test process's `PG*` variables and with `HOME` set to a directory of the
//! test's own (see [`Home`]), so only what a test sets reaches it.

use std::process::Command;
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

use crate::harness::{
    assert_code, assert_no_panic, assert_one_line_error, assert_stderr_has, assert_success,
    checksum, chmod, json_summary, output, pg_url as url, send_signal, spawn, stderr, stdout,
    tls_server, url_encode, Home, Server, TestDb, TlsServer, LINKS_WITHOUT_TIMES,
};

/// Profiles generated (fixed seed) wherever a migration is compared with
/// the plain one: enough for several chunks of [`CHUNK`], so the writers'
/// pool opens connections of its own, and quick.
const PROFILES: u64 = 500;
const CHUNK: &str = "100";

// ---------------------------------------------------------------------------
// Helpers

/// The SCRAM login with its password in the URL, to `db` on the TLS server
/// by the name its certificate carries, with `query` (`sslmode`, …).
fn pw_url(db: &TestDb, query: &[(&str, &str)]) -> String {
    let tls = db.tls();
    url(
        &localhost(tls),
        &tls.pw_user,
        Some(&tls.pw),
        &db.name,
        query,
    )
}

/// `localhost:port` of the TLS server (the name its certificate carries).
fn localhost(tls: &TlsServer) -> String {
    format!("{}:{}", tls.host, tls.port)
}

/// A database of the test's own on `server` and a `HOME` of its own, both
/// named after `tag`.
async fn db_and_home(server: Server, tag: &str) -> (TestDb, Home) {
    (TestDb::on(server, tag).await, Home::new(tag))
}

/// `home`'s relink reaching `db` (on the TLS server) through libpq's
/// variables alone: PGHOST (the name the certificate carries), PGPORT,
/// PGUSER = `user`, PGDATABASE and PGSSLMODE = `sslmode`.
fn pg_env(home: &Home, db: &TestDb, user: &str, sslmode: &str) -> Command {
    let tls = db.tls();
    let mut cmd = home.relink();
    cmd.env("PGHOST", &tls.host)
        .env("PGPORT", tls.port.to_string())
        .env("PGUSER", user)
        .env("PGDATABASE", &db.name)
        .env("PGSSLMODE", sslmode);
    cmd
}

/// [`pg_env`] with `verify-full` against the test CA (PGSSLROOTCERT).
fn verified_env(home: &Home, db: &TestDb, user: &str) -> Command {
    let mut cmd = pg_env(home, db, user, "verify-full");
    cmd.env("PGSSLROOTCERT", &db.tls().ca);
    cmd
}

/// What a plain connection migrates from the same generated data.
struct Plain {
    links_checksum: String,
    links_created: serde_json::Value,
}

/// The plain run, once per test process: [`PROFILES`] generated on the plain
/// server (`TestDb`), migrated with `relink run` over an unencrypted
/// connection.
async fn plain() -> &'static Plain {
    static PLAIN: OnceCell<Plain> = OnceCell::const_new();
    PLAIN
        .get_or_init(|| async {
            let db = TestDb::new("tls_plain").await;
            db.generate(PROFILES);
            let out = db.run(&["run", "--format", "json", "--chunk-size", CHUNK]);
            assert_success(&out);
            let links_created = json_summary(&out)["links_created"].clone();
            assert!(
                links_created.as_u64().is_some_and(|n| n > 500),
                "{links_created}"
            );
            Plain {
                links_checksum: db.links_checksum().await,
                links_created,
            }
        })
        .await
}

/// Rows relink could have written: its state schema, and profile links.
async fn written(db: &TestDb) -> (i64, i64) {
    (
        db.count("SELECT count(*) FROM pg_namespace WHERE nspname = 'relink'")
            .await,
        db.count("SELECT count(*) FROM profile_links").await,
    )
}

/// Drives every command through `relink` (a command already connected to
/// `db`: URL or environment) on a fresh database and compares with the
/// plain run: generate; a dry run that writes nothing and plans what the
/// plain run created; the run (equal links); verify --strict; status; a
/// purge that deletes what the run created; a rerun restoring equal links.
async fn every_command_migrates_like_a_plain_connection(db: &TestDb, relink: &dyn Fn() -> Command) {
    let plain = plain().await;
    let go = |args: &[&str]| {
        let out = output(relink(), args);
        assert_success(&out);
        assert_no_panic(&out);
        out
    };
    go(&["generate", "--profiles", &PROFILES.to_string()]);
    let before = written(db).await;
    assert_eq!(before.0, 0);

    let out = go(&["run", "--dry-run", "--format=json", "--chunk-size", CHUNK]);
    assert_eq!(json_summary(&out)["links_created"], plain.links_created);
    assert_eq!(written(db).await, before, "a dry run writes nothing");

    let out = go(&["run", "--format", "json", "--chunk-size", CHUNK]);
    let summary = json_summary(&out);
    assert_eq!(summary["status"], "completed", "{summary}");
    assert_eq!(summary["links_created"], plain.links_created);
    assert_eq!(db.links_checksum().await, plain.links_checksum);

    let out = go(&["verify", "--strict", "--format", "json"]);
    let report: serde_json::Value = serde_json::from_str(stdout(&out).trim()).expect("JSON");
    assert_eq!(report["ok"], true, "{report}");

    let out = go(&["status", "--format", "json"]);
    let status: serde_json::Value = serde_json::from_str(stdout(&out).trim()).expect("JSON");
    assert_eq!(status["runs"][0]["status"], "completed", "{status}");
    assert_eq!(status["ledger"]["links"], plain.links_created, "{status}");

    let out = go(&["purge", "--yes", "--format", "json", "--chunk-size", CHUNK]);
    let summary = json_summary(&out);
    assert_eq!(summary["links_deleted"], plain.links_created, "{summary}");
    assert_eq!(
        written(db).await.1,
        before.1,
        "the purge removed every link"
    );

    go(&["run", "--chunk-size", CHUNK]);
    assert_eq!(db.links_checksum().await, plain.links_checksum);
}

// ---------------------------------------------------------------------------
// Every command over TLS, equal to a plain connection

#[tokio::test]
async fn sslmode_require_runs_every_command_like_a_plain_connection() {
    let (db, home) = db_and_home(Server::Tls, "tls_require").await;
    // Encrypted, the certificate unchecked (no root certificate anywhere).
    let url = pw_url(&db, &[("sslmode", "require")]);
    every_command_migrates_like_a_plain_connection(&db, &|| home.relink_url(&url)).await;
}

#[tokio::test]
async fn verify_full_with_sslrootcert_runs_every_command_like_a_plain_connection() {
    let (db, home) = db_and_home(Server::Tls, "tls_verify_full").await;
    let url = db.pw_url();
    assert!(url.contains("sslmode=verify-full&sslrootcert="), "{url}");
    every_command_migrates_like_a_plain_connection(&db, &|| home.relink_url(&url)).await;
}

#[tokio::test]
async fn a_client_certificate_runs_every_command_like_a_plain_connection() {
    let (db, home) = db_and_home(Server::Tls, "tls_cert").await;
    // relink_cert has no password: pg_hba.conf admits it by certificate only.
    let url = db.cert_url();
    assert!(url.contains("sslcert=") && url.contains("sslkey="), "{url}");
    every_command_migrates_like_a_plain_connection(&db, &|| home.relink_url(&url)).await;
}

#[tokio::test]
async fn libpq_environment_variables_alone_run_every_command() {
    let (db, home) = db_and_home(Server::Tls, "tls_env").await;
    let tls = db.tls();
    let relink = || {
        let mut cmd = verified_env(&home, &db, &tls.pw_user);
        cmd.env("PGPASSWORD", &tls.pw);
        cmd
    };
    every_command_migrates_like_a_plain_connection(&db, &relink).await;

    // Each variable reaches the server: without one, it is missing.
    for (unset, needle) in [
        ("PGPASSWORD", "asks for a password"),
        ("PGSSLROOTCERT", "needs trusted root certificates"),
        ("PGDATABASE", "database \"relink_pw\" does not exist"),
    ] {
        let mut cmd = relink();
        cmd.env_remove(unset);
        let out = output(cmd, &["status"]);
        let code = if unset == "PGSSLROOTCERT" { 2 } else { 1 };
        assert_one_line_error(&out, code, &[needle]);
    }
    // Without PGUSER, the operating-system user (as libpq), here refused.
    let me = Command::new("id").arg("-un").output().expect("id -un");
    let me = String::from_utf8_lossy(&me.stdout).trim().to_owned();
    let mut cmd = relink();
    cmd.env_remove("PGUSER");
    let out = output(cmd, &["status"]);
    assert_one_line_error(&out, 1, &[&format!("for user \"{me}\"")]);
    let mut cmd = relink();
    cmd.env("PGPORT", "1");
    let out = output(cmd, &["status"]);
    assert_one_line_error(&out, 1, &["localhost:1", "cannot reach the server"]);

    // PGHOSTADDR: the address connected to, PGHOST only the name the
    // certificate must carry (a name that does not resolve is never looked
    // up).
    let mut cmd = relink();
    cmd.env("PGHOSTADDR", "127.0.0.1");
    assert_success(&output(cmd, &["status"]));
    let mut cmd = relink();
    cmd.env("PGHOST", "db.invalid")
        .env("PGHOSTADDR", "127.0.0.1")
        .env("PGSSLMODE", "require")
        .env_remove("PGSSLROOTCERT");
    assert_success(&output(cmd, &["status"]));
    let mut cmd = relink();
    cmd.env("PGHOST", "db.invalid")
        .env("PGHOSTADDR", "127.0.0.1");
    let out = output(cmd, &["status"]);
    assert_one_line_error(
        &out,
        1,
        &["the server's certificate is not valid for host \"db.invalid\""],
    );

    // PGCONNECT_TIMEOUT (over --connect-timeout's 10 s): a server that
    // accepts and never answers is given up on after it.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut cmd = relink();
    cmd.env("PGHOST", "127.0.0.1")
        .env(
            "PGPORT",
            silent.local_addr().expect("addr").port().to_string(),
        )
        .env("PGCONNECT_TIMEOUT", "2");
    let started = Instant::now();
    let out = output(cmd, &["status"]);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert_one_line_error(&out, 1, &["no answer within 2s", "raise connect_timeout"]);
    let silent_url = url(
        &format!("127.0.0.1:{}", silent.local_addr().expect("addr").port()),
        &tls.pw_user,
        None,
        &db.name,
        &[("sslmode", "require"), ("connect_timeout", "3")],
    );
    let started = Instant::now();
    let out = output(home.relink_url(&silent_url), &["status"]);
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "{:?}",
        started.elapsed()
    );
    assert_one_line_error(&out, 1, &["no answer within 3s"]);
    drop(silent);
}

// ---------------------------------------------------------------------------
// Refused before anything is written

/// On a database with data to migrate, every command over `url` exits 1
/// with one line holding `needles`, and nothing is written: no state
/// schema, no link.
async fn refused_before_anything_is_written(db: &TestDb, home: &Home, url: &str, needles: &[&str]) {
    let out = output(
        home.relink_url(&db.pw_url()),
        &["generate", "--profiles", "50"],
    );
    assert_success(&out);
    let before = written(db).await;
    for args in [
        &["run"][..],
        &["run", "--dry-run"],
        &["purge", "--yes"],
        &["pause"],
        &["verify"],
        &["status"],
    ] {
        let out = output(home.relink_url(url), args);
        let err = assert_one_line_error(&out, 1, needles);
        assert!(!err.contains(&db.tls().pw), "{err}");
    }
    assert_eq!(written(db).await, before, "nothing may be written");
}

#[tokio::test]
async fn verify_full_refuses_an_untrusted_ca_before_writing_anything() {
    let (db, home) = db_and_home(Server::Tls, "tls_untrusted").await;
    let tls = db.tls();
    let url = pw_url(
        &db,
        &[
            ("sslmode", "verify-full"),
            ("sslrootcert", &tls.untrusted_ca),
        ],
    );
    let cause = format!(
        "the server's certificate is not trusted by the root certificate file {}",
        tls.untrusted_ca
    );
    let fix = "set sslrootcert=FILE to a PEM file holding the CA certificate that signed the \
               server's certificate";
    refused_before_anything_is_written(&db, &home, &url, &[&cause, fix]).await;
}

#[tokio::test]
async fn verify_full_refuses_a_host_the_certificate_does_not_name_before_writing_anything() {
    let (db, home) = db_and_home(Server::Tls, "tls_wrong_name").await;
    let tls = db.tls();
    // The certificate names localhost only; the CA is the right one.
    for host in ["127.0.0.1", "[::1]"] {
        let url = url(
            &format!("{host}:{}", tls.port),
            &tls.pw_user,
            Some(&tls.pw),
            &db.name,
            &[("sslmode", "verify-full"), ("sslrootcert", &tls.ca)],
        );
        let cause = format!(
            "the server's certificate is not valid for host \"{}\"",
            host.trim_matches(['[', ']'])
        );
        let fix = "connect by the host name the certificate names, or use sslmode=verify-ca";
        if host == "127.0.0.1" {
            refused_before_anything_is_written(&db, &home, &url, &[&cause, fix]).await;
        } else {
            let out = output(home.relink_url(&url), &["run"]);
            assert_one_line_error(&out, 1, &[&cause, fix]);
        }
    }
}

#[tokio::test]
async fn sslmode_disable_is_told_the_server_requires_tls() {
    let (db, home) = db_and_home(Server::Tls, "tls_disable").await;
    let url = pw_url(&db, &[("sslmode", "disable")]);
    let cause = "the server accepts this client only over TLS";
    let fix = "use sslmode=require, or better sslmode=verify-full with sslrootcert";
    refused_before_anything_is_written(&db, &home, &url, &[cause, fix]).await;
}

#[test]
fn unusable_tls_settings_are_a_bad_command_line() {
    let tls = tls_server();
    let home = Home::new("tls_usage");
    let host = localhost(tls);
    let base = |query: &[(&str, &str)]| url(&host, &tls.pw_user, Some(&tls.pw), "postgres", query);
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            base(&[
                ("sslmode", "verify-full"),
                ("sslrootcert", "/nonexistent/ca.crt"),
            ]),
            vec![
                "sslrootcert file /nonexistent/ca.crt does not exist",
                "fix the path",
            ],
        ),
        (
            // No sslrootcert, and no ~/.postgresql/root.crt in this HOME.
            base(&[("sslmode", "verify-full")]),
            vec![
                "sslmode=verify-full needs trusted root certificates",
                "set sslrootcert=FILE",
                "sslrootcert=system",
                "sslmode=require to encrypt without verifying",
            ],
        ),
        (
            base(&[("sslmode", "require"), ("sslrootcert", "system")]),
            vec!["sslrootcert=system requires sslmode=verify-full"],
        ),
        (
            base(&[("sslmode", "disable"), ("channel_binding", "require")]),
            vec!["channel_binding=require needs TLS", "sslmode=require"],
        ),
        (
            base(&[("sslmode", "verify_full")]),
            vec!["invalid value \"verify_full\" for connection parameter \"sslmode\""],
        ),
        (
            base(&[
                ("sslmode", "verify-full"),
                ("sslrootcert", &tls.ca),
                ("sslcert", &tls.client_cert),
                ("sslkey", "/nonexistent/client.key"),
            ]),
            vec![
                "but not its private key file /nonexistent/client.key",
                "set sslkey=FILE",
            ],
        ),
        (
            base(&[
                ("sslmode", "verify-full"),
                ("sslrootcert", &tls.ca),
                ("sslcert", "/nonexistent/client.crt"),
            ]),
            vec!["sslcert file /nonexistent/client.crt does not exist"],
        ),
        (
            base(&[("sslmode", "require"), ("sslnegotiation", "direct")]),
            vec![
                "connection parameter \"sslnegotiation\" is accepted by libpq but not supported by relink",
            ],
        ),
        (
            base(&[("service", "prod")]),
            vec![
                "definition of service \"prod\" not found",
                "~/.pg_service.conf",
            ],
        ),
        (
            base(&[
                ("sslmode", "verify-full"),
                ("sslrootcert", &tls.ca),
                ("sslcrl", "/nonexistent/root.crl"),
            ]),
            vec!["sslcrl file /nonexistent/root.crl does not exist"],
        ),
        (
            base(&[("sslmod", "require")]),
            vec!["unknown connection parameter \"sslmod\""],
        ),
    ];
    for (url, needles) in cases {
        let out = output(home.relink_url(&url), &["status"]);
        let err = assert_one_line_error(&out, 2, &needles);
        assert!(!err.contains(&tls.pw), "{err}");
    }
}

// ---------------------------------------------------------------------------
// Every sslmode and every source of trusted roots

#[tokio::test]
async fn every_sslmode_and_root_certificate_source_reaches_the_tls_only_server() {
    let (db, home) = db_and_home(Server::Tls, "tls_modes").await;
    let tls = db.tls();
    let host = localhost(tls);
    let by_ip = format!("127.0.0.1:{}", tls.port);
    // A bundle, as providers publish them: an unrelated CA, then the one
    // that signed the server's certificate.
    let bundle = home.write(
        "bundle.pem",
        &format!(
            "{}{}",
            std::fs::read_to_string(&tls.untrusted_ca).expect("untrusted CA"),
            std::fs::read_to_string(&tls.ca).expect("CA")
        ),
        0o644,
    );
    let bundle = bundle.to_string_lossy().into_owned();
    let ca = tls.ca.as_str();
    let pw = Some(tls.pw.as_str());
    let user = tls.pw_user.as_str();
    let dbname = db.name.as_str();
    let cases: Vec<(&str, String)> = vec![
        ("no sslmode (prefer)", url(&host, user, pw, dbname, &[])),
        (
            "allow: refused in plaintext, then TLS",
            url(&host, user, pw, dbname, &[("sslmode", "allow")]),
        ),
        (
            "prefer",
            url(&host, user, pw, dbname, &[("sslmode", "prefer")]),
        ),
        (
            "require",
            url(&host, user, pw, dbname, &[("sslmode", "require")]),
        ),
        (
            "require with sslrootcert checks the chain",
            url(
                &host,
                user,
                pw,
                dbname,
                &[("sslmode", "require"), ("sslrootcert", ca)],
            ),
        ),
        (
            "verify-ca by IP address (the certificate does not name it)",
            url(
                &by_ip,
                user,
                pw,
                dbname,
                &[("sslmode", "verify-ca"), ("sslrootcert", ca)],
            ),
        ),
        (
            "verify-full",
            url(
                &host,
                user,
                pw,
                dbname,
                &[("sslmode", "verify-full"), ("sslrootcert", ca)],
            ),
        ),
        (
            "verify-full with a CA bundle",
            url(
                &host,
                user,
                pw,
                dbname,
                &[("sslmode", "verify-full"), ("sslrootcert", &bundle)],
            ),
        ),
        (
            "verify-full by host name with hostaddr (key=value string)",
            format!(
                "host=localhost hostaddr=127.0.0.1 port={} user={user} password={} \
                 dbname={dbname} sslmode=verify-full sslrootcert='{ca}'",
                tls.port, tls.pw
            ),
        ),
    ];
    for (what, url) in &cases {
        let out = output(home.relink_url(url), &["status", "--format", "json"]);
        assert!(
            out.status.success(),
            "{what}: {url}\n{}",
            stderr(&out).replace(&tls.pw, "***")
        );
    }

    // sslrootcert=system: the operating system's trust store, which
    // SSL_CERT_FILE replaces (as for OpenSSL); without our CA in it, the
    // certificate is not trusted, and the message says a private CA is not
    // in the system store.
    let system = url(&host, user, pw, dbname, &[("sslrootcert", "system")]);
    let mut cmd = home.relink_url(&system);
    cmd.env("SSL_CERT_FILE", ca).env_remove("SSL_CERT_DIR");
    assert_success(&output(cmd, &["status"]));
    let bound = url(
        &host,
        user,
        pw,
        dbname,
        &[("sslrootcert", "system"), ("channel_binding", "require")],
    );
    let mut cmd = home.relink_url(&bound);
    cmd.env("SSL_CERT_FILE", ca).env_remove("SSL_CERT_DIR");
    assert_success(&output(cmd, &["status"]));
    let mut cmd = home.relink_url(&system);
    cmd.env("SSL_CERT_FILE", &tls.untrusted_ca)
        .env_remove("SSL_CERT_DIR");
    let out = output(cmd, &["status"]);
    assert_one_line_error(
        &out,
        1,
        &[
            "not trusted by the operating system's trust store (sslrootcert=system)",
            "a private CA is not in the system store",
        ],
    );

    // With a root certificate configured, require checks the chain too (as
    // libpq does): the wrong CA is refused.
    let wrong = url(
        &host,
        user,
        pw,
        dbname,
        &[("sslmode", "require"), ("sslrootcert", &tls.untrusted_ca)],
    );
    let out = output(home.relink_url(&wrong), &["status"]);
    assert_one_line_error(&out, 1, &["not trusted by the root certificate file"]);
}

#[tokio::test]
async fn root_and_client_certificates_come_from_the_environment_and_the_default_files() {
    let db = TestDb::on(Server::Tls, "tls_cert_env").await;
    let tls = db.tls();
    let plain = plain().await;
    let env = |home: &Home| pg_env(home, &db, &tls.cert_user, "verify-full");

    // PGSSLROOTCERT, PGSSLCERT, PGSSLKEY.
    let home = Home::new("tls_cert_env");
    let with_vars = || {
        let mut cmd = env(&home);
        cmd.env("PGSSLROOTCERT", &tls.ca)
            .env("PGSSLCERT", &tls.client_cert)
            .env("PGSSLKEY", &tls.client_key);
        cmd
    };
    assert_success(&output(
        with_vars(),
        &["generate", "--profiles", &PROFILES.to_string()],
    ));
    let out = output(
        with_vars(),
        &["run", "--format", "json", "--chunk-size", CHUNK],
    );
    assert_success(&out);
    assert_eq!(json_summary(&out)["links_created"], plain.links_created);
    assert_eq!(db.links_checksum().await, plain.links_checksum);

    // ~/.postgresql/root.crt, postgresql.crt and postgresql.key, as libpq
    // finds them with no setting at all.
    let dotted = Home::new("tls_cert_dot");
    dotted.copy(&tls.ca, ".postgresql/root.crt", 0o644);
    dotted.copy(&tls.client_cert, ".postgresql/postgresql.crt", 0o644);
    let key = dotted.copy(&tls.client_key, ".postgresql/postgresql.key", 0o600);
    let out = output(env(&dotted), &["verify", "--format", "json"]);
    assert_success(&out);
    let out = output(env(&dotted), &["status", "--format", "json"]);
    assert_success(&out);

    // A certificate with a key it was not issued for: named, with the fix.
    let mut cmd = env(&dotted);
    cmd.env("PGSSLCERT", &tls.ca);
    let out = output(cmd, &["status"]);
    assert_one_line_error(
        &out,
        1,
        &[
            &format!(
                "client certificate {} and private key {} do not belong together",
                tls.ca,
                key.display()
            ),
            "set sslcert and sslkey to a certificate and the private key it was issued for",
        ],
    );

    // A private key others may read is refused, naming it and the fix.
    chmod(&key, 0o644);
    let out = output(env(&dotted), &["run"]);
    let chmod_fix = format!("run chmod 600 {}", key.display());
    assert_one_line_error(
        &out,
        1,
        &[&format!("private key file {}", key.display()), &chmod_fix],
    );

    // Without any certificate, the server's refusal is explained.
    let bare = Home::new("tls_cert_none");
    let mut cmd = env(&bare);
    cmd.env("PGSSLROOTCERT", &tls.ca);
    let out = output(cmd, &["status"]);
    assert_one_line_error(
        &out,
        1,
        &[
            "the server wants a client certificate for this user",
            "set sslcert and sslkey",
        ],
    );
}

// ---------------------------------------------------------------------------
// Passwords: md5, SCRAM with channel binding, PGPASSWORD, the password file

#[tokio::test]
async fn md5_and_scram_with_channel_binding() {
    let (db, home) = db_and_home(Server::Tls, "tls_auth").await;
    let tls = db.tls();
    let plain = plain().await;
    let host = localhost(tls);
    let verified = [("sslmode", "verify-full"), ("sslrootcert", tls.ca.as_str())];

    // md5 (the role's password is stored as md5): generate and run.
    let md5 = db.md5_url();
    assert_success(&output(
        home.relink_url(&md5),
        &["generate", "--profiles", &PROFILES.to_string()],
    ));
    let out = output(
        home.relink_url(&md5),
        &["run", "--format", "json", "--chunk-size", CHUNK],
    );
    assert_success(&out);
    assert_eq!(db.links_checksum().await, plain.links_checksum);

    // SCRAM with channel_binding=require, in the URL and as PGCHANNELBINDING.
    let mut query = verified.to_vec();
    query.push(("channel_binding", "require"));
    let scram = url(&host, &tls.pw_user, Some(&tls.pw), &db.name, &query);
    let out = output(home.relink_url(&scram), &["verify", "--strict"]);
    assert_success(&out);
    let mut cmd = pg_env(&home, &db, &tls.pw_user, "require");
    cmd.env("PGPASSWORD", &tls.pw)
        .env("PGCHANNELBINDING", "require");
    assert_success(&output(cmd, &["status"]));

    // md5 from the environment.
    let mut cmd = pg_env(&home, &db, &tls.md5_user, "require");
    cmd.env("PGPASSWORD", &tls.md5_pw);
    assert_success(&output(cmd, &["status"]));

    // md5 cannot bind the channel: refused, saying why and what to change.
    let md5_bound = url(&host, &tls.md5_user, Some(&tls.md5_pw), &db.name, &query);
    let out = output(home.relink_url(&md5_bound), &["run"]);
    let err = assert_one_line_error(
        &out,
        1,
        &[
            "channel_binding=require could not be honoured",
            "md5 or password",
            "SCRAM-SHA-256",
            "channel_binding=prefer",
        ],
    );
    assert!(!err.contains(&tls.md5_pw), "{err}");
}

#[tokio::test]
async fn the_password_file_supplies_the_password_with_wildcards() {
    let db = TestDb::on(Server::Tls, "tls_pgpass").await;
    let tls = db.tls();
    let plain = plain().await;
    let env = |home: &Home| verified_env(home, &db, &tls.pw_user);

    // ~/.pgpass: lines that do not match come first; the wildcard line
    // matches any host and database. Every pooled connection gets it too.
    let home = Home::new("tls_pgpass");
    home.write(
        ".pgpass",
        &format!(
            "# relink test\nlocalhost:1:*:*:not-this-one\nother.example:*:*:{user}:nor-this\n\
             *:{port}:*:{user}:{pw}\n*:*:*:*:fallback-not-reached\n",
            user = tls.pw_user,
            port = tls.port,
            pw = tls.pw
        ),
        0o600,
    );
    assert_success(&output(
        env(&home),
        &["generate", "--profiles", &PROFILES.to_string()],
    ));
    let out = output(
        env(&home),
        &["run", "--format", "json", "--chunk-size", CHUNK],
    );
    assert_success(&out);
    assert_eq!(db.links_checksum().await, plain.links_checksum);

    // PGPASSFILE, elsewhere, with the exact host, port, database and user
    // (and a URL without a password: the file applies to it too).
    let other = Home::new("tls_pgpass_file");
    let file = other.write(
        "secrets/pgpass",
        &format!(
            "{}:{}:{}:{}:{}\n",
            tls.host, tls.port, db.name, tls.pw_user, tls.pw
        ),
        0o600,
    );
    let bare = Home::new("tls_pgpass_bare");
    let mut cmd = env(&bare);
    cmd.env("PGPASSFILE", &file);
    assert_success(&output(cmd, &["verify", "--strict"]));
    let no_password = url(
        &localhost(tls),
        &tls.pw_user,
        None,
        &db.name,
        &[("sslmode", "require")],
    );
    let mut cmd = bare.relink_url(&no_password);
    cmd.env("PGPASSFILE", &file);
    assert_success(&output(cmd, &["status"]));
    // The passfile parameter, over PGPASSFILE.
    let with_passfile = format!(
        "{no_password}&passfile={}",
        url_encode(&file.to_string_lossy())
    );
    let mut cmd = bare.relink_url(&with_passfile);
    cmd.env("PGPASSFILE", "/nonexistent/pgpass");
    assert_success(&output(cmd, &["status"]));
}

#[tokio::test]
async fn a_password_file_others_can_read_is_refused_naming_it() {
    let db = TestDb::on(Server::Tls, "tls_pgpass_open").await;
    let tls = db.tls();
    let line = format!("*:*:*:{}:{}\n", tls.pw_user, tls.pw);
    let env = |home: &Home| pg_env(home, &db, &tls.pw_user, "require");
    let home = Home::new("tls_pgpass_open");
    assert_success(&output(
        home.relink_url(&db.pw_url()),
        &["generate", "--profiles", "50"],
    ));
    let before = written(&db).await;
    for (mode, passfile) in [(0o644, false), (0o640, true), (0o604, false)] {
        let (path, mut cmd) = if passfile {
            let path = home.write("pgpass-elsewhere", &line, mode);
            let mut cmd = env(&home);
            cmd.env("PGPASSFILE", &path);
            (path, cmd)
        } else {
            (home.write(".pgpass", &line, mode), env(&home))
        };
        cmd.arg("run");
        let out = cmd.output().expect("run relink");
        let err = assert_one_line_error(
            &out,
            1,
            &[
                &format!(
                    "password file {} has permissions {mode:04o}",
                    path.display()
                ),
                &format!("run chmod 600 {}", path.display()),
            ],
        );
        assert!(!err.contains(&tls.pw), "{err}");
        std::fs::remove_file(&path).expect("remove");
    }
    assert_eq!(written(&db).await, before, "nothing may be written");
}

#[tokio::test]
async fn a_wrong_or_missing_password_says_where_it_came_from() {
    let (db, home) = db_and_home(Server::Tls, "tls_bad_pw").await;
    let tls = db.tls();
    let wrong = "not-the-password";
    let env = |home: &Home| pg_env(home, &db, &tls.pw_user, "require");
    let failed = format!(
        "password authentication failed for user \"{}\"",
        tls.pw_user
    );

    let bad_url = url(
        &localhost(tls),
        &tls.pw_user,
        Some(wrong),
        &db.name,
        &[("sslmode", "require")],
    );
    let out = output(home.relink_url(&bad_url), &["status"]);
    assert_one_line_error(
        &out,
        1,
        &[&failed, "with the password from the connection string"],
    );

    let mut cmd = env(&home);
    cmd.env("PGPASSWORD", wrong);
    let out = output(cmd, &["status"]);
    assert_one_line_error(&out, 1, &[&failed, "with the password from PGPASSWORD"]);

    let file = home.write(".pgpass", &format!("*:*:*:*:{wrong}\n"), 0o600);
    let out = output(env(&home), &["status"]);
    assert_one_line_error(
        &out,
        1,
        &[
            &failed,
            &format!(
                "with the password from the password file {}",
                file.display()
            ),
        ],
    );
    std::fs::remove_file(&file).expect("remove");

    let out = output(env(&home), &["status"]);
    let line = format!(
        "add the line \"{}:{}:{}:{}:PASSWORD\" to {} (with chmod 600)",
        tls.host,
        tls.port,
        db.name,
        tls.pw_user,
        home.path().join(".pgpass").display()
    );
    assert_one_line_error(
        &out,
        1,
        &[
            "asks for a password for user \"relink_pw\" and none was given",
            "set PGPASSWORD",
            &line,
        ],
    );
}

// ---------------------------------------------------------------------------
// Several hosts, target_session_attrs

#[tokio::test]
async fn several_hosts_skip_one_that_cannot_be_reached() {
    let (db, home) = db_and_home(Server::Tls, "tls_hosts").await;
    let tls = db.tls();
    // Nothing listens on port 1: the first host refuses at once.
    let both = url(
        &format!("127.0.0.1:1,{}", localhost(tls)),
        &tls.pw_user,
        Some(&tls.pw),
        &db.name,
        &[
            ("sslmode", "verify-full"),
            ("sslrootcert", &tls.ca),
            ("target_session_attrs", "read-write"),
        ],
    );
    every_command_migrates_like_a_plain_connection(&db, &|| home.relink_url(&both)).await;

    // The same from the environment, the password from ~/.pgpass (matched
    // per host: only the second host's line fits).
    home.write(
        ".pgpass",
        &format!("localhost:{}:*:{}:{}\n", tls.port, tls.pw_user, tls.pw),
        0o600,
    );
    let mut cmd = home.relink();
    cmd.env("PGHOST", format!("127.0.0.1,{}", tls.host))
        .env("PGPORT", format!("1,{}", tls.port))
        .env("PGUSER", &tls.pw_user)
        .env("PGDATABASE", &db.name)
        .env("PGSSLMODE", "verify-full")
        .env("PGSSLROOTCERT", &tls.ca)
        .env("PGTARGETSESSIONATTRS", "read-write");
    assert_success(&output(cmd, &["verify", "--strict"]));

    // When no host can be reached, each is named.
    let none = url(
        "127.0.0.1:1,127.0.0.1:2",
        &tls.pw_user,
        Some(&tls.pw),
        &db.name,
        &[("sslmode", "require")],
    );
    let out = output(home.relink_url(&none), &["run"]);
    assert_one_line_error(
        &out,
        1,
        &[
            "127.0.0.1:1: cannot reach the server",
            "127.0.0.1:2: cannot reach the server",
        ],
    );
}

#[tokio::test]
async fn read_write_skips_the_replica_and_finds_the_primary() {
    let (db, home) = db_and_home(Server::Replica, "tls_primary").await;
    let plain = plain().await;
    let port = |u: &str| url::Url::parse(u).expect("URL").port().expect("port");
    let (primary, replica) = (port(&db.url), port(&db.replica_url()));
    // The replica first, as after a failover that left the old primary
    // listed first.
    let hosts = format!("127.0.0.1:{replica},127.0.0.1:{primary}");
    let any = url(&hosts, "postgres", None, &db.name, &[]);
    let read_write = url(
        &hosts,
        "postgres",
        None,
        &db.name,
        &[("target_session_attrs", "read-write")],
    );

    let out = output(
        home.relink_url(&db.url),
        &["generate", "--profiles", &PROFILES.to_string()],
    );
    assert_success(&out);
    db.wait_replayed(Duration::from_secs(30)).await;

    // Without target_session_attrs the first host, the replica, is used:
    // reading works there, writing is refused before anything is written,
    // naming the fix.
    for args in [&["run", "--dry-run", "-q"][..], &["verify"], &["status"]] {
        assert_success(&output(home.relink_url(&any), args));
    }
    for args in [&["run"][..], &["purge", "--yes"], &["pause"]] {
        let out = output(home.relink_url(&any), args);
        assert_one_line_error(
            &out,
            1,
            &[
                "the server is a standby (in recovery) and accepts no writes",
                "target_session_attrs=read-write",
            ],
        );
    }
    assert_eq!(
        db.client
            .query_one(
                "SELECT count(*) FROM pg_namespace WHERE nspname = 'relink'",
                &[]
            )
            .await
            .expect("count")
            .get::<_, i64>(0),
        0
    );

    // read-write skips the replica: every command reaches the primary.
    let out = output(
        home.relink_url(&read_write),
        &["run", "--dry-run", "--format=json", "--chunk-size", CHUNK],
    );
    assert_success(&out);
    assert_eq!(json_summary(&out)["links_created"], plain.links_created);
    let out = output(
        home.relink_url(&read_write),
        &["run", "--format", "json", "--chunk-size", CHUNK],
    );
    assert_success(&out);
    assert_eq!(json_summary(&out)["links_created"], plain.links_created);
    assert_eq!(
        checksum(&db.client, LINKS_WITHOUT_TIMES).await,
        plain.links_checksum
    );
    for args in [
        &["verify", "--strict"][..],
        &["status"],
        &["purge", "--yes"],
    ] {
        assert_success(&output(home.relink_url(&read_write), args));
    }

    // These two servers have no TLS: sslmode=require says so, and the fix.
    let require = format!("{read_write}&sslmode=require");
    let out = output(home.relink_url(&require), &["status"]);
    assert_one_line_error(
        &out,
        1,
        &[
            "the server does not support TLS, but sslmode=require requires it",
            "enable ssl on the server",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_tls_connections_are_reopened_with_the_password_file_and_the_run_completes() {
    let (db, home) = db_and_home(Server::Tls, "tls_lost").await;
    let tls = db.tls();
    let plain = plain().await;
    home.write(
        ".pgpass",
        &format!("localhost:{}:*:{}:{}\n", tls.port, tls.pw_user, tls.pw),
        0o600,
    );
    let relink = || verified_env(&home, &db, &tls.pw_user);
    assert_success(&output(
        relink(),
        &["generate", "--profiles", &PROFILES.to_string()],
    ));
    let before = db.count("SELECT count(*) FROM profile_links").await;

    let mut cmd = relink();
    cmd.args(["run", "--chunk-size", "10", "--pause", "300ms"]);
    let child = spawn(cmd);
    let started = Instant::now();
    while db.count("SELECT count(*) FROM profile_links").await == before {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no chunk committed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Twice, every relink session (the lock holder's too), as a failover
    // would: each is reopened over verified TLS, with SCRAM and the
    // password from ~/.pgpass. (The second time, some may still be
    // reconnecting.)
    for round in 0..2 {
        let killed = db.terminate_relink_sessions().await;
        assert!(
            killed >= 2 - round,
            "round {round}: terminated {killed} session(s)"
        );
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    let out = child.wait(Duration::from_secs(60)).await;
    assert_success(&out);
    assert_no_panic(&out);
    assert_stderr_has(&out, "reconnecting");
    assert_eq!(db.links_checksum().await, plain.links_checksum);
    assert_success(&output(relink(), &["verify", "--strict"]));
}

// ---------------------------------------------------------------------------
// Session guards

/// `(timer kind, remaining)` of every TCP connection of process `pid` to
/// `port`, as ss(8) shows them (`timer:(keepalive,14sec,0)`).
fn tcp_timers(pid: u32, port: u16) -> Vec<(String, Duration)> {
    let out = Command::new("ss")
        .args([
            "-tnpo",
            "state",
            "established",
            "dport",
            "=",
            &format!(":{port}"),
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run ss ({e}); Debian: apt-get install iproute2"));
    assert!(out.status.success(), "ss failed: {}", stderr(&out));
    stdout(&out)
        .lines()
        .filter(|line| line.contains(&format!("pid={pid},")))
        .map(|line| {
            let timer = line
                .split("timer:(")
                .nth(1)
                .and_then(|t| t.split(')').next())
                .unwrap_or_else(|| panic!("no timer on {line:?}"));
            let mut parts = timer.split(',');
            let kind = parts.next().unwrap_or_default().to_owned();
            let left = parts.next().unwrap_or_default();
            (kind, parse_ss_time(left))
        })
        .collect()
}

/// ss's `14sec`, `950ms`, `1min`, `1min30sec`.
fn parse_ss_time(text: &str) -> Duration {
    let mut total = Duration::ZERO;
    let mut number = String::new();
    let mut unit = String::new();
    let mut flush = |number: &mut String, unit: &mut String| {
        if number.is_empty() {
            return;
        }
        let n: f64 = number
            .parse()
            .unwrap_or_else(|_| panic!("ss time {text:?}"));
        total += Duration::from_secs_f64(match unit.as_str() {
            "ms" => n / 1000.0,
            "sec" => n,
            "min" => n * 60.0,
            "h" => n * 3600.0,
            _ => panic!("ss time {text:?}"),
        });
        number.clear();
        unit.clear();
    };
    for c in text.chars() {
        if c.is_ascii_digit() || c == '.' {
            if !unit.is_empty() {
                flush(&mut number, &mut unit);
            }
            number.push(c);
        } else {
            unit.push(c);
        }
    }
    flush(&mut number, &mut unit);
    total
}

#[test]
fn ss_times_parse() {
    assert_eq!(parse_ss_time("14sec"), Duration::from_secs(14));
    assert_eq!(parse_ss_time("950ms"), Duration::from_millis(950));
    assert_eq!(parse_ss_time("1min30sec"), Duration::from_secs(90));
}

#[tokio::test]
async fn every_session_has_the_idle_guard_and_tcp_keepalives() {
    let (db, home) = db_and_home(Server::Tls, "tls_guards").await;
    let url = db.pw_url();
    assert_success(&output(
        home.relink_url(&url),
        &["generate", "--profiles", "50"],
    ));

    // idle_in_transaction_session_timeout, as a session of relink's sees it:
    // a --throttle-query (run on such a session before anything is written)
    // that fails quoting the setting.
    let show = "SELECT current_setting('idle_in_transaction_session_timeout')::int = 0";
    for (global, expected) in [
        (&[][..], "\"1min\""),
        (&["--idle-timeout", "5s"][..], "\"5s\""),
    ] {
        let mut args = global.to_vec();
        args.extend(["run", "--throttle-query", show]);
        let out = output(home.relink_url(&url), &args);
        assert_one_line_error(
            &out,
            1,
            &[&format!(
                "invalid input syntax for type integer: {expected}"
            )],
        );
    }

    // The connection string's own `options` and `application_name` reach
    // the sessions too.
    let with_options = format!("{url}&options=-c%20work_mem%3D7MB&application_name=my-app");
    let show = "SELECT (current_setting('work_mem') || '/' || current_setting('application_name'))::int = 0";
    let out = output(
        home.relink_url(&with_options),
        &["run", "--throttle-query", show],
    );
    assert_one_line_error(&out, 1, &["\"7MB/my-app\""]);

    // TCP keepalives on every connection of a run (held by `relink pause`,
    // so its sessions sit idle): the first probe within 15 s of silence,
    // where the operating system's default is two hours.
    assert_success(&output(
        home.relink_url(&url),
        &["pause", "--reason", "test"],
    ));
    // PGAPPNAME names the sessions in pg_stat_activity instead of relink's
    // own `relink run host=… pid=…`, as libpq's application_name does.
    let mut cmd = home.relink_url(&url);
    cmd.env("PGAPPNAME", "nightly-relink")
        .args(["run", "--writers", "2"]);
    let mut child = spawn(cmd);
    let named = || async {
        db.count(&format!(
            "SELECT count(*) FROM pg_stat_activity
              WHERE datname = '{}' AND application_name = 'nightly-relink'",
            db.name
        ))
        .await
    };
    let started = Instant::now();
    // Until the run's connections are all open, idle, and named.
    let timers = loop {
        assert!(!child.finished(), "the run ended while paused");
        let timers = tcp_timers(child.pid, db.tls().port);
        let named = usize::try_from(named().await).unwrap_or(0);
        if timers.len() >= 2
            && named >= timers.len()
            && timers.iter().all(|(kind, _)| kind == "keepalive")
        {
            break timers;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not every connection idle with a keepalive timer and named by PGAPPNAME: \
             {timers:?}, {named} named"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for (_, left) in &timers {
        assert!(*left <= Duration::from_secs(15), "{timers:?}");
    }
    send_signal(child.pid, "INT");
    let out = child.wait(Duration::from_secs(30)).await;
    assert_code(&out, 130);
    assert_success(&output(home.relink_url(&url), &["resume"]));
}

// ---------------------------------------------------------------------------
// The password in no output

#[tokio::test]
async fn the_password_never_appears_in_any_output_over_tls() {
    let db = TestDb::on(Server::Tls, "tls_secret").await;
    let tls = db.tls();
    let wrong = "Wr0ng-S3cret-Pw";
    let secrets = [tls.pw.as_str(), tls.md5_pw.as_str(), wrong];
    let host = localhost(tls);
    let with_pw =
        |pw: &str, query: &[(&str, &str)]| url(&host, &tls.pw_user, Some(pw), &db.name, query);
    let verified = [("sslmode", "verify-full"), ("sslrootcert", tls.ca.as_str())];
    let good = with_pw(&tls.pw, &verified);

    let home = Home::new("tls_secret");
    let pgpass_good = Home::new("tls_secret_pgpass");
    pgpass_good.write(".pgpass", &format!("*:*:*:*:{}\n", tls.pw), 0o600);
    let pgpass_wrong = Home::new("tls_secret_wrong");
    pgpass_wrong.write(".pgpass", &format!("*:*:*:*:{wrong}\n"), 0o600);
    let pgpass_open = Home::new("tls_secret_open");
    pgpass_open.write(".pgpass", &format!("*:*:*:*:{}\n", tls.pw), 0o644);
    let env = |home: &Home, password: Option<&str>| {
        let mut cmd = verified_env(home, &db, &tls.pw_user);
        if let Some(password) = password {
            cmd.env("PGPASSWORD", password);
        }
        cmd
    };
    let url_cmd = |url: &str| home.relink_url(url);
    let trace = |mut cmd: Command| {
        cmd.env("RELINK_LOG", "trace");
        cmd
    };

    // (what, the command, its arguments, whether it succeeds)
    let runs: Vec<(&str, Command, Vec<&str>, bool)> = vec![
        (
            "generate",
            url_cmd(&good),
            vec!["-vv", "generate", "--profiles", "300"],
            true,
        ),
        (
            "dry run, debug logs",
            url_cmd(&good),
            vec!["-vv", "run", "--dry-run"],
            true,
        ),
        (
            "run, JSON logs and summary, every crate's trace",
            trace(url_cmd(&good)),
            vec![
                "--log-format",
                "json",
                "-vv",
                "run",
                "--format",
                "json",
                "--chunk-size",
                "50",
            ],
            true,
        ),
        (
            "verify, JSON",
            url_cmd(&good),
            vec!["-vv", "verify", "--format", "json"],
            true,
        ),
        (
            "status, JSON",
            url_cmd(&good),
            vec!["-vv", "status", "--format", "json"],
            true,
        ),
        (
            "purge dry run, JSON",
            url_cmd(&good),
            vec!["-vv", "purge", "--dry-run", "--format", "json"],
            true,
        ),
        (
            "purge, JSON logs and summary",
            url_cmd(&good),
            vec![
                "--log-format",
                "json",
                "-vv",
                "purge",
                "--yes",
                "--format",
                "json",
            ],
            true,
        ),
        (
            "PGPASSWORD, run",
            trace(env(&home, Some(&tls.pw))),
            vec!["--log-format", "json", "-vv", "run", "--format", "json"],
            true,
        ),
        (
            "PGPASSWORD, dry run",
            env(&home, Some(&tls.pw)),
            vec!["-vv", "run", "--dry-run", "--format", "json"],
            true,
        ),
        (
            "~/.pgpass, verify",
            trace(env(&pgpass_good, None)),
            vec!["-vv", "verify", "--format", "json"],
            true,
        ),
        (
            "~/.pgpass, status",
            env(&pgpass_good, None),
            vec!["--log-format", "json", "-vv", "status", "--format", "json"],
            true,
        ),
        (
            "wrong password in the URL",
            trace(url_cmd(&with_pw(wrong, &verified))),
            vec!["-vv", "status"],
            false,
        ),
        (
            "wrong PGPASSWORD",
            env(&home, Some(wrong)),
            vec!["--log-format", "json", "-vv", "run"],
            false,
        ),
        (
            "wrong ~/.pgpass",
            env(&pgpass_wrong, None),
            vec!["-vv", "status"],
            false,
        ),
        (
            "~/.pgpass open to others",
            env(&pgpass_open, None),
            vec!["-vv", "run"],
            false,
        ),
        (
            "TLS handshake fails: untrusted CA",
            trace(url_cmd(&with_pw(
                &tls.pw,
                &[
                    ("sslmode", "verify-full"),
                    ("sslrootcert", &tls.untrusted_ca),
                ],
            ))),
            vec!["--log-format", "json", "-vv", "run"],
            false,
        ),
        (
            "TLS handshake fails: host name",
            url_cmd(&url(
                &format!("127.0.0.1:{}", tls.port),
                &tls.pw_user,
                Some(&tls.pw),
                &db.name,
                &verified,
            )),
            vec!["-vv", "run"],
            false,
        ),
        (
            "unencrypted, refused",
            url_cmd(&with_pw(&tls.pw, &[("sslmode", "disable")])),
            vec!["-vv", "status"],
            false,
        ),
        (
            "md5 without channel binding",
            url_cmd(&url(
                &host,
                &tls.md5_user,
                Some(&tls.md5_pw),
                &db.name,
                &[("sslmode", "require"), ("channel_binding", "require")],
            )),
            vec!["-vv", "status"],
            false,
        ),
        (
            "an unreachable host first",
            url_cmd(&url(
                &format!("127.0.0.1:1,{host}"),
                &tls.pw_user,
                Some(&tls.pw),
                &db.name,
                &verified,
            )),
            vec!["-vv", "status", "--format", "json"],
            true,
        ),
        (
            "a bad command line",
            url_cmd(&good),
            vec!["run", "--chunk-size", "0"],
            false,
        ),
        (
            "an unknown connection parameter",
            url_cmd(&with_pw(&tls.pw, &[("sslmod", "require")])),
            vec!["status"],
            false,
        ),
        ("--help", url_cmd(&good), vec!["--help"], true),
        (
            "--database-url",
            home.relink(),
            vec!["--database-url", &good, "-vv", "status"],
            true,
        ),
    ];
    for (what, cmd, args, succeeds) in runs {
        let out = output(cmd, &args);
        assert_no_panic(&out);
        assert_eq!(
            out.status.success(),
            succeeds,
            "{what}: {args:?} exited {:?}",
            out.status.code()
        );
        for secret in secrets {
            assert!(
                !stdout(&out).contains(secret) && !stderr(&out).contains(secret),
                "{what}: {args:?} printed a password"
            );
        }
    }
}
