//! The writing phase shared by a live `relink run` and `relink run --plan`
//! (SPEC §6, §15): a reader feeds numbered chunks to parallel writers;
//! each writer passes the throttle, commits a chunk in one transaction
//! (retried as a unit, its duration fed to the metrics and the chunk
//! sizer), then advances the checkpoint, the progress and the counters.
//! What differs between the two is a [`Committer`]: where chunks come from
//! (pages of profiles, records of a plan) and how one is committed.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, Result};
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::Watermark;
use crate::config::{Names, RunConfig};
use crate::context::Context;
use crate::db::{self, Attempted, LockGuard, Pool, PooledClient, Retry, Session};
use crate::inflight::Chunk;
use crate::lock_phase::LockWaits;
use crate::metrics::Metrics;
use crate::plan::Counters;
use crate::progress::Progress;
use crate::shutdown::Shutdown;
use crate::sizing::Sizer;
use crate::state::{self, Mode, RunStatus};
use crate::throttle::{Limits, Throttle, Watch};

/// State shared by the reader and the writers of one run.
pub struct Drive {
    pub names: Names,
    pub run_id: i64,
    pub retry: Retry,
    /// How long a chunk's lock phase waits (relink yields).
    pub waits: LockWaits,
    pub pool: Pool,
    pub lock: LockGuard,
    pub progress: Progress,
    pub throttle: Throttle,
    pub sizer: Sizer,
    watermark: Mutex<Watermark>,
    pub counters: Mutex<Counters>,
    /// Profiles (or plan records) of the committed chunks.
    pub scanned: AtomicU64,
    /// Cancelled by a signal, or by the reader or a writer failing: every
    /// task stops after its chunk in flight.
    stop: CancellationToken,
    pub shutdown: Shutdown,
    pub metrics: Metrics,
}

/// What a run holds before it drives: the lock, the writers' pool, the
/// gates to watch and the server's lock waits.
pub struct Held {
    pub lock: LockGuard,
    pub pool: Pool,
    pub waits: LockWaits,
    pub watch: Watch,
}

impl Held {
    /// With `control` connected and checked: checks the gates once before
    /// anything is written (relink does not start blind: a role that
    /// cannot read replica lag, a --replica it cannot reach, a failing
    /// --throttle-query), then takes the lock on `control`; the writers'
    /// pool has `pool_size` connections.
    ///
    /// # Errors
    /// A gate that cannot be read, a database error, or [`db::LockHeld`].
    pub async fn take(
        cx: &Context,
        cfg: &RunConfig,
        session: &Session,
        control: Client,
        pool_size: usize,
    ) -> Result<Self> {
        let names = &cx.common.names;
        let waits = LockWaits::of_server(&control, cfg.timeouts.lock).await?;
        let watch = Watch::open(&cx.database, &cx.replicas, session, names, &cfg.gates).await?;
        let lock = LockGuard::acquire(&cx.database, session, names, control).await?;
        let pool = db::pool(&cx.database, session, pool_size)?;
        Ok(Self {
            lock,
            pool,
            waits,
            watch,
        })
    }
}

/// What the run record holds once the run's end is recorded.
pub struct Recorded {
    /// WAL written since the run began, when the server tells.
    pub wal_bytes: Option<u64>,
    /// The run's saved checkpoint.
    pub checkpoint: Option<String>,
}

impl Drive {
    /// The shared state of run `run_id`, stopped by `shutdown`; its
    /// metrics know `last_success` (when the latest completed run ended).
    pub fn new(
        cx: &Context,
        cfg: &RunConfig,
        run_id: i64,
        held: Held,
        progress: Progress,
        last_success: Option<f64>,
        shutdown: Shutdown,
    ) -> Self {
        let label = cx.database.label();
        let metrics = Metrics::new(
            cfg.metrics.as_ref(),
            &label,
            Mode::Run,
            run_id,
            last_success,
        );
        let stop = shutdown.child();
        let limits = Limits {
            max_rate: cfg.max_rate,
            pause: cfg.pause,
        };
        Self {
            names: cx.common.names.clone(),
            run_id,
            retry: Retry::new(cfg.timeouts.attempts),
            waits: held.waits,
            pool: held.pool,
            lock: held.lock,
            progress,
            throttle: Throttle::new(limits, Some(held.watch), stop.clone()),
            sizer: Sizer::new(cfg.chunk_size),
            watermark: Mutex::new(Watermark::default()),
            counters: Mutex::new(Counters::default()),
            scanned: AtomicU64::new(0),
            stop,
            shutdown,
            metrics,
        }
    }

