//! `relink run --plan FILE` (SPEC §15): applies a reviewed plan and
//! nothing else. The plan is checked whole first (integrity, database,
//! rules, age: `accept`); then, like a live run — the same lock, run
//! record, throttle, chunk sizing, writers, retries and checkpoint — a
//! reader streams the plan's records in chunks (never the whole plan in
//! memory) to writers that commit each chunk in one transaction
//! (`commit`): records that still hold get exactly their rows, drifted ones
//! are reported and left pending. The checkpoint is the number of the last
//! record below which every chunk committed; an apply interrupted or killed
//! is resumed by the next `relink run --plan` of the same plan.
//!
//! `verify` is `verify --plan`; `judge` and `current` are shared by both.

mod commit;
pub mod current;
pub mod judge;
pub mod verify;

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_postgres::Client;

use self::commit::Drifted;
use crate::cli::OutputFormat;
use crate::config::{ChunkSize, Names, RunConfig};
use crate::context::Context;
use crate::db::{self, preflight, Owner, PooledClient, Session};
use crate::drive::{self, Committer, Drive, Held};
use crate::exit::Outcome;
use crate::forecast::Forecast;
use crate::inflight::{self, Budget, IN_FLIGHT_BYTES, QUEUE_BOUND};
use crate::metrics::{self, Snapshot, Work};
use crate::plan::Counters;
use crate::plan_file::{self, PlanReader, PlanRecord, Stamp, Validated};
use crate::progress::{Progress, PROFILES_AND_LINKS};
use crate::report::Summary;
use crate::shutdown::Shutdown;
use crate::state::{self, Mode, RunStatus};

/// Checks the plan at `path` whole and against the database `client` is
/// connected to: refused — before anything is written — when damaged or
/// truncated, made with other rules, for another database, schema or
/// state schema, or older than `max_age` by the database's clock.
///
/// # Errors
/// The refusal, naming its reason and what to do.
pub async fn accept(
    path: &Path,
    client: &Client,
    names: &Names,
    max_age: Duration,
) -> Result<Validated> {
    let owned = path.to_owned();
    let plan = tokio::task::spawn_blocking(move || plan_file::open(&owned))
        .await
        .map_err(|e| anyhow!("the plan check failed: {e}"))??;
    let h = &plan.header;
    let shown = path.display();
    let rules = plan_file::rules_digest();
    if h.rules_digest != rules {
        bail!(
            "refusing the plan {shown}: it was made with other rules (relink {}, rules digest {}; this relink {} has {rules}): make a new plan with this release",
            h.relink_version,
            short(&h.rules_digest),
            env!("CARGO_PKG_VERSION")
        );
    }
    let here = Stamp::of(client).await?;
    if h.database != here.origin {
        bail!(
            "refusing the plan {shown}: it is for database {:?} (system identifier {}), not this one, {:?} (system identifier {}): apply it where it was made, or make a plan here",
            h.database.name,
            h.database.system_identifier,
            here.origin.name,
            here.origin.system_identifier
        );
    }
    if h.schema != names.app_raw || h.state_schema != names.state_raw {
        bail!(
            "refusing the plan {shown}: it was made for --schema {} --state-schema {}, not --schema {} --state-schema {}",
            h.schema,
            h.state_schema,
            names.app_raw,
            names.state_raw
        );
    }
    let age = here.now_unix - h.created_at_unix;
    if age > max_age.as_secs_f64() {
        bail!(
            "refusing the plan {shown}: it was made {} ago ({}), longer than --plan-max-age {}: make a new plan and review it (or raise --plan-max-age)",
            human(age),
            h.created_at,
            human(max_age.as_secs_f64())
        );
    }
    Ok(plan)
}

fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

fn human(seconds: f64) -> String {
    if seconds >= 3600.0 {
        format!("{:.1}h", seconds / 3600.0)
    } else if seconds >= 60.0 {
        format!("{:.1}m", seconds / 60.0)
    } else {
        format!("{seconds:.1}s")
    }
}

/// The checkpoint's text for record number `index`: zero-padded, so the
/// run record's text comparison ("never back") orders it as a number.
fn checkpoint_key(index: u64) -> String {
    format!("{index:020}")
}

/// A chunk of plan records.
type Chunk = inflight::Chunk<PlanRecord>;

impl drive::Item for PlanRecord {
    fn name(&self) -> String {
        format!("plan record {}", self.index)
    }
}

