//! `relink verify` and `relink status` (SPEC §9): every check fails when its
//! invariant is broken by hand in the real database, and status tells the
//! truth before, during, after and after the death of a run.

use std::time::{Duration, Instant};

use crate::harness::{
    assert_code, assert_no_panic, assert_resumed, assert_stderr_has, assert_stdout_has,
    assert_success, json_summary, send_signal, stderr, stdout, verify_check, verify_line, TestDb,
};

const TOTAL: &str = "links total";
const WITH_LEGACY: &str = "profiles with legacy links";
const PENDING: &str = "profiles pending";
const DUPLICATES: &str = "duplicate (userId, comparison key) pairs";
const POSITIONS: &str = "users with duplicate positions";
const MISSING: &str = "ledger links missing from the table";
const UNACCOUNTED: &str = "legacy links unaccounted for";

/// A migrated row (one relink created, per the ledger) whose URL has a path
/// and no query or fragment, matching `extra` (SQL on `pl`): (id, userId,
/// profileId, url).
async fn migrated_row(db: &TestDb, extra: &str) -> (String, String, String, String) {
    let sql = format!(
        "SELECT pl.id, pl.\"userId\", pl.\"profileId\", pl.url FROM profile_links pl
          WHERE pl.id = ANY($1)
            AND pl.url !~ '[?#]' AND pl.url !~ '/$' AND {extra}
          ORDER BY pl.id LIMIT 1"
    );
    let ids: Vec<String> = crate::harness::ledger_ids(&db.client, None)
        .await
        .into_iter()
        .collect();
    let row = db
        .client
        .query_one(&sql, &[&ids])
        .await
        .unwrap_or_else(|e| panic!("no migrated row matching {extra}: {e}"));
    (row.get(0), row.get(1), row.get(2), row.get(3))
}

/// Inserts a user-created row for `user`/`profile` at the user's next position.
async fn insert_link(db: &TestDb, id: &str, user: &str, profile: &str, url: &str) {
    db.exec("INSERT INTO profile_links (id, \"userId\", \"profileId\", label, url, type, position, \"updatedAt\")
             SELECT $1, $2, $3, 'Added by hand', $4, 'other',
                    coalesce(max(position), -1) + 1, localtimestamp(3)
               FROM profile_links WHERE \"userId\" = $2", &[&id, &user, &profile, &url]).await;
}

/// A migrated database: `n` generated profiles and one clean run.
#[tokio::test]
async fn after_a_clean_run_verify_reports_nothing_wrong() {
    let db = TestDb::migrated("v_clean", 2000).await;

    let out = db.run(&["verify"]);
    assert_success(&out);
    let text = stdout(&out);
    assert_eq!(verify_line(&text, DUPLICATES), ("OK".to_owned(), 0));
    assert_eq!(verify_line(&text, POSITIONS), ("OK".to_owned(), 0));
    assert_eq!(verify_line(&text, UNACCOUNTED), ("OK".to_owned(), 0));
    assert_eq!(verify_line(&text, PENDING), ("INFO".to_owned(), 0));
    assert_eq!(verify_line(&text, MISSING), ("INFO".to_owned(), 0));
    assert!(text.contains("verify: OK"), "{text}");

    let (out, report) = db.verify_json(&[]);
    assert_success(&out);
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(verify_check(&report, DUPLICATES), ("ok".to_owned(), 0));
    assert_eq!(verify_check(&report, UNACCOUNTED), ("ok".to_owned(), 0));
    assert_eq!(verify_check(&report, POSITIONS), ("ok".to_owned(), 0));
    assert_eq!(verify_check(&report, PENDING), ("info".to_owned(), 0));
    // The informational figures are the database's.
    let links = db.count("SELECT count(*) FROM profile_links").await;
    let legacy = db
        .count("SELECT count(*) FROM profiles WHERE \"socialLinks\" IS NOT NULL")
        .await;
    assert!(links > 2000, "the run created links: {links}");
    assert_eq!(verify_check(&report, TOTAL).1, links.unsigned_abs());
    assert_eq!(verify_check(&report, WITH_LEGACY).1, legacy.unsigned_abs());

    let out = db.run(&["verify", "--strict"]);
    assert_success(&out);
    assert_stdout_has(&out, "verify: OK");
}

