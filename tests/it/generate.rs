//! `relink generate` (sql/generate.sql): each of the four data sets of
//! `--mix default|entries` × `--ids ordered|uuid` is deterministic, has the
//! figures it advertises (counted by sql/bench/mix.sql), and migrates
//! cleanly; the default is still the data every other test was written on.

use serde_json::Value;

use crate::harness::{assert_code, assert_success, json_summary, stderr, TestDb};

const MIX_SQL: &str = include_str!("../../sql/bench/mix.sql");

/// Small enough to generate twice and migrate in a few seconds, large enough
/// for the entries mix's 1% of heavy profiles to show (about 27 of them).
const PROFILES: &str = "3000";

/// A database filled by `relink generate` with these options.
async fn generated(tag: &str, mix: &str, ids: &str) -> TestDb {
    let db = TestDb::new(tag).await;
    let out = db.run(&[
        "generate",
        "--profiles",
        PROFILES,
        "--seed",
        "-0.25",
        "--mix",
        mix,
        "--ids",
        ids,
    ]);
    assert_success(&out);
    db
}

/// sql/bench/mix.sql's one row, as JSON (its figures are numerics).
async fn figures(db: &TestDb) -> Value {
    let sql = format!(
        "SELECT to_jsonb(m) FROM ({}) AS m",
        MIX_SQL.trim().trim_end_matches(';')
    );
    db.client
        .query_one(&sql, &[])
        .await
        .expect("sql/bench/mix.sql")
        .get(0)
}

fn figure(figures: &Value, name: &str) -> f64 {
    figures[name]
        .as_f64()
        .unwrap_or_else(|| panic!("no figure {name} in {figures}"))
}

