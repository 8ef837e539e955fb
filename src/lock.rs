//! The advisory lock that lets one `run` or `purge` work at a time (SPEC §6).
//! Session-level: held by a dedicated connection for the whole command and
//! released by the server if the process dies.

use anyhow::{Context as _, Result};
use tokio_postgres::Client;

use crate::config::Names;

/// First key of the two-int advisory lock: "RLNK" in ASCII, so the lock is
/// recognizable in `pg_locks.classid`.
const LOCK_CLASS: i32 = 0x524C_4E4B;

/// Another relink holds the lock (exit code 4).
#[derive(Debug, thiserror::Error)]
#[error("another relink run or purge holds the lock on this database: {holder}; wait for it to finish, or stop it (Ctrl-C / SIGTERM) and retry")]
pub struct LockHeld {
    pub holder: String,
}

/// Second key: a stable hash of the state schema name, so two state schemas
/// on one database do not exclude each other. FNV-1a, folded to 31 bits.
fn lock_key(names: &Names) -> i32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in names.state_raw.bytes() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    i32::try_from(hash & 0x7fff_ffff).unwrap_or(0)
}

/// Takes the lock on `client`'s session, or says who holds it.
///
/// # Errors
/// [`LockHeld`] when another session holds it; a database error otherwise.
pub async fn acquire(client: &Client, names: &Names) -> Result<()> {
    let got: bool = client
        .query_one(
            "SELECT pg_try_advisory_lock($1, $2)",
            &[&LOCK_CLASS, &lock_key(names)],
        )
        .await
        .context("cannot take the advisory lock")?
        .get(0);
    if got {
        return Ok(());
    }
    let holder = holder(client, names)
        .await?
        .unwrap_or_else(|| "a session that has just released it (try again)".to_owned());
    Err(LockHeld { holder }.into())
}

/// Describes the session holding the lock, if any: its application name
/// (which names the host and pid), backend pid and since when, plus the
/// run it is working on when the state schema says so.
///
/// # Errors
/// On a database error.
pub async fn holder(client: &Client, names: &Names) -> Result<Option<String>> {
    let row = client
        .query_opt(
            "SELECT a.application_name, a.pid, to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS \"UTC\"')
               FROM pg_catalog.pg_locks l
               JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
              WHERE l.locktype = 'advisory' AND l.granted
                AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
                AND l.classid = $1::bigint::oid AND l.objid = $2::bigint::oid AND l.objsubid = 2",
            &[&i64::from(LOCK_CLASS), &i64::from(lock_key(names))],
        )
        .await
        .context("cannot look up the lock holder")?;
    let Some(row) = row else { return Ok(None) };
    let app: String = row.get(0);
    let pid: i32 = row.get(1);
    let since: String = row.get(2);
    let run = crate::state::running_run(client, names)
        .await
        .ok()
        .flatten();
    let run = run
        .map(|(id, mode)| format!(", {mode} {id}"))
        .unwrap_or_default();
    Ok(Some(format!(
        "{app} (backend pid {pid}{run}, connected since {since})"
    )))
}
