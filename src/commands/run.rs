//! `relink run`: source → pipeline → sink for a live run, source → pipeline
//! → report for a dry run. The live run reads pages on one connection while
//! writer connections commit chunks in parallel, each in one transaction.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{anyhow, Context as _, Result};
use deadpool_postgres::Pool;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_postgres::{Client, GenericClient};

use crate::cli::OutputFormat;
use crate::config::{Common, Names, RunConfig};
use crate::db::{self, Next, Retry, Session};
use crate::pipeline::{self, Planned};
use crate::plan::Counters;
use crate::progress::Progress;
use crate::report::{self, Summary};
use crate::shutdown::Shutdown;
use crate::sink;
use crate::source::{Filter, Reader, SourceProfile};
use crate::state::{self, Owner};
use crate::{lock, preflight, Outcome};

/// Runs `relink run` with or without `--dry-run`.
///
/// # Errors
/// Fatal errors (exit 1), or [`lock::LockHeld`] (exit 4).
pub async fn run(common: &Common, cfg: &RunConfig, shutdown: Shutdown) -> Result<Outcome> {
    if cfg.dry_run {
        dry_run(common, cfg, shutdown).await
    } else {
        live_run(common, cfg, shutdown).await
    }
}

/// A page of profiles handed from the reader to a writer.
struct Chunk {
    seq: u64,
    profiles: Vec<SourceProfile>,
}

/// Which chunks have committed, so each chunk's transaction can save the
/// furthest checkpoint below which everything is committed (writers commit
/// out of order).
#[derive(Default)]
struct Watermark {
    /// Lowest sequence number not yet committed.
    next: u64,
    committed: BTreeSet<u64>,
    /// Last profile id of each chunk not yet below the watermark.
    ends: HashMap<u64, String>,
}

impl Watermark {
    /// The checkpoint to save with chunk `seq`: the end of the longest run of
    /// chunks from `next` that are committed or are `seq` itself.
    fn checkpoint_for(&self, seq: u64) -> Option<String> {
        let mut last = None;
        let mut s = self.next;
        while s == seq || self.committed.contains(&s) {
            last = Some(s);
            s += 1;
        }
        last.and_then(|s| self.ends.get(&s).cloned())
    }

    fn commit(&mut self, seq: u64) {
        self.committed.insert(seq);
        while self.committed.remove(&self.next) {
            self.ends.remove(&self.next);
            self.next += 1;
        }
    }
}

/// State shared by the reader and the writers of one live run.
struct Shared {
    names: Names,
    run_id: i64,
    cfg: RunConfig,
    pool: Pool,
    progress: Progress,
    watermark: Mutex<Watermark>,
    counters: Mutex<Counters>,
    links: AtomicU64,
    started: Instant,
    failed: AtomicBool,
    shutdown: Shutdown,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.failed.load(Ordering::SeqCst) || self.shutdown.requested()
    }
}

