//! Online (SPEC §6): relink beside an application that keeps writing the
//! same tables — one that keeps the locking contract, one that does not —
//! and relink always yielding in a lock cycle. The application is
//! `application.rs`, its SQL that of docs/application-contract.md.

use std::time::{Duration, Instant};

use crate::application::{self, Activity, Kind};
use crate::harness::{
    assert_no_panic, assert_stderr_has, assert_success, connect, json_summary, send_signal, stderr,
    stdout, verify_check, Spawned, TestDb,
};

/// relink's target chunk time in these tests: small chunks.
const TARGET: Duration = Duration::from_millis(100);

/// Room beside twice the target chunk time for the application's own work
/// inside its lock wait (its lock statement's own execution, the commit
/// it waits for) on a machine relink, the server and other tests keep busy.
const OWN_WORK: Duration = Duration::from_millis(300);

/// The application's schema when it deletes accounts user-first: a
/// profile goes with its user.
const USER_FIRST: &str = "ALTER TABLE profiles DROP CONSTRAINT \"profiles_userId_fkey\",
    ADD CONSTRAINT \"profiles_userId_fkey\" FOREIGN KEY (\"userId\") REFERENCES users (id) ON DELETE CASCADE";

/// The duplicate and position checks of `verify`, which must both be zero.
#[track_caller]
fn assert_no_collision(db: &TestDb) {
    let (out, report) = db.verify_json(&[]);
    assert_success(&out);
    for check in [
        "duplicate (userId, comparison key) pairs",
        "users with duplicate positions",
    ] {
        assert_eq!(
            verify_check(&report, check),
            ("ok".to_owned(), 0),
            "{check}"
        );
    }
}

/// The application alone for a moment: how long its transactions take
/// when nothing else holds its rows.
async fn baseline(db: &TestDb, kind: Kind, accounts: &[application::Account]) -> Activity {
    let running = application::start(&db.url, kind, accounts, 1).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let activity = running.stop().await;
    assert!(activity.failures.is_empty(), "{:?}", activity.failures);
    activity
}

/// No application transaction waited for a lock longer than about one of
/// relink's chunks (SPEC §6): twice the target chunk time, or relink's
/// longest chunk when the machine made one run longer than that (then the
/// wait follows the chunk, not the target), plus the application's own
/// work. The wait is the server's own account of it (`pg_stat_activity`),
/// not the client's clock, which also counts the machine's scheduling.
#[track_caller]
fn assert_waits_bounded(beside: &Beside) {
    let waited = beside.activity.longest_lock_wait;
    let bound = (2 * TARGET).max(beside.longest_chunk) + OWN_WORK;
    eprintln!(
        "longest application lock wait beside relink: {waited:?} (within 2 x {TARGET:?} + {OWN_WORK:?}: {}; \
         relink's longest chunk {:?}, bound {bound:?}); longest application transaction {:?} ({})",
        waited <= 2 * TARGET + OWN_WORK,
        beside.longest_chunk,
        beside.activity.longest.0,
        beside.activity.longest.1
    );
    assert!(waited <= bound, "{}", beside.activity.describe());
}

/// A run beside the application: relink's output, what the application
/// did, and relink's longest chunk transaction (its metrics file).
struct Beside {
    out: std::process::Output,
    activity: Activity,
    longest_chunk: Duration,
}

