//! `relink run --dry-run` (SPEC §7): the live run's feed and planner,
//! printing instead of writing, on read-only sessions that never take the
//! lock or create the state schema. The feed reads the next pages while two
//! planners plan chunks side by side; their output is written in key order.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use crate::db::Pool;
use anyhow::{anyhow, Context as _, Result};
use tokio::sync::mpsc;

use super::Context;
use crate::chunk;
use crate::cli::OutputFormat;
use crate::config::{ChunkSize, Names, RunConfig};
use crate::db::preflight::{self, Access};
use crate::db::{self, Retry, Session};
use crate::exit::Outcome;
use crate::forecast::{Forecast, Rates};
use crate::inflight;
use crate::plan::Counters;
use crate::plan_file::{self, Header, PlanWriter, Stamp};
use crate::progress::{Progress, PROFILES_AND_LINKS};
use crate::report::{self, Summary};
use crate::shutdown::Shutdown;
use crate::sizing::Sizer;
use crate::source::{self, Chunk, FeedEnd, Filter, Order, Reader};
use crate::state::{self, Mode, RunStatus};
use crate::throttle;

/// Profiles per page of a dry run under `--chunk-size auto`.
const DRY_RUN_PAGE: usize = 2000;
/// Chunks planned side by side.
const PLANNERS: usize = 2;

