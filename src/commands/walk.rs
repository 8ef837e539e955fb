//! What `purge` and `repair` share: both take the lock and open their
//! gates before writing, walk the ledger's users in keyset pages (one chunk
//! per transaction, behind the throttle seam, each chunk retried as a unit)
//! and close their run record the same way.

use std::future::Future;
use std::sync::Arc;

use anyhow::{anyhow, bail, Result};

use super::Context;
use crate::config::{GateConfig, Names, WalkConfig};
use crate::db::preflight::{self, Access};
use crate::db::{self, Attempted, LockGuard, Pager, Pool, PooledClient, Retry, Session};
use crate::progress::Progress;
use crate::removal;
use crate::shutdown::Shutdown;
use crate::state::{self, RunStatus};
use crate::throttle::{Limits, Throttle, Watch};

/// Connects for `command` (`purge`, `repair`), checks that the role may do
/// what it is about to (`write`, or only read with `--dry-run`) and that
/// relink's state schema, which holds the ledger it walks, exists.
///
/// # Errors
/// When it cannot connect, the role lacks a privilege, or there is no
/// state schema.
pub(super) async fn open(
    cx: &Context,
    session: &Session,
    command: &str,
    write: Access,
    dry_run: bool,
) -> Result<tokio_postgres::Client> {
    let names = &cx.common.names;
    let control = db::connect(&cx.database, session).await?;
    let access = if dry_run { Access::Read } else { write };
    preflight::command_start(&control, &cx.database, names, session, access).await?;
    if !state::exists(&control, names).await? {
        bail!(
            "nothing to {command}: relink's state schema {:?} does not exist (no live run has happened here)",
            names.state_raw
        );
    }
    Ok(control)
}

/// Opens the gates, then takes the lock on `control` and makes sure the
/// state schema is current: what a live `purge` or `repair` does before it
/// writes anything (checked before, as in `run`).
///
/// # Errors
/// When a gate cannot be opened, the lock is held ([`crate::db::LockHeld`])
/// or the state schema cannot be created.
pub(super) async fn lock(
    cx: &Context,
    session: &Session,
    gates: &GateConfig,
    control: tokio_postgres::Client,
) -> Result<(LockGuard, Watch)> {
    let names = &cx.common.names;
    let watch = Watch::open(&cx.database, &cx.replicas, session, names, gates).await?;
    let lock = LockGuard::acquire(&cx.database, session, names, control).await?;
    state::ensure_schema(&mut *lock.client().await?, names).await?;
    Ok((lock, watch))
}

/// What a walk runs on: its one connection (chunks run one at a time)
/// and its throttle, shown on its run's record (a live walk).
pub(super) struct Walking {
    pool: Pool,
    pub throttle: Arc<Throttle>,
}

/// Connects the walk's pool and sets up its throttle behind `watch`.
///
/// # Errors
/// When the pool cannot be set up.
pub(super) async fn start(
    cx: &Context,
    session: &Session,
    watch: Option<Watch>,
    shutdown: &Shutdown,
    run_id: Option<i64>,
) -> Result<Walking> {
    let pool = db::pool(&cx.database, session, 1)?;
    let throttle = Arc::new(Throttle::new(Limits::default(), watch, shutdown.child()));
    if let Some(id) = run_id {
        throttle.show_on(id).await;
    }
    Ok(Walking { pool, throttle })
}

impl Walking {
    /// A walk of `what` (the unit retried, for messages) over the ledger
    /// rows of `run` (all with `None`), each chunk tried as often as
    /// `cfg`'s timeouts say.
    pub fn walk<'a>(
        &'a self,
        what: &'static str,
        progress: &'a Progress,
        cfg: &WalkConfig,
        run: Option<i64>,
    ) -> Walk<'a> {
        Walk {
            what,
            pool: &self.pool,
            retry: Retry::new(cfg.timeouts.attempts),
            throttle: &self.throttle,
            progress,
            run,
        }
    }
}

/// A walk over the ledger's users, page by page.
pub(super) struct Walk<'a> {
    what: &'static str,
    pool: &'a Pool,
    retry: Retry,
    throttle: &'a Throttle,
    progress: &'a Progress,
    run: Option<i64>,
}

impl Walk<'_> {
    /// Walks from `pages` on: each page of users is given to `chunk` with
    /// the connection it was read on, and what `chunk` returns to `done`.
    /// `Ok(true)` once every page is done, `Ok(false)` when it stopped
    /// (`stopping`, or the throttle's stop) between or in a chunk.
    ///
    /// # Errors
    /// A chunk's error that is not retryable, or still there after the
    /// last attempt.
    pub async fn drive<C, F, Fut>(
        &self,
        mut pages: Pager,
        stopping: impl Fn() -> bool,
        chunk: F,
        mut done: impl FnMut(C),
    ) -> Result<bool>
    where
        F: Fn(PooledClient, Vec<String>) -> Fut,
        Fut: Future<Output = Result<C>>,
    {
        let (chunk, run) = (&chunk, self.run);
        let mut after_chunk = false;
        loop {
            if stopping() || !self.throttle.before_chunk(after_chunk, self.progress).await {
                return Ok(false);
            }
            let attempted = self
                .retry
                .run(self.what, &stopping, |_| {
                    // A failed chunk leaves the pager where it was.
                    let mut attempt = pages.clone();
                    async move {
                        let client = db::checkout(self.pool).await?;
                        let users = removal::next_users(&mut attempt, &**client, run).await?;
                        if users.is_empty() {
                            return Ok((attempt, None));
                        }
                        Ok((attempt, Some(chunk(client, users).await?)))
                    }
                })
                .await?;
            let Attempted::Done((advanced, counters)) = attempted else {
                return Ok(false);
            };
            pages = advanced;
            let Some(counters) = counters else {
                return Ok(true);
            };
            done(counters);
            after_chunk = true;
        }
    }
}

/// Ends a walk: its status (a lost lock makes a finished walk a failure),
/// recorded in the run's record when there is one (a live walk).
///
/// # Errors
/// When the run record cannot be closed.
pub(super) async fn finish(
    result: Result<bool>,
    lock: Option<&LockGuard>,
    run_id: Option<i64>,
    names: &Names,
) -> Result<(Result<bool>, RunStatus)> {
    let result = match result {
        Ok(_) if lock.is_some_and(LockGuard::lost) => Err(anyhow!(
            "lost the advisory lock (its connections dropped) and could not take it again"
        )),
        other => other,
    };
    let status = match &result {
        Err(_) => RunStatus::Failed,
        Ok(false) => RunStatus::Interrupted,
        Ok(true) => RunStatus::Completed,
    };
    if let (Some(id), Some(lock)) = (run_id, lock) {
        let message = result.as_ref().err().map(|e| format!("{e:#}"));
        let control = lock.client().await?;
        state::finish_run(&control, names, id, status, message.as_deref()).await?;
    }
    Ok((result, status))
}
