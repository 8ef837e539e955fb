//! `relink run` (SPEC §6), in three phases. `prepare`: connect, check
//! (preflight, gates), take the lock, start or resume a run record.
//! `drive`: one reader feeds chunks of pending profiles to parallel
//! writers, each committing a chunk in one transaction after the throttle
//! lets it begin. `finish`: record how the run ended, print the summary,
//! write the last metrics file. One `CancellationToken` stops them all:
//! a signal, or a task that failed.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use serde_json::json;
use tokio_postgres::Client;

use super::Context;
use crate::config::{ChunkSize, Names, RunConfig};
use crate::db::{self, preflight, LockGuard, Owner, PooledClient, Session};
use crate::drive::{self, Committer, Drive, Driven, Held};
use crate::exit::Outcome;
use crate::metrics::{self, Exporter, Snapshot};
use crate::plan::Counters;
use crate::progress::{Progress, PROFILES_AND_LINKS};
use crate::report::Summary;
use crate::shutdown::Shutdown;
use crate::sink;
use crate::source::{self, Chunk, FeedEnd, Filter, Order, Outbox, Reader, SourceProfile};
use crate::state::{self, Mode, RunRecord, RunStatus};

/// Runs a live `relink run`: prepare → drive → finish.
///
/// # Errors
/// Fatal errors (exit 1), or [`db::LockHeld`] (exit 4).
pub async fn run(cx: &Context, cfg: &RunConfig, shutdown: Shutdown) -> Result<Outcome> {
    let prepared = prepare(cx, cfg, shutdown).await?;
    let driven = drive(&prepared.shared, &prepared.start, cfg).await;
    finish(prepared, driven, cfg).await
}

/// A run ready to write: connected, checked, locked, its record begun or
/// resumed, its metrics exporting.
struct Prepared {
    shared: Arc<Drive>,
    start: Start,
    exporter: Exporter,
    started: Instant,
}

/// The first phase: connect, check (preflight, gates), lock, then begin or
/// resume the run record.
async fn prepare(cx: &Context, cfg: &RunConfig, shutdown: Shutdown) -> Result<Prepared> {
    let names = &cx.common.names;
    let session = Session::new("run", &cx.common, Some(cfg.timeouts), false);
    let control = db::connect(&cx.database, &session).await?;
    preflight::command_start(&control, &cx.database, names, &session, preflight::RUN).await?;
    // One connection reads while the writers write.
    let held = Held::take(cx, cfg, &session, control, cfg.writers + 1).await?;
    let start = resume(&held.lock, names, cfg).await?;
    let run_id = start.begun.run_id;
    let started = Instant::now();
    let progress = Progress::new(
        "migrating",
        PROFILES_AND_LINKS,
        start.total,
        !cx.common.quiet,
    );
    let last_success = start.last_success;
    let shared = Drive::new(cx, cfg, run_id, held, progress, last_success, shutdown);
    let shared = Arc::new(shared);
    let exporter = shared
        .metrics
        .clone()
        .start(RunFigures {
            shared: shared.clone(),
            scanned: metrics::Scanned::new(start.begun.order, start.begun.start_after.clone()),
            wal_start: start.wal_start,
        })
        .await;
    shared.throttle.show_on(run_id).await;
    Ok(Prepared {
        shared,
        start,
        exporter,
        started,
    })
}

/// Where a run starts: its record, and what was counted before it began.
struct Start {
    begun: Begun,
    /// What reads the profiles to plan, from where the run begins.
    reader: Reader,
    /// Profiles with a legacy value from the checkpoint on: the profiles
    /// scanned of a run that completes (profiles added meanwhile are not
    /// counted).
    with_legacy: u64,
    /// The progress bar's total.
    total: u64,
    /// When the latest completed run finished, before this one.
    last_success: Option<f64>,
    /// Where the server's WAL stood when the run began (SPEC §11).
    wal_start: Option<u64>,
}

