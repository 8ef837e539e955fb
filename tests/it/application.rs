//! A simulated application writing beside relink (SPEC §6 "Online"): a few
//! connections adding links at `max(position) + 1` (half of them URLs relink
//! is about to create), deleting accounts and editing legacy values, as fast
//! as a busy site. Its SQL is read from docs/application-contract.md, so
//! the page shows exactly what the tests run. Two kinds: one that keeps the
//! locking contract, one that does not lock and deletes accounts user-first.
//! Every transaction is timed; none may fail.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

use crate::harness::{assert_success, connect, stdout, TestDb};

/// The page the SQL comes from.
pub const CONTRACT_PAGE: &str = include_str!("../../docs/application-contract.md");

/// The statements of the SQL block after `<!-- simulator: NAME -->` on the
/// page, without their semicolons.
pub fn statements(name: &str) -> Vec<String> {
    let marker = format!("<!-- simulator: {name} -->");
    let after = CONTRACT_PAGE
        .split_once(&marker)
        .unwrap_or_else(|| panic!("docs/application-contract.md has no {marker}"))
        .1;
    let block = after
        .trim_start()
        .strip_prefix("```sql\n")
        .and_then(|b| b.split_once("```"))
        .unwrap_or_else(|| panic!("no ```sql block after {marker}"))
        .0;
    block
        .split(";\n")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches(';').to_owned())
        .collect()
}

/// The one-line lock of the contract (the page's first SQL block).
pub fn lock_statement() -> String {
    let block = CONTRACT_PAGE
        .split_once("```sql\n")
        .and_then(|(_, rest)| rest.split_once("\n```"))
        .expect("a first SQL block")
        .0;
    block.trim().to_owned()
}

/// Which application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Locks the user's profile row first in every transaction that changes
    /// the user's links.
    KeepsContract,
    /// The same transactions without the lock; deletes accounts with
    /// `DELETE FROM users` (its schema cascades to the profile).
    DoesNotLock,
}

/// The transactions of one kind of application, from the page.
struct Sql {
    add_link: Vec<String>,
    delete_account: Vec<String>,
    edit_legacy: Vec<String>,
}

impl Sql {
    fn of(kind: Kind) -> Self {
        let lock = lock_statement();
        let add_link = statements("add-link");
        assert_eq!(add_link[1], lock, "add-link locks first");
        let delete_account = statements("delete-account");
        assert_eq!(delete_account[1], lock, "delete-account locks first");
        match kind {
            Kind::KeepsContract => Self {
                add_link,
                delete_account,
                edit_legacy: statements("edit-legacy"),
            },
            Kind::DoesNotLock => Self {
                add_link: add_link.into_iter().filter(|s| *s != lock).collect(),
                delete_account: statements("delete-account-user-first"),
                edit_legacy: statements("edit-legacy"),
            },
        }
    }
}

/// A user of the application, with the URLs relink will create for them
/// (from a dry run's report).
#[derive(Debug, Clone)]
pub struct Account {
    pub user_id: String,
    pub planned_urls: Vec<String>,
    /// Its legacy value is a JSON object (links can be added to it).
    pub object: bool,
}

/// The accounts of a database with profiles and their planned URLs: a dry
/// run's `--report`, before the live run.
pub async fn accounts(db: &TestDb) -> Vec<Account> {
    let report = std::env::temp_dir().join(format!("{}-report.jsonl", db.name));
    let report_arg = report.to_string_lossy().into_owned();
    assert_success(&db.run(&["run", "--dry-run", "-q", "--report", &report_arg]));
    let text = std::fs::read_to_string(&report).expect("dry-run report");
    let _ = std::fs::remove_file(&report);
    let mut planned: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("report line");
        let urls = v["links"]
            .as_array()
            .expect("links")
            .iter()
            .map(|l| l["url"].as_str().expect("url").to_owned())
            .collect();
        planned.insert(v["user_id"].as_str().expect("user_id").to_owned(), urls);
    }
    db.client
        .query(
            "SELECT \"userId\", coalesce(jsonb_typeof(\"socialLinks\") = 'object', false)
               FROM profiles ORDER BY \"userId\"",
            &[],
        )
        .await
        .expect("accounts")
        .iter()
        .map(|r| {
            let user_id: String = r.get(0);
            Account {
                planned_urls: planned.get(&user_id).cloned().unwrap_or_default(),
                object: r.get(1),
                user_id,
            }
        })
        .collect()
}