/// How an apply commits a chunk: records that still hold get exactly
/// their rows, drifted ones are reported and left pending.
struct Applier {
    /// Runs that applied this plan, this one included.
    plan_runs: Vec<i64>,
    /// Where drifted profiles are reported.
    out: Mutex<Output>,
}

impl Committer for Applier {
    type Item = PlanRecord;
    type Done = commit::Committed;
    const WHAT: &'static str = "applying a chunk of the plan";

    async fn commit(
        &self,
        drive: &Drive,
        client: &mut PooledClient,
        chunk: &Chunk,
        _retry: bool,
    ) -> Result<commit::Committed> {
        commit::commit(
            client,
            &drive.names,
            drive.run_id,
            drive.waits,
            &chunk.items,
            &self.plan_runs,
            || drive.checkpoint_for(chunk.seq),
        )
        .await
    }

    fn settle(&self, done: commit::Committed) -> Result<Counters> {
        self.out.lock().drifted(&done.drifted)?;
        Ok(done.counters)
    }
}

/// The drift lines: on stdout in text (unless quiet), and in `--report`.
struct Output {
    text: bool,
    report: Option<Box<dyn std::io::Write + Send>>,
}

impl Output {
    fn drifted(&mut self, drifted: &[Drifted]) -> Result<()> {
        if drifted.is_empty() {
            return Ok(());
        }
        if self.text {
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            for d in drifted {
                writeln!(
                    out,
                    "Profile {}: drifted since the plan ({}): not written, left pending",
                    d.user_id,
                    d.drift.describe()
                )?;
            }
            out.flush()?;
        }
        if let Some(report) = self.report.as_mut() {
            for d in drifted {
                serde_json::to_writer(
                    &mut *report,
                    &json!({"record": d.index, "profile_id": d.profile_id, "user_id": d.user_id,
                            "drift": d.drift}),
                )?;
                report.write_all(b"\n")?;
            }
            report.flush()?;
        }
        Ok(())
    }
}

/// Runs `relink run --plan FILE`.
///
/// # Errors
/// A refused plan or a fatal error (exit 1), or [`db::LockHeld`] (exit 4).
pub async fn apply(
    cx: &Context,
    cfg: &RunConfig,
    path: &Path,
    shutdown: Shutdown,
) -> Result<Outcome> {
    let names = &cx.common.names;
    let session = Session::new("run", &cx.common, Some(cfg.timeouts), false);
    let control = db::connect(&cx.database, &session).await?;
    preflight::command_start(&control, &cx.database, names, &session, preflight::RUN).await?;
    // The whole plan is checked before anything is locked or written.
    let plan = accept(path, &control, names, cfg.plan.max_age).await?;
    let held = Held::take(cx, cfg, &session, control, cfg.writers).await?;
    let wal_start = db::wal::position(&*held.lock.client().await?).await;
    let (begun, plan_runs, last_success) = {
        let mut control = held.lock.client().await?;
        state::ensure_schema(&mut control, names).await?;
        let begun = begin(&control, names, cfg, &plan).await?;
        let plan_runs = plan_runs(&control, names, &plan.id).await?;
        let last_success = state::last_success(&*control, names, Mode::Run).await?;
        (begun, plan_runs, last_success)
    };
    let run_id = begun.run_id;
    let started = Instant::now();
    let total = plan.header.records.saturating_sub(begun.skip);
    let report = crate::report::open_report(cfg.report.as_deref())?;
    let progress = Progress::new("applying", PROFILES_AND_LINKS, total, !cx.common.quiet);
    let shared = Drive::new(cx, cfg, run_id, held, progress, last_success, shutdown);
    let shared = Arc::new(shared);
    let applier = Arc::new(Applier {
        plan_runs,
        out: Mutex::new(Output {
            text: cfg.format == OutputFormat::Text && !cx.common.quiet,
            report,
        }),
    });
    let mut exporter = shared
        .metrics
        .clone()
        .start(ApplyFigures {
            shared: shared.clone(),
            wal_start,
        })
        .await;
    shared.throttle.show_on(run_id).await;

    let (sender, receiver) = mpsc::channel::<Chunk>(QUEUE_BOUND);
    let reader = {
        let shared = shared.clone();
        let (plan, skip, limit, writers) = (plan.clone(), begun.skip, cfg.limit, cfg.writers);
        tokio::task::spawn_blocking(move || feed(&plan, skip, limit, writers, &shared, &sender))
    };
    let reader = (reader, "the plan reader");
    let driven = drive::drive(&shared, &applier, cfg.writers, receiver, reader).await;
    let status = driven.status(shared.shutdown.requested());
    let error = driven.error;
    exporter.stop_periodic().await;
    let recorded = shared
        .record_end(wal_start, status, error.as_ref(), started)
        .await?;
    let (wal_bytes, checkpoint) = (recorded.wal_bytes, recorded.checkpoint);
    let last_success = {
        let control = shared.lock.client().await?;
        state::last_success(&*control, names, Mode::Run)
            .await
            .unwrap_or(last_success)
    };
    let counters = shared.counters();
    let forecast: Option<Forecast> = serde_json::from_value(plan.header.forecast.clone()).ok();
    let summary = Summary::new(
        "run",
        Some(run_id),
        status,
        shared.scanned(),
        counters,
        started,
        shared.throttle.throttled_seconds(),
    )
    .with_wal(wal_bytes)
    .with_forecast(forecast)
    .applying_plan();
    exporter
        .finish(status, Snapshot::of_summary(&summary), last_success)
        .await;
    shared.lock.release().await;
    summary.print_to_stdout(cfg.format, false)?;
    let at = Position {
        run_id,
        path,
        checkpoint,
    };
    outcome(&at, status, error)
}