    /// The run is stopping: a signal, a failed task, or the lock lost.
    pub fn stopping(&self) -> bool {
        self.stop.is_cancelled() || self.lock.lost()
    }

    /// Stops every task of the run (a task failed).
    pub fn fail(&self) {
        self.stop.cancel();
    }

    /// The checkpoint chunk `seq` records: the last key below which every
    /// chunk, this one included, committed.
    pub fn checkpoint_for(&self, seq: u64) -> Option<String> {
        self.watermark.lock().checkpoint_for(seq)
    }

    /// The counters so far.
    pub fn counters(&self) -> Counters {
        self.counters.lock().clone()
    }

    /// Profiles (or plan records) of the committed chunks so far.
    pub fn scanned(&self) -> u64 {
        self.scanned.load(Ordering::SeqCst)
    }

    /// Records the run's end, on the lock holder's connection: its figures
    /// (elapsed time, WAL written since `wal_start`), `status` and `error`.
    ///
    /// # Errors
    /// On a database error.
    pub async fn record_end(
        &self,
        wal_start: Option<u64>,
        status: RunStatus,
        error: Option<&anyhow::Error>,
        started: Instant,
    ) -> Result<Recorded> {
        let (names, run_id) = (&self.names, self.run_id);
        let control = self.lock.client().await?;
        let wal_bytes = db::wal::since(&*control, wal_start).await;
        // Summed over the run's invocations, like its counters: what a
        // forecast reads back (links/s and bytes per link of the last
        // completed run, SPEC §15).
        let mut figures = json!({ "elapsed_ms": started.elapsed().as_millis() });
        if let Some(bytes) = wal_bytes {
            figures["wal_bytes"] = json!(bytes);
        }
        state::record_chunk(&*control, names, run_id, None, &figures).await?;
        let message = error.map(|e| format!("{e:#}"));
        state::finish_run(&control, names, run_id, status, message.as_deref()).await?;
        let checkpoint = state::load_run(&*control, names, run_id)
            .await?
            .and_then(|r| r.checkpoint);
        Ok(Recorded {
            wal_bytes,
            checkpoint,
        })
    }
}

/// What a chunk handed to the writers holds: a profile, a plan record.
pub trait Item: Send + Sync + 'static {
    /// Names it in an error ("profile 12").
    fn name(&self) -> String;
}

/// How a chunk is committed, and what follows.
pub trait Committer: Send + Sync + 'static {
    type Item: Item;
    type Done: Send;
    /// The unit retried, for the retry's messages.
    const WHAT: &'static str;

    /// Commits `chunk` in one transaction on `client`; `retry`: an earlier
    /// attempt failed.
    fn commit<'a>(
        &'a self,
        drive: &'a Drive,
        client: &'a mut PooledClient,
        chunk: &'a Chunk<Self::Item>,
        retry: bool,
    ) -> impl Future<Output = Result<Self::Done>> + Send + 'a;

    /// Once committed: reports what needs reporting; the chunk's counters.
    ///
    /// # Errors
    /// When the report cannot be written.
    fn settle(&self, done: Self::Done) -> Result<Counters>;
}

/// How the writing phase ended.
pub struct Driven {
    /// The first error, of a writer, the reader or the lock.
    pub error: Option<anyhow::Error>,
    /// The reader handed out the last chunk (not stopped by `--limit`).
    pub reached_end: bool,
}

