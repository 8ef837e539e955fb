//! `relink run --dry-run` (SPEC §7): writes nothing anywhere, works with a
//! SELECT-only role and without the state schema, and shows exactly what the
//! live run then writes, row for row and figure for figure.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::harness::{
    assert_code, assert_success, json_summary, stderr, stdout, Role, TestDb, REJECT_REASONS,
};

/// Every reason a skipped value can carry in the dry run's text besides
/// the [`REJECT_REASONS`].
const SKIP_REASONS: [&str; 3] = ["duplicate", "existing", "migrated"];

/// Summary fields that must agree between a dry run and the live run after
/// it (everything but mode, run id and timings).
const FIGURES: [&str; 11] = [
    "status",
    "profiles_scanned",
    "profiles_unchanged",
    "profiles_planned",
    "profiles_migrated",
    "profiles_already_present",
    "profiles_without_valid_links",
    "links_created",
    "duplicates",
    "expanded",
    "repaired",
];

async fn state_schema_exists(db: &TestDb) -> bool {
    db.count("SELECT count(*) FROM pg_namespace WHERE nspname = 'relink'")
        .await
        == 1
}

/// Schemas, and the state schema's sequences: what checksums of tables do not see.
async fn catalog_fingerprint(db: &TestDb) -> String {
    let schemas = db
        .text("SELECT coalesce(string_agg(nspname, ',' ORDER BY nspname), '') FROM pg_namespace")
        .await;
    let sequences = db.text("SELECT coalesce(string_agg(format('%s.%s=%s', schemaname, sequencename, last_value), ','
                                        ORDER BY schemaname, sequencename), '')
               FROM pg_sequences").await;
    format!("{schemas} | {sequences}")
}

/// A LOGIN role that may only read the application's tables (CONNECT,
/// USAGE on public, SELECT on its tables).
async fn read_only_role(db: &TestDb) -> Role {
    db.role(
        "ro",
        "GRANT CONNECT ON DATABASE {db} TO {role};
         GRANT USAGE ON SCHEMA public TO {role};
         GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role};",
    )
    .await
}

/// Also lets `role` read relink's state schema (the ledger).
async fn grant_state(db: &TestDb, role: &Role) {
    db.batch(&format!(
        "GRANT USAGE ON SCHEMA relink TO {name};
         GRANT SELECT ON ALL TABLES IN SCHEMA relink TO {name};",
        name = role.name
    ))
    .await;
}

/// A successful dry run whose text shows one profile only, with `block`.
#[track_caller]
fn assert_only_profile(out: &std::process::Output, block: &str) {
    assert_success(out);
    let text = stdout(out);
    assert!(text.contains(block), "{text}");
    assert_eq!(
        text.lines().filter(|l| l.starts_with("Profile ")).count(),
        1,
        "only the changed profile is shown:\n{text}"
    );
}

/// A profile with an object-shaped legacy value gets one more URL; returns
/// its (profile id, user id).
async fn append_legacy_url(db: &TestDb, key: &str, url: &str) -> (String, String) {
    let (profile, user) = db.object_profiles(1, false).await.remove(0);
    db.exec("UPDATE profiles SET \"socialLinks\" = \"socialLinks\" || jsonb_build_object($2::text, $3::text) WHERE id = $1", &[&profile, &key, &url]).await;
    (profile, user)
}

#[tokio::test]
async fn a_dry_run_on_a_fresh_database_writes_nothing() {
    let db = TestDb::new("dry_fresh").await;
    db.generate(2000);
    let before = db.checksum_all().await;
    let catalog = catalog_fingerprint(&db).await;
    assert!(before.len() >= 3, "{before:?}");

    let out = db.run(&["run", "--dry-run", "--format", "json"]);
    assert_success(&out);
    let summary = json_summary(&out);
    assert!(
        summary["links_created"].as_u64().unwrap_or(0) > 2000,
        "the dry run planned links: {summary}"
    );
    let text = db.run(&["run", "--dry-run"]);
    assert_success(&text);
    assert!(stdout(&text).contains("[DRY RUN] Would create"));

    assert_eq!(db.checksum_all().await, before);
    assert_eq!(catalog_fingerprint(&db).await, catalog);
    assert!(
        !state_schema_exists(&db).await,
        "a dry run created the state schema"
    );
}

