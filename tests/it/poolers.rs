//! Connection poolers (SPEC §12), against real PgBouncers
//! (`scripts/pg-server pooler`: Debian's `pgbouncer` in front of a private
//! server, one in `pool_mode = session`, one in `pool_mode = transaction`,
//! both refusing the `options` startup parameter as PgBouncer does by
//! default):
//!
//! - through the session-mode PgBouncer, `run`, the dry run, `verify`,
//!   `status` and `purge` equal their results over a direct connection,
//!   with relink's session settings in force (applied after connecting,
//!   since the startup parameter is refused);
//! - through the transaction-mode PgBouncer, every command stops at start
//!   with exit 1 naming the pooler and the fix, before it writes anything
//!   or takes a lock: no state schema, no row, no advisory lock left on the
//!   server's pooled sessions, no "prepared statement sN" error;
//! - the pooler check itself (what `preflight::command_start` runs first,
//!   for poolers that pass relink's startup settings on) tells the
//!   transaction-mode PgBouncer from the session-mode one and from a
//!   direct connection, every time.

use std::process::Output;

use clap::Parser as _;
use relink::db::pooler::{self, Pooling};
use tokio_postgres::NoTls;

use crate::harness::{
    assert_code, assert_no_panic, assert_stderr_has, assert_success, json_summary, stderr, stdout,
    Server, TestDb,
};

/// Profiles generated (fixed seed): several chunks of [`CHUNK`].
const PROFILES: &str = "400";
const CHUNK: &str = "100";

/// Advisory locks held on the server for `db`'s database, by anyone.
async fn advisory_locks(db: &TestDb) -> i64 {
    db.count(&format!(
        "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database
          WHERE l.locktype = 'advisory' AND d.datname = '{}'",
        db.name
    ))
    .await
}

/// Whether relink's state schema exists, and the links in `profile_links`
/// (`generate` makes some, as users of the new API would).
async fn written(db: &TestDb) -> (i64, i64) {
    (
        db.count("SELECT count(*) FROM pg_namespace WHERE nspname = 'relink'")
            .await,
        db.count("SELECT count(*) FROM profile_links").await,
    )
}

/// A summary's figures, without those that differ between two runs over
/// the same data: timings, and the server's WAL (other sessions' too).
fn figures(summary: &serde_json::Value) -> serde_json::Value {
    let mut summary = summary.clone();
    if let Some(object) = summary.as_object_mut() {
        for timing in [
            "elapsed_seconds",
            "links_per_second",
            "run_id",
            "throttled_seconds",
            "wal_bytes",
        ] {
            object.remove(timing);
        }
    }
    summary
}

#[track_caller]
fn ok(out: Output) -> Output {
    assert_success(&out);
    assert_no_panic(&out);
    out
}