/// A row the application added, as it added it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedRow {
    pub user_id: String,
    pub label: String,
    pub url: String,
    pub position: i32,
}

/// What the application did and how long it waited.
#[derive(Debug, Default)]
pub struct Activity {
    /// Committed transactions by kind.
    pub transactions: BTreeMap<&'static str, u64>,
    /// Transactions that failed (the error, by kind): must stay empty.
    pub failures: Vec<String>,
    /// The longest transaction and its kind.
    pub longest: (Duration, &'static str),
    /// The longest single statement (a lock wait is inside one), and its
    /// transaction's kind.
    pub longest_statement: (Duration, &'static str),
    /// The longest lock wait the server showed for the application's
    /// sessions (`pg_stat_activity`, sampled every 10 ms).
    pub longest_lock_wait: Duration,
    /// Rows added, by id.
    pub added: BTreeMap<String, AddedRow>,
    /// Users whose account was deleted.
    pub deleted: BTreeSet<String>,
    /// URLs added to a user's legacy value.
    pub edits: Vec<(String, String)>,
    /// Adds that found the URL already there (relink's row, mostly).
    pub skipped_adds: u64,
}

impl Activity {
    fn merge(&mut self, other: Self) {
        for (k, n) in other.transactions {
            *self.transactions.entry(k).or_default() += n;
        }
        self.failures.extend(other.failures);
        if other.longest.0 > self.longest.0 {
            self.longest = other.longest;
        }
        if other.longest_statement.0 > self.longest_statement.0 {
            self.longest_statement = other.longest_statement;
        }
        self.longest_lock_wait = self.longest_lock_wait.max(other.longest_lock_wait);
        self.added.extend(other.added);
        self.deleted.extend(other.deleted);
        self.edits.extend(other.edits);
        self.skipped_adds += other.skipped_adds;
    }

    /// Takes in what the application did earlier (its rows, deletions and
    /// edits), but not its timings.
    pub fn merge_earlier(&mut self, earlier: Self) {
        self.added.extend(earlier.added);
        self.deleted.extend(earlier.deleted);
        self.edits.extend(earlier.edits);
        self.skipped_adds += earlier.skipped_adds;
        self.failures.extend(earlier.failures);
    }

    pub fn total(&self) -> u64 {
        self.transactions.values().sum()
    }

    /// One line for the test's output.
    pub fn describe(&self) -> String {
        format!(
            "{} application transactions {:?}, {} adds skipped as present, {} failed; \
             longest transaction {:?} ({}), longest statement {:?} ({}), longest lock wait seen by the server {:?}",
            self.total(),
            self.transactions,
            self.skipped_adds,
            self.failures.len(),
            self.longest.0,
            self.longest.1,
            self.longest_statement.0,
            self.longest_statement.1,
            self.longest_lock_wait,
        )
    }
}

/// The application, running until [`Running::stop`].
pub struct Running {
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<Activity>>,
    monitor: tokio::task::JoinHandle<Duration>,
}

impl Running {
    /// Stops the application and gathers what it did.
    pub async fn stop(self) -> Activity {
        self.stop.store(true, Ordering::SeqCst);
        let mut all = Activity::default();
        for worker in self.workers {
            all.merge(worker.await.expect("an application worker"));
        }
        all.longest_lock_wait = self.monitor.await.expect("the lock-wait monitor");
        all
    }
}

/// `application_name` of the application's sessions.
const APP_NAME: &str = "relink-test application";

/// Samples the application's sessions waiting for a lock, every 10 ms,
/// until `stop`: the longest wait seen (from the server's clock).
async fn monitor(url: String, stop: Arc<AtomicBool>) -> Duration {
    let client = connect(&url).await;
    let mut longest = Duration::ZERO;
    while !stop.load(Ordering::SeqCst) {
        let ms: f64 = client
            .query_one(
                "SELECT coalesce(max(extract(epoch FROM clock_timestamp() - query_start)), 0)::float8 * 1000
                   FROM pg_stat_activity
                  WHERE datname = current_database() AND application_name = $1
                    AND wait_event_type = 'Lock'",
                &[&APP_NAME],
            )
            .await
            .expect("sample pg_stat_activity")
            .get(0);
        longest = longest.max(Duration::from_secs_f64(ms.max(0.0) / 1000.0));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    longest
}

/// Starts `workers` connections of application `kind` on `url`, each
/// serving its own share of `accounts` (so the application never races
/// itself: what goes wrong is between it and relink).
pub async fn start(url: &str, kind: Kind, accounts: &[Account], workers: usize) -> Running {
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for w in 0..workers {
        let mine: Vec<Account> = accounts.iter().skip(w).step_by(workers).cloned().collect();
        let client = connect(url).await;
        client
            .batch_execute(&format!(
                "SET statement_timeout = '60s'; SET application_name = '{APP_NAME}'"
            ))
            .await
            .expect("application session");
        let stop = stop.clone();
        handles.push(tokio::spawn(async move {
            Worker {
                client,
                longest_statement: Duration::ZERO,
                sql: Sql::of(kind),
                accounts: mine,
                rng: 0x9e37_79b9_7f4a_7c15 ^ ((w as u64 + 1) << 32),
                n: 0,
                activity: Activity::default(),
            }
            .serve(&stop)
            .await
        }));
    }
    Running {
        monitor: tokio::spawn(monitor(url.to_owned(), stop.clone())),
        stop,
        workers: handles,
    }
}

/// Numbers the application's new rows and edits, across workers and runs
/// of the application in one test process.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

struct Worker {
    client: Client,
    /// The longest statement of the transaction in progress.
    longest_statement: Duration,
    sql: Sql,
    accounts: Vec<Account>,
    rng: u64,
    n: u64,
    activity: Activity,
}

impl Worker {
    /// xorshift64*: deterministic, no dependency.
    fn below(&mut self, n: usize) -> usize {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let x = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33;
        usize::try_from(x).unwrap_or(0) % n.max(1)
    }

    async fn serve(mut self, stop: &AtomicBool) -> Activity {
        while !stop.load(Ordering::SeqCst) && !self.accounts.is_empty() {
            self.n += 1;
            let i = self.below(self.accounts.len());
            let roll = self.below(100);
            let began = Instant::now();
            let (kind, result) = if roll < 70 {
                ("add link", self.add_link(i).await)
            } else if roll < 75 {
                ("delete account", self.delete_account(i).await)
            } else if self.accounts[i].object {
                ("edit legacy", self.edit_legacy(i).await)
            } else {
                continue;
            };
            let took = began.elapsed();
            if self.longest_statement > self.activity.longest_statement.0 {
                self.activity.longest_statement = (self.longest_statement, kind);
            }
            self.longest_statement = Duration::ZERO;
            match result {
                Ok(()) => {
                    *self.activity.transactions.entry(kind).or_default() += 1;
                    if took > self.activity.longest.0 {
                        self.activity.longest = (took, kind);
                    }
                }
                Err(e) => {
                    let _ = self.client.batch_execute("ROLLBACK").await;
                    let why = e.as_db_error().map_or_else(
                        || e.to_string(),
                        |db| format!("{} ({})", db.message(), db.code().code()),
                    );
                    self.activity.failures.push(format!("{kind}: {why}"));
                }
            }
            // A busy site, not a benchmark: the machine is shared.
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        self.activity
    }

    /// Runs a transaction's statements with the parameters each uses (the
    /// highest `$n` it names); returns the rows the statement with a
    /// RETURNING clause returned.
    async fn transaction(
        &mut self,
        statements: &[String],
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
        let mut returned = Vec::new();
        for sql in statements {
            let used = (1..=params.len())
                .rev()
                .find(|n| sql.contains(&format!("${n}")))
                .unwrap_or(0);
            let began = Instant::now();
            let rows = self.client.query(sql.as_str(), &params[..used]).await?;
            let took = began.elapsed();
            if took > self.longest_statement {
                self.longest_statement = took;
            }
            if sql.contains("RETURNING") {
                returned = rows;
            }
        }
        Ok(returned)
    }

    async fn add_link(&mut self, i: usize) -> Result<(), tokio_postgres::Error> {
        let account = self.accounts[i].clone();
        let id = format!("app-{}", NEXT_ID.fetch_add(1, Ordering::SeqCst));
        let label = format!("App link {}", self.n);
        // Half of them a link relink will create for the user.
        let url = if !account.planned_urls.is_empty() && self.below(2) == 0 {
            account.planned_urls[self.below(account.planned_urls.len())].clone()
        } else {
            format!("https://{id}.example.org/")
        };
        let sql = std::mem::take(&mut self.sql.add_link);
        let rows = self
            .transaction(&sql, &[&account.user_id, &id, &label, &url])
            .await;
        self.sql.add_link = sql;
        match rows?.first() {
            Some(row) => {
                self.activity.added.insert(
                    id,
                    AddedRow {
                        user_id: account.user_id,
                        label,
                        url,
                        position: row.get(0),
                    },
                );
            }
            None => self.activity.skipped_adds += 1,
        }
        Ok(())
    }

    async fn delete_account(&mut self, i: usize) -> Result<(), tokio_postgres::Error> {
        let user_id = self.accounts[i].user_id.clone();
        let sql = std::mem::take(&mut self.sql.delete_account);
        let done = self.transaction(&sql, &[&user_id]).await;
        self.sql.delete_account = sql;
        done?;
        self.accounts.swap_remove(i);
        self.activity.deleted.insert(user_id);
        Ok(())
    }

    async fn edit_legacy(&mut self, i: usize) -> Result<(), tokio_postgres::Error> {
        let user_id = self.accounts[i].user_id.clone();
        let n = NEXT_ID.fetch_add(1, Ordering::SeqCst);
        let url = format!("https://edit-{n}.example.net/");
        let value = serde_json::json!({ format!("edit{n}"): url });
        let sql = std::mem::take(&mut self.sql.edit_legacy);
        let done = self.transaction(&sql, &[&user_id, &value]).await;
        self.sql.edit_legacy = sql;
        done?;
        self.activity.edits.push((user_id, url));
        Ok(())
    }
}

/// Checks after the application stopped and relink's runs: its rows are
/// as it wrote them, no row of a deleted account is left, every legacy
/// edit became a row.
pub async fn check_outcome(db: &TestDb, activity: &Activity) {
    let rows = db
        .client
        .query(
            "SELECT id, \"userId\", label, url, position FROM profile_links WHERE id LIKE 'app-%'",
            &[],
        )
        .await
        .expect("application rows");
    let found: BTreeMap<String, AddedRow> = rows
        .iter()
        .map(|r| {
            (
                r.get(0),
                AddedRow {
                    user_id: r.get(1),
                    label: r.get(2),
                    url: r.get(3),
                    position: r.get(4),
                },
            )
        })
        .collect();
    let expected: BTreeMap<String, AddedRow> = activity
        .added
        .iter()
        .filter(|(_, row)| !activity.deleted.contains(&row.user_id))
        .map(|(id, row)| (id.clone(), row.clone()))
        .collect();
    assert_eq!(
        found, expected,
        "the application's rows are not as it wrote them"
    );
    let deleted: Vec<&String> = activity.deleted.iter().collect();
    let left = db
        .client
        .query_one(
            "SELECT count(*) FROM profile_links WHERE \"userId\" = ANY($1)",
            &[&deleted],
        )
        .await
        .expect("rows of deleted accounts")
        .get::<_, i64>(0);
    assert_eq!(left, 0, "rows of deleted accounts are left");
    for (user, url) in activity
        .edits
        .iter()
        .filter(|(user, _)| !activity.deleted.contains(user))
    {
        let n = db
            .client
            .query_one(
                "SELECT count(*) FROM profile_links WHERE \"userId\" = $1 AND url = $2",
                &[user, url],
            )
            .await
            .expect("edited link")
            .get::<_, i64>(0);
        assert_eq!(
            n, 1,
            "the legacy edit {url} of user {user} was not migrated"
        );
    }
}

/// The summary of a `--format json` run, for the test's output.
pub fn summary_line(out: &std::process::Output) -> String {
    stdout(out).lines().last().unwrap_or_default().to_owned()
}
