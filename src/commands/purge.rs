//! `relink purge` (SPEC §8): deletes only rows relink created, as the ledger
//! records them, and only those users have not edited since (unless
//! `--include-edited`), in chunked transactions that also update the ledger
//! so a later `run` migrates those profiles again with the same ids.
//!
//! Ledger bookkeeping per purged profile: deleted ids leave their ledger row
//! (a row left empty is deleted); ids of rows kept because edited, or
//! already deleted by the user, stay, so `run` never re-creates them; and
//! every remaining ledger row of the profile gets a blank fingerprint, so
//! the profile is pending again.

use std::io::{IsTerminal, Write};
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use serde::Serialize;
use serde_json::json;
use tokio_postgres::GenericClient;

use crate::cli::OutputFormat;
use crate::config::{Common, Names, PurgeConfig};
use crate::db::{self, Next, Retry, Session};
use crate::progress::Progress;
use crate::shutdown::Shutdown;
use crate::state::{self, Owner};
use crate::{lock, preflight, Outcome};

/// Scope of a purge: `$1` the chunk's profile ids, `$2` the run id or NULL.
/// `x` is each link id the ledger row records.
const SCOPE: &str = "SELECT l.profile_id, l.run_id, x.id, l.migrated_at
                       FROM {state}.ledger l CROSS JOIN LATERAL unnest(l.link_ids) AS x(id)
                      WHERE l.profile_id = ANY($1) AND ($2::bigint IS NULL OR l.run_id = $2)";

/// Figures of a purge.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PurgeCounters {
    pub profiles: u64,
    pub links_deleted: u64,
    pub kept_edited: u64,
    pub already_gone: u64,
}

impl PurgeCounters {
    fn merge(&mut self, o: &Self) {
        self.profiles += o.profiles;
        self.links_deleted += o.links_deleted;
        self.kept_edited += o.kept_edited;
        self.already_gone += o.already_gone;
    }
}

