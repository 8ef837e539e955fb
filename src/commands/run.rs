//! `relink run` (SPEC §6), in three phases. `prepare`: connect, check
//! (preflight, gates), take the lock, start or resume a run record.
//! `drive`: one reader feeds chunks of pending profiles to parallel
//! writers, each committing a chunk in one transaction after the throttle
//! lets it begin. `finish`: record how the run ended, print the summary,
//! write the last metrics file. One `CancellationToken` stops them all:
//! a signal, or a task that failed.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, Result};
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use super::Context;
use crate::checkpoint::Watermark;
use crate::config::{ChunkSize, Names, RunConfig};
use crate::db::{self, preflight, Attempted, LockGuard, Owner, Pool, Retry, Session};
use crate::exit::Outcome;
use crate::lock_phase::LockWaits;
use crate::metrics::{self, Exporter, Metrics, Snapshot};
use crate::plan::Counters;
use crate::progress::{Progress, PROFILES_AND_LINKS};
use crate::report::Summary;
use crate::shutdown::Shutdown;
use crate::sink;
use crate::sizing::Sizer;
use crate::source::{self, Chunk, FeedEnd, Filter, Order, Outbox, Reader};
use crate::state::{self, Mode, RunRecord, RunStatus};
use crate::throttle::{Limits, Throttle, Watch};

/// State shared by the reader and the writers of one run.
struct Shared {
    names: Names,
    run_id: i64,
    retry: Retry,
    /// How long a chunk's lock phase waits (relink yields).
    waits: LockWaits,
    pool: Pool,
    lock: LockGuard,
    progress: Progress,
    throttle: Throttle,
    sizer: Sizer,
    watermark: Mutex<Watermark>,
    counters: Mutex<Counters>,
    /// Cancelled by a signal, or by the reader or a writer failing: every
    /// task stops after its chunk in flight.
    stop: CancellationToken,
    shutdown: Shutdown,
    metrics: Metrics,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stop.is_cancelled() || self.lock.lost()
    }

    /// Stops every task of the run (a task failed).
    fn fail(&self) {
        self.stop.cancel();
    }
}

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
    shared: Arc<Shared>,
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
    let waits = LockWaits::of_server(&control, cfg.timeouts.lock).await?;
    // The gates are checked once before anything is written: relink does
    // not start blind (a role that cannot read replica lag, a --replica it
    // cannot reach, a failing --throttle-query).
    let watch = Watch::open(&cx.database, &cx.replicas, &session, names, &cfg.gates).await?;
    let lock = LockGuard::acquire(&cx.database, &session, names, control).await?;
    let start = resume(&lock, names, cfg).await?;
    let run_id = start.begun.run_id;
    let metrics = Metrics::new(
        cfg.metrics.as_ref(),
        &cx.database.label(),
        Mode::Run,
        run_id,
        start.last_success,
    );
    // One connection reads while the writers write.
    let pool = db::pool(&cx.database, &session, cfg.writers + 1)?;
    let started = Instant::now();
    let stop = shutdown.child();
    let shared = Arc::new(Shared {
        names: names.clone(),
        run_id,
        retry: Retry::new(cfg.timeouts.attempts),
        waits,
        pool,
        lock,
        progress: Progress::new(
            "migrating",
            PROFILES_AND_LINKS,
            start.total,
            !cx.common.quiet,
        ),
        throttle: Throttle::new(throttle_limits(cfg), Some(watch), stop.clone()),
        sizer: Sizer::new(cfg.chunk_size),
        watermark: Mutex::new(Watermark::default()),
        counters: Mutex::new(Counters::default()),
        stop,
        shutdown,
        metrics: metrics.clone(),
    });
    let exporter = metrics
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

fn throttle_limits(cfg: &RunConfig) -> Limits {
    Limits {
        max_rate: cfg.max_rate,
        pause: cfg.pause,
    }
}

/// Where a run starts: its record, and what was counted before it began.
struct Start {
    begun: Begun,
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
    let total = if begun.replan || after.is_some() {
        with_legacy
    } else {
        pending_estimate(&control, names, with_legacy).await?
    };
    let last_success = state::last_success(&*control, names, Mode::Run).await?;
    Ok(Start {
        begun,
        with_legacy,
        total,
        last_success,
        wal_start,
    })
}

