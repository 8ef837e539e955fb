//! What relink tells the operator: counters and the run summary (text or
//! JSON), the dry run's per-profile lines, and the JSONL plan report.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context as _, Result};
use serde::Serialize;
use serde_json::{json, Value};

use crate::chunk::Planned;
use crate::cli::OutputFormat;
use crate::config::PurgeConfig;
use crate::forecast::Forecast;
use crate::plan::Counters;
use crate::removal::PurgeCounters;
use crate::state::RunStatus;
use crate::throttle::Throttled;

/// The end-of-run summary (SPEC §6).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub mode: &'static str,
    pub run_id: Option<i64>,
    pub status: RunStatus,
    /// Profiles with a legacy value in the key range this invocation covered.
    pub profiles_scanned: u64,
    /// Of those, skipped because their ledger fingerprint matched (not
    /// counting those gone since read: `profiles_gone`).
    pub profiles_unchanged: u64,
    #[serde(flatten)]
    pub counters: Counters,
    pub elapsed_seconds: f64,
    pub links_per_second: f64,
    /// Seconds the run waited before chunks, by cause (SPEC §13).
    pub throttled_seconds: Throttled,
    /// Bytes of WAL the server wrote during a live run (SPEC §11): its WAL
    /// position's advance, so other sessions' writes count too. None for a
    /// dry run, or when the server cannot say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wal_bytes: Option<u64>,
    /// A run applying a plan (SPEC §15): the profiles of the plan that
    /// drifted, not written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drifted: Option<u64>,
    /// A dry run's forecast of the live run, or the forecast of the plan
    /// a run applies (set beside its actual figures).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forecast: Option<Forecast>,
}

impl Summary {
    /// The summary of `mode` (`run`, `dry-run`): `scanned` profiles with a
    /// legacy value in the key range covered, of which `counters` were planned.
    pub fn new(
        mode: &'static str,
        run_id: Option<i64>,
        status: RunStatus,
        scanned: u64,
        counters: Counters,
        started: Instant,
        throttled_seconds: Throttled,
    ) -> Self {
        let elapsed = started.elapsed().as_secs_f64();
        Self {
            throttled_seconds,
            mode,
            run_id,
            status,
            profiles_scanned: scanned,
            profiles_unchanged: scanned
                .saturating_sub(counters.profiles_planned)
                .saturating_sub(counters.profiles_gone)
                .saturating_sub(counters.profiles_drifted),
            links_per_second: counters.links_created as f64 / elapsed.max(0.001),
            counters,
            elapsed_seconds: elapsed,
            wal_bytes: None,
            drifted: None,
            forecast: None,
        }
    }

    /// The same with a forecast (a dry run's, or the applied plan's).
    pub fn with_forecast(mut self, forecast: Option<Forecast>) -> Self {
        self.forecast = forecast;
        self
    }

    /// The summary of a run applying a plan: its drifted profiles counted.
    pub fn applying_plan(mut self) -> Self {
        self.drifted = Some(self.counters.profiles_drifted);
        self
    }

    /// The same with the WAL the run made the server write.
    pub fn with_wal(mut self, wal_bytes: Option<u64>) -> Self {
        self.wal_bytes = wal_bytes;
        self
    }

    /// Prints the summary on stdout (on `out` for `--report -`), ending a
    /// dry run's text with the runbook's reminder.
    ///
    /// # Errors
    /// When stdout cannot be written (e.g. a closed pipe).
    pub fn print_to_stdout(&self, format: OutputFormat, dry_run: bool) -> Result<()> {
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        self.print(format == OutputFormat::Json, &mut out)?;
        if dry_run && format == OutputFormat::Text {
            writeln!(out, "This was a DRY RUN. No changes were made.")?;
        }
        out.flush()?;
        Ok(())
    }

