//! `relink purge` (SPEC §8): asks first, takes the lock, then walks the
//! ledger's profiles in keyset pages and deletes what relink created, one
//! chunk per transaction (or lists it, with `--dry-run`), behind the same
//! throttle seam as `run`.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use parking_lot::Mutex;
use serde_json::json;

use super::walk;
use super::Context;
use crate::config::PurgeConfig;
use crate::db::preflight;
use crate::db::{LockGuard, Owner, Session};
use crate::exit::Outcome;
use crate::metrics::{Metrics, Snapshot, Work};
use crate::progress::{Progress, Units};
use crate::removal::{self, PurgeCounters, Scope};
use crate::report;
use crate::shutdown::Shutdown;
use crate::source::Order;
use crate::state::{self, Mode};

/// Runs `relink purge`.
///
/// # Errors
/// Fatal errors (exit 1), or [`crate::db::LockHeld`] (exit 4).
pub async fn purge(cx: &Context, cfg: &PurgeConfig, shutdown: Shutdown) -> Result<Outcome> {
    let names = &cx.common.names;
    let scope = Scope {
        run: cfg.run,
        include_edited: cfg.include_edited,
    };
    let session = Session::new("purge", &cx.common, Some(cfg.walk.timeouts), cfg.dry_run);
    let control = walk::open(cx, &session, "purge", preflight::PURGE, cfg.dry_run).await?;
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
        let (lock, watch) = walk::lock(cx, &session, &cfg.walk.gates, control).await?;
        let control = lock.client().await?;
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

    let progress = Progress::new("purging", PURGE_UNITS, in_scope, !cx.common.quiet);
    let walking = walk::start(cx, &session, watch, &shutdown, run_id).await?;
    let walk = walking.walk("purging a chunk", &progress, &cfg.walk, scope.run);
    let throttle = &walking.throttle;
    let pages = removal::users(names, None, cfg.chunk_size);
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
    let result = walk
        .drive(
            pages,
            stopping,
            |mut client, users| {
                let (scope, stdout, metrics) = (&scope, &stdout, &metrics);
                async move {
                    if let Some(run_id) = run_id {
                        let began = Instant::now();
                        let tx = client.transaction().await?;
                        let c = removal::purge_chunk(&*tx, names, &users, scope, run_id).await?;
                        tx.commit().await.context("cannot commit the purge chunk")?;
                        metrics.observe_chunk(began.elapsed());
                        Ok(c)
                    } else {
                        removal::preview_chunk(
                            &**client,
                            names,
                            &users,
                            scope,
                            &mut stdout.lock(),
                            cx.common.quiet,
                        )
                        .await
                    }
                }
            },
            |counters: PurgeCounters| {
                progress.advance(
                    counters.links_deleted + counters.kept_edited + counters.already_gone,
                    counters.links_deleted,
                );
                totals.lock().merge(&counters);
            },
        )
        .await;
    progress.finish();
    let (result, status) = walk::finish(result, lock.as_ref(), run_id, names).await?;
    let mut last_success = last_success;
    if let Some(lock) = &lock {
        let control = lock.client().await?;
        last_success = state::last_success(&*control, names, Mode::Purge)
            .await
            .unwrap_or(last_success);
        drop(control);
        lock.release().await;
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
