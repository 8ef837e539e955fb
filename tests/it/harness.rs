//! Test harness against the real server: each test gets its own freshly
//! created database with the app schema from `sql/app/`, dropped afterwards
//! unless the test failed (so it can be inspected). Tests run in parallel.

use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use tokio_postgres::{Client, NoTls};

pub const APP_UP: &str = include_str!("../../sql/app/up.sql");

/// The server tests create their databases on: `TEST_DATABASE_URL`, else the
/// local server (`make test` sets it, starting a private server if needed).
pub fn server_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// `base` with its database name replaced.
pub fn with_dbname(base: &str, name: &str) -> String {
    let mut url = url::Url::parse(base).expect("TEST_DATABASE_URL must be a postgres:// URL");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

pub async fn connect(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test server ({e}); is PostgreSQL running? `make test` starts one"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A database of its own for one test.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub client: Client,
}

impl TestDb {
    /// A new database with the application's schema.
    pub async fn new(tag: &str) -> Self {
        let db = Self::empty(tag).await;
        db.client
            .batch_execute(APP_UP)
            .await
            .expect("apply sql/app/up.sql");
        db
    }

    /// A new database without any schema.
    pub async fn empty(tag: &str) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("relink_t_{tag}_{}_{n}", std::process::id());
        Self::create(&name, None).await
    }

    /// A copy of `template` (CREATE DATABASE … TEMPLATE), for comparing two
    /// runs over identical data. The template's connection is closed for the
    /// copy (PostgreSQL requires it) and opened again.
    pub async fn clone_of(template: &mut TestDb, tag: &str) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("relink_t_{tag}_{}_{n}", std::process::id());
        let admin = connect(&server_url()).await;
        admin
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&template.name],
            )
            .await
            .expect("disconnect the template");
        let copy = Self::create(&name, Some(&template.name)).await;
        template.client = connect(&template.url).await;
        copy
    }

    async fn create(name: &str, template: Option<&str>) -> Self {
        let admin = connect(&server_url()).await;
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await
            .expect("drop old test database");
        let template = template
            .map(|t| format!(" TEMPLATE {t}"))
            .unwrap_or_default();
        admin
            .batch_execute(&format!("CREATE DATABASE {name}{template}"))
            .await
            .expect("create test database");
        let url = with_dbname(&server_url(), name);
        let client = connect(&url).await;
        Self {
            name: name.to_owned(),
            url,
            client,
        }
    }

    /// The relink binary, with `DATABASE_URL` pointing at this database.
    pub fn relink(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_relink"));
        cmd.env("DATABASE_URL", &self.url).env_remove("RELINK_LOG");
        cmd
    }

    /// Runs relink with `args` to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.relink().args(args).output().expect("run relink")
    }

    /// Fills the database with `n` generated profiles (fixed seed).
    pub fn generate(&self, n: u64) {
        let out = self.run(&["generate", "--profiles", &n.to_string()]);
        assert_success(&out);
    }

    pub async fn count(&self, sql: &str) -> i64 {
        self.client
            .query_one(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .get(0)
    }

    /// md5 of a query's rows in a stable order: a table's checksum.
    pub async fn checksum(&self, table: &str) -> String {
        let sql = format!(
            "SELECT coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM {table} t"
        );
        self.client
            .query_one(&sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .get(0)
    }

    /// Checksums of every table in every non-system schema.
    pub async fn checksum_all(&self) -> Vec<(String, String)> {
        let rows = self
            .client
            .query(
                "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables
                  WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
                &[],
            )
            .await
            .expect("list tables");
        let mut sums = Vec::new();
        for row in rows {
            let table: String = row.get(0);
            let sum = self.checksum(&table).await;
            sums.push((table, sum));
        }
        sums
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test failed: database {} kept for inspection", self.name);
            return;
        }
        execute_from_drop(&[(
            server_url(),
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        )]);
    }
}

/// Runs cleanup SQL (url, statement) in order from a `Drop`: on a thread and
/// runtime of its own, since `Drop` may run inside a runtime it must not
/// block. Failures are reported, not raised (the test's verdict stands).
pub fn execute_from_drop(statements: &[(String, String)]) {
    let statements = statements.to_vec();
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            for (url, sql) in statements {
                match tokio_postgres::connect(&url, NoTls).await {
                    Ok((client, conn)) => {
                        tokio::spawn(conn);
                        if let Err(e) = client.batch_execute(&sql).await {
                            eprintln!("cleanup `{sql}` failed: {e}");
                        }
                    }
                    Err(e) => eprintln!("cleanup `{sql}`: cannot connect: {e}"),
                }
            }
        });
    })
    .join();
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[track_caller]
pub fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "relink failed with {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        stdout(out),
        stderr(out)
    );
}

#[track_caller]
pub fn assert_code(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "unexpected exit code\nstdout:\n{}\nstderr:\n{}",
        stdout(out),
        stderr(out)
    );
}

/// The summary of `relink run --format json` (last stdout line).
pub fn json_summary(out: &Output) -> serde_json::Value {
    let text = stdout(out);
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON summary ({e}): {text}"))
}

