//! Reliability: an application holding locks, statement timeouts, the
//! application writing while relink runs, bad configuration, hostile legacy
//! values and signals, all against the real server and the real binary.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::{
    assert_code, assert_no_panic, assert_resumed, assert_stderr_has, assert_stdout_has,
    assert_success, connect, eventually, json_summary, send_signal, stderr, stdout, verify_check,
    with_dbname, TestDb,
};

/// Profiles with a legacy value.
async fn with_legacy(db: &TestDb) -> i64 {
    db.count("SELECT count(*) FROM profiles WHERE \"socialLinks\" IS NOT NULL")
        .await
}

/// Waits until relink has committed at least one row of its own (generated
/// user-created rows have ids `ul…`; relink's are UUIDs), i.e. the run is
/// well under way and its signal handlers are installed.
async fn wait_for_first_chunk(db: &TestDb, timeout: Duration) {
    eventually(timeout, "no chunk committed", || async {
        db.count("SELECT count(*) FROM profile_links WHERE id NOT LIKE 'ul%'")
            .await
            > 0
    })
    .await;
}

/// Every INSERT (COPY fires it too) into `db`'s profile_links takes 5 s
/// from now on: a trigger (and its function) named `name`.
async fn slow_inserts(db: &TestDb, name: &str) {
    db.batch(&format!(
        "CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql
               AS $$ BEGIN PERFORM pg_sleep(5); RETURN NULL; END $$;
             CREATE TRIGGER {name} AFTER INSERT ON profile_links
               FOR EACH STATEMENT EXECUTE FUNCTION {name}();"
    ))
    .await;
}

/// A plain rerun resumes run 1 and ends where `clean` (the same data,
/// migrated without incident) is, checked by `verify --strict` too.
async fn resume_equals_clean(db: &TestDb, clean: &TestDb) {
    assert_resumed(&db.run(&["run"]), 1);
    assert_success(&db.run(&["verify", "--strict"]));
    assert_eq!(db.links_checksum().await, clean.links_checksum().await);
}

/// relink failed (exit 1, no panic) on PostgreSQL's statement timeout;
/// returns its stderr.
#[track_caller]
fn assert_statement_timeout(out: &std::process::Output) -> String {
    assert_code(out, 1);
    assert_no_panic(out);
    let err = stderr(out);
    assert!(
        err.contains("canceling statement due to statement timeout"),
        "{err}"
    );
    err
}

/// stderr holds exactly one message, relink's error line.
#[track_caller]
fn assert_one_error_line(out: &std::process::Output) {
    let err = stderr(out);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one error line:\n{err}");
    assert!(lines[0].starts_with("relink: error: "), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_table_lock_held_by_the_application_is_waited_out_with_retries() {
    let db = TestDb::new("f_locked").await;
    db.generate(1000);

    // The application (say, a migration) holds profile_links exclusively.
    let holder = db.lock_table("profile_links").await;
    let child = db.spawn(&[
        "run",
        "--lock-timeout",
        "200ms",
        "--retries",
        "20",
        "--chunk-size",
        "100",
        "--pause",
        "100ms",
    ]);

    // Meanwhile another session reads the table every 100 ms and notes how
    // long each read waited.
    let probe = connect(&db.url).await;
    let stop = Arc::new(AtomicBool::new(false));
    let probing = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut samples = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let issued = Instant::now();
                probe
                    .query_one("SELECT count(*) FROM profile_links", &[])
                    .await
                    .expect("probe");
                samples.push((issued, Instant::now()));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            samples
        })
    };

    tokio::time::sleep(Duration::from_secs(3)).await;
    holder.batch_execute("ROLLBACK").await.expect("unlock");
    let released = Instant::now();
    let out = child.wait(Duration::from_secs(60)).await;
    stop.store(true, Ordering::SeqCst);
    let samples = probing.await.expect("probe task");

    assert_success(&out);
    assert_no_panic(&out);
    let err = stderr(&out);
    assert!(err.contains("retry"), "no retry warning:\n{err}");
    assert!(err.contains("lock timeout"), "{err}");
    assert_success(&db.run(&["verify", "--strict"]));

    // The reads waited for the application's lock, never for relink: none
    // finished more than 1 s after both its start and the lock's release.
    assert!(
        samples.iter().any(|(issued, _)| *issued < released),
        "no read was issued while the table was locked"
    );
    assert!(
        samples
            .iter()
            .filter(|(issued, _)| *issued > released)
            .count()
            >= 3,
        "too few reads while relink ran after the release: {}",
        samples.len()
    );
    for (issued, done) in &samples {
        let waited = done.saturating_duration_since((*issued).max(released));
        assert!(
            waited < Duration::from_secs(1),
            "a read waited {waited:?} beyond the application's lock"
        );
    }
}

