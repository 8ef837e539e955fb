//! The README and the pages of docs/ as an operator reads them: every shell
//! block marked `tested` is run, line by line and in the page's order, with
//! the binary under test as `relink`, against a fresh database with
//! generated legacy data (the pages' example URL replaced by that
//! database's), each line expected to exit 0 unless its comment says
//! `(exit N)`. Shell blocks not marked so are refused, so a command cannot
//! be shown without being run. Also: every page says who it is for, the
//! README stays one screen, and relative links and anchors resolve.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{assert_no_panic, scratch, stderr, stdout, TestDb};

const BIN: &str = env!("CARGO_BIN_EXE_relink");
const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// Every page, by its path from the repository's root.
const PAGES: &[(&str, &str)] = &[
    ("README.md", include_str!("../../README.md")),
    ("docs/runbook.md", include_str!("../../docs/runbook.md")),
    (
        "docs/configuration.md",
        include_str!("../../docs/configuration.md"),
    ),
    (
        "docs/managed-platforms.md",
        include_str!("../../docs/managed-platforms.md"),
    ),
    (
        "docs/monitoring.md",
        include_str!("../../docs/monitoring.md"),
    ),
    ("docs/rules.md", include_str!("../../docs/rules.md")),
    (
        "docs/application-contract.md",
        include_str!("../../docs/application-contract.md"),
    ),
    (
        "docs/performance.md",
        include_str!("../../docs/performance.md"),
    ),
    (
        "docs/development.md",
        include_str!("../../docs/development.md"),
    ),
    (
        "docs/plan-and-apply.md",
        include_str!("../../docs/plan-and-apply.md"),
    ),
];

/// The URL the pages use in their examples.
const EXAMPLE_URL: &str = "postgres://migrator@db.internal:5432/app";

fn page(path: &str) -> &'static str {
    PAGES
        .iter()
        .find(|(p, _)| *p == path)
        .unwrap_or_else(|| panic!("{path} is not in PAGES"))
        .1
}

/// A fenced code block: its info string, the line it starts on, its lines.
struct Block {
    info: String,
    line: usize,
    body: Vec<String>,
}

fn blocks(text: &str) -> Vec<Block> {
    let mut found = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        if let Some(info) = line.strip_prefix("```") {
            let body = lines
                .by_ref()
                .map(|(_, l)| l)
                .take_while(|l| !l.starts_with("```"))
                .map(str::to_owned)
                .collect();
            found.push(Block {
                info: info.trim().to_owned(),
                line: n + 1,
                body,
            });
        }
    }
    found
}

fn is_shell(info: &str) -> bool {
    matches!(
        info.split_whitespace().next(),
        Some("sh" | "bash" | "shell" | "console" | "zsh")
    )
}

/// One command of a block: `\`-continued lines joined; the exit code its
/// comment announces as `(exit N)`, else 0.
struct Cmd {
    text: String,
    expect: i32,
}

fn commands(block: &Block) -> (Vec<String>, Vec<Cmd>) {
    let mut exports = Vec::new();
    let mut cmds = Vec::new();
    let mut pending = String::new();
    for line in &block.body {
        if let Some(head) = line.strip_suffix('\\') {
            pending.push_str(head);
            continue;
        }
        let full = std::mem::take(&mut pending) + line;
        let trimmed = full.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if trimmed.starts_with("export ") {
            exports.push(trimmed.to_owned());
            continue;
        }
        let expect = trimmed
            .split_once("(exit ")
            .and_then(|(_, rest)| rest.split_once(')'))
            .map_or(0, |(code, _)| {
                code.parse()
                    .unwrap_or_else(|_| panic!("bad (exit N) in {trimmed:?}"))
            });
        cmds.push(Cmd {
            text: trimmed.to_owned(),
            expect,
        });
    }
    assert!(pending.is_empty(), "a block ends inside a continued line");
    (exports, cmds)
}

