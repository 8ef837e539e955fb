//! A database of its own for each test, on the kind of server the test
//! needs: one [`TestDb`] over a [`Server`], one create/drop path.

use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use relink::state::{stored, StoredId};
use tokio_postgres::{Client, NoTls};

use super::process::{
    assert_success, eventually, relink_command, spawn, stderr, stdout, wait_stopped, Spawned,
};
use super::servers::{pooler_set, replica_set, tls_server, PoolerSet, ReplicaSet, TlsServer};

pub const APP_UP: &str = include_str!("../../../sql/app/up.sql");

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

/// `base` with its user name replaced.
pub fn with_user(base: &str, user: &str) -> String {
    let mut url = url::Url::parse(base).expect("a postgres:// URL");
    url.set_username(user).expect("a URL with a host");
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

/// The kind of server a [`TestDb`] lives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// The test server ([`server_url`]), shared by most tests.
    Plain,
    /// The TLS-only server (`scripts/pg-server tls`). The database is owned
    /// by the group `db_owner` (relink_tls_app), of which the SCRAM, md5 and
    /// certificate logins are members, and the schema is created as that
    /// group: each login can read and write the app's tables and create a
    /// state schema. Default privileges give the group every privilege on
    /// what any login creates, so an object created by one login (a state
    /// schema, its tables) is usable by the others, though only its creator
    /// can alter or drop it. Created and dropped over the admin (Unix
    /// socket) URL: the test process has no TLS.
    Tls,
    /// The replica set's primary (`scripts/pg-server replica`), and so the
    /// replica, shared with other tests: replay is never paused. The
    /// database is owned by `relink_nomon` and the schema created as that
    /// role, so relink can run as it as well as as `postgres`.
    Replica,
    /// [`Server::Replica`], this test its sole user while the database
    /// lives: it may pause replay ([`TestDb::pause_replay`]).
    ReplicaExclusive,
    /// The server behind the two PgBouncers (`scripts/pg-server pooler`),
    /// reached directly or through either of them.
    Pooler,
}

impl Server {
    /// Superuser `postgres` on the server's `postgres` database.
    fn admin_url(self) -> String {
        match self {
            Self::Plain => server_url(),
            Self::Tls => tls_server().admin_url.clone(),
            Self::Replica | Self::ReplicaExclusive => replica_set().primary_url.clone(),
            Self::Pooler => pooler_set().direct_url.clone(),
        }
    }

    /// Where the server is, for messages.
    fn place(self) -> &'static str {
        match self {
            Self::Plain => "",
            Self::Tls => " on the TLS server",
            Self::Replica | Self::ReplicaExclusive => " on the replica set's primary",
            Self::Pooler => " behind the poolers",
        }
    }

    /// The owner of test databases, when not `postgres`.
    fn owner(self) -> Option<&'static str> {
        match self {
            Self::Tls => Some(&tls_server().db_owner),
            Self::Replica | Self::ReplicaExclusive => Some(&replica_set().nomon_user),
            Self::Plain | Self::Pooler => None,
        }
    }

    /// The app schema, created as [`Self::owner`] (see each kind).
    fn schema_sql(self) -> String {
        let mut sql = String::new();
        if self == Self::Tls {
            let server = tls_server();
            let logins = format!(
                "{}, {}, {}",
                server.pw_user, server.md5_user, server.cert_user
            );
            for objects in ["TABLES", "SEQUENCES", "FUNCTIONS", "TYPES", "SCHEMAS"] {
                sql.push_str(&format!(
                    "ALTER DEFAULT PRIVILEGES FOR ROLE {logins} GRANT ALL ON {objects} TO {};\n",
                    server.db_owner
                ));
            }
        }
        match self.owner() {
            Some(owner) => sql.push_str(&format!("SET ROLE {owner};\n{APP_UP}\nRESET ROLE;")),
            None => sql.push_str(APP_UP),
        }
        sql
    }
}

/// Tests share the replica set, but one that pauses replay makes every
/// replica lag: [`Server::ReplicaExclusive`] takes this lock for writing,
/// [`Server::Replica`] for reading. (Within this test process; the `it`
/// binary is the only one using the replica set.) The lock is fair: a test
/// must hold one replica set database at a time, or a writer queued between
/// its two reads deadlocks both.
static REPLICA_USE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