/// Creates or upgrades the state schema, begins or resumes the run record
/// and counts what lies ahead, on the lock holder's connection.
async fn resume(lock: &LockGuard, names: &Names, cfg: &RunConfig) -> Result<Start> {
    let mut control = lock.client().await?;
    let wal_start = db::wal::position(&*control).await;
    state::ensure_schema(&mut control, names).await?;
    let begun = begin(&control, names, cfg).await?;
    let after = begun.start_after.as_deref();
    let with_legacy = source::count_with_legacy(&*control, names, begun.order, after, None).await?;
    let filter = if begun.replan {
        Filter::All { ledger: true }
    } else if state::ledger_is_empty(&*control, names).await? {
        // Nothing recorded (a first run, or one after a whole purge): every
        // profile is pending, and while this run holds the lock only it
        // records profiles, each once the reader has passed it, so its
        // pages need not look each profile up in the ledger.
        Filter::All { ledger: false }
    } else {
        Filter::Pending
    };
    let mut reader = Reader::new(names, filter, begun.order, begun.start_after.clone(), 1);
    let total = reader.expect(&*control, with_legacy).await?;
    let last_success = state::last_success(&*control, names, Mode::Run).await?;
    Ok(Start {
        begun,
        reader,
        with_legacy,
        total,
        last_success,
        wal_start,
    })
}

/// The second phase: one reader feeds chunks of pending profiles to the
/// writers, each passing the throttle before it begins one; waits for them
/// all.
async fn drive(shared: &Arc<Drive>, start: &Start, cfg: &RunConfig) -> Driven {
    let (outbox, receiver) = source::outbox(cfg.writers);
    let reader = tokio::spawn(feed(
        shared.clone(),
        start.reader.clone(),
        cfg.limit,
        outbox,
    ));
    let live = Arc::new(Live);
    drive::drive(
        shared,
        &live,
        cfg.writers,
        receiver,
        (reader, "the reader task"),
    )
    .await
}

/// The reader: hands out chunks of the profiles to plan until the end,
/// `--limit` or a stop; `true` at the end of the table.
async fn feed(
    shared: Arc<Drive>,
    reader: Reader,
    limit: Option<u64>,
    outbox: Outbox,
) -> Result<bool> {
    let fed = source::feed(
        reader,
        &shared.pool,
        shared.retry,
        limit,
        &shared.sizer,
        || shared.stopping(),
        outbox,
    )
    .await;
    if fed.is_err() {
        shared.fail();
    }
    fed.map(|(end, _)| end == FeedEnd::End)
}

/// The third phase: records how the run ended, prints the summary, writes
/// the last metrics file, and says what to do next.
async fn finish(prepared: Prepared, driven: Driven, cfg: &RunConfig) -> Result<Outcome> {
    let Prepared {
        shared,
        start,
        mut exporter,
        started,
    } = prepared;
    exporter.stop_periodic().await;
    let status = driven.status(shared.shutdown.requested());
    let ended = record_end(&shared, &start, &driven, status, started).await?;
    let summary = Summary::new(
        "run",
        Some(shared.run_id),
        status,
        ended.scanned,
        ended.counters,
        started,
        shared.throttle.throttled_seconds(),
    )
    .with_wal(ended.wal_bytes);
    exporter
        .finish(status, Snapshot::of_summary(&summary), ended.last_success)
        .await;
    shared.lock.release().await;
    summary.print_to_stdout(cfg.format, false)?;
    let at = Checkpoint {
        order: start.begun.order,
        key: ended.checkpoint,
    };
    outcome(shared.run_id, status, driven.error, &at)
}

/// What the state schema holds once a run's end is recorded.
struct Ended {
    counters: Counters,
    checkpoint: Option<String>,
    /// Profiles with a legacy value in the key range covered.
    scanned: u64,
    /// WAL written since the run began, when the server tells.
    wal_bytes: Option<u64>,
    /// Refreshed: this run's end, if it completed.
    last_success: Option<f64>,
}

