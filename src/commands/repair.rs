//! `relink repair` (SPEC §9): asks first, takes the lock, then walks the
//! ledger's users in keyset pages as purge does and mends each chunk in
//! one transaction that starts with the lock phase (or lists what it would
//! change, with `--dry-run`); resumes after the checkpoint of an unfinished
//! repair; exit 3 when something is left that only a change to the
//! application's rows could mend.

use std::io::Write;
use std::time::Instant;

use anyhow::{Context as _, Result};
use serde_json::json;

use super::walk;
use super::Context;
use crate::cli::OutputFormat;
use crate::config::{Names, RepairConfig};
use crate::db::{preflight, LockGuard, Owner, Session};
use crate::exit::Outcome;
use crate::lock_phase::LockWaits;
use crate::progress::{Progress, Units};
use crate::removal;
use crate::repair::{self, RepairCounters};
use crate::shutdown::Shutdown;
use crate::state::{self, Mode, RunStatus};

/// Runs `relink repair`.
///
/// # Errors
/// Fatal errors (exit 1), or [`crate::db::LockHeld`] (exit 4).
pub async fn repair(cx: &Context, cfg: &RepairConfig, shutdown: Shutdown) -> Result<Outcome> {
    let names = &cx.common.names;
    let session = Session::new("repair", &cx.common, Some(cfg.walk.timeouts), cfg.dry_run);
    let control = walk::open(cx, &session, "repair", preflight::REPAIR, cfg.dry_run).await?;
    if !cfg.dry_run && !cfg.yes {
        super::confirm(
            &format!(
                "Delete relink's duplicate rows and move relink's rows off positions the application's rows hold, in {}? Only rows relink created and no one edited since are changed. [y/N] ",
                cx.database
            ),
            "repair",
            "what would change",
            "nothing was changed",
        )?;
    }
    let waits = LockWaits::of_server(&control, cfg.walk.timeouts.lock).await?;
    let in_ledger: i64 = control
        .query_one(
            &names.sql("SELECT count(DISTINCT user_id) FROM {state}.ledger"),
            &[],
        )
        .await
        .context("cannot count the ledger's users")?
        .get(0);

    let started = Instant::now();
    let (lock, run_id, after, watch) = if cfg.dry_run {
        (None, None, None, None)
    } else {
        let (lock, watch) = walk::lock(cx, &session, &cfg.walk.gates, control).await?;
        let control = lock.client().await?;
        let (id, after) = begin(&control, names, cfg).await?;
        drop(control);
        (Some(lock), Some(id), after, Some(watch))
    };
    let stopping = || shutdown.requested() || lock.as_ref().is_some_and(LockGuard::lost);

    let progress = Progress::new(
        "repairing",
        REPAIR_UNITS,
        u64::try_from(in_ledger).unwrap_or(0),
        !cx.common.quiet,
    );
    let walking = walk::start(cx, &session, watch, &shutdown, run_id).await?;
    let walk = walking.walk("repairing a chunk", &progress, &cfg.walk, None);
    let pages = removal::users(names, after, cfg.chunk_size);
    let mut totals = RepairCounters::default();
    let stdout = std::io::stdout();
    let result = walk
        .drive(
            pages,
            stopping,
            |mut client, users| {
                let stdout = &stdout;
                async move {
                    if let Some(run_id) = run_id {
                        let tx = client
                            .transaction()
                            .await
                            .context("cannot begin a repair chunk")?;
                        // Printed only once the chunk committed.
                        let mut lines = Vec::new();
                        let c = repair::repair_chunk(
                            &*tx,
                            names,
                            &users,
                            waits,
                            run_id,
                            &mut lines,
                            cx.common.quiet,
                        )
                        .await?;
                        tx.commit()
                            .await
                            .context("cannot commit the repair chunk")?;
                        stdout.lock().write_all(&lines)?;
                        Ok(c)
                    } else {
                        repair::preview_chunk(
                            &**client,
                            names,
                            &users,
                            &mut stdout.lock(),
                            cx.common.quiet,
                        )
                        .await
                    }
                }
            },
            |counters: RepairCounters| {
                progress.advance(
                    counters.users,
                    counters.duplicates_deleted + counters.rows_moved,
                );
                totals.merge(&counters);
            },
        )
        .await;
    progress.finish();
    let (result, status) = walk::finish(result, lock.as_ref(), run_id, names).await?;
    if let Some(lock) = &lock {
        lock.release().await;
    }
    print_summary(&totals, cfg, run_id, status, started)?;
    match result {
        Err(e) => Err(e.context("repair failed; rerun `relink repair` to continue")),
        Ok(false) => Ok(Outcome::Interrupted),
        Ok(true) if totals.unmendable > 0 => Ok(Outcome::Invariant),
        Ok(true) => Ok(Outcome::Done),
    }
}

/// Starts a repair run record, or takes over the unfinished one: returns
/// its id and the user to resume after.
async fn begin(
    control: &tokio_postgres::Client,
    names: &Names,
    cfg: &RepairConfig,
) -> Result<(i64, Option<String>)> {
    let owner = Owner::current();
    if let Some(run) = state::resumable(control, names, Mode::Repair).await? {
        state::resume_run(control, names, run.id, &owner).await?;
        tracing::info!(
            "resuming repair {} after user {}",
            run.id,
            run.checkpoint
                .as_deref()
                .unwrap_or("(none: from the start)")
        );
        return Ok((run.id, run.checkpoint));
    }
    let options = json!({"chunk_size": cfg.chunk_size});
    let id = state::start_run(control, names, Mode::Repair, &options, &owner).await?;
    tracing::info!("started repair {id}");
    Ok((id, None))
}

/// Repair's bar counts the ledger's users looked at.
const REPAIR_UNITS: Units = Units {
    bar: "users",
    also: "rows changed",
};

fn print_summary(
    c: &RepairCounters,
    cfg: &RepairConfig,
    run_id: Option<i64>,
    status: RunStatus,
    started: Instant,
) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let elapsed = started.elapsed().as_secs_f64();
    if cfg.walk.format == OutputFormat::Json {
        serde_json::to_writer(
            &mut out,
            &json!({"mode": if cfg.dry_run { "repair-dry-run" } else { "repair" }, "run_id": run_id,
                    "status": status, "users": c.users, "duplicates_deleted": c.duplicates_deleted,
                    "rows_moved": c.rows_moved, "edited_meanwhile": c.edited_meanwhile,
                    "unmendable": c.unmendable, "elapsed_seconds": elapsed}),
        )?;
        writeln!(out)?;
        return Ok(());
    }
    let (deleted, moved) = if cfg.dry_run {
        ("duplicates that would be deleted", "rows that would move")
    } else {
        ("duplicates deleted", "rows moved")
    };
    match run_id {
        Some(id) => writeln!(out, "Summary of repair {id} ({status})")?,
        None => writeln!(out, "Summary (repair dry run)")?,
    }
    for (name, n) in [
        ("users looked at", c.users),
        (deleted, c.duplicates_deleted),
        (moved, c.rows_moved),
        ("skipped: edited meanwhile", c.edited_meanwhile),
        ("left for the application (listed)", c.unmendable),
    ] {
        writeln!(out, "  {name:<36} {n:>12}")?;
    }
    writeln!(out, "  {:<36} {:>12.1} s", "elapsed", elapsed)?;
    if cfg.dry_run {
        writeln!(out, "This was a DRY RUN. No changes were made.")?;
    }
    Ok(())
}
