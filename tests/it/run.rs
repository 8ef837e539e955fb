//! `relink run` against the real server: the corpus migrated row for row,
//! idempotent and incremental reruns, and crash safety (SIGKILL / SIGINT
//! mid-run, then resume) compared with a clean run on an identical copy.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::corpus;
use crate::harness::{
    assert_code, assert_resumed, assert_success, eventually, json_summary, send_signal, stderr,
    streams, TestDb,
};

/// profile_links as a multiset of everything a run decides.
const LINKS: &str =
    "(SELECT id, \"userId\", \"profileId\", label, url, type, position FROM profile_links)";

/// Loads every corpus entry as a user + profile (+ the user's existing rows
/// and, through a first run, ledger keys). Returns the entries loaded.
async fn load_corpus(db: &TestDb) -> Vec<serde_json::Value> {
    // A first run on the empty database creates the state schema (run 1),
    // so "migrated" keys can be seeded as ledger rows of that run.
    assert_success(&db.run(&["run"]));
    let mut loaded = Vec::new();
    for entry in corpus::entries() {
        let social = corpus::social_text(&entry);
        if social.contains("\\u0000") {
            // jsonb cannot hold NUL; that entry is checked on the planner only.
            continue;
        }
        let name = entry["name"].as_str().expect("name");
        let (user, profile) = (corpus::user_id(&entry), format!("p-{name}"));
        db.insert_profile(&user, &profile, &social).await;
        for (i, row) in corpus::existing(&entry).iter().enumerate() {
            db.exec("INSERT INTO profile_links (id, \"userId\", \"profileId\", label, url, type, position, \"updatedAt\")
                     VALUES ($1, $2, $3, 'Mine', $4, 'other', $5, now())", &[&format!("existing-{name}-{i}"), &user, &profile, &row.url, &row.position]).await;
        }
        let migrated = corpus::migrated(&entry);
        if !migrated.is_empty() {
            let keys: Vec<&str> = migrated.iter().map(String::as_str).collect();
            db.record_in_ledger(&user, &profile, 1, &keys).await;
        }
        loaded.push(entry);
    }
    loaded
}

#[tokio::test]
async fn the_corpus_is_migrated_exactly_as_planned() {
    let db = TestDb::new("run_corpus").await;
    let entries = load_corpus(&db).await;
    assert!(entries.len() > 100);
    let profiles_before = db.checksum("profiles").await;
    let out = db.run(&["run", "--format", "json", "--chunk-size", "7"]);
    assert_success(&out);
    let expected_links: usize = entries
        .iter()
        .map(|e| e["expect"]["links"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(
        json_summary(&out)["links_created"],
        serde_json::json!(expected_links)
    );

    for entry in &entries {
        let profile = format!("p-{}", entry["name"].as_str().expect("name"));
        let rows = db
            .client
            .query(
                "SELECT id, label, type, url, position FROM profile_links
                  WHERE \"profileId\" = $1 AND id NOT LIKE 'existing-%' ORDER BY position",
                &[&profile],
            )
            .await
            .expect("rows");
        let actual: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                serde_json::json!({"id": r.get::<_, String>(0), "label": r.get::<_, String>(1),
                    "type": r.get::<_, String>(2), "url": r.get::<_, String>(3), "position": r.get::<_, i32>(4)})
            })
            .collect();
        let expected: Vec<serde_json::Value> = entry["expect"]["links"]
            .as_array()
            .expect("links")
            .iter()
            .map(|l| serde_json::json!({"id": l["id"], "label": l["label"], "type": l["type"], "url": l["url"], "position": l["position"]}))
            .collect();
        assert_eq!(actual, expected, "{profile}");
    }
    assert_eq!(
        db.checksum("profiles").await,
        profiles_before,
        "\"socialLinks\" must not change"
    );
    let verify = db.run(&["verify"]);
    assert_success(&verify);
}

#[tokio::test]
async fn a_second_run_writes_nothing() {
    let db = TestDb::migrated("run_rerun", 2000).await;
    let tables = [
        "users",
        "profiles",
        "profile_links",
        "relink.ledger",
        "relink.rejects",
    ];
    let mut before = Vec::new();
    for t in tables {
        before.push(db.checksum(t).await);
    }
    let out = db.run(&["run", "--format", "json"]);
    assert_success(&out);
    let summary = json_summary(&out);
    assert_eq!(summary["links_created"], 0);
    assert_eq!(summary["profiles_planned"], 0);
    assert_eq!(summary["profiles_unchanged"], summary["profiles_scanned"]);
    for (t, sum) in tables.iter().zip(before) {
        assert_eq!(db.checksum(t).await, sum, "{t} changed on a rerun");
    }
}

/// A rerun after a completed run, with few profiles changed, finds them
/// in one pass (a census) and reads only those: it writes what keyset pages
/// write (the same data, the census turned off), also when it stops after
/// `--limit` and the next run resumes it by a census from its checkpoint.
#[tokio::test]
async fn a_rerun_by_census_writes_what_keyset_pages_write() {
    let mut paged = TestDb::migrated("run_census", 2000).await;
    // The application adds a link to 120 migrated object values.
    paged.add_census_links(120).await;
    let census = TestDb::clone_of(&mut paged, "run_census_copy").await;

    let out = paged
        .relink()
        .env("RELINK_TEST_CENSUS_MOST", "0")
        .args(["run", "--chunk-size", "25", "--format", "json"])
        .output()
        .expect("run relink");
    assert_success(&out);
    assert!(!stderr(&out).contains("census"), "{}", streams(&out));
    assert_eq!(json_summary(&out)["profiles_planned"], 120);

    let first = census.run(&[
        "run",
        "--limit",
        "50",
        "--chunk-size",
        "25",
        "--format",
        "json",
    ]);
    assert_success(&first);
    assert!(
        stderr(&first).contains("a census found 120 pending profiles"),
        "{}",
        streams(&first)
    );
    assert_eq!(json_summary(&first)["profiles_planned"], 50);
    let rest = census.run(&["run", "--chunk-size", "25", "--format", "json"]);
    assert_success(&rest);
    assert!(
        stderr(&rest).contains("a census found 70 pending profiles"),
        "{}",
        streams(&rest)
    );
    assert_eq!(json_summary(&rest)["profiles_planned"], 70);

    for table in [
        LINKS,
        "(SELECT user_id, profile_id, fingerprint, link_keys, kept_keys FROM relink.ledger)",
        "(SELECT user_id, profile_id, source_key, raw_value, reason FROM relink.rejects)",
    ] {
        assert_eq!(
            census.checksum(table).await,
            paged.checksum(table).await,
            "{table}"
        );
    }
    assert_eq!(
        paged
            .count(
                "SELECT count(*) FROM profile_links WHERE url LIKE 'https://census.example.com/%'"
            )
            .await,
        120
    );
    assert_success(&census.run(&["verify", "--strict"]));
}

#[tokio::test]
async fn reruns_are_incremental_and_never_resurrect_or_duplicate() {
    let db = TestDb::migrated("run_incr", 500).await;
    // Three users with migrated links and object-shaped legacy values.
    let rows = db.migrated_object_profiles(3).await;
    let (a, b) = (rows[0].0.clone(), rows[1].0.clone());
    let (c, user_c) = rows[2].clone();

    // a: a new legacy URL lands at the next position.
    let max_a = db
        .count(&format!(
            "SELECT max(position)::bigint FROM profile_links WHERE \"profileId\" = '{a}'"
        ))
        .await;
    db.exec("UPDATE profiles SET \"socialLinks\" = \"socialLinks\" || '{\"zz new\": \"https://incremental.example.com/x\"}' WHERE id = $1", &[&a]).await;
    // b: the user deleted a migrated row, and the legacy value changed since.
    let deleted: String = db
        .client
        .query_one(
            "SELECT id FROM profile_links WHERE \"profileId\" = $1 ORDER BY position LIMIT 1",
            &[&b],
        )
        .await
        .expect("row of b")
        .get(0);
    db.exec("DELETE FROM profile_links WHERE id = $1", &[&deleted])
        .await;
    db.exec("UPDATE profiles SET \"socialLinks\" = \"socialLinks\" || '{\"zz other\": \"https://other-new.example.com/\"}' WHERE id = $1", &[&b]).await;
    // c: the user created a link through the new API; legacy gets the same link spelled differently.
    db.exec("INSERT INTO profile_links (id, \"userId\", \"profileId\", label, url, type, position, \"updatedAt\")
             VALUES ('user-made', $1, $2, 'Mine', 'https://usercreated.example.com/', 'other', 99, now())", &[&user_c, &c]).await;
    db.exec("UPDATE profiles SET \"socialLinks\" = \"socialLinks\" || '{\"zz mine\": \"http://www.usercreated.example.com\"}' WHERE id = $1", &[&c]).await;

    let out = db.run(&["run", "--format", "json"]);
    assert_success(&out);
    let summary = json_summary(&out);
    assert_eq!(
        summary["profiles_planned"], 3,
        "only the three changed profiles are planned"
    );
    assert_eq!(summary["links_created"], 2);

    let new_a = db
        .client
        .query_one("SELECT position, label FROM profile_links WHERE \"profileId\" = $1 AND url = 'https://incremental.example.com/x'", &[&a])
        .await
        .expect("new row of a");
    assert_eq!(i64::from(new_a.get::<_, i32>(0)), max_a + 1);
    assert_eq!(new_a.get::<_, String>(1), "Zz new");
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM profile_links WHERE id = '{deleted}'"
        ))
        .await,
        0,
        "resurrected"
    );
    assert_eq!(db.count(&format!("SELECT count(*) FROM profile_links WHERE \"profileId\" = '{b}' AND url = 'https://other-new.example.com/'")).await, 1);
    assert_eq!(db.count(&format!("SELECT count(*) FROM profile_links WHERE \"profileId\" = '{c}' AND url LIKE '%usercreated%'")).await, 1, "duplicated a user row");
    assert_eq!(db.count("SELECT count(*) FROM profile_links WHERE id = 'user-made' AND label = 'Mine' AND position = 99").await, 1);
    assert_success(&db.run(&["verify"]));
}

