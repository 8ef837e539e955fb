//! Operator control and custom holds (SPEC §13): `relink pause`/`resume`
//! across processes, and `--throttle-query`. Each drives the real binary
//! and compares the end state with a clean run.

use std::time::{Duration, Instant};

use crate::harness::{
    assert_code, assert_no_panic, assert_stderr_has, assert_stdout_has, assert_success, eventually,
    json_summary, send_signal, stderr, stdout, TestDb,
};

async fn ledger_rows(db: &TestDb) -> i64 {
    db.count("SELECT count(*) FROM relink.ledger").await
}

/// Waits until `sql` counts more than `floor`.
async fn wait_above(db: &TestDb, sql: &str, floor: i64, timeout: Duration) -> i64 {
    let started = Instant::now();
    loop {
        let n = db.count(sql).await;
        if n > floor {
            return n;
        }
        assert!(started.elapsed() < timeout, "{sql} stayed at {n}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_a_running_run_within_one_chunk_and_resume_completes_it() {
    let (db, clean) = TestDb::with_clean_run("c_pause_run", 20_000).await;

    let chunk = 200;
    let child = db.spawn(&["run", "--chunk-size", "200", "--format", "json"]);
    // The state schema exists once the run has started its record.
    eventually(Duration::from_secs(20), "the state schema", || {
        db.has_ledger()
    })
    .await;
    wait_above(
        &db,
        "SELECT count(*) FROM relink.ledger",
        0,
        Duration::from_secs(20),
    )
    .await;
    let out = db.run(&["pause", "--reason", "vacuum window"]);
    assert_success(&out);
    let at_pause = ledger_rows(&db).await;

    // Chunks in flight (one per writer, two writers) may still commit;
    // then nothing more, for as long as the pause lasts.
    db.assert_ledger_settles(
        at_pause,
        2 * chunk,
        Duration::from_millis(1500),
        "the run kept going while paused",
    )
    .await;

    let status = db.status_json(&[]);
    assert_eq!(status["pause"]["reason"], "vacuum window", "{status}");
    assert!(
        status["pause"]["paused_by"]
            .as_str()
            .is_some_and(|w| w.contains("role postgres")),
        "{status}"
    );
    let waiting = status["runs"][0]["waiting"].as_str().unwrap_or_default();
    assert!(waiting.contains("paused by"), "{status}");
    let text = stdout(&db.run(&["status"]));
    assert!(text.contains("Paused: by"), "{text}");
    assert!(text.contains("waiting since"), "{text}");

    assert_success(&db.run(&["resume"]));
    let out = child.wait(Duration::from_secs(120)).await;
    assert_success(&out);
    assert_no_panic(&out);
    assert_stderr_has(&out, "waiting before the next chunk: paused by");
    let summary = json_summary(&out);
    let paused = summary["throttled_seconds"]["pause"]
        .as_f64()
        .unwrap_or_default();
    assert!(paused >= 4.0, "{summary}");
    assert_eq!(db.links_checksum().await, clean.links_checksum().await);
    assert_success(&db.run(&["verify", "--strict"]));
    // Lifted: the run record no longer shows a wait.
    assert!(db.status_json(&[])["runs"][0]["waiting"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_started_while_paused_writes_nothing_and_stops_on_sigterm() {
    let db = TestDb::new("c_pause_start").await;
    db.generate(2000);
    let before = db.links_checksum().await;
    // A pause before any run creates the state schema to hold cron's runs.
    let out = db.run(&["pause"]);
    assert_success(&out);
    assert_stdout_has(&out, "Paused");
    let again = db.run(&["pause", "--reason", "ignored"]);
    assert_success(&again);
    assert_stdout_has(&again, "Already paused");

    let child = db.spawn(&["run"]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(db.links_checksum().await, before);
    assert_eq!(ledger_rows(&db).await, 0);
    child.stop_with("TERM", Duration::from_secs(5)).await;
    assert_eq!(db.links_checksum().await, before);

    assert_success(&db.run(&["resume"]));
    let out = db.run(&["resume"]);
    assert_success(&out);
    assert_stdout_has(&out, "Not paused");
    assert_success(&db.run(&["run"]));
    assert_success(&db.run(&["verify", "--strict"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_waits_while_paused_and_completes_after_resume() {
    let db = TestDb::new("c_pause_purge").await;
    db.generate(3000);
    let users_rows = db.count("SELECT count(*) FROM profile_links").await;
    assert_success(&db.run(&["run"]));
    let migrated = db.count("SELECT count(*) FROM profile_links").await;

    assert_success(&db.run(&["pause", "--reason", "hold purge"]));
    let child = db.spawn(&["purge", "--yes", "--format", "json"]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        db.count("SELECT count(*) FROM profile_links").await,
        migrated
    );
    let status = db.status_json(&[]);
    assert!(
        status["runs"][0]["waiting"]
            .as_str()
            .is_some_and(|w| w.contains("hold purge")),
        "{status}"
    );
    // A purge held by the pause keeps the lock: a run cannot start meanwhile.
    assert_code(&db.run(&["run"]), 4);

    assert_success(&db.run(&["resume"]));
    let out = child.wait(Duration::from_secs(60)).await;
    assert_success(&out);
    let summary = json_summary(&out);
    assert!(
        summary["throttled_seconds"]["pause"]
            .as_f64()
            .unwrap_or_default()
            >= 2.0,
        "{summary}"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM profile_links").await,
        users_rows
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_held_by_a_pause_stops_on_sigterm_with_nothing_deleted() {
    let db = TestDb::migrated("c_pause_purge_term", 1000).await;
    let migrated = db.links_checksum().await;
    assert_success(&db.run(&["pause"]));
    let child = db.spawn(&["purge", "--yes"]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    child.stop_with("TERM", Duration::from_secs(5)).await;
    assert_eq!(db.links_checksum().await, migrated);
    let status = db.status_json(&[]);
    assert_eq!(status["runs"][0]["mode"], "purge", "{status}");
    assert_eq!(status["runs"][0]["status"], "interrupted", "{status}");
    assert_success(&db.run(&["resume"]));
    assert_success(&db.run(&["purge", "--yes"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttle_query_holds_the_run_until_its_answer_changes() {
    let mut db = TestDb::new("c_throttle_query").await;
    db.generate(3000);
    db.batch("CREATE TABLE ops_flags (hold boolean NOT NULL); INSERT INTO ops_flags VALUES (true)")
        .await;
    let clean = TestDb::clone_of(&mut db, "c_throttle_query_clean").await;
    assert_success(&clean.run(&["run"]));
    let before = db.links_checksum().await;

    let child = db.spawn(&[
        "run",
        "--throttle-query",
        "SELECT hold FROM ops_flags",
        "--format",
        "json",
    ]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        db.links_checksum().await,
        before,
        "wrote while the query said hold"
    );
    db.batch("UPDATE ops_flags SET hold = false").await;
    let out = child.wait(Duration::from_secs(60)).await;
    assert_success(&out);
    assert_stderr_has(&out, "--throttle-query answered true");
    let summary = json_summary(&out);
    assert!(
        summary["throttled_seconds"]["throttle_query"]
            .as_f64()
            .unwrap_or_default()
            >= 2.0,
        "{summary}"
    );
    assert_eq!(db.links_checksum().await, clean.links_checksum().await);

    // `SELECT true` holds for good: stopped by a signal, exit 130.
    let child = db.spawn(&["run", "--restart", "--throttle-query", "SELECT true"]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    send_signal(child.pid, "INT");
    assert_code(&child.wait(Duration::from_secs(20)).await, 130);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_throttle_query_stops_the_run_before_any_write() {
    let db = TestDb::new("c_throttle_bad").await;
    db.generate(500);
    let out = db.run(&["run", "--throttle-query", "SELECT hold FROM no_such_table"]);
    assert_code(&out, 1);
    assert_stderr_has(&out, "--throttle-query failed");
    assert_eq!(
        db.count("SELECT count(*) FROM pg_namespace WHERE nspname = 'relink'")
            .await,
        0,
        "wrote the state schema before checking the gates"
    );
    let out = db.run(&["run", "--throttle-query", "SELECT 1"]);
    assert_code(&out, 1);
    assert_stderr_has(&out, "boolean");
}

#[test]
fn gate_flags_are_checked_before_connecting() {
    let db_url = "postgres://nobody@127.0.0.1:1/none";
    for args in [
        vec!["run", "--max-replica-lag", "0s"],
        vec!["run", "--max-replica-lag", "soon"],
        vec![
            "run",
            "--max-replica-lag",
            "off",
            "--replica",
            "postgres://r/db",
        ],
        vec!["purge", "--throttle-query", " "],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_relink"))
            .args(&args)
            .env("DATABASE_URL", db_url)
            .output()
            .expect("run relink");
        assert_code(&out, 2);
        assert!(stderr(&out).contains("--"), "{args:?}: {}", stderr(&out));
    }
}