/// Runs `relink run --dry-run`.
///
/// # Errors
/// On a database error, or when stdout or the report cannot be written.
pub async fn dry_run(cx: &Context, cfg: &RunConfig, shutdown: Shutdown) -> Result<Outcome> {
    let names = &cx.common.names;
    let session = Session::new("dry-run", &cx.common, Some(cfg.timeouts), true);
    let client = db::connect(&cx.database, &session).await?;
    preflight::command_start(&client, &cx.database, names, &session, Access::Read).await?;
    let with_ledger = state::exists(&client, names).await?;
    let planning = Planning::start(&client, &cx.common, cfg, with_ledger).await?;
    // Plan what the next live run would do: it resumes an unfinished run
    // after its checkpoint (unless --restart), so the dry run does too.
    let mut start_after = None;
    let mut replan = cfg.replan;
    let mut order = Order::User;
    // A plan (--plan-out) holds every pending profile: its apply does not
    // resume an unfinished plain run, so it plans as --restart would.
    if with_ledger && !cfg.restart && !cfg.replan && cfg.plan.out.is_none() {
        if let Some(run) = state::resumable(&client, names, Mode::Run).await? {
            replan = run.options["replan"].as_bool().unwrap_or(false);
            order = Order::of_run(&run.options);
            if let Some(checkpoint) = run.checkpoint {
                tracing::info!(
                    "the next run would resume run {} after {} {checkpoint}; planning from there",
                    run.id,
                    order.noun()
                );
                start_after = Some(checkpoint);
            }
        }
    }
    // One connection reads, the planners plan on the others.
    let pool = db::pool(&cx.database, &session, PLANNERS + 1)?;
    let started = Instant::now();
    let with_legacy =
        source::count_with_legacy(&client, names, order, start_after.as_deref(), None).await?;

    let (outbox, chunks) = source::outbox(PLANNERS);
    let filter = match (with_ledger, replan) {
        (true, false) => Filter::Pending,
        (with_ledger, _) => Filter::All {
            ledger: with_ledger,
        },
    };
    // Pages of a dry run hold no transaction: a fixed size serves.
    let sizer = Sizer::new(match cfg.chunk_size {
        ChunkSize::Fixed(n) => ChunkSize::Fixed(n),
        ChunkSize::Auto { .. } => ChunkSize::Fixed(DRY_RUN_PAGE),
    });
    let mut reader = Reader::new(names, filter, order, start_after.clone(), sizer.next());
    let total = reader.expect(&client, with_legacy).await?;
    let progress = Progress::new("dry run", PROFILES_AND_LINKS, total, !cx.common.quiet);
    let feed_pool = pool.clone();
    let feed = {
        let (shutdown, limit) = (shutdown.clone(), cfg.limit);
        let retry = Retry::new(cfg.timeouts.attempts);
        tokio::spawn(async move {
            source::feed(
                reader,
                &feed_pool,
                retry,
                limit,
                &sizer,
                || shutdown.requested(),
                outbox,
            )
            .await
        })
    };

    let mut report = report::open_report(cfg.report.as_deref())?;
    let stdout = std::io::stdout();
    let mut counters = Counters::default();
    // `--report -` owns stdout: no runbook lines there, and the summary goes to stderr.
    let report_on_stdout = cfg.report.as_deref().is_some_and(|p| p.as_os_str() == "-");
    let render = Render {
        profiles: cfg.format == OutputFormat::Text && !cx.common.quiet && !report_on_stdout,
        report: report.is_some(),
        plan: planning.writer.is_some(),
    };
    let Planning {
        mut writer,
        rates,
        stamp,
    } = planning;
    let chunks = Arc::new(tokio::sync::Mutex::new(chunks));
    let (rendered_sender, mut rendered) = mpsc::channel::<Rendered>(PLANNERS * 2);
    let planners: Vec<_> = (0..PLANNERS)
        .map(|_| {
            tokio::spawn(plan_chunks(
                pool.clone(),
                names.clone(),
                chunks.clone(),
                rendered_sender.clone(),
                render,
            ))
        })
        .collect();
    drop(rendered_sender);
    // Chunks come back in any order; they are written in key order.
    let mut waiting: BTreeMap<u64, Rendered> = BTreeMap::new();
    let mut next = 0;
    while let Some(chunk) = rendered.recv().await {
        if shutdown.requested() {
            break;
        }
        waiting.insert(chunk.seq, chunk);
        while let Some(chunk) = waiting.remove(&next) {
            let mut out = stdout.lock();
            out.write_all(&chunk.text)?;
            out.flush()?;
            if let Some(report) = report.as_mut() {
                report.write_all(&chunk.report)?;
            }
            if let Some(writer) = writer.as_mut() {
                writer.lines(&chunk.plan, chunk.counters.profiles_planned)?;
            }
            progress.advance(chunk.profiles, chunk.counters.links_created);
            counters.merge(&chunk.counters);
            next += 1;
        }
    }
    drop(rendered);
    for planner in planners {
        planner
            .await
            .map_err(|e| anyhow!("a planner task failed: {e}"))??;
    }
    progress.finish();
    if let Some(mut report) = report {
        report.flush().context("cannot write the report")?;
    }
    let (end, last) = feed
        .await
        .map_err(|e| anyhow!("the reader task failed: {e}"))??;
    let interrupted = shutdown.requested();
    let reached_end = end == FeedEnd::End;
    let upto = if reached_end { None } else { last };
    let scanned = source::count_with_legacy(
        &client,
        names,
        order,
        start_after.as_deref(),
        upto.as_deref(),
    )
    .await?;
    let status = if interrupted {
        RunStatus::Interrupted
    } else if reached_end {
        RunStatus::Completed
    } else {
        RunStatus::Partial
    };
    // A dry run never waits: its figures are all zero, for the same shape.
    let links = counters.links_created;
    let summary = Summary::new(
        "dry-run",
        None,
        status,
        scanned,
        counters,
        started,
        throttle::none(),
    )
    .with_forecast(Some(Forecast::new(rates.as_ref(), links)));
    if let (Some(writer), Some(stamp)) = (writer, stamp) {
        if interrupted {
            tracing::warn!("interrupted: no plan written");
        } else {
            finish_plan(writer, stamp, &cx.common, cfg, &summary)?;
        }
    }
    if report_on_stdout {
        summary.print(cfg.format == OutputFormat::Json, &mut std::io::stderr())?;
    } else {
        summary.print_to_stdout(cfg.format, true)?;
    }
    Ok(if interrupted {
        Outcome::Interrupted
    } else {
        Outcome::Done
    })
}

/// What a dry run needs for its forecast and `--plan-out` (SPEC §15).
struct Planning {
    writer: Option<PlanWriter>,
    rates: Option<Rates>,
    /// The database and its clock when the plan was begun.
    stamp: Option<Stamp>,
}

