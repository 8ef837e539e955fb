//! Connections that behave in production (SPEC §12): the session guard
//! that keeps a stopped relink from holding the application's rows.

use std::time::{Duration, Instant};

use crate::harness::{
    assert_no_panic, assert_stderr_has, assert_success, connect, send_signal, TestDb,
};

/// A relink backend of this database inside a transaction that has
/// written (so it holds row locks), as seen while relink is stopped.
async fn writing_backend(db: &TestDb) -> bool {
    db.count(&format!(
        "SELECT count(*) FROM pg_stat_activity
          WHERE datname = '{}' AND application_name LIKE 'relink run%'
            AND state = 'idle in transaction' AND backend_xid IS NOT NULL",
        db.name
    ))
    .await
        > 0
}

/// A profile some other transaction holds a lock on (FOR UPDATE NOWAIT
/// fails on it), among the first `n` after the user `after` (the run's
/// checkpoint: it pages by "userId").
async fn locked_profile(db: &TestDb, after: &str, n: i64) -> Option<String> {
    let ids: Vec<String> = db
        .client
        .query(
            "SELECT id FROM profiles WHERE \"userId\" > $1 ORDER BY \"userId\" LIMIT $2",
            &[&after, &n],
        )
        .await
        .expect("profiles")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let probe = connect(&db.url).await;
    for id in ids {
        probe.batch_execute("BEGIN").await.expect("begin");
        let locked = probe
            .query(
                "SELECT 1 FROM profiles WHERE id = $1 FOR UPDATE NOWAIT",
                &[&id],
            )
            .await
            .is_err();
        probe.batch_execute("ROLLBACK").await.expect("rollback");
        if locked {
            return Some(id);
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_relink_releases_the_applications_rows_within_the_idle_timeout() {
    let mut db = TestDb::new("k_sigstop").await;
    db.generate(20_000);
    let clean = TestDb::clone_of(&mut db, "k_sigstop_clean").await;

    let mut child = db.spawn(&[
        "--idle-timeout",
        "3s",
        "run",
        "--chunk-size",
        "500",
        "--writers",
        "1",
    ]);
    // Stop relink until it is caught inside a chunk that has written.
    let started = Instant::now();
    db.wait_for_ledger(Duration::from_secs(30)).await;
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "never caught relink inside a chunk"
        );
        assert!(!child.finished(), "the run finished before it was caught");
        send_signal(child.pid, "STOP");
        tokio::time::sleep(Duration::from_millis(100)).await;
        if writing_backend(&db).await {
            break;
        }
        send_signal(child.pid, "CONT");
        tokio::time::sleep(Duration::from_millis(37)).await;
    }
    let checkpoint = db
        .text("SELECT coalesce(max(checkpoint), '') FROM relink.runs")
        .await;
    let victim = locked_profile(&db, &checkpoint, 1000)
        .await
        .expect("the stopped chunk locks some profile");

    // The application deletes that profile: it waits for relink's locks,
    // but no longer than the guard (3 s) plus the server's check interval.
    let deleted = Instant::now();
    let app = connect(&db.url).await;
    app.batch_execute("SET statement_timeout = '30s'")
        .await
        .expect("timeout");
    app.execute("DELETE FROM profiles WHERE id = $1", &[&victim])
        .await
        .expect("the application's DELETE");
    let waited = deleted.elapsed();
    assert!(
        waited < Duration::from_secs(6),
        "the DELETE waited {waited:?}"
    );

    send_signal(child.pid, "CONT");
    let out = child.wait(Duration::from_secs(120)).await;
    assert_success(&out);
    assert_no_panic(&out);
    assert_stderr_has(&out, "retry");

    // Equal to a clean run over the same data with the same deletion.
    clean
        .client
        .execute("DELETE FROM profiles WHERE id = $1", &[&victim])
        .await
        .expect("same deletion");
    assert_success(&clean.run(&["run"]));
    assert_eq!(db.links_checksum().await, clean.links_checksum().await);
    assert_success(&db.run(&["verify", "--strict"]));
}
