//! The advisory lock that lets one `run` or `purge` work at a time (SPEC §6),
//! and the guard that keeps it for the whole command.
//!
//! Session-level advisory locks, so the server releases them if the process
//! dies. The lock is two keys held by two connections of ours: a newcomer
//! must take both, so when one of our connections drops (a network blip, a
//! DBA terminating a backend, an idle-session reaper) the other still keeps
//! every other relink out while the keeper reconnects and takes the lost key
//! again. Only if both drop at once can another relink slip in; the keeper
//! then finds its key taken and stops this command, so two never write
//! side by side.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use tokio::sync::{Mutex, MutexGuard};
use tokio::task::JoinHandle;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use super::retry::{backoff, is_retryable};
use super::session::{connect, Session};
use super::Database;
use crate::config::Names;

/// First key of the main lock: "RLNK" in ASCII, so the lock is recognizable
/// in `pg_locks.classid`.
const MAIN_CLASS: i32 = 0x524C_4E4B;
/// First key of the second lock, held by the keeper's second connection.
const SPARE_CLASS: i32 = 0x524C_4E4C;

/// How often the keeper looks at its connections.
const KEEPER_TICK: Duration = Duration::from_millis(100);
/// Attempts to get a dropped connection back and take its key again.
const KEEPER_ATTEMPTS: u32 = 30;

/// Another relink holds the lock (exit code 4).
#[derive(Debug, thiserror::Error)]
#[error("another relink run or purge holds the lock on this database: {holder}; wait for it to finish, or stop it (Ctrl-C / SIGTERM) and retry")]
pub struct LockHeld {
    pub holder: String,
}

/// Second key of both locks: a stable hash of the state schema name, so two
/// state schemas on one database do not exclude each other. FNV-1a, folded
/// to 31 bits.
fn lock_key(names: &Names) -> i32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in names.state_raw.bytes() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    i32::try_from(hash & 0x7fff_ffff).unwrap_or(0)
}

async fn try_take(client: &Client, class: i32, names: &Names) -> Result<bool> {
    Ok(client
        .query_one(
            "SELECT pg_try_advisory_lock($1, $2)",
            &[&class, &lock_key(names)],
        )
        .await
        .context("cannot take the advisory lock")?
        .get(0))
}

async fn held_elsewhere(client: &Client, names: &Names) -> anyhow::Error {
    let holder = match holder(client, names).await {
        Ok(Some(holder)) => holder,
        Ok(None) => "a session that has just released it (try again)".to_owned(),
        Err(e) => return e,
    };
    LockHeld { holder }.into()
}

/// The lock, held for as long as the guard lives.
pub struct LockGuard {
    control: Arc<Mutex<Client>>,
    /// The second key's connection (the keeper watches it).
    spare: Arc<Mutex<Client>>,
    names: Names,
    /// Cancelled when the lock could not be kept.
    lost: CancellationToken,
    keeper: JoinHandle<()>,
    db: Database,
    session: Session,
}

impl LockGuard {
    /// Takes both keys (`control` holds the main one), then keeps them.
    ///
    /// # Errors
    /// [`LockHeld`] when another session holds either key; a database error
    /// otherwise.
    pub async fn acquire(
        db: &Database,
        session: &Session,
        names: &Names,
        control: Client,
    ) -> Result<Self> {
        if !try_take(&control, MAIN_CLASS, names).await? {
            return Err(held_elsewhere(&control, names).await);
        }
        let spare = connect(db, session).await?;
        if !try_take(&spare, SPARE_CLASS, names).await? {
            // A newcomer that got only half: another relink is at work.
            return Err(held_elsewhere(&control, names).await);
        }
        let control = Arc::new(Mutex::new(control));
        let spare = Arc::new(Mutex::new(spare));
        let lost = CancellationToken::new();
        let keeper = tokio::spawn(keep(
            [(MAIN_CLASS, control.clone()), (SPARE_CLASS, spare.clone())],
            db.clone(),
            session.clone(),
            names.clone(),
            lost.clone(),
        ));
        Ok(Self {
            control,
            spare,
            names: names.clone(),
            lost,
            keeper,
            db: db.clone(),
            session: session.clone(),
        })
    }

