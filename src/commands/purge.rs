//! `relink purge` (SPEC §8): asks first, takes the lock, then walks the
//! ledger's profiles in keyset pages and deletes what relink created, one
//! chunk per transaction (or lists it, with `--dry-run`), behind the same
//! throttle seam as `run`.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use parking_lot::Mutex;
use serde_json::json;

use super::Context;
use crate::config::PurgeConfig;
use crate::db::preflight::{self, Access};
use crate::db::{self, Attempted, LockGuard, Owner, Retry, Session};
use crate::exit::Outcome;
use crate::metrics::{Metrics, Snapshot, Work};
use crate::progress::{Progress, Units};
use crate::removal::{self, PurgeCounters, Scope};
use crate::report;
use crate::shutdown::Shutdown;
use crate::source::Order;
use crate::state::{self, Mode, RunStatus};
use crate::throttle::{Limits, Throttle, Watch};

/// Runs `relink purge`.
///
/// # Errors
/// Fatal errors (exit 1), or [`db::LockHeld`] (exit 4).
pub async fn purge(cx: &Context, cfg: &PurgeConfig, shutdown: Shutdown) -> Result<Outcome> {
    let names = &cx.common.names;
    let scope = Scope {
        run: cfg.run,
        include_edited: cfg.include_edited,
    };
    let session = Session::new("purge", &cx.common, Some(cfg.timeouts), cfg.dry_run);
    let control = db::connect(&cx.database, &session).await?;
    let access = if cfg.dry_run {
        Access::Read
    } else {
        preflight::PURGE
    };
    preflight::command_start(&control, &cx.database, names, &session, access).await?;
    if !state::exists(&control, names).await? {
        bail!("nothing to purge: relink's state schema {:?} does not exist (no live run has happened here)", names.state_raw);
    }
    if let Some(id) = cfg.run {
        match state::load_run(&control, names, id).await? {
            Some(run) if run.mode == Mode::Run => {}
            Some(run) => bail!(
                "run {id} is a {} run, not a migration run: see `relink status`",
                run.mode
            ),
            None => bail!("there is no run {id}: see `relink status` for run ids"),
        }
    }
    let in_scope = removal::links_in_scope(&control, names, &scope).await?;
    let scope_text = cfg
        .run
        .map_or_else(|| "all runs".to_owned(), |id| format!("run {id}"));
    if !cfg.dry_run && !cfg.yes {
        super::confirm(&format!(
            "Delete up to {in_scope} profile links created by relink ({scope_text}{}) from {}? Rows users created are kept. [y/N] ",
            if cfg.include_edited { ", including rows users edited since" } else { "; rows users edited since are kept" },
            cx.database
        ), "purge", "what would go", "nothing was deleted")?;
    }

    let started = Instant::now();
    let (lock, run_id, watch, last_success) = if cfg.dry_run {
        (None, None, None, None)
    } else {
        // Checked before anything is written, as in `run`.
        let watch = Watch::open(&cx.database, &cx.replicas, &session, names, &cfg.gates).await?;
        let lock = LockGuard::acquire(&cx.database, &session, names, control).await?;
        let mut control = lock.client().await?;
        state::ensure_schema(&mut control, names).await?;
        // Its checkpoint is the last user purged (status counts up to it).
        let options = json!({
            "run": cfg.run, "include_edited": cfg.include_edited, "chunk_size": cfg.chunk_size,
            "order": Order::User.as_str(),
        });
        let id =
            state::start_run(&control, names, Mode::Purge, &options, &Owner::current()).await?;
        tracing::info!("started purge {id} ({scope_text})");
        let last_success = state::last_success(&*control, names, Mode::Purge).await?;
        drop(control);
        (Some(lock), Some(id), Some(watch), last_success)
    };
    let stopping = || shutdown.requested() || lock.as_ref().is_some_and(LockGuard::lost);

    let pool = db::pool(&cx.database, &session, 1)?;
    let progress = Progress::new("purging", PURGE_UNITS, in_scope, !cx.common.quiet);
    let throttle = Arc::new(Throttle::new(Limits::default(), watch, shutdown.child()));
    if let Some(id) = run_id {
        throttle.show_on(id).await;
    }
    let retry = Retry::new(cfg.timeouts.attempts);
    let mut pages = removal::users(names, None, cfg.chunk_size);
    let totals = Arc::new(Mutex::new(PurgeCounters::default()));
    // Metrics (SPEC §14): a live purge only (the configuration refuses them
    // with --dry-run).
    let metrics = Metrics::new(
        cfg.metrics.as_ref().filter(|_| run_id.is_some()),
        &cx.database.label(),
        Mode::Purge,
        run_id.unwrap_or_default(),
        last_success,
    );
    let figures = {
        let (totals, throttle) = (totals.clone(), throttle.clone());
        move || Snapshot {
            work: Work::Purge(totals.lock().clone()),
            throttled: throttle.throttled_seconds(),
            wal_bytes: None,
        }
    };
    let exporter = metrics.start(figures.clone()).await;
    let stdout = std::io::stdout();
    let result: Result<bool> = async {
        let mut after_chunk = false;
        loop {
            if stopping() || !throttle.before_chunk(after_chunk, &progress).await {
                return Ok(false);
            }
            let chunk = retry
                .run("purging a chunk", stopping, |_| {
                    // A failed chunk leaves the pager where it was.
                    let mut attempt = pages.clone();
                    let (pool, scope, stdout, metrics) = (&pool, &scope, &stdout, &metrics);
                    async move {
                        let mut client = db::checkout(pool).await?;
                        let mut users: Vec<String> = attempt
                            .next(&**client, &[&scope.run])
                            .await?
                            .iter()
                            .map(|r| r.get(0))
                            .collect();
                        users.dedup();
                        let counters = if users.is_empty() {
                            PurgeCounters::default()
                        } else if let Some(run_id) = run_id {
                            let began = Instant::now();
                            let tx = client.transaction().await?;
                            let c =
                                removal::purge_chunk(&*tx, names, &users, scope, run_id).await?;
                            tx.commit().await.context("cannot commit the purge chunk")?;
                            metrics.observe_chunk(began.elapsed());
                            c
                        } else {
                            removal::preview_chunk(
                                &**client,
                                names,
                                &users,
                                scope,
                                &mut stdout.lock(),
                                cx.common.quiet,
                            )
                            .await?
                        };
                        Ok((attempt, users.is_empty(), counters))
                    }
                })
                .await?;
            let Attempted::Done((advanced, empty, counters)) = chunk else {
                return Ok(false);
            };
            pages = advanced;
            if empty {
                return Ok(true);
            }
            progress.advance(
                counters.links_deleted + counters.kept_edited + counters.already_gone,
                counters.links_deleted,
            );
            totals.lock().merge(&counters);
            after_chunk = true;
        }
    }
    .await;
    progress.finish();
    let result = match result {
        Ok(_) if lock.as_ref().is_some_and(LockGuard::lost) => Err(anyhow::anyhow!(
            "lost the advisory lock (its connections dropped) and could not take it again"
        )),
        other => other,
    };

    let status = match &result {
        Err(_) => RunStatus::Failed,
        Ok(false) => RunStatus::Interrupted,
        Ok(true) => RunStatus::Completed,
    };
    let mut last_success = last_success;
    if let (Some(id), Some(lock)) = (run_id, &lock) {
        let message = result.as_ref().err().map(|e| format!("{e:#}"));
        let control = lock.client().await?;
        state::finish_run(&control, names, id, status, message.as_deref()).await?;
        last_success = state::last_success(&*control, names, Mode::Purge)
            .await
            .unwrap_or(last_success);
    }
    exporter.finish(status, figures(), last_success).await;
    let totals = totals.lock().clone();
    report::print_purge_summary(
        &totals,
        cfg,
        run_id,
        status,
        started,
        &throttle.throttled_seconds(),
    )?;
    match result {
        Err(e) => {
            Err(e.context("purge failed; rerun `relink purge` to continue (it is idempotent)"))
        }
        Ok(false) => Ok(Outcome::Interrupted),
        Ok(true) => Ok(Outcome::Done),
    }
}

/// Purge's bar counts links (deleted, kept or already gone) against the
/// links in scope.
const PURGE_UNITS: Units = Units {
    bar: "links",
    also: "links deleted",
};
