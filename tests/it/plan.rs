//! Plan and apply (SPEC §15): `run --dry-run --plan-out`, `run --plan`,
//! `verify --plan` and the forecast, against a real server through the
//! binary. The review commands of docs/plan-and-apply.md are run here too
//! (`the_review_commands_of_the_docs_work`).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

use crate::application::{self, Kind};
use crate::harness::{
    assert_code, assert_no_panic, assert_success, json_summary, scratch, send_signal, stderr,
    stdout, verify_check, TestDb,
};

/// A scratch directory for one test's plans, removed when it passes.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Self {
        Self(scratch(&format!("plan-{tag}")))
    }

    fn file(&self, name: &str) -> String {
        self.0
            .join(name)
            .to_str()
            .expect("UTF-8 temp dir")
            .to_owned()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// `run --dry-run --plan-out FILE` (plus `extra`), which must succeed.
fn make_plan(db: &TestDb, file: &str, extra: &[&str]) -> Output {
    let mut args = vec!["run", "--dry-run", "-q", "--plan-out", file];
    args.extend_from_slice(extra);
    let out = db.run(&args);
    assert_success(&out);
    out
}

/// `run --plan FILE --format json` (plus `extra`).
fn apply(db: &TestDb, file: &str, extra: &[&str]) -> Output {
    let mut args = vec!["run", "--plan", file, "--format", "json"];
    args.extend_from_slice(extra);
    db.run(&args)
}

/// The plan's lines, decompressed: header, then records.
fn lines(file: &str) -> Vec<String> {
    let bytes = std::fs::read(file).expect("plan");
    let text = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut flate2::read::MultiGzDecoder::new(bytes.as_slice()),
            &mut text,
        )
        .expect("gunzip");
        text
    } else {
        String::from_utf8(bytes).expect("UTF-8 plan")
    };
    text.lines().map(str::to_owned).collect()
}

fn header(file: &str) -> Value {
    serde_json::from_str(&lines(file)[0]).expect("header JSON")
}

/// The ledger's content without times (run ids included).
async fn ledger(db: &TestDb) -> String {
    db.checksum("(SELECT user_id, profile_id, run_id, fingerprint, link_keys, kept_keys FROM relink.ledger)")
        .await
}