async fn live_run(common: &Common, cfg: &RunConfig, shutdown: Shutdown) -> Result<Outcome> {
    let names = &common.names;
    let owner = Owner::current();
    let session = Session::new("run", Some(cfg.timeouts), false);
    let control = db::connect(&common.database, &session).await?;
    preflight::check(&control, names).await?;
    check_write_permission(&control, names).await?;
    lock::acquire(&control, names).await?;
    state::ensure_schema(&control, names).await?;

    if cfg.restart {
        let n = state::abandon_unfinished(&control, names, "run").await?;
        if n > 0 {
            tracing::info!("--restart: abandoned {n} unfinished run(s); rescanning from the start");
        }
    }
    let resumed = if cfg.restart {
        None
    } else {
        state::resumable(&control, names, "run").await?
    };
    let (run_id, start_after) = match resumed {
        Some(run) => {
            state::resume_run(&control, names, run.id, &owner).await?;
            let done = Counters::from_flat(&run.counters).profiles_planned;
            tracing::info!(
                "resuming run {} after profile {}, {done} profiles done",
                run.id,
                run.checkpoint
                    .as_deref()
                    .unwrap_or("(none: from the start)")
            );
            (run.id, run.checkpoint)
        }
        None => {
            let options = json!({
                "chunk_size": cfg.chunk_size, "limit": cfg.limit, "max_rate": cfg.max_rate,
                "pause_ms": cfg.pause.map(|d| d.as_millis()), "writers": cfg.writers,
                "restart": cfg.restart,
            });
            let id = state::start_run(&control, names, "run", &options, &owner).await?;
            tracing::info!("started run {id}");
            (id, None)
        }
    };

    let total = pending_estimate(&control, names, start_after.as_deref()).await?;
    // One connection reads while the writers write.
    let pool = db::pool(&common.database, &session, cfg.writers + 1)?;
    let shared = Arc::new(Shared {
        names: names.clone(),
        run_id,
        cfg: cfg.clone(),
        pool,
        progress: Progress::new("migrating", total, !common.quiet),
        watermark: Mutex::new(Watermark::default()),
        counters: Mutex::new(Counters::default()),
        links: AtomicU64::new(0),
        started: Instant::now(),
        failed: AtomicBool::new(false),
        shutdown,
    });

    let (sender, receiver) = mpsc::channel::<Chunk>(cfg.writers * 2);
    let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
    let reader = tokio::spawn(read_chunks(shared.clone(), start_after.clone(), sender));
    let writers: Vec<_> = (0..cfg.writers)
        .map(|_| tokio::spawn(write_chunks(shared.clone(), receiver.clone())))
        .collect();
    let keeper = tokio::spawn(keep_lock(
        shared.clone(),
        common.clone(),
        session.clone(),
        control,
    ));

    let mut error: Option<anyhow::Error> = None;
    for writer in writers {
        match writer.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => error = error.or(Some(e)),
            Err(e) => error = error.or(Some(anyhow!("a writer task failed: {e}"))),
        }
    }
    let reached_end = match reader.await {
        Ok(Ok(end)) => end,
        Ok(Err(e)) => {
            error = error.or(Some(e));
            false
        }
        Err(e) => {
            error = error.or(Some(anyhow!("the reader task failed: {e}")));
            false
        }
    };
    shared.progress.finish();
    keeper.abort();
    let control = match keeper.await {
        Ok(Ok(client)) => client,
        // Aborted or lost: finish the bookkeeping on a fresh connection.
        _ => db::connect(&common.database, &session).await?,
    };

    let status = if error.is_some() {
        "failed"
    } else if shared.shutdown.requested() {
        "interrupted"
    } else if reached_end {
        "completed"
    } else {
        "partial"
    };
    let message = error.as_ref().map(|e| format!("{e:#}"));
    state::finish_run(&control, names, run_id, status, message.as_deref()).await?;
    if status == "completed" {
        // Fresh statistics on relink's own tables, so later reruns, verify
        // and purge get good plans without waiting for autovacuum.
        if let Err(e) = control
            .batch_execute(&names.sql("ANALYZE {state}.ledger, {state}.rejects"))
            .await
        {
            tracing::warn!("cannot analyze relink's state tables: {e}");
        }
    }

    let counters = shared
        .counters
        .lock()
        .map(|c| c.clone())
        .unwrap_or_default();
    let checkpoint = state::load_run(&control, names, run_id)
        .await?
        .and_then(|r| r.checkpoint);
    // Everything up to the end committed only if nothing failed or stopped
    // (the reader may have reached the end with chunks still in flight).
    let all_committed = reached_end && error.is_none() && !shared.shutdown.requested();
    let scanned = match (all_committed, &checkpoint) {
        (true, _) => count_with_legacy(&control, names, start_after.as_deref(), None).await?,
        (false, Some(upto)) => {
            count_with_legacy(&control, names, start_after.as_deref(), Some(upto)).await?
        }
        // Stopped before any chunk committed: nothing was covered.
        (false, None) => 0,
    };
    let summary = summary(
        "run",
        Some(run_id),
        status,
        scanned,
        counters,
        shared.started,
    );
    print_summary(&summary, cfg.format, false)?;

    if let Some(err) = error {
        let at = checkpoint.map_or_else(
            || "no chunk committed yet".to_owned(),
            |c| format!("checkpoint after profile {c}"),
        );
        return Err(err.context(format!(
            "run {run_id} failed ({at}); rerun `relink run` to resume"
        )));
    }
    match status {
        "interrupted" => {
            tracing::warn!(
                "run {run_id} interrupted; checkpoint saved{}; rerun `relink run` to resume",
                checkpoint
                    .map(|c| format!(" after profile {c}"))
                    .unwrap_or_default()
            );
            Ok(Outcome::Interrupted)
        }
        "partial" => {
            tracing::info!("run {run_id} stopped at --limit; the next `relink run` continues it");
            Ok(Outcome::Done)
        }
        _ => Ok(Outcome::Done),
    }
}

