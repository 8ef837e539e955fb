//! `relink repair` (SPEC §9) against the real server and binary: what an
//! application that does not lock can leave (made here on purpose, the
//! way its races make it: `online.rs` makes them by racing), each rule,
//! `--dry-run`, the refusal without `--yes` off a terminal, exit 3 for
//! what is the application's to mend, resuming, and purge afterwards.

use std::time::Duration;

use crate::harness::{
    assert_code, assert_no_panic, assert_stderr_has, assert_stdout_has, assert_success,
    json_summary, send_signal, stderr, stdout, verify_check, TestDb,
};

/// The application's rows of these tests (and the generated ones users
/// made through the new API): every column, timestamps too.
const APPLICATION_ROWS: &str =
    "(SELECT * FROM profile_links WHERE id LIKE 'app-%' OR id LIKE 'ul%' OR \"updatedAt\" > now())";

/// Users with at least two rows relink created and no row of their own,
/// after a run: (user id, profile id).
async fn migrated_users(db: &TestDb, n: i64) -> Vec<(String, String)> {
    db.client
        .query(
            "SELECT \"userId\", min(\"profileId\") FROM profile_links
              GROUP BY \"userId\"
             HAVING count(*) >= 2 AND bool_and(id NOT LIKE 'ul%')
              ORDER BY 1 LIMIT $1",
            &[&n],
        )
        .await
        .expect("migrated users")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Adds an application row for `user`.
async fn app_row(db: &TestDb, id: &str, user: &(String, String), url: &str, position: i32) {
    db.exec("INSERT INTO profile_links (id, \"userId\", \"profileId\", label, url, type, position, \"updatedAt\")
             VALUES ($1, $2, $3, 'Added by the app', $4, 'website', $5, '2030-01-01')", &[&id, &user.0, &user.1, &url, &position]).await;
}

/// (id, url, position) of a user's rows, by position and id.
async fn rows_of(db: &TestDb, user: &str) -> Vec<(String, String, i32)> {
    db.client
        .query(
            "SELECT id, url, position FROM profile_links WHERE \"userId\" = $1 ORDER BY position, id",
            &[&user],
        )
        .await
        .expect("rows")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// A migrated database where an application that does not lock left: a
/// link twice (user 0: its row and relink's), relink's rows at its row's
/// position (user 1), and two things only it can mend: its own two rows of
/// one link (user 2), its row at the position of a relink row the user
/// edited (user 3). Returns the users and relink's duplicate row.
async fn raced(tag: &str) -> (TestDb, Vec<(String, String)>, String) {
    let db = TestDb::migrated(tag, 300).await;
    let users = migrated_users(&db, 4).await;
    assert_eq!(users.len(), 4);
    let first = |user: usize| {
        let user = users[user].0.clone();
        let db = &db;
        async move { rows_of(db, &user).await.remove(0) }
    };
    // User 0: the application added relink's first link, spelled its way,
    // after relink's rows.
    let (duplicate, url, _) = first(0).await;
    let spelled = url.trim_start_matches("https://").to_owned();
    app_row(&db, "app-dup", &users[0], &spelled, 100).await;
    // User 1: the application read max(position) before relink's chunk
    // committed, and added at relink's first position.
    let (_, _, position) = first(1).await;
    app_row(
        &db,
        "app-pos",
        &users[1],
        "https://app-pos.example.org/",
        position,
    )
    .await;
    // User 2: the application's own rows, one link twice.
    app_row(
        &db,
        "app-own1",
        &users[2],
        "https://twice.example.org/",
        101,
    )
    .await;
    app_row(&db, "app-own2", &users[2], "https://twice.example.org", 102).await;
    // User 3: the user edited relink's first row; the application added at
    // its position.
    let (edited, _, position) = first(3).await;
    db.exec(
        "UPDATE profile_links SET label = 'Edited', \"updatedAt\" = '2031-01-01' WHERE id = $1",
        &[&edited],
    )
    .await;
    app_row(
        &db,
        "app-at-edited",
        &users[3],
        "https://app-3.example.org/",
        position,
    )
    .await;
    (db, users, duplicate)
}

#[tokio::test]
async fn repair_mends_relinks_rows_lists_the_applications_and_exits_3() {
    let (db, users, duplicate) = raced("r_rules").await;
    let (_, report) = db.verify_json(&[]);
    assert_eq!(
        verify_check(&report, "duplicate (userId, comparison key) pairs").1,
        2
    );
    assert_eq!(verify_check(&report, "users with duplicate positions").1, 2);
    let before = db.checksum_all().await;
    let theirs = db.checksum(APPLICATION_ROWS).await;
    let relink_before = rows_of(&db, &users[1].0).await;

    // Without --yes and without a terminal: refused, nothing changed.
    let out = db.run(&["repair"]);
    assert_code(&out, 1);
    assert_stderr_has(&out, "refusing to repair without confirmation");
    assert_eq!(db.checksum_all().await, before);

    // The dry run lists, changes nothing, and says what is left (exit 3).
    let out = db.run(&["repair", "--dry-run"]);
    assert_code(&out, 3);
    assert_no_panic(&out);
    let listed = stdout(&out);
    assert_eq!(
        db.checksum_all().await,
        before,
        "the dry run changed something"
    );
    assert!(
        listed.contains("[DRY RUN] Would delete relink's row"),
        "{listed}"
    );
    assert!(listed.contains("(a duplicate of row app-dup)"), "{listed}");
    assert!(
        listed.contains("[DRY RUN] Would move relink's row"),
        "{listed}"
    );
    assert!(
        listed.contains(&format!(
            "! user {}: rows app-own1, app-own2 hold one link",
            users[2].0
        )),
        "{listed}"
    );
    assert!(
        listed.contains(&format!("! user {}: rows ", users[3].0))
            && listed.contains("share position"),
        "{listed}"
    );
    assert!(
        listed.contains("This was a DRY RUN. No changes were made."),
        "{listed}"
    );

    // The repair itself.
    let out = db.run(&["repair", "--yes"]);
    assert_code(&out, 3);
    let done = stdout(&out);
    assert!(done.contains("Deleted relink's row"), "{done}");
    assert!(done.contains("Moved relink's row"), "{done}");
    assert_eq!(
        db.checksum(APPLICATION_ROWS).await,
        theirs,
        "repair touched the application's rows"
    );
    // User 0: relink's duplicate went, the application's row stayed.
    let ids: Vec<String> = rows_of(&db, &users[0].0)
        .await
        .into_iter()
        .map(|(id, _, _)| id)
        .collect();
    assert!(
        ids.contains(&"app-dup".to_owned()) && !ids.contains(&duplicate),
        "{ids:?}"
    );
    // User 1: relink's rows after the application's, in their order,
    // contiguous.
    let rows = rows_of(&db, &users[1].0).await;
    let theirs_last = rows
        .iter()
        .filter(|(id, _, _)| id.starts_with("app-"))
        .map(|(_, _, p)| *p)
        .max()
        .expect("the application's row");
    let relinks: Vec<(String, i32)> = rows
        .iter()
        .filter(|(id, _, _)| !id.starts_with("app-"))
        .map(|(id, _, p)| (id.clone(), *p))
        .collect();
    let expected: Vec<(String, i32)> = relink_before
        .iter()
        .filter(|(id, _, _)| !id.starts_with("app-"))
        .zip(theirs_last + 1..)
        .map(|((id, _, _), p)| (id.clone(), p))
        .collect();
    assert_eq!(relinks, expected);
    // What is left is the application's: verify says so.
    let (out, report) = db.verify_json(&[]);
    assert_code(&out, 3);
    assert_eq!(
        verify_check(&report, "duplicate (userId, comparison key) pairs").1,
        1
    );
    assert_eq!(verify_check(&report, "users with duplicate positions").1, 1);

    // The application mends its own; then everything passes, a second
    // repair has nothing to do, and no run creates relink's deleted row.
    db.batch(
        "DELETE FROM profile_links WHERE id = 'app-own2';
             UPDATE profile_links SET position = 1000 WHERE id = 'app-at-edited';",
    )
    .await;
    assert_success(&db.run(&["verify", "--strict"]));
    let out = db.run(&["repair", "--yes", "--format", "json"]);
    assert_success(&out);
    let again = json_summary(&out);
    assert_eq!(
        (
            again["duplicates_deleted"].as_u64(),
            again["rows_moved"].as_u64()
        ),
        (Some(0), Some(0)),
        "{again}"
    );
    let out = db.run(&["run", "--format", "json"]);
    assert_success(&out);
    assert_eq!(json_summary(&out)["links_created"], 0);

    // Moved rows are still relink's unedited rows: purge removes them; the
    // row the user edited stays.
    let out = db.run(&["purge", "--yes", "--format", "json"]);
    assert_success(&out);
    assert_eq!(json_summary(&out)["kept_edited"], 1);
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM profile_links WHERE \"userId\" = '{}' AND id NOT LIKE 'app-%'",
            users[1].0
        ))
        .await,
        0
    );
    let status = db.status_json(&[]);
    assert!(
        status.to_string().contains("\"mode\":\"repair\""),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_repair_resumes_after_its_checkpoint() {
    let (mut db, _, _) = raced("r_resume").await;
    let unbroken = TestDb::clone_of(&mut db, "r_resume_clean").await;
    assert_code(&unbroken.run(&["repair", "--yes"]), 3);

    // Held after its first chunk (its checkpoint is saved), then stopped.
    let hold = "SELECT EXISTS (SELECT 1 FROM relink.runs WHERE mode = 'repair' AND checkpoint IS NOT NULL)";
    let child = db.spawn(&[
        "repair",
        "--yes",
        "--chunk-size",
        "20",
        "--throttle-query",
        hold,
    ]);
    db.wait_for_count(
        "SELECT count(*) FROM relink.runs WHERE mode = 'repair' AND waiting IS NOT NULL",
        Duration::from_secs(30),
        "the repair never waited after its first chunk",
    )
    .await;
    send_signal(child.pid, "TERM");
    let out = child.wait(Duration::from_secs(30)).await;
    assert_code(&out, 130);
    assert_stdout_has(&out, "(interrupted)");

    // The rest: 3 if what is the application's to mend lies after the
    // checkpoint, else 0.
    let out = db.run(&["repair", "--yes", "--chunk-size", "20"]);
    assert!(matches!(out.status.code(), Some(0 | 3)), "{}", stderr(&out));
    assert_stderr_has(&out, "resuming repair");
    assert_eq!(db.links_checksum().await, unbroken.links_checksum().await);
}