/// Nothing written: `profile_links` as it was (`before`, its checksum),
/// and no state schema.
async fn assert_nothing_written(db: &TestDb, out: &Output, why: &str, before: &str) {
    assert_code(out, 1);
    assert!(
        stderr(out).contains(why),
        "the refusal does not say {why:?}: {}",
        stderr(out)
    );
    assert_eq!(db.links_checksum().await, before, "links were written");
    assert_eq!(
        db.count("SELECT count(*) FROM pg_namespace WHERE nspname = 'relink'")
            .await,
        0,
        "the state schema was created"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_then_apply_writes_exactly_what_a_plain_run_writes_and_a_second_apply_nothing() {
    let mut planned = TestDb::new("pl_same").await;
    planned.generate(600);
    let plain = TestDb::clone_of(&mut planned, "pl_same_plain").await;
    let dir = Dir::new("same");
    let file = dir.file("plan.jsonl.gz");
    let before = planned.links_checksum().await;
    let dry = make_plan(&planned, &file, &["--format", "json"]);
    assert!(
        std::fs::read(&file)
            .expect("plan")
            .starts_with(&[0x1f, 0x8b]),
        "a .gz plan is gzip"
    );
    let head = header(&file);
    let dry = json_summary(&dry);
    assert_eq!(head["summary"]["links_created"], dry["links_created"]);
    assert_eq!(head["records"], dry["profiles_planned"]);
    assert_eq!(
        lines(&file).len() as u64 - 1,
        head["records"].as_u64().expect("records")
    );
    // Nothing written by the dry run, the plan aside.
    assert_eq!(planned.links_checksum().await, before);

    let applied = apply(&planned, &file, &["--chunk-size", "97"]);
    assert_success(&applied);
    let applied = json_summary(&applied);
    let ran = plain.run(&["run", "--format", "json", "--chunk-size", "97"]);
    assert_success(&ran);
    let ran = json_summary(&ran);
    assert_eq!(applied["links_created"], ran["links_created"]);
    assert_eq!(applied["links_created"], dry["links_created"]);
    assert_eq!(applied["drifted"], 0);
    assert_eq!(
        planned.links_checksum().await,
        plain.links_checksum().await,
        "ids, labels, urls, types and positions differ from a plain run's"
    );
    assert_eq!(ledger(&planned).await, ledger(&plain).await);
    assert_eq!(
        planned
            .checksum(
                "(SELECT run_id, profile_id, source_key, raw_value, reason FROM relink.rejects)"
            )
            .await,
        plain
            .checksum(
                "(SELECT run_id, profile_id, source_key, raw_value, reason FROM relink.rejects)"
            )
            .await,
    );

    let links = planned.links_checksum().await;
    let settled = ledger(&planned).await;
    let again = apply(&planned, &file, &[]);
    assert_success(&again);
    let again = json_summary(&again);
    assert_eq!(again["links_created"], 0);
    assert_eq!(again["profiles_planned"], 0);
    assert_eq!(again["drifted"], 0);
    assert_eq!(planned.links_checksum().await, links);
    assert_eq!(ledger(&planned).await, settled);

    let (out, report) = planned.verify_json(&["--plan", &file, "--strict"]);
    assert_success(&out);
    assert_eq!(report["applied"], head["records"]);
    assert_eq!(
        (report["drifted"].as_u64(), report["pending"].as_u64()),
        (Some(0), Some(0))
    );
    let (out, report) = planned.verify_json(&[]);
    assert_success(&out);
    assert_eq!(verify_check(&report, "profiles pending").1, 0);
}

/// A migrated, object-shaped profile of run `run`, `n`th in user order:
/// (profile id, user id).
async fn migrated_by(db: &TestDb, run: i64, n: i64) -> (String, String) {
    let row = db
        .client
        .query_one(
            "SELECT p.id, p.\"userId\" FROM profiles p
              WHERE jsonb_typeof(p.\"socialLinks\") = 'object'
                AND EXISTS (SELECT 1 FROM relink.ledger l WHERE l.profile_id = p.id AND l.run_id = $1
                              AND cardinality(l.link_keys) > 0)
              ORDER BY p.\"userId\" OFFSET $2 LIMIT 1",
            &[&run, &n],
        )
        .await
        .expect("a migrated profile");
    (row.get(0), row.get(1))
}

/// Adds a link to a profile's legacy object: it becomes pending.
async fn add_legacy_link(db: &TestDb, profile: &str, url: &str) {
    db.client
        .execute(
            "UPDATE profiles SET \"socialLinks\" = \"socialLinks\" || jsonb_build_object('zzplan', $2::text) WHERE id = $1",
            &[&profile, &url],
        )
        .await
        .expect("edit the legacy value");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_drift_is_left_pending_reported_and_counted() {
    let db = TestDb::new("pl_drift").await;
    db.generate(400);
    // Run 1 migrates the first 100 users, run 2 the rest.
    assert_success(&db.run(&["run", "-q", "--limit", "100"]));
    assert_success(&db.run(&["run", "-q", "--restart"]));
    // The first in user order is the one another plan migrates first.
    let (migrated, edited, rows_changed, deleted, kept) = (
        migrated_by(&db, 1, 0).await,
        migrated_by(&db, 1, 1).await,
        migrated_by(&db, 1, 2).await,
        migrated_by(&db, 1, 3).await,
        migrated_by(&db, 1, 4).await,
    );
    let purged = migrated_by(&db, 2, 0).await;
    for (i, (profile, _)) in [&migrated, &purged, &edited, &rows_changed, &deleted, &kept]
        .iter()
        .enumerate()
    {
        add_legacy_link(&db, profile, &format!("https://plan-{i}.example.org/")).await;
    }
    let dir = Dir::new("drift");
    let (file, other) = (dir.file("plan.jsonl"), dir.file("first.jsonl"));
    make_plan(&db, &file, &[]);
    assert_eq!(header(&file)["records"], 6);
    // Another plan of the first pending profile in user order, applied
    // first: that profile is migrated by another run meanwhile.
    make_plan(&db, &other, &["--limit", "1"]);
    assert!(
        lines(&other)[1].contains(&migrated.0),
        "the first pending profile is not {migrated:?}"
    );
    assert_success(&apply(&db, &other, &[]));
    // Run 2 purged: its profiles become pending without a ledger row.
    assert_success(&db.run(&["purge", "--run", "2", "--yes", "-q"]));
    db.client
        .execute(
            "UPDATE profiles SET \"socialLinks\" = \"socialLinks\" || '{\"web\": \"https://edited-again.example.org/\"}' WHERE id = $1",
            &[&edited.0],
        )
        .await
        .expect("edit again");
    db.client
        .execute(
            "INSERT INTO profile_links (id, \"userId\", \"profileId\", label, url, type, position, \"updatedAt\")
             SELECT 'app-row', $1, $2, 'Mine', 'https://mine.example.org/', 'other', max(position) + 1, now()
               FROM profile_links WHERE \"userId\" = $1",
            &[&rows_changed.1, &rows_changed.0],
        )
        .await
        .expect("the application adds a row");
    db.client
        .batch_execute(&format!(
            "DELETE FROM profiles WHERE id = '{}'; DELETE FROM users WHERE id = '{}'",
            deleted.0, deleted.1
        ))
        .await
        .expect("delete the account");
    // A profile created after the plan.
    db.client
        .batch_execute(
            "INSERT INTO users (id) VALUES ('zz-late-user');
             INSERT INTO profiles (id, \"userId\", \"socialLinks\") VALUES ('zz-late', 'zz-late-user', '{\"website\": \"https://late.example.org\"}')",
        )
        .await
        .expect("a new profile");
    let before = db.links_checksum().await;
    let rows_of = |user: &str| {
        format!("(SELECT id, url, position FROM profile_links WHERE \"userId\" = '{user}')")
    };
    let mut untouched = Vec::new();
    for user in [
        &migrated.1,
        &purged.1,
        &edited.1,
        &rows_changed.1,
        &"zz-late-user".to_owned(),
    ] {
        untouched.push(db.checksum(&rows_of(user)).await);
    }

    let report = dir.file("drift.jsonl");
    let metrics = dir.file("apply.prom");
    let out = db.run(&[
        "run",
        "--plan",
        &file,
        "--report",
        &report,
        "--metrics-file",
        &metrics,
    ]);
    assert_success(&out);
    let text = stdout(&out);
    let kinds = [
        (&migrated, "migrated", "migrated by another run"),
        (&purged, "purged", "purged"),
        (&edited, "edited", "legacy value edited"),
        (
            &rows_changed,
            "rows_changed",
            "the user's profile_links rows changed",
        ),
        (&deleted, "deleted", "profile deleted"),
    ];
    let reported: Vec<Value> = std::fs::read_to_string(&report)
        .expect("report")
        .lines()
        .map(|l| serde_json::from_str(l).expect("report JSON"))
        .collect();
    assert_eq!(reported.len(), kinds.len(), "{reported:?}");
    for ((profile, user), kind, said) in kinds {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("Profile {user}: drifted")) && l.contains(said)),
            "no drift line ({said}) for {user}:\n{text}"
        );
        assert!(
            reported
                .iter()
                .any(|r| r["profile_id"] == profile.as_str() && r["drift"] == kind),
            "{profile} not reported as {kind}: {reported:?}"
        );
    }
    assert!(
        text.contains(&format!("  {:<28} {:>12}", "drifted from the plan", 5)),
        "{text}"
    );
    let prom = std::fs::read_to_string(&metrics).expect("metrics file");
    assert!(
        prom.lines()
            .any(|l| l.starts_with("relink_profiles_drifted_total{") && l.ends_with(" 5")),
        "{prom}"
    );
    // Drifted profiles and the late one untouched; the kept one written.
    for (user, sum) in [
        &migrated.1,
        &purged.1,
        &edited.1,
        &rows_changed.1,
        &"zz-late-user".to_owned(),
    ]
    .iter()
    .zip(&untouched)
    {
        assert_eq!(
            &db.checksum(&rows_of(user)).await,
            sum,
            "user {user} was written"
        );
    }
    assert_ne!(db.links_checksum().await, before);
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM profile_links WHERE \"userId\" = '{}' AND url = 'https://plan-5.example.org/'",
            kept.1
        ))
        .await,
        1
    );
    let (out, verdict) = db.verify_json(&["--plan", &file]);
    assert_success(&out);
    assert_eq!(
        (verdict["applied"].as_u64(), verdict["drifted"].as_u64()),
        (Some(1), Some(5)),
        "{verdict}"
    );

    // A plain run migrates the rest.
    assert_success(&db.run(&["run", "-q"]));
    assert_eq!(
        db.count("SELECT count(*) FROM profile_links WHERE url IN ('https://edited-again.example.org/', 'https://late.example.org/', 'https://plan-3.example.org/')").await,
        3
    );
    assert_success(&db.run(&["verify", "--strict"]));
}