#[tokio::test]
async fn a_one_millisecond_statement_timeout_fails_cleanly_and_the_next_run_completes() {
    let (db, clean) = TestDb::with_clean_run("f_stmt_1ms", 2000).await;

    let out = db.run(&["run", "--statement-timeout", "1ms", "--retries", "2"]);
    let err = assert_statement_timeout(&out);
    let errors = err.lines().filter(|l| l.starts_with("relink: error:"));
    assert_eq!(errors.count(), 1, "{err}");

    let out = db.run(&["run"]);
    assert_success(&out);
    assert_success(&db.run(&["verify", "--strict"]));
    assert_eq!(db.links_checksum().await, clean.links_checksum().await);
}

#[tokio::test]
async fn a_chunk_that_exceeds_the_statement_timeout_is_retried_then_fails_resumably() {
    let (db, clean) = TestDb::with_clean_run("f_stmt_chunk", 2000).await;

    // Every INSERT (COPY fires it too) into profile_links now takes 5 s.
    slow_inserts(&db, "slow_down").await;
    let started = Instant::now();
    let out = db.run(&["run", "--statement-timeout", "300ms", "--retries", "2"]);
    assert!(started.elapsed() < Duration::from_secs(20));
    let err = assert_statement_timeout(&out);
    assert!(err.contains("retry 1/1"), "{err}");
    assert!(err.contains("failed after 2 attempt(s)"), "{err}");
    assert!(err.contains("rerun `relink run` to resume"), "{err}");
    // Nothing of the failed chunks committed.
    assert_eq!(
        db.count("SELECT count(*) FROM profile_links WHERE id NOT LIKE 'ul%'")
            .await,
        0
    );
    let run = db
        .client
        .query_one("SELECT status, error FROM relink.runs WHERE id = 1", &[])
        .await
        .expect("run 1");
    assert_eq!(run.get::<_, String>(0), "failed");
    assert!(run
        .get::<_, Option<String>>(1)
        .is_some_and(|e| e.contains("statement timeout")));

    db.batch("DROP TRIGGER slow_down ON profile_links").await;
    resume_equals_clean(&db, &clean).await;
}

/// A small deterministic generator (xorshift64*): no `rand` dependency.
struct Xorshift(u64);