/// `relink run` with small chunks and two writers while the application of
/// `kind` writes; returns the run's output and what the application did.
async fn run_beside(db: &TestDb, kind: Kind) -> Beside {
    let mut accounts = application::accounts(db).await;
    let alone = baseline(db, kind, &accounts).await;
    eprintln!("application alone: {}", alone.describe());
    accounts.retain(|a| !alone.deleted.contains(&a.user_id));
    let running = application::start(&db.url, kind, &accounts, 3).await;
    let metrics = std::env::temp_dir().join(format!("{}.prom", db.name));
    let child = db.spawn(&[
        "run",
        "--metrics-file",
        metrics.to_str().expect("a UTF-8 temp dir"),
        "--target-chunk-time",
        &format!("{}ms", TARGET.as_millis()),
        "--max-rate",
        "1500",
        "--writers",
        "2",
        "--format",
        "json",
    ]);
    let out = child.wait(Duration::from_secs(180)).await;
    let mut activity = running.stop().await;
    activity.merge_earlier(alone);
    eprintln!("relink run: {}", application::summary_line(&out));
    let prom = std::fs::read_to_string(&metrics).unwrap_or_default();
    let _ = std::fs::remove_file(&metrics);
    let longest_chunk = prom
        .lines()
        .find(|l| l.starts_with("relink_chunk_duration_max_seconds"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(Duration::from_secs_f64)
        .unwrap_or_else(|| panic!("no relink_chunk_duration_max_seconds in\n{prom}"));
    eprintln!("application beside relink: {}", activity.describe());
    Beside {
        out,
        activity,
        longest_chunk,
    }
}

/// [`run_beside`], where relink succeeds, no application transaction
/// fails and the application did more than 300 of them.
async fn run_beside_cleanly(db: &TestDb, kind: Kind) -> Beside {
    let beside = run_beside(db, kind).await;
    let (out, activity) = (&beside.out, &beside.activity);
    assert_success(out);
    assert_no_panic(out);
    assert!(
        activity.failures.is_empty(),
        "application transactions failed: {:?}",
        activity.failures
    );
    assert!(activity.total() > 300, "{}", activity.describe());
    beside
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_application_that_keeps_the_contract_and_relink_never_collide() {
    let db = TestDb::new("o_contract").await;
    db.generate(4000);
    let beside = run_beside_cleanly(&db, Kind::KeepsContract).await;
    let activity = &beside.activity;
    assert!(
        activity.skipped_adds > 0,
        "the application never met a row relink created: {}",
        activity.describe()
    );
    assert_waits_bounded(&beside);

    let rerun = db.run(&["run", "--format", "json"]);
    assert_success(&rerun);
    eprintln!("rerun: {}", application::summary_line(&rerun));
    assert_no_collision(&db);
    application::check_outcome(&db, activity).await;
    assert_success(&db.run(&["verify", "--strict"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_application_that_does_not_lock_is_mended_by_repair() {
    let db = TestDb::new("o_nolock").await;
    db.generate(4000);
    db.batch(USER_FIRST).await;
    let beside = run_beside_cleanly(&db, Kind::DoesNotLock).await;
    let activity = &beside.activity;
    assert_waits_bounded(&beside);
    let rerun = db.run(&["run", "--format", "json"]);
    assert_success(&rerun);
    let (_, report) = db.verify_json(&[]);
    eprintln!(
        "before repair: {:?} duplicate pairs, {:?} users with duplicate positions",
        verify_check(&report, "duplicate (userId, comparison key) pairs"),
        verify_check(&report, "users with duplicate positions")
    );

    // The dry run lists and changes nothing.
    let before = db.checksum_all().await;
    let dry = db.run(&["repair", "--dry-run", "--format", "json"]);
    assert_success(&dry);
    assert_eq!(
        db.checksum_all().await,
        before,
        "repair --dry-run changed something"
    );
    let would = json_summary(&dry);

    let application_rows = "(SELECT * FROM profile_links WHERE id LIKE 'app-%' OR id LIKE 'ul%')";
    let theirs = db.checksum(application_rows).await;
    let repaired = db.run(&["repair", "--yes", "--format", "json"]);
    assert_success(&repaired);
    let done = json_summary(&repaired);
    eprintln!("repair: {done}");
    for figure in ["duplicates_deleted", "rows_moved"] {
        assert_eq!(done[figure], would[figure], "{figure}: {done} vs {would}");
    }
    assert_eq!(done["unmendable"], 0, "{done}");
    assert_no_collision(&db);
    assert_success(&db.run(&["verify", "--strict"]));
    assert_eq!(
        db.checksum(application_rows).await,
        theirs,
        "repair touched the application's rows"
    );
    application::check_outcome(&db, activity).await;
    // The ledger kept the keys of what repair deleted: nothing comes back.
    let again = db.run(&["run", "--format", "json"]);
    assert_success(&again);
    assert_eq!(json_summary(&again)["links_created"], 0);
    assert_no_collision(&db);
}

/// Polls `sql` (one boolean) every 2 ms until it is true or `within` ends.
async fn until(client: &tokio_postgres::Client, sql: &str, within: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < within {
        let yes: bool = client
            .query_one(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .get(0);
        if yes {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    false
}

/// One try at the cycle: relink holds a profile and waits for its user,
/// which the application's `DELETE FROM users` holds while it waits for the
/// profile (its cascade). Whether the cycle formed (relink's short wait
/// may end before the application reaches the profile: then try again).
async fn lock_cycle() -> bool {
    let db = TestDb::new("o_cycle").await;
    db.generate(300);
    // The application deletes accounts user-first; a gate in its deletion,
    // between taking the user's row and cascading to the profile, lets the
    // test line the two up.
    db.batch(&format!(
        "{USER_FIRST};
             CREATE FUNCTION gate() RETURNS trigger LANGUAGE plpgsql
               AS $$ BEGIN PERFORM pg_advisory_xact_lock(42); RETURN OLD; END $$;
             CREATE TRIGGER gate BEFORE DELETE ON users FOR EACH ROW EXECUTE FUNCTION gate();"
    ))
    .await;
    let user = db
        .text(
            "SELECT \"userId\" FROM profiles WHERE \"socialLinks\" IS NOT NULL ORDER BY id LIMIT 1",
        )
        .await;
    let gate = connect(&db.url).await;
    gate.batch_execute("SELECT pg_advisory_lock(42)")
        .await
        .expect("close the gate");

    // relink stops at its first chunk's lock phase (one chunk: every profile).
    let child = db
        .spawn_stopped_at(
            "lock-phase",
            &[
                "run",
                "--writers",
                "1",
                "--chunk-size",
                "1000",
                "--retries",
                "20",
                "--format",
                "json",
            ],
            Duration::from_secs(30),
        )
        .await;
    let relink_pid = db.writer_in_chunk().await;

    // The application takes the user's row, and waits at the gate.
    let app = connect(&db.url).await;
    let app_pid: i32 = app
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0);
    let deletion = tokio::spawn(async move {
        app.batch_execute("BEGIN").await?;
        let began = Instant::now();
        app.execute("DELETE FROM users WHERE id = $1", &[&user])
            .await?;
        app.batch_execute("COMMIT").await?;
        Ok::<_, tokio_postgres::Error>(began.elapsed())
    });
    let watch = connect(&db.url).await;
    assert!(
        until(
            &watch,
            &format!("SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = {app_pid} AND wait_event = 'advisory')"),
            Duration::from_secs(10)
        )
        .await,
        "the application never reached its gate"
    );
    // relink locks the profile and waits for the user (at most 150 ms,
    // then again after each retry's backoff).
    send_signal(child.pid, "CONT");
    assert!(
        until(
            &watch,
            &format!("SELECT {app_pid} = ANY(pg_blocking_pids({relink_pid}))"),
            Duration::from_secs(10)
        )
        .await,
        "relink never waited for the user the application holds"
    );
    // The application goes on to the profile relink holds.
    gate.batch_execute("SELECT pg_advisory_unlock(42)")
        .await
        .expect("open the gate");
    let cycle = until(
        &watch,
        &format!(
            "SELECT {relink_pid} = ANY(pg_blocking_pids({app_pid}))
                AND {app_pid} = ANY(pg_blocking_pids({relink_pid}))"
        ),
        Duration::from_millis(500),
    )
    .await;
    let waited = deletion
        .await
        .expect("the application's task")
        .unwrap_or_else(|e| panic!("the application's deletion failed: {e:?}"));
    let out = child.wait(Duration::from_secs(60)).await;
    assert_success(&out);
    assert_no_panic(&out);
    if !cycle {
        eprintln!("no cycle this time (relink's wait ended first); again");
        return false;
    }
    eprintln!(
        "lock cycle: the application's DELETE committed after {waited:?}; relink: {}",
        stderr(&out)
            .lines()
            .find(|l| l.contains("retry"))
            .unwrap_or_default()
    );
    assert_stderr_has(&out, "lock timeout");
    assert_eq!(json_summary(&out)["profiles_gone"], 1);
    assert_no_collision(&db);
    assert_success(&db.run(&["verify", "--strict"]));
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lock_cycle_with_an_application_that_deletes_user_first_is_relinks_to_lose() {
    for attempt in 1..=5 {
        if lock_cycle().await {
            return;
        }
        eprintln!("attempt {attempt}: no cycle formed");
    }
    panic!("no lock cycle formed in 5 attempts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_edited_or_deleted_after_they_were_read_are_planned_as_they_are_under_the_lock() {
    let db = TestDb::new("o_read_then_changed").await;
    db.generate(300);
    let profiles = db.object_profiles(2, false).await;
    let [(edited, edited_user), (deleted, deleted_user)] = &profiles[..] else {
        panic!("two object-shaped profiles");
    };

    // relink has read its first chunk (every profile) and stops before
    // locking it; the application edits one profile and deletes another.
    let child = stopped_before_its_first_lock_phase(&db).await;
    let app = connect(&db.url).await;
    edit_legacy(&app, edited_user, "https://late-edit.example.net/").await;
    delete_account(&app, deleted_user).await;
    send_signal(child.pid, "CONT");
    let out = child.wait(Duration::from_secs(60)).await;
    assert_success(&out);
    let summary = json_summary(&out);
    assert_eq!(summary["profiles_gone"], 1, "{summary}");

    // The edited value was planned, and the ledger holds its fingerprint.
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM profile_links
              WHERE \"profileId\" = '{edited}' AND url = 'https://late-edit.example.net/'"
        ))
        .await,
        1
    );
    let matches: bool = db
        .client
        .query_one(
            &format!(
                "SELECT l.fingerprint = {} FROM relink.ledger l JOIN profiles p ON p.id = l.profile_id
                  WHERE l.profile_id = $1 AND l.fingerprint IS NOT NULL",
                relink::source::FINGERPRINT
            ),
            &[edited],
        )
        .await
        .expect("the ledger row")
        .get(0);
    assert!(
        matches,
        "the ledger holds another fingerprint than the value planned"
    );
    // Nothing of the deleted account, nothing recorded for it.
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM relink.ledger WHERE profile_id = '{deleted}'"
        ))
        .await,
        0
    );
    // So the rerun has nothing to plan.
    let again = db.run(&["run", "--format", "json"]);
    assert_success(&again);
    assert_eq!(json_summary(&again)["profiles_planned"], 0);
    assert_success(&db.run(&["verify", "--strict"]));
}

/// A profile whose value holds no valid link gives rejects alone whatever
/// its user's rows, so a live run does not lock it (SPEC §6 "Online": the
/// contract guards changes of a user's links; relink makes none there):
/// the application may hold it for the whole run. One edited to a valid
/// link after it was read is migrated by the next run, as any later edit
/// (the ledger holds the fingerprint of the value read); one whose
/// account is deleted meanwhile is recorded as read, as if deleted just
/// after the chunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_without_a_valid_link_are_not_locked_and_later_edits_go_to_the_next_run() {
    let db = TestDb::new("o_no_valid_link").await;
    db.generate(300);
    let profiles = db.object_profiles(3, false).await;
    let [(held, held_user), (edited, edited_user), (_, deleted_user)] = &profiles[..] else {
        panic!("three object-shaped profiles");
    };
    for (id, _) in &profiles {
        db.client
            .execute(
                "UPDATE profiles SET \"socialLinks\" = '{\"website\": \"javascript:alert(1)\", \"phone\": 12}' WHERE id = $1",
                &[id],
            )
            .await
            .expect("a value without a valid link");
    }

    let child = stopped_before_its_first_lock_phase(&db).await;
    // The application holds one profile for the whole run, edits another
    // to a valid link and deletes the third's account, keeping the contract.
    let holder = connect(&db.url).await;
    holder.batch_execute("BEGIN").await.expect("begin");
    holder
        .execute(application::lock_statement().as_str(), &[held_user])
        .await
        .expect("hold the profile");
    let app = connect(&db.url).await;
    edit_legacy(&app, edited_user, "https://edited-meanwhile.example.net/").await;
    delete_account(&app, deleted_user).await;
    send_signal(child.pid, "CONT");
    let out = child.wait(Duration::from_secs(60)).await;
    assert_success(&out);
    assert!(
        !stderr(&out).contains("lock timeout"),
        "relink waited for a profile it writes nothing for: {}",
        stderr(&out)
    );
    let summary = json_summary(&out);
    assert_eq!(summary["profiles_gone"], 0, "{summary}");
    // The held profile is recorded with its rejects, under the lock.
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM relink.rejects WHERE profile_id = '{held}'"
        ))
        .await,
        2
    );
    let edited_link = format!(
        "SELECT count(*) FROM profile_links
          WHERE \"profileId\" = '{edited}' AND url = 'https://edited-meanwhile.example.net/'"
    );
    assert_eq!(
        db.count(&edited_link).await,
        0,
        "planned from a value read before the edit"
    );
    holder.batch_execute("COMMIT").await.expect("release");

    // The next run migrates the edit, and only it.
    let again = db.run(&["run", "--format", "json"]);
    assert_success(&again);
    assert_eq!(
        json_summary(&again)["profiles_planned"],
        1,
        "{}",
        stdout(&again)
    );
    assert_eq!(db.count(&edited_link).await, 1);
    assert_success(&db.run(&["verify", "--strict"]));
}

/// `relink run` in one chunk, stopped once it has read every profile and
/// before its lock phase.
async fn stopped_before_its_first_lock_phase(db: &TestDb) -> Spawned {
    db.spawn_stopped_at(
        "lock-phase",
        &["run", "--chunk-size", "1000", "--format", "json"],
        Duration::from_secs(30),
    )
    .await
}

/// The application deletes `user`'s account, as the locking contract says
/// (docs/application-contract.md).
async fn delete_account(app: &tokio_postgres::Client, user: &String) {
    let user: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [user];
    for sql in application::statements("delete-account") {
        let params = if sql.contains("$1") { &user[..] } else { &[] };
        app.execute(sql.as_str(), params)
            .await
            .expect("delete the account");
    }
}

/// The application replaces `user`'s legacy value with one link to `url`,
/// as the locking contract says (docs/application-contract.md).
async fn edit_legacy(app: &tokio_postgres::Client, user: &String, url: &str) {
    app.batch_execute("BEGIN").await.expect("begin");
    app.execute(application::lock_statement().as_str(), &[user])
        .await
        .expect("lock");
    for sql in application::statements("edit-legacy") {
        let value = serde_json::json!({"census edit": url});
        app.execute(sql.as_str(), &[user, &value])
            .await
            .expect("edit");
    }
    app.batch_execute("COMMIT").await.expect("commit");
}

/// An application edit during a rerun that reads by census (SPEC §6):
/// a pending profile edited again after the census is planned as it is
/// under the lock; a settled one edited after it is left pending for the
/// next run, which finds it by census; nothing is lost (verify).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_census_rerun_plans_profiles_as_they_are_and_leaves_later_edits_to_the_next_run() {
    let db = TestDb::migrated("o_census", 300).await;
    let profiles = db.object_profiles(2, true).await;
    let [(again, again_user), (later, later_user)] = &profiles[..] else {
        panic!("two migrated object-shaped profiles");
    };
    let app = connect(&db.url).await;
    edit_legacy(&app, again_user, "https://census-first.example.net/").await;

    // relink's census found the one pending profile; it read it and stops
    // before locking it. The application edits it again, and edits a
    // settled profile.
    let child = db
        .spawn_stopped_at(
            "lock-phase",
            &["run", "--format", "json"],
            Duration::from_secs(30),
        )
        .await;
    edit_legacy(&app, again_user, "https://census-again.example.net/").await;
    edit_legacy(&app, later_user, "https://census-later.example.net/").await;
    send_signal(child.pid, "CONT");
    let out = child.wait(Duration::from_secs(60)).await;
    assert_success(&out);
    assert_stderr_has(&out, "a census found 1 pending profiles");
    assert_eq!(json_summary(&out)["profiles_planned"], 1);
    let urls = |profile: &String| {
        format!("SELECT count(*) FROM profile_links WHERE \"profileId\" = '{profile}' AND url LIKE 'https://census-%'")
    };
    assert_eq!(
        db.texts(&format!(
            "SELECT url FROM profile_links WHERE \"profileId\" = '{again}' AND url LIKE 'https://census-%'"
        ))
        .await,
        ["https://census-again.example.net/"]
    );
    assert_eq!(db.count(&urls(later)).await, 0);

    let next = db.run(&["run", "--format", "json"]);
    assert_success(&next);
    assert_stderr_has(&next, "a census found 1 pending profiles");
    assert_eq!(json_summary(&next)["profiles_planned"], 1);
    assert_eq!(db.count(&urls(later)).await, 1);
    assert_success(&db.run(&["verify", "--strict"]));
}