enum ReplicaUse {
    Shared(#[allow(dead_code)] tokio::sync::RwLockReadGuard<'static, ()>),
    Exclusive(#[allow(dead_code)] tokio::sync::RwLockWriteGuard<'static, ()>),
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A database of its own for one test, on a [`Server`].
pub struct TestDb {
    pub name: String,
    pub server: Server,
    /// Superuser `postgres` on this database (on the TLS server: over the
    /// Unix socket; on the replica set: on the primary; behind the poolers:
    /// directly).
    pub url: String,
    /// A session of [`Self::url`].
    pub client: Client,
    /// The replica set's lock, held while the database lives.
    replica_use: Option<Arc<ReplicaUse>>,
}

impl TestDb {
    /// A new database with the application's schema on the plain server.
    pub async fn new(tag: &str) -> Self {
        Self::on(Server::Plain, tag).await
    }

    /// A new database with the application's schema on `server`.
    pub async fn on(server: Server, tag: &str) -> Self {
        let replica_use = match server {
            Server::Replica => Some(ReplicaUse::Shared(REPLICA_USE.read().await)),
            Server::ReplicaExclusive => Some(ReplicaUse::Exclusive(REPLICA_USE.write().await)),
            Server::Plain | Server::Tls | Server::Pooler => None,
        };
        let db = Self::create(server, tag, None, replica_use).await;
        db.client
            .batch_execute(&server.schema_sql())
            .await
            .unwrap_or_else(|e| panic!("apply sql/app/up.sql{}: {e}", server.place()));
        if db.replica_use.is_some() {
            db.wait_replayed(Duration::from_secs(30)).await;
        }
        db
    }

    /// A new database without any schema on the plain server.
    pub async fn empty(tag: &str) -> Self {
        Self::create(Server::Plain, tag, None, None).await
    }

    /// A database with `profiles` generated (fixed seed) and migrated by
    /// a plain `relink run`.
    pub async fn migrated(tag: &str, profiles: u64) -> Self {
        let db = Self::new(tag).await;
        db.generate(profiles);
        assert_success(&db.run(&["run"]));
        db
    }

    /// A copy of `template` (CREATE DATABASE … TEMPLATE), for comparing two
    /// runs over identical data. The template's connection is closed for the
    /// copy (PostgreSQL requires it) and opened again.
    pub async fn clone_of(template: &mut TestDb, tag: &str) -> Self {
        assert!(
            template.replica_use.is_none(),
            "clone_of: not on the replica set (its lock is held once per test)"
        );
        let admin = connect(&template.server.admin_url()).await;
        admin
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&template.name],
            )
            .await
            .expect("disconnect the template");
        let copy = Self::create(template.server, tag, Some(&template.name), None).await;
        template.client = connect(&template.url).await;
        copy
    }

    /// A database with `profiles` generated (fixed seed), and a copy of it
    /// that a plain `relink run` has migrated: what a run on the first that
    /// faults, is interrupted or throttled must end equal to.
    pub async fn with_clean_run(tag: &str, profiles: u64) -> (Self, Self) {
        let mut db = Self::new(tag).await;
        db.generate(profiles);
        let clean = Self::clone_of(&mut db, &format!("{tag}_clean")).await;
        assert_success(&clean.run(&["run"]));
        (db, clean)
    }

    /// The one create path: a database named after `tag` (and this process)
    /// on `server`, dropped first if a former run left it behind.
    async fn create(
        server: Server,
        tag: &str,
        template: Option<&str>,
        replica_use: Option<ReplicaUse>,
    ) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("relink_t_{tag}_{}_{n}", std::process::id());
        let admin_url = server.admin_url();
        let admin = connect(&admin_url).await;
        let place = server.place();
        // Two statements: several in one string would be one transaction,
        // which DROP DATABASE refuses.
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await
            .unwrap_or_else(|e| panic!("drop old test database{place}: {e}"));
        let owner = server
            .owner()
            .map(|o| format!(" OWNER {o}"))
            .unwrap_or_default();
        let template = template
            .map(|t| format!(" TEMPLATE {t}"))
            .unwrap_or_default();
        admin
            .batch_execute(&format!("CREATE DATABASE {name}{owner}{template}"))
            .await
            .unwrap_or_else(|e| panic!("create the test database{place}: {e}"));
        let url = with_dbname(&admin_url, &name);
        let client = connect(&url).await;
        Self {
            name,
            server,
            url,
            client,
            replica_use: replica_use.map(Arc::new),
        }
    }