/// How the writing phase ended.
struct Driven {
    /// The first error, of a writer, the reader or the lock.
    error: Option<anyhow::Error>,
    /// The reader handed out the last chunk (not stopped by `--limit`).
    reached_end: bool,
}

impl Driven {
    /// How the run ended; `signalled`: a signal asked it to stop.
    fn status(&self, signalled: bool) -> RunStatus {
        if self.error.is_some() {
            RunStatus::Failed
        } else if signalled {
            RunStatus::Interrupted
        } else if self.reached_end {
            RunStatus::Completed
        } else {
            RunStatus::Partial
        }
    }
}

/// The second phase: one reader feeds chunks to the writers, each passing
/// the throttle before it begins one; waits for them all.
async fn drive(shared: &Arc<Shared>, start: &Start, cfg: &RunConfig) -> Driven {
    let (outbox, receiver) = source::outbox(cfg.writers);
    let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
    let filter = if start.begun.replan {
        Filter::All { ledger: true }
    } else {
        Filter::Pending
    };
    let begun = &start.begun;
    let reader = Reader::new(
        &shared.names,
        filter,
        begun.order,
        begun.start_after.clone(),
        1,
    );
    let reader = tokio::spawn(feed(shared.clone(), reader, cfg.limit, outbox));
    let writers: Vec<_> = (0..cfg.writers)
        .map(|_| tokio::spawn(write_chunks(shared.clone(), receiver.clone())))
        .collect();

    let mut error: Option<anyhow::Error> = None;
    for writer in writers {
        match writer.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => error = error.or(Some(e)),
            Err(e) => error = error.or(Some(anyhow!("a writer task failed: {e}"))),
        }
    }
    let reached_end = match reader.await {
        Ok(Ok(end)) => end == FeedEnd::End,
        Ok(Err(e)) => {
            error = error.or(Some(e));
            false
        }
        Err(e) => {
            error = error.or(Some(anyhow!("the reader task failed: {e}")));
            false
        }
    };
    if shared.lock.lost() {
        error = error.or(Some(anyhow!(
            "lost the advisory lock (its connections dropped) and could not take it again"
        )));
    }
    shared.progress.finish();
    Driven { error, reached_end }
}

/// The reader: hands out chunks of the profiles to plan until the end,
/// `--limit` or a stop.
async fn feed(
    shared: Arc<Shared>,
    reader: Reader,
    limit: Option<u64>,
    outbox: Outbox,
) -> Result<FeedEnd> {
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
    fed.map(|(end, _)| end)
}

/// The third phase: records how the run ended, prints the summary, writes
/// the last metrics file, and says what to do next.
async fn finish(prepared: Prepared, driven: Driven, cfg: &RunConfig) -> Result<Outcome> {
    let Prepared {
        shared,
        start,
        exporter,
        started,
    } = prepared;
    let status = driven.status(shared.shutdown.requested());
    let ended = record_end(&shared, &start, &driven, status).await?;
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
    shared: &Shared,
    start: &Start,
    driven: &Driven,
    status: RunStatus,
) -> Result<Ended> {
    let (names, run_id) = (&shared.names, shared.run_id);
    let control = shared.lock.client().await?;
    let message = driven.error.as_ref().map(|e| format!("{e:#}"));
    let wal_bytes = db::wal::since(&*control, start.wal_start).await;
    if let Some(bytes) = wal_bytes {
        // Summed over the run's invocations, like its counters: what a
        // forecast reads back (bytes per link of the last completed run).
        let figures = json!({ "wal_bytes": bytes });
        state::record_chunk(&*control, names, run_id, None, &figures).await?;
    }
    state::finish_run(&control, names, run_id, status, message.as_deref()).await?;
    let counters = shared.counters.lock().clone();
    if status == RunStatus::Completed && counters.profiles_planned > 0 {
        analyze(&control, names).await;
    }
    let checkpoint = state::load_run(&*control, names, run_id)
        .await?
        .and_then(|r| r.checkpoint);
    let last_success = state::last_success(&*control, names, Mode::Run)
        .await
        .unwrap_or(start.last_success);
    // Everything up to the end committed only if nothing failed or stopped
    // (the reader may have reached the end with chunks still in flight).
    let (order, after) = (start.begun.order, start.begun.start_after.as_deref());
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
        wal_bytes,
        last_success,
    })
}

