//! Connection poolers (SPEC §12): whether relink's connection keeps one
//! server session of its own, as a direct connection and a session-mode
//! pooler give it, or a pooler hands its transactions to whichever server
//! session is free (PgBouncer's `pool_mode = transaction`, Supabase's port
//! 6543, Neon's `-pooler` hosts, an unpinned RDS Proxy connection).
//!
//! relink's guarantees rest on a session of its own: its advisory lock,
//! prepared statements, COPY and session settings. Behind a transaction
//! pooler the lock would stay on a server session the pooler hands to
//! another client, and a statement prepared in one transaction would be
//! missing in the next. So the commands find out first, before they write
//! or lock anything, and refuse.
//!
//! A pooler does not say what it is (PgBouncer answers `SHOW` only on its
//! admin console), so [`probe`] watches what it does: it asks the server
//! session behind the connection for its process id and start time
//! (`pg_backend_pid()`, `backend_start`) in separate transactions, and in
//! between opens a second connection that holds a transaction open while
//! the first is idle. Behind a direct connection or a session pooler the
//! first connection always reaches the same server session and the second
//! one never does; a transaction pooler gives the idle first connection's
//! server session to the second (PgBouncer reuses the most recently freed
//! one), or moves the first to another (round robin, random). Every probe
//! statement is one extended-protocol message with an unnamed statement:
//! it works through any pooler (nothing prepared outlives it), and it pins
//! an RDS Proxy connection to its server session as a prepared statement
//! does, after which the proxy behaves as a session pooler for relink.
//!
//! What the probe cannot tell apart: a transaction pooler that keeps giving
//! a client back its own server session and never hands it to another
//! client while the client is connected behaves, for relink, exactly like a
//! session pooler, and is taken for one; and with several hosts the second
//! connection may reach another host, leaving the check to the first
//! connection's own transactions.

use std::future::Future;
use std::time::Duration;

use anyhow::{Context as _, Result};
use tokio_postgres::Client;

/// How long the second connection may take to connect and begin its
/// transaction. A session pooler with no free server session makes it wait
/// (PgBouncer queues it); that is no sign of transaction pooling, so the
/// probe then goes on without it.
const SECOND_WAIT: Duration = Duration::from_secs(5);

/// Transactions of the first connection alone after the second one's:
/// a round-robin or random pooler moves them to other server sessions.
const ROUNDS: usize = 4;

/// The server session behind a connection: process id and start time (two
/// servers behind one list of hosts may reuse a process id).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Backend {
    pid: i32,
    started: String,
}

/// What [`probe`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pooling {
    /// Every transaction of the connection ran in one server session no
    /// other connection was given: a direct connection or a session
    /// pooler.
    Session,
    /// The connection's transactions do not keep one server session of
    /// their own.
    Transaction(TransactionPooler),
}

/// relink is connected through a transaction-mode pooler; the message says
/// what was seen and what to connect to instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{server} is a connection pooler in transaction mode (PgBouncer pool_mode=transaction, Supabase's port 6543, a Neon -pooler host, …): {evidence}. relink needs a server session of its own for the whole command (its advisory lock, prepared statements, COPY and session settings), so it stops here, before writing or locking anything: connect to PostgreSQL directly or through the pooler's session mode (Supabase: the session pooler on port 5432 or the direct connection; PgBouncer: a database or user with pool_mode=session)")]
pub struct TransactionPooler {
    /// `host:port` connected to.
    pub server: String,
    /// What the probe saw.
    pub evidence: String,
}

/// Watches whether `client` keeps one server session across transactions
/// (see the module's documentation). `second` opens another connection to
/// the same server with no session settings of relink's (they are not
/// safe to set before the verdict); it is closed before `probe` returns.
/// `server` names the server in the verdict.
///
/// # Errors
/// When the first connection fails.
pub async fn probe<F, Fut>(client: &Client, server: &str, second: F) -> Result<Pooling>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Client>>,
{
    let pooled = |evidence: String| {
        Ok(Pooling::Transaction(TransactionPooler {
            server: server.to_owned(),
            evidence,
        }))
    };
    let first = backend(client).await?;
    let other = async {
        let other = second().await?;
        let held = hold_transaction(&other).await;
        Ok::<_, anyhow::Error>((other, held))
    };
    match tokio::time::timeout(SECOND_WAIT, other).await {
        Ok(Ok((other, held))) => {
            let held = match held {
                Ok(held) => held,
                Err(err) if err.as_db_error().is_some() => {
                    // PgBouncer's statement mode refuses transaction blocks.
                    return pooled(format!(
                        "it refused a transaction block ({})",
                        err.as_db_error().map_or("", |db| db.message())
                    ));
                }
                Err(err) => return Err(err).context("the pooler check's second connection failed"),
            };
            if held == first {
                return pooled(format!(
                    "server session {} served this connection, then another connection of relink while this one was still connected",
                    first.pid
                ));
            }
            let now = backend(client).await?;
            // Ends the transaction; the connection closes when dropped.
            let _ = other.simple_query("COMMIT").await;
            if now != first {
                return pooled(moved(&first, &now));
            }
        }
        Ok(Err(err)) => {
            tracing::debug!("pooler check without a second connection: {err:#}");
        }
        Err(_) => {
            tracing::debug!(
                "pooler check without a second connection: no transaction within {SECOND_WAIT:?}"
            );
        }
    }
    for _ in 0..ROUNDS {
        let now = backend(client).await?;
        if now != first {
            return pooled(moved(&first, &now));
        }
    }
    Ok(Pooling::Session)
}

fn moved(first: &Backend, now: &Backend) -> String {
    format!(
        "two transactions of one connection ran in different server sessions (process {} then {})",
        first.pid, now.pid
    )
}

/// The process id and start time of the server session running it.
const BACKEND: &str = "SELECT pg_catalog.pg_backend_pid(), \
       (SELECT a.backend_start::text FROM pg_catalog.pg_stat_activity a \
         WHERE a.pid = pg_catalog.pg_backend_pid())";

/// The server session behind `client`, read in a transaction of its own.
async fn backend(client: &Client) -> Result<Backend> {
    read_backend(client)
        .await
        .context("cannot read the server session's process id")
}

/// [`BACKEND`] as one message with an unnamed statement (see the module's
/// documentation).
async fn read_backend(client: &Client) -> Result<Backend, tokio_postgres::Error> {
    let row = client.query_typed_one(BACKEND, &[]).await?;
    Ok(Backend {
        pid: row.get(0),
        started: row.get::<_, Option<String>>(1).unwrap_or_default(),
    })
}

/// Begins a transaction on `client` and returns its server session; the
/// transaction stays open (the caller ends it or drops the connection).
async fn hold_transaction(client: &Client) -> Result<Backend, tokio_postgres::Error> {
    client.query_typed("BEGIN", &[]).await?;
    read_backend(client).await
}