/// Records the run's end (status, error, WAL written) and reads back its
/// checkpoint and the profiles it covered.
async fn record_end(
    shared: &Drive,
    start: &Start,
    driven: &Driven,
    status: RunStatus,
    started: Instant,
) -> Result<Ended> {
    let error = driven.error.as_ref();
    let recorded = shared
        .record_end(start.wal_start, status, error, started)
        .await?;
    let names = &shared.names;
    let control = shared.lock.client().await?;
    let counters = shared.counters();
    if status == RunStatus::Completed && counters.profiles_planned > 0 {
        analyze(&control, names).await;
    }
    let last_success = state::last_success(&*control, names, Mode::Run)
        .await
        .unwrap_or(start.last_success);
    // Everything up to the end committed only if nothing failed or stopped
    // (the reader may have reached the end with chunks still in flight).
    let (order, after) = (start.begun.order, start.begun.start_after.as_deref());
    let checkpoint = recorded.checkpoint;
    let scanned = match (status == RunStatus::Completed, &checkpoint) {
        (true, _) => start.with_legacy,
        (false, Some(upto)) => {
            source::count_with_legacy(&*control, names, order, after, Some(upto)).await?
        }
        // Stopped before any chunk committed: nothing was covered.
        (false, None) => 0,
    };
    Ok(Ended {
        counters,
        checkpoint,
        scanned,
        wal_bytes: recorded.wal_bytes,
        last_success,
    })
}

/// Fresh statistics on relink's own tables, so later reruns, verify and
/// purge get good plans without waiting for autovacuum (not after a rerun
/// that changed nothing: they are as fresh as they were).
async fn analyze(control: &Client, names: &Names) {
    if let Err(e) = control
        .batch_execute(&names.sql("ANALYZE {state}.ledger_rows, {state}.reject_rows"))
        .await
    {
        tracing::warn!("cannot analyze relink's state tables: {e}");
    }
}

/// Where a run stands: its saved checkpoint, in its order's keys.
struct Checkpoint {
    order: Order,
    key: Option<String>,
}

/// The command's outcome, and what the operator does next.
fn outcome(
    run_id: i64,
    status: RunStatus,
    error: Option<anyhow::Error>,
    at: &Checkpoint,
) -> Result<Outcome> {
    let after = at
        .key
        .as_ref()
        .map(|c| format!("after {} {c}", at.order.noun()));
    if let Some(err) = error {
        let at = after.map_or_else(
            || "no chunk committed yet".to_owned(),
            |after| format!("checkpoint {after}"),
        );
        return Err(err.context(format!(
            "run {run_id} failed ({at}); rerun `relink run` to resume"
        )));
    }
    match status {
        RunStatus::Interrupted => {
            tracing::warn!(
                "run {run_id} interrupted; checkpoint saved{}; rerun `relink run` to resume",
                after.map(|a| format!(" {a}")).unwrap_or_default()
            );
            Ok(Outcome::Interrupted)
        }
        RunStatus::Partial => {
            tracing::info!("run {run_id} stopped at --limit; the next `relink run` continues it");
            Ok(Outcome::Done)
        }
        _ => Ok(Outcome::Done),
    }
}

/// A run record to work on.
struct Begun {
    run_id: i64,
    /// The checkpoint to resume after.
    start_after: Option<String>,
    /// Plan every profile, not only the pending ones (`--replan`).
    replan: bool,
    /// The order its profiles are read and written in.
    order: Order,
}

