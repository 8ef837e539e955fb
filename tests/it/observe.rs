//! Observability (SPEC §14), driving the real binary: the metrics file
//! parsed with a real Prometheus text-format parser (and `promtool check
//! metrics` where installed) while runs and purges go and after they end,
//! checked against their `--format json` summaries; a concurrent reader
//! never sees part of a file; logs without colour codes off a terminal and
//! under `NO_COLOR`; the progress bar on a pseudo-terminal; and the
//! scheduling examples of docs/monitoring.md run or checked with the real
//! tools where installed.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus_parse::{LineInfo, Scrape, Value};
use serde_json::Value as Json;

use crate::harness::{
    assert_code, assert_stderr_has, assert_success, json_summary, scratch, send_signal, stderr,
    stdout, TestDb, REJECT_REASONS,
};

const BIN: &str = env!("CARGO_BIN_EXE_relink");

/// Families every file has, whatever the mode.
const COMMON: [&str; 7] = [
    "relink_run_id",
    "relink_run_status",
    "relink_start_time_seconds",
    "relink_last_success_timestamp_seconds",
    "relink_chunk_duration_seconds",
    "relink_chunk_duration_max_seconds",
    "relink_throttled_seconds_total",
];

/// A run's counters and the summary (`--format json`) key of each.
const RUN_FIGURES: [(&str, &str); 13] = [
    ("relink_profiles_scanned_total", "profiles_scanned"),
    ("relink_profiles_planned_total", "profiles_planned"),
    ("relink_profiles_migrated_total", "profiles_migrated"),
    ("relink_profiles_unchanged_total", "profiles_unchanged"),
    (
        "relink_profiles_already_present_total",
        "profiles_already_present",
    ),
    (
        "relink_profiles_without_valid_links_total",
        "profiles_without_valid_links",
    ),
    ("relink_profiles_gone_total", "profiles_gone"),
    ("relink_links_created_total", "links_created"),
    ("relink_duplicates_total", "duplicates"),
    ("relink_handles_expanded_total", "expanded"),
    ("relink_schemes_repaired_total", "repaired"),
    ("relink_rejects_total", "rejects"),
    ("relink_wal_bytes", "wal_bytes"),
];

/// A purge's counters and the summary key of each.
const PURGE_FIGURES: [(&str, &str); 4] = [
    ("relink_purge_profiles_total", "profiles"),
    ("relink_links_deleted_total", "links_deleted"),
    ("relink_links_kept_edited_total", "kept_edited"),
    ("relink_links_already_gone_total", "already_gone"),
];

const CAUSES: [&str; 4] = ["replica_lag", "throttle_query", "pause", "max_rate"];

/// A metrics file, parsed and checked complete.
struct Metrics {
    text: String,
    scrape: Scrape,
    mode: &'static str,
}

impl Metrics {
    /// Parses the whole text of a file or panics naming what is incomplete:
    /// it ends with a line feed, every line is a HELP, TYPE or sample line
    /// the parser reads, and every family of `mode` is there.
    #[track_caller]
    fn parse(text: &str, mode: &'static str) -> Self {
        assert!(
            text.ends_with('\n'),
            "the file does not end with a line feed:\n{text}"
        );
        for line in text.lines() {
            assert!(
                !matches!(LineInfo::parse(line), LineInfo::Ignored | LineInfo::Empty),
                "not a line of the text format: {line:?}\n{text}"
            );
        }
        let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parses");
        let metrics = Self {
            text: text.to_owned(),
            scrape,
            mode,
        };
        let typed = metrics.families();
        let own: Vec<&str> = if mode == "run" {
            RUN_FIGURES.iter().map(|(name, _)| *name).collect()
        } else {
            PURGE_FIGURES.iter().map(|(name, _)| *name).collect()
        };
        for name in COMMON.iter().copied().chain(own) {
            assert!(typed.contains(name), "family {name} missing:\n{text}");
            assert!(
                metrics.scrape.docs.contains_key(name),
                "family {name} has no help:\n{text}"
            );
        }
        assert_eq!(
            metrics.scrape.samples.len(),
            text.lines().filter(|l| !l.starts_with('#')).count()
                // Buckets of one histogram parse as one sample.
                - text.lines().filter(|l| l.contains("_bucket{")).count()
                + 1,
            "{text}"
        );
        metrics
    }

    /// The names of the `# TYPE` lines.
    fn families(&self) -> BTreeSet<String> {
        self.text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .map(str::to_owned)
            .collect()
    }

