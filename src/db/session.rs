//! Connections: session settings that keep relink gentle (timeouts, UTC,
//! read-only where nothing is written), single connections and the pool the
//! chunk writers share, and who this process is (named in
//! `pg_stat_activity`, on run records and by the lock).

use std::time::Duration;

use anyhow::{Context as _, Result};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::{Client, NoTls};

use crate::config::{Database, Timeouts};

/// Who runs this process, recorded on runs and in `application_name`.
#[derive(Debug, Clone)]
pub struct Owner {
    pub host: String,
    pub pid: i32,
}

impl Owner {
    /// The operating-system user: `USER`, `LOGNAME`, else the name of this
    /// process's uid in `/etc/passwd` (cron and containers often set neither).
    pub fn os_user() -> Option<String> {
        if let Some(user) = ["USER", "LOGNAME"]
            .iter()
            .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
        {
            return Some(user);
        }
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))?
            .split_whitespace()
            .next()?
            .to_owned();
        let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
        passwd.lines().find_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            (fields.nth(1)? == uid).then(|| name.to_owned())
        })
    }

    pub fn current() -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| std::fs::read_to_string("/etc/hostname"))
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| !h.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "unknown-host".to_owned());
        let pid = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
        Self { host, pid }
    }
}

/// Session settings for every relink connection.
#[derive(Debug, Clone)]
pub struct Session {
    /// Shown in `pg_stat_activity`, and how a blocked operator finds us.
    pub application_name: String,
    pub timeouts: Option<Timeouts>,
    /// Dry runs, verify and status: the server refuses any write.
    pub read_only: bool,
}

impl Session {
    /// A session for `command` (e.g. `run`, `dry-run`), named after it and
    /// this process in `pg_stat_activity` so operators can find it.
    pub fn new(command: &str, timeouts: Option<Timeouts>, read_only: bool) -> Self {
        let owner = Owner::current();
        Self {
            application_name: format!("relink {command} host={} pid={}", owner.host, owner.pid),
            timeouts,
            read_only,
        }
    }

    /// The same settings for a helper session of the command, named after
    /// it too (e.g. `relink run watch …`).
    pub fn named(&self, helper: &str) -> Self {
        let mut session = self.clone();
        session.application_name = match self.application_name.split_once(" host=") {
            Some((command, rest)) => format!("{command} {helper} host={rest}"),
            None => format!("{} {helper}", self.application_name),
        };
        session
    }

    /// The same settings on a read-only session.
    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }

    fn apply(&self, db: &Database) -> tokio_postgres::Config {
        let mut config = db.config.clone();
        config.application_name(&self.application_name);
        // TimeZone=UTC: "createdAt"/"updatedAt" are TIMESTAMP(3) without time
        // zone, which applications (e.g. Prisma) fill in UTC.
        // jit=off: relink's statements are many and small; JIT compiling
        // them costs more than it saves.
        let mut options = String::from("-c TimeZone=UTC -c jit=off");
        if let Some(t) = self.timeouts {
            options.push_str(&format!(
                " -c lock_timeout={}ms -c statement_timeout={}ms",
                t.lock.as_millis(),
                t.statement.as_millis()
            ));
        }
        if self.read_only {
            options.push_str(" -c default_transaction_read_only=on");
        }
        config.options(&options);
        config
    }
}

/// Opens one connection (e.g. the one that holds the advisory lock).
///
/// # Errors
/// When the server cannot be reached or refuses the login.
pub async fn connect(db: &Database, session: &Session) -> Result<Client> {
    // connect_timeout covers the TCP connect only; bound the whole handshake
    // too, so a server that accepts and never answers cannot hang relink.
    let limit = db
        .config
        .get_connect_timeout()
        .copied()
        .unwrap_or(Duration::from_secs(10));
    let (client, connection) = tokio::time::timeout(limit * 2, session.apply(db).connect(NoTls))
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {:?}", limit * 2))
        .and_then(|r| r.map_err(anyhow::Error::new))
        .with_context(|| format!("cannot connect to {db}"))?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!("connection closed: {err}");
        }
    });
    Ok(client)
}

/// A pool of `size` connections for chunk writers; broken connections are
/// replaced on the next checkout, which is how a lost connection is retried.
///
/// # Errors
/// When the pool cannot be built (a configuration error).
pub fn pool(db: &Database, session: &Session, size: usize) -> Result<Pool> {
    let manager = Manager::from_config(
        session.apply(db),
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(60)))
        .create_timeout(db.config.get_connect_timeout().copied())
        .build()
        .context("cannot build the connection pool")
}

/// A pooled connection (a fresh one if the last was lost).
///
/// # Errors
/// When none can be had (retryable: the server may be restarting).
pub async fn checkout(pool: &Pool) -> Result<deadpool_postgres::Object> {
    pool.get().await.context("cannot get a database connection")
}