/// Starts a run record, or takes over the unfinished one (unless
/// `--restart` or `--replan`).
async fn begin(control: &Client, names: &Names, cfg: &RunConfig) -> Result<Begun> {
    let owner = Owner::current();
    if cfg.restart || cfg.replan {
        let n = state::abandon_unfinished(control, names, Mode::Run).await?;
        if n > 0 {
            tracing::info!("abandoned {n} unfinished run(s); rescanning from the start");
        }
    } else if let Some(run) = state::resumable(control, names, Mode::Run).await? {
        return take_over(control, names, run, &owner).await;
    }
    let id = state::start_run(control, names, Mode::Run, &run_options(cfg), &owner).await?;
    tracing::info!(
        "started {} {id}",
        if cfg.replan { "replan run" } else { "run" }
    );
    Ok(Begun {
        run_id: id,
        start_after: None,
        replan: cfg.replan,
        order: Order::User,
    })
}

/// Resumes an unfinished run record, in its own order and mode.
async fn take_over(
    control: &Client,
    names: &Names,
    run: RunRecord,
    owner: &Owner,
) -> Result<Begun> {
    state::resume_run(control, names, run.id, owner).await?;
    let done = Counters::from_flat(&run.counters).profiles_planned;
    let replan = run.options["replan"].as_bool().unwrap_or(false);
    let order = Order::of_run(&run.options);
    tracing::info!(
        "resuming {} {} after {} {}, {done} profiles done{}",
        if replan { "replan run" } else { "run" },
        run.id,
        order.noun(),
        run.checkpoint
            .as_deref()
            .unwrap_or("(none: from the start)"),
        if order == Order::Profile {
            " (begun by an earlier release: finishing in profile id order)"
        } else {
            ""
        }
    );
    Ok(Begun {
        run_id: run.id,
        start_after: run.checkpoint,
        replan,
        order,
    })
}

/// A new run's options, as its record keeps them.
fn run_options(cfg: &RunConfig) -> serde_json::Value {
    json!({
        "chunk_size": match cfg.chunk_size {
            ChunkSize::Fixed(n) => json!(n),
            ChunkSize::Auto { target } => json!(format!("auto ({} ms)", target.as_millis())),
        },
        "limit": cfg.limit, "max_rate": cfg.max_rate,
        "pause_ms": cfg.pause.map(|d| d.as_millis()), "writers": cfg.writers,
        "restart": cfg.restart, "replan": cfg.replan,
        "order": Order::User.as_str(),
    })
}

/// A live run's chunks: pages of profiles, planned and written as they
/// are now.
struct Live;

impl drive::Item for SourceProfile {
    fn name(&self) -> String {
        format!("profile {}", self.id)
    }
}

impl Committer for Live {
    type Item = SourceProfile;
    type Done = Counters;
    const WHAT: &'static str = "writing a chunk";

    async fn commit(
        &self,
        drive: &Drive,
        client: &mut PooledClient,
        chunk: &Chunk,
        retry: bool,
    ) -> Result<Counters> {
        sink::commit_chunk(
            client,
            &drive.names,
            drive.run_id,
            drive.waits,
            &chunk.items,
            retry,
            || drive.checkpoint_for(chunk.seq),
        )
        .await
    }

    fn settle(&self, counters: Counters) -> Result<Counters> {
        Ok(counters)
    }
}

/// A run's figures for its metrics file (SPEC §14), gathered before each
/// periodic write: the counters so far and the profiles covered up to the
/// checkpoint (counted on the lock holder's connection, which is otherwise
/// idle during the run).
struct RunFigures {
    shared: Arc<Drive>,
    scanned: metrics::Scanned,
    wal_start: Option<u64>,
}

impl metrics::Gather for RunFigures {
    async fn gather(&mut self) -> Snapshot {
        let shared = &self.shared;
        let mut wal_bytes = None;
        if let Ok(control) = shared.lock.client().await {
            self.scanned
                .refresh(&*control, &shared.names, shared.run_id)
                .await;
            wal_bytes = db::wal::since(&*control, self.wal_start).await;
        }
        let counters = shared.counters();
        self.scanned
            .snapshot(counters, shared.throttle.throttled_seconds(), wal_bytes)
    }
}