#[tokio::test]
async fn a_duplicate_differing_only_by_a_trailing_slash_or_tracking_fails_verify() {
    let db = TestDb::migrated("v_dup", 1500).await;
    let (_, user, profile, url) = migrated_row(&db, "pl.url LIKE 'https://%'").await;
    insert_link(&db, "dup-slash", &user, &profile, &format!("{url}/")).await;

    let out = db.run(&["verify"]);
    assert_code(&out, 3);
    let text = stdout(&out);
    assert_eq!(verify_line(&text, DUPLICATES), ("FAIL".to_owned(), 1));
    assert_eq!(verify_line(&text, POSITIONS), ("OK".to_owned(), 0));
    assert_eq!(verify_line(&text, UNACCOUNTED), ("OK".to_owned(), 0));
    assert!(text.contains("verify: FAILED"), "{text}");
    assert!(text.contains(&format!("e.g. user {user}")), "{text}");

    let (out, report) = db.verify_json(&[]);
    assert_code(&out, 3);
    assert_eq!(report["ok"], false);
    assert_eq!(verify_check(&report, DUPLICATES), ("fail".to_owned(), 1));

    // Another user: the http form with a tracking parameter is the same link.
    let (_, other, other_profile, other_url) = migrated_row(
        &db,
        &format!("pl.url LIKE 'https://%' AND pl.\"userId\" <> '{user}'"),
    )
    .await;
    let variant = format!(
        "{}?utm_source=newsletter",
        other_url.replacen("https://", "http://", 1)
    );
    insert_link(&db, "dup-utm", &other, &other_profile, &variant).await;
    let (out, report) = db.verify_json(&[]);
    assert_code(&out, 3);
    assert_eq!(verify_check(&report, DUPLICATES), ("fail".to_owned(), 2));

    // Removing both brings verify back to clean.
    db.batch("DELETE FROM profile_links WHERE id LIKE 'dup-%'")
        .await;
    assert_success(&db.run(&["verify"]));
}