/// Fails early and clearly when the role cannot write the application's
/// table (e.g. a read-only role), before any chunk is attempted.
async fn check_write_permission(client: &Client, names: &Names) -> Result<()> {
    let table = format!("{}.profile_links", names.app);
    let ok: bool = client
        .query_one("SELECT has_table_privilege($1, 'INSERT')", &[&table])
        .await
        .context("cannot check privileges on profile_links")?
        .get(0);
    let read_only: String = client
        .query_one("SELECT current_setting('transaction_read_only')", &[])
        .await?
        .get(0);
    if !ok || read_only == "on" {
        anyhow::bail!(
            "permission denied: this role cannot INSERT into {}.profile_links{}; a live run needs INSERT there (a dry run needs only SELECT)",
            names.app_raw,
            if read_only == "on" { " (the session is read-only)" } else { "" }
        );
    }
    Ok(())
}

/// Reads pages and hands them out as chunks; returns whether it reached the
/// end of the table (as opposed to stopping at --limit, a signal or a failure).
async fn read_chunks(
    shared: Arc<Shared>,
    after: Option<String>,
    sender: mpsc::Sender<Chunk>,
) -> Result<bool> {
    let mut reader = Reader::new(&shared.names, Filter::Pending, after, shared.cfg.chunk_size);
    let mut remaining = shared.cfg.limit.unwrap_or(u64::MAX);
    let mut seq = 0u64;
    let result = async {
        loop {
            if shared.stopping() {
                return Ok(false);
            }
            if remaining == 0 {
                return Ok(false);
            }
            let mut retry = Retry::new(shared.cfg.timeouts.attempts);
            let mut page = loop {
                let result = async {
                    let client = db::checkout(&shared.pool).await?;
                    reader.next_page(&**client).await
                }
                .await;
                match result {
                    Ok(page) => break page,
                    Err(e) => match retry.after(&e, "reading profiles", shared.stopping()).await {
                        Next::Retry => {}
                        Next::Stop => return Ok(false),
                        Next::Fail => return Err(retry.give_up(e, "reading profiles")),
                    },
                }
            };
            if page.is_empty() {
                return Ok(true);
            }
            let take = usize::try_from(remaining)
                .unwrap_or(usize::MAX)
                .min(page.len());
            page.truncate(take);
            remaining -= page.len() as u64;
            if let (Some(last), Ok(mut wm)) = (page.last(), shared.watermark.lock()) {
                wm.ends.insert(seq, last.id.clone());
            }
            if sender
                .send(Chunk {
                    seq,
                    profiles: page,
                })
                .await
                .is_err()
            {
                return Ok(false);
            }
            seq += 1;
        }
    }
    .await;
    if result.is_err() {
        shared.failed.store(true, Ordering::SeqCst);
    }
    result
}

