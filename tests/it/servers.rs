//! The private servers the connection (SPEC §12) and throttling (SPEC §13)
//! tests run against, checked themselves: `scripts/pg-server tls` and
//! `scripts/pg-server replica` through the harness. The test process has no
//! TLS (tokio-postgres without a TLS connector), so the TLS logins are
//! checked with `psql` (libpq, the reference client).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

use tokio_postgres::config::Host;
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

use crate::harness::{
    assert_success, connect, eventually, parse_assignments, psql, replica_set, stderr, stdout,
    tls_server, Server, TestDb,
};

#[track_caller]
fn assert_psql_ok(out: &std::process::Output, expected: &str) {
    assert!(
        out.status.success(),
        "psql failed:\n{}{}",
        stdout(out),
        stderr(out)
    );
    assert_eq!(stdout(out).trim(), expected);
}

#[track_caller]
fn assert_psql_fails(out: &std::process::Output, needle: &str) {
    assert!(
        !out.status.success(),
        "psql should have failed, printed: {}",
        stdout(out)
    );
    assert!(
        stderr(out).contains(needle),
        "expected {needle:?} in:\n{}",
        stderr(out)
    );
}

#[test]
fn script_output_parses_plain_and_shell_quoted_values() {
    // As `emit` in scripts/pg-server prints them.
    let vars = parse_assignments(
        "PG_TLS_PORT=54339\nPG_TLS_CA='/tmp/it'\\''s a dir/ca.crt'\nPG_TLS_ADMIN_URL=postgresql://postgres@%2Frun:1/postgres\n",
    );
    assert_eq!(vars["PG_TLS_PORT"], "54339");
    assert_eq!(vars["PG_TLS_CA"], "/tmp/it's a dir/ca.crt");
    assert_eq!(
        vars["PG_TLS_ADMIN_URL"],
        "postgresql://postgres@%2Frun:1/postgres"
    );
}

#[tokio::test]
async fn tls_server_refuses_unencrypted_tcp_like_rds() {
    let tls = tls_server();
    for host in ["127.0.0.1", "localhost"] {
        let conninfo = format!(
            "host={host} port={} user={} password={} dbname=postgres sslmode=disable",
            tls.port, tls.pw_user, tls.pw
        );
        let Err(e) = tokio_postgres::connect(&conninfo, NoTls).await else {
            panic!("an unencrypted connection to {host} was accepted");
        };
        let db = e
            .as_db_error()
            .unwrap_or_else(|| panic!("not the server's refusal: {e}"));
        assert_eq!(db.code(), &SqlState::INVALID_AUTHORIZATION_SPECIFICATION);
        assert!(
            db.message().starts_with("no pg_hba.conf entry for host")
                && db.message().ends_with("no encryption"),
            "{}",
            db.message()
        );
    }
}