    /// The connection holding the main key, for the command's bookkeeping
    /// (run records). Once the lock is lost, a plain new connection, so the
    /// command can still record how it ended.
    ///
    /// # Errors
    /// When that new connection cannot be made.
    pub async fn client(&self) -> Result<MutexGuard<'_, Client>> {
        loop {
            let mut client = self.control.lock().await;
            if !client.is_closed() {
                return Ok(client);
            }
            if self.lost() || self.keeper.is_finished() {
                *client = connect(&self.db, &self.session).await?;
                return Ok(client);
            }
            // The keeper is about to reconnect it.
            drop(client);
            tokio::time::sleep(KEEPER_TICK).await;
        }
    }

    /// Whether the lock could not be kept: the command must stop.
    pub fn lost(&self) -> bool {
        self.lost.is_cancelled()
    }

    /// Gives both keys back now, as a command's last step. Without it they
    /// go when the process's connections close, which the server notices a
    /// moment after the process exits: a command started right after this
    /// one (`relink run && relink purge --yes`) could find the lock still
    /// held. A key that cannot be given back (its connection is gone) is
    /// the server's to release, as before.
    pub async fn release(&self) {
        crate::test_hook::reached(crate::test_hook::Point::Release);
        self.keeper.abort();
        for (class, slot) in [(MAIN_CLASS, &self.control), (SPARE_CLASS, &self.spare)] {
            let client = slot.lock().await;
            if let Err(e) = client
                .execute(
                    "SELECT pg_advisory_unlock($1, $2)",
                    &[&class, &lock_key(&self.names)],
                )
                .await
            {
                tracing::debug!("cannot give the lock's key back (the server will): {e}");
            }
        }
        crate::test_hook::reached(crate::test_hook::Point::Exit);
    }
}

impl Drop for LockGuard {
    /// The keys go with their connections when the keeper's task and the
    /// guard's clients are dropped.
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

/// Watches both connections; takes a dropped one's key again on a new
/// connection. Marks the lock lost (and ends) if that fails.
async fn keep(
    held: [(i32, Arc<Mutex<Client>>); 2],
    db: Database,
    session: Session,
    names: Names,
    lost: CancellationToken,
) {
    loop {
        tokio::time::sleep(KEEPER_TICK).await;
        for (class, slot) in &held {
            let mut client = slot.lock().await;
            if !client.is_closed() {
                continue;
            }
            tracing::warn!("lost a connection holding the lock; reconnecting");
            match retake(&db, &session, &names, *class).await {
                Ok(fresh) => {
                    *client = fresh;
                    tracing::info!("lock taken again");
                }
                Err(e) => {
                    tracing::error!("cannot take the lock again: {e:#}; stopping");
                    lost.cancel();
                    return;
                }
            }
        }
    }
}

/// A new connection holding key `class`. A key found taken is retried for a
/// while: a newcomer that took it holds it only until it finds our other key.
async fn retake(db: &Database, session: &Session, names: &Names, class: i32) -> Result<Client> {
    let mut attempt = 0;
    loop {
        let result = async {
            let client = connect(db, session).await?;
            if try_take(&client, class, names).await? {
                Ok(Some(client))
            } else {
                Ok::<_, anyhow::Error>(None)
            }
        }
        .await;
        let again = match &result {
            Ok(Some(_)) => false,
            Ok(None) => true,
            Err(e) => is_retryable(e),
        };
        if !again || attempt >= KEEPER_ATTEMPTS {
            return match result {
                Ok(Some(client)) => Ok(client),
                Ok(None) => Err(anyhow::anyhow!(
                    "another relink took the lock while this one was reconnecting"
                )),
                Err(e) => Err(e),
            };
        }
        tokio::time::sleep(backoff(attempt)).await;
        attempt += 1;
    }
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
                AND l.classid IN ($1::bigint::oid, $2::bigint::oid) AND l.objid = $3::bigint::oid AND l.objsubid = 2
              ORDER BY l.classid LIMIT 1",
            &[&i64::from(MAIN_CLASS), &i64::from(SPARE_CLASS), &i64::from(lock_key(names))],
        )
        .await
        .context("cannot look up the lock holder")?;
    let Some(row) = row else { return Ok(None) };
    let app: String = row.get(0);
    let pid: i32 = row.get(1);
    let since: String = row.get(2);
    let run = running_run(client, names).await.ok().flatten();
    let run = run
        .map(|(id, mode)| format!(", {mode} {id}"))
        .unwrap_or_default();
    Ok(Some(format!(
        "{app} (backend pid {pid}{run}, connected since {since})"
    )))
}

/// The run a live process is working on, if the state schema exists.
async fn running_run(client: &Client, names: &Names) -> Result<Option<(i64, String)>> {
    let exists: bool = client
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[&format!("{}.runs", names.state)],
        )
        .await?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let row = client
        .query_opt(
            &names.sql("SELECT id, mode FROM {state}.runs WHERE status = 'running' ORDER BY id DESC LIMIT 1"),
            &[],
        )
        .await?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}
