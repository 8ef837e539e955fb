//! Sessions the server ends (SPEC §6 "Sessions the server ends are
//! replaced", §12): relink is stopped (SIGSTOP, by the test hook
//! `RELINK_TEST_STOP_AT`) just before each statement of a chunk — set-up,
//! lock phase, context read, COPY of the links, ledger, rejects,
//! checkpoint, commit — and its session is ended there, by
//! `pg_terminate_backend` or by the server's
//! `idle_in_transaction_session_timeout` while relink is stopped past
//! `--idle-timeout`; then relink continues. The statement meets the ended
//! session, the chunk is retried on a new one, and the run equals a clean
//! run. Deterministic: the session always ends at that statement. The
//! same for the apply of a plan (`run --plan`).

use std::time::{Duration, Instant};

use relink::test_hook::Point;

use crate::harness::{assert_no_panic, assert_success, send_signal, stderr, TestDb};

/// How the server ends relink's session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// An operator's `pg_terminate_backend` (SQLSTATE 57P01).
    Terminate,
    /// `--idle-timeout` passes while relink is stopped (25P03).
    IdleTimeout,
}

/// What relink says the statement at `point` was doing when it failed
/// (the context of its error).
fn statement_of(point: Point) -> &'static str {
    match point {
        Point::SetUp => "cannot set up the chunk transaction",
        Point::LockPhase => "cannot set the lock phase's lock_timeout",
        Point::ContextRead => "cannot read the users' current profile links",
        Point::CopyLinks => "COPY into \"public\".profile_links",
        Point::Ledger => "COPY into \"relink\".ledger_rows",
        Point::Rejects => "COPY into \"relink\".reject_rows",
        Point::Checkpoint => "cannot save the checkpoint",
        Point::Commit => "cannot commit the chunk",
        Point::Release | Point::Exit | Point::Census => unreachable!("not a statement of a chunk"),
    }
}

/// The live command whose session is ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Live {
    /// `relink run`.
    Run,
    /// `relink run --plan FILE` of a plan made just before (SPEC §15).
    Apply,
}

impl Live {
    /// How relink's retry names the unit it retries.
    fn unit(self) -> &'static str {
        match self {
            Live::Run => "writing a chunk",
            Live::Apply => "applying a chunk of the plan",
        }
    }
}

/// Ends relink's session at `point` of its second chunk, then lets it go
/// on: it must complete with the rows of a clean run.
async fn end_session_at(
    template: &mut TestDb,
    clean: &str,
    live: Live,
    point: Point,
    ending: Ending,
) {
    let db = TestDb::clone_of(template, "s_end").await;
    let idle_timeout = match ending {
        Ending::Terminate => "60s",
        Ending::IdleTimeout => "2s",
    };
    let plan = std::env::temp_dir().join(format!("relink-it-{}.plan.jsonl", db.name));
    let plan = plan.to_str().expect("UTF-8");
    let mut args = vec!["--idle-timeout", idle_timeout, "run"];
    if live == Live::Apply {
        assert_success(&db.run(&["run", "--dry-run", "-q", "--plan-out", plan]));
        args.extend(["--plan", plan]);
    }
    args.extend(["--chunk-size", "100", "--writers", "1"]);
    let child = db
        .spawn_stopped_at(&format!("{point}@2"), &args, Duration::from_secs(60))
        .await;
    let backend = db.writer_in_chunk().await;
    if ending == Ending::Terminate {
        db.exec("SELECT pg_terminate_backend($1)", &[&backend])
            .await;
    }
    let started = Instant::now();
    while db
        .count(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = {backend}"
        ))
        .await
        > 0
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{point}/{ending:?}: the server did not end relink's session"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    send_signal(child.pid, "CONT");
    let out = child.wait(Duration::from_secs(120)).await;
    let err = stderr(&out);
    assert_success(&out);
    assert_no_panic(&out);
    // The chunk's retry names the statement that met the ended session
    // (on a loaded machine another retry may come first: a chunk idle past
    // the short --idle-timeout between two statements).
    let retried = err
        .lines()
        .find(|l| {
            l.contains(live.unit()) && l.contains("retry ") && l.contains(statement_of(point))
        })
        .unwrap_or_else(|| {
            panic!("{point}/{ending:?}: no retry of the chunk after its {point} statement:\n{err}")
        });
    for placeholder in ["{state}", "{app}"] {
        assert!(!err.contains(placeholder), "{placeholder} shown:\n{err}");
    }
    assert_eq!(db.links_checksum().await, clean, "{point}/{ending:?}");
    assert_success(&db.run(&["verify", "--strict"]));
    if live == Live::Apply {
        std::fs::remove_file(plan).expect("remove the plan");
    }
    eprintln!("{live:?} {point}/{ending:?}: {}", retried.trim());
}

/// Every statement of a chunk of `live`, with one kind of ending.
async fn every_statement(live: Live, ending: Ending) {
    let mut template = TestDb::new("s_template").await;
    template.generate(600);
    let clean = TestDb::clone_of(&mut template, "s_clean").await;
    assert_success(&clean.run(&["run", "--chunk-size", "100"]));
    let clean = clean.links_checksum().await;
    for point in Point::ALL
        .into_iter()
        .filter(|p| ![Point::Release, Point::Exit, Point::Census].contains(p))
    {
        end_session_at(&mut template, &clean, live, point, ending).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_terminated_at_any_statement_of_a_chunk_is_replaced() {
    every_statement(Live::Run, Ending::Terminate).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relink_stopped_past_the_idle_timeout_at_any_statement_of_a_chunk_completes() {
    every_statement(Live::Run, Ending::IdleTimeout).await;
}

/// The apply of a plan shares the run's retried chunk (`drive`); its own
/// statements (the lock phase and reads of the records' current state)
/// meet ended sessions too. Plan then apply equals a clean plain run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apply_whose_session_is_terminated_at_any_statement_of_a_chunk_completes() {
    every_statement(Live::Apply, Ending::Terminate).await;
}

/// A rerun's census (source::Reader::expect) is a read like any page: its
/// session ended by the server just before the census query, the read is
/// retried on a fresh connection and the rerun writes what a rerun whose
/// session was not ended writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_census_whose_session_is_terminated_is_retried() {
    let mut db = TestDb::new("s_census").await;
    db.generate(300);
    assert_success(&db.run(&["run"]));
    db.add_census_links(20).await;
    let clean = TestDb::clone_of(&mut db, "s_census_clean").await;
    assert_success(&clean.run(&["run"]));

    let child = db
        .spawn_stopped_at("census", &["run"], Duration::from_secs(60))
        .await;
    // The reader's connection, idle before its query: every relink session
    // of the database but the lock holders'.
    let ended = db
        .count(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
              WHERE datname = current_database() AND application_name LIKE 'relink run%'
                AND pid NOT IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory')",
        )
        .await;
    assert!(ended > 0, "no reader session to end");
    send_signal(child.pid, "CONT");
    let out = child.wait(Duration::from_secs(60)).await;
    assert_success(&out);
    assert_no_panic(&out);
    let err = stderr(&out);
    assert!(
        err.lines()
            .any(|l| l.contains("retry") && l.contains("cannot find the pending profiles")),
        "no retry of the census:\n{err}"
    );
    assert!(err.contains("a census found 20 pending profiles"), "{err}");
    assert_eq!(db.links_checksum().await, clean.links_checksum().await);
    assert_success(&db.run(&["verify", "--strict"]));
}
