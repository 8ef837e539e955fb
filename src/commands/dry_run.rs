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
use crate::plan::Counters;
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
    // Plan what the next live run would do: it resumes an unfinished run
    // after its checkpoint (unless --restart), so the dry run does too.
    let mut start_after = None;
    let mut replan = cfg.replan;
    let mut order = Order::User;
    if with_ledger && !cfg.restart && !cfg.replan {
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
    let total =
        source::count_with_legacy(&client, names, order, start_after.as_deref(), None).await?;
    let progress = Progress::new("dry run", PROFILES_AND_LINKS, total, !cx.common.quiet);

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
    let reader = Reader::new(names, filter, order, start_after.clone(), sizer.next());
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
    };
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
    let summary = Summary::new(
        "dry-run",
        None,
        status,
        scanned,
        counters,
        started,
        throttle::none(),
    );
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

/// What planners render besides the figures.
#[derive(Debug, Clone, Copy)]
struct Render {
    /// The runbook's lines per profile.
    profiles: bool,
    /// The `--report` JSONL lines.
    report: bool,
}

/// A chunk planned and rendered by a planner, for the main task to write.
struct Rendered {
    seq: u64,
    profiles: u64,
    counters: Counters,
    text: Vec<u8>,
    report: Vec<u8>,
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
        let planned = chunk::plan_chunk(&**client, &names, &chunk.profiles).await?;
        drop(client);
        let (mut text, mut report) = (Vec::new(), Vec::new());
        for p in &planned {
            if render.profiles {
                report::print_dry_profile(p, &mut text)?;
            }
            if render.report {
                serde_json::to_writer(&mut report, &report::report_line(p))?;
                report.push(b'\n');
            }
        }
        let done = Rendered {
            seq: chunk.seq,
            profiles: chunk.profiles.len() as u64,
            counters: chunk::counters(&planned),
            text,
            report,
        };
        if rendered.send(done).await.is_err() {
            return Ok(());
        }
    }
}
