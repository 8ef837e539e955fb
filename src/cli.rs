//! The command line (SPEC §10): clap structs only. [`crate::config`] turns
//! them into one checked configuration before anything connects.

use std::path::PathBuf;
use std::time::Duration;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Args, Parser, Subcommand, ValueEnum};

/// Migrates every profile's legacy `profiles."socialLinks"` JSON into the
/// `profile_links` table, safely, resumably and reversibly.
///
/// The operator flow: `relink run --dry-run` (review what would be written),
/// `relink run` (migrate; rerun any time, it resumes and only adds what is
/// new), `relink verify` (reconcile), and if needed `relink purge` (remove
/// exactly what relink created) or `relink repair` (mend races with an
/// application that does not lock). `relink status` shows where things
/// stand.
///
/// Exit codes: 0 done, 1 fatal error, 2 bad command line, 3 verify found a
/// violated invariant (or repair left one it may not mend), 4 another run,
/// purge or repair holds the lock, 130 interrupted (checkpoint saved).
#[derive(Debug, Parser)]
#[command(name = "relink", version, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// PostgreSQL connection URL or key=value string, with libpq's parameters
    /// (sslmode, sslrootcert, sslcert, sslkey, target_session_attrs, …).
    /// Without it: DATABASE_URL, else libpq's PGHOST, PGPORT, PGUSER,
    /// PGDATABASE, PGSSLMODE… and the password from PGPASSWORD or
    /// ~/.pgpass (PGPASSFILE), as psql does. The password is never printed;
    /// prefer ~/.pgpass over putting it in the flag.
    #[arg(
        long,
        env = "DATABASE_URL",
        hide_env_values = true,
        global = true,
        value_name = "URL"
    )]
    pub database_url: Option<String>,

    /// PostgreSQL schema holding the application's tables.
    #[arg(long, default_value = "public", global = true, value_name = "NAME")]
    pub schema: String,

    /// PostgreSQL schema for relink's own bookkeeping (runs, checkpoint,
    /// ledger, rejects); created by the first live run or purge.
    #[arg(long, default_value = "relink", global = true, value_name = "NAME")]
    pub state_schema: String,

    /// Format of log lines on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    /// More log detail (-v debug, -vv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Less output: warnings and errors only; a dry run prints only its summary.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Seconds to wait for a connection before giving up (unless the
    /// connection string or PGCONNECT_TIMEOUT says otherwise).
    #[arg(long, default_value_t = 10, global = true, value_name = "SECS")]
    pub connect_timeout: u64,

    /// The server ends any relink session left idle inside a transaction
    /// this long (e.g. a process stopped with Ctrl-Z or a paused VM), which
    /// releases the application's rows; the chunk is retried when relink
    /// continues.
    #[arg(
        long,
        default_value = "60s",
        global = true,
        value_name = "DURATION",
        value_parser = parse_duration
    )]
    pub idle_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process