#[tokio::test]
async fn the_ledger_grows_with_changes_not_with_reruns() {
    let db = TestDb::migrated("run_ledger_size", 300).await;
    let rows = "SELECT count(*) FROM relink.ledger";
    let after_first = db.count(rows).await;
    // A change that plans nothing new: a migrated link again, under a new
    // key.
    let (changed, _) = db.migrated_object_profiles(1).await.remove(0);
    db.exec(
        "UPDATE profiles p SET \"socialLinks\" = \"socialLinks\" || jsonb_build_object('zz again',
                    (SELECT url FROM profile_links
                      WHERE \"profileId\" = p.id ORDER BY position LIMIT 1))
              WHERE id = $1",
        &[&changed],
    )
    .await;
    let out = db.run(&["run", "--format", "json"]);
    assert_success(&out);
    let summary = json_summary(&out);
    assert_eq!(summary["profiles_planned"], 1, "{summary}");
    assert_eq!(summary["links_created"], 0, "{summary}");
    assert_eq!(
        db.count(rows).await,
        after_first,
        "a replan without links added a row"
    );
    // Its fingerprint was brought up to date: the next run skips it.
    for _ in 0..2 {
        let out = db.run(&["run", "--format", "json"]);
        assert_success(&out);
        assert_eq!(json_summary(&out)["profiles_planned"], 0);
        assert_eq!(db.count(rows).await, after_first);
    }
}

/// Kills `relink run` with `signal` once some chunks have committed, then
/// reruns to completion; the result must equal a clean run on a copy.
async fn interrupted_run_equals_clean_run(tag: &str, signal: &str, expect_code: Option<i32>) {
    let mut db = TestDb::new(tag).await;
    db.generate(50_000);
    let clean = TestDb::clone_of(&mut db, &format!("{tag}_clean")).await;

    let mut child = db.spawn(&["run", "--chunk-size", "500", "-q"]);
    let started = Instant::now();
    loop {
        let n = db.count("SELECT count(*) FROM profile_links").await;
        if n > 5_000 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "run made no progress"
        );
        assert!(
            !child.finished(),
            "run finished before it could be interrupted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    send_signal(child.pid, signal);
    let out = child.wait(Duration::from_secs(120)).await;
    assert_eq!(
        out.status.code(),
        expect_code,
        "exit after signal {signal}\n{}",
        streams(&out)
    );
    let partial = db.count("SELECT count(*) FROM profile_links").await;

    let resumed = db.run(&["run"]);
    assert_resumed(&resumed, 1);
    assert_success(&clean.run(&["run"]));

    let total = clean.count("SELECT count(*) FROM profile_links").await;
    assert!(
        partial < total,
        "the signal came too late to test anything ({partial} of {total})"
    );
    assert_eq!(
        db.checksum(LINKS).await,
        clean.checksum(LINKS).await,
        "resumed run differs from a clean run"
    );
    assert_eq!(
        db.checksum("relink.rejects").await.is_empty(),
        clean.checksum("relink.rejects").await.is_empty()
    );
    assert_code(&db.run(&["verify", "--strict"]), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_mid_run_then_resume_equals_a_clean_run() {
    interrupted_run_equals_clean_run("kill9", "KILL", None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigint_mid_run_exits_130_and_resumes_to_a_clean_run() {
    interrupted_run_equals_clean_run("sigint", "INT", Some(130)).await;
}

#[tokio::test]
async fn limit_migrates_a_canary_then_the_next_run_continues() {
    let db = TestDb::new("run_limit").await;
    db.generate(1000);
    let out = db.run(&[
        "run",
        "--limit",
        "25",
        "--format",
        "json",
        "--chunk-size",
        "10",
    ]);
    assert_success(&out);
    assert_eq!(json_summary(&out)["profiles_planned"], 25);
    assert_eq!(
        db.count("SELECT count(DISTINCT profile_id) FROM relink.ledger")
            .await,
        25
    );
    let out = db.run(&["run", "--format", "json"]);
    assert_resumed(&out, 1);
    let pending = db
        .count("SELECT count(*) FROM profiles WHERE \"socialLinks\" IS NOT NULL")
        .await;
    assert_eq!(
        db.count("SELECT count(DISTINCT profile_id) FROM relink.ledger")
            .await,
        pending
    );
    let ids: BTreeSet<String> = db
        .texts("SELECT status FROM relink.runs")
        .await
        .into_iter()
        .collect();
    assert_eq!(ids, BTreeSet::from(["completed".to_owned()]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_chunks_shrink_at_once_after_a_lock_timeout() {
    let (db, clean) = TestDb::with_clean_run("r_auto_shrink", 30_000).await;

    let child = db.spawn(&["run", "--lock-timeout", "300ms", "--retries", "20"]);
    // Let the sizes grow first.
    eventually(Duration::from_secs(60), "too slow to start", || async {
        db.ledger_rows().await >= 3000
    })
    .await;
    // The application holds a lock the next chunks need, past lock_timeout.
    let app = db.lock_table("relink.ledger").await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    app.batch_execute("COMMIT").await.expect("unlock");

    let out = child.wait(std::time::Duration::from_secs(120)).await;
    assert_success(&out);
    let err = stderr(&out);
    let line = err
        .lines()
        .find(|l| l.contains("a chunk timed out: chunks shrink from"))
        .unwrap_or_else(|| panic!("no shrink logged:\n{err}"));
    let sizes: Vec<usize> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    // Smaller at once; how large sizes had grown by then depends on the
    // machine's speed (under load they stay near the floor), so only the
    // shrink itself is asserted.
    assert!(matches!(sizes[..], [from, to] if to < from), "{line}");
    assert_eq!(db.links_checksum().await, clean.links_checksum().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replan_adds_the_links_an_earlier_planning_missed_and_nothing_else() {
    let db = TestDb::migrated("r_replan", 2000).await;
    let table = db.links_checksum().await;
    // As if an older release had never created one link: its row and its
    // key are gone, while the legacy value still holds it.
    db.lose_one_link("").await;
    assert_code(&db.run(&["verify"]), 3);
    // A plain rerun skips the unchanged profile.
    let out = db.run(&["run", "--format", "json"]);
    assert_eq!(json_summary(&out)["links_created"], 0);

    let dry = db.run(&["run", "--dry-run", "--replan", "--format", "json"]);
    assert_success(&dry);
    assert_eq!(json_summary(&dry)["links_created"], 1);
    let out = db.run(&["run", "--replan", "--format", "json"]);
    assert_success(&out);
    let summary = json_summary(&out);
    assert_eq!(summary["links_created"], 1, "{summary}");
    assert!(
        summary["profiles_planned"].as_u64().unwrap_or(0) > 1500,
        "{summary}"
    );
    assert_eq!(db.links_checksum().await, table);
    assert_success(&db.run(&["verify", "--strict"]));
    let out = db.run(&["run", "--format", "json"]);
    assert_eq!(json_summary(&out)["profiles_planned"], 0);
}

/// Chunks in which no value holds a valid link lock nothing (an empty lock
/// phase, no users' rows read) and still record every profile: its rejects
/// and its ledger row, so a rerun plans nothing and verify passes.
#[tokio::test]
async fn chunks_without_a_valid_link_record_their_rejects_and_lock_nothing() {
    let db = TestDb::new("r_no_valid_link").await;
    db.generate(300);
    db.client
        .execute(
            "UPDATE profiles SET \"socialLinks\" = '{\"website\": \"javascript:alert(1)\"}'
              WHERE \"socialLinks\" IS NOT NULL",
            &[],
        )
        .await
        .expect("values without a valid link");
    let with_value = db
        .count("SELECT count(*) FROM profiles WHERE \"socialLinks\" IS NOT NULL")
        .await;
    let out = db.run(&["run", "--chunk-size", "50", "--format", "json"]);
    assert_success(&out);
    let summary = json_summary(&out);
    assert_eq!(summary["links_created"], 0, "{summary}");
    assert_eq!(
        db.count("SELECT count(*) FROM relink.ledger").await,
        with_value
    );
    assert_eq!(
        db.count("SELECT count(*) FROM relink.rejects").await,
        with_value
    );
    let again = db.run(&["run", "--format", "json"]);
    assert_success(&again);
    assert_eq!(json_summary(&again)["profiles_planned"], 0);
    assert_success(&db.run(&["verify", "--strict"]));
}