/// Fresh statistics on relink's own tables, so later reruns, verify and
/// purge get good plans without waiting for autovacuum (not after a rerun
/// that changed nothing: they are as fresh as they were).
async fn analyze(control: &Client, names: &Names) {
    if let Err(e) = control
        .batch_execute(&names.sql("ANALYZE {state}.ledger, {state}.rejects"))
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

/// A writer: waits for the throttle, takes the next chunk and commits it in
/// one transaction, retried as a unit.
async fn write_chunks(
    shared: Arc<Shared>,
    receiver: Arc<tokio::sync::Mutex<mpsc::Receiver<Chunk>>>,
) -> Result<()> {
    let mut after_chunk = false;
    loop {
        let go = !shared.stopping()
            && shared
                .throttle
                .before_chunk(after_chunk, &shared.progress)
                .await;
        let chunk = receiver.lock().await.recv().await;
        let Some(chunk) = chunk else { return Ok(()) };
        if !go || shared.stopping() {
            // Not begun: it stays uncommitted and the checkpoint stays before
            // it. Keep draining so the reader is never left blocked.
            continue;
        }
        let Some(first) = chunk.profiles.first() else {
            continue;
        };
        shared.watermark.lock().begin(chunk.seq, &chunk.last_key);
        let counters = match write_chunk(&shared, &chunk).await {
            Ok(Attempted::Done(counters)) => counters,
            // Rolled back while stopping: stays after the checkpoint.
            Ok(Attempted::Stopped) => continue,
            Err(err) => {
                shared.fail();
                return Err(err.context(format!(
                    "chunk starting at profile {} rolled back",
                    first.id
                )));
            }
        };
        shared.watermark.lock().commit(chunk.seq);
        shared
            .progress
            .advance(chunk.profiles.len() as u64, counters.links_created);
        shared.throttle.committed(counters.links_created);
        shared.counters.lock().merge(&counters);
        after_chunk = true;
    }
}

/// Commits one chunk in one transaction, retried as a unit; feeds its
/// duration to the metrics and the chunk sizer.
async fn write_chunk(shared: &Shared, chunk: &Chunk) -> Result<Attempted<Counters>> {
    shared
        .retry
        .run(
            "writing a chunk",
            || shared.stopping(),
            |attempt| async move {
                let mut client = db::checkout(&shared.pool).await?;
                let began = Instant::now();
                let counters = sink::commit_chunk(
                    &mut client,
                    &shared.names,
                    shared.run_id,
                    shared.waits,
                    &chunk.profiles,
                    attempt > 0,
                    || shared.watermark.lock().checkpoint_for(chunk.seq),
                )
                .await
                .inspect_err(|e| {
                    if db::is_timeout(e) {
                        shared.sizer.timed_out();
                    }
                })?;
                let took = began.elapsed();
                shared.metrics.observe_chunk(took);
                shared.sizer.observed(chunk.profiles.len(), took);
                Ok(counters)
            },
        )
        .await
}

/// An estimate of the profiles a run from the start will plan, for the
/// progress bar: the `with_legacy` profiles with a legacy value, less those
/// the ledger has (from the planner's row estimate, to stay cheap).
async fn pending_estimate(client: &Client, names: &Names, with_legacy: u64) -> Result<u64> {
    let ledger: i64 = client
        .query_one(
            "SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = to_regclass($1)",
            &[&format!("{}.ledger", names.state)],
        )
        .await
        .map(|r| r.get(0))
        .unwrap_or(0);
    let ledger = u64::try_from(ledger).unwrap_or(0);
    Ok(with_legacy.saturating_sub(ledger).max(1))
}

/// A run's figures for its metrics file (SPEC §14), gathered before each
/// periodic write: the counters so far and the profiles covered up to the
/// checkpoint (counted on the lock holder's connection, which is otherwise
/// idle during the run).
struct RunFigures {
    shared: Arc<Shared>,
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
        let counters = shared.counters.lock().clone();
        self.scanned
            .snapshot(counters, shared.throttle.throttled_seconds(), wal_bytes)
    }
}