/// Share (0..1) of neighbours in `order` whose `column` also ascends: 1 when
/// the two orders agree, about 0.5 when they are unrelated.
async fn agreement(db: &TestDb, column: &str, order: &str) -> f64 {
    let sql = format!(
        "SELECT avg((prev < {column})::int)::float8
           FROM (SELECT {column}, lag({column}) OVER (ORDER BY {order}) AS prev
                   FROM profiles) AS t"
    );
    db.client
        .query_one(&sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// What every data set must satisfy before migration: the same tables from
/// the same seed, and every profile with its user.  Returns the database
/// and its figures.
async fn check_data_set(mix: &str, ids: &str) -> (TestDb, Value) {
    let tag = format!("gen_{mix}_{ids}");
    let db = generated(&tag, mix, ids).await;
    let again = generated(&tag, mix, ids).await;
    assert_eq!(
        db.checksum_all().await,
        again.checksum_all().await,
        "--mix {mix} --ids {ids}: the same seed must give the same tables"
    );
    drop(again);

    let figures = figures(&db).await;
    assert_eq!(figure(&figures, "profiles"), 3000.0, "{figures}");

    let users_of_profiles = db
        .count("SELECT count(*) FROM profiles p JOIN users u ON u.id = p.\"userId\"")
        .await;
    assert_eq!(users_of_profiles, 3000, "every profile has its user");
    (db, figures)
}

/// `relink run`, then `relink verify --strict`: both must pass.  Returns the
/// run's summary.
async fn migrate(db: &TestDb) -> Value {
    let out = db.run(&["run", "--format", "json"]);
    assert_success(&out);
    let summary = json_summary(&out);
    assert_eq!(summary["status"], "completed", "{summary}");
    assert!(
        summary["links_created"].as_u64().unwrap_or(0) > 3000,
        "{summary}"
    );
    let (out, report) = db.verify_json(&["--strict"]);
    assert_success(&out);
    assert_eq!(report["ok"], true, "{report}\n{}", stderr(&out));
    summary
}

/// The default data set as it was before `--mix` and `--ids` existed:
/// checksums of 2,000 profiles at seed 0.42, taken with the generator of
/// that time.  Other tests, the demo and the README's figures rest on it.
/// random() is xoshiro128** from PostgreSQL 15 on (older servers draw other
/// numbers, so the pin only holds there).
#[tokio::test]
async fn the_default_data_set_is_unchanged() {
    let db = TestDb::new("gen_pinned").await;
    let version = db
        .count("SELECT current_setting('server_version_num')::bigint")
        .await;
    let out = db.run(&[
        "generate",
        "--profiles",
        "2000",
        "--mix",
        "default",
        "--ids",
        "ordered",
    ]);
    assert_success(&out);
    if version < 150_000 {
        eprintln!("PostgreSQL {version} < 15: random() differs, the pinned checksums do not apply");
        return;
    }
    for (table, sum) in [
        ("users", "77b19f5e9fcaa843776fa2d10d478e11"),
        ("profiles", "adedbda28f943515ef26d5133f81a4b3"),
        ("profile_links", "9aa222b004ed2345314a0ed35b592d19"),
    ] {
        assert_eq!(db.checksum(table).await, sum, "{table} changed");
    }
}

#[tokio::test]
async fn default_mix_with_ordered_ids() {
    let (db, f) = check_data_set("default", "ordered").await;
    let per_profile = figure(&f, "values_per_profile_with_values");
    assert!((2.0..2.7).contains(&per_profile), "{f}");
    assert_eq!(figure(&f, "heavy_profiles"), 0.0, "{f}");
    assert!(figure(&f, "shape_1_pct") > 40.0, "{f}");
    // Keyset order is insertion order (the heap's order, but for the odd
    // small row that the free space map puts back on an earlier page), and
    // a profile's order is its user's.
    assert!(agreement(&db, "id", "ctid").await > 0.95);
    assert_eq!(agreement(&db, "\"userId\"", "id").await, 1.0);
    migrate(&db).await;
}

#[tokio::test]
async fn entries_mix_with_ordered_ids() {
    let (db, f) = check_data_set("entries", "ordered").await;
    assert_eq!(agreement(&db, "\"userId\"", "id").await, 1.0);
    let summary = migrate(&db).await;
    assert_entries_mix(&f, &summary);
}

#[tokio::test]
async fn default_mix_with_uuid_ids() {
    let (db, f) = check_data_set("default", "uuid").await;
    assert!(figure(&f, "shape_1_pct") > 40.0, "{f}");
    assert_uuid_ids(&db).await;
    migrate(&db).await;
}

#[tokio::test]
async fn entries_mix_with_uuid_ids() {
    let (db, f) = check_data_set("entries", "uuid").await;
    assert_uuid_ids(&db).await;
    let summary = migrate(&db).await;
    assert_entries_mix(&f, &summary);
}

/// Arrays of entry objects dominate, about 4 values per profile, the same
/// link spelled twice in 20-30% of the profiles, about 1% heavy profiles.
fn assert_entries_mix(f: &Value, summary: &Value) {
    let per_profile = figure(f, "values_per_profile_with_values");
    assert!((3.5..4.5).contains(&per_profile), "values per profile: {f}");
    let arrays = figure(f, "shape_3_pct") + figure(f, "shape_4_pct");
    assert!(arrays >= 70.0, "arrays are {arrays}% of non-null: {f}");
    let entries = figure(f, "shape_2_pct") + figure(f, "shape_4_pct");
    assert!(entries >= 55.0, "entry objects are {entries}%: {f}");
    assert!(figure(f, "entry_values_pct") >= 60.0, "{f}");
    let dups = figure(f, "profiles_with_duplicates_pct");
    assert!((18.0..32.0).contains(&dups), "duplicates in {dups}%: {f}");
    let heavy = figure(f, "heavy_profiles");
    assert!(
        (10.0..=50.0).contains(&heavy),
        "{heavy} heavy profiles: {f}"
    );
    assert!(
        figure(f, "heavy_min") >= 50.0 && figure(f, "heavy_max") <= 150.0,
        "{f}"
    );
    // relink sees the duplicates too.
    let skipped = summary["duplicates"].as_u64().unwrap_or(0);
    assert!(skipped > 600, "{skipped} duplicates skipped: {summary}");
}

/// Users and profiles (and the links users created) have version-4 UUIDs, and
/// neither insertion order nor the user's id follows a profile's id.
async fn assert_uuid_ids(db: &TestDb) {
    for table in ["users", "profiles", "profile_links"] {
        let rows = db
            .client
            .query(&format!("SELECT id FROM {table}"), &[])
            .await
            .expect("ids");
        assert!(!rows.is_empty(), "{table} is empty");
        for row in rows {
            let id: String = row.get(0);
            let parsed = uuid::Uuid::parse_str(&id)
                .unwrap_or_else(|e| panic!("{table}.id {id:?} is not a UUID: {e}"));
            assert_eq!(parsed.get_version_num(), 4, "{table}.id {id}");
            assert_eq!(parsed.hyphenated().to_string(), id, "lowercase, hyphenated");
        }
    }
    for (column, order) in [("id", "ctid"), ("\"userId\"", "id")] {
        let agree = agreement(db, column, order).await;
        assert!(
            (0.4..0.6).contains(&agree),
            "{column} by {order}: {agree} of neighbours ascend"
        );
    }
}

#[test]
fn bad_options_are_usage_errors() {
    for args in [["--mix", "objects"], ["--ids", "cuid"]] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_relink"))
            .arg("generate")
            .args(args)
            .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
            .output()
            .expect("run relink");
        assert_code(&out, 2);
    }
}