pub enum Command {
    /// Migrate legacy links into profile_links (or review them with --dry-run).
    ///
    /// Streams profiles in key order, plans each one with the URL rules, and
    /// commits links, ledger, rejects and checkpoint together per chunk. An
    /// interrupted run is resumed by the next `run`; profiles whose legacy
    /// value has not changed since they were migrated are skipped, so reruns
    /// (e.g. from cron) only add what is new.
    Run(RunArgs),
    /// Remove the links relink created (and only those), so `run` can redo them.
    ///
    /// Rows users created, and migrated rows users edited since (unless
    /// --include-edited), are kept. Asks for confirmation on a terminal;
    /// refuses without one unless --yes.
    Purge(PurgeArgs),
    /// Reconcile: counts, duplicates, positions, nothing lost. Exit 3 on a violation.
    Verify(VerifyArgs),
    /// Mend what an application that does not lock left beside relink's rows.
    ///
    /// An application that writes a user's links without first locking the
    /// user's profile row (docs/application-contract.md) can race a live
    /// run: the same link twice, or two rows at one position. Repair
    /// changes only rows relink created that no one edited since: of a
    /// link held twice, relink's row is deleted (it is not created again);
    /// relink's rows at a position the application's row holds move after
    /// the user's last row. What only a change to the application's rows
    /// would mend is listed, and repair exits 3. Chunked, locked like a
    /// run, resumable. Asks for confirmation on a terminal; refuses without
    /// one unless --yes.
    Repair(RepairArgs),
    /// Show runs, the checkpoint of an unfinished run, the ledger and the lock holder.
    Status(StatusArgs),
    /// Hold every run and purge (running ones and ones started later) after
    /// their chunk in flight, until `relink resume`; returns at once.
    ///
    /// A held process keeps its lock and checkpoint but no transaction, and
    /// still stops on Ctrl-C/SIGTERM (exit 130). `relink status` shows the
    /// pause: who, when, why.
    Pause(PauseArgs),
    /// Lift `relink pause`: held runs and purges carry on within seconds.
    Resume,
    /// Fill an empty database that has the app schema with generated legacy data.
    #[command(hide = true)]
    Generate(GenerateArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Compute exactly what a live run would write, and write nothing, anywhere.
    #[arg(long)]
    pub dry_run: bool,

    /// Write one JSON object per planned profile to FILE (`-` for stdout).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,

    /// Profiles per chunk (one transaction each), or `auto`: sized so each
    /// chunk's transaction takes about --target-chunk-time, following the
    /// server and the data, smaller at once after a lock or statement timeout.
    #[arg(long, default_value = "auto", value_name = "N|auto")]
    pub chunk_size: String,

    /// With --chunk-size auto: how long one chunk's transaction should take
    /// (locks on the application's rows are held that long at most, about).
    #[arg(long, default_value = "500ms", value_name = "DURATION", value_parser = parse_duration)]
    pub target_chunk_time: Duration,

    /// Migrate at most N profiles in this invocation (a canary).
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,

    /// Throttle to at most N links created per second.
    #[arg(long, value_name = "N")]
    pub max_rate: Option<u64>,

    /// Sleep this long after each chunk (e.g. 200ms, 2s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub pause: Option<Duration>,

    /// Ignore the checkpoint of an unfinished run and rescan from the start
    /// (safe: the ledger skips what is done). With --dry-run: plan as such a
    /// restarted run would.
    #[arg(long)]
    pub restart: bool,

    /// Plan every profile again, changed or not, against this release's
    /// rules (after upgrading relink, when `relink verify` reports legacy
    /// links unaccounted for): adds only links that are missing, never
    /// edits or removes a row. Starts a new run, as --restart does; if it
    /// is interrupted, the next `relink run` resumes it as a replan.
    #[arg(long)]
    pub replan: bool,

    /// Summary format on stdout.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,

    /// Writer connections committing chunks in parallel.
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub writers: usize,

    /// With --dry-run: also write the plan to FILE (gzip when it ends in
    /// .gz): a header (database, rules digest, time, summary, forecast)
    /// and one JSON line per profile the live run would write, for review
    /// and for `relink run --plan FILE`. Written atomically. See
    /// docs/plan-and-apply.md.
    #[arg(
        long,
        value_name = "FILE",
        requires = "dry_run",
        conflicts_with_all = ["plan", "replan"]
    )]
    pub plan_out: Option<PathBuf>,

    /// Apply the reviewed plan FILE (from --plan-out) and nothing else:
    /// profiles whose value and whose user's rows still match it get
    /// exactly the planned rows; each profile that drifted since is
    /// reported and left pending. A plan for another database, from other
    /// rules, damaged, truncated or older than --plan-max-age is refused
    /// before anything is written.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["dry_run", "replan"])]
    pub plan: Option<PathBuf>,

    /// With --plan: refuse a plan made longer ago than this (by the
    /// database's clock), e.g. 30m, 24h.
    #[arg(long, default_value = "24h", value_name = "DURATION", value_parser = parse_duration)]
    pub plan_max_age: Duration,

    /// With --dry-run: forecast the live run at the rates of a rehearsal
    /// (the `relink run --format json` summary of a run on a staging copy,
    /// saved to FILE) instead of the last completed live run's.
    #[arg(long, value_name = "FILE", requires = "dry_run")]
    pub forecast_from: Option<PathBuf>,

    #[command(flatten)]
    pub timeouts: TimeoutArgs,

    #[command(flatten)]
    pub gates: GateArgs,

    #[command(flatten)]
    pub metrics: MetricsArgs,
}