    /// The relink binary, with `DATABASE_URL` pointing at this database as
    /// [`Self::url`].
    pub fn relink(&self) -> Command {
        relink_command(&self.url)
    }

    /// The relink binary with `DATABASE_URL` = `url` (e.g.
    /// [`Self::nomon_url`], [`Self::transaction_url`]).
    pub fn relink_on(&self, url: &str) -> Command {
        relink_command(url)
    }

    /// Runs relink with `args` to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_on(&self.url, args)
    }

    /// Runs relink with `args` on `url` to completion.
    pub fn run_on(&self, url: &str, args: &[&str]) -> Output {
        self.relink_on(url).args(args).output().expect("run relink")
    }

    /// Starts relink with `args` in the background (stdin closed, output
    /// captured; see [`Spawned`]).
    pub fn spawn(&self, args: &[&str]) -> Spawned {
        let mut cmd = self.relink();
        cmd.args(args);
        spawn(cmd)
    }

    /// Starts relink with `args`, stopped (SIGSTOP, by its test hook) at
    /// `point` (`RELINK_TEST_STOP_AT`, e.g. `lock-phase`, `commit@2`);
    /// returns once it is stopped (fails the test after `timeout`).
    pub async fn spawn_stopped_at(&self, point: &str, args: &[&str], timeout: Duration) -> Spawned {
        let mut cmd = self.relink();
        cmd.env(relink::test_hook::STOP_AT, point).args(args);
        let child = spawn(cmd);
        wait_stopped(child.pid, timeout).await;
        child
    }

    /// Fills the database with `n` generated profiles (fixed seed).
    pub fn generate(&self, n: u64) {
        let out = self.run(&["generate", "--profiles", &n.to_string()]);
        assert_success(&out);
    }

    /// Runs `sql` with `params` on [`Self::client`]; returns the rows it
    /// touched.
    pub async fn exec(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> u64 {
        self.client
            .execute(sql, params)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Runs `sql` (statements without parameters) on [`Self::client`].
    pub async fn batch(&self, sql: &str) {
        self.client
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// A count (or any bigint) on [`Self::client`].
    pub async fn count(&self, sql: &str) -> i64 {
        self.client
            .query_one(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .get(0)
    }

    /// Whether relink's ledger exists (its state schema is set up).
    pub async fn has_ledger(&self) -> bool {
        self.count("SELECT count(*) FROM pg_class WHERE oid = to_regclass('relink.ledger')")
            .await
            > 0
    }

    /// The rows of relink's ledger, 0 before it exists.
    pub async fn ledger_rows(&self) -> i64 {
        if !self.has_ledger().await {
            return 0;
        }
        self.count("SELECT count(*) FROM relink.ledger").await
    }

    /// Waits until `sql` counts more than zero; fails the test naming
    /// `what` after `timeout`.
    pub async fn wait_for_count(&self, sql: &str, timeout: Duration, what: &str) {
        eventually(timeout, what, || async { self.count(sql).await > 0 }).await;
    }

    /// Waits until relink has committed a chunk (a ledger row) here.
    pub async fn wait_for_ledger(&self, timeout: Duration) {
        eventually(timeout, "no chunk committed", || async {
            self.ledger_rows().await > 0
        })
        .await;
    }

    /// A run held (paused, throttled) since its ledger had `at` rows
    /// settles: after `in_flight_wait`, at most `in_flight` more rows (the
    /// chunks that were in flight); then none for 3 s (`held` names why).
    pub async fn assert_ledger_settles(
        &self,
        at: i64,
        in_flight: i64,
        in_flight_wait: Duration,
        held: &str,
    ) {
        tokio::time::sleep(in_flight_wait).await;
        let settled = self.ledger_rows().await;
        assert!(
            settled - at <= in_flight,
            "{} profiles committed after the run was held",
            settled - at
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(self.ledger_rows().await, settled, "{held}");
    }

    /// One text value on [`Self::client`].
    pub async fn text(&self, sql: &str) -> String {
        self.client
            .query_one(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .get(0)
    }

    /// The first column (text) of every row of `sql` on [`Self::client`].
    pub async fn texts(&self, sql: &str) -> Vec<String> {
        self.client
            .query(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// Runs relink with `args` and `--report FILE` (a file of its own,
    /// removed afterwards); it must succeed. Returns its output and the
    /// report's JSON lines.
    pub fn report_lines(&self, tag: &str, args: &[&str]) -> (Output, Vec<serde_json::Value>) {
        let path = std::env::temp_dir().join(format!("{}_{tag}.jsonl", self.name));
        let mut args = args.to_vec();
        args.extend_from_slice(&["--report", path.to_str().expect("a UTF-8 path")]);
        let out = self.run(&args);
        assert_success(&out);
        let lines = std::fs::read_to_string(&path)
            .expect("report")
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON line"))
            .collect();
        let _ = std::fs::remove_file(&path);
        (out, lines)
    }

    /// A session of its own holding `table` in ACCESS EXCLUSIVE mode, as an
    /// application's migration would, in a transaction left open: `ROLLBACK`
    /// (or `COMMIT`) on it, or its drop, releases the lock.
    pub async fn lock_table(&self, table: &str) -> Client {
        let holder = connect(&self.url).await;
        holder
            .batch_execute(&format!(
                "BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"
            ))
            .await
            .unwrap_or_else(|e| panic!("lock {table}: {e}"));
        holder
    }

    /// A ledger row of run `run_id` for `profile` of `user` that created
    /// the links of `keys`, stored as relink stores it (`state::ledger`),
    /// without a fingerprint (the profile is pending).
    pub async fn record_in_ledger(&self, user: &str, profile: &str, run_id: i64, keys: &[&str]) {
        let (user, profile) = (StoredId::of(user), StoredId::of(profile));
        self.exec(
            "INSERT INTO relink.ledger_rows
                    (run_id, migrated_at, user_uuid, profile_uuid, user_text, profile_text, link_keys)
             VALUES ($1, localtimestamp(3), $2, $3, $4, $5, $6)",
            &[
                &run_id,
                &user.uuid,
                &profile.uuid,
                &user.text,
                &profile.text,
                &stored::joined_keys(keys),
            ],
        )
        .await;
    }

    /// The application adds a link (`https://census.example.com/<id>`) to
    /// the legacy values of `n` profiles whose value is an object, picked
    /// by a hash of their id: profiles a rerun must find pending.
    pub async fn add_census_links(&self, n: u32) {
        self.batch(&format!(
            "UPDATE profiles SET \"socialLinks\" = \"socialLinks\"
                    || jsonb_build_object('census', 'https://census.example.com/' || id)
              WHERE id IN (SELECT id FROM profiles WHERE jsonb_typeof(\"socialLinks\") = 'object'
                            ORDER BY md5(id) LIMIT {n})"
        ))
        .await;
    }

    /// A user `user` and its profile `profile` whose legacy value is
    /// `legacy` (JSON text).
    pub async fn insert_profile(&self, user: &str, profile: &str, legacy: &str) {
        self.exec("INSERT INTO users (id) VALUES ($1)", &[&user])
            .await;
        self.exec("INSERT INTO profiles (id, \"userId\", \"socialLinks\") VALUES ($1, $2, $3::text::jsonb)", &[&profile, &user, &legacy]).await;
    }

    /// The first `limit` profiles, by id, whose legacy value is an object
    /// (keys can be added to it) and that have migrated links: (id, userId).
    pub async fn migrated_object_profiles(&self, limit: i64) -> Vec<(String, String)> {
        self.object_profiles(limit, true).await
    }

    /// The first `limit` profiles, by id, whose legacy value is an object
    /// (and, if `migrated`, that have migrated links): (id, userId). Fails
    /// the test if there are fewer.
    pub async fn object_profiles(&self, limit: i64, migrated: bool) -> Vec<(String, String)> {
        let rows = self
            .client
            .query(
                "SELECT p.id, p.\"userId\" FROM profiles p
                  WHERE jsonb_typeof(p.\"socialLinks\") = 'object'
                    AND (NOT $2 OR EXISTS (SELECT 1 FROM profile_links pl WHERE pl.\"profileId\" = p.id))
                  ORDER BY p.id LIMIT $1",
                &[&limit, &migrated],
            )
            .await
            .expect("object-shaped profiles");
        assert_eq!(
            i64::try_from(rows.len()).ok(),
            Some(limit),
            "too few object-shaped profiles (migrated: {migrated})"
        );
        rows.iter().map(|r| (r.get(0), r.get(1))).collect()
    }

    /// A link lost behind relink's back: the first profile (by id, other
    /// than `except`) with exactly one migrated link loses that row, and the
    /// ledger forgets its key, while the legacy value still holds it.
    /// Returns the profile's id.
    pub async fn lose_one_link(&self, except: &str) -> String {
        let row = self
            .client
            .query_one(
                "SELECT profile_id, link_keys[1], user_id FROM relink.ledger
                  WHERE cardinality(link_keys) = 1 AND profile_id <> $1 ORDER BY profile_id LIMIT 1",
                &[&except],
            )
            .await
            .expect("a profile with one migrated link");
        let profile: String = row.get(0);
        let link = relink::plan::link_id(&profile, row.get(2), row.get(1));
        self.exec("DELETE FROM profile_links WHERE id = $1", &[&link])
            .await;
        self.exec(
            &format!(
                "UPDATE relink.ledger_rows SET link_keys = '' WHERE {} = $1",
                stored::PROFILE_ID
            ),
            &[&profile],
        )
        .await;
        profile
    }

    /// Ends every relink session of this database (the lock holder's
    /// too) as a failover or an operator's pg_terminate_backend would;
    /// returns how many there were.
    pub async fn terminate_relink_sessions(&self) -> i64 {
        self.count(&format!(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
              WHERE datname = '{}' AND application_name LIKE 'relink run%') t",
            self.name
        ))
        .await
    }

    /// The backend of this database's one relink writer inside its chunk's
    /// transaction (run with `--writers 1`), polled: a loaded server may
    /// report the state a moment after relink got its last result. Fails
    /// the test after 10 s.
    pub async fn writer_in_chunk(&self) -> i32 {
        let started = std::time::Instant::now();
        loop {
            let rows = self
                .client
                .query(
                    "SELECT pid FROM pg_stat_activity
                      WHERE datname = current_database() AND application_name LIKE 'relink run%'
                        AND state = 'idle in transaction'",
                    &[],
                )
                .await
                .expect("pg_stat_activity");
            if let [row] = &rows[..] {
                return row.get(0);
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "not one relink backend inside a chunk: {}",
                rows.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The application changes a migrated legacy value: the first profile
    /// (by id) in the ledger whose value is a JSON `shape` (`array`,
    /// `object`) gets `addition` (JSON) appended. Returns its id.
    pub async fn change_migrated_legacy(&self, shape: &str, addition: &str) -> String {
        let id = self
            .text(&format!(
                "SELECT id FROM profiles WHERE jsonb_typeof(\"socialLinks\") = '{shape}'
                    AND id IN (SELECT profile_id FROM relink.ledger) ORDER BY id LIMIT 1"
            ))
            .await;
        self.exec(&format!(
                    "UPDATE profiles SET \"socialLinks\" = \"socialLinks\" || '{addition}'::jsonb WHERE id = $1"
                ), &[&id]).await;
        id
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

/// What only one kind of server has.
impl TestDb {
    /// The TLS server this database is on.
    #[track_caller]
    pub fn tls(&self) -> &'static TlsServer {
        assert_eq!(
            self.server,
            Server::Tls,
            "{}: not on the TLS server",
            self.name
        );
        tls_server()
    }

    /// See [`TlsServer::pw_url`].
    pub fn pw_url(&self) -> String {
        self.tls().pw_url(&self.name)
    }

    /// See [`TlsServer::md5_url`].
    pub fn md5_url(&self) -> String {
        self.tls().md5_url(&self.name)
    }

    /// See [`TlsServer::cert_url`].
    pub fn cert_url(&self) -> String {
        self.tls().cert_url(&self.name)
    }

    /// The replica set this database is on.
    #[track_caller]
    pub fn replicas(&self) -> &'static ReplicaSet {
        assert!(
            self.replica_use.is_some(),
            "{}: not on the replica set",
            self.name
        );
        replica_set()
    }

    /// `postgres` on this database on the replica (read-only).
    pub fn replica_url(&self) -> String {
        with_dbname(&self.replicas().replica_url, &self.name)
    }

    /// `relink_nomon` (no pg_monitor) on this database on the primary.
    pub fn nomon_url(&self) -> String {
        with_user(&self.url, &self.replicas().nomon_user)
    }

    /// Waits until the replica has replayed everything written on the
    /// primary so far (fails the test after `timeout`).
    pub async fn wait_replayed(&self, timeout: Duration) {
        let target: String = self
            .client
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .await
            .expect("primary's WAL position")
            .get(0);
        let replica = connect(&self.replicas().replica_url).await;
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
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Pauses WAL replay on the replica until [`ReplayPause::resume`] (or
    /// the guard's drop, even when the test fails). Only on
    /// [`Server::ReplicaExclusive`]: paused replay makes every relink run on
    /// the primary wait.
    pub async fn pause_replay(&self) -> ReplayPause {
        let lock = match &self.replica_use {
            Some(lock) if matches!(**lock, ReplicaUse::Exclusive(_)) => Arc::clone(lock),
            _ => panic!("pause_replay needs Server::ReplicaExclusive"),
        };
        let replica_url = self.replicas().replica_url.clone();
        connect(&replica_url)
            .await
            .batch_execute("SELECT pg_wal_replay_pause()")
            .await
            .expect("pause replay on the replica");
        ReplayPause {
            replica_url,
            resumed: false,
            _lock: lock,
        }
    }

    /// The pooler set this database is behind.
    #[track_caller]
    fn poolers(&self) -> &'static PoolerSet {
        assert_eq!(
            self.server,
            Server::Pooler,
            "{}: not behind the poolers",
            self.name
        );
        pooler_set()
    }

    /// `postgres` on this database through the session-mode PgBouncer.
    pub fn session_url(&self) -> String {
        with_dbname(&self.poolers().session_url, &self.name)
    }

    /// `postgres` on this database through the transaction-mode PgBouncer.
    pub fn transaction_url(&self) -> String {
        with_dbname(&self.poolers().transaction_url, &self.name)
    }
}

impl TestDb {
    /// A LOGIN role `{name}_{suffix}` of its own (roles are cluster-wide,
    /// so it is named after the database), given `grants`: SQL in which
    /// `{role}` and `{db}` stand for the role's and the database's names.
    /// Its guard revokes what it was granted (`DROP OWNED BY`) and drops it.
    pub async fn role(&self, suffix: &str, grants: &str) -> Role {
        let name = format!("{}_{suffix}", self.name);
        assert!(name.len() <= 63, "role name too long: {name}");
        connect(&self.server.admin_url())
            .await
            .batch_execute(&format!("CREATE ROLE {name} LOGIN"))
            .await
            .expect("create role");
        self.batch(&grants.replace("{role}", &name).replace("{db}", &self.name))
            .await;
        Role {
            url: with_user(&self.url, &name),
            name,
            db_url: self.url.clone(),
            admin_url: self.server.admin_url(),
        }
    }
}

/// A role of a test's own (see [`TestDb::role`]).
pub struct Role {
    pub name: String,
    /// The test database's URL, logging in as this role.
    pub url: String,
    db_url: String,
    admin_url: String,
}

impl Drop for Role {
    fn drop(&mut self) {
        let name = &self.name;
        execute_from_drop(&[
            (self.db_url.clone(), format!("DROP OWNED BY {name}")),
            (
                self.admin_url.clone(),
                format!("DROP ROLE IF EXISTS {name}"),
            ),
        ]);
    }
}

/// The one drop path: the database goes unless the test failed.
impl Drop for TestDb {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "test failed: database {}{} kept for inspection",
                self.name,
                self.server.place()
            );
            return;
        }
        execute_from_drop(&[(
            self.server.admin_url(),
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        )]);
    }
}

/// Replay paused on the replica (see [`TestDb::pause_replay`]); it keeps
/// the replica set exclusive until resumed.
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

/// Checksum of a database's `profile_links` without the timestamps: the
/// end state of a migration (see [`LINKS_WITHOUT_TIMES`]).
pub async fn links_checksum_of(client: &Client) -> String {
    checksum(client, LINKS_WITHOUT_TIMES).await
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