/// Runs the `tested` blocks of `path` in order: in `cwd`, with `relink` on
/// the PATH, `DATABASE_URL` set to `url` (a page's own `export` of the
/// example URL sets the same), the example URL replaced by `url`, and `env`
/// set. Returns each
/// command with its output.
fn run_tested_blocks(
    path: &str,
    cwd: &Path,
    url: &str,
    env: &[(&str, &str)],
    timeout: Duration,
) -> Vec<(String, Output)> {
    let bin = scratch(&format!("docs_bin_{}", path.replace(['/', '.'], "_")));
    std::os::unix::fs::symlink(BIN, bin.join("relink")).expect("relink on the PATH");
    let path_var = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".to_owned())
    );
    let mut exports: Vec<String> = Vec::new();
    let mut ran = Vec::new();
    for block in blocks(page(path))
        .into_iter()
        .filter(|b| b.info == "sh tested")
    {
        let (block_exports, cmds) = commands(&block);
        exports.extend(block_exports.iter().map(|e| e.replace(EXAMPLE_URL, url)));
        for cmd in cmds {
            let text = cmd.text.replace(EXAMPLE_URL, url);
            let script = format!("{}\n{text}", exports.join("\n"));
            let mut sh = Command::new("/bin/sh");
            sh.args(["-c", &script])
                .current_dir(cwd)
                .env("PATH", &path_var)
                .env("DATABASE_URL", url)
                .env_remove("RELINK_LOG")
                .stdin(Stdio::null());
            for (name, value) in env {
                sh.env(name, value);
            }
            let out = run_with_timeout(sh, timeout, &cmd.text);
            assert_no_panic(&out);
            assert_eq!(
                out.status.code(),
                Some(cmd.expect),
                "{path}:{}: `{}` exited {:?}, the page says {}\nstdout:\n{}\nstderr:\n{}",
                block.line,
                cmd.text,
                out.status.code(),
                cmd.expect,
                stdout(&out),
                stderr(&out)
            );
            ran.push((cmd.text, out));
        }
    }
    std::fs::remove_dir_all(&bin).expect("clean up");
    ran
}

/// Runs `cmd` to completion; kills it and fails if it takes longer than
/// `timeout`.
fn run_with_timeout(mut cmd: Command, timeout: Duration, what: &str) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sh");
    let pid = child.id();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(child.wait_with_output());
    });
    match receiver.recv_timeout(timeout) {
        Ok(out) => out.expect("wait for sh"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("`{what}` still running after {timeout:?}");
        }
    }
}

/// The output of the first command on the page whose line contains `text`.
fn output_of<'a>(ran: &'a [(String, Output)], text: &str) -> &'a Output {
    &ran.iter()
        .find(|(t, _)| t.contains(text))
        .unwrap_or_else(|| panic!("the page no longer runs `{text}`"))
        .1
}

// ---------------------------------------------------------------------
// The pages themselves.

#[test]
fn every_shell_block_is_run_by_this_test_or_is_the_quick_start() {
    for (path, text) in PAGES {
        for block in blocks(text) {
            if !is_shell(&block.info) || block.info == "sh tested" {
                continue;
            }
            // The two commands of the quick start: CI runs `make test`
            // (.ci/run), `make demo` is the demo itself.
            let (_, cmds) = commands(&block);
            let texts: Vec<&str> = cmds
                .iter()
                .map(|c| c.text.split(" #").next().unwrap_or("").trim())
                .collect();
            assert!(
                *path == "README.md" && texts == ["make demo", "make test"],
                "{path}:{}: a ```{} block that no test runs: mark it `sh tested` (and make it pass) or remove it",
                block.line,
                block.info
            );
        }
    }
    let ci = std::fs::read_to_string(Path::new(REPO).join(".ci/run")).expect(".ci/run");
    assert!(
        ci.contains("\nmake test\n"),
        ".ci/run no longer runs make test"
    );
}

#[test]
fn every_page_says_who_it_is_for_and_the_readme_is_one_screen() {
    for (path, text) in PAGES.iter().filter(|(p, _)| p.starts_with("docs/")) {
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let title = lines.next().unwrap_or("");
        assert!(title.starts_with("# "), "{path} opens with {title:?}");
        let first = lines.next().unwrap_or("");
        assert!(
            first.starts_with("For "),
            "{path}: the first line after the title says who the page is for, not {first:?}"
        );
    }
    let readme = page("README.md").lines().count();
    assert!(readme <= 250, "README.md has {readme} lines (at most 250)");
}

/// GitHub's anchor of a heading: lowercase, spaces to `-`, punctuation
/// other than `-` and `_` dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c.to_lowercase().next().unwrap_or(c)),
            _ => None,
        })
        .collect()
}

fn anchors(text: &str) -> Vec<String> {
    let mut in_code = false;
    let mut found = Vec::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            found.push(anchor(line.trim_start_matches('#')));
        }
    }
    found
}