/// Sends a signal (`"KILL"`, `"INT"`, `"TERM"`) to a process with kill(1):
/// the crate forbids `unsafe`, so no `libc::kill`.
pub fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid} failed");
}

/// A relink process running in the background (see [`TestDb::spawn`]): its
/// output is collected by a thread, so it never blocks on a full pipe.
pub struct Spawned {
    pub pid: u32,
    receiver: std::sync::mpsc::Receiver<Output>,
    output: Option<Output>,
    exited: bool,
}

impl Spawned {
    /// Whether the process has exited (its output is then kept for [`Spawned::wait`]).
    pub fn finished(&mut self) -> bool {
        if !self.exited {
            self.output = self.receiver.try_recv().ok();
            self.exited = self.output.is_some();
        }
        self.exited
    }

    /// Waits (without blocking the async runtime) for the process to exit;
    /// kills it and fails the test if it takes longer than `timeout`.
    pub async fn wait(mut self, timeout: std::time::Duration) -> Output {
        let started = std::time::Instant::now();
        while !self.finished() {
            if started.elapsed() > timeout {
                send_signal(self.pid, "KILL");
                panic!("relink (pid {}) still running after {timeout:?}", self.pid);
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        self.output.take().expect("finished")
    }
}

/// A test that fails while relink runs in the background must not leave it
/// running: kill it.
impl Drop for Spawned {
    fn drop(&mut self) {
        if !self.finished() {
            // Not `send_signal`: it may have exited meanwhile, and a panic
            // in a drop during a panic aborts.
            let _ = Command::new("kill")
                .args(["-KILL", &self.pid.to_string()])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

impl TestDb {
    /// Starts relink with `args` in the background (stdin closed, output piped).
    pub fn spawn(&self, args: &[&str]) -> Spawned {
        let child = self
            .relink()
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn relink");
        let pid = child.id();
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            if let Ok(out) = child.wait_with_output() {
                let _ = sender.send(out);
            }
        });
        Spawned {
            pid,
            receiver,
            output: None,
            exited: false,
        }
    }

    /// Checksum of `profile_links` without the timestamps (which differ
    /// between two runs over the same data): the end state of a migration.
    pub async fn links_checksum(&self) -> String {
        self.checksum(
            "(SELECT id, \"userId\", \"profileId\", label, url, type, position FROM profile_links)",
        )
        .await
    }

    /// `relink [global…] status --format json`, parsed (the command must
    /// succeed); `global` e.g. `["--state-schema", "x"]`.
    pub fn status_json(&self, global: &[&str]) -> serde_json::Value {
        let mut args = global.to_vec();
        args.extend_from_slice(&["status", "--format", "json"]);
        let out = self.run(&args);
        assert_success(&out);
        serde_json::from_str(stdout(&out).trim())
            .unwrap_or_else(|e| panic!("status JSON does not parse ({e}): {}", stdout(&out)))
    }

    /// `relink verify --format json` plus `extra` arguments: the exit status
    /// and the parsed report.
    pub fn verify_json(&self, extra: &[&str]) -> (Output, serde_json::Value) {
        let mut args = vec!["verify", "--format", "json"];
        args.extend_from_slice(extra);
        let out = self.run(&args);
        let report = serde_json::from_str(stdout(&out).trim()).unwrap_or_else(|e| {
            panic!(
                "verify JSON does not parse ({e})\nstdout:\n{}\nstderr:\n{}",
                stdout(&out),
                stderr(&out)
            )
        });
        (out, report)
    }
}

/// The check named `name` of a `verify --format json` report: (verdict, value).
#[track_caller]
pub fn verify_check(report: &serde_json::Value, name: &str) -> (String, u64) {
    let check = report["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("verify reported no check {name:?}: {report}"));
    (
        check["verdict"].as_str().unwrap_or_default().to_owned(),
        check["value"]
            .as_u64()
            .unwrap_or_else(|| panic!("check {name:?} has no value: {check}")),
    )
}

/// The line of `verify`'s text output for check `name`: (verdict, value).
#[track_caller]
pub fn verify_line(text: &str, name: &str) -> (String, u64) {
    for line in text.lines() {
        let Some((verdict, rest)) = line.split_once(' ') else {
            continue;
        };
        if let Some(figures) = rest.trim_start().strip_prefix(name) {
            let value = figures
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no figure on the line {line:?}"));
            return (verdict.to_owned(), value);
        }
    }
    panic!("verify printed no line for {name:?}:\n{text}");
}

/// Neither a panic nor a backtrace in a command's output.
#[track_caller]
pub fn assert_no_panic(out: &Output) {
    let all = format!("{}{}", stdout(out), stderr(out));
    for needle in ["panicked", "stack backtrace", "RUST_BACKTRACE"] {
        assert!(
            !all.contains(needle),
            "relink printed {needle:?}\nstdout:\n{}\nstderr:\n{}",
            stdout(out),
            stderr(out)
        );
    }
}
