//! State schema upgrades (SPEC §1 "versioned so later releases can upgrade
//! it"): a ledger written by the previous release (state schema version 1,
//! `fixtures/state_v1.sql`, made by `fixtures/tools/state_v1.sh` with that
//! release's binary) is upgraded by the next live run and keeps working;
//! unfinished runs of versions 3 (`fixtures/state_v3.sql`, paging by
//! profile id), 5 (`fixtures/state_v5.sql`, the ledger's primary key) and
//! 6 (`fixtures/state_v6.sql`, ids as text and keys as arrays) are upgraded
//! and finished.

use std::collections::BTreeSet;
use std::process::Output;

use crate::harness::{assert_stderr_has, assert_success, json_summary, ledger_ids, stderr, TestDb};

const STATE_V1: &str = include_str!("../../fixtures/state_v1.sql");

async fn ids(db: &TestDb, sql: &str) -> BTreeSet<String> {
    db.texts(sql).await.into_iter().collect()
}

async fn schema_version(db: &TestDb) -> String {
    db.text("SELECT value FROM relink.meta WHERE key = 'schema_version'")
        .await
}

async fn relink_rows(db: &TestDb) -> BTreeSet<String> {
    ids(db, "SELECT id FROM profile_links WHERE id NOT LIKE 'ul%'").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_of_the_previous_release_is_upgraded_and_keeps_working() {
    let db = TestDb::new("u_v1").await;
    // The same generated data the fixture was made over, then what the
    // previous release left: its rows and its state schema.
    db.generate(200);
    db.batch(STATE_V1).await;
    assert_eq!(schema_version(&db).await, "1");
    // What the previous release recorded, in its own words.
    let v1_all = ids(&db, "SELECT unnest(link_ids) FROM relink.ledger").await;
    let v1_run2 = ids(
        &db,
        "SELECT unnest(link_ids) FROM relink.ledger WHERE run_id = 2",
    )
    .await;
    assert!(
        v1_all.len() > 300 && !v1_run2.is_empty(),
        "{} / {}",
        v1_all.len(),
        v1_run2.len()
    );
    let v1_rows = db.count("SELECT count(*) FROM relink.ledger").await;
    let table = db.links_checksum().await;
    let present = relink_rows(&db).await;

    // The next live run upgrades, finds nothing pending, writes nothing.
    let out = db.run(&["run", "--format", "json"]);
    assert_success(&out);
    assert_stderr_has(
        &out,
        &format!(
            "upgraded relink's state schema \"relink\" from version 1 to version {}",
            relink::state::SCHEMA_VERSION
        ),
    );
    let summary = json_summary(&out);
    assert_eq!(summary["profiles_planned"], 0, "{summary}");
    assert_eq!(summary["links_created"], 0, "{summary}");
    assert_eq!(db.links_checksum().await, table);
    assert_eq!(
        schema_version(&db).await,
        relink::state::SCHEMA_VERSION.to_string()
    );
    // Every link the old ledger recorded is still known, in fewer rows (the
    // second run's replans of unchanged profiles are gone).
    assert_eq!(ledger_ids(&db.client, None).await, v1_all);
    assert_eq!(ledger_ids(&db.client, Some(2)).await, v1_run2);
    assert!(db.count("SELECT count(*) FROM relink.ledger").await <= v1_rows);
    let again = db.run(&["run", "--format", "json"]);
    assert_success(&again);
    assert_eq!(json_summary(&again)["profiles_planned"], 0);

    // Purge of run 2 removes exactly what run 2 created.
    assert_success(&db.run(&["purge", "--yes", "--run", "2"]));
    let after = relink_rows(&db).await;
    let removed: BTreeSet<String> = present.difference(&after).cloned().collect();
    let expected: BTreeSet<String> = v1_run2.intersection(&present).cloned().collect();
    assert_eq!(removed, expected);

    // Purge of everything: only the row the user edited stays (the one the
    // user deleted was already gone).
    let out = db.run(&["purge", "--yes", "--format", "json"]);
    assert_success(&out);
    let summary = json_summary(&out);
    assert_eq!(summary["kept_edited"], 1, "{summary}");
    assert_eq!(summary["already_gone"], 1, "{summary}");
    let left = relink_rows(&db).await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(
        db.count("SELECT count(*) FROM profile_links WHERE label = 'Edited by user'")
            .await,
        1
    );
    // And the profiles migrate again.
    assert_success(&db.run(&["run"]));
    assert_success(&db.run(&["verify"]));
}

const STATE_V3: &str = include_str!("../../fixtures/state_v3.sql");

/// The generated data `fixtures/tools/state_v3.sh` ran over: random UUID
/// ids, so the release before the user order gave its links plain v5 ids
/// and this one gives them v8 ids.
fn generate_v3_data(db: &TestDb) {
    assert_success(&db.run(&[
        "generate",
        "--profiles",
        "300",
        "--seed",
        "0.42",
        "--mix",
        "entries",
        "--ids",
        "uuid",
    ]));
}

/// A database with `generate_v3_data`'s data and a fixture of relink's
/// state at schema `version` loaded over it.
async fn fixture_db(name: &str, fixture: &str, version: &str) -> TestDb {
    let db = TestDb::new(name).await;
    generate_v3_data(&db);
    db.batch(fixture).await;
    assert_eq!(schema_version(&db).await, version);
    db
}

/// A database with `generate_v3_data`'s data that this release migrated in
/// one clean run.
async fn clean_run_db(name: &str) -> TestDb {
    let clean = TestDb::new(name).await;
    generate_v3_data(&clean);
    assert_success(&clean.run(&["run"]));
    clean
}

/// Every row relink created, without its id or times.
async fn migrated_content(db: &TestDb) -> BTreeSet<(String, String, i32, String, String)> {
    db.client
        .query(
            "SELECT \"profileId\", url, position, label, type FROM profile_links
              WHERE \"createdAt\" > '2025-01-01'",
            &[],
        )
        .await
        .expect("rows")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect()
}

/// The next `relink run` on `db`, whose state schema is at `version` with
/// run 1 unfinished: it must say it upgraded the schema, resume run 1
/// after its checkpoint (a key of `noun`: "user", "profile") and complete
/// it. Returns its output and that checkpoint.
async fn upgrade_and_resume(db: &TestDb, version: i64, noun: &str) -> (Output, String) {
    let checkpoint = db
        .text("SELECT checkpoint FROM relink.runs WHERE id = 1")
        .await;
    let out = db.run(&["run", "--format", "json"]);
    assert_success(&out);
    let log = stderr(&out);
    assert!(
        log.contains(&format!(
            "upgraded relink's state schema \"relink\" from version {version} to version {}",
            relink::state::SCHEMA_VERSION
        )) && log.contains(&format!("resuming run 1 after {noun} {checkpoint}")),
        "{log}"
    );
    let summary = json_summary(&out);
    assert_eq!(
        (&summary["run_id"], &summary["status"]),
        (&1.into(), &"completed".into()),
        "{summary}"
    );
    (out, checkpoint)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfinished_run_in_profile_id_order_is_upgraded_and_finished_in_that_order() {
    let db = fixture_db("u_v3", STATE_V3, "3").await;
    let old_ids = ids(
        &db,
        "SELECT id FROM profile_links WHERE \"createdAt\" > '2025-01-01'",
    )
    .await;
    assert!(old_ids.len() > 100, "{}", old_ids.len());
    assert!(old_ids.iter().all(|id| &id[14..15] == "5"), "{old_ids:?}");
    // The next run upgrades the state schema and finishes run 1 after its
    // checkpoint, a profile id, in profile id order.
    let (out, checkpoint) = upgrade_and_resume(&db, 3, "profile").await;
    assert!(
        stderr(&out).contains("profile id order"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        schema_version(&db).await,
        relink::state::SCHEMA_VERSION.to_string()
    );
    // The profiles it planned were exactly those after the checkpoint.
    let after = db
        .count(&format!(
            "SELECT count(*) FROM profiles WHERE \"socialLinks\" IS NOT NULL AND id > '{checkpoint}'"
        ))
        .await;
    let summary = json_summary(&out);
    assert_eq!(summary["profiles_scanned"], after, "{summary}");

    // The old rows kept their v5 ids; the new ones have the v8 ids of their
    // users; together they are what a clean run of this release writes.
    let all = ids(
        &db,
        "SELECT id FROM profile_links WHERE \"createdAt\" > '2025-01-01'",
    )
    .await;
    assert!(old_ids.is_subset(&all));
    let new_rows = db
        .client
        .query(
            "SELECT id, \"userId\" FROM profile_links WHERE \"createdAt\" > '2025-01-01'",
            &[],
        )
        .await
        .expect("rows");
    let mut v8 = 0;
    for row in &new_rows {
        let (id, user): (String, String) = (row.get(0), row.get(1));
        if !old_ids.contains(&id) {
            assert_eq!((&id[..8], &id[14..15]), (&user[..8], "8"), "{id} of {user}");
            v8 += 1;
        }
    }
    assert!(v8 > 100, "{v8}");
    let clean = clean_run_db("u_v3_clean").await;
    assert_eq!(migrated_content(&db).await, migrated_content(&clean).await);
    assert_success(&db.run(&["verify"]));

    // A rerun writes nothing; a purge removes every row relink created, old
    // ids and new alike, and empties the ledger.
    let again = db.run(&["run", "--format", "json"]);
    assert_success(&again);
    assert_eq!(json_summary(&again)["links_created"], 0);
    assert_eq!(json_summary(&again)["profiles_planned"], 0);
    let out = db.run(&["purge", "--yes", "--format", "json"]);
    assert_success(&out);
    let purged = json_summary(&out);
    assert_eq!(purged["links_deleted"], all.len(), "{purged}");
    assert!(migrated_content(&db).await.is_empty());
    assert_eq!(db.count("SELECT count(*) FROM relink.ledger").await, 0);
}

/// The ids of the rows relink created (the generated users' own rows are
/// older).
async fn created_rows(db: &TestDb) -> BTreeSet<String> {
    ids(
        db,
        "SELECT id FROM profile_links WHERE \"createdAt\" > '2025-01-01'",
    )
    .await
}

const STATE_V5: &str = include_str!("../../fixtures/state_v5.sql");

/// The indexes of relink's ledger and rejects, by name.
async fn state_indexes(db: &TestDb) -> BTreeSet<String> {
    ids(
        db,
        "SELECT indexname FROM pg_indexes
          WHERE schemaname = 'relink' AND tablename IN ('ledger', 'ledger_rows', 'rejects', 'reject_rows')",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfinished_run_of_state_schema_5_is_upgraded_to_the_narrow_indexes_and_finished() {
    let db = fixture_db("u_v5", STATE_V5, "5").await;
    assert_eq!(
        state_indexes(&db).await,
        BTreeSet::from(
            [
                "ledger_pkey",
                "rejects_profile_id_idx",
                "rejects_user_id_idx"
            ]
            .map(String::from)
        )
    );
    let old_ids = created_rows(&db).await;
    assert!(old_ids.len() > 100, "{}", old_ids.len());
    // The next run upgrades the state schema and finishes run 1 after its
    // checkpoint, a user id.
    upgrade_and_resume(&db, 5, "user").await;
    assert_eq!(state_indexes(&db).await, latest_indexes());
    let clean = clean_run_db("u_v5_clean").await;
    finished_as_clean_and_purged(&db, &clean, &old_ids).await;
}

/// The state indexes of this release.
fn latest_indexes() -> BTreeSet<String> {
    BTreeSet::from(["ledger_rows_user_id_idx", "reject_rows_user_id_idx"].map(String::from))
}

/// After an upgraded run finished (`old_ids`: the rows relink had created
/// before the upgrade): what it wrote is what a clean run of this release
/// on the same data wrote in `clean`, nothing written before the
/// upgrade was lost or written again; a rerun writes nothing, and its
/// start (which runs version 1's script again) leaves the indexes as they
/// are; a purge removes every row relink created and empties the ledger.
async fn finished_as_clean_and_purged(db: &TestDb, clean: &TestDb, old_ids: &BTreeSet<String>) {
    assert_eq!(migrated_content(db).await, migrated_content(clean).await);
    let all = created_rows(db).await;
    assert!(old_ids.is_subset(&all) && all.len() > old_ids.len());
    assert_eq!(all, created_rows(clean).await);
    assert_success(&db.run(&["verify"]));

    let again = db.run(&["run", "--format", "json"]);
    assert_success(&again);
    assert_eq!(json_summary(&again)["links_created"], 0);
    assert_eq!(json_summary(&again)["profiles_planned"], 0);
    assert_eq!(state_indexes(db).await, latest_indexes());
    let out = db.run(&["purge", "--yes", "--format", "json"]);
    assert_success(&out);
    assert_eq!(json_summary(&out)["links_deleted"], all.len());
    assert!(created_rows(db).await.is_empty());
    assert_eq!(db.count("SELECT count(*) FROM relink.ledger").await, 0);
}

const STATE_V6: &str = include_str!("../../fixtures/state_v6.sql");

/// The ledger as relink's readers see it (the view of version 7 on), each
/// row as text, without its time.
async fn ledger_content(db: &TestDb) -> BTreeSet<String> {
    ids(
        db,
        "SELECT format('%s %s %s %s %s %s', user_id, profile_id, run_id, fingerprint, link_keys, kept_keys)
           FROM relink.ledger",
    )
    .await
}

/// The rejects as relink's readers see them (the view of version 7 on),
/// each as text, without its run.
async fn reject_content(db: &TestDb) -> BTreeSet<String> {
    ids(
        db,
        "SELECT format('%s %s %s %s %s', user_id, profile_id, source_key, raw_value, reason)
           FROM relink.rejects",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfinished_run_of_state_schema_6_is_upgraded_to_compact_rows_and_finished() {
    let db = fixture_db("u_v6", STATE_V6, "6").await;
    let before = ledger_content(&db).await;
    assert!(before.len() > 40, "{}", before.len());
    let rejects_before = reject_content(&db).await;
    assert!(!rejects_before.is_empty());
    assert!(before.iter().any(|row| !row.ends_with(' ')), "no kept keys");
    let old_ids = created_rows(&db).await;
    upgrade_and_resume(&db, 6, "user").await;
    assert_eq!(state_indexes(&db).await, latest_indexes());
    // Every row of version 6 reads as it did, the new ones beside them;
    // all of them store their (UUID) ids as uuids.
    let after = ledger_content(&db).await;
    assert!(
        before.is_subset(&after) && after.len() > before.len(),
        "{:?}",
        before.difference(&after).collect::<Vec<_>>()
    );
    let rejects_after = reject_content(&db).await;
    assert!(rejects_before.is_subset(&rejects_after) && rejects_after.len() > rejects_before.len());
    assert_eq!(
        db.count(
            "SELECT (SELECT count(*) FROM relink.ledger_rows
                      WHERE user_uuid IS NULL OR profile_uuid IS NULL)
                  + (SELECT count(*) FROM relink.reject_rows
                      WHERE user_uuid IS NULL OR profile_uuid IS NULL)"
        )
        .await,
        0
    );
    // The same ledger as a clean run's, but for the times.
    let clean = clean_run_db("u_v6_clean").await;
    assert_eq!(after, ledger_content(&clean).await);
    assert_eq!(rejects_after, reject_content(&clean).await);
    finished_as_clean_and_purged(&db, &clean, &old_ids).await;
}