#[test]
fn relative_links_and_their_anchors_resolve() {
    let mut checked = 0;
    for (path, text) in PAGES {
        let dir = Path::new(path).parent().unwrap_or(Path::new(""));
        for (i, _) in text.match_indices("](") {
            let target = &text[i + 2..];
            let Some(end) = target.find(')') else {
                continue;
            };
            let target = &target[..end];
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (file, fragment) = target.split_once('#').unwrap_or((target, ""));
            let file = if file.is_empty() {
                (*path).to_owned()
            } else {
                normalize(&dir.join(file))
            };
            assert!(
                Path::new(REPO).join(&file).exists(),
                "{path}: link to {target}: {file} does not exist"
            );
            if !fragment.is_empty() {
                let linked = std::fs::read_to_string(Path::new(REPO).join(&file)).expect("page");
                assert!(
                    anchors(&linked).iter().any(|a| a == fragment),
                    "{path}: link to {target}: {file} has no heading with anchor #{fragment}"
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 20, "only {checked} links checked");
}

/// `a/../b` → `b`, as a path from the repository's root.
fn normalize(path: &Path) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.to_str().expect("UTF-8 path").split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

// ---------------------------------------------------------------------
// The commands, run.

#[tokio::test]
async fn the_readme_runbook_runs_as_written() {
    let db = TestDb::new("docs_readme").await;
    db.generate(300);
    // The generator also gives some users rows of their own.
    let users_rows = db.count("SELECT count(*) FROM profile_links").await;
    let dir = scratch("docs_readme");
    let ran = run_tested_blocks(
        "README.md",
        &dir,
        &db.url,
        &[("HOME", dir.to_str().expect("UTF-8"))],
        Duration::from_secs(120),
    );
    let review = std::fs::read_to_string(dir.join("review.jsonl")).expect("the report");
    assert!(review.lines().count() > 0, "an empty report");
    let rejects = stdout(output_of(&ran, "jq -r '.rejects[].reason'"));
    assert!(
        !rejects.trim().is_empty(),
        "no reject counted by the review line"
    );
    let verify = output_of(&ran, "# 5. invariants");
    assert_eq!(verify.status.code(), Some(0), "{}", stdout(verify));
    assert!(
        output_of(&ran, "# 6. cron").status.success(),
        "the cron line"
    );
    // The last line rolls back: nothing relink created is left.
    assert_eq!(
        db.count("SELECT count(*) FROM profile_links").await,
        users_rows
    );
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[tokio::test]
async fn the_runbook_runs_as_written() {
    let db = TestDb::new("docs_runbook").await;
    db.generate(300);
    let users_rows = db.count("SELECT count(*) FROM profile_links").await;
    let dir = scratch("docs_runbook");
    let started = Instant::now();
    let ran = run_tested_blocks(
        "docs/runbook.md",
        &dir,
        &db.url,
        &[("HOME", dir.to_str().expect("UTF-8"))],
        Duration::from_secs(120),
    );
    eprintln!(
        "docs/runbook.md: {} commands in {:.1?}",
        ran.len(),
        started.elapsed()
    );
    let dry = output_of(&ran, "relink run --dry-run -q --report review.jsonl");
    assert!(
        stdout(dry).contains("This was a DRY RUN. No changes were made."),
        "{}",
        stdout(dry)
    );
    let report = std::fs::read_to_string(dir.join("review.jsonl")).expect("the report");
    assert!(report.lines().count() > 0, "an empty report");
    assert!(
        stdout(output_of(&ran, "# Paused")).contains("vacuum window"),
        "status does not show the pause"
    );
    let purge = output_of(&ran, "# asks for confirmation");
    assert!(
        stderr(purge).contains("--yes"),
        "the refusal names --yes: {}",
        stderr(purge)
    );
    // The page ends with a replan after the rehearsal's purge: everything
    // migrated again, and verify passes.
    assert!(db.count("SELECT count(*) FROM profile_links").await > users_rows);
    let verify = db.run(&["verify", "--strict"]);
    assert_eq!(verify.status.code(), Some(0), "{}", stdout(&verify));
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[tokio::test]
async fn the_application_contract_page_commands_run_as_written() {
    let db = TestDb::new("docs_contract").await;
    db.generate(200);
    assert_eq!(db.run(&["run", "-q"]).status.code(), Some(0));
    let dir = scratch("docs_contract");
    let ran = run_tested_blocks(
        "docs/application-contract.md",
        &dir,
        &db.url,
        &[("HOME", dir.to_str().expect("UTF-8"))],
        Duration::from_secs(120),
    );
    assert_eq!(ran.len(), 2, "the page shows repair's two commands");
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[tokio::test]
async fn the_development_page_commands_run_as_written() {
    let db = TestDb::new("docs_dev").await;
    let ran = run_tested_blocks(
        "docs/development.md",
        Path::new(REPO),
        &db.url,
        &[],
        Duration::from_secs(60),
    );
    assert!(
        stdout(output_of(&ran, "make help")).contains("demo"),
        "make help lists the demo"
    );
}

/// The benchmark, the statement profile, the WAL by relation, the cost
/// floor, the memory timeline and the planning core at the page's small sizes, on the binary
/// `make test` built (`RELINK_BIN`; the examples on
/// `RELINK_CARGO_PROFILE=dev`): the commands work; their
/// figures are measured by `make bench`, not here.
#[tokio::test]
async fn the_performance_page_commands_run_at_a_small_size() {
    let db = TestDb::new("docs_perf").await;
    db.generate(500);
    let out = scratch("docs_perf_bench");
    let ran = run_tested_blocks(
        "docs/performance.md",
        Path::new(REPO),
        &db.url,
        &[
            ("DATABASE_URL", &db.url),
            // the binary this test run uses: a build of it here would
            // replace target/debug/relink while other tests start it
            ("RELINK_BIN", env!("CARGO_BIN_EXE_relink")),
            ("RELINK_CARGO_PROFILE", "dev"),
            // never the checkout's target/bench, where a real `make bench` may be running
            ("BENCH_OUT", out.to_str().expect("UTF-8")),
        ],
        Duration::from_secs(1800),
    );
    let bench = stdout(output_of(&ran, "BENCH_PROFILES="));
    assert!(bench.contains("== Targets (SPEC §11)"), "{bench}");
    assert!(
        bench.contains("server CPU relink/bare load") && bench.contains("s the server's"),
        "{bench}"
    );
    let profile = stdout(output_of(&ran, "scripts/profile-statements"));
    assert!(profile.contains("COPY"), "{profile}");
    let wal = stdout(output_of(&ran, "scripts/wal-by-relation"));
    assert!(
        wal.contains("WAL per link: run") && wal.contains("profile_links"),
        "{wal}"
    );
    let floor = stdout(output_of(&ran, "scripts/cost-floor"));
    assert!(
        floor.contains("floor = bare + dry + book") && floor.contains("best relink ÷ bare"),
        "{floor}"
    );
    let timeline = stdout(output_of(&ran, "scripts/rss-timeline"));
    assert!(timeline.contains("exited"), "{timeline}");
    let plan = stdout(output_of(&ran, "make bench-plan"));
    assert!(plan.contains("values/s"), "{plan}");
    assert!(
        out.join("results.json").exists(),
        "the bench wrote no results in BENCH_OUT"
    );
    std::fs::remove_dir_all(&out).expect("clean up");
}

/// docs/plan-and-apply.md: plan, apply, verify, the plain run after, then
/// the review commands over the plan the page made.
#[tokio::test]
async fn the_plan_and_apply_page_runs_as_written() {
    let db = TestDb::new("docs_plan").await;
    db.generate(300);
    let users_rows = db.count("SELECT count(*) FROM profile_links").await;
    let dir = scratch("docs_plan");
    let ran = run_tested_blocks(
        "docs/plan-and-apply.md",
        &dir,
        &db.url,
        &[],
        Duration::from_secs(120),
    );
    let planned = stdout(output_of(&ran, "--plan-out plan.jsonl.gz"));
    assert!(planned.contains("DRY RUN"), "{planned}");
    assert!(dir.join("plan.jsonl.gz").exists(), "no plan written");
    let applied = stdout(output_of(&ran, "relink run --plan plan.jsonl.gz"));
    assert!(applied.contains("drifted"), "{applied}");
    let verified = stdout(output_of(&ran, "relink verify --plan"));
    assert!(verified.contains("applied"), "{verified}");
    assert!(
        std::fs::read_to_string(dir.join("relink.prom"))
            .expect("the metrics file")
            .contains("relink_profiles_drifted_total"),
        "the metrics file has no drifted series"
    );
    let links = stdout(output_of(&ran, "| jq -s length"));
    assert_eq!(
        links.trim().parse::<i64>().expect("a count"),
        db.count("SELECT count(*) FROM profile_links").await - users_rows,
        "the plan's links are the links relink created"
    );
    std::fs::remove_dir_all(&dir).expect("clean up");
}