/// A writer: takes chunks and commits each in one transaction, with retries.
async fn write_chunks(
    shared: Arc<Shared>,
    receiver: Arc<tokio::sync::Mutex<mpsc::Receiver<Chunk>>>,
) -> Result<()> {
    'chunks: loop {
        let chunk = receiver.lock().await.recv().await;
        let Some(chunk) = chunk else { return Ok(()) };
        if shared.stopping() {
            // Not started: it stays uncommitted and the checkpoint stays before it.
            continue;
        }
        let mut retry = Retry::new(shared.cfg.timeouts.attempts);
        let mut first = true;
        let counters = loop {
            let result = async {
                let client = db::checkout(&shared.pool).await?;
                write_one(&shared, client, &chunk, first).await
            }
            .await;
            first = false;
            let err = match result {
                Ok(c) => break c,
                Err(e) => e,
            };
            match retry
                .after(&err, "writing a chunk", shared.stopping())
                .await
            {
                Next::Retry => {}
                // Rolled back while stopping: stays after the checkpoint.
                // Keep draining the queue so the reader is never left blocked.
                Next::Stop => continue 'chunks,
                Next::Fail => {
                    shared.failed.store(true, Ordering::SeqCst);
                    let first = chunk.profiles.first().map(|p| p.id.as_str()).unwrap_or("?");
                    let err = retry.give_up(err, "writing a chunk");
                    return Err(
                        err.context(format!("chunk starting at profile {first} rolled back"))
                    );
                }
            }
        };
        if let Ok(mut wm) = shared.watermark.lock() {
            wm.commit(chunk.seq);
        }
        shared
            .progress
            .advance(chunk.profiles.len() as u64, counters.links_created);
        let links = shared
            .links
            .fetch_add(counters.links_created, Ordering::SeqCst)
            + counters.links_created;
        if let Ok(mut total) = shared.counters.lock() {
            total.merge(&counters);
        }
        throttle(&shared, links).await;
    }
}

/// One chunk, one transaction: plan against the current rows, COPY the
/// rows, the ledger and the rejects, save counters and checkpoint, commit.
async fn write_one(
    shared: &Shared,
    mut client: deadpool_postgres::Object,
    chunk: &Chunk,
    first: bool,
) -> Result<Counters> {
    let names = &shared.names;
    let tx = client
        .transaction()
        .await
        .context("cannot begin a chunk transaction")?;
    // No wait for the WAL flush at commit: a server crash can then lose the
    // last chunks whole (rows, ledger and checkpoint together, never part of
    // one), which the next run simply redoes; it spares the server an fsync
    // per chunk.
    tx.batch_execute("SET LOCAL synchronous_commit = off")
        .await
        .context("cannot set up the chunk transaction")?;
    let now = sink::transaction_time(&tx).await?;
    let t: &tokio_postgres::Transaction<'_> = &tx;
    let done_before;
    let profiles: &[SourceProfile] = if first {
        &chunk.profiles
    } else {
        // A retry after a lost COMMIT must not plan twice what did commit.
        done_before = drop_committed(t, names, shared.run_id, &chunk.profiles).await?;
        &done_before
    };
    let planned: Vec<Planned<'_>> = pipeline::plan_chunk(t, names, true, profiles).await?;
    sink::write_chunk(t, names, shared.run_id, now, &planned).await?;
    let counters = Counters::of_plans(planned.iter().map(|p| &p.plan));
    let checkpoint = shared
        .watermark
        .lock()
        .ok()
        .and_then(|wm| wm.checkpoint_for(chunk.seq));
    state::record_chunk(
        t,
        names,
        shared.run_id,
        checkpoint.as_deref(),
        &counters.to_flat(),
    )
    .await?;
    tx.commit().await.context("cannot commit the chunk")?;
    Ok(counters)
}

/// The chunk's profiles this run has not recorded in the ledger yet.
async fn drop_committed(
    tx: &impl GenericClient,
    names: &Names,
    run_id: i64,
    profiles: &[SourceProfile],
) -> Result<Vec<SourceProfile>> {
    let ids: Vec<&str> = profiles.iter().map(|p| p.id.as_str()).collect();
    let rows = tx
        .query(
            &names.sql(
                "SELECT profile_id FROM {state}.ledger WHERE run_id = $1 AND profile_id = ANY($2)",
            ),
            &[&run_id, &ids],
        )
        .await
        .context("cannot check which profiles of the chunk already committed")?;
    let done: BTreeSet<String> = rows.iter().map(|r| r.get(0)).collect();
    Ok(profiles
        .iter()
        .filter(|p| !done.contains(&p.id))
        .cloned()
        .collect())
}

/// `--max-rate` and `--pause`.
async fn throttle(shared: &Shared, links_so_far: u64) {
    if let Some(rate) = shared.cfg.max_rate {
        let due = std::time::Duration::from_secs_f64(links_so_far as f64 / rate as f64);
        let elapsed = shared.started.elapsed();
        if due > elapsed {
            tokio::time::sleep(due - elapsed).await;
        }
    }
    if let Some(pause) = shared.cfg.pause {
        tokio::time::sleep(pause).await;
    }
}