/// Where an apply stands: its run, its plan, its saved checkpoint.
struct Position<'a> {
    run_id: i64,
    path: &'a Path,
    checkpoint: Option<String>,
}

/// The command's outcome, and what the operator does next.
fn outcome(at: &Position<'_>, status: RunStatus, error: Option<anyhow::Error>) -> Result<Outcome> {
    let (run_id, path) = (at.run_id, at.path);
    let at = || {
        at.checkpoint.as_deref().map_or_else(
            || "no chunk committed yet".to_owned(),
            |c| format!("checkpoint after plan record {}", c.trim_start_matches('0')),
        )
    };
    if let Some(err) = error {
        return Err(err.context(format!(
            "run {run_id} applying {} failed ({}); rerun `relink run --plan {}` to resume",
            path.display(),
            at(),
            path.display()
        )));
    }
    match status {
        RunStatus::Interrupted => {
            tracing::warn!(
                "run {run_id} interrupted ({}); rerun `relink run --plan {}` to resume",
                at(),
                path.display()
            );
            Ok(Outcome::Interrupted)
        }
        _ => Ok(Outcome::Done),
    }
}

/// The run record an apply works on.
struct Begun {
    run_id: i64,
    /// Records up to this number are done (a resumed apply's checkpoint).
    skip: u64,
}

/// Resumes the unfinished apply of this plan (unless `--restart`, which
/// abandons it), or starts a new run record naming the plan.
async fn begin(
    control: &Client,
    names: &Names,
    cfg: &RunConfig,
    plan: &Validated,
) -> Result<Begun> {
    let owner = Owner::current();
    let unfinished: Vec<&str> = RunStatus::UNFINISHED.iter().map(|s| s.as_str()).collect();
    let found = control
        .query_opt(
            &names.sql(
                "SELECT id, checkpoint FROM {state}.runs
                  WHERE mode = 'run' AND status = ANY($1) AND options->'plan'->>'id' = $2
                  ORDER BY id DESC LIMIT 1",
            ),
            &[&unfinished, &plan.id],
        )
        .await
        .context("cannot look for an unfinished apply of this plan")?;
    if let Some(row) = found {
        let (id, checkpoint): (i64, Option<String>) = (row.get(0), row.get(1));
        if cfg.restart {
            control
                .execute(
                    &names.sql(
                        "UPDATE {state}.runs SET status = 'abandoned', finished_at = now(), updated_at = now()
                          WHERE id = $1",
                    ),
                    &[&id],
                )
                .await
                .context("cannot abandon the unfinished apply")?;
            tracing::info!("abandoned run {id} (an unfinished apply of this plan); applying from its first record");
        } else {
            state::resume_run(control, names, id, &owner).await?;
            let skip = checkpoint
                .as_deref()
                .map(str::parse::<u64>)
                .transpose()
                .context("the unfinished apply's checkpoint is not a record number")?
                .unwrap_or(0);
            tracing::info!(
                "resuming run {id} applying {} after plan record {skip}",
                plan.path.display()
            );
            return Ok(Begun { run_id: id, skip });
        }
    }
    let options = json!({
        "plan": {
            "id": plan.id,
            "path": plan.path.display().to_string(),
            "created_at": plan.header.created_at,
            "records": plan.header.records,
        },
        "order": "plan",
        "chunk_size": match cfg.chunk_size {
            ChunkSize::Fixed(n) => json!(n),
            ChunkSize::Auto { target } => json!(format!("auto ({} ms)", target.as_millis())),
        },
        "limit": cfg.limit, "max_rate": cfg.max_rate,
        "pause_ms": cfg.pause.map(|d| d.as_millis()), "writers": cfg.writers,
    });
    let id = state::start_run(control, names, Mode::Run, &options, &owner).await?;
    tracing::info!(
        "started run {id} applying {} ({} profiles, made {})",
        plan.path.display(),
        plan.header.records,
        plan.header.created_at
    );
    Ok(Begun {
        run_id: id,
        skip: 0,
    })
}

