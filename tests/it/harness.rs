//! Test harness against the real server: each test gets its own freshly
//! created database with the app schema from `sql/app/`, dropped afterwards
//! unless the test failed (so it can be inspected). Tests run in parallel.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

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

    /// The first `limit` profiles, by id, whose legacy value is an object
    /// (keys can be added to it) and that have migrated links: (id, userId).
    pub async fn migrated_object_profiles(&self, limit: i64) -> Vec<(String, String)> {
        let rows = self
            .client
            .query(
                "SELECT p.id, p.\"userId\" FROM profiles p
                  WHERE jsonb_typeof(p.\"socialLinks\") = 'object'
                    AND EXISTS (SELECT 1 FROM profile_links pl WHERE pl.\"profileId\" = p.id)
                  ORDER BY p.id LIMIT $1",
                &[&limit],
            )
            .await
            .expect("migrated object-shaped profiles");
        assert_eq!(
            i64::try_from(rows.len()).ok(),
            Some(limit),
            "too few migrated object-shaped profiles"
        );
        rows.iter().map(|r| (r.get(0), r.get(1))).collect()
    }

    /// md5 of a query's rows in a stable order: a table's checksum.
    pub async fn checksum(&self, table: &str) -> String {
        checksum(&self.client, table).await
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

/// md5 of a query's rows in a stable order, on any connection.
pub async fn checksum(client: &Client, table: &str) -> String {
    let sql = format!(
        "SELECT coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM {table} t"
    );
    client
        .query_one(&sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// `profile_links` without the timestamps (which differ between two runs
/// over the same data): the end state of a migration, for [`checksum`].
pub const LINKS_WITHOUT_TIMES: &str =
    "(SELECT id, \"userId\", \"profileId\", label, url, type, position FROM profile_links)";

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

/// Waits until process `pid` is stopped (SIGSTOP: state `T` in
/// `/proc/PID/stat`); fails the test after `timeout`.
pub async fn wait_stopped(pid: u32, timeout: std::time::Duration) {
    let started = std::time::Instant::now();
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // "pid (comm) S …": the state follows the last ')'.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .unwrap_or_default()
            .to_owned();
        if state == "T" {
            return;
        }
        assert!(
            started.elapsed() < timeout,
            "process {pid} not stopped within {timeout:?} (state {state:?})"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
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

    /// Sends `signal` and expects relink to stop within `within`: exit 130,
    /// no panic. Returns its output.
    pub async fn stop_with(self, signal: &str, within: std::time::Duration) -> Output {
        send_signal(self.pid, signal);
        let signalled = std::time::Instant::now();
        let out = self.wait(within + std::time::Duration::from_secs(15)).await;
        assert!(
            signalled.elapsed() < within,
            "took {:?} to stop after SIG{signal}",
            signalled.elapsed()
        );
        assert_code(&out, 130);
        assert_no_panic(&out);
        out
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

/// Every link id the ledger records (optionally of one run): UUID v5 of the
/// profile id and each recorded key, as relink computes it.
pub async fn ledger_ids(client: &Client, run: Option<i64>) -> std::collections::BTreeSet<String> {
    client
        .query(
            "SELECT profile_id, user_id, unnest(link_keys) FROM relink.ledger
              WHERE $1::bigint IS NULL OR run_id = $1",
            &[&run],
        )
        .await
        .expect("ledger")
        .iter()
        .map(|r| relink::plan::link_id(r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// Checksum of a database's `profile_links` without the timestamps: the
/// end state of a migration (see [`LINKS_WITHOUT_TIMES`]).
pub async fn links_checksum_of(client: &Client) -> String {
    checksum(client, LINKS_WITHOUT_TIMES).await
}

impl TestDb {
    /// Starts relink with `args` in the background (stdin closed, output piped).
    pub fn spawn(&self, args: &[&str]) -> Spawned {
        let mut cmd = self.relink();
        cmd.args(args);
        spawn(cmd)
    }

    /// Checksum of `profile_links` without the timestamps: see
    /// [`LINKS_WITHOUT_TIMES`].
    pub async fn links_checksum(&self) -> String {
        self.checksum(LINKS_WITHOUT_TIMES).await
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

/// Starts `cmd` in the background (stdin closed, output piped; see
/// [`Spawned`]).
pub fn spawn(mut cmd: Command) -> Spawned {
    let child = cmd
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

// ---------------------------------------------------------------------------
// The private servers of `scripts/pg-server tls` and `scripts/pg-server
// replica`, for the connection (SPEC §12) and throttling (SPEC §13) tests.
// Each is started (or reused) once per test process, on first use; the
// script's lock makes concurrent test processes safe. `make test` needs no
// setup for them: ports and directory follow RELINK_PG_TLS_PORT,
// RELINK_PG_PRIMARY_PORT, RELINK_PG_REPLICA_PORT and RELINK_PG_DIR.

/// The TLS-only server (`scripts/pg-server tls`): over TCP it accepts TLS
/// only (an unencrypted connection gets "no pg_hba.conf entry … no
/// encryption", as on AWS RDS with rds.force_ssl). All paths are absolute.
#[derive(Debug, Clone)]
pub struct TlsServer {
    /// `localhost`: the only name in the server certificate (verify-full
    /// with host 127.0.0.1 fails the host-name check).
    pub host: String,
    pub port: u16,
    /// Superuser `postgres` over the Unix socket (trust), a postgresql:// URL
    /// tokio-postgres parses: the only way in without TLS.
    pub admin_url: String,
    /// The throwaway CA that signed the server and client certificates.
    pub ca: String,
    /// A CA that signed nothing here ("untrusted CA" tests).
    pub untrusted_ca: String,
    /// Client certificate (CN = `cert_user`) and its key (mode 0600, owned
    /// by the user that ran the script).
    pub client_cert: String,
    pub client_key: String,
    /// SCRAM-SHA-256 login and its password.
    pub pw_user: String,
    pub pw: String,
    /// md5 login (password stored as md5) and its password.
    pub md5_user: String,
    pub md5_pw: String,
    /// Login by client certificate only.
    pub cert_user: String,
    /// NOLOGIN group of the three logins; owner of [`TlsTestDb`] databases.
    pub db_owner: String,
    /// `client_key` encrypted (PKCS#8, AES-256-CBC) with
    /// `client_key_password`, for `sslpassword`.
    pub client_key_encrypted: String,
    pub client_key_password: String,
    /// A second client certificate for `cert_user` (and its key), revoked:
    /// the server's `ssl_crl_file` lists it.
    pub revoked_client_cert: String,
    pub revoked_client_key: String,
    /// The CA's revocation list revoking nothing.
    pub empty_crl: String,
    /// The CA's revocation list revoking the server's certificate, and a
    /// directory holding it under its OpenSSL hash name (`sslcrldir`).
    pub server_revoked_crl: String,
    pub server_revoked_crl_dir: String,
    /// A CRL of version 1 (no extensions), which relink refuses.
    pub v1_crl: String,
}

/// A primary with one streaming replica (`scripts/pg-server replica`), trust
/// auth on 127.0.0.1.
#[derive(Debug, Clone)]
pub struct ReplicaSet {
    /// `postgres` on the primary's `postgres` database.
    pub primary_url: String,
    /// `postgres` on the replica (a hot standby: read-only).
    pub replica_url: String,
    /// The replica's `application_name` in the primary's `pg_stat_replication`.
    pub replica_name: String,
    /// A LOGIN, CREATEDB role on the primary without `pg_monitor`: it sees the
    /// replica's row in `pg_stat_replication` with pid, usename and
    /// application_name only; state, LSNs and lags are NULL.
    pub nomon_user: String,
}

/// Runs `scripts/pg-server <command>` and parses its `KEY=value` lines. The
/// script's diagnostics are passed on to the test's output.
pub fn pg_server(command: &str) -> HashMap<String, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/pg-server");
    let out = Command::new(&script)
        .arg(command)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let diagnostics = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "`scripts/pg-server {command}` failed ({:?}):\n{diagnostics}",
        out.status.code()
    );
    eprint!("{diagnostics}");
    parse_assignments(&String::from_utf8_lossy(&out.stdout))
}

/// `KEY=value` lines as the script prints them: a value is plain or
/// shell-quoted ('…', with `'\''` for a quote).
pub fn parse_assignments(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.trim().to_owned(), shell_unquote(value)))
        .collect()
}

fn shell_unquote(value: &str) -> String {
    let mut out = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => out.extend(chars.by_ref().take_while(|&c| c != '\'')),
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

/// Takes `key` out of the script's output, or fails naming it.
fn take(vars: &mut HashMap<String, String>, command: &str, key: &str) -> String {
    vars.remove(key)
        .unwrap_or_else(|| panic!("`scripts/pg-server {command}` printed no {key}"))
}

/// The TLS server, started on the first call of the process.
pub fn tls_server() -> &'static TlsServer {
    static SERVER: OnceLock<TlsServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        let mut vars = pg_server("tls");
        let mut get = |key: &str| take(&mut vars, "tls", key);
        TlsServer {
            host: get("PG_TLS_HOST"),
            port: get("PG_TLS_PORT").parse().expect("PG_TLS_PORT is a port"),
            admin_url: get("PG_TLS_ADMIN_URL"),
            ca: get("PG_TLS_CA"),
            untrusted_ca: get("PG_TLS_UNTRUSTED_CA"),
            client_cert: get("PG_TLS_CLIENT_CERT"),
            client_key: get("PG_TLS_CLIENT_KEY"),
            pw_user: get("PG_TLS_PW_USER"),
            pw: get("PG_TLS_PW"),
            md5_user: get("PG_TLS_MD5_USER"),
            md5_pw: get("PG_TLS_MD5_PW"),
            cert_user: get("PG_TLS_CERT_USER"),
            db_owner: get("PG_TLS_DB_OWNER"),
            client_key_encrypted: get("PG_TLS_CLIENT_KEY_ENCRYPTED"),
            client_key_password: get("PG_TLS_CLIENT_KEY_PASSWORD"),
            revoked_client_cert: get("PG_TLS_REVOKED_CLIENT_CERT"),
            revoked_client_key: get("PG_TLS_REVOKED_CLIENT_KEY"),
            empty_crl: get("PG_TLS_EMPTY_CRL"),
            server_revoked_crl: get("PG_TLS_SERVER_REVOKED_CRL"),
            server_revoked_crl_dir: get("PG_TLS_SERVER_REVOKED_CRL_DIR"),
            v1_crl: get("PG_TLS_V1_CRL"),
        }
    })
}

/// The replica set, started on the first call of the process (returns once
/// the replica streams).
pub fn replica_set() -> &'static ReplicaSet {
    static SET: OnceLock<ReplicaSet> = OnceLock::new();
    SET.get_or_init(|| {
        let mut vars = pg_server("replica");
        let mut get = |key: &str| take(&mut vars, "replica", key);
        ReplicaSet {
            primary_url: get("PG_PRIMARY_URL"),
            replica_url: get("PG_REPLICA_URL"),
            replica_name: get("PG_REPLICA_NAME"),
            nomon_user: get("PG_NOMON_USER"),
        }
    })
}

/// Percent-encodes `s` for a URL's user, password or query value (`/` is
/// kept: paths stay readable).
pub fn url_encode(s: &str) -> String {
    let mut out = String::new();
    for byte in s.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~/".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

impl TlsServer {
    /// `postgres://user[:password]@localhost:port/dbname?sslmode=verify-full
    /// &sslrootcert=CA`, plus `extra` query parameters (`(name, value)`).
    pub fn url(
        &self,
        user: &str,
        password: Option<&str>,
        dbname: &str,
        extra: &[(&str, &str)],
    ) -> String {
        let password = password
            .map(|p| format!(":{}", url_encode(p)))
            .unwrap_or_default();
        let mut url = format!(
            "postgres://{}{password}@{}:{}/{}?sslmode=verify-full&sslrootcert={}",
            url_encode(user),
            self.host,
            self.port,
            url_encode(dbname),
            url_encode(&self.ca)
        );
        for (name, value) in extra {
            url.push_str(&format!("&{name}={}", url_encode(value)));
        }
        url
    }

    /// The SCRAM login, password in the URL, TLS verified.
    pub fn pw_url(&self, dbname: &str) -> String {
        self.url(&self.pw_user, Some(&self.pw), dbname, &[])
    }

    /// The md5 login, password in the URL, TLS verified.
    pub fn md5_url(&self, dbname: &str) -> String {
        self.url(&self.md5_user, Some(&self.md5_pw), dbname, &[])
    }

    /// The certificate login (`sslcert`, `sslkey`), TLS verified.
    pub fn cert_url(&self, dbname: &str) -> String {
        self.url(
            &self.cert_user,
            None,
            dbname,
            &[("sslcert", &self.client_cert), ("sslkey", &self.client_key)],
        )
    }

    /// The admin URL (superuser over the socket) for database `dbname`.
    pub fn admin_url_for(&self, dbname: &str) -> String {
        with_dbname(&self.admin_url, dbname)
    }
}

/// `base` with its user name replaced.
pub fn with_user(base: &str, user: &str) -> String {
    let mut url = url::Url::parse(base).expect("a postgres:// URL");
    url.set_username(user).expect("a URL with a host");
    url.to_string()
}

/// A database of its own for one test on the TLS server, with the app schema.
/// Owned by the group `db_owner` (relink_tls_app), of which the SCRAM, md5
/// and certificate logins are members, and the schema is created as that
/// group: each login can read and write the app's tables and create a state
/// schema. Default privileges give the group every privilege on what any
/// login creates, so an object created by one login (a state schema, its
/// tables) is usable by the others, though only its creator can alter or
/// drop it. Created and dropped over the admin (socket) URL.
pub struct TlsTestDb {
    pub name: String,
    pub server: &'static TlsServer,
    /// Superuser `postgres` on this database, over the Unix socket (the test
    /// process has no TLS).
    pub client: Client,
}

impl TlsTestDb {
    pub async fn new(tag: &str) -> Self {
        let server = tls_server();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("relink_t_{tag}_{}_{n}", std::process::id());
        let admin = connect(&server.admin_url).await;
        // Two statements: several in one string would be one transaction,
        // which DROP DATABASE refuses.
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await
            .expect("drop old test database on the TLS server");
        admin
            .batch_execute(&format!("CREATE DATABASE {name} OWNER {}", server.db_owner))
            .await
            .expect("create the test database on the TLS server");
        let client = connect(&server.admin_url_for(&name)).await;
        let owner = &server.db_owner;
        let logins = format!(
            "{}, {}, {}",
            server.pw_user, server.md5_user, server.cert_user
        );
        let mut setup = String::new();
        for objects in ["TABLES", "SEQUENCES", "FUNCTIONS", "TYPES", "SCHEMAS"] {
            setup.push_str(&format!(
                "ALTER DEFAULT PRIVILEGES FOR ROLE {logins} GRANT ALL ON {objects} TO {owner};\n"
            ));
        }
        setup.push_str(&format!("SET ROLE {owner};\n{APP_UP}\nRESET ROLE;"));
        client
            .batch_execute(&setup)
            .await
            .expect("apply sql/app/up.sql on the TLS server");
        Self {
            name,
            server,
            client,
        }
    }

    /// See [`TlsServer::pw_url`].
    pub fn pw_url(&self) -> String {
        self.server.pw_url(&self.name)
    }

    /// See [`TlsServer::md5_url`].
    pub fn md5_url(&self) -> String {
        self.server.md5_url(&self.name)
    }

    /// See [`TlsServer::cert_url`].
    pub fn cert_url(&self) -> String {
        self.server.cert_url(&self.name)
    }

    /// The relink binary with `DATABASE_URL` = `url` (e.g. [`Self::pw_url`]),
    /// in the test process's environment (`tls.rs` gives relink a `HOME`
    /// and environment of its own instead).
    #[allow(dead_code)]
    pub fn relink(&self, url: &str) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_relink"));
        cmd.env("DATABASE_URL", url).env_remove("RELINK_LOG");
        cmd
    }

    /// A count (or any bigint) from the admin session.
    pub async fn count(&self, sql: &str) -> i64 {
        self.client
            .query_one(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .get(0)
    }

    /// See [`TestDb::links_checksum`].
    pub async fn links_checksum(&self) -> String {
        checksum(&self.client, LINKS_WITHOUT_TIMES).await
    }
}

impl Drop for TlsTestDb {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "test failed: database {} on the TLS server kept for inspection",
                self.name
            );
            return;
        }
        execute_from_drop(&[(
            self.server.admin_url.clone(),
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        )]);
    }
}

/// Tests share the replica set, but one that pauses replay makes every
/// replica lag: [`ReplicaTestDb::exclusive`] takes this lock for writing,
/// [`ReplicaTestDb::new`] for reading. (Within this test process; the `it`
/// binary is the only one using the replica set.) The lock is fair: a test
/// must hold one `ReplicaTestDb` at a time, or a writer queued between its
/// two reads deadlocks both.
static REPLICA_USE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

enum ReplicaUse {
    Shared(#[allow(dead_code)] tokio::sync::RwLockReadGuard<'static, ()>),
    Exclusive(#[allow(dead_code)] tokio::sync::RwLockWriteGuard<'static, ()>),
}

/// A database of its own for one test on the replica set's primary (and so
/// on the replica), with the app schema. Owned by `relink_nomon` and the
/// schema created as that role, so relink can run as it as well as as
/// `postgres`.
pub struct ReplicaTestDb {
    pub name: String,
    pub set: &'static ReplicaSet,
    /// `postgres` on this database on the primary.
    pub url: String,
    /// `postgres` on this database on the replica (read-only).
    pub replica_url: String,
    /// `relink_nomon` (no pg_monitor) on this database on the primary.
    pub nomon_url: String,
    /// `postgres` on this database on the primary.
    pub client: Client,
    lock: Arc<ReplicaUse>,
}

impl ReplicaTestDb {
    /// Shares the replica set with other tests: replay is never paused.
    pub async fn new(tag: &str) -> Self {
        let guard = REPLICA_USE.read().await;
        Self::create(tag, ReplicaUse::Shared(guard)).await
    }

    /// Sole user of the replica set while it lives: may pause replay
    /// ([`Self::pause_replay`]).
    pub async fn exclusive(tag: &str) -> Self {
        let guard = REPLICA_USE.write().await;
        Self::create(tag, ReplicaUse::Exclusive(guard)).await
    }

    async fn create(tag: &str, lock: ReplicaUse) -> Self {
        let set = replica_set();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("relink_t_{tag}_{}_{n}", std::process::id());
        let admin = connect(&set.primary_url).await;
        // Two statements: several in one string would be one transaction,
        // which DROP DATABASE refuses.
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await
            .expect("drop old test database on the primary");
        admin
            .batch_execute(&format!("CREATE DATABASE {name} OWNER {}", set.nomon_user))
            .await
            .expect("create the test database on the primary");
        let url = with_dbname(&set.primary_url, &name);
        let client = connect(&url).await;
        client
            .batch_execute(&format!(
                "SET ROLE {};\n{APP_UP}\nRESET ROLE;",
                set.nomon_user
            ))
            .await
            .expect("apply sql/app/up.sql on the primary");
        let db = Self {
            replica_url: with_dbname(&set.replica_url, &name),
            nomon_url: with_user(&url, &set.nomon_user),
            name,
            set,
            url,
            client,
            lock: Arc::new(lock),
        };
        db.wait_replayed(std::time::Duration::from_secs(30)).await;
        db
    }

    /// Waits until the replica has replayed everything written on the
    /// primary so far (fails the test after `timeout`).
    pub async fn wait_replayed(&self, timeout: std::time::Duration) {
        let target: String = self
            .client
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .await
            .expect("primary's WAL position")
            .get(0);
        let replica = connect(&self.set.replica_url).await;
        let started = std::time::Instant::now();
        loop {
            let done: bool = replica
                .query_one(
                    "SELECT coalesce(pg_last_wal_replay_lsn() >= $1::text::pg_lsn, false)",
                    &[&target],
                )
                .await
                .expect("replica's replay position")
                .get(0);
            if done {
                return;
            }
            assert!(
                started.elapsed() < timeout,
                "the replica did not replay up to {target} within {timeout:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Pauses WAL replay on the replica until [`ReplayPause::resume`] (or
    /// the guard's drop, even when the test fails). Only on an
    /// [`Self::exclusive`] database: paused replay makes every relink run on
    /// the primary wait.
    pub async fn pause_replay(&self) -> ReplayPause {
        assert!(
            matches!(*self.lock, ReplicaUse::Exclusive(_)),
            "pause_replay needs ReplicaTestDb::exclusive"
        );
        let replica = connect(&self.set.replica_url).await;
        replica
            .batch_execute("SELECT pg_wal_replay_pause()")
            .await
            .expect("pause replay on the replica");
        ReplayPause {
            replica_url: self.set.replica_url.clone(),
            resumed: false,
            _lock: Arc::clone(&self.lock),
        }
    }

    /// The relink binary, with `DATABASE_URL` = `url` (e.g. `self.url` or
    /// `self.nomon_url`).
    pub fn relink(&self, url: &str) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_relink"));
        cmd.env("DATABASE_URL", url).env_remove("RELINK_LOG");
        cmd
    }
}

impl Drop for ReplicaTestDb {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "test failed: database {} on the replica set's primary kept for inspection",
                self.name
            );
            return;
        }
        execute_from_drop(&[(
            self.set.primary_url.clone(),
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        )]);
    }
}

/// Replay paused on the replica (see [`ReplicaTestDb::pause_replay`]); it
/// keeps the replica set exclusive until resumed.
pub struct ReplayPause {
    replica_url: String,
    resumed: bool,
    _lock: Arc<ReplicaUse>,
}

impl ReplayPause {
    pub async fn resume(mut self) {
        connect(&self.replica_url)
            .await
            .batch_execute("SELECT pg_wal_replay_resume()")
            .await
            .expect("resume replay on the replica");
        self.resumed = true;
    }
}

impl Drop for ReplayPause {
    fn drop(&mut self) {
        if !self.resumed {
            execute_from_drop(&[(
                self.replica_url.clone(),
                "SELECT pg_wal_replay_resume()".to_owned(),
            )]);
        }
    }
}

/// `psql` (libpq, the reference client) runs `sql` on `conninfo` (a URL or
/// `key=value` string) with `PGPASSWORD` = `password`, none of the caller's
/// other PG* variables, no ~/.pgpass and no ~/.psqlrc; output unaligned,
/// tuples only.
pub fn psql(conninfo: &str, password: Option<&str>, sql: &str) -> Output {
    let mut cmd = Command::new("psql");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PG") {
            cmd.env_remove(name);
        }
    }
    cmd.env("PGPASSFILE", "/nonexistent/relink-test-no-pgpass")
        .env("PGCONNECT_TIMEOUT", "5");
    if let Some(password) = password {
        cmd.env("PGPASSWORD", password);
    }
    cmd.args([
        "-X",
        "-w",
        "-q",
        "-At",
        "-v",
        "ON_ERROR_STOP=1",
        "-d",
        conninfo,
        "-c",
        sql,
    ])
    .stdin(Stdio::null())
    .output()
    .unwrap_or_else(|e| panic!("cannot run psql ({e}); Debian: apt-get install postgresql-client"))
}

// ---------------------------------------------------------------------------
// The PgBouncers of `scripts/pg-server pooler` (SPEC §12 "Connection
// poolers") and node_exporter of `scripts/pg-server node-exporter` (SPEC
// §14), started (or reused) once per test process like the servers above;
// ports follow RELINK_PG_POOLER_PORT, RELINK_PG_BOUNCER_SESSION_PORT,
// RELINK_PG_BOUNCER_TRANSACTION_PORT and RELINK_PG_NODE_EXPORTER_PORT.

/// A PostgreSQL server (trust auth on 127.0.0.1) with two PgBouncers in
/// front of it, both with PgBouncer's defaults but `pool_mode`: so both
/// refuse the `options` startup parameter.
#[derive(Debug, Clone)]
pub struct PoolerSet {
    /// `postgres` on the server itself, database `postgres`.
    pub direct_url: String,
    /// Through the PgBouncer with `pool_mode = session`.
    pub session_url: String,
    /// Through the PgBouncer with `pool_mode = transaction`.
    pub transaction_url: String,
}

/// The pooler set, started on the first call of the process.
pub fn pooler_set() -> &'static PoolerSet {
    static SET: OnceLock<PoolerSet> = OnceLock::new();
    SET.get_or_init(|| {
        let mut vars = pg_server("pooler");
        let mut get = |key: &str| take(&mut vars, "pooler", key);
        PoolerSet {
            direct_url: get("PG_POOLER_DIRECT_URL"),
            session_url: get("PG_BOUNCER_SESSION_URL"),
            transaction_url: get("PG_BOUNCER_TRANSACTION_URL"),
        }
    })
}

/// A database of its own for one test on the server behind the poolers,
/// with the app schema; reached directly or through either PgBouncer.
pub struct PooledTestDb {
    pub name: String,
    pub set: &'static PoolerSet,
    /// `postgres` on this database, directly.
    pub url: String,
    /// The same through the session-mode and the transaction-mode PgBouncer.
    pub session_url: String,
    pub transaction_url: String,
    /// `postgres` on this database, directly.
    pub client: Client,
}

impl PooledTestDb {
    pub async fn new(tag: &str) -> Self {
        let set = pooler_set();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("relink_t_{tag}_{}_{n}", std::process::id());
        let admin = connect(&set.direct_url).await;
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await
            .expect("drop old test database behind the poolers");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create the test database behind the poolers");
        let url = with_dbname(&set.direct_url, &name);
        let client = connect(&url).await;
        client
            .batch_execute(APP_UP)
            .await
            .expect("apply sql/app/up.sql behind the poolers");
        Self {
            session_url: with_dbname(&set.session_url, &name),
            transaction_url: with_dbname(&set.transaction_url, &name),
            name,
            set,
            url,
            client,
        }
    }

    /// The relink binary with `DATABASE_URL` = `url` (e.g. `self.url` or
    /// `self.transaction_url`).
    pub fn relink(&self, url: &str) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_relink"));
        cmd.env("DATABASE_URL", url)
            .env_remove("RELINK_LOG")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs relink with `args` on `url` to completion.
    pub fn run(&self, url: &str, args: &[&str]) -> Output {
        self.relink(url).args(args).output().expect("run relink")
    }

    /// A count (or any bigint) on the direct connection.
    pub async fn count(&self, sql: &str) -> i64 {
        self.client
            .query_one(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .get(0)
    }

    /// See [`TestDb::links_checksum`].
    pub async fn links_checksum(&self) -> String {
        checksum(&self.client, LINKS_WITHOUT_TIMES).await
    }
}

impl Drop for PooledTestDb {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "test failed: database {} behind the poolers kept for inspection",
                self.name
            );
            return;
        }
        execute_from_drop(&[(
            self.set.direct_url.clone(),
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        )]);
    }
}

/// node_exporter with only its textfile collector, reading one directory.
#[derive(Debug, Clone)]
pub struct NodeExporter {
    /// `http://127.0.0.1:PORT/metrics`.
    pub url: String,
    /// The textfile collector's directory (`*.prom` files in it are read).
    pub textfile_dir: PathBuf,
    /// node_exporter's own log (its stderr), where gathering errors go.
    pub log: PathBuf,
}

/// node_exporter, started on the first call of the process.
pub fn node_exporter() -> &'static NodeExporter {
    static EXPORTER: OnceLock<NodeExporter> = OnceLock::new();
    EXPORTER.get_or_init(|| {
        let mut vars = pg_server("node-exporter");
        let mut get = |key: &str| take(&mut vars, "node-exporter", key);
        NodeExporter {
            url: get("PG_NODE_EXPORTER_URL"),
            textfile_dir: PathBuf::from(get("PG_NODE_EXPORTER_TEXTFILE_DIR")),
            log: PathBuf::from(get("PG_NODE_EXPORTER_LOG")),
        }
    })
}