#[tokio::test]
async fn a_dry_run_after_a_live_run_writes_nothing_and_shows_the_change() {
    let db = TestDb::migrated("dry_after", 2000).await;
    let (_, user) = append_legacy_url(&db, "newsite", "https://brand-new.example.org/dry").await;
    let before = db.checksum_all().await;
    let catalog = catalog_fingerprint(&db).await;
    assert!(
        before.iter().any(|(t, _)| t == "relink.ledger_rows"),
        "{before:?}"
    );

    let out = db.run(&["run", "--dry-run"]);
    assert_only_profile(
        &out,
        &format!("Profile {user}: Found 1 links to migrate\n  [DRY RUN] Would create 1 profile links\n  - Newsite (other): https://brand-new.example.org/dry\n"),
    );
    let json = db.run(&["run", "--dry-run", "--format", "json"]);
    assert_success(&json);
    let summary = json_summary(&json);
    assert_eq!(summary["profiles_planned"], 1, "{summary}");
    assert_eq!(summary["links_created"], 1, "{summary}");

    assert_eq!(db.checksum_all().await, before);
    assert_eq!(catalog_fingerprint(&db).await, catalog);

    // And the live run does exactly that.
    let live = db.run(&["run", "--format", "json"]);
    assert_success(&live);
    assert_eq!(json_summary(&live)["links_created"], 1);
}