#[tokio::test]
async fn through_pgbouncer_in_session_mode_every_command_equals_a_direct_connection() {
    let pooled = TestDb::on(Server::Pooler, "pool_session").await;
    let direct = TestDb::on(Server::Pooler, "pool_direct").await;
    let session_url = pooled.session_url();
    let (via, plain) = (session_url.as_str(), direct.url.as_str());
    ok(pooled.run_on(via, &["generate", "--profiles", PROFILES]));
    ok(direct.run_on(plain, &["generate", "--profiles", PROFILES]));
    let before = written(&pooled).await;
    assert_eq!(before.0, 0);

    let dry = ["run", "--dry-run", "--format=json", "--chunk-size", CHUNK];
    let (a, b) = (ok(pooled.run_on(via, &dry)), ok(direct.run_on(plain, &dry)));
    assert_eq!(figures(&json_summary(&a)), figures(&json_summary(&b)));
    assert_eq!(written(&pooled).await, before, "a dry run writes nothing");

    let run = ["run", "--format", "json", "--chunk-size", CHUNK];
    let (a, b) = (ok(pooled.run_on(via, &run)), ok(direct.run_on(plain, &run)));
    let summary = json_summary(&a);
    assert_eq!(summary["status"], "completed", "{summary}");
    assert!(summary["links_created"].as_u64().is_some_and(|n| n > 400));
    assert_eq!(figures(&summary), figures(&json_summary(&b)));
    assert_eq!(pooled.links_checksum().await, direct.links_checksum().await);

    let verify = ["verify", "--strict", "--format", "json"];
    let (a, b) = (
        ok(pooled.run_on(via, &verify)),
        ok(direct.run_on(plain, &verify)),
    );
    let report: serde_json::Value = serde_json::from_str(stdout(&a).trim()).expect("JSON");
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(
        report,
        serde_json::from_str::<serde_json::Value>(stdout(&b).trim()).expect("JSON")
    );

    let status = ["status", "--format", "json"];
    let a: serde_json::Value =
        serde_json::from_str(stdout(&ok(pooled.run_on(via, &status))).trim()).expect("JSON");
    let b: serde_json::Value =
        serde_json::from_str(stdout(&ok(direct.run_on(plain, &status))).trim()).expect("JSON");
    assert_eq!(a["runs"][0]["status"], "completed", "{a}");
    assert_eq!(a["ledger"], b["ledger"]);
    assert_eq!(a["lock_holder"], serde_json::Value::Null);

    // relink's session settings are in force behind the pooler although it
    // refuses them at startup: a --throttle-query (run on a session of
    // relink's before anything is written) that fails quoting one.
    let show = "SELECT (current_setting('idle_in_transaction_session_timeout') || '/' \
                || current_setting('lock_timeout') || '/' || current_setting('TimeZone'))::int = 0";
    let out = pooled.run_on(
        via,
        &[
            "--idle-timeout",
            "7s",
            "run",
            "--lock-timeout",
            "3s",
            "--throttle-query",
            show,
        ],
    );
    assert_code(&out, 1);
    assert_stderr_has(&out, "\"7s/3s/UTC\"");

    // An `options` of the operator's own, which the pooler refuses, is not
    // silently dropped: relink says so and how to set it instead.
    let with_options = format!("{via}?options=-c%20work_mem%3D7MB");
    let out = pooled.run_on(&with_options, &["status"]);
    assert_code(&out, 1);
    assert_stderr_has(&out, "the server refused the startup parameter \"options\"");
    assert_stderr_has(&out, "ALTER ROLE");

    // The fix it names works through the pooler: a setting on the role,
    // in force for server sessions started after it (the pooler's idle ones
    // are ended here, as PgBouncer's RECONNECT or server_lifetime would).
    pooled
        .client
        .batch_execute(&format!(
            "ALTER ROLE postgres IN DATABASE {db} SET work_mem = '7MB';
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity
              WHERE datname = '{db}' AND pid <> pg_backend_pid();",
            db = pooled.name
        ))
        .await
        .expect("ALTER ROLE … SET");
    // PgBouncer drops a server connection the server ended when it sees the
    // socket close; a client it serves before that gets the ended session's
    // error (08P01) once, and the next one a new server session.
    let throttled = [
        "run",
        "--throttle-query",
        "SELECT current_setting('work_mem')::int = 0",
    ];
    let mut out = pooled.run_on(via, &throttled);
    for _ in 0..3 {
        if !stderr(&out).contains("(08P01)") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        out = pooled.run_on(via, &throttled);
    }
    assert_stderr_has(&out, "\"7MB\"");

    let purge = ["purge", "--yes", "--format", "json", "--chunk-size", CHUNK];
    let (a, b) = (
        ok(pooled.run_on(via, &purge)),
        ok(direct.run_on(plain, &purge)),
    );
    assert_eq!(
        json_summary(&a)["links_deleted"],
        json_summary(&b)["links_deleted"]
    );
    assert_eq!(
        written(&pooled).await,
        (1, before.1),
        "the purge removed every link relink created"
    );
    assert_eq!(advisory_locks(&pooled).await, 0, "no lock left behind");
}

/// The refusal: exit 1, one line on stderr naming the pooler (its address
/// and mode) and the fix, never a "prepared statement" error.
#[track_caller]
fn assert_refused(out: &Output, db: &TestDb, what: &str) {
    assert_code(out, 1);
    assert_no_panic(out);
    let err = stderr(out);
    let url = db.transaction_url();
    let port = url
        .split(':')
        .nth(2)
        .and_then(|rest| rest.split('/').next())
        .expect("a port");
    assert_eq!(err.lines().count(), 1, "{what}: {err}");
    for needle in [
        "relink: error: ",
        &format!("127.0.0.1:{port} is a connection pooler in transaction mode"),
        "before writing or locking anything",
        "session pooler",
        "pool_mode=session",
    ] {
        assert!(err.contains(needle), "{what}: expected {needle:?} in {err}");
    }
    assert!(!err.contains("prepared statement \""), "{what}: {err}");
    assert!(stdout(out).is_empty(), "{what}: {}", stdout(out));
}