/// The runs that applied the plan `id` (so a repeated or resumed apply
/// knows its own work).
async fn plan_runs(control: &Client, names: &Names, id: &str) -> Result<Vec<i64>> {
    Ok(control
        .query(
            &names.sql(
                "SELECT id FROM {state}.runs WHERE mode = 'run' AND options->'plan'->>'id' = $1",
            ),
            &[&id],
        )
        .await
        .context("cannot list the runs that applied this plan")?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// The plan reader (on a blocking thread): skips the records a resumed
/// apply did, then sends chunks of the size the sizer gives, at most
/// `limit` records, reading ahead only as far as the in-flight budget has
/// room (a chunk weighs what its records' lines do, about what applying
/// them holds). Returns whether it reached the plan's end.
fn feed(
    plan: &Validated,
    skip: u64,
    limit: Option<u64>,
    writers: usize,
    shared: &Drive,
    chunks: &mpsc::Sender<Chunk>,
) -> Result<bool> {
    let runtime = tokio::runtime::Handle::current();
    let mut budget = Budget::new(IN_FLIGHT_BYTES, writers);
    let mut reader = PlanReader::new(plan)?;
    let mut remaining = limit.unwrap_or(u64::MAX);
    let mut seq = 0;
    let mut pending = loop {
        let Some(record) = reader.next_record()? else {
            return Ok(true);
        };
        if record.index > skip {
            break Some(record);
        }
    };
    loop {
        if shared.stopping() || remaining == 0 {
            return Ok(false);
        }
        let size = shared
            .sizer
            .next_within(budget.most_profiles())
            .min(usize::try_from(remaining).unwrap_or(usize::MAX));
        let mut held = runtime.block_on(budget.reserve(size));
        let mut records = Vec::with_capacity(size);
        records.extend(pending.take());
        while records.len() < size {
            match reader.next_record()? {
                Some(record) => records.push(record),
                None => break,
            }
        }
        let Some(last) = records.last() else {
            return Ok(true);
        };
        let weight = records.iter().map(|r| r.weight).sum();
        runtime.block_on(budget.settle(&mut held, records.len(), weight));
        let last_key = checkpoint_key(last.index);
        let full = records.len() == size;
        remaining -= records.len() as u64;
        if chunks
            .blocking_send(Chunk::new(seq, records, last_key, held))
            .is_err()
        {
            return Ok(false);
        }
        seq += 1;
        if !full {
            return Ok(true);
        }
    }
}

/// An apply's figures for its metrics file.
struct ApplyFigures {
    shared: Arc<Drive>,
    wal_start: Option<u64>,
}

impl metrics::Gather for ApplyFigures {
    async fn gather(&mut self) -> Snapshot {
        let shared = &self.shared;
        let mut wal_bytes = None;
        if let Ok(control) = shared.lock.client().await {
            wal_bytes = db::wal::since(&*control, self.wal_start).await;
        }
        let counters = shared.counters();
        let scanned = shared.scanned();
        Snapshot {
            work: Work::Run {
                unchanged: scanned
                    .saturating_sub(counters.profiles_planned)
                    .saturating_sub(counters.profiles_drifted),
                counters,
                scanned,
            },
            throttled: shared.throttle.throttled_seconds(),
            wal_bytes,
        }
    }
}