/// Holds the advisory lock for the whole run: if its connection drops (e.g.
/// a server restart), takes the lock again on a new one, and stops the run
/// if someone else got it meanwhile. Returns the connection at the end.
async fn keep_lock(
    shared: Arc<Shared>,
    common: Common,
    session: Session,
    mut control: Client,
) -> Result<Client> {
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        if !control.is_closed() {
            continue;
        }
        tracing::warn!("lost the connection holding the lock; reconnecting");
        let mut attempt = 0;
        control = loop {
            let again = async {
                let c = db::connect(&common.database, &session).await?;
                lock::acquire(&c, &common.names).await?;
                Ok::<_, anyhow::Error>(c)
            }
            .await;
            match again {
                Ok(c) => break c,
                Err(e) if db::is_retryable(&e) && attempt < 30 => {
                    attempt += 1;
                    tokio::time::sleep(db::backoff(attempt)).await;
                }
                Err(e) => {
                    tracing::error!("cannot take the lock again: {e:#}; stopping");
                    shared.failed.store(true, Ordering::SeqCst);
                    return Err(e);
                }
            }
        };
        tracing::info!("lock taken again");
    }
}

/// An estimate of the profiles a run will plan, for the progress bar: the
/// profiles with a legacy value after the checkpoint, less those the ledger
/// has (from the planner's row estimate, to stay cheap).
async fn pending_estimate(client: &Client, names: &Names, after: Option<&str>) -> Result<u64> {
    let with_legacy = count_with_legacy(client, names, after, None).await?;
    if after.is_some() {
        return Ok(with_legacy);
    }
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

/// Profiles with a legacy value in the keyset range (after, upto].
///
/// # Errors
/// On a database error.
pub async fn count_with_legacy(
    client: &impl GenericClient,
    names: &Names,
    after: Option<&str>,
    upto: Option<&str>,
) -> Result<u64> {
    let n: i64 = client
        .query_one(
            &names.sql(
                "SELECT count(*) FROM {app}.profiles p
                  WHERE p.\"socialLinks\" IS NOT NULL
                    AND ($1::text IS NULL OR p.id > $1) AND ($2::text IS NULL OR p.id <= $2)",
            ),
            &[&after, &upto],
        )
        .await
        .context("cannot count profiles with legacy links")?
        .get(0);
    Ok(u64::try_from(n).unwrap_or(0))
}

fn summary(
    mode: &'static str,
    run_id: Option<i64>,
    status: &str,
    scanned: u64,
    counters: Counters,
    started: Instant,
) -> Summary {
    let elapsed = started.elapsed().as_secs_f64();
    Summary {
        mode,
        run_id,
        status: status.to_owned(),
        profiles_scanned: scanned,
        profiles_unchanged: scanned.saturating_sub(counters.profiles_planned),
        links_per_second: counters.links_created as f64 / elapsed.max(0.001),
        counters,
        elapsed_seconds: elapsed,
    }
}

fn print_summary(summary: &Summary, format: OutputFormat, dry_run: bool) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    summary.print(format == OutputFormat::Json, &mut out)?;
    if dry_run && format == OutputFormat::Text {
        writeln!(out, "This was a DRY RUN. No changes were made.")?;
    }
    out.flush()?;
    Ok(())
}