/// # Errors
/// Fatal errors (exit 1), or [`lock::LockHeld`] (exit 4).
pub async fn purge(common: &Common, cfg: &PurgeConfig, shutdown: Shutdown) -> Result<Outcome> {
    let names = &common.names;
    let session = Session::new("purge", Some(cfg.timeouts), cfg.dry_run);
    let control = db::connect(&common.database, &session).await?;
    preflight::check(&control, names).await?;
    if !state::exists(&control, names).await? {
        bail!("nothing to purge: relink's state schema {:?} does not exist (no live run has happened here)", names.state_raw);
    }
    if let Some(id) = cfg.run {
        match state::load_run(&control, names, id).await? {
            Some(run) if run.mode == "run" => {}
            Some(run) => bail!(
                "run {id} is a {} run, not a migration run: see `relink status`",
                run.mode
            ),
            None => bail!("there is no run {id}: see `relink status` for run ids"),
        }
    }
    let in_scope: i64 = control
        .query_one(
            &names.sql(
                "SELECT coalesce(sum(cardinality(link_ids)), 0)::bigint FROM {state}.ledger
                  WHERE ($1::bigint IS NULL OR run_id = $1)",
            ),
            &[&cfg.run],
        )
        .await
        .context("cannot count the links in the ledger")?
        .get(0);
    let scope = cfg
        .run
        .map_or_else(|| "all runs".to_owned(), |id| format!("run {id}"));

    if !cfg.dry_run && !cfg.yes {
        confirm(&format!(
            "Delete up to {in_scope} profile links created by relink ({scope}{}) from {}? Rows users created are kept. [y/N] ",
            if cfg.include_edited { ", including rows users edited since" } else { "; rows users edited since are kept" },
            common.database
        ))?;
    }

    let started = Instant::now();
    let mut run_id = None;
    if !cfg.dry_run {
        lock::acquire(&control, names).await?;
        state::ensure_schema(&control, names).await?;
        let options = json!({"run": cfg.run, "include_edited": cfg.include_edited, "chunk_size": cfg.chunk_size});
        let id = state::start_run(&control, names, "purge", &options, &Owner::current()).await?;
        tracing::info!("started purge {id} ({scope})");
        run_id = Some(id);
    }

    let pool = db::pool(&common.database, &session, 1)?;
    let progress = Progress::new(
        "purging",
        u64::try_from(in_scope).unwrap_or(0),
        !common.quiet,
    );
    let mut after: Option<String> = None;
    let mut totals = PurgeCounters::default();
    // Keyset pages that walk the ledger's primary key: two texts rather than
    // `$1 IS NULL OR profile_id > $1`, and no DISTINCT (a profile with rows
    // of several runs is deduplicated below), which without statistics on a
    // fresh ledger was planned as a scan of the whole table per page.
    let page = |keyset: &str| {
        names.sql(&format!(
            "SELECT profile_id FROM {{state}}.ledger
              WHERE {keyset} AND ($2::bigint IS NULL OR run_id = $2)
              ORDER BY profile_id LIMIT $3"
        ))
    };
    let (page_first, page_next) = (page("$1::text IS NULL"), page("profile_id > $1"));
    let limit = i64::try_from(cfg.chunk_size).unwrap_or(i64::MAX);
    let stdout = std::io::stdout();
    let result: Result<bool> = async {
        loop {
            if shutdown.requested() {
                return Ok(false);
            }
            let mut retry = Retry::new(cfg.timeouts.attempts);
            let chunk = loop {
                let result = async {
                    let mut client = db::checkout(&pool).await?;
                    let mut profiles: Vec<String> = client
                        .query(
                            if after.is_some() {
                                &page_next
                            } else {
                                &page_first
                            },
                            &[&after, &cfg.run, &limit],
                        )
                        .await
                        .context("cannot read the ledger")?
                        .iter()
                        .map(|r| r.get(0))
                        .collect();
                    let fetched = profiles.len();
                    profiles.dedup();
                    if profiles.is_empty() {
                        return Ok((profiles, fetched, PurgeCounters::default()));
                    }
                    let counters = if let Some(run_id) = run_id {
                        let tx = client.transaction().await?;
                        let c = purge_chunk(&*tx, names, &profiles, cfg, run_id).await?;
                        tx.commit().await.context("cannot commit the purge chunk")?;
                        c
                    } else {
                        preview_chunk(
                            &**client,
                            names,
                            &profiles,
                            cfg,
                            &mut stdout.lock(),
                            common.quiet,
                        )
                        .await?
                    };
                    Ok::<_, anyhow::Error>((profiles, fetched, counters))
                }
                .await;
                match result {
                    Ok(c) => break c,
                    Err(e) => match retry
                        .after(&e, "purging a chunk", shutdown.requested())
                        .await
                    {
                        Next::Retry => {}
                        Next::Stop => return Ok(false),
                        Next::Fail => return Err(retry.give_up(e, "purging a chunk")),
                    },
                }
            };
            let (profiles, fetched, counters) = chunk;
            let Some(last) = profiles.last() else {
                return Ok(true);
            };
            after = Some(last.clone());
            progress.advance(
                counters.links_deleted + counters.kept_edited + counters.already_gone,
                counters.links_deleted,
            );
            totals.merge(&counters);
            if fetched < cfg.chunk_size {
                return Ok(true);
            }
        }
    }
    .await;
    progress.finish();

    let status = match &result {
        Err(_) => "failed",
        Ok(false) => "interrupted",
        Ok(true) => "completed",
    };
    if let Some(id) = run_id {
        let message = result.as_ref().err().map(|e| format!("{e:#}"));
        let control = if control.is_closed() {
            db::connect(&common.database, &session).await?
        } else {
            control
        };
        state::finish_run(&control, names, id, status, message.as_deref()).await?;
    }
    print_summary(&totals, cfg, run_id, status, started)?;
    match result {
        Err(e) => {
            Err(e.context("purge failed; rerun `relink purge` to continue (it is idempotent)"))
        }
        Ok(false) => Ok(Outcome::Interrupted),
        Ok(true) => Ok(Outcome::Done),
    }
}

