//! The forecast of SPEC §15: what a live run will cost — links to write,
//! its duration and its WAL — at the rates of the most recent completed
//! live run recorded in the state schema, or of a rehearsal's JSON summary
//! (`--forecast-from FILE`); no forecast when neither exists. A dry run
//! prints it and a plan carries it; a run applying the plan sets its actual
//! figures beside it.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_postgres::GenericClient;

use crate::config::Names;

/// Rates to forecast with, and where they come from.
#[derive(Debug, Clone, PartialEq)]
pub struct Rates {
    /// `run 7 (completed …)` or `rehearsal FILE`.
    pub source: String,
    pub links_per_second: f64,
    /// None when the source did not know its WAL.
    pub wal_bytes_per_link: Option<f64>,
}

impl Rates {
    /// The rates of a summary's figures, if it wrote links in measurable
    /// time.
    fn of(source: String, links: f64, seconds: f64, wal_bytes: Option<f64>) -> Option<Self> {
        (links > 0.0 && seconds > 0.0).then(|| Self {
            source,
            links_per_second: links / seconds,
            wal_bytes_per_link: wal_bytes.map(|w| w / links),
        })
    }

    /// The rates of a rehearsal: the JSON summary of `relink run --format
    /// json` saved in `path`.
    ///
    /// # Errors
    /// When the file cannot be read, is not such a summary, or wrote no
    /// links (no rate to take).
    pub fn of_rehearsal(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read --forecast-from {}", path.display()))?;
        let summary: Value = serde_json::from_str(text.trim()).with_context(|| {
            format!(
                "--forecast-from {} is not a JSON summary (save the rehearsal's `relink run --format json` output)",
                path.display()
            )
        })?;
        if summary["mode"] != "run" {
            bail!(
                "--forecast-from {} is not the summary of a live run (its mode is {})",
                path.display(),
                summary["mode"]
            );
        }
        let links = summary["links_created"].as_f64().unwrap_or(0.0);
        let seconds = summary["elapsed_seconds"].as_f64().unwrap_or(0.0);
        Self::of(
            format!("rehearsal {}", path.display()),
            links,
            seconds,
            summary["wal_bytes"].as_f64(),
        )
        .with_context(|| {
            format!(
                "--forecast-from {}: the rehearsal created no links, so it gives no rate",
                path.display()
            )
        })
    }

    /// The rates of the most recent completed live run that created links,
    /// from the state schema (none before it exists). Its duration is the
    /// sum of its invocations' elapsed times (`elapsed_ms` in its
    /// counters), or, for a run recorded before they were kept, from its
    /// start to its end.
    ///
    /// # Errors
    /// On a database error.
    pub async fn of_last_run(client: &impl GenericClient, names: &Names) -> Result<Option<Self>> {
        let row = client
            .query_opt(
                &names.sql(
                    "SELECT id, to_char(finished_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS \"UTC\"'),
                            (counters->>'links_created')::float8,
                            coalesce((counters->>'elapsed_ms')::float8 / 1000,
                                     extract(epoch FROM finished_at - started_at)::float8),
                            (counters->>'wal_bytes')::float8
                       FROM {state}.runs
                      WHERE mode = 'run' AND status = 'completed'
                        AND coalesce((counters->>'links_created')::float8, 0) > 0
                      ORDER BY finished_at DESC, id DESC LIMIT 1",
                ),
                &[],
            )
            .await
            .context("cannot read the last completed run's figures")?;
        Ok(row.and_then(|r| {
            let (id, finished): (i64, String) = (r.get(0), r.get(1));
            Self::of(
                format!("run {id} (completed {finished})"),
                r.get(2),
                r.get(3),
                r.get(4),
            )
        }))
    }
}

/// What the live run will cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Forecast {
    /// Where the rates come from; `none` without any.
    pub basis: String,
    /// Links the live run will write (the dry run's `links_created`).
    pub links: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub links_per_second: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wal_bytes_per_link: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wal_bytes: Option<u64>,
}