#[tokio::test]
async fn through_pgbouncer_in_transaction_mode_every_command_refuses_before_writing_or_locking() {
    let db = TestDb::on(Server::Pooler, "pool_txn").await;
    ok(db.run(&["generate", "--profiles", PROFILES]));
    let before = written(&db).await;
    assert_eq!(before.0, 0);
    let via = db.transaction_url();
    let via = via.as_str();
    let commands: [&[&str]; 10] = [
        &["run"],
        &["run", "--dry-run"],
        &["purge", "--yes"],
        &["purge", "--dry-run"],
        &["repair", "--yes"],
        &["repair", "--dry-run"],
        &["verify"],
        &["status"],
        &["pause", "--reason", "test"],
        &["resume"],
    ];
    for args in commands {
        let out = db.run_on(via, args);
        assert_refused(&out, &db, &args.join(" "));
        assert_eq!(written(&db).await, before, "{args:?} wrote something");
        assert_eq!(advisory_locks(&db).await, 0, "{args:?} left a lock");
    }

    // With a migration done (directly), nothing of it moves either.
    ok(db.run(&["run", "--chunk-size", CHUNK]));
    let links = db.links_checksum().await;
    let runs = db.count("SELECT count(*) FROM relink.runs").await;
    let ledger = db.count("SELECT count(*) FROM relink.ledger").await;
    for args in commands {
        let out = db.run_on(via, args);
        assert_refused(&out, &db, &args.join(" "));
        assert_eq!(advisory_locks(&db).await, 0, "{args:?} left a lock");
    }
    assert_eq!(db.links_checksum().await, links);
    assert_eq!(db.count("SELECT count(*) FROM relink.runs").await, runs);
    assert_eq!(db.count("SELECT count(*) FROM relink.ledger").await, ledger);
    assert_eq!(db.count("SELECT count(*) FROM relink.pauses").await, 0);
    // And a direct connection finds the lock free and nothing pending.
    let out = ok(db.run(&["status", "--format", "json"]));
    let status: serde_json::Value = serde_json::from_str(stdout(&out).trim()).expect("JSON");
    assert_eq!(status["lock_holder"], serde_json::Value::Null, "{status}");
    assert_eq!(status["runs"][0]["status"], "completed", "{status}");
}

/// A connection with no startup settings (as a pooler that passes them on
/// would leave relink's), to `url`.
async fn bare(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    tokio::spawn(connection);
    client
}

#[tokio::test]
async fn the_pooler_check_tells_transaction_mode_from_a_session_of_its_own_every_time() {
    let db = TestDb::on(Server::Pooler, "pool_probe").await;
    for (url, transaction) in [
        (&db.url, false),
        (&db.session_url(), false),
        (&db.transaction_url(), true),
    ] {
        for round in 0..5 {
            let client = bare(url).await;
            let verdict = pooler::probe(&client, "the server", || async {
                Ok::<_, anyhow::Error>(bare(url).await)
            })
            .await
            .unwrap_or_else(|e| panic!("{url}: {e:#}"));
            assert_eq!(
                matches!(verdict, Pooling::Transaction(_)),
                transaction,
                "{url}, round {round}: {verdict:?}"
            );
        }
    }

    // preflight's step 1 (what every command runs first): the transaction
    // pooler refused, with the message commands print; the session pooler
    // and the server itself pass.
    for (url, refused) in [
        (&db.transaction_url(), true),
        (&db.session_url(), false),
        (&db.url, false),
    ] {
        let cli = relink::cli::Cli::parse_from(["relink", "--database-url", url, "status"]);
        let common = relink::config::Common::from_args(&cli.global).expect("configuration");
        let database = relink::db::Database::resolve(Some(url), common.connect_timeout)
            .expect("connection parameters");
        let session = relink::db::Session::new("status", &common, None, true);
        let client = bare(url).await;
        let checked = relink::db::preflight::check_pooler(&client, &database, &session).await;
        match (checked, refused) {
            (Ok(()), false) => {}
            (Err(err), true) => {
                let pooler = err
                    .downcast_ref::<pooler::TransactionPooler>()
                    .unwrap_or_else(|| panic!("{err:#}"));
                assert!(pooler.to_string().contains("pool_mode=session"), "{pooler}");
            }
            (other, _) => panic!("{url}: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relink_killed_behind_a_session_pooler_leaves_no_lock_on_its_server_sessions() {
    let db = TestDb::on(Server::Pooler, "pool_kill").await;
    ok(db.run(&["generate", "--profiles", PROFILES]));
    let via = db.session_url();
    let via = via.as_str();
    // Held by a pause, the run holds its lock (two keys, two sessions) and
    // waits before its first chunk.
    ok(db.run_on(via, &["pause", "--reason", "test"]));
    let mut cmd = db.relink_on(via);
    cmd.arg("run");
    let run = crate::harness::spawn(cmd);
    db.wait_for_count(
        "SELECT count(*) FROM relink.runs WHERE status = 'running' AND waiting IS NOT NULL",
        std::time::Duration::from_secs(60),
        "the run never waited on the pause",
    )
    .await;
    assert_eq!(advisory_locks(&db).await, 2, "the run's two lock keys");
    crate::harness::send_signal(run.pid, "KILL");
    let out = run.wait(std::time::Duration::from_secs(30)).await;
    assert_eq!(out.status.code(), None, "killed");
    // PgBouncer's server_reset_query (DISCARD ALL, its default) releases
    // the keys when the client is gone: the server sessions go back to the
    // pool without them.
    let started = std::time::Instant::now();
    while advisory_locks(&db).await > 0 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "the killed run's lock stayed on a pooled server session"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    ok(db.run_on(via, &["resume"]));
    let out = ok(db.run_on(via, &["run", "--format", "json"]));
    assert_eq!(json_summary(&out)["status"], "completed");
}