#[tokio::test]
async fn a_select_only_role_can_dry_run_but_not_run() {
    let db = TestDb::new("dry_role").await;
    db.generate(500);
    let role = read_only_role(&db).await;
    let before = db.checksum_all().await;
    let links_before = db.count("SELECT count(*) FROM profile_links").await;

    let as_owner = db.run(&["run", "--dry-run", "--format", "json"]);
    assert_success(&as_owner);
    let out = db.run_on(&role.url, &["run", "--dry-run", "--format", "json"]);
    assert_success(&out);
    let (mine, owners) = (json_summary(&out), json_summary(&as_owner));
    assert!(mine["links_created"].as_u64().unwrap_or(0) > 500, "{mine}");
    for f in FIGURES {
        assert_eq!(mine[f], owners[f], "{f}");
    }
    assert_eq!(mine["rejects"], owners["rejects"]);
    assert_eq!(db.checksum_all().await, before);

    let live = db
        .relink()
        .env("DATABASE_URL", &role.url)
        .arg("run")
        .output()
        .expect("run relink");
    assert_code(&live, 1);
    let err = stderr(&live);
    assert!(err.to_lowercase().contains("permission"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        db.count("SELECT count(*) FROM profile_links").await,
        links_before
    );
    assert!(
        !state_schema_exists(&db).await,
        "a refused live run left the state schema behind"
    );
    assert_eq!(db.checksum_all().await, before);
}

#[tokio::test]
async fn a_select_only_role_dry_runs_against_the_ledger() {
    let db = TestDb::migrated("dry_role_led", 500).await;
    let role = read_only_role(&db).await;
    grant_state(&db, &role).await;
    let (_, user) = append_legacy_url(&db, "newsite", "https://read-only.example.org/").await;
    let before = db.checksum_all().await;

    let out = db.run_on(&role.url, &["run", "--dry-run"]);
    assert_only_profile(&out, &format!("Profile {user}: Found 1 links to migrate"));
    assert_eq!(db.checksum_all().await, before);
}

/// One profile block of the dry run's text.
#[derive(Debug, Default)]
struct Block {
    found: usize,
    links: Vec<String>,
    skipped: Vec<String>,
}

/// Parses the dry run's text strictly (SPEC §7): profile blocks, then the
/// summary, then the DRY RUN line. Returns the blocks by user id and the
/// summary's lines.
fn parse_dry_text(text: &str) -> (BTreeMap<String, Block>, Vec<String>) {
    let mut blocks = BTreeMap::new();
    let mut lines = text.lines().peekable();
    let mut summary = Vec::new();
    while let Some(line) = lines.next() {
        if line.starts_with("Summary (dry-run)") {
            summary.push(line.to_owned());
            summary.extend(lines.by_ref().map(str::to_owned));
            break;
        }
        let rest = line
            .strip_prefix("Profile ")
            .unwrap_or_else(|| panic!("unexpected line {line:?}"));
        let (user, tail) = rest.split_once(": Found ").expect("Found");
        let found: usize = tail
            .strip_suffix(" links to migrate")
            .unwrap_or_else(|| panic!("bad line {line:?}"))
            .parse()
            .expect("a number");
        assert_eq!(
            lines.next(),
            Some(format!("  [DRY RUN] Would create {found} profile links").as_str()),
            "after {line:?}"
        );
        let mut block = Block {
            found,
            ..Block::default()
        };
        for _ in 0..found {
            let link = lines.next().expect("a link line");
            assert!(link.starts_with("  - "), "{line}: {link:?}");
            block.links.push(link.to_owned());
        }
        while let Some(skip) = lines.next_if(|l| l.starts_with("  ! skipped ")) {
            let reason = skip
                .rsplit_once(" (")
                .and_then(|(_, r)| r.strip_suffix(')'))
                .unwrap_or_else(|| panic!("bad skipped line {skip:?}"));
            assert!(
                SKIP_REASONS.contains(&reason) || REJECT_REASONS.contains(&reason),
                "{skip:?}"
            );
            block.skipped.push(reason.to_owned());
        }
        assert!(
            blocks.insert(user.to_owned(), block).is_none(),
            "{user} twice"
        );
    }
    (blocks, summary)
}

#[tokio::test]
async fn the_dry_run_shows_exactly_what_the_live_run_writes() {
    let db = TestDb::new("dry_equal").await;
    db.generate(2000);
    dry_run_equals_live_run(&db).await;
}

/// The same with random UUID user ids: the link ids are UUID v8 (SPEC §5),
/// the same in the dry run as in the live run.
#[tokio::test]
async fn the_dry_run_shows_exactly_what_the_live_run_writes_with_uuid_ids() {
    let db = TestDb::new("dry_equal_uuid").await;
    assert_success(&db.run(&["generate", "--profiles", "2000", "--ids", "uuid"]));
    dry_run_equals_live_run(&db).await;
    let v8 = db
        .count(
            "SELECT count(*) FROM profile_links
              WHERE \"createdAt\" > '2025-01-01' AND id NOT LIKE 'user-made-%'
                AND substr(id, 15, 1) = '8' AND left(id, 8) = lower(left(\"userId\", 8))",
        )
        .await;
    let all = db
        .count(
            "SELECT count(*) FROM profile_links
              WHERE \"createdAt\" > '2025-01-01' AND id NOT LIKE 'user-made-%'",
        )
        .await;
    assert!(v8 > 1000 && v8 == all, "{v8} of {all}");
}

async fn dry_run_equals_live_run(db: &TestDb) {
    // Users create rows through the new API: five duplicate a link the
    // dry run plans for them, five are new links at position 0.
    let (_, first) = db.report_lines("first", &["run", "--dry-run", "-q"]);
    let with_rows: BTreeSet<String> = db
        .texts("SELECT DISTINCT \"userId\" FROM profile_links")
        .await
        .into_iter()
        .collect();
    let candidates: Vec<&Value> = first
        .iter()
        .filter(|l| {
            l["links"].as_array().map_or(0, Vec::len) >= 2
                && !with_rows.contains(l["user_id"].as_str().unwrap_or(""))
        })
        .take(10)
        .collect();
    assert_eq!(candidates.len(), 10);
    let mut deduplicated = BTreeMap::new();
    for (i, line) in candidates.iter().enumerate() {
        let (user, profile) = (
            line["user_id"].as_str().expect("user"),
            line["profile_id"].as_str().expect("profile"),
        );
        let url = if i < 5 {
            let url = line["links"][1]["url"].as_str().expect("url").to_owned();
            deduplicated.insert(profile.to_owned(), url.clone());
            url
        } else {
            format!("https://user-made-{i}.example.net/")
        };
        db.exec("INSERT INTO profile_links (id, \"userId\", \"profileId\", label, url, type, position, \"updatedAt\")
                 VALUES ($1, $2, $3, 'Mine', $4, 'other', 0, now())", &[&format!("user-made-{i}"), &user, &profile, &url]).await;
    }

    // Small pages: chunk boundaries must not change the plan.
    let (dry, report) = db.report_lines("dry", &["run", "--dry-run", "--chunk-size", "7"]);
    let dry_json = db.run(&["run", "--dry-run", "--format", "json"]);
    assert_success(&dry_json);
    let quiet = db.run(&["run", "--dry-run", "-q"]);
    assert_success(&quiet);

    let pre_existing: BTreeSet<String> = db
        .texts("SELECT id FROM profile_links")
        .await
        .into_iter()
        .collect();
    assert!(pre_existing.len() >= 10);
    let live = db.run(&["run", "--format", "json"]);
    assert_success(&live);

    // The rows the live run inserted, per profile, in position order.
    let mut inserted: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut per_user: BTreeMap<String, usize> = BTreeMap::new();
    for r in db
        .client
        .query(
            "SELECT \"profileId\", \"userId\", id, label, type, url, position FROM profile_links
              WHERE id <> ALL($1) ORDER BY \"profileId\", position",
            &[&pre_existing.iter().collect::<Vec<_>>()],
        )
        .await
        .expect("inserted rows")
    {
        inserted
            .entry(r.get(0))
            .or_default()
            .push(serde_json::json!({
                "id": r.get::<_, String>(2), "label": r.get::<_, String>(3),
                "type": r.get::<_, String>(4), "url": r.get::<_, String>(5),
                "position": r.get::<_, i32>(6),
            }));
        *per_user.entry(r.get(1)).or_default() += 1;
    }
    let total: usize = inserted.values().map(Vec::len).sum();
    assert!(total > 3000, "{total}");
    assert_eq!(json_summary(&live)["links_created"], total);

    // Every report line's links are the rows inserted for its profile.
    let mut reported = BTreeSet::new();
    let mut users = BTreeMap::new();
    for line in &report {
        for field in ["profile_id", "user_id", "links", "duplicates", "rejects"] {
            assert!(line.get(field).is_some(), "{field} missing: {line}");
        }
        let profile = line["profile_id"].as_str().expect("profile_id");
        users.insert(line["user_id"].as_str().expect("user_id").to_owned(), line);
        assert!(reported.insert(profile.to_owned()), "{profile} twice");
        let links: Vec<Value> = line["links"]
            .as_array()
            .expect("links")
            .iter()
            .map(|l| serde_json::json!({"id": l["id"], "label": l["label"], "type": l["type"], "url": l["url"], "position": l["position"]}))
            .collect();
        let rows = inserted.get(profile).cloned().unwrap_or_default();
        assert_eq!(links, rows, "profile {profile}");
    }
    for profile in inserted.keys() {
        assert!(
            reported.contains(profile),
            "{profile} got rows but is not in the report"
        );
    }
    // The users' own rows were deduplicated against, and shifted positions.
    for (profile, url) in &deduplicated {
        let line = report
            .iter()
            .find(|l| l["profile_id"] == profile.as_str())
            .expect("line");
        assert!(
            line["links"]
                .as_array()
                .expect("links")
                .iter()
                .all(|l| l["url"] != url.as_str()),
            "{line}"
        );
        assert!(
            line["duplicates"]
                .as_array()
                .expect("duplicates")
                .iter()
                .any(|d| d["reason"] == "existing"),
            "{line}"
        );
        assert_eq!(line["links"][0]["position"], 1, "{line}");
    }

    // The text: per-profile blocks that agree with the rows and the report.
    let text = stdout(&dry);
    let (blocks, summary) = parse_dry_text(&text);
    assert_eq!(
        summary.last().map(String::as_str),
        Some("This was a DRY RUN. No changes were made.")
    );
    assert!(summary
        .iter()
        .any(|l| l.trim_start().starts_with("links created")));
    for (user, block) in &blocks {
        assert_eq!(
            block.found,
            per_user.get(user).copied().unwrap_or(0),
            "Found N for {user}"
        );
        let line = users.get(user).expect("user in the report");
        let expected: Vec<String> = line["links"]
            .as_array()
            .expect("links")
            .iter()
            .map(|l| {
                format!(
                    "  - {} ({}): {}",
                    l["label"].as_str().expect("label"),
                    l["type"].as_str().expect("type"),
                    l["url"].as_str().expect("url")
                )
            })
            .collect();
        assert_eq!(block.links, expected, "{user}");
        let mut reasons: Vec<String> = ["duplicates", "rejects"]
            .iter()
            .flat_map(|k| line[*k].as_array().expect("array").iter())
            .map(|s| s["reason"].as_str().expect("reason").to_owned())
            .collect();
        let mut shown = block.skipped.clone();
        reasons.sort();
        shown.sort();
        assert_eq!(shown, reasons, "skipped lines of {user}");
    }
    for user in per_user.keys() {
        assert!(blocks.contains_key(user), "{user} got rows, not shown");
    }
    assert!(
        blocks.values().any(|b| !b.skipped.is_empty()),
        "the generated data has skipped values"
    );

    // The summary figures are the live run's.
    let (d, l) = (json_summary(&dry_json), json_summary(&live));
    for f in FIGURES {
        assert_eq!(d[f], l[f], "{f}: dry {d} live {l}");
    }
    assert_eq!(d["rejects"], l["rejects"]);
    assert_eq!(d["mode"], "dry-run");

    // -q: the summary only.
    let q = stdout(&quiet);
    assert!(!q.lines().any(|l| l.starts_with("Profile ")), "{q}");
    assert!(q.starts_with("Summary (dry-run)"), "{q}");
    assert!(
        q.trim_end()
            .ends_with("This was a DRY RUN. No changes were made."),
        "{q}"
    );
}

/// `--report -` owns stdout: JSONL only (the runbook lines are left out and
/// the summary goes to stderr).
#[tokio::test]
async fn report_to_stdout_is_pure_jsonl() {
    let db = TestDb::new("dry_report_out").await;
    db.generate(500);
    let json = db.run(&["run", "--dry-run", "--format", "json"]);
    assert_success(&json);
    let planned = json_summary(&json)["profiles_planned"]
        .as_u64()
        .expect("planned");
    assert!(planned > 400);

    let out = db.run(&["run", "--dry-run", "--report", "-"]);
    assert_success(&out);
    let text = stdout(&out);
    let mut lines = 0u64;
    for line in text.lines() {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}"));
        for field in ["profile_id", "user_id", "links", "duplicates", "rejects"] {
            assert!(v.get(field).is_some(), "{field} missing: {line}");
        }
        lines += 1;
    }
    assert_eq!(lines, planned);
    assert!(
        stderr(&out).contains("Summary (dry-run)"),
        "the summary goes to stderr: {}",
        stderr(&out)
    );
}

#[tokio::test]
async fn limit_plans_exactly_that_many_profiles() {
    let db = TestDb::new("dry_limit").await;
    db.generate(300);
    let out = db.run(&["run", "--dry-run", "--limit", "10", "--format", "json"]);
    assert_success(&out);
    let summary = json_summary(&out);
    assert_eq!(summary["profiles_planned"], 10, "{summary}");
    assert_eq!(summary["status"], "partial", "{summary}");

    let path = std::env::temp_dir().join(format!("{}.jsonl", db.name));
    let out = db.run(&[
        "run",
        "--dry-run",
        "--limit",
        "10",
        "--report",
        path.to_str().expect("path"),
    ]);
    assert_success(&out);
    let planned: Vec<String> = std::fs::read_to_string(&path)
        .expect("report")
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("JSON line");
            v["profile_id"].as_str().expect("profile_id").to_owned()
        })
        .collect();
    let _ = std::fs::remove_file(&path);
    assert_eq!(planned.len(), 10);
    assert!(!state_schema_exists(&db).await);

    // The same ten profiles a live canary of 10 migrates.
    let live = db.run(&["run", "--limit", "10", "--format", "json"]);
    assert_success(&live);
    assert_eq!(json_summary(&live)["profiles_planned"], 10);
    let migrated: Vec<String> = db
        .texts("SELECT profile_id FROM relink.ledger ORDER BY profile_id")
        .await
        .into_iter()
        .collect();
    let mut sorted = planned.clone();
    sorted.sort();
    assert_eq!(sorted, migrated);
}

/// After a run stopped at `--limit` (or interrupted), the next `run` resumes
/// after its checkpoint; the dry run must plan that same resumed run, even
/// when a profile before the checkpoint changed since.
#[tokio::test]
async fn after_a_partial_run_the_dry_run_plans_the_resumed_run() {
    let db = TestDb::new("dry_resume").await;
    db.generate(300);
    let out = db.run(&[
        "run",
        "--limit",
        "20",
        "--chunk-size",
        "5",
        "--format",
        "json",
    ]);
    assert_success(&out);
    assert_eq!(json_summary(&out)["status"], "partial");
    // A profile the partial run migrated gets a new legacy URL.
    db.change_migrated_legacy("object", r#"{"zz": "https://resumed.example.org/"}"#)
        .await;

    let dry = db.run(&["run", "--dry-run", "--format", "json"]);
    assert_success(&dry);
    let live = db.run(&["run", "--format", "json"]);
    assert_success(&live);
    let (d, l) = (json_summary(&dry), json_summary(&live));
    assert_eq!(l["run_id"], 1, "the live run resumed run 1: {l}");
    for f in FIGURES {
        assert_eq!(d[f], l[f], "{f}: dry {d} live {l}");
    }
    assert_eq!(d["rejects"], l["rejects"]);
}