/// Rewrites the plan's header with `change`, signed again as relink signs
/// it (a forged plan: the one way to get another rules digest in a test).
fn forge_header(file: &str, to: &str, change: impl FnOnce(&mut relink::plan_file::Header)) {
    let all = lines(file);
    let mut value: Value = serde_json::from_str(&all[0]).expect("header");
    value
        .as_object_mut()
        .and_then(|m| m.remove("header_sha256"))
        .expect("header_sha256");
    let mut header: relink::plan_file::Header = serde_json::from_value(value).expect("header");
    change(&mut header);
    let mut out = std::fs::File::create(to).expect("forged plan");
    out.write_all(&relink::plan_file::header_line(&header).expect("line"))
        .expect("write");
    for line in &all[1..] {
        writeln!(out, "{line}").expect("write");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_truncated_foreign_expired_and_other_rules_plans_are_refused() {
    let mut db = TestDb::new("pl_refuse").await;
    db.generate(200);
    let other = TestDb::clone_of(&mut db, "pl_refuse_other").await;
    let other_before = other.links_checksum().await;
    let dir = Dir::new("refuse");
    let file = dir.file("plan.jsonl");
    make_plan(&db, &file, &[]);
    let before = db.links_checksum().await;
    let bytes = std::fs::read(&file).expect("plan");

    let truncated = dir.file("truncated.jsonl");
    std::fs::write(&truncated, &bytes[..bytes.len() - 300]).expect("write");
    assert_nothing_written(
        &db,
        &apply(&db, &truncated, &[]),
        "damaged or truncated",
        &before,
    )
    .await;

    // A whole record lost at the end is caught too.
    let short = dir.file("short.jsonl");
    let all = lines(&file);
    std::fs::write(&short, all[..all.len() - 1].join("\n") + "\n").expect("write");
    assert_nothing_written(
        &db,
        &apply(&db, &short, &[]),
        "damaged or truncated",
        &before,
    )
    .await;

    // One record changed, still valid JSON.
    let damaged = dir.file("damaged.jsonl");
    let mut changed = all.clone();
    changed[3] = changed[3].replacen("\"position\":0", "\"position\":7", 1);
    assert_ne!(changed[3], all[3], "record 3 has a link at position 0");
    std::fs::write(&damaged, changed.join("\n") + "\n").expect("write");
    assert_nothing_written(
        &db,
        &apply(&db, &damaged, &[]),
        "damaged or truncated",
        &before,
    )
    .await;

    let gz = dir.file("cut.jsonl.gz");
    make_plan(&db, &gz, &[]);
    let gz_bytes = std::fs::read(&gz).expect("plan");
    std::fs::write(&gz, &gz_bytes[..gz_bytes.len() / 2]).expect("write");
    assert_nothing_written(&db, &apply(&db, &gz, &[]), "damaged or truncated", &before).await;

    let rules = dir.file("rules.jsonl");
    forge_header(&file, &rules, |h| h.rules_digest = "0".repeat(64));
    assert_nothing_written(&db, &apply(&db, &rules, &[]), "other rules", &before).await;

    assert_nothing_written(
        &other,
        &apply(&other, &file, &[]),
        "is for database",
        &other_before,
    )
    .await;

    tokio::time::sleep(Duration::from_millis(1200)).await;
    let out = apply(&db, &file, &["--plan-max-age", "1s"]);
    assert_nothing_written(&db, &out, "longer than --plan-max-age", &before).await;

    // The same plan within its age applies.
    assert_success(&apply(&db, &file, &[]));
    assert_ne!(db.links_checksum().await, before);
}

/// The forecast figures of a dry run's JSON summary.
fn forecast_of(out: &Output) -> Value {
    json_summary(out)["forecast"].clone()
}

#[track_caller]
fn assert_close(a: f64, b: f64, what: &str) {
    assert!(
        (a - b).abs() <= 1e-6 * b.abs().max(1.0),
        "{what}: {a} != {b}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_forecast_uses_the_last_completed_run_or_a_rehearsal_and_says_when_it_has_no_basis() {
    let db = TestDb::new("pl_forecast").await;
    db.generate(300);
    let dir = Dir::new("forecast");
    let none = db.run(&["run", "--dry-run", "-q"]);
    assert_success(&none);
    assert!(
        stdout(&none).contains("Forecast: no basis"),
        "{}",
        stdout(&none)
    );
    let none = db.run(&["run", "--dry-run", "-q", "--format", "json"]);
    assert_eq!(forecast_of(&none)["basis"], "none");

    let run = db.run(&["run", "-q", "--format", "json"]);
    assert_success(&run);
    let rehearsal = dir.file("rehearsal.json");
    std::fs::write(&rehearsal, stdout(&run)).expect("save the summary");
    let run = json_summary(&run);
    // Pending links again: 40 profiles get one more.
    db.client
        .batch_execute(
            "UPDATE profiles SET \"socialLinks\" = \"socialLinks\" || jsonb_build_object('zzmore', 'https://more-' || id || '.example.org/')
              WHERE id IN (SELECT id FROM profiles WHERE jsonb_typeof(\"socialLinks\") = 'object' ORDER BY id LIMIT 40)",
        )
        .await
        .expect("edit");
    let dry = db.run(&["run", "--dry-run", "-q", "--format", "json"]);
    assert_success(&dry);
    let links = json_summary(&dry)["links_created"].as_f64().expect("links");
    assert_eq!(links, 40.0);
    let f = forecast_of(&dry);
    let recorded = db
        .client
        .query_one(
            "SELECT id, (counters->>'links_created')::float8, (counters->>'elapsed_ms')::float8 / 1000,
                    (counters->>'wal_bytes')::float8
               FROM relink.runs WHERE status = 'completed' ORDER BY id DESC LIMIT 1",
            &[],
        )
        .await
        .expect("the run's figures");
    let (id, created, seconds, wal): (i64, f64, f64, f64) = (
        recorded.get(0),
        recorded.get(1),
        recorded.get(2),
        recorded.get(3),
    );
    assert_eq!(created, run["links_created"].as_f64().expect("links"));
    assert!(
        f["basis"]
            .as_str()
            .expect("basis")
            .starts_with(&format!("run {id} ")),
        "{f}"
    );
    assert_eq!(f["links"], 40);
    let rate = created / seconds;
    assert_close(
        f["links_per_second"].as_f64().expect("rate"),
        rate,
        "links/s",
    );
    assert_close(
        f["seconds"].as_f64().expect("seconds"),
        links / rate,
        "duration",
    );
    assert_close(
        f["wal_bytes_per_link"].as_f64().expect("WAL/link"),
        wal / created,
        "WAL/link",
    );
    assert_eq!(
        f["wal_bytes"].as_f64(),
        Some((wal / created * links).round())
    );
    let text = db.run(&["run", "--dry-run", "-q"]);
    assert!(
        stdout(&text).contains(&format!(
            "Forecast of the live run, at the rates of run {id} "
        )),
        "{}",
        stdout(&text)
    );

    let dry = db.run(&[
        "run",
        "--dry-run",
        "-q",
        "--format",
        "json",
        "--forecast-from",
        &rehearsal,
    ]);
    assert_success(&dry);
    let f = forecast_of(&dry);
    assert_eq!(f["basis"], format!("rehearsal {rehearsal}"));
    let rate =
        run["links_created"].as_f64().expect("links") / run["elapsed_seconds"].as_f64().expect("s");
    assert_close(
        f["links_per_second"].as_f64().expect("rate"),
        rate,
        "rehearsal links/s",
    );
    assert_close(
        f["seconds"].as_f64().expect("s"),
        links / rate,
        "rehearsal duration",
    );

    // The plan carries it; the apply sets its actual figures beside it.
    let file = dir.file("plan.jsonl");
    make_plan(&db, &file, &["--forecast-from", &rehearsal]);
    assert_eq!(header(&file)["forecast"]["basis"], f["basis"]);
    let out = db.run(&["run", "--plan", &file]);
    assert_success(&out);
    assert!(
        stdout(&out).contains(&format!("  forecast (rehearsal {rehearsal}) / actual")),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains(&format!("{:>12} / 40", 40)),
        "{}",
        stdout(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apply_killed_mid_run_then_resumed_equals_an_uninterrupted_apply() {
    let mut killed = TestDb::new("pl_kill").await;
    killed.generate(3000);
    let clean = TestDb::clone_of(&mut killed, "pl_kill_clean").await;
    let dir = Dir::new("kill");
    let (file_k, file_c) = (dir.file("killed.jsonl"), dir.file("clean.jsonl"));
    make_plan(&killed, &file_k, &[]);
    make_plan(&clean, &file_c, &[]);

    let child = killed.spawn(&[
        "run",
        "--plan",
        &file_k,
        "--chunk-size",
        "40",
        "--pause",
        "30ms",
    ]);
    let mut waited = Duration::ZERO;
    while killed
        .count("SELECT count(*) FROM pg_namespace WHERE nspname = 'relink'")
        .await
        == 0
        || killed
            .count("SELECT count(*) FROM relink.runs WHERE checkpoint::bigint >= 400")
            .await
            == 0
    {
        assert!(
            waited < Duration::from_secs(60),
            "the apply never got going"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += Duration::from_millis(20);
    }
    send_signal(child.pid, "KILL");
    let out = child.wait(Duration::from_secs(30)).await;
    assert!(!out.status.success());
    let records = header(&file_k)["records"].as_u64().expect("records");
    let done = killed.count("SELECT count(*) FROM relink.ledger").await;
    let done = u64::try_from(done).expect("a count");
    assert!(
        done > 0 && done < records,
        "killed after {done} of {records}"
    );

    let status = killed.status_json(&[]);
    assert_eq!(
        status["unfinished"]["checkpoint_of"], "plan record",
        "{status}"
    );
    assert_eq!(
        status["unfinished"]["resume_with"],
        format!("relink run --plan {file_k}")
    );
    let resumed = killed.run(&["run", "--plan", &file_k, "--format", "json"]);
    assert_success(&resumed);
    assert!(
        stderr(&resumed).contains("resuming run 1"),
        "{}",
        stderr(&resumed)
    );
    assert_eq!(json_summary(&resumed)["drifted"], 0);
    assert_success(&apply(&clean, &file_c, &[]));
    assert_eq!(killed.links_checksum().await, clean.links_checksum().await);
    assert_eq!(ledger(&killed).await, ledger(&clean).await);
    let (out, report) = killed.verify_json(&["--plan", &file_k, "--strict"]);
    assert_success(&out);
    assert_eq!(report["applied"].as_u64(), Some(records));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_apply_beside_an_application_writing_stays_correct() {
    let db = TestDb::new("pl_online").await;
    db.generate(3000);
    let dir = Dir::new("online");
    let file = dir.file("plan.jsonl");
    make_plan(&db, &file, &[]);
    let accounts = application::accounts(&db).await;
    let running = application::start(&db.url, Kind::KeepsContract, &accounts, 3).await;
    let report = dir.file("drifted.jsonl");
    let child = db.spawn(&[
        "run",
        "--plan",
        &file,
        "--format",
        "json",
        "--report",
        &report,
        "--target-chunk-time",
        "100ms",
        "--max-rate",
        "1500",
    ]);
    let out = child.wait(Duration::from_secs(180)).await;
    let activity = running.stop().await;
    assert_success(&out);
    assert_no_panic(&out);
    assert!(
        activity.failures.is_empty(),
        "application transactions failed: {:?}",
        activity.failures
    );
    assert!(activity.total() > 100, "{}", activity.describe());
    let summary = json_summary(&out);
    let drifted = summary["drifted"].as_u64().expect("drifted");
    let reported = std::fs::read_to_string(&report)
        .expect("report")
        .lines()
        .count();
    assert_eq!(drifted, reported as u64);
    assert!(
        drifted > 0,
        "the application changed nothing the plan held: {}",
        activity.describe()
    );
    let (out, checks) = db.verify_json(&[]);
    assert_success(&out);
    for check in [
        "duplicate (userId, comparison key) pairs",
        "users with duplicate positions",
    ] {
        assert_eq!(
            verify_check(&checks, check),
            ("ok".to_owned(), 0),
            "{check}"
        );
    }
    // The rest, drifted ones included, by a plain run.
    assert_success(&db.run(&["run", "-q"]));
    application::check_outcome(&db, &activity).await;
    assert_success(&db.run(&["verify", "--strict"]));
}

/// The review commands of docs/plan-and-apply.md, each run with `sh` on a
/// real plan (when `jq` is installed), with the output they must give.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_review_commands_of_the_docs_work() {
    if Command::new("jq").arg("--version").output().is_err() {
        eprintln!("jq is not installed: the review commands are not run");
        return;
    }
    let db = TestDb::new("pl_review").await;
    db.generate(300);
    let dir = Dir::new("review");
    let file = dir.file("plan.jsonl.gz");
    make_plan(&db, &file, &[]);
    let docs = include_str!("../../docs/plan-and-apply.md");
    let block = docs
        .split_once("<!-- review commands -->")
        .and_then(|(_, after)| after.trim_start().strip_prefix("```sh tested\n"))
        .and_then(|b| b.split_once("```"))
        .expect("docs/plan-and-apply.md has a ```sh tested block after <!-- review commands -->")
        .0;
    let all = lines(&file);
    let records: Vec<Value> = all[1..]
        .iter()
        .map(|l| serde_json::from_str(l).expect("record"))
        .collect();
    let head = header(&file);
    let links: usize = records
        .iter()
        .map(|r| r["links"].as_array().map_or(0, Vec::len))
        .sum();
    let mut ran = 0;
    for command in block
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("export PLAN=") && !l.trim().is_empty())
    {
        let out = Command::new("sh")
            .arg("-c")
            .arg(command)
            .env("PLAN", &file)
            .current_dir(&dir.0)
            .output()
            .expect("sh");
        assert!(
            out.status.success(),
            "{command}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert!(!text.is_empty(), "{command} printed nothing");
        if command.contains("| jq -s length") && command.contains(".links[]") {
            assert_eq!(text, links.to_string(), "{command}");
        }
        if command.contains("head -n 1") && command.contains(".records") {
            assert!(
                text.contains(&head["records"].to_string()),
                "{command}: {text}"
            );
        }
        ran += 1;
    }
    assert!(ran >= 4, "only {ran} review commands");
}