#[tokio::test]
async fn tls_admin_url_is_the_unix_socket_and_creates_databases() {
    let tls = tls_server();
    let config: tokio_postgres::Config = tls.admin_url.parse().expect("admin URL parses");
    assert!(
        matches!(config.get_hosts(), [Host::Unix(dir)] if dir.is_absolute()),
        "{:?}",
        config.get_hosts()
    );
    assert_eq!(config.get_ports(), [tls.port]);
    assert_eq!(config.get_user(), Some("postgres"));

    let db = TestDb::on(Server::Tls, "servers_admin").await;
    let row = db
        .client
        .query_one(
            "SELECT inet_client_addr() IS NULL, current_database()::text,
                    (SELECT datdba::regrole::text FROM pg_database WHERE datname = current_database()),
                    (SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tableowner = $1)",
            &[&tls.db_owner],
        )
        .await
        .expect("query the new database");
    let (socket, name, owner, tables): (bool, String, String, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert!(socket, "the admin session should come over the Unix socket");
    assert_eq!(name, db.name);
    assert_eq!(owner, tls.db_owner);
    assert_eq!(
        tables, 3,
        "users, profiles, profile_links owned by the group"
    );
}

#[tokio::test]
async fn tls_server_lets_each_login_in_over_verified_tls() {
    let db = TestDb::on(Server::Tls, "servers_logins").await;
    let tls = db.tls();

    // SCRAM, verify-full: it may create a state schema in its database.
    let out = psql(
        &db.pw_url(),
        None,
        "SELECT ssl, current_user FROM pg_stat_ssl WHERE pid = pg_backend_pid();
         CREATE SCHEMA relink_state; CREATE TABLE relink_state.t (x int);
         INSERT INTO relink_state.t VALUES (1); INSERT INTO users VALUES ('u1');",
    );
    assert_psql_ok(&out, &format!("t|{}", tls.pw_user));

    // Client certificate: uses what relink_pw created, and the app's tables.
    let out = psql(
        &db.cert_url(),
        None,
        "INSERT INTO relink_state.t VALUES (2);
         SELECT current_user, (SELECT count(*) FROM relink_state.t), (SELECT count(*) FROM users);",
    );
    assert_psql_ok(&out, &format!("{}|2|1", tls.cert_user));

    // md5 (stored as md5, so no channel binding).
    let out = psql(&db.md5_url(), None, "SELECT current_user");
    assert_psql_ok(&out, &tls.md5_user);
    let stored = db
        .client
        .query_one(
            "SELECT (SELECT rolpassword FROM pg_authid WHERE rolname = $1) LIKE 'md5%',
                    (SELECT rolpassword FROM pg_authid WHERE rolname = $2) LIKE 'SCRAM-SHA-256$%'",
            &[&tls.md5_user, &tls.pw_user],
        )
        .await
        .expect("stored passwords");
    assert!(stored.get::<_, bool>(0), "relink_md5's password is md5");
    assert!(stored.get::<_, bool>(1), "relink_pw's password is SCRAM");

    // SCRAM with channel binding over TLS.
    let out = psql(
        &tls.url(
            &tls.pw_user,
            Some(&tls.pw),
            &db.name,
            &[("channel_binding", "require")],
        ),
        None,
        "SELECT 1",
    );
    assert_psql_ok(&out, "1");
}

#[tokio::test]
async fn tls_server_fails_what_must_fail() {
    let tls = tls_server();
    let base = format!(
        "port={} user={} dbname=postgres sslrootcert={}",
        tls.port, tls.pw_user, tls.ca
    );
    let pw = Some(tls.pw.as_str());
    // (conninfo, password, Ok(psql's output) or Err(its error))
    let cases = [
        // The certificate names localhost only.
        (
            format!("host=127.0.0.1 sslmode=verify-full {base}"),
            pw,
            Err("does not match host name \"127.0.0.1\""),
        ),
        // ... which verify-ca does not check.
        (
            format!("host=127.0.0.1 sslmode=verify-ca {base}"),
            pw,
            Ok("1"),
        ),
        // A CA that did not sign the server's certificate.
        (
            format!(
                "host=localhost port={} user={} dbname=postgres sslmode=verify-full sslrootcert={}",
                tls.port, tls.pw_user, tls.untrusted_ca
            ),
            pw,
            Err("certificate verify failed"),
        ),
        // Unencrypted, as libpq reports it.
        (
            format!("host=localhost sslmode=disable {base}"),
            pw,
            Err("no encryption"),
        ),
        // A wrong password.
        (
            format!("host=localhost sslmode=require {base}"),
            Some("wrong"),
            Err("password authentication failed"),
        ),
        // The certificate login without its certificate.
        (
            format!(
                "host=localhost port={} user={} dbname=postgres sslmode=verify-full sslrootcert={}",
                tls.port, tls.cert_user, tls.ca
            ),
            None,
            Err("requires a valid client certificate"),
        ),
    ];
    for (conninfo, password, expected) in cases {
        let out = psql(&conninfo, password, "SELECT 1");
        match expected {
            Ok(output) => assert_psql_ok(&out, output),
            Err(error) => assert_psql_fails(&out, error),
        }
    }
}

#[test]
fn tls_keys_are_private_and_paths_absolute() {
    let tls = tls_server();
    for path in [
        &tls.ca,
        &tls.untrusted_ca,
        &tls.client_cert,
        &tls.client_key,
    ] {
        assert!(path.starts_with('/'), "{path} is not absolute");
        assert!(std::path::Path::new(path).is_file(), "{path} is missing");
    }
    let key = std::fs::metadata(&tls.client_key).expect("client key");
    assert_eq!(key.permissions().mode() & 0o777, 0o600, "client key mode");
    // Our uid (no libc: the crate forbids unsafe) is the owner of a file we create.
    let probe = std::env::temp_dir().join(format!("relink-uid-probe-{}", std::process::id()));
    std::fs::write(&probe, b"").expect("create a probe file");
    let me = std::fs::metadata(&probe).expect("probe file").uid();
    let _ = std::fs::remove_file(&probe);
    assert_eq!(key.uid(), me, "client key owned by the test's user");
}

#[tokio::test]
async fn replica_set_streams_to_the_replica() {
    let db = TestDb::on(Server::Replica, "servers_stream").await;
    let set = replica_set();
    let state: Option<String> = db
        .client
        .query_one(
            "SELECT max(state) FROM pg_stat_replication WHERE application_name = $1",
            &[&set.replica_name],
        )
        .await
        .expect("pg_stat_replication")
        .get(0);
    assert_eq!(state.as_deref(), Some("streaming"));

    let replica = connect(&db.replica_url()).await;
    let standby: bool = replica
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .expect("pg_is_in_recovery")
        .get(0);
    assert!(standby, "the replica is a standby");

    db.exec("INSERT INTO users VALUES ('replicated')", &[])
        .await;
    eventually(
        Duration::from_secs(10),
        "the row reaches the replica",
        || async {
            replica
                .query_one("SELECT count(*) FROM users WHERE id = 'replicated'", &[])
                .await
                .expect("read on the replica")
                .get::<_, i64>(0)
                == 1
        },
    )
    .await;
}

/// Waits (see [`eventually`]) until the primary of `db` sees the replica's
/// `replay_lsn < sent_lsn` as `behind`.
async fn replay_behind(db: &TestDb, behind: bool, within: Duration, what: &str) {
    let name = &db.replicas().replica_name;
    eventually(within, what, || async {
        db.client
            .query_one(
                "SELECT replay_lsn < sent_lsn FROM pg_stat_replication WHERE application_name = $1",
                &[name],
            )
            .await
            .expect("pg_stat_replication")
            .get::<_, Option<bool>>(0)
            == Some(behind)
    })
    .await;
}

#[tokio::test]
async fn replica_paused_replay_shows_as_lag_on_the_primary() {
    let db = TestDb::on(Server::ReplicaExclusive, "servers_lag").await;
    let pause = db.pause_replay().await;
    db.batch("INSERT INTO users SELECT 'lag' || g FROM generate_series(1, 1000) g")
        .await;
    replay_behind(
        &db,
        true,
        Duration::from_secs(10),
        "replay_lsn falls behind sent_lsn",
    )
    .await;
    let replica = connect(&db.replica_url()).await;
    let replayed: i64 = replica
        .query_one("SELECT count(*) FROM users", &[])
        .await
        .expect("read on the replica")
        .get(0);
    assert_eq!(replayed, 0, "nothing replayed while paused");

    pause.resume().await;
    replay_behind(
        &db,
        false,
        Duration::from_secs(15),
        "the replica catches up",
    )
    .await;
    db.wait_replayed(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn role_without_pg_monitor_sees_no_replication_figures() {
    let db = TestDb::on(Server::Replica, "servers_nomon").await;
    let nomon = connect(&db.nomon_url()).await;
    let row = nomon
        .query_one(
            "SELECT current_user::text, pg_has_role('pg_monitor', 'MEMBER'),
                    count(*), count(r.pid), count(r.state), count(r.sent_lsn),
                    count(r.replay_lsn), count(r.replay_lag), count(r.reply_time)
               FROM pg_stat_replication r
              WHERE r.application_name = $1",
            &[&db.replicas().replica_name],
        )
        .await
        .expect("pg_stat_replication as relink_nomon");
    let user: String = row.get(0);
    assert_eq!(user, db.replicas().nomon_user);
    assert!(!row.get::<_, bool>(1), "relink_nomon has no pg_monitor");
    // The replica's row is there, with its pid and name...
    assert_eq!(row.get::<_, i64>(2), 1);
    assert_eq!(row.get::<_, i64>(3), 1);
    // ... but no state, positions or lags.
    for column in 4..=8 {
        assert_eq!(
            row.get::<_, i64>(column),
            0,
            "column {column} should be NULL"
        );
    }
}

#[tokio::test]
async fn relink_writes_through_the_primary_as_relink_nomon() {
    let db = TestDb::on(Server::Replica, "servers_relink").await;
    // The database and its tables belong to relink_nomon: relink can run as it.
    let out = db.run_on(&db.nomon_url(), &["generate", "--profiles", "20"]);
    assert_success(&out);
    // And postgres, the superuser, sees the same rows.
    let on_primary: i64 = connect(&db.url)
        .await
        .query_one("SELECT count(*) FROM profiles", &[])
        .await
        .expect("count on the primary")
        .get(0);
    assert_eq!(on_primary, 20);
    db.wait_replayed(Duration::from_secs(10)).await;
    let on_replica: i64 = connect(&db.replica_url())
        .await
        .query_one("SELECT count(*) FROM profiles", &[])
        .await
        .expect("count on the replica")
        .get(0);
    assert_eq!(on_replica, 20);
}