impl Xorshift {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33;
        usize::try_from(x).unwrap_or(0) % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_application_writing_during_a_run_is_respected() {
    let (db, clean) = TestDb::with_clean_run("f_app", 3000).await;
    let profiles: Vec<(String, String)> = db
        .client
        .query("SELECT id, \"userId\" FROM profiles ORDER BY id", &[])
        .await
        .expect("profiles")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();

    let app = connect(&db.url).await;
    let mut child = db.spawn(&["run", "--chunk-size", "50", "--pause", "50ms"]);
    let mut rng = Xorshift(0x9e37_79b9_7f4a_7c15);
    // id → (label, url, position) of the app's rows that should exist.
    let mut expected: BTreeMap<String, (String, String, i32)> = BTreeMap::new();
    let mut n: i32 = 0;
    while !child.finished() {
        n += 1;
        let (profile, user) = &profiles[rng.below(profiles.len())];
        let id = format!("app-{n}");
        let row = (
            format!("App link {n}"),
            format!("https://app-{n}.example.org/"),
            100_000 + n,
        );
        app.execute(
            "INSERT INTO profile_links (id, \"userId\", \"profileId\", label, url, type, position, \"createdAt\", \"updatedAt\")
             VALUES ($1, $2, $3, $4, $5, 'other', $6, '2024-06-01 12:00:00', '2024-06-01 12:00:00')",
            &[&id, user, profile, &row.0, &row.1, &row.2],
        )
        .await
        .expect("app insert");
        expected.insert(id, row);
        if n % 3 == 0 {
            let victim = expected
                .keys()
                .nth(rng.below(expected.len()))
                .cloned()
                .expect("a row");
            app.execute("DELETE FROM profile_links WHERE id = $1", &[&victim])
                .await
                .expect("app delete");
            expected.remove(&victim);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let out = child.wait(Duration::from_secs(5)).await;
    assert_success(&out);
    assert!(n >= 20, "only {n} application writes during the run");

    // Every app row that should exist does, untouched.
    let rows = db
        .client
        .query(
            "SELECT id, label, url, position, type, \"createdAt\"::text, \"updatedAt\"::text
               FROM profile_links WHERE id LIKE 'app-%' ORDER BY id",
            &[],
        )
        .await
        .expect("app rows");
    let mut found = BTreeMap::new();
    for r in &rows {
        assert_eq!(r.get::<_, String>(4), "other");
        assert_eq!(r.get::<_, String>(5), "2024-06-01 12:00:00");
        assert_eq!(r.get::<_, String>(6), "2024-06-01 12:00:00");
        found.insert(r.get::<_, String>(0), (r.get(1), r.get(2), r.get(3)));
    }
    assert_eq!(found, expected);
    assert!(crate::harness::ledger_ids(&db.client, None)
        .await
        .iter()
        .all(|id| !id.starts_with("app-")));

    // No duplicate among relink's rows, which are those of a clean run.
    let (out, report) = db.verify_json(&[]);
    assert_success(&out);
    assert_eq!(
        verify_check(&report, "duplicate (userId, comparison key) pairs"),
        ("ok".to_owned(), 0)
    );
    let relinks = "(SELECT id, \"userId\", \"profileId\", label, url, type FROM profile_links WHERE id NOT LIKE 'app-%')";
    assert_eq!(db.checksum(relinks).await, clean.checksum(relinks).await);
}

#[tokio::test]
async fn bad_configuration_is_one_clear_message_and_the_documented_code() {
    let db = TestDb::migrated("f_config", 200).await;

    let mut unreachable = url::Url::parse(&db.url).expect("url");
    unreachable.set_port(Some(1)).expect("port");
    let unreachable = unreachable.to_string();
    let missing_db = with_dbname(&db.url, "relink_no_such_database");
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (
            vec![
                "--database-url",
                &unreachable,
                "--connect-timeout",
                "2",
                "run",
            ],
            1,
            "cannot connect",
        ),
        (
            vec![
                "--database-url",
                &unreachable,
                "--connect-timeout",
                "2",
                "status",
            ],
            1,
            "cannot connect",
        ),
        (
            vec!["--database-url", &missing_db, "run"],
            1,
            "database \"relink_no_such_database\" does not exist",
        ),
        (
            vec!["--database-url", &missing_db, "verify"],
            1,
            "cannot connect",
        ),
        (vec!["purge", "--run", "12345", "--yes"], 1, "no run 12345"),
        (
            vec!["--schema", "public", "--state-schema", "public", "status"],
            2,
            "--state-schema must differ from --schema",
        ),
        (
            vec!["--state-schema", "public", "run"],
            2,
            "--state-schema must differ from --schema",
        ),
    ];
    let before = db.checksum_all().await;
    for (args, code, needle) in cases {
        let started = Instant::now();
        let out = db.run(&args);
        assert_code(&out, code);
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{args:?} took {:?}",
            started.elapsed()
        );
        assert_no_panic(&out);
        assert_one_error_line(&out);
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }
    // None of it changed anything.
    assert_eq!(db.checksum_all().await, before);
}

/// The figures of a run summary that account for legacy values.
fn accounted(summary: &serde_json::Value) -> u64 {
    let rejects: u64 = summary["rejects"]
        .as_object()
        .expect("rejects")
        .values()
        .filter_map(serde_json::Value::as_u64)
        .sum();
    summary["links_created"].as_u64().expect("links_created")
        + summary["duplicates"].as_u64().expect("duplicates")
        + rejects
}

#[tokio::test]
async fn hostile_legacy_values_are_all_accounted_for() {
    let db = TestDb::new("f_hostile").await;
    db.batch("INSERT INTO users (id) SELECT 'hu' || i FROM generate_series(1, 6) i;
             INSERT INTO profiles (id, \"userId\", \"socialLinks\") VALUES
               -- 1 value: a 5 MB URL
               ('hp1', 'hu1', jsonb_build_object('website', 'https://big.example.com/' || repeat('a', 5 * 1024 * 1024))),
               -- 100,000 values: 1,000 distinct hosts without a scheme, each 100 times
               ('hp2', 'hu2', (SELECT jsonb_agg('e' || (i % 1000) || '.example.io' ORDER BY i) FROM generate_series(1, 100000) i)),
               -- 1 value: a 63-deep array inside the array (64 deep in all)
               ('hp3', 'hu3', (repeat('[', 64) || '\"https://deep.example.com/\"' || repeat(']', 64))::jsonb);").await;
    let unicode = serde_json::json!({
        "website": "https://例え.テスト/パス",
        "imdb": "https://www.imdb.com/name/nm0000042/",
        "主页": "https://中文.example.com/路径?q=值",
        "موقع": "https://مثال.example.com/صفحة",
        "emoji 🦀": "https://example.com/🦀/😀",
        "combining": "https://e\u{301}xample.com/n\u{303}",
        "astral": "https://example.com/𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
        "rtl": "\u{200f}https://rtl.example.com/\u{200e}",
    });
    let quotes = serde_json::json!({
        "we\"b": "https://q1.example.com/",
        "back\\slash": "https://q2.example.com/",
        "'single'": "https://q3.example.com/",
        "\\\"both\\\"": "not a url \\ \"",
    });
    // Double-encoded: a JSON string whose JSON text escapes NUL (jsonb
    // refuses a NUL itself, but this is a backslash and "u0000").
    let nul = serde_json::Value::String(
        r#"{"website": "https://nul.example.com/a\u0000b", "blog\u0000": "not a url\u0000", "imdb": {"url": "https://www.imdb.com/name/nm7654321/", "label": "IMDb\u0000Label"}}"#
            .to_owned(),
    );
    for (i, value) in [(4, &unicode), (5, &quotes), (6, &nul)] {
        db.exec(
            "INSERT INTO profiles (id, \"userId\", \"socialLinks\") VALUES ($1, $2, $3)",
            &[&format!("hp{i}"), &format!("hu{i}"), value],
        )
        .await;
    }
    let candidates = 1 + 100_000 + 1 + 8 + 4 + 3;

    let started = Instant::now();
    let out = db.run(&["run", "--format", "json"]);
    let elapsed = started.elapsed();
    assert_success(&out);
    assert_no_panic(&out);
    assert!(elapsed < Duration::from_secs(60), "took {elapsed:?}");
    let summary = json_summary(&out);
    assert_eq!(summary["profiles_planned"], 6, "{summary}");
    assert_eq!(accounted(&summary), candidates, "{summary}");
    assert_eq!(summary["rejects"]["too_long"], 1, "{summary}");
    assert_eq!(summary["rejects"]["not_a_string"], 1, "{summary}");
    assert_success(&db.run(&["verify", "--strict"]));

    // The 100,000 values became 1,000 rows at positions 0..999.
    let row = db
        .client
        .query_one(
            "SELECT count(*), min(position), max(position), count(DISTINCT position)
               FROM profile_links WHERE \"profileId\" = 'hp2'",
            &[],
        )
        .await
        .expect("hp2");
    assert_eq!(
        (
            row.get::<_, i64>(0),
            row.get::<_, i32>(1),
            row.get::<_, i32>(2),
            row.get::<_, i64>(3)
        ),
        (1000, 0, 999, 1000)
    );
    // The 5 MB value is kept short in the rejects table.
    let longest: i32 = db
        .client
        .query_one(
            "SELECT max(octet_length(raw_value)) FROM relink.rejects WHERE profile_id = 'hp1'",
            &[],
        )
        .await
        .expect("rejects")
        .get(0);
    assert!((1..=4096).contains(&longest), "{longest}");
    // NUL never reached the database; the escaped one became %00 in a URL.
    assert_eq!(
        db.count("SELECT count(*) FROM profile_links WHERE url = 'https://nul.example.com/a%00b'")
            .await,
        1
    );
    assert_eq!(
        db.count("SELECT count(*) FROM relink.rejects WHERE profile_id = 'hp6'")
            .await,
        1
    );
    // A rerun has nothing to do.
    let out = db.run(&["run", "--format", "json"]);
    assert_success(&out);
    assert_eq!(json_summary(&out)["profiles_planned"], 0);
}

#[tokio::test]
async fn legacy_json_nested_beyond_128_levels_is_a_reject_not_a_crash() {
    let db = TestDb::new("f_deep").await;
    db.generate(200);
    db.batch("INSERT INTO users (id) VALUES ('deepu1'), ('deepu2');
             INSERT INTO profiles (id, \"userId\", \"socialLinks\") VALUES
               ('deep1', 'deepu1', (repeat('[', 200) || '\"https://deep.example.com/\"' || repeat(']', 200))::jsonb),
               ('deep2', 'deepu2', (repeat('{\"website\": ', 200) || '\"https://deeper.example.com/\"' || repeat('}', 200))::jsonb);").await;
    let legacy = with_legacy(&db).await;

    for args in [
        &["run", "--dry-run", "-q"][..],
        &["run", "--format", "json"],
    ] {
        let out = db.run(args);
        assert_no_panic(&out);
        assert_success(&out);
    }
    assert_eq!(
        db.count("SELECT count(*) FROM relink.ledger").await,
        legacy,
        "every profile was planned"
    );
    assert_success(&db.run(&["verify", "--strict"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_after_the_chunk_prints_the_summary_and_the_next_run_resumes() {
    let (db, clean) = TestDb::with_clean_run("f_sigterm", 3000).await;

    let child = db.spawn(&["run", "--chunk-size", "100", "--pause", "200ms"]);
    wait_for_first_chunk(&db, Duration::from_secs(15)).await;
    send_signal(child.pid, "TERM");
    let out = child.wait(Duration::from_secs(15)).await;
    assert_code(&out, 130);
    assert_no_panic(&out);
    assert_stdout_has(&out, "Summary of run 1 (interrupted)");
    assert_stderr_has(&out, "checkpoint saved");
    let done = db.count("SELECT count(*) FROM relink.ledger").await;
    assert!(
        done > 0 && done < with_legacy(&db).await,
        "stopped midway: {done}"
    );

    resume_equals_clean(&db, &clean).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigint_aborts_at_once_and_the_next_run_resumes() {
    let (db, clean) = TestDb::with_clean_run("f_sigint2", 3000).await;

    let mut child = db.spawn(&["run", "--chunk-size", "100", "--lock-timeout", "30s"]);
    wait_for_first_chunk(&db, Duration::from_secs(15)).await;
    // Hold the next chunks inside their transactions: the ledger is locked,
    // so the first signal cannot finish quickly and the second one must
    // abort a chunk in flight.
    let locker = db.lock_table("relink.ledger").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    send_signal(child.pid, "INT");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!child.finished(), "stopped before the second signal");
    let out = child.stop_with("INT", Duration::from_millis(500)).await;
    assert_stderr_has(&out, "second signal");
    // Aborted, not finished: no summary.
    assert!(!stdout(&out).contains("Summary"), "{}", stdout(&out));
    locker.batch_execute("ROLLBACK").await.expect("unlock");

    resume_equals_clean(&db, &clean).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_during_verify_changes_nothing() {
    let db = TestDb::migrated("f_sigint_verify", 3000).await;
    let before = db.checksum_all().await;

    for delay in [0, 30, 100] {
        let child = db.spawn(&["verify", "--page-size", "20"]);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        send_signal(child.pid, "INT");
        let out = child.wait(Duration::from_secs(30)).await;
        assert_no_panic(&out);
        // 130 when interrupted, 0 if it finished first; a signal arriving
        // before the handler is installed kills it (a shell also says 130).
        let by_sigint = {
            use std::os::unix::process::ExitStatusExt;
            out.status.signal() == Some(2)
        };
        assert!(
            matches!(out.status.code(), Some(0 | 130)) || by_sigint,
            "after {delay} ms: {:?}\n{}",
            out.status,
            stderr(&out)
        );
    }
    assert_eq!(db.checksum_all().await, before);
    assert_success(&db.run(&["verify", "--strict"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_while_a_chunk_retries_a_lock_interrupts_the_run() {
    let db = TestDb::new("f_sig_locked").await;
    db.generate(1000);
    let holder = db.lock_table("profile_links").await;
    let child = db.spawn(&["run", "--lock-timeout", "200ms", "--retries", "20"]);
    // Long enough for a few lock timeouts and retries.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    send_signal(child.pid, "TERM");
    let out = child.wait(Duration::from_secs(15)).await;
    holder.batch_execute("ROLLBACK").await.expect("unlock");

    assert_no_panic(&out);
    assert_stderr_has(&out, "retry");
    assert_code(&out, 130);
    assert_stdout_has(&out, "Summary of run 1 (interrupted)");
    let status = db.text("SELECT status FROM relink.runs WHERE id = 1").await;
    assert_eq!(status, "interrupted");

    let out = db.run(&["run"]);
    assert_resumed(&out, 1);
    assert_success(&db.run(&["verify", "--strict"]));
}

#[tokio::test]
async fn a_run_that_fails_before_any_chunk_claims_nothing_unchanged() {
    let db = TestDb::new("f_fail_summary").await;
    db.generate(1000);
    slow_inserts(&db, "refuse").await;
    let out = db.run(&[
        "run",
        "--statement-timeout",
        "300ms",
        "--retries",
        "1",
        "--format",
        "json",
    ]);
    assert_code(&out, 1);
    let summary = json_summary(&out);
    assert_eq!(summary["status"], "failed", "{summary}");
    assert_eq!(summary["profiles_planned"], 0, "{summary}");
    // A first run has never seen these profiles: none is "unchanged since
    // the last run" (the summary said all of them were).
    assert_eq!(summary["profiles_unchanged"], 0, "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_accepts_but_never_answers_is_given_up_on() {
    let db = TestDb::new("f_silent").await;
    // Accepts TCP connections (the kernel completes them from the backlog)
    // and never says a word, like a hung server or proxy.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/postgres",
        silent.local_addr().expect("addr").port()
    );
    for command in ["status", "verify", "run"] {
        let started = Instant::now();
        let child = db.spawn(&["--database-url", &url, "--connect-timeout", "2", command]);
        let out = child.wait(Duration::from_secs(10)).await;
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "{command}: gave up after {:?}",
            started.elapsed()
        );
        assert_code(&out, 1);
        assert_no_panic(&out);
        assert_stderr_has(&out, "cannot connect");
    }
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_connections_mid_run_are_retried_and_the_result_equals_a_clean_run() {
    let (db, clean) = TestDb::with_clean_run("f_lost_conn", 3000).await;

    let child = db.spawn(&["run", "--chunk-size", "100", "--pause", "200ms"]);
    wait_for_first_chunk(&db, Duration::from_secs(15)).await;
    // Twice, as a failover or an operator's pg_terminate_backend would:
    // every relink session of this database, the lock holder included.
    for _ in 0..2 {
        let killed = db.terminate_relink_sessions().await;
        assert!(killed >= 2, "terminated {killed} session(s)");
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let out = child.wait(Duration::from_secs(30)).await;
    assert_success(&out);
    assert_no_panic(&out);
    assert_stderr_has(&out, "reconnecting");
    assert_success(&db.run(&["verify", "--strict"]));
    assert_eq!(db.links_checksum().await, clean.links_checksum().await);
    let out = db.run(&["run", "--format", "json"]);
    assert_success(&out);
    assert_eq!(json_summary(&out)["links_created"], 0);
}