    /// The value of the series `name` with `labels` (and this file's mode).
    #[track_caller]
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<f64> = self
            .scrape
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .filter(|s| s.labels.get("mode") == Some(self.mode))
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .filter_map(|s| match s.value {
                Value::Counter(x) | Value::Gauge(x) | Value::Untyped(x) => Some(x),
                _ => None,
            })
            .collect();
        assert_eq!(found.len(), 1, "{name}{labels:?}:\n{}", self.text);
        found[0]
    }

    /// The one status whose series is 1 (all others 0).
    #[track_caller]
    fn status(&self) -> String {
        let ones: Vec<String> = self
            .scrape
            .samples
            .iter()
            .filter(|s| s.metric == "relink_run_status")
            .filter(|s| matches!(s.value, Value::Gauge(x) if x == 1.0))
            .filter_map(|s| s.labels.get("status").map(str::to_owned))
            .collect();
        assert_eq!(ones.len(), 1, "not one status: {ones:?}\n{}", self.text);
        ones[0].clone()
    }

    /// The chunk histogram's cumulative buckets (upper bound, count),
    /// checked consistent with its `_count`.
    #[track_caller]
    fn chunk_buckets(&self) -> Vec<(f64, f64)> {
        let buckets: Vec<(f64, f64)> = self
            .scrape
            .samples
            .iter()
            .find_map(|s| match &s.value {
                Value::Histogram(b) if s.metric == "relink_chunk_duration_seconds" => {
                    Some(b.iter().map(|h| (h.less_than, h.count)).collect())
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("no chunk histogram:\n{}", self.text));
        assert!(
            buckets
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
            "{buckets:?}"
        );
        let last = buckets.last().expect("buckets");
        assert_eq!(last.0, f64::INFINITY);
        assert_eq!(
            last.1,
            self.value("relink_chunk_duration_seconds_count", &[])
        );
        buckets
    }
}

/// Says so when a check is skipped for want of a tool.
fn note_missing(tool: &str, what: &str) {
    eprintln!("note: {tool} is not installed here; {what} skipped");
}

/// Whether `tool --version` runs.
fn installed(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `promtool check metrics` (Prometheus's own parser and linter) on `text`,
/// where promtool is installed.
#[track_caller]
fn promtool_check_metrics(text: &str) {
    if !installed("promtool") {
        note_missing("promtool", "`promtool check metrics`");
        return;
    }
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {said}\n{text}"
    );
}

/// `promtool <args> <file>` succeeds; `context` follows what it printed
/// in the failure message.
#[track_caller]
fn assert_promtool(args: &[&str], file: &Path, context: &str) {
    let out = Command::new("promtool")
        .args(args)
        .arg(file)
        .output()
        .expect("promtool");
    assert!(
        out.status.success(),
        "promtool {}:\n{}{}{context}",
        args.join(" "),
        stdout(&out),
        stderr(&out)
    );
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}

/// When run `id` finished, as the state schema has it.
/// The server's WAL position, in bytes.
async fn wal_position(db: &TestDb) -> f64 {
    db.client
        .query_one("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::float8", &[])
        .await
        .expect("WAL position")
        .get(0)
}

async fn finished_at(db: &TestDb, id: i64) -> f64 {
    db.client
        .query_one(
            "SELECT extract(epoch FROM finished_at)::float8 FROM relink.runs WHERE id = $1",
            &[&id],
        )
        .await
        .expect("run record")
        .get(0)
}

#[track_caller]
fn assert_close(metric: f64, summary: &Json, what: &str) {
    let expected = summary
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: not a number: {summary}"));
    assert!(
        (metric - expected).abs() < 1e-6,
        "{what}: metrics {metric}, summary {expected}"
    );
}

/// Every figure of a run's file equals its `--format json` summary.
#[track_caller]
fn assert_run_matches(metrics: &Metrics, summary: &Json) {
    assert_figures_match(metrics, summary, &RUN_FIGURES);
}

/// Every figure of a purge's file equals its `--format json` summary.
#[track_caller]
fn assert_purge_matches(metrics: &Metrics, summary: &Json) {
    assert_figures_match(metrics, summary, &PURGE_FIGURES);
}

/// The status, run id, `figures` (metric, summary key; `rejects` by
/// reason) and throttled seconds of a file equal its summary's.
#[track_caller]
fn assert_figures_match(metrics: &Metrics, summary: &Json, figures: &[(&str, &str)]) {
    assert_eq!(
        metrics.status(),
        summary["status"].as_str().expect("status")
    );
    assert_close(
        metrics.value("relink_run_id", &[]),
        &summary["run_id"],
        "run id",
    );
    for &(name, key) in figures {
        if key == "rejects" {
            for reason in REJECT_REASONS {
                let expected = summary["rejects"]
                    .get(reason)
                    .cloned()
                    .unwrap_or(Json::from(0));
                assert_close(
                    metrics.value(name, &[("reason", reason)]),
                    &expected,
                    reason,
                );
            }
        } else {
            assert_close(metrics.value(name, &[]), &summary[key], key);
        }
    }
    for cause in CAUSES {
        assert_close(
            metrics.value("relink_throttled_seconds_total", &[("cause", cause)]),
            &summary["throttled_seconds"][cause],
            cause,
        );
    }
}

/// Starts relink with `args` writing its metrics to `file` every
/// `interval` (`--metrics-file`, `--metrics-interval`).
fn spawn_with_metrics(
    db: &TestDb,
    file: &Path,
    interval: &str,
    args: &[&str],
) -> crate::harness::Spawned {
    let mut args = args.to_vec();
    args.extend_from_slice(&[
        "--metrics-file",
        path_str(file),
        "--metrics-interval",
        interval,
    ]);
    db.spawn(&args)
}

/// Reads `path` in a tight loop until relink exits: every read must be a
/// complete file. Returns the files seen (in order) and relink's output.
async fn watch(
    mut child: crate::harness::Spawned,
    path: &Path,
    mode: &'static str,
) -> (Vec<Metrics>, Output) {
    let mut seen: Vec<Metrics> = Vec::new();
    let read = |seen: &mut Vec<Metrics>| match std::fs::read_to_string(path) {
        Ok(text) => {
            if seen.last().map_or(true, |m| m.text != text) {
                seen.push(Metrics::parse(&text, mode));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => panic!("cannot read {}: {e}", path.display()),
    };
    let started = Instant::now();
    while !child.finished() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "relink still running"
        );
        read(&mut seen);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // The final file may have been written after the last read of the loop
    // (relink writes it just before it exits).
    read(&mut seen);
    let out = child.wait(Duration::from_secs(5)).await;
    (seen, out)
}

/// Counters never go down from one file to the next.
#[track_caller]
fn assert_monotonic(seen: &[Metrics], names: &[&str]) {
    for name in names {
        let values: Vec<f64> = seen.iter().map(|m| m.value(name, &[])).collect();
        assert!(
            values.windows(2).all(|w| w[0] <= w[1]),
            "{name} went down: {values:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_file_is_whole_during_a_run_and_a_purge_and_ends_equal_to_the_summary() {
    let db = TestDb::new("obs_metrics").await;
    db.generate(3000);
    let dir = scratch("obs_metrics");
    let run_file = dir.join("relink-run.prom");
    let started = unix_now();
    let wal_before = wal_position(&db).await;
    let child = spawn_with_metrics(
        &db,
        &run_file,
        "100ms",
        &[
            "run",
            "--format",
            "json",
            "--chunk-size",
            "50",
            "--pause",
            "40ms",
        ],
    );
    let (seen, out) = watch(child, &run_file, "run").await;
    assert_success(&out);
    let summary = json_summary(&out);
    // The run's WAL (SPEC §11): within what the server wrote meanwhile (the
    // whole server's, so other tests' WAL may add to both), and at least
    // the bytes of the rows it inserted.
    let wal_written = wal_position(&db).await - wal_before;
    let wal = summary["wal_bytes"].as_f64().expect("wal_bytes");
    let links = summary["links_created"].as_f64().expect("links");
    assert!(
        wal <= wal_written && wal >= links * 100.0,
        "wal_bytes {wal}, server {wal_written}, {links} links"
    );

    // During the run: several complete files, status running, counters
    // that only grow; the first one written before any chunk.
    let running: Vec<&Metrics> = seen.iter().filter(|m| m.status() == "running").collect();
    assert!(running.len() >= 3, "{} files while running", running.len());
    // The first run here: no success yet.
    assert_eq!(
        running[0].value("relink_last_success_timestamp_seconds", &[]),
        0.0
    );
    assert_monotonic(
        &seen,
        &[
            "relink_links_created_total",
            "relink_profiles_planned_total",
            "relink_profiles_scanned_total",
            "relink_profiles_unchanged_total",
            "relink_wal_bytes",
        ],
    );
    assert!(running
        .iter()
        .any(|m| m.value("relink_links_created_total", &[]) > 0.0));
    promtool_check_metrics(&running[running.len() / 2].text);

    // At the end: the summary's figures exactly.
    let last = Metrics::parse(
        &std::fs::read_to_string(&run_file).expect("final file"),
        "run",
    );
    assert_eq!(seen.last().map(|m| &m.text), Some(&last.text));
    assert_eq!(last.status(), "completed");
    assert_run_matches(&last, &summary);
    assert!(summary["links_created"].as_u64().expect("links") > 1000);
    assert!(
        summary["throttled_seconds"]["pause"]
            .as_f64()
            .expect("pause")
            > 0.0
    );
    // One observation per chunk of at most 50 profiles.
    let planned = summary["profiles_planned"].as_u64().expect("planned");
    let chunks = last.value("relink_chunk_duration_seconds_count", &[]);
    assert!(
        chunks >= planned.div_ceil(50) as f64 && chunks <= planned as f64,
        "{chunks} chunks"
    );
    let sum = last.value("relink_chunk_duration_seconds_sum", &[]);
    assert!(sum > 0.0);
    // The longest chunk: at least the mean, at most the total.
    let longest = last.value("relink_chunk_duration_max_seconds", &[]);
    assert!(
        longest >= sum / chunks - 1e-9 && longest <= sum + 1e-9,
        "longest {longest}, sum {sum}, chunks {chunks}"
    );
    last.chunk_buckets();
    let start = last.value("relink_start_time_seconds", &[]);
    assert!(start >= started - 1.0 && start <= unix_now(), "{start}");
    let success = last.value("relink_last_success_timestamp_seconds", &[]);
    assert!(
        (success - finished_at(&db, 1).await).abs() < 1e-3,
        "{success}"
    );
    assert!(success >= start);
    promtool_check_metrics(&last.text);

    // A purge: its own figures, in its own file beside the run's.
    let purge_file = dir.join("relink-purge.prom");
    let child = spawn_with_metrics(
        &db,
        &purge_file,
        "50ms",
        &["purge", "--yes", "--format", "json", "--chunk-size", "100"],
    );
    let (seen, out) = watch(child, &purge_file, "purge").await;
    assert_success(&out);
    let purge_summary = json_summary(&out);
    assert!(!seen.is_empty());
    assert_monotonic(
        &seen,
        &["relink_links_deleted_total", "relink_purge_profiles_total"],
    );
    let purge = Metrics::parse(
        &std::fs::read_to_string(&purge_file).expect("final file"),
        "purge",
    );
    assert_eq!(purge.status(), "completed");
    assert_purge_matches(&purge, &purge_summary);
    assert_close(
        purge.value("relink_links_deleted_total", &[]),
        &summary["links_created"],
        "the purge deletes what the run created",
    );
    let purge_id = purge_summary["run_id"].as_i64().expect("purge id");
    let success = purge.value("relink_last_success_timestamp_seconds", &[]);
    assert!((success - finished_at(&db, purge_id).await).abs() < 1e-3);
    promtool_check_metrics(&purge.text);
    // Both files in one textfile directory: no series in common.
    let series = |m: &Metrics| -> BTreeSet<String> {
        m.text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' '))
            .map(|(s, _)| s.to_owned())
            .collect()
    };
    assert!(series(&last).is_disjoint(&series(&purge)));
    // Nothing else is left in the directory (no temporary files).
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["relink-purge.prom", "relink-run.prom"]);
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_run_ends_its_file_interrupted_and_keeps_the_last_success() {
    let db = TestDb::migrated("obs_interrupt", 1500).await;
    let first_success = finished_at(&db, 1).await;
    // About half the legacy values change: the next run migrates those and
    // counts the others unchanged, as it goes.
    db.batch(
        "UPDATE profiles SET \"socialLinks\" = jsonb_build_array('https://example.org/' || id)
              WHERE \"socialLinks\" IS NOT NULL AND md5(id) < '8'",
    )
    .await;
    let dir = scratch("obs_interrupt");
    let file = dir.join("relink-run.prom");
    let mut child = spawn_with_metrics(
        &db,
        &file,
        "50ms",
        &[
            "run",
            "--format",
            "json",
            "--chunk-size",
            "20",
            "--pause",
            "100ms",
        ],
    );
    // Signal once a file shows links created and profiles unchanged.
    let started = Instant::now();
    let mut seen = Vec::new();
    loop {
        assert!(
            !child.finished(),
            "the run ended before it could be interrupted"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no links in the metrics file"
        );
        if let Ok(text) = std::fs::read_to_string(&file) {
            let metrics = Metrics::parse(&text, "run");
            assert_eq!(metrics.status(), "running");
            // Read at the start, from the state schema: run 1's finish.
            let success = metrics.value("relink_last_success_timestamp_seconds", &[]);
            assert!(
                (success - first_success).abs() < 1e-3,
                "{success} vs {first_success}"
            );
            let done = metrics.value("relink_links_created_total", &[]) > 0.0
                && metrics.value("relink_profiles_unchanged_total", &[]) > 0.0;
            seen.push(metrics);
            if done {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_monotonic(
        &seen,
        &[
            "relink_links_created_total",
            "relink_profiles_scanned_total",
            "relink_profiles_unchanged_total",
            "relink_wal_bytes",
        ],
    );
    send_signal(child.pid, "INT");
    let out = child.wait(Duration::from_secs(30)).await;
    assert_code(&out, 130);
    let summary = json_summary(&out);
    assert_eq!(summary["status"], "interrupted");
    assert!(
        summary["profiles_unchanged"].as_u64() > Some(0),
        "{summary}"
    );
    let last = Metrics::parse(&std::fs::read_to_string(&file).expect("final file"), "run");
    assert_eq!(last.status(), "interrupted");
    assert_run_matches(&last, &summary);
    assert_eq!(last.value("relink_run_id", &[]), 2.0);
    let success = last.value("relink_last_success_timestamp_seconds", &[]);
    assert!(
        (success - first_success).abs() < 1e-3,
        "{success} vs {first_success}"
    );
    promtool_check_metrics(&last.text);
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_belongs_to_the_lock_holder_and_a_failed_write_does_not_stop_the_run() {
    let db = TestDb::new("obs_owner").await;
    db.generate(2000);
    let dir = scratch("obs_owner");
    let file = dir.join("relink-run.prom");
    let child = spawn_with_metrics(
        &db,
        &file,
        "50ms",
        &[
            "run",
            "--limit",
            "1000",
            "--chunk-size",
            "20",
            "--pause",
            "100ms",
        ],
    );
    let started = Instant::now();
    let before = loop {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no links in the metrics file"
        );
        if let Ok(text) = std::fs::read_to_string(&file) {
            let metrics = Metrics::parse(&text, "run");
            if metrics.value("relink_links_created_total", &[]) > 0.0 {
                break metrics;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    // A second relink (cron starting the next run too early) exits 4 and
    // leaves the holder's file alone.
    let second = db.run(&["run", "--metrics-file", path_str(&file)]);
    assert_code(&second, 4);
    let after = Metrics::parse(&std::fs::read_to_string(&file).expect("file"), "run");
    assert_eq!(after.status(), "running");
    assert_eq!(
        after.value("relink_run_id", &[]),
        before.value("relink_run_id", &[])
    );
    assert_eq!(
        after.value("relink_start_time_seconds", &[]),
        before.value("relink_start_time_seconds", &[])
    );

    // The directory goes away: writes fail, the run goes on to its end.
    // relink may create its next temporary file there while the directory
    // is being emptied: then emptying it again does it.
    let mut attempts = 0;
    while let Err(err) = std::fs::remove_dir_all(&dir) {
        attempts += 1;
        assert!(attempts < 100, "remove the directory: {err}");
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait(Duration::from_secs(60)).await;
    assert_success(&out);
    let err = stderr(&out);
    assert_eq!(
        err.matches("cannot write the metrics file").count(),
        1,
        "{err}"
    );
    let status = db.text("SELECT status FROM relink.runs WHERE id = 1").await;
    assert_eq!(status, "partial");
    assert_eq!(db.count("SELECT count(*) FROM relink.ledger").await, 1000);
}

#[tokio::test]
async fn a_failed_run_ends_its_file_failed() {
    let db = TestDb::new("obs_failed").await;
    db.generate(300);
    // The application refuses every new link: the first chunk fails for good.
    db.batch(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql
               AS $$ BEGIN RAISE EXCEPTION 'no new links today'; END $$;
             CREATE TRIGGER refuse BEFORE INSERT ON profile_links
               FOR EACH STATEMENT EXECUTE FUNCTION refuse();",
    )
    .await;
    let dir = scratch("obs_failed");
    let file = dir.join("relink-run.prom");
    let out = db.run(&["run", "--format", "json", "--metrics-file", path_str(&file)]);
    assert_code(&out, 1);
    assert_stderr_has(&out, "no new links today");
    let summary = json_summary(&out);
    let last = Metrics::parse(&std::fs::read_to_string(&file).expect("final file"), "run");
    assert_eq!(last.status(), "failed");
    assert_run_matches(&last, &summary);
    assert_eq!(last.value("relink_run_id", &[]), 1.0);
    // Never completed: 0, so "last success too long ago" fires.
    assert_eq!(
        last.value("relink_last_success_timestamp_seconds", &[]),
        0.0
    );
    promtool_check_metrics(&last.text);
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn a_bad_metrics_file_is_a_usage_error_before_connecting() {
    let dir = scratch("obs_usage");
    std::fs::write(dir.join("a-file"), "").expect("a file");
    let ok = dir.join("relink.prom");
    let missing = dir.join("missing/relink.prom");
    let under_file = dir.join("a-file/relink.prom");
    let mut cases: Vec<(Vec<&str>, String)> = vec![
        (
            vec!["run", "--metrics-file", path_str(&missing)],
            format!(
                "the directory {} does not exist",
                dir.join("missing").display()
            ),
        ),
        (
            vec!["purge", "--yes", "--metrics-file", path_str(&dir)],
            "is a directory".into(),
        ),
        (
            vec!["run", "--metrics-file", path_str(&under_file)],
            "is not a directory".into(),
        ),
        (
            vec!["run", "--dry-run", "--metrics-file", path_str(&ok)],
            "a dry run records nothing".into(),
        ),
        (
            vec!["purge", "--dry-run", "--metrics-file", path_str(&ok)],
            "a dry run records nothing".into(),
        ),
        (
            vec![
                "run",
                "--metrics-file",
                path_str(&ok),
                "--metrics-interval",
                "0s",
            ],
            "at least 10ms".into(),
        ),
    ];
    // Even root may not create files in sysfs.
    if Path::new("/sys/kernel").is_dir() {
        cases.push((
            vec!["run", "--metrics-file", "/sys/relink.prom"],
            "cannot write in the directory /sys".into(),
        ));
    }
    for (args, needle) in cases {
        // Nothing listens on port 1: any attempt to connect would fail
        // with exit 1, not 2.
        let out = Command::new(BIN)
            .args(&args)
            .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
            .env_remove("RELINK_LOG")
            .output()
            .expect("run relink");
        assert_code(&out, 2);
        assert!(stderr(&out).contains(&needle), "{args:?}: {}", stderr(&out));
    }
    let names: Vec<_> = std::fs::read_dir(&dir).expect("list").collect();
    assert_eq!(names.len(), 1, "nothing but a-file was created");
    std::fs::remove_dir_all(&dir).expect("clean up");
}

/// Whether `text` holds an SGR (colour/style) escape sequence, `ESC [ … m`.
fn has_sgr(text: &str) -> bool {
    text.match_indices("\x1b[").any(|(i, _)| {
        let rest = &text[i + 2..];
        let params = rest
            .find(|c: char| !(c.is_ascii_digit() || c == ';'))
            .unwrap_or(rest.len());
        rest[params..].starts_with('m')
    })
}

#[tokio::test]
async fn logs_to_a_pipe_carry_no_escape_codes() {
    let db = TestDb::new("obs_pipe").await;
    db.generate(300);
    for args in [
        &["run", "--chunk-size", "50"][..],
        &["-v", "run", "--restart"],
        &["--log-format", "json", "run", "--restart"],
        &["status"],
        // Refuses without a terminal: an error line.
        &["purge"],
    ] {
        // Output to pipes, as under cron, systemd or a log collector.
        let out = db.run(args);
        let all = format!("{}{}", stdout(&out), stderr(&out));
        assert!(
            !all.contains("\x1b["),
            "{args:?} printed an escape code:\n{all:?}"
        );
        if args[0] != "status" {
            assert!(!stderr(&out).trim().is_empty(), "{args:?} logged nothing");
        }
    }
    // The same under NO_COLOR, and JSON lines are JSON.
    let out = db
        .relink()
        .args(["--log-format", "json", "run"])
        .env("NO_COLOR", "1")
        .output()
        .expect("run");
    assert_success(&out);
    for line in stderr(&out).lines() {
        let parsed: Json = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(parsed.get("level").is_some(), "{line}");
    }
    let out = db.run(&["run"]);
    assert_stderr_has(&out, " INFO ");
}

/// Runs relink with `args` on a pseudo-terminal (util-linux `script`):
/// everything it wrote (stdout and stderr share the terminal), or `None`
/// when `script` is not installed.
fn on_a_terminal(db: &TestDb, args: &str, no_color: bool) -> Option<String> {
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &format!("'{BIN}' {args}"), "/dev/null"])
        .env("DATABASE_URL", &db.url)
        // A terminal always has a TERM; without it the bar library stays quiet.
        .env("TERM", "xterm-256color")
        .env_remove("RELINK_LOG")
        .stdin(Stdio::null());
    if no_color {
        cmd.env("NO_COLOR", "1");
    } else {
        cmd.env_remove("NO_COLOR");
    }
    match cmd.output() {
        Ok(out) => {
            assert_success(&out);
            Some(stdout(&out))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("cannot run script(1): {e}"),
    }
}

#[tokio::test]
async fn on_a_terminal_the_bar_shows_rounded_figures_and_no_color_drops_the_colours() {
    let db = TestDb::new("obs_pty").await;
    db.generate(600);
    let Some(run) = on_a_terminal(&db, "run --chunk-size 20 --pause 30ms", false) else {
        note_missing("script (util-linux)", "the pseudo-terminal test");
        return;
    };
    // The bar, its figures each with a unit, and coloured log lines.
    for needle in [
        "migrating [",
        " profiles · ",
        " profiles/s · ",
        " links · ETA ",
    ] {
        assert!(
            run.contains(needle),
            "no {needle:?} on the terminal:\n{run:?}"
        );
    }
    assert!(has_sgr(&run), "no colours on a terminal:\n{run:?}");
    // Rates are whole numbers (or one decimal below 10), never 19,037.2065/s.
    for (i, _) in run.match_indices(" profiles/s") {
        let figure = run[..i].rsplit(' ').next().unwrap_or_default();
        assert!(
            figure.chars().all(|c| c.is_ascii_digit() || c == ',')
                || (figure.len() <= 3 && figure.contains('.')),
            "rate {figure:?}"
        );
    }

    // NO_COLOR: the bar stays (in links for a purge), the colours go.
    let purge = on_a_terminal(&db, "purge --yes --chunk-size 20", true).expect("script ran before");
    for needle in [
        "purging [",
        " links · ",
        " links/s · ",
        " links deleted · ETA ",
    ] {
        assert!(
            purge.contains(needle),
            "no {needle:?} on the terminal:\n{purge:?}"
        );
    }
    assert!(
        !has_sgr(&purge),
        "colour codes despite NO_COLOR:\n{purge:?}"
    );
    assert!(purge.contains(" INFO "), "{purge:?}");
}

// ---------------------------------------------------------------------
// The examples of docs/monitoring.md, as written.

const MONITORING_PAGE: &str = include_str!("../../docs/monitoring.md");

/// The fenced code block of docs/monitoring.md whose info string is `lang`
/// and whose first line contains `marker`.
fn monitoring_block(lang: &str, marker: &str) -> String {
    let mut blocks = Vec::new();
    let mut lines = MONITORING_PAGE.lines();
    while let Some(line) = lines.next() {
        if let Some(info) = line.strip_prefix("```") {
            let body: Vec<&str> = lines
                .by_ref()
                .take_while(|l| !l.starts_with("```"))
                .collect();
            if info == lang && body.first().is_some_and(|l| l.contains(marker)) {
                blocks.push(body.join("\n") + "\n");
            }
        }
    }
    assert_eq!(
        blocks.len(),
        1,
        "docs/monitoring.md: one ```{lang} block starting with {marker:?}"
    );
    blocks.remove(0)
}

/// A cron time field: `*`, numbers, ranges, lists and steps.
fn cron_field_ok(field: &str, max: u32) -> bool {
    field.split(',').all(|part| {
        let (range, step) = part.split_once('/').unwrap_or((part, "1"));
        let step_ok = step.parse::<u32>().is_ok_and(|s| s >= 1);
        let range_ok = range == "*"
            || range
                .split_once('-')
                .map_or(vec![range], |(a, b)| vec![a, b])
                .iter()
                .all(|n| n.parse::<u32>().is_ok_and(|n| n <= max));
        step_ok && range_ok
    })
}

#[tokio::test]
async fn the_monitoring_page_crontab_line_runs_as_written() {
    let crontab = monitoring_block("crontab", "crontab -e");
    let mut env = Vec::new();
    let mut jobs = Vec::new();
    for line in crontab
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        match line.split_once('=') {
            Some((name, value)) if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
                env.push((name.to_owned(), value.to_owned()));
            }
            _ => jobs.push(line),
        }
    }
    assert_eq!(jobs.len(), 1, "{crontab}");
    let fields: Vec<&str> = jobs[0].split_whitespace().take(5).collect();
    for (field, max) in fields.iter().zip([59, 23, 31, 12, 7]) {
        assert!(cron_field_ok(field, max), "bad cron field {field:?}");
    }
    let mut command = jobs[0];
    for field in &fields {
        command = command.trim_start().strip_prefix(field).expect("field");
    }
    assert!(
        !command.contains('%'),
        "cron turns % into a newline: {command}"
    );
    assert!(command.contains("--metrics-file"), "{command}");
    assert!(env.iter().any(|(n, _)| n == "DATABASE_URL"), "{crontab}");

    // Run it as cron would: sh -c, a bare environment, no terminal; the
    // system paths moved to a scratch directory.
    let db = TestDb::new("obs_cron").await;
    db.generate(300);
    let dir = scratch("obs_cron");
    let (textfile, logs) = (dir.join("textfile"), dir.join("log"));
    std::fs::create_dir_all(&textfile).expect("textfile dir");
    std::fs::create_dir_all(&logs).expect("log dir");
    let command = command
        .replace("/usr/local/bin/relink", BIN)
        .replace(
            "/var/lib/node_exporter/textfile_collector",
            path_str(&textfile),
        )
        .replace("/var/log/relink", path_str(&logs));
    let mut cron = Command::new("/bin/sh");
    cron.args(["-c", &command])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", &dir)
        .env("SHELL", "/bin/sh")
        .stdin(Stdio::null());
    for (name, value) in &env {
        cron.env(
            name,
            if name == "DATABASE_URL" {
                &db.url
            } else {
                value
            },
        );
    }
    let out = cron.output().expect("sh");
    assert_success(&out);
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "cron would mail: {out:?}"
    );
    let log = std::fs::read_to_string(logs.join("run.log")).expect("the log");
    assert!(log.contains("Summary of run 1 (completed)"), "{log}");
    assert!(!log.contains('\x1b'), "{log:?}");
    let metrics = Metrics::parse(
        &std::fs::read_to_string(textfile.join("relink-run.prom")).expect("metrics"),
        "run",
    );
    assert_eq!(metrics.status(), "completed");
    assert!(metrics.value("relink_links_created_total", &[]) > 0.0);
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn the_monitoring_page_systemd_units_pass_systemd_analyze_verify() {
    let service = monitoring_block("ini", "/etc/systemd/system/relink.service");
    let timer = monitoring_block("ini", "/etc/systemd/system/relink.timer");
    assert!(service.contains("\nType=oneshot\n"), "{service}");
    assert!(
        service.contains("--metrics-file /var/lib/node_exporter/textfile_collector/"),
        "{service}"
    );
    assert!(service.contains("\nSuccessExitStatus=130\n"), "{service}");
    assert!(timer.contains("\nPersistent=true\n"), "{timer}");
    if !installed("systemd-analyze") {
        note_missing(
            "systemd-analyze",
            "verifying the systemd units of docs/monitoring.md",
        );
        return;
    }
    let dir = scratch("obs_systemd");
    // ExecStart must name an executable that exists: the one under test.
    std::fs::write(
        dir.join("relink.service"),
        service.replace("/usr/local/bin/relink", BIN),
    )
    .expect("service");
    std::fs::write(dir.join("relink.timer"), timer).expect("timer");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.join("relink.service"))
        .arg(dir.join("relink.timer"))
        .output()
        .expect("systemd-analyze");
    let said = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify:\n{said}"
    );
    std::fs::remove_dir_all(&dir).expect("clean up");
}

fn yaml(text: &str) -> yaml_rust2::Yaml {
    let mut docs =
        yaml_rust2::YamlLoader::load_from_str(text).unwrap_or_else(|e| panic!("YAML: {e}\n{text}"));
    assert_eq!(docs.len(), 1);
    docs.remove(0)
}

#[tokio::test]
async fn the_monitoring_page_cronjob_forbids_overlap_keeps_exit_codes_and_pushes_the_final_metrics()
{
    let manifest = yaml(&monitoring_block("yaml", "relink-cronjob.yaml"));
    assert_eq!(manifest["apiVersion"].as_str(), Some("batch/v1"));
    assert_eq!(manifest["kind"].as_str(), Some("CronJob"));
    let spec = &manifest["spec"];
    assert_eq!(spec["concurrencyPolicy"].as_str(), Some("Forbid"));
    let schedule: Vec<&str> = spec["schedule"]
        .as_str()
        .expect("schedule")
        .split(' ')
        .collect();
    assert_eq!(schedule.len(), 5);
    let job = &spec["jobTemplate"]["spec"];
    let rule = &job["podFailurePolicy"]["rules"][0];
    assert_eq!(rule["action"].as_str(), Some("FailJob"));
    let codes: Vec<i64> = rule["onExitCodes"]["values"]
        .as_vec()
        .expect("codes")
        .iter()
        .filter_map(|v| v.as_i64())
        .collect();
    assert_eq!(
        codes,
        [2, 4],
        "exit codes no retry can help (README, exit codes)"
    );
    let pod = &job["template"]["spec"];
    assert_eq!(pod["restartPolicy"].as_str(), Some("Never"));
    assert!(pod["terminationGracePeriodSeconds"]
        .as_i64()
        .is_some_and(|s| s >= 60));
    let container = &pod["containers"][0];
    assert_eq!(
        rule["onExitCodes"]["containerName"].as_str(),
        container["name"].as_str()
    );
    let command: Vec<&str> = container["command"]
        .as_vec()
        .expect("command")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(command, ["/bin/sh", "-c"]);
    let script = container["args"][0].as_str().expect("the script");
    let mount = container["volumeMounts"][0]["mountPath"]
        .as_str()
        .expect("mount");
    let metrics_path = format!("{mount}/relink-run.prom");
    assert!(
        script.contains(&format!("relink run --metrics-file {metrics_path}")),
        "{script}"
    );
    assert!(script.contains(&format!("@{metrics_path}")), "{script}");

    // Run the container's script: relink and a stand-in for curl that
    // keeps what it would push.
    let db = TestDb::new("obs_k8s").await;
    db.generate(300);
    let dir = scratch("obs_k8s");
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("bin");
    std::os::unix::fs::symlink(BIN, bin.join("relink")).expect("relink on PATH");
    std::fs::write(
        bin.join("curl"),
        "#!/bin/sh\nprintf '%s\\n' \"$@\" > \"$PUSHED.args\"\nfor a in \"$@\"; do case \"$a\" in @*) cp \"${a#@}\" \"$PUSHED\" || exit 26 ;; esac; done\n",
    )
    .expect("curl");
    Command::new("chmod")
        .args(["+x", path_str(&bin.join("curl"))])
        .status()
        .expect("chmod");
    let pod_run = |url: &str, volume: &Path| {
        std::fs::create_dir_all(volume).expect("emptyDir");
        Command::new("/bin/sh")
            .args([
                "-c",
                &script.replace(&metrics_path, path_str(&volume.join("relink-run.prom"))),
            ])
            .env_clear()
            .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
            .env("DATABASE_URL", url)
            .env("PUSHGATEWAY_URL", "http://pushgateway.test:9091")
            .env("PUSHED", dir.join("pushed.prom"))
            .stdin(Stdio::null())
            .output()
            .expect("sh")
    };
    let out = pod_run(&db.url, &dir.join("volume-1"));
    assert_success(&out);
    let pushed = Metrics::parse(
        &std::fs::read_to_string(dir.join("pushed.prom")).expect("pushed"),
        "run",
    );
    assert_eq!(pushed.status(), "completed");
    let args = std::fs::read_to_string(dir.join("pushed.prom.args")).expect("curl args");
    assert!(
        args.contains("PUT\n")
            && args.contains("http://pushgateway.test:9091/metrics/job/relink/mode/run\n"),
        "{args}"
    );
    // relink's exit code is the container's, pushed or not.
    let out = pod_run(
        "postgres://postgres@127.0.0.1:1/none",
        &dir.join("volume-2"),
    );
    assert_code(&out, 1);
    assert_stderr_has(&out, "metrics not pushed");
    std::fs::remove_dir_all(&dir).expect("clean up");
}

/// `{{ $labels.NAME }}` expanded, as Prometheus renders an annotation.
fn expand(template: &str, labels: &[(&str, &str)]) -> String {
    let mut text = template.to_owned();
    for (name, value) in labels {
        text = text.replace(&format!("{{{{ $labels.{name} }}}}"), value);
    }
    assert!(
        !text.contains("{{"),
        "a template this test cannot expand: {template}"
    );
    text
}

#[tokio::test]
async fn the_monitoring_page_alert_rules_use_emitted_metrics_and_fire_when_they_should() {
    let text = monitoring_block("yaml", "relink-alerts.yml");
    let rules = yaml(&text);
    let rules = rules["groups"][0]["rules"].as_vec().expect("rules").clone();
    let alert = |name: &str| {
        rules
            .iter()
            .find(|r| r["alert"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("no alert {name}"))
            .clone()
    };
    let (failing, stale) = (alert("RelinkRunFailing"), alert("RelinkNoSuccessForADay"));
    assert_eq!(rules.len(), 2);

    // The expressions name only series relink writes (from a real file).
    let db = TestDb::new("obs_alerts").await;
    db.generate(100);
    let dir = scratch("obs_alerts");
    let file = dir.join("relink-run.prom");
    assert_success(&db.run(&["run", "--metrics-file", path_str(&file)]));
    let emitted = Metrics::parse(&std::fs::read_to_string(&file).expect("metrics"), "run");
    for rule in [&failing, &stale] {
        let expr = rule["expr"].as_str().expect("expr");
        let mut used = 0;
        for (i, _) in expr.match_indices("relink_") {
            let name: String = expr[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(
                emitted.families().contains(&name),
                "{name} is not a metric relink writes"
            );
            used += 1;
        }
        assert!(used > 0, "{expr}");
    }
    assert!(failing["expr"]
        .as_str()
        .is_some_and(|e| e.contains("status=\"failed\"")));
    assert_eq!(
        emitted.value("relink_run_status", &[("status", "failed")]),
        0.0
    );
    assert!(stale["expr"].as_str().is_some_and(|e| e.contains("86400")));

    if !installed("promtool") {
        note_missing(
            "promtool",
            "`promtool check rules` and `promtool test rules`",
        );
        std::fs::remove_dir_all(&dir).expect("clean up");
        return;
    }
    let rules_file = dir.join("relink-alerts.yml");
    std::fs::write(&rules_file, &text).expect("rules");
    assert_promtool(&["check", "rules"], &rules_file, "");

    // The alerts fire when they should, and only then.
    let annotations = |rule: &yaml_rust2::Yaml, labels: &[(&str, &str)]| -> String {
        ["summary", "description"]
            .iter()
            .map(|key| {
                let value = expand(
                    rule["annotations"][*key].as_str().expect("annotation"),
                    labels,
                );
                format!(
                    "{key}: {}",
                    serde_json::to_string(&value).expect("JSON string")
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let severity = |rule: &yaml_rust2::Yaml| {
        rule["labels"]["severity"]
            .as_str()
            .expect("severity")
            .to_owned()
    };
    let tests = format!(
        r#"rule_files: [relink-alerts.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'relink_run_status{{instance="host1",database="db:5432/app",mode="run",status="failed"}}'
        values: '0 0 1x20'
      - series: 'relink_run_status{{instance="host1",database="db:5432/app",mode="run",status="completed"}}'
        values: '1 1 0x20'
      - series: 'relink_run_status{{instance="host1",database="db:5432/other",mode="run",status="failed"}}'
        values: '0x22'
      - series: 'relink_run_status{{instance="host2",database="db:5432/app",mode="run",status="failed"}}'
        values: '0x22'
    alert_rule_test:
      - eval_time: 3m
        alertname: RelinkRunFailing
        exp_alerts: []
      - eval_time: 15m
        alertname: RelinkRunFailing
        exp_alerts:
          - exp_labels: {{severity: {sev1}, instance: host1, database: "db:5432/app", mode: run}}
            exp_annotations: {{{ann1}}}
  - interval: 1m
    input_series:
      - series: 'relink_last_success_timestamp_seconds{{instance="host1",database="db:5432/app",mode="run"}}'
        values: '0x2000'
      - series: 'relink_last_success_timestamp_seconds{{instance="host1",database="db:5432/other",mode="run"}}'
        values: '0+60x2000'
    alert_rule_test:
      - eval_time: 23h
        alertname: RelinkNoSuccessForADay
        exp_alerts: []
      - eval_time: 25h
        alertname: RelinkNoSuccessForADay
        exp_alerts:
          - exp_labels: {{severity: {sev2}, instance: host1, database: "db:5432/app"}}
            exp_annotations: {{{ann2}}}
"#,
        sev1 = severity(&failing),
        ann1 = annotations(
            &failing,
            &[
                ("mode", "run"),
                ("instance", "host1"),
                ("database", "db:5432/app")
            ]
        ),
        sev2 = severity(&stale),
        ann2 = annotations(
            &stale,
            &[("instance", "host1"), ("database", "db:5432/app")]
        ),
    );
    let tests_file = dir.join("relink-alerts.test.yml");
    std::fs::write(&tests_file, &tests).expect("tests");
    assert_promtool(&["test", "rules"], &tests_file, &format!("\n{tests}"));
    std::fs::remove_dir_all(&dir).expect("clean up");
}