/// Monitoring a scheduled `run` or `purge` (SPEC §14).
#[derive(Debug, Args)]
#[command(next_help_heading = "Monitoring")]
pub struct MetricsArgs {
    /// Write metrics in the Prometheus text format to PATH: when the run
    /// starts, every 10 seconds, and at the end (also after a failure or a
    /// signal, with that status). The file is replaced atomically (written
    /// beside it, then renamed), so point it into node_exporter's textfile
    /// collector directory (which reads *.prom files) or push it to a
    /// Pushgateway after the run. The directory must exist and be writable.
    /// Not with --dry-run. Metric names: docs/monitoring.md.
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,

    /// How often the metrics file is replaced during the run (tests shorten it).
    #[arg(
        long,
        default_value = "10s",
        value_name = "DURATION",
        hide = true,
        value_parser = parse_duration
    )]
    pub metrics_interval: Duration,
}

/// What holds `run` and `purge` before each chunk (besides `relink pause`).
#[derive(Debug, Args)]
pub struct GateArgs {
    /// Wait before each chunk while any streaming replica lags more than
    /// this (read on the primary from pg_stat_replication, which needs
    /// pg_monitor, and on each --replica); `off` to not watch replicas.
    #[arg(long, default_value = "10s", value_name = "DURATION|off", value_parser = parse_lag)]
    pub max_replica_lag: LagLimit,

    /// A replica to watch directly, on its own connection (repeatable):
    /// e.g. a replica the primary does not list, such as a cascading one.
    #[arg(long = "replica", value_name = "URL")]
    pub replicas: Vec<String>,

    /// SQL run before each chunk on its own read-only session: while its
    /// first column is true, wait (e.g. `SELECT hold FROM ops.flags`).
    #[arg(long, value_name = "SQL")]
    pub throttle_query: Option<String>,
}

/// How gently `run` and `purge` treat a busy production database.
#[derive(Debug, Args)]
pub struct TimeoutArgs {
    /// Give up waiting for a lock after this long; the chunk is rolled back
    /// and retried, so the application is never blocked longer. (A chunk
    /// waits for the application's rows far less: at most 150 ms, in its
    /// lock phase, so that relink, never the application, gives way.)
    #[arg(long, default_value = "2s", value_name = "DURATION", value_parser = parse_duration)]
    pub lock_timeout: Duration,

    /// Cancel any single statement that runs longer (the chunk is retried).
    #[arg(long, default_value = "60s", value_name = "DURATION", value_parser = parse_duration)]
    pub statement_timeout: Duration,

    /// Attempts per chunk on lock timeouts, serialization failures and lost
    /// connections before giving up (checkpoint saved, exit 1).
    #[arg(long, default_value_t = 6, value_name = "N")]
    pub retries: u32,
}

#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// List what would be deleted, and delete nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Only the links created by this run id (see `relink status`).
    #[arg(long, value_name = "ID")]
    pub run: Option<i64>,

    /// Also delete migrated rows that users edited since.
    #[arg(long)]
    pub include_edited: bool,

    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,

    /// Profiles per chunk (one transaction each).
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub chunk_size: usize,

    #[command(flatten)]
    pub walk: WalkArgs,

    #[command(flatten)]
    pub metrics: MetricsArgs,
}

/// What `purge` and `repair`, which walk relink's ledger, share after their
/// own flags.
#[derive(Debug, Args)]
pub struct WalkArgs {
    /// Summary format on stdout.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,

    #[command(flatten)]
    pub timeouts: TimeoutArgs,

    #[command(flatten)]
    pub gates: GateArgs,
}

#[derive(Debug, Args)]
pub struct RepairArgs {
    /// List what would change, and change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,

    /// Users (of relink's ledger) per chunk, one transaction each.
    #[arg(long, default_value_t = 500, value_name = "N")]
    pub chunk_size: usize,

    #[command(flatten)]
    pub walk: WalkArgs,
}

#[derive(Debug, Args)]
pub struct PauseArgs {
    /// Why, for whoever looks at `relink status`.
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Also fail (exit 3) when any profile is still pending.
    #[arg(long)]
    pub strict: bool,

    /// Output format on stdout.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,

    /// Profiles (and users) per page.
    #[arg(long, default_value_t = 2000, value_name = "N")]
    pub page_size: usize,

    /// Say how the database stands against the plan FILE instead: each
    /// record applied, drifted (would not be applied as planned) or
    /// pending. Exit 3 with --strict when any is not applied.
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Output format on stdout.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,

    /// How many runs to list.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub runs: i64,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Number of users and profiles to create.
    #[arg(long, default_value_t = 10_000)]
    pub profiles: u64,