impl Driven {
    /// How the run ended; `signalled`: a signal asked it to stop.
    pub fn status(&self, signalled: bool) -> RunStatus {
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

/// A reader task: `Ok(true)` when it handed out the last chunk.
pub type Feeding = JoinHandle<Result<bool>>;

/// Drives `writers` writers taking chunks from `chunks` (fed by `reader`,
/// named `reader_name` should it panic) until the reader is done and every
/// chunk is taken; waits for them all.
pub async fn drive<C: Committer>(
    drive: &Arc<Drive>,
    committer: &Arc<C>,
    writers: usize,
    chunks: mpsc::Receiver<Chunk<C::Item>>,
    reader: (Feeding, &str),
) -> Driven {
    let receiver = Arc::new(tokio::sync::Mutex::new(chunks));
    let writers: Vec<_> = (0..writers)
        .map(|_| {
            let (drive, committer) = (drive.clone(), committer.clone());
            tokio::spawn(write_chunks(drive, committer, receiver.clone()))
        })
        .collect();
    let mut error: Option<anyhow::Error> = None;
    for writer in writers {
        match writer.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => error = error.or(Some(e)),
            Err(e) => error = error.or(Some(anyhow!("a writer task failed: {e}"))),
        }
    }
    let (reader, reader_name) = reader;
    let reached_end = match reader.await {
        Ok(Ok(end)) => end,
        Ok(Err(e)) => {
            error = error.or(Some(e));
            false
        }
        Err(e) => {
            error = error.or(Some(anyhow!("{reader_name} failed: {e}")));
            false
        }
    };
    if drive.lock.lost() {
        error = error.or(Some(anyhow!(
            "lost the advisory lock (its connections dropped) and could not take it again"
        )));
    }
    drive.progress.finish();
    Driven { error, reached_end }
}

/// A writer: waits for the throttle, takes the next chunk and commits it in
/// one transaction, retried as a unit.
async fn write_chunks<C: Committer>(
    drive: Arc<Drive>,
    committer: Arc<C>,
    receiver: Arc<tokio::sync::Mutex<mpsc::Receiver<Chunk<C::Item>>>>,
) -> Result<()> {
    let mut after_chunk = false;
    loop {
        let go = !drive.stopping()
            && drive
                .throttle
                .before_chunk(after_chunk, &drive.progress)
                .await;
        let chunk = receiver.lock().await.recv().await;
        let Some(chunk) = chunk else { return Ok(()) };
        if !go || drive.stopping() {
            // Not begun: it stays uncommitted and the checkpoint stays before
            // it. Keep draining so the reader is never left blocked.
            continue;
        }
        let Some(first) = chunk.items.first().map(Item::name) else {
            continue;
        };
        drive.watermark.lock().begin(chunk.seq, &chunk.last_key);
        let done = match write_chunk(&drive, &*committer, &chunk).await {
            Ok(Attempted::Done(done)) => done,
            // Rolled back while stopping: stays after the checkpoint.
            Ok(Attempted::Stopped) => continue,
            Err(err) => {
                drive.fail();
                return Err(err.context(format!("chunk starting at {first} rolled back")));
            }
        };
        drive.watermark.lock().commit(chunk.seq);
        let counters = committer.settle(done)?;
        let len = chunk.items.len() as u64;
        drive.progress.advance(len, counters.links_created);
        drive.throttle.committed(counters.links_created);
        drive.scanned.fetch_add(len, Ordering::SeqCst);
        drive.counters.lock().merge(&counters);
        after_chunk = true;
    }
}

/// Commits one chunk in one transaction, retried as a unit; feeds its
/// duration to the metrics and the chunk sizer.
async fn write_chunk<C: Committer>(
    drive: &Drive,
    committer: &C,
    chunk: &Chunk<C::Item>,
) -> Result<Attempted<C::Done>> {
    drive
        .retry
        .run(
            C::WHAT,
            || drive.stopping(),
            |attempt| async move {
                let mut client = db::checkout(&drive.pool).await?;
                let began = Instant::now();
                let done = committer
                    .commit(drive, &mut client, chunk, attempt > 0)
                    .await
                    .inspect_err(|e| {
                        if db::is_timeout(e) {
                            drive.sizer.timed_out();
                        }
                    })?;
                let took = began.elapsed();
                drive.metrics.observe_chunk(took);
                drive.sizer.observed(chunk.items.len(), took);
                Ok(done)
            },
        )
        .await
}
