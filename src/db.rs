//! Connections: session settings that keep relink gentle (timeouts, UTC), a
//! pool for the chunk writers, and the narrow rule for which errors are worth
//! retrying.

pub mod conninfo;
pub mod tls;

use std::time::Duration;

use anyhow::{Context as _, Result};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

use crate::config::{Database, Timeouts};

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
        let owner = crate::state::Owner::current();
        Self {
            application_name: format!("relink {command} host={} pid={}", owner.host, owner.pid),
            timeouts,
            read_only,
        }
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

/// Retry bookkeeping for one unit of work (a page, a chunk): call
/// [`Retry::after`] with each error; it sleeps the backoff and says whether
/// to try again on a fresh connection, stop, or fail.
#[derive(Debug)]
pub struct Retry {
    attempt: u32,
    attempts: u32,
}

/// The decision [`Retry::after`] takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Retry,
    Stop,
    Fail,
}

impl Retry {
    pub fn new(attempts: u32) -> Self {
        Self {
            attempt: 0,
            attempts,
        }
    }

    /// What to do after `err`: retry it (after sleeping the backoff), stop
    /// (a retryable error while the command is stopping: the work rolled
    /// back and is simply not done, an interruption rather than a failure),
    /// or fail (not retryable, or no attempts left).
    pub async fn after(&mut self, err: &anyhow::Error, what: &str, stopping: bool) -> Next {
        if !is_retryable(err) {
            return Next::Fail;
        }
        if stopping {
            tracing::info!("{what}: rolled back while stopping: {err:#}");
            return Next::Stop;
        }
        if self.attempt + 1 >= self.attempts {
            return Next::Fail;
        }
        let wait = backoff(self.attempt);
        self.attempt += 1;
        tracing::warn!(
            "{what}: {err:#}; retry {}/{} in {wait:?}",
            self.attempt,
            self.attempts - 1
        );
        tokio::time::sleep(wait).await;
        Next::Retry
    }

    /// The final error, saying how many attempts were made.
    pub fn give_up(&self, err: anyhow::Error, what: &str) -> anyhow::Error {
        err.context(format!(
            "{what} failed after {} attempt(s)",
            self.attempt + 1
        ))
    }
}

/// A pooled connection (a fresh one if the last was lost).
///
/// # Errors
/// When none can be had (retryable: the server may be restarting).
pub async fn checkout(pool: &Pool) -> Result<deadpool_postgres::Object> {
    pool.get().await.context("cannot get a database connection")
}

/// Whether a failed chunk is worth another try: lost connections, lock
/// timeouts, statement timeouts, serialization failures and deadlocks, and
/// a server that is restarting. Everything else (permissions, constraint
/// violations, bad SQL) fails at once.
pub fn is_retryable(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        if let Some(pg) = cause.downcast_ref::<tokio_postgres::Error>() {
            return pg_retryable(pg);
        }
        if let Some(pool) = cause.downcast_ref::<deadpool_postgres::PoolError>() {
            return match pool {
                deadpool_postgres::PoolError::Backend(pg) => pg_retryable(pg),
                deadpool_postgres::PoolError::Timeout(_) => true,
                _ => false,
            };
        }
        cause.downcast_ref::<std::io::Error>().is_some()
    })
}

fn pg_retryable(err: &tokio_postgres::Error) -> bool {
    if err.is_closed() {
        return true;
    }
    match err.code() {
        Some(code) => {
            [
                SqlState::T_R_SERIALIZATION_FAILURE,
                SqlState::T_R_DEADLOCK_DETECTED,
                SqlState::LOCK_NOT_AVAILABLE,
                SqlState::QUERY_CANCELED,
                SqlState::ADMIN_SHUTDOWN,
                SqlState::CRASH_SHUTDOWN,
                SqlState::CANNOT_CONNECT_NOW,
                SqlState::TOO_MANY_CONNECTIONS,
            ]
            .contains(code)
                || code.code().starts_with("08")
        }
        // No SQLSTATE: an I/O or protocol failure talking to the server.
        None => std::error::Error::source(err).is_some_and(|s| s.is::<std::io::Error>()),
    }
}

/// Whether an error is a permission problem (for a clearer message).
pub fn is_permission_denied(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<tokio_postgres::Error>()
            .and_then(tokio_postgres::Error::code)
            .is_some_and(|c| {
                *c == SqlState::INSUFFICIENT_PRIVILEGE || *c == SqlState::READ_ONLY_SQL_TRANSACTION
            })
    })
}

/// Capped exponential backoff with jitter: 200 ms, 400 ms, … up to 10 s,
/// each scaled by a random factor in [0.5, 1.0) so retrying workers spread out.
pub fn backoff(attempt: u32) -> Duration {
    let base_ms = 200u64.saturating_mul(1u64 << attempt.min(6)).min(10_000);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let jitter = 500 + u64::from(nanos % 500);
    Duration::from_millis(base_ms * jitter / 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        for attempt in 0..20 {
            let d = backoff(attempt);
            assert!(d >= Duration::from_millis(100), "{d:?}");
            assert!(d <= Duration::from_secs(10), "{d:?}");
        }
        assert!(backoff(6) > backoff(0));
    }
}
