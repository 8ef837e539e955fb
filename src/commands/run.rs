//! `relink run` (SPEC §6): takes the lock, starts or resumes a run record,
//! then one reader feeds chunks of pending profiles to parallel writers,
//! each committing a chunk in one transaction after the throttle lets it
//! begin; finally records how the run ended and prints the summary.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::db::Pool;
use anyhow::{anyhow, Result};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_postgres::Client;

use crate::checkpoint::Watermark;
use crate::config::{Common, Names, RunConfig};
use crate::db::{self, preflight, Attempted, LockGuard, Owner, Retry, Session};
use crate::exit::Outcome;
use crate::lock_phase::LockWaits;
use crate::metrics::{self, Metrics, Snapshot};
use crate::plan::Counters;
use crate::progress::{Progress, PROFILES_AND_LINKS};
use crate::report::Summary;
use crate::shutdown::Shutdown;
use crate::sink;
use crate::sizing::{ChunkSize, Sizer};
use crate::source::{self, Chunk, FeedEnd, Filter, Order, Reader};
use crate::state::{self, Mode, RunStatus};
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
    failed: AtomicBool,
    shutdown: Shutdown,
    metrics: Metrics,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.failed.load(Ordering::SeqCst) || self.shutdown.requested() || self.lock.lost()
    }
}