/// Deletes a chunk's unedited migrated rows and updates the ledger, in the
/// caller's transaction. The purge's progress is recorded on its run.
async fn purge_chunk(
    tx: &impl GenericClient,
    names: &Names,
    profiles: &[String],
    cfg: &PurgeConfig,
    run_id: i64,
) -> Result<PurgeCounters> {
    // The chunk's recorded links, then one statement over them passed as
    // arrays: its row estimate is small, so every lookup is an index probe
    // (a join against the ledger could be planned as a scan of the table).
    let rows = tx
        .query(
            &names.sql(
                "SELECT x.id, l.profile_id, l.migrated_at
                   FROM {state}.ledger l CROSS JOIN LATERAL unnest(l.link_ids) AS x(id)
                  WHERE l.profile_id = ANY($1) AND ($2::bigint IS NULL OR l.run_id = $2)",
            ),
            &[&profiles, &cfg.run],
        )
        .await
        .context("cannot read the ledger")?;
    let ids: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    let owners: Vec<String> = rows.iter().map(|r| r.get(1)).collect();
    let times: Vec<std::time::SystemTime> = rows.iter().map(|r| r.get(2)).collect();
    // One statement, one snapshot: what is kept because edited (compared at
    // the column's millisecond precision: both are TIMESTAMP(3)), and the
    // delete itself.
    let row = tx
        .query_one(
            &names.sql(
                "WITH scope AS (SELECT * FROM unnest($1::text[], $2::text[], $3::timestamp[]) AS s(id, profile_id, migrated_at)),
                      edited AS (SELECT count(*) AS n FROM scope s JOIN {app}.profile_links pl
                                   ON pl.id = s.id AND pl.\"profileId\" = s.profile_id
                                WHERE NOT $4 AND pl.\"updatedAt\" > s.migrated_at),
                      deleted AS (DELETE FROM {app}.profile_links pl USING scope s
                                   WHERE pl.id = s.id AND pl.\"profileId\" = s.profile_id
                                     AND ($4 OR pl.\"updatedAt\" <= s.migrated_at)
                                  RETURNING pl.id)
                 SELECT (SELECT n FROM edited), coalesce((SELECT array_agg(id) FROM deleted), '{}'::text[])",
            ),
            &[&ids, &owners, &times, &cfg.include_edited],
        )
        .await
        .context("cannot delete migrated rows")?;
    let in_scope = i64::try_from(ids.len()).unwrap_or(i64::MAX);
    let edited: i64 = row.get(0);
    let deleted: Vec<String> = row.get(1);
    tx.execute(
        &names.sql(
            "UPDATE {state}.ledger l
                SET link_ids = k.ids, link_keys = k.keys
               FROM (SELECT l.profile_id, l.run_id,
                            coalesce(array_agg(x.id ORDER BY x.n) FILTER (WHERE x.id <> ALL($3)), '{}') AS ids,
                            coalesce(array_agg(x.key ORDER BY x.n) FILTER (WHERE x.id <> ALL($3)), '{}') AS keys
                       FROM {state}.ledger l
                       LEFT JOIN LATERAL unnest(l.link_ids, l.link_keys) WITH ORDINALITY AS x(id, key, n) ON true
                      WHERE l.profile_id = ANY($1) AND ($2::bigint IS NULL OR l.run_id = $2)
                      GROUP BY l.profile_id, l.run_id) k
              WHERE l.profile_id = k.profile_id AND l.run_id = k.run_id",
        ),
        &[&profiles, &cfg.run, &deleted],
    )
    .await
    .context("cannot update the ledger")?;
    tx.execute(
        &names.sql(
            "DELETE FROM {state}.ledger
              WHERE profile_id = ANY($1) AND ($2::bigint IS NULL OR run_id = $2) AND cardinality(link_ids) = 0",
        ),
        &[&profiles, &cfg.run],
    )
    .await
    .context("cannot delete ledger rows")?;
    // The profiles are pending again; their rejects come back when replanned.
    tx.execute(
        &names.sql("DELETE FROM {state}.rejects WHERE profile_id = ANY($1)"),
        &[&profiles],
    )
    .await
    .context("cannot clear the rejects of purged profiles")?;
    tx.execute(
        &names.sql("UPDATE {state}.ledger SET fingerprint = '' WHERE profile_id = ANY($1) AND fingerprint <> ''"),
        &[&profiles],
    )
    .await
    .context("cannot mark purged profiles pending")?;
    let counters = PurgeCounters {
        profiles: profiles.len() as u64,
        links_deleted: deleted.len() as u64,
        kept_edited: u64::try_from(edited).unwrap_or(0),
        already_gone: u64::try_from(in_scope - edited)
            .unwrap_or(0)
            .saturating_sub(deleted.len() as u64),
    };
    let last = profiles.last().map(String::as_str);
    let flat = serde_json::to_value(&counters)?;
    state::record_chunk(tx, names, run_id, last, &flat).await?;
    Ok(counters)
}

/// `--dry-run`: lists what a purge of the chunk would delete; writes nothing.
async fn preview_chunk(
    client: &impl GenericClient,
    names: &Names,
    profiles: &[String],
    cfg: &PurgeConfig,
    out: &mut impl Write,
    quiet: bool,
) -> Result<PurgeCounters> {
    let rows = client
        .query(
            &names.sql(&format!(
                "WITH scope AS ({SCOPE})
                 SELECT s.id, s.run_id, pl.\"userId\", pl.label, pl.type, pl.url,
                        pl.id IS NOT NULL AS present, coalesce(pl.\"updatedAt\" > s.migrated_at, false) AS edited
                   FROM scope s LEFT JOIN {{app}}.profile_links pl ON pl.id = s.id AND pl.\"profileId\" = s.profile_id
                  ORDER BY s.profile_id, s.run_id"
            )),
            &[&profiles, &cfg.run],
        )
        .await
        .context("cannot read the rows a purge would delete")?;
    let mut c = PurgeCounters {
        profiles: profiles.len() as u64,
        ..PurgeCounters::default()
    };
    for r in &rows {
        let present: bool = r.get(6);
        let edited: bool = r.get(7);
        if !present {
            c.already_gone += 1;
        } else if edited && !cfg.include_edited {
            c.kept_edited += 1;
        } else {
            c.links_deleted += 1;
            if !quiet {
                writeln!(
                    out,
                    "[DRY RUN] Would delete {} (run {}) of user {}: {} ({}): {}",
                    r.get::<_, String>(0),
                    r.get::<_, i64>(1),
                    r.get::<_, String>(2),
                    r.get::<_, String>(3),
                    r.get::<_, String>(4),
                    r.get::<_, String>(5)
                )?;
            }
        }
    }
    Ok(c)
}

/// Asks on a terminal; refuses without one.
fn confirm(question: &str) -> Result<()> {
    if !std::io::stdin().is_terminal() {
        bail!("refusing to purge without confirmation: stdin is not a terminal; pass --yes to purge, or --dry-run to see what would go");
    }
    eprint!("{question}");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if !matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        bail!("purge cancelled; nothing was deleted");
    }
    Ok(())
}

fn print_summary(
    c: &PurgeCounters,
    cfg: &PurgeConfig,
    run_id: Option<i64>,
    status: &str,
    started: Instant,
) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let elapsed = started.elapsed().as_secs_f64();
    if cfg.format == OutputFormat::Json {
        serde_json::to_writer(
            &mut out,
            &json!({"mode": if cfg.dry_run { "purge-dry-run" } else { "purge" }, "run_id": run_id, "status": status,
                    "scope_run": cfg.run, "include_edited": cfg.include_edited, "profiles": c.profiles,
                    "links_deleted": c.links_deleted, "kept_edited": c.kept_edited, "already_gone": c.already_gone,
                    "elapsed_seconds": elapsed}),
        )?;
        writeln!(out)?;
        return Ok(());
    }
    let verb = if cfg.dry_run {
        "would be deleted"
    } else {
        "deleted"
    };
    match run_id {
        Some(id) => writeln!(out, "Summary of purge {id} ({status})")?,
        None => writeln!(out, "Summary (purge dry run)")?,
    }
    writeln!(out, "  {:<34} {:>12}", "profiles in scope", c.profiles)?;
    writeln!(
        out,
        "  {:<34} {:>12}",
        format!("links {verb}"),
        c.links_deleted
    )?;
    writeln!(
        out,
        "  {:<34} {:>12}",
        "kept: edited by users since", c.kept_edited
    )?;
    writeln!(
        out,
        "  {:<34} {:>12}",
        "already gone (deleted by users)", c.already_gone
    )?;
    writeln!(out, "  {:<34} {:>12.1} s", "elapsed", elapsed)?;
    if cfg.dry_run {
        writeln!(out, "This was a DRY RUN. No changes were made.")?;
    }
    Ok(())
}
