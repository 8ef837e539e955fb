//! Connections: session settings that keep relink gentle (timeouts, UTC,
//! read-only where nothing is written), single connections and the pool the
//! chunk writers share, and who this process is (named in
//! `pg_stat_activity`, on run records and by the lock).

use std::time::Duration;

use anyhow::{Context as _, Result};
use tokio_postgres::Client;

use super::connect::{Connector, Pool, PoolManager, PooledClient, SessionOptions};
use super::Database;
use crate::config::{Common, Timeouts};

/// Who runs this process, recorded on runs and in `application_name`.
#[derive(Debug, Clone)]
pub struct Owner {
    pub host: String,
    pub pid: i32,
}

impl Owner {
    /// The operating-system user: `USER`, `LOGNAME`, else the name of this
    /// process's uid in the user database (cron and containers often set
    /// neither), through the `whoami` crate.
    pub fn os_user() -> Option<String> {
        ["USER", "LOGNAME"]
            .iter()
            .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
            .or_else(|| whoami::username().ok().filter(|u| !u.is_empty()))
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
    /// `idle_in_transaction_session_timeout` (SPEC §12).
    pub idle_timeout: Duration,
    /// Dry runs, verify and status: the server refuses any write.
    pub read_only: bool,
}

impl Session {
    /// A session for `command` (e.g. `run`, `dry-run`), named after it and
    /// this process in `pg_stat_activity` so operators can find it.
    pub fn new(
        command: &str,
        common: &Common,
        timeouts: Option<Timeouts>,
        read_only: bool,
    ) -> Self {
        let owner = Owner::current();
        Self {
            application_name: format!("relink {command} host={} pid={}", owner.host, owner.pid),
            timeouts,
            idle_timeout: common.idle_timeout,
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

    fn options(&self) -> SessionOptions {
        let ms = |d: Duration| format!("{}ms", d.as_millis());
        // TimeZone=UTC: "createdAt"/"updatedAt" are TIMESTAMP(3) without time
        // zone, which applications (e.g. Prisma) fill in UTC.
        // jit=off: relink's statements are many and small; JIT compiling
        // them costs more than it saves.
        // idle_in_transaction_session_timeout: a relink that is stopped
        // (Ctrl-Z, a paused VM) or cut off inside a chunk never holds the
        // application's rows longer than this; the server ends the session,
        // the chunk rolls back, and relink retries it when it continues.
        let mut settings = vec![
            ("TimeZone".to_owned(), "UTC".to_owned()),
            ("jit".to_owned(), "off".to_owned()),
            (
                "idle_in_transaction_session_timeout".to_owned(),
                ms(self.idle_timeout),
            ),
        ];
        if let Some(t) = self.timeouts {
            settings.push(("lock_timeout".to_owned(), ms(t.lock)));
            settings.push(("statement_timeout".to_owned(), ms(t.statement)));
        }
        SessionOptions {
            application_name: Some(self.application_name.clone()),
            settings,
            read_only: self.read_only,
        }
    }

    /// The connector opening this session's connections to `db`.
    ///
    /// # Errors
    /// When a certificate or key file cannot be used.
    pub fn connector(&self, db: &Database) -> Result<Connector> {
        Connector::new(db.info.clone(), self.options())
            .map_err(anyhow::Error::new)
            .context("cannot set up TLS")
    }
}

/// Opens one connection (e.g. the one that holds the advisory lock), as
/// libpq would: hosts in order, TLS per `sslmode`, the password file when
/// asked, `target_session_attrs`; each host bounded by the connect timeout.
///
/// # Errors
/// When no host can be used; the message says why and what to do.
pub async fn connect(db: &Database, session: &Session) -> Result<Client> {
    let (client, _connection) = session
        .connector(db)?
        .connect()
        .await
        .map_err(anyhow::Error::new)?;
    Ok(client)
}

/// A pool of `size` connections for chunk writers, opened by the same
/// connector; broken connections are replaced on the next checkout, which
/// is how a lost connection is retried.
///
/// # Errors
/// When the pool cannot be built (a configuration error).
pub fn pool(db: &Database, session: &Session, size: usize) -> Result<Pool> {
    let manager = PoolManager::new(session.connector(db)?);
    // The connector bounds each host by the connect timeout; the pool's
    // own limit covers all hosts of one attempt.
    let per_host = db.info.connect_timeout.unwrap_or(Duration::from_secs(10));
    let hosts = u32::try_from(db.info.targets.len()).unwrap_or(u32::MAX);
    Pool::builder(manager)
        .max_size(size)
        .runtime(deadpool::Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(60)))
        .create_timeout(Some(per_host.saturating_mul(hosts.saturating_mul(2))))
        .build()
        .context("cannot build the connection pool")
}

/// A pooled connection (a fresh one if the last was lost).
///
/// # Errors
/// When none can be had (retryable: the server may be restarting).
pub async fn checkout(pool: &Pool) -> Result<PooledClient> {
    pool.get().await.context("cannot get a database connection")
}