/// Runs a live `relink run`.
///
/// # Errors
/// Fatal errors (exit 1), or [`db::LockHeld`] (exit 4).
pub async fn run(common: &Common, cfg: &RunConfig, shutdown: Shutdown) -> Result<Outcome> {
    let names = &common.names;
    let session = Session::new("run", common, Some(cfg.timeouts), false);
    let control = db::connect(&common.database, &session).await?;
    preflight::command_start(&control, common, &session, preflight::RUN).await?;
    let waits = LockWaits::of_server(&control, cfg.timeouts.lock).await?;
    // The gates are checked once before anything is written: relink does
    // not start blind (a role that cannot read replica lag, a --replica it
    // cannot reach, a failing --throttle-query).
    let watch = Watch::open(&common.database, &session, names, cfg.watched.clone()).await?;
    let lock = LockGuard::acquire(&common.database, &session, names, control).await?;
    // Where the server's WAL stood when the run began (SPEC §11).
    let wal_start = db::wal::position(&*lock.client().await?).await;
    let (run_id, start_after, replan, order, with_legacy, total, last_success) = {
        let mut control = lock.client().await?;
        state::ensure_schema(&mut control, names).await?;
        let Begun {
            run_id,
            start_after,
            replan,
            order,
        } = begin(&control, names, cfg).await?;
        // Counted once: the progress bar's total, and the profiles scanned
        // of a run that completes (profiles added meanwhile are not counted).
        let with_legacy =
            source::count_with_legacy(&*control, names, order, start_after.as_deref(), None)
                .await?;
        let total = if replan || start_after.is_some() {
            with_legacy
        } else {
            pending_estimate(&control, names, with_legacy).await?
        };
        let last_success = state::last_success(&*control, names, Mode::Run).await?;
        (
            run_id,
            start_after,
            replan,
            order,
            with_legacy,
            total,
            last_success,
        )
    };
    let metrics = Metrics::new(cfg.metrics.as_ref(), Mode::Run, run_id, last_success);

    // One connection reads while the writers write.
    let pool = db::pool(&common.database, &session, cfg.writers + 1)?;
    let started = Instant::now();
    let shared = Arc::new(Shared {
        names: names.clone(),
        run_id,
        retry: Retry::new(cfg.timeouts.attempts),
        waits,
        pool,
        lock,
        progress: Progress::new("migrating", PROFILES_AND_LINKS, total, !common.quiet),
        throttle: Throttle::new(
            Limits {
                max_rate: cfg.max_rate,
                pause: cfg.pause,
            },
            Some(watch),
            shutdown.clone(),
        ),
        sizer: Sizer::new(cfg.chunk_size),
        watermark: Mutex::new(Watermark::default()),
        counters: Mutex::new(Counters::default()),
        failed: AtomicBool::new(false),
        shutdown,
        metrics: metrics.clone(),
    });
    let exporter = metrics
        .start(RunFigures {
            shared: shared.clone(),
            scanned: metrics::Scanned::new(order, start_after.clone()),
            wal_start,
        })
        .await;

    shared.throttle.show_on(run_id).await;

    let (outbox, receiver) = source::outbox(cfg.writers);
    let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
    let reader = {
        let shared = shared.clone();
        let filter = if replan {
            Filter::All { ledger: true }
        } else {
            Filter::Pending
        };
        let reader = Reader::new(names, filter, order, start_after.clone(), 1);
        let limit = cfg.limit;
        tokio::spawn(async move {
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
                shared.failed.store(true, Ordering::SeqCst);
            }
            fed
        })
    };
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
        Ok(Ok((end, _))) => end == FeedEnd::End,
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

    let stopped = shared.shutdown.requested();
    let status = if error.is_some() {
        RunStatus::Failed
    } else if stopped {
        RunStatus::Interrupted
    } else if reached_end {
        RunStatus::Completed
    } else {
        RunStatus::Partial
    };
    let control = shared.lock.client().await?;
    let message = error.as_ref().map(|e| format!("{e:#}"));
    let wal_bytes = db::wal::since(&*control, wal_start).await;
    if let Some(bytes) = wal_bytes {
        // Summed over the run's invocations, like its counters: what a
        // forecast reads back (bytes per link of the last completed run).
        state::record_chunk(
            &*control,
            names,
            run_id,
            None,
            &json!({ "wal_bytes": bytes }),
        )
        .await?;
    }
    state::finish_run(&control, names, run_id, status, message.as_deref()).await?;
    let counters = shared
        .counters
        .lock()
        .map(|c| c.clone())
        .unwrap_or_default();
    if status == RunStatus::Completed && counters.profiles_planned > 0 {
        // Fresh statistics on relink's own tables, so later reruns, verify
        // and purge get good plans without waiting for autovacuum (not after
        // a rerun that changed nothing: they are as fresh as they were).
        if let Err(e) = control
            .batch_execute(&names.sql("ANALYZE {state}.ledger, {state}.rejects"))
            .await
        {
            tracing::warn!("cannot analyze relink's state tables: {e}");
        }
    }

    let checkpoint = state::load_run(&*control, names, run_id)
        .await?
        .and_then(|r| r.checkpoint);
    let last_success = state::last_success(&*control, names, Mode::Run)
        .await
        .unwrap_or(last_success);
    // Everything up to the end committed only if nothing failed or stopped
    // (the reader may have reached the end with chunks still in flight).
    let all_committed = reached_end && error.is_none() && !stopped;
    let scanned = match (all_committed, &checkpoint) {
        (true, _) => with_legacy,
        (false, Some(upto)) => {
            source::count_with_legacy(&*control, names, order, start_after.as_deref(), Some(upto))
                .await?
        }
        // Stopped before any chunk committed: nothing was covered.
        (false, None) => 0,
    };
    drop(control);
    let summary = Summary::new(
        "run",
        Some(run_id),
        status,
        scanned,
        counters,
        started,
        shared.throttle.throttled_seconds(),
    )
    .with_wal(wal_bytes);
    exporter
        .finish(status, Snapshot::of_summary(&summary), last_success)
        .await;
    summary.print_to_stdout(cfg.format, false)?;

    if let Some(err) = error {
        let at = checkpoint.map_or_else(
            || "no chunk committed yet".to_owned(),
            |c| format!("checkpoint after {} {c}", order.noun()),
        );
        return Err(err.context(format!(
            "run {run_id} failed ({at}); rerun `relink run` to resume"
        )));
    }
    match status {
        RunStatus::Interrupted => {
            tracing::warn!(
                "run {run_id} interrupted; checkpoint saved{}; rerun `relink run` to resume",
                checkpoint
                    .map(|c| format!(" after {} {c}", order.noun()))
                    .unwrap_or_default()
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
        state::resume_run(control, names, run.id, &owner).await?;
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
        return Ok(Begun {
            run_id: run.id,
            start_after: run.checkpoint,
            replan,
            order,
        });
    }
    let options = json!({
        "chunk_size": match cfg.chunk_size {
            ChunkSize::Fixed(n) => json!(n),
            ChunkSize::Auto { target } => json!(format!("auto ({} ms)", target.as_millis())),
        },
        "limit": cfg.limit, "max_rate": cfg.max_rate,
        "pause_ms": cfg.pause.map(|d| d.as_millis()), "writers": cfg.writers,
        "restart": cfg.restart, "replan": cfg.replan,
        "order": Order::User.as_str(),
    });
    let id = state::start_run(control, names, Mode::Run, &options, &owner).await?;
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
        if let Ok(mut wm) = shared.watermark.lock() {
            wm.begin(chunk.seq, &chunk.last_key);
        }
        let committed = shared
            .retry
            .run(
                "writing a chunk",
                || shared.stopping(),
                |attempt| {
                    let (shared, chunk) = (&shared, &chunk);
                    async move {
                        let mut client = db::checkout(&shared.pool).await?;
                        let began = Instant::now();
                        let counters = sink::commit_chunk(
                            &mut client,
                            &shared.names,
                            shared.run_id,
                            shared.waits,
                            &chunk.profiles,
                            attempt > 0,
                            || {
                                shared
                                    .watermark
                                    .lock()
                                    .ok()
                                    .and_then(|wm| wm.checkpoint_for(chunk.seq))
                            },
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
                    }
                },
            )
            .await;
        let counters = match committed {
            Ok(Attempted::Done(counters)) => counters,
            // Rolled back while stopping: stays after the checkpoint.
            Ok(Attempted::Stopped) => continue,
            Err(err) => {
                shared.failed.store(true, Ordering::SeqCst);
                return Err(err.context(format!(
                    "chunk starting at profile {} rolled back",
                    first.id
                )));
            }
        };
        if let Ok(mut wm) = shared.watermark.lock() {
            wm.commit(chunk.seq);
        }
        shared
            .progress
            .advance(chunk.profiles.len() as u64, counters.links_created);
        shared.throttle.committed(counters.links_created);
        if let Ok(mut total) = shared.counters.lock() {
            total.merge(&counters);
        }
        after_chunk = true;
    }
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
        let counters = shared
            .counters
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default();
        self.scanned
            .snapshot(counters, shared.throttle.throttled_seconds(), wal_bytes)
    }
}