impl Planning {
    /// Reads the forecast's rates (the rehearsal's, else the last completed
    /// run's) and begins the plan file, before anything is planned.
    async fn start(
        client: &tokio_postgres::Client,
        common: &crate::config::Common,
        cfg: &RunConfig,
        with_ledger: bool,
    ) -> Result<Self> {
        let rates = match &cfg.plan.forecast_from {
            Some(path) => Some(Rates::of_rehearsal(path)?),
            None if with_ledger => Rates::of_last_run(client, &common.names).await?,
            None => None,
        };
        let (writer, stamp) = match &cfg.plan.out {
            Some(path) => (
                Some(PlanWriter::create(path)?),
                Some(Stamp::of(client).await?),
            ),
            None => (None, None),
        };
        Ok(Self {
            writer,
            rates,
            stamp,
        })
    }
}

/// Writes the plan's header and moves the plan into place.
fn finish_plan(
    writer: PlanWriter,
    stamp: Stamp,
    common: &crate::config::Common,
    cfg: &RunConfig,
    summary: &Summary,
) -> Result<()> {
    let records = writer.records();
    let header = Header {
        format: plan_file::FORMAT.to_owned(),
        version: plan_file::VERSION,
        relink_version: env!("CARGO_PKG_VERSION").to_owned(),
        rules_digest: plan_file::rules_digest(),
        database: stamp.origin,
        schema: common.names.app_raw.clone(),
        state_schema: common.names.state_raw.clone(),
        created_at: stamp.now,
        created_at_unix: stamp.now_unix,
        summary: serde_json::to_value(summary)?,
        forecast: serde_json::to_value(&summary.forecast)?,
        records: 0,
        records_sha256: String::new(),
        records_gzip: None,
    };
    let bytes = writer.finish(header)?;
    let path = cfg.plan.out.as_deref().unwrap_or(std::path::Path::new("-"));
    tracing::info!(
        "plan written to {}: {records} profiles, {bytes} bytes ({} bytes per profile); review it, then apply it with `relink run --plan {}`",
        path.display(),
        bytes / records.max(1),
        path.display()
    );
    Ok(())
}

/// What planners render besides the figures.
#[derive(Debug, Clone, Copy)]
struct Render {
    /// The runbook's lines per profile.
    profiles: bool,
    /// The `--report` JSONL lines.
    report: bool,
    /// The plan's records (`--plan-out`).
    plan: bool,
}

/// A chunk planned and rendered by a planner, for the main task to write.
/// It keeps its chunk's room in the in-flight budget until written, so the
/// reader does not run ahead of a slow writer (a gzipped `--plan-out`).
struct Rendered {
    seq: u64,
    profiles: u64,
    counters: Counters,
    text: Vec<u8>,
    report: Vec<u8>,
    plan: Vec<u8>,
    _held: inflight::Held,
}

/// A planner: plans chunks on a pooled connection and renders them. Two
/// plan side by side, so the dry run uses both cores as a live run does.
async fn plan_chunks(
    pool: Pool,
    names: Names,
    chunks: Arc<tokio::sync::Mutex<mpsc::Receiver<Chunk>>>,
    rendered: mpsc::Sender<Rendered>,
    render: Render,
) -> Result<()> {
    loop {
        let Some(chunk) = chunks.lock().await.recv().await else {
            return Ok(());
        };
        let client = db::checkout(&pool).await?;
        let existing = chunk::users_rows(&**client, &names, &chunk.items).await?;
        drop(client);
        let planned = chunk::plan_with(&chunk.items, &existing);
        let (mut text, mut report, mut plan) = (Vec::new(), Vec::new(), Vec::new());
        for p in &planned {
            if render.plan {
                let rows = existing
                    .get(&p.profile.user_id)
                    .map_or(&[][..], Vec::as_slice);
                serde_json::to_writer(&mut plan, &plan_file::record(p, rows))?;
                plan.push(b'\n');
            }
            if render.profiles {
                report::print_dry_profile(p, &mut text)?;
            }
            if render.report {
                serde_json::to_writer(&mut report, &report::report_line(p))?;
                report.push(b'\n');
            }
        }
        let counters = chunk::counters(&planned);
        drop(planned);
        let (seq, profiles) = (chunk.seq, chunk.items.len() as u64);
        let done = Rendered {
            seq,
            profiles,
            counters,
            text,
            report,
            plan,
            _held: chunk.into_held(),
        };
        if rendered.send(done).await.is_err() {
            return Ok(());
        }
    }
}
