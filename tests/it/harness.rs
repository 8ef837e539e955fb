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
        let name = self.name.clone();
        // Drop runs outside any runtime we may block: use a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                if let Ok((client, conn)) = tokio_postgres::connect(&server_url(), NoTls).await {
                    tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
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