/// `basis` when there are no rates.
pub const NO_BASIS: &str = "none";

impl Forecast {
    /// The forecast for `links` links at `rates`.
    pub fn new(rates: Option<&Rates>, links: u64) -> Self {
        let Some(rates) = rates else {
            return Self {
                basis: NO_BASIS.to_owned(),
                links,
                links_per_second: None,
                seconds: None,
                wal_bytes_per_link: None,
                wal_bytes: None,
            };
        };
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let wal = rates
            .wal_bytes_per_link
            .map(|per_link| (per_link * links as f64).round() as u64);
        Self {
            basis: rates.source.clone(),
            links,
            links_per_second: Some(rates.links_per_second),
            seconds: Some(links as f64 / rates.links_per_second),
            wal_bytes_per_link: rates.wal_bytes_per_link,
            wal_bytes: wal,
        }
    }

    /// Prints the forecast as a dry run's text summary ends.
    ///
    /// # Errors
    /// When `out` cannot be written.
    pub fn print(&self, out: &mut impl Write) -> std::io::Result<()> {
        let (Some(rate), Some(seconds)) = (self.links_per_second, self.seconds) else {
            return writeln!(
                out,
                "Forecast: no basis (no completed live run in the state schema; give a rehearsal's summary with --forecast-from FILE)"
            );
        };
        writeln!(
            out,
            "Forecast of the live run, at the rates of {}",
            self.basis
        )?;
        writeln!(out, "  {:<28} {:>12}", "links to write", self.links)?;
        writeln!(
            out,
            "  {:<28} {:>12.1} s ({rate:.0} links/s)",
            "duration", seconds
        )?;
        match (self.wal_bytes, self.wal_bytes_per_link) {
            (Some(bytes), Some(per_link)) => writeln!(
                out,
                "  {:<28} {:>12.1} MiB ({per_link:.0} B/link)",
                "WAL",
                bytes as f64 / 1_048_576.0
            ),
            _ => writeln!(
                out,
                "  {:<28} {:>12}",
                "WAL", "unknown (the basis did not record it)"
            ),
        }
    }

    /// Prints the forecast beside a live run's actual figures.
    ///
    /// # Errors
    /// When `out` cannot be written.
    pub fn print_beside(
        &self,
        links: u64,
        seconds: f64,
        wal_bytes: Option<u64>,
        out: &mut impl Write,
    ) -> std::io::Result<()> {
        writeln!(out, "  forecast ({}) / actual", self.basis)?;
        writeln!(out, "    {:<26} {:>12} / {links}", "links", self.links)?;
        let forecast_seconds = self
            .seconds
            .map_or_else(|| "-".to_owned(), |s| format!("{s:.1} s"));
        writeln!(
            out,
            "    {:<26} {:>12} / {seconds:.1} s",
            "duration", forecast_seconds
        )?;
        let mib = |b: Option<u64>| {
            b.map_or_else(
                || "-".to_owned(),
                |b| format!("{:.1} MiB", b as f64 / 1_048_576.0),
            )
        };
        writeln!(
            out,
            "    {:<26} {:>12} / {}",
            "WAL",
            mib(self.wal_bytes),
            mib(wal_bytes)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forecast_arithmetic() {
        let rates = Rates::of("run 1".into(), 1000.0, 4.0, Some(2_500_000.0)).expect("rates");
        assert_eq!(rates.links_per_second, 250.0);
        assert_eq!(rates.wal_bytes_per_link, Some(2500.0));
        let f = Forecast::new(Some(&rates), 500);
        assert_eq!(f.seconds, Some(2.0));
        assert_eq!(f.wal_bytes, Some(1_250_000));
        let none = Forecast::new(None, 500);
        assert_eq!(none.basis, NO_BASIS);
        assert_eq!(none.seconds, None);
        assert!(Rates::of("run 2".into(), 0.0, 4.0, None).is_none());
    }
}