/// The dry run: the live run's reader and planner, printing instead of
/// writing, on a read-only session that never takes the lock or creates the
/// state schema. A reader task prefetches the next page while one is planned.
async fn dry_run(common: &Common, cfg: &RunConfig, shutdown: Shutdown) -> Result<Outcome> {
    let names = &common.names;
    let session = Session::new("dry-run", Some(cfg.timeouts), true);
    let client = db::connect(&common.database, &session).await?;
    preflight::check(&client, names).await?;
    let with_ledger = state::exists(&client, names).await?;
    // Plan what the next live run would do: it resumes an unfinished run
    // after its checkpoint (unless --restart), so the dry run does too.
    let start_after =
        match (with_ledger && !cfg.restart).then(|| state::resumable(&client, names, "run")) {
            Some(find) => find.await?.and_then(|run| {
                let checkpoint = run.checkpoint?;
                tracing::info!(
                "the next run would resume run {} after profile {checkpoint}; planning from there",
                run.id
            );
                Some(checkpoint)
            }),
            None => None,
        };
    let reader_client = db::connect(&common.database, &session).await?;
    let started = Instant::now();
    let total = count_with_legacy(&client, names, start_after.as_deref(), None).await?;
    let progress = Progress::new("dry run", total, !common.quiet);

    let (sender, mut pages) = mpsc::channel::<Vec<SourceProfile>>(2);
    let filter = if with_ledger {
        Filter::Pending
    } else {
        Filter::All
    };
    let mut reader = Reader::new(names, filter, start_after.clone(), cfg.chunk_size);
    let limit = cfg.limit.unwrap_or(u64::MAX);
    let reader_shutdown = shutdown.clone();
    let reader_task = tokio::spawn(async move {
        let mut remaining = limit;
        while remaining > 0 && !reader_shutdown.requested() {
            let mut page = reader.next_page(&reader_client).await?;
            if page.is_empty() {
                return Ok::<_, anyhow::Error>((true, reader.position().map(str::to_owned)));
            }
            page.truncate(usize::try_from(remaining).unwrap_or(usize::MAX));
            remaining -= page.len() as u64;
            if sender.send(page).await.is_err() {
                break;
            }
        }
        Ok((false, reader.position().map(str::to_owned)))
    });

    let mut report = open_report(cfg.report.as_deref())?;
    let stdout = std::io::stdout();
    let mut counters = Counters::default();
    // `--report -` owns stdout: no runbook lines there, and the summary goes to stderr.
    let report_on_stdout = cfg.report.as_deref().is_some_and(|p| p.as_os_str() == "-");
    let print_profiles = cfg.format == OutputFormat::Text && !common.quiet && !report_on_stdout;
    while let Some(page) = pages.recv().await {
        if shutdown.requested() {
            break;
        }
        let planned = pipeline::plan_chunk(&client, names, with_ledger, &page).await?;
        let mut out = std::io::BufWriter::new(stdout.lock());
        for p in &planned {
            if print_profiles {
                report::print_dry_profile(p, &mut out)?;
            }
            if let Some(report) = report.as_mut() {
                serde_json::to_writer(&mut *report, &report::report_line(p))?;
                writeln!(report)?;
            }
        }
        out.flush()?;
        let chunk = Counters::of_plans(planned.iter().map(|p| &p.plan));
        progress.advance(page.len() as u64, chunk.links_created);
        counters.merge(&chunk);
    }
    drop(pages);
    progress.finish();
    if let Some(mut report) = report {
        report.flush().context("cannot write the report")?;
    }
    let (reached_end, last) = reader_task
        .await
        .map_err(|e| anyhow!("the reader task failed: {e}"))??;
    let interrupted = shutdown.requested();
    let upto = if reached_end { None } else { last };
    let scanned =
        count_with_legacy(&client, names, start_after.as_deref(), upto.as_deref()).await?;
    let status = if interrupted {
        "interrupted"
    } else if reached_end {
        "completed"
    } else {
        "partial"
    };
    let summary = summary("dry-run", None, status, scanned, counters, started);
    if report_on_stdout {
        summary.print(cfg.format == OutputFormat::Json, &mut std::io::stderr())?;
    } else {
        print_summary(&summary, cfg.format, true)?;
    }
    Ok(if interrupted {
        Outcome::Interrupted
    } else {
        Outcome::Done
    })
}

fn open_report(path: Option<&std::path::Path>) -> Result<Option<Box<dyn Write>>> {
    Ok(match path {
        None => None,
        Some(p) if p.as_os_str() == "-" => {
            Some(Box::new(std::io::BufWriter::new(std::io::stdout())))
        }
        Some(p) => Some(Box::new(std::io::BufWriter::new(
            std::fs::File::create(p)
                .with_context(|| format!("cannot create the report file {}", p.display()))?,
        ))),
    })
}