    /// Seed in [-1, 1] for reproducible data.
    #[arg(long, default_value_t = 0.42, allow_negative_numbers = true)]
    pub seed: f64,

    /// The legacy data's profile (sql/generate.sql describes both).
    #[arg(long, value_enum, default_value_t = Mix::Default)]
    pub mix: Mix,

    /// How users and profiles are identified.
    #[arg(long, value_enum, default_value_t = Ids::Ordered)]
    pub ids: Ids,
}

/// `relink generate --mix`: which mix of legacy shapes to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mix {
    /// Mostly objects of key -> URL, 2.4 values per profile, few duplicates.
    Default,
    /// Mostly arrays of entry objects ({url|href|link, label|title|name,
    /// platform|network, type}), about 4 values per profile, a quarter of
    /// the profiles with the same link spelled twice, 1% with 50-150 values.
    Entries,
}

/// `relink generate --ids`: the shape of user and profile ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Ids {
    /// cuid-like, in insertion order, a profile's id next to its user's.
    Ordered,
    /// Random version-4 UUIDs (Prisma's `@default(uuid())`): no locality.
    Uuid,
}

/// `--max-replica-lag`: a duration, or `off` (replicas not watched).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LagLimit {
    Off,
    At(Duration),
}

/// A duration flag's value that does not parse; says what would.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadDuration(String);

/// Parses `250ms`, `2s`, `1.5s`, `5m`, `1h`; a bare number is seconds: the
/// value parser of every duration flag.
///
/// # Errors
/// On anything else.
pub fn parse_duration(text: &str) -> Result<Duration, BadDuration> {
    seconds(text).map_err(|e| BadDuration(format!("{e:#}")))
}

fn seconds(text: &str) -> anyhow::Result<Duration> {
    use anyhow::{bail, Context as _};
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .with_context(|| format!("{text:?} is not a duration (try 500ms, 2s, 1m)"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => bail!("unknown unit {other:?} in {text:?} (use ms, s, m or h)"),
    };
    Duration::try_from_secs_f64(seconds).with_context(|| format!("{text:?} is out of range"))
}

/// Parses `--max-replica-lag`: `off`, or a duration.
///
/// # Errors
/// As [`parse_duration`].
pub fn parse_lag(text: &str) -> Result<LagLimit, BadDuration> {
    match text.trim() {
        "off" => Ok(LagLimit::Off),
        text => parse_duration(text).map(LagLimit::At),
    }
}

/// A duration flag that did not parse, said as relink's checks of the
/// command line say what is wrong (`invalid --pause: "soon" is not a
/// duration …`, exit 2); `None` for every other error, which clap reports.
pub fn bad_duration(err: &clap::Error) -> Option<String> {
    if err.kind() != ErrorKind::ValueValidation {
        return None;
    }
    let bad = std::error::Error::source(err)?.downcast_ref::<BadDuration>()?;
    let Some(ContextValue::String(arg)) = err.get(ContextKind::InvalidArg) else {
        return None;
    };
    let flag = arg.split_whitespace().next()?;
    Some(format!("invalid {flag}: {bad}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("250ms").ok(),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_duration("2s").ok(), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_duration("1.5").ok(),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_duration("5m").ok(), Some(Duration::from_secs(300)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn a_bad_duration_is_named_after_its_flag() {
        let err = Cli::try_parse_from(["relink", "run", "--pause", "soon"]).expect_err("refused");
        let message = bad_duration(&err).expect("named");
        assert!(
            message
                .starts_with("invalid --pause: \"soon\" is not a duration (try 500ms, 2s, 1m): "),
            "{message}"
        );
        let err = Cli::try_parse_from(["relink", "run", "--max-replica-lag", "5 parsecs"])
            .expect_err("refused");
        assert_eq!(
            bad_duration(&err).as_deref(),
            Some("invalid --max-replica-lag: unknown unit \"parsecs\" in \"5 parsecs\" (use ms, s, m or h)")
        );
        let err = Cli::try_parse_from(["relink", "run", "--writers", "lots"]).expect_err("refused");
        assert_eq!(bad_duration(&err), None, "clap's own errors stay clap's");
        let cli =
            Cli::try_parse_from(["relink", "run", "--max-replica-lag", "off"]).expect("parses");
        let Command::Run(args) = cli.command else {
            panic!("run")
        };
        assert_eq!(args.gates.max_replica_lag, LagLimit::Off);
    }
}