    pub fn print(&self, json_format: bool, out: &mut impl Write) -> std::io::Result<()> {
        if json_format {
            serde_json::to_writer(&mut *out, self)?;
            return writeln!(out);
        }
        let c = &self.counters;
        let title = match self.run_id {
            Some(id) => format!("Summary of {} {id} ({})", self.mode, self.status),
            None => format!("Summary ({})", self.mode),
        };
        writeln!(out, "{title}")?;
        let rows: [(&str, u64); 11] = [
            ("profiles scanned", self.profiles_scanned),
            ("  migrated", c.profiles_migrated),
            ("  unchanged since last run", self.profiles_unchanged),
            ("  already present", c.profiles_already_present),
            ("  without valid links", c.profiles_without_valid_links),
            ("  deleted since read", c.profiles_gone),
            ("links created", c.links_created),
            ("duplicates skipped", c.duplicates),
            ("handles expanded", c.expanded),
            ("schemes repaired", c.repaired),
            ("values rejected", c.rejected()),
        ];
        for (name, n) in rows {
            writeln!(out, "  {name:<28} {n:>12}")?;
        }
        for (reason, n) in &c.rejects {
            writeln!(out, "    {reason:<26} {n:>12}")?;
        }
        if let Some(n) = self.drifted {
            writeln!(out, "  {:<28} {n:>12}", "drifted from the plan")?;
        }
        writeln!(out, "  {:<28} {:>12.1} s", "elapsed", self.elapsed_seconds)?;
        if self.run_id.is_some() {
            for (cause, seconds) in &self.throttled_seconds {
                let name = format!("throttled: {}", cause.as_str().replace('_', " "));
                writeln!(out, "  {name:<28} {seconds:>12.1} s")?;
            }
        }
        writeln!(
            out,
            "  {:<28} {:>12.0} links/s",
            "rate", self.links_per_second
        )?;
        if let Some(bytes) = self.wal_bytes {
            // Whole MiB for people; the exact figure is in --format json.
            // Per link only when links were created (a rerun's bytes are
            // the state's bookkeeping and whatever else the server wrote).
            let per_link = match c.links_created {
                0 => String::new(),
                links => format!("{} B/link; ", bytes / links),
            };
            writeln!(
                out,
                "  {:<28} {:>12.1} MiB ({per_link}the whole server's)",
                "WAL written",
                bytes as f64 / 1_048_576.0
            )?;
        }
        if let Some(forecast) = &self.forecast {
            if self.run_id.is_some() {
                forecast.print_beside(
                    c.links_created,
                    self.elapsed_seconds,
                    self.wal_bytes,
                    out,
                )?;
            } else {
                forecast.print(out)?;
            }
        }
        Ok(())
    }
}

/// Prints one profile in the runbook's dry-run format (SPEC §7). Profiles
/// with nothing to create and nothing skipped print nothing.
pub fn print_dry_profile(planned: &Planned<'_>, out: &mut impl Write) -> std::io::Result<()> {
    let plan = &planned.plan;
    if plan.links.is_empty() && plan.skipped.is_empty() {
        return Ok(());
    }
    let n = plan.links.len();
    writeln!(
        out,
        "Profile {}: Found {n} links to migrate",
        planned.profile.user_id
    )?;
    writeln!(out, "  [DRY RUN] Would create {n} profile links")?;
    for link in &plan.links {
        writeln!(out, "  - {} ({}): {}", link.label, link.link_type, link.url)?;
    }
    for skipped in &plan.skipped {
        let shown = crate::sink::truncate(&skipped.raw, 200);
        let ellipsis = if shown.len() < skipped.raw.len() {
            "…"
        } else {
            ""
        };
        writeln!(
            out,
            "  ! skipped {}: {}{ellipsis} ({})",
            skipped.key.as_deref().unwrap_or("-"),
            serde_json::to_string(shown).unwrap_or_default(),
            skipped.reason.as_str()
        )?;
    }
    Ok(())
}

/// One line of the `--report` JSONL: a stable format for review tooling.
pub fn report_line(planned: &Planned<'_>) -> Value {
    let plan = &planned.plan;
    let skipped = |dups: bool| {
        plan.skipped
            .iter()
            .filter(|s| s.reason.is_reject() != dups)
            .map(|s| json!({"key": s.key, "raw": s.raw, "reason": s.reason}))
            .collect::<Vec<_>>()
    };
    json!({
        "profile_id": planned.profile.id,
        "user_id": planned.profile.user_id,
        "links": plan.links.iter().map(|l| json!({
            "id": l.id, "label": l.label, "type": l.link_type, "url": l.url,
            "position": l.position, "key": l.key, "source_key": l.source_key,
        })).collect::<Vec<_>>(),
        "duplicates": skipped(true),
        "rejects": skipped(false),
        "expanded": plan.expanded,
        "repaired": plan.repaired,
    })
}

/// The summary of a purge (or its dry run) on stdout.
///
/// # Errors
/// When stdout cannot be written.
pub fn print_purge_summary(
    c: &PurgeCounters,
    cfg: &PurgeConfig,
    run_id: Option<i64>,
    status: RunStatus,
    started: Instant,
    throttled: &Throttled,
) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let elapsed = started.elapsed().as_secs_f64();
    if cfg.walk.format == OutputFormat::Json {
        serde_json::to_writer(
            &mut out,
            &json!({"mode": if cfg.dry_run { "purge-dry-run" } else { "purge" }, "run_id": run_id, "status": status,
                    "scope_run": cfg.run, "include_edited": cfg.include_edited, "profiles": c.profiles,
                    "links_deleted": c.links_deleted, "kept_edited": c.kept_edited, "already_gone": c.already_gone,
                    "elapsed_seconds": elapsed, "throttled_seconds": throttled}),
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
    if run_id.is_some() {
        for (cause, seconds) in throttled {
            let name = format!("throttled: {}", cause.as_str().replace('_', " "));
            writeln!(out, "  {name:<34} {seconds:>12.1} s")?;
        }
    }
    if cfg.dry_run {
        writeln!(out, "This was a DRY RUN. No changes were made.")?;
    }
    Ok(())
}

/// Opens `--report FILE` (`-`: stdout) for JSONL lines.
///
/// # Errors
/// When the file cannot be created.
pub fn open_report(path: Option<&Path>) -> Result<Option<Box<dyn Write + Send>>> {
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