impl NodeExporter {
    /// One scrape: the HTTP status line and the body (HTTP/1.0, so the
    /// server closes the connection after the body).
    pub async fn scrape(&self) -> (String, String) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let address = self
            .url
            .strip_prefix("http://")
            .and_then(|rest| rest.split('/').next())
            .expect("an http:// URL");
        let mut stream = tokio::net::TcpStream::connect(address)
            .await
            .unwrap_or_else(|e| panic!("cannot reach node_exporter at {address}: {e}"));
        stream
            .write_all(format!("GET /metrics HTTP/1.0\r\nHost: {address}\r\n\r\n").as_bytes())
            .await
            .expect("send the request");
        let mut reply = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(30),
            stream.read_to_end(&mut reply),
        )
        .await
        .expect("node_exporter answers within 30 s")
        .expect("read the reply");
        let reply = String::from_utf8_lossy(&reply).into_owned();
        let (head, body) = reply
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("not an HTTP reply: {reply}"));
        let status = head.lines().next().unwrap_or_default().to_owned();
        (status, body.to_owned())
    }
}

// ---------------------------------------------------------------------------
// A HOME and environment of a test's own, for the connection tests (libpq's
// files and variables): only what a test sets reaches relink.

/// A directory of the test's own, for `HOME` (`~/.pgpass`,
/// `~/.postgresql/`) and files such as `PGPASSFILE`; removed afterwards
/// unless the test failed.
pub struct Home(PathBuf);