#[tokio::test]
async fn a_changed_legacy_value_is_pending_until_the_next_run() {
    let db = TestDb::migrated("v_pending", 1500).await;
    let array = db
        .change_migrated_legacy("array", r#"["https://new.example.com/x"]"#)
        .await;

    let out = db.run(&["verify", "--strict"]);
    assert_code(&out, 3);
    assert_eq!(verify_line(&stdout(&out), PENDING), ("FAIL".to_owned(), 1));
    let out = db.run(&["verify"]);
    assert_success(&out);
    assert_eq!(verify_line(&stdout(&out), PENDING), ("INFO".to_owned(), 1));
    // Pending is not "unaccounted": the changed profile is not settled.
    assert_eq!(
        verify_line(&stdout(&out), UNACCOUNTED),
        ("OK".to_owned(), 0)
    );

    let object = db
        .change_migrated_legacy("object", r#"{"newblog": "https://new.example.com/y"}"#)
        .await;
    let (out, report) = db.verify_json(&["--strict"]);
    assert_code(&out, 3);
    assert_eq!(verify_check(&report, PENDING), ("fail".to_owned(), 2));
    assert_eq!(report["strict"], true);
    let (out, report) = db.verify_json(&[]);
    assert_success(&out);
    assert_eq!(verify_check(&report, PENDING), ("info".to_owned(), 2));

    // The next run migrates exactly the two new links; then all is settled.
    let out = db.run(&["run", "--format", "json"]);
    assert_success(&out);
    assert_eq!(json_summary(&out)["links_created"], 2, "{}", stdout(&out));
    for (profile, url) in [
        (&array, "https://new.example.com/x"),
        (&object, "https://new.example.com/y"),
    ] {
        let n: i64 = db
            .client
            .query_one(
                "SELECT count(*) FROM profile_links WHERE \"profileId\" = $1 AND url = $2",
                &[profile, &url],
            )
            .await
            .expect("count")
            .get(0);
        assert_eq!(n, 1, "{profile} {url}");
    }
    assert_success(&db.run(&["verify", "--strict"]));
}

#[tokio::test]
async fn two_rows_of_a_user_at_one_position_fail_verify() {
    let db = TestDb::migrated("v_positions", 1500).await;
    let row = db
        .client
        .query_one(
            "SELECT \"userId\", min(position), max(position) FROM profile_links
              GROUP BY \"userId\" HAVING count(*) >= 2 ORDER BY 1 LIMIT 1",
            &[],
        )
        .await
        .expect("a user with two links");
    let (user, low, high): (String, i32, i32) = (row.get(0), row.get(1), row.get(2));
    db.exec(
        "UPDATE profile_links SET position = $2 WHERE \"userId\" = $1 AND position = $3",
        &[&user, &low, &high],
    )
    .await;

    let out = db.run(&["verify"]);
    assert_code(&out, 3);
    let text = stdout(&out);
    assert_eq!(verify_line(&text, POSITIONS), ("FAIL".to_owned(), 1));
    assert_eq!(verify_line(&text, DUPLICATES), ("OK".to_owned(), 0));
    assert!(
        text.contains(&format!("user {user} position {low}")),
        "{text}"
    );
    let (out, report) = db.verify_json(&[]);
    assert_code(&out, 3);
    assert_eq!(verify_check(&report, POSITIONS), ("fail".to_owned(), 1));
}

#[tokio::test]
async fn a_link_deleted_by_a_user_is_informational_but_a_lost_link_fails() {
    let db = TestDb::migrated("v_lost", 1500).await;

    // A user deleted a migrated row: the ledger remembers it, nothing is lost.
    let (gone, _, kept_profile, _) = migrated_row(&db, "true").await;
    db.exec("DELETE FROM profile_links WHERE id = $1", &[&gone])
        .await;
    let out = db.run(&["verify"]);
    assert_success(&out);
    let text = stdout(&out);
    assert_eq!(verify_line(&text, MISSING), ("INFO".to_owned(), 1));
    assert_eq!(verify_line(&text, UNACCOUNTED), ("OK".to_owned(), 0));
    let (out, report) = db.verify_json(&[]);
    assert_success(&out);
    assert_eq!(verify_check(&report, MISSING), ("info".to_owned(), 1));

    // A row gone AND forgotten by the ledger: the legacy link is unaccounted.
    let profile = db.lose_one_link(&kept_profile).await;
    let out = db.run(&["verify"]);
    assert_code(&out, 3);
    let text = stdout(&out);
    assert_eq!(verify_line(&text, UNACCOUNTED), ("FAIL".to_owned(), 1));
    assert_eq!(verify_line(&text, MISSING), ("INFO".to_owned(), 1));
    assert!(text.contains(&format!("e.g. profile {profile}")), "{text}");
    let (out, report) = db.verify_json(&[]);
    assert_code(&out, 3);
    assert_eq!(verify_check(&report, UNACCOUNTED), ("fail".to_owned(), 1));
    assert_eq!(report["ok"], false);
}

#[tokio::test]
async fn a_user_deleting_their_own_row_that_a_legacy_link_duplicated_loses_nothing() {
    let db = TestDb::new("v_own_row").await;
    db.generate(300);
    // A user whose legacy website is also a row they created through the
    // new API before the migration.
    db.batch("INSERT INTO users (id) VALUES ('own-u');
             INSERT INTO profiles (id, \"userId\", \"socialLinks\") VALUES ('own-p', 'own-u',
               '{\"website\": \"https://own-site.example.com/\", \"imdb\": \"https://www.imdb.com/name/nm0000001/\"}');
             INSERT INTO profile_links VALUES ('ul-own', 'own-u', 'own-p', 'My site',
               'https://own-site.example.com/', 'website', 0, '2024-01-01', '2024-01-01');").await;
    assert_success(&db.run(&["run"]));
    assert_eq!(
        db.count("SELECT count(*) FROM profile_links WHERE \"userId\" = 'own-u'")
            .await,
        2,
        "the website was deduplicated against the user's row"
    );
    assert_success(&db.run(&["verify", "--strict"]));

    // The user deletes their own row; relink lost nothing.
    db.batch("DELETE FROM profile_links WHERE id = 'ul-own'")
        .await;
    let out = db.run(&["verify"]);
    assert_success(&out);
    assert_eq!(
        verify_line(&stdout(&out), UNACCOUNTED),
        ("OK".to_owned(), 0)
    );
}

#[tokio::test]
async fn verify_before_any_run_shows_everything_pending() {
    let db = TestDb::new("v_fresh").await;
    db.generate(1000);
    let legacy = db
        .count("SELECT count(*) FROM profiles WHERE \"socialLinks\" IS NOT NULL")
        .await
        .unsigned_abs();
    assert!(legacy > 500, "{legacy}");

    let out = db.run(&["verify"]);
    assert_success(&out);
    let text = stdout(&out);
    assert_eq!(verify_line(&text, PENDING), ("INFO".to_owned(), legacy));
    assert_eq!(verify_line(&text, WITH_LEGACY), ("INFO".to_owned(), legacy));
    assert_eq!(verify_line(&text, DUPLICATES), ("OK".to_owned(), 0));

    let out = db.run(&["verify", "--strict"]);
    assert_code(&out, 3);
    assert_eq!(
        verify_line(&stdout(&out), PENDING),
        ("FAIL".to_owned(), legacy)
    );
    let (out, report) = db.verify_json(&["--strict"]);
    assert_code(&out, 3);
    assert_eq!(verify_check(&report, PENDING), ("fail".to_owned(), legacy));

    // Verify is read-only: it created no state schema.
    assert_eq!(
        db.count("SELECT count(*) FROM pg_namespace WHERE nspname = 'relink'")
            .await,
        0
    );
}

// The next tests give relink a state schema of their own, so --state-schema
// is covered end to end (run, status, verify, resume, and the lock, whose key
// derives from that name); the default name across databases is covered by
// `status_and_the_lock_only_see_their_own_database`.

#[tokio::test]
async fn status_before_and_after_a_run() {
    let db = TestDb::new("v_status").await;
    db.generate(1000);
    let state = ["--state-schema", "relink_v_status"];
    let with = |args: &[&'static str]| [&state[..], args].concat();

    let out = db.run(&with(&["status"]));
    assert_success(&out);
    assert_stdout_has(&out, "No runs yet");
    assert_stdout_has(&out, "Lock: free");
    let status = db.status_json(&state);
    assert_eq!(status["runs"], serde_json::json!([]), "{status}");
    assert!(status["ledger"].is_null(), "{status}");
    assert!(status["lock_holder"].is_null(), "{status}");

    let out = db.run(&with(&["run", "--format", "json"]));
    assert_success(&out);
    let summary = json_summary(&out);
    let links = summary["links_created"].as_u64().expect("links_created");
    assert!(links > 500, "{summary}");

    let out = db.run(&with(&["status"]));
    assert_success(&out);
    let text = stdout(&out);
    assert!(!text.contains("No runs yet"), "{text}");
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("1 ") && l.contains("completed"))
        .unwrap_or_else(|| panic!("no line for run 1 completed:\n{text}"));
    assert!(line.contains(&format!("links {links} ")), "{line}");
    assert!(text.contains("Lock: free"), "{text}");

    let status = db.status_json(&state);
    let run = &status["runs"][0];
    assert_eq!(run["id"], 1, "{status}");
    assert_eq!(run["mode"], "run");
    assert_eq!(run["status"], "completed");
    assert_eq!(run["counters"]["links_created"], links);
    assert!(status["unfinished"].is_null(), "{status}");
    assert!(status["lock_holder"].is_null(), "{status}");
    assert_eq!(status["ledger"]["links"], links);
    let rejects: i64 = status["rejects"]
        .as_object()
        .expect("rejects")
        .values()
        .filter_map(serde_json::Value::as_i64)
        .sum();
    let summary_rejects: u64 = summary["rejects"]
        .as_object()
        .expect("rejects")
        .values()
        .filter_map(serde_json::Value::as_u64)
        .sum();
    assert_eq!(rejects.unsigned_abs(), summary_rejects);
}

/// Polls `relink status --format json` until `ready` holds, or fails.
fn status_until(
    db: &TestDb,
    global: &[&str],
    timeout: Duration,
    what: &str,
    ready: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let status = db.status_json(global);
        if ready(&status) {
            return status;
        }
        assert!(
            started.elapsed() < timeout,
            "status never showed {what} within {timeout:?}; last: {status}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether `status` says the lock is held by the relink process `pid`.
fn held_by(status: &serde_json::Value, pid: u32) -> bool {
    status["lock_holder"]
        .as_str()
        .is_some_and(|h| h.contains(&format!("pid={pid} ")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_follows_a_run_that_is_killed_and_resumed() {
    let (db, clean) = TestDb::with_clean_run("v_kill", 3000).await;
    let state = ["--state-schema", "relink_v_kill"];
    let with = |args: &[&'static str]| [&state[..], args].concat();

    let mut child = db.spawn(&with(&["run", "--chunk-size", "100", "--pause", "300ms"]));
    let pid = child.pid;
    let status = status_until(&db, &state, Duration::from_secs(15), "a running run", |s| {
        s["runs"][0]["status"] == "running"
            && s["runs"][0]["checkpoint"].is_string()
            && held_by(s, pid)
    });
    assert!(!child.finished(), "the run ended too soon: {status}");
    assert_eq!(status["runs"][0]["id"], 1);
    assert_eq!(status["unfinished"]["run_id"], 1, "{status}");
    assert_eq!(status["unfinished"]["status"], "running");
    assert!(status["unfinished"]["checkpoint"].is_string(), "{status}");
    let legacy = db
        .count("SELECT count(*) FROM profiles WHERE \"socialLinks\" IS NOT NULL")
        .await;
    assert_eq!(status["unfinished"]["total"], legacy, "{status}");
    assert!(
        status["unfinished"]["profiles_done"].as_u64() > Some(0),
        "{status}"
    );

    send_signal(pid, "KILL");
    let out = child.wait(Duration::from_secs(10)).await;
    assert_eq!(out.status.code(), None, "killed by SIGKILL");

    // The server notices the dead session and frees the lock; status then
    // calls the run interrupted and shows its checkpoint.
    let status = status_until(
        &db,
        &state,
        Duration::from_secs(10),
        "the lock freed",
        |s| s["lock_holder"].is_null(),
    );
    assert_eq!(status["runs"][0]["status"], "interrupted", "{status}");
    assert_eq!(status["unfinished"]["run_id"], 1, "{status}");
    assert_eq!(status["unfinished"]["status"], "interrupted");
    let checkpoint = status["unfinished"]["checkpoint"]
        .as_str()
        .unwrap_or_else(|| panic!("no checkpoint: {status}"))
        .to_owned();
    // Everything up to the checkpoint is committed.
    let behind: i64 = db
        .client
        .query_one(
            "SELECT count(*) FROM profiles p WHERE p.\"socialLinks\" IS NOT NULL AND p.\"userId\" <= $1
                AND NOT EXISTS (SELECT 1 FROM relink_v_kill.ledger l WHERE l.profile_id = p.id)",
            &[&checkpoint],
        )
        .await
        .expect("ledger")
        .get(0);
    assert_eq!(
        behind, 0,
        "profiles behind the checkpoint without a ledger row"
    );
    let position = db
        .client
        .query_one(
            "SELECT count(*) FROM profiles WHERE \"socialLinks\" IS NOT NULL AND \"userId\" <= $1",
            &[&checkpoint],
        )
        .await
        .expect("position")
        .get::<_, i64>(0);
    assert_eq!(status["unfinished"]["position"], position, "{status}");
    assert!(position < legacy, "killed midway: {status}");
    let out = db.run(&with(&["status"]));
    assert_success(&out);
    assert_stdout_has(&out, &format!("checkpoint after user {checkpoint}"));

    let out = db.run(&with(&["run"]));
    assert_resumed(&out, 1);
    assert_eq!(db.status_json(&state)["runs"][0]["status"], "completed");
    assert_success(&db.run(&with(&["verify", "--strict"])));
    assert_eq!(db.links_checksum().await, clean.links_checksum().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_exits_4_at_once_naming_the_holder() {
    let db = TestDb::new("v_lock").await;
    db.generate(1000);
    let state = ["--state-schema", "relink_v_lock"];
    let with = |args: &[&'static str]| [&state[..], args].concat();
    let first = db.spawn(&with(&["run", "--chunk-size", "50", "--pause", "500ms"]));
    let pid = first.pid;
    status_until(
        &db,
        &state,
        Duration::from_secs(15),
        "the run holding the lock",
        |s| s["runs"][0]["status"] == "running" && held_by(s, pid),
    );

    let started = Instant::now();
    let out = db.run(&with(&["run"]));
    let elapsed = started.elapsed();
    assert_code(&out, 4);
    assert!(
        elapsed < Duration::from_secs(1),
        "took {elapsed:?} to give up"
    );
    let err = stderr(&out);
    assert!(err.contains("pid"), "{err}");
    assert!(err.contains(&format!("pid={pid} ")), "{err}");
    assert_no_panic(&out);
    // A purge is kept out too.
    assert_code(&db.run(&with(&["purge", "--yes"])), 4);

    send_signal(pid, "TERM");
    let out = first.wait(Duration::from_secs(20)).await;
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_during_a_run_sees_no_violation() {
    let db = TestDb::new("v_during").await;
    db.generate(3000);
    let mut child = db.spawn(&["run", "--chunk-size", "100", "--pause", "100ms"]);
    let mut rounds = 0;
    let mut pending_seen = Vec::new();
    while !child.finished() {
        let (out, report) = db.verify_json(&[]);
        assert_success(&out);
        for check in [DUPLICATES, POSITIONS, UNACCOUNTED] {
            assert_eq!(
                verify_check(&report, check),
                ("ok".to_owned(), 0),
                "{report}"
            );
        }
        pending_seen.push(verify_check(&report, PENDING).1);
        rounds += 1;
    }
    assert_success(&child.wait(Duration::from_secs(5)).await);
    assert!(
        rounds >= 2,
        "verify ran only {rounds} time(s) during the run"
    );
    // It saw the run progress.
    assert!(
        pending_seen.windows(2).all(|w| w[1] <= w[0]),
        "pending went up: {pending_seen:?}"
    );
    assert_success(&db.run(&["verify", "--strict"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_the_lock_only_see_their_own_database() {
    let other = TestDb::new("v_other_db").await;
    other.generate(1000);
    let db = TestDb::new("v_own_db").await;
    db.generate(1000);
    let slow = ["run", "--chunk-size", "50", "--pause", "500ms"];

    // A run in another database, same (default) state schema name.
    let elsewhere = other.spawn(&slow);
    let pid = elsewhere.pid;
    status_until(&other, &[], Duration::from_secs(15), "the other run", |s| {
        s["runs"][0]["status"] == "running" && held_by(s, pid)
    });

    // Nobody holds this database's lock.
    let status = db.status_json(&[]);
    assert!(status["lock_holder"].is_null(), "{status}");
    let out = db.run(&["status"]);
    assert_stdout_has(&out, "Lock: free");

    // With a run here too, status names this database's holder, and a
    // second run here exits 4 naming it.
    let here = db.spawn(&slow);
    let mine = here.pid;
    status_until(
        &db,
        &[],
        Duration::from_secs(15),
        "this database's run",
        |s| s["runs"][0]["status"] == "running" && held_by(s, mine),
    );
    let out = db.run(&["run"]);
    assert_code(&out, 4);
    assert_stderr_has(&out, &format!("pid={mine} "));

    send_signal(pid, "TERM");
    send_signal(mine, "TERM");
    assert_eq!(
        elsewhere.wait(Duration::from_secs(20)).await.status.code(),
        Some(130)
    );
    assert_eq!(
        here.wait(Duration::from_secs(20)).await.status.code(),
        Some(130)
    );
}