impl Home {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "relink-it-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a temporary HOME");
        chmod(&dir, 0o700);
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `file` (relative to this directory) with `mode`; returns its
    /// path.
    pub fn write(&self, file: &str, text: &str, mode: u32) -> PathBuf {
        let path = self.0.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create a directory");
        }
        std::fs::write(&path, text).expect("write a file");
        chmod(&path, mode);
        path
    }

    /// Copies `from` to `file` with `mode`.
    pub fn copy(&self, from: &str, file: &str, mode: u32) -> PathBuf {
        let text = std::fs::read_to_string(from).unwrap_or_else(|e| panic!("read {from}: {e}"));
        self.write(file, &text, mode)
    }

    /// The relink binary with nothing of the caller's connection settings:
    /// no `DATABASE_URL`, no `PG*` variable, no `RELINK_LOG`; `HOME` here.
    pub fn relink(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_relink"));
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy().into_owned();
            if name.starts_with("PG") || name == "DATABASE_URL" || name == "RELINK_LOG" {
                cmd.env_remove(name);
            }
        }
        cmd.env("HOME", &self.0).stdin(Stdio::null());
        cmd
    }

    /// [`Self::relink`] with `DATABASE_URL` = `url`.
    pub fn relink_url(&self, url: &str) -> Command {
        let mut cmd = self.relink();
        cmd.env("DATABASE_URL", url);
        cmd
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

pub fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// Runs `cmd` with `args` to completion.
pub fn output(mut cmd: Command, args: &[&str]) -> Output {
    cmd.args(args).output().expect("run relink")
}

/// A fatal error: exit 1, nothing on stdout, and on stderr exactly one line
/// `relink: error: …` (returned) holding every one of `needles`.
#[track_caller]
pub fn assert_one_line_error(out: &Output, code: i32, needles: &[&str]) -> String {
    assert_code(out, code);
    assert_no_panic(out);
    let err = stderr(out);
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines.len() == 1 && lines[0].starts_with("relink: error: "),
        "expected one line `relink: error: …` on stderr, got:\n{err}"
    );
    assert!(stdout(out).is_empty(), "stdout: {}", stdout(out));
    for needle in needles {
        assert!(err.contains(needle), "expected {needle:?} in:\n{err}");
    }
    err.trim_end().to_owned()
}
