//! One checked configuration, built from the command line before anything
//! connects: bounded sizes, checked durations, quoted schema names. It sits
//! on top: every layer reads its types (names, timeouts, chunk sizes, the
//! gates, the metrics file), and it imports none of the layers it
//! configures (the connection string is resolved by `db`, see
//! `commands::Context`).

pub mod metrics_file;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};

use crate::cli::{
    GateArgs, GenerateArgs, GlobalArgs, Ids, LagLimit, MetricsArgs, Mix, OutputFormat, PurgeArgs,
    RepairArgs, RunArgs, StatusArgs, TimeoutArgs, VerifyArgs, WalkArgs,
};

/// The two PostgreSQL schemas relink works with, as quoted identifiers.
#[derive(Debug, Clone)]
pub struct Names {
    /// The application's schema as written (for catalog lookups).
    pub app_raw: String,
    /// The application's schema, quoted for SQL text.
    pub app: String,
    /// relink's state schema as written.
    pub state_raw: String,
    /// relink's state schema, quoted for SQL text.
    pub state: String,
}

impl Names {
    /// # Errors
    /// When a name is empty or longer than PostgreSQL allows.
    pub fn new(app: &str, state: &str) -> Result<Self> {
        for (flag, name) in [("--schema", app), ("--state-schema", state)] {
            if name.is_empty() || name.len() > 63 || name.contains('\0') {
                bail!("{flag} must be 1 to 63 bytes without NUL, got {name:?}");
            }
        }
        if app == state {
            bail!("--state-schema must differ from --schema ({app:?}): relink never writes its bookkeeping into the application's schema");
        }
        Ok(Self {
            app_raw: app.to_owned(),
            app: quote_ident(app),
            state_raw: state.to_owned(),
            state: quote_ident(state),
        })
    }

    /// Replaces `{app}` and `{state}` in SQL text with the quoted schemas.
    pub fn sql(&self, text: &str) -> String {
        text.replace("{app}", &self.app)
            .replace("{state}", &self.state)
    }
}

/// Quotes an SQL identifier (`"` doubled).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Settings shared by every command (the database they name is resolved
/// by `db::Database`).
#[derive(Debug, Clone)]
pub struct Common {
    pub names: Names,
    pub quiet: bool,
    pub connect_timeout: Duration,
    /// `idle_in_transaction_session_timeout` of every session (SPEC §12).
    pub idle_timeout: Duration,
}

impl Common {
    /// # Errors
    /// On an invalid schema name or timeout.
    pub fn from_args(args: &GlobalArgs) -> Result<Self> {
        if args.connect_timeout == 0 {
            bail!("--connect-timeout must be at least 1 second");
        }
        let connect_timeout = Duration::from_secs(args.connect_timeout);
        let idle_timeout = args.idle_timeout;
        if idle_timeout < Duration::from_secs(1) {
            // Zero would mean no guard at all; under a second would cut
            // relink's own chunks off between two statements.
            bail!("--idle-timeout must be at least 1s");
        }
        Ok(Self {
            names: Names::new(&args.schema, &args.state_schema)?,
            quiet: args.quiet,
            connect_timeout,
            idle_timeout,
        })
    }
}

/// Server-side limits that keep relink gentle on production.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub lock: Duration,
    pub statement: Duration,
    /// Attempts per chunk before giving up.
    pub attempts: u32,
}

impl Timeouts {
    fn from_args(args: &TimeoutArgs) -> Result<Self> {
        let attempts = args.retries;
        let (lock, statement) = (args.lock_timeout, args.statement_timeout);
        if lock.is_zero() || statement.is_zero() {
            // Zero means "no timeout" to PostgreSQL: the opposite of gentle.
            bail!("--lock-timeout and --statement-timeout must be greater than zero");
        }
        if attempts == 0 {
            bail!("--retries must be at least 1");
        }
        Ok(Self {
            lock,
            statement,
            attempts,
        })
    }
}

/// `--metrics-file` (SPEC §14), checked: its directory exists and takes
/// files.
#[derive(Debug, Clone)]
pub struct MetricsConfig {
    pub path: PathBuf,
    /// Between two writes during the run.
    pub interval: Duration,
}

impl MetricsConfig {
    /// `None` without `--metrics-file`.
    fn from_args(args: &MetricsArgs, dry_run: bool) -> Result<Option<Self>> {
        let interval = args.metrics_interval;
        if interval < Duration::from_millis(10) {
            bail!("--metrics-interval must be at least 10ms");
        }
        let Some(path) = &args.metrics_file else {
            return Ok(None);
        };
        if dry_run {
            bail!("--metrics-file is for live runs and purges: a dry run records nothing (drop --dry-run or --metrics-file)");
        }
        metrics_file::check(path)?;
        Ok(Some(Self {
            path: path.clone(),
            interval,
        }))
    }
}

/// `relink run`, checked.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub dry_run: bool,
    pub report: Option<PathBuf>,
    pub chunk_size: ChunkSize,
    pub limit: Option<u64>,
    pub max_rate: Option<u64>,
    pub pause: Option<Duration>,
    pub restart: bool,
    pub replan: bool,
    pub format: OutputFormat,
    pub writers: usize,
    pub timeouts: Timeouts,
    pub gates: GateConfig,
    pub metrics: Option<MetricsConfig>,
    /// `--plan-out`, `--plan`, `--plan-max-age`, `--forecast-from` (SPEC §15).
    pub plan: PlanConfig,
}

/// The plan-and-apply options of `relink run` (SPEC §15).
#[derive(Debug, Clone, Default)]
pub struct PlanConfig {
    /// Where a dry run writes its plan.
    pub out: Option<PathBuf>,
    /// The plan a live run applies.
    pub apply: Option<PathBuf>,
    /// Oldest plan applied.
    pub max_age: Duration,
    /// A rehearsal's summary to forecast with.
    pub forecast_from: Option<PathBuf>,
}

impl RunConfig {
    /// # Errors
    /// On out-of-range sizes or durations.
    pub fn from_args(args: &RunArgs) -> Result<Self> {
        let chunk_size = match args.chunk_size.trim() {
            "auto" => {
                let target = args.target_chunk_time;
                if target < Duration::from_millis(10) {
                    bail!("--target-chunk-time must be at least 10ms");
                }
                ChunkSize::Auto { target }
            }
            n => {
                let n = n
                    .parse()
                    .with_context(|| format!("--chunk-size takes a number or auto, got {n:?}"))?;
                check_chunk_size(n)?;
                ChunkSize::Fixed(n)
            }
        };
        if args.limit == Some(0) {
            bail!("--limit must be at least 1");
        }
        if args.max_rate == Some(0) {
            bail!("--max-rate must be at least 1 link per second");
        }
        if !(1..=16).contains(&args.writers) {
            bail!("--writers must be between 1 and 16, got {}", args.writers);
        }
        Ok(Self {
            dry_run: args.dry_run,
            report: args.report.clone(),
            chunk_size,
            limit: args.limit,
            max_rate: args.max_rate,
            pause: args.pause,
            restart: args.restart,
            replan: args.replan,
            format: args.format,
            writers: args.writers,
            timeouts: Timeouts::from_args(&args.timeouts)?,
            gates: GateConfig::from_args(&args.gates)?,
            metrics: MetricsConfig::from_args(&args.metrics, args.dry_run)?,
            plan: PlanConfig {
                out: args.plan_out.clone(),
                apply: args.plan.clone(),
                max_age: args.plan_max_age,
                forecast_from: args.forecast_from.clone(),
            },
        })
    }
}

/// `relink purge`, checked.
#[derive(Debug, Clone)]
pub struct PurgeConfig {
    pub dry_run: bool,
    pub run: Option<i64>,
    pub include_edited: bool,
    pub yes: bool,
    pub chunk_size: usize,
    pub walk: WalkConfig,
    pub metrics: Option<MetricsConfig>,
}

impl PurgeConfig {
    /// # Errors
    /// On out-of-range sizes or durations.
    pub fn from_args(args: &PurgeArgs) -> Result<Self> {
        check_chunk_size(args.chunk_size)?;
        if args.run.is_some_and(|id| id < 1) {
            bail!("--run takes a run id (a positive number, see `relink status`)");
        }
        Ok(Self {
            dry_run: args.dry_run,
            run: args.run,
            include_edited: args.include_edited,
            yes: args.yes,
            chunk_size: args.chunk_size,
            walk: WalkConfig::from_args(&args.walk)?,
            metrics: MetricsConfig::from_args(&args.metrics, args.dry_run)?,
        })
    }
}

/// `relink repair`, checked.
#[derive(Debug, Clone)]
pub struct RepairConfig {
    pub dry_run: bool,
    pub yes: bool,
    pub chunk_size: usize,
    pub walk: WalkConfig,
}

impl RepairConfig {
    /// # Errors
    /// On out-of-range sizes or durations.
    pub fn from_args(args: &RepairArgs) -> Result<Self> {
        check_chunk_size(args.chunk_size)?;
        Ok(Self {
            dry_run: args.dry_run,
            yes: args.yes,
            chunk_size: args.chunk_size,
            walk: WalkConfig::from_args(&args.walk)?,
        })
    }
}

/// What `purge` and `repair` share after their own settings.
#[derive(Debug, Clone)]
pub struct WalkConfig {
    pub format: OutputFormat,
    pub timeouts: Timeouts,
    pub gates: GateConfig,
}

impl WalkConfig {
    /// # Errors
    /// On out-of-range durations or an unusable gate.
    pub fn from_args(args: &WalkArgs) -> Result<Self> {
        Ok(Self {
            format: args.format,
            timeouts: Timeouts::from_args(&args.timeouts)?,
            gates: GateConfig::from_args(&args.gates)?,
        })
    }
}

/// The database gates of `run`, `purge` and `repair` (SPEC §13): what
/// `throttle::Watch` asks before each chunk.
#[derive(Clone, Default)]
pub struct GateConfig {
    /// `--max-replica-lag`; `None` is `off`.
    pub max_replica_lag: Option<Duration>,
    /// `--replica URL`s, as given (resolved with the database, by
    /// `commands::Context`, before anything connects).
    pub replicas: Vec<String>,
    /// `--throttle-query SQL`.
    pub throttle_query: Option<String>,
}

impl GateConfig {
    fn from_args(args: &GateArgs) -> Result<Self> {
        let max_replica_lag = match args.max_replica_lag {
            LagLimit::Off => None,
            LagLimit::At(lag) if lag.is_zero() => {
                bail!("--max-replica-lag must be greater than zero, or `off`")
            }
            LagLimit::At(lag) => Some(lag),
        };
        if max_replica_lag.is_none() && !args.replicas.is_empty() {
            bail!("--replica needs --max-replica-lag (it is `off`): say how much lag to allow");
        }
        if args
            .throttle_query
            .as_deref()
            .is_some_and(|q| q.trim().is_empty())
        {
            bail!("--throttle-query is empty");
        }
        Ok(Self {
            max_replica_lag,
            replicas: args.replicas.clone(),
            throttle_query: args.throttle_query.clone(),
        })
    }
}

/// Never the replicas' URLs: they may carry a password.
impl fmt::Debug for GateConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GateConfig")
            .field("max_replica_lag", &self.max_replica_lag)
            .field("replicas", &self.replicas.len())
            .field("throttle_query", &self.throttle_query)
            .finish()
    }
}

/// Largest `verify --page-size`.
pub const MAX_PAGE_SIZE: usize = 100_000;

/// `relink verify`, checked.
#[derive(Debug, Clone)]
pub struct VerifyConfig {
    pub strict: bool,
    pub format: OutputFormat,
    pub page_size: usize,
    /// `--plan FILE`: verify against a plan.
    pub plan: Option<PathBuf>,
}

impl VerifyConfig {
    /// # Errors
    /// On an out-of-range page size.
    pub fn from_args(args: &VerifyArgs) -> Result<Self> {
        if !(1..=MAX_PAGE_SIZE).contains(&args.page_size) {
            bail!(
                "--page-size must be between 1 and {MAX_PAGE_SIZE}, got {}",
                args.page_size
            );
        }
        Ok(Self {
            strict: args.strict,
            format: args.format,
            page_size: args.page_size,
            plan: args.plan.clone(),
        })
    }
}

/// `relink status`, checked.
#[derive(Debug, Clone)]
pub struct StatusConfig {
    pub format: OutputFormat,
    pub runs: i64,
}

impl StatusConfig {
    /// # Errors
    /// When `--runs` is not positive.
    pub fn from_args(args: &StatusArgs) -> Result<Self> {
        if args.runs < 1 {
            bail!("--runs must be at least 1, got {}", args.runs);
        }
        Ok(Self {
            format: args.format,
            runs: args.runs,
        })
    }
}

/// `relink generate`, checked.
#[derive(Debug, Clone)]
pub struct GenerateConfig {
    pub profiles: u64,
    pub seed: f64,
    pub mix: Mix,
    pub ids: Ids,
}

impl GenerateConfig {
    /// # Errors
    /// On a seed outside [-1, 1] or no profiles.
    pub fn from_args(args: &GenerateArgs) -> Result<Self> {
        if !(-1.0..=1.0).contains(&args.seed) {
            bail!("--seed must be between -1 and 1");
        }
        if args.profiles == 0 {
            bail!("--profiles must be at least 1");
        }
        Ok(Self {
            profiles: args.profiles,
            seed: args.seed,
            mix: args.mix,
            ids: args.ids,
        })
    }
}

/// How chunks are sized (`--chunk-size`): see `sizing`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkSize {
    Fixed(usize),
    Auto { target: Duration },
}

/// Largest chunk accepted, fixed or auto: bigger chunks hold locks longer
/// for no gain.
pub const MAX_CHUNK_SIZE: usize = 50_000;

fn check_chunk_size(n: usize) -> Result<()> {
    if !(1..=MAX_CHUNK_SIZE).contains(&n) {
        bail!("--chunk-size must be between 1 and {MAX_CHUNK_SIZE}, got {n}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("public"), "\"public\"");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
        let names = Names::new("app", "relink").expect("valid");
        assert_eq!(
            names.sql("SELECT * FROM {app}.profiles, {state}.runs"),
            "SELECT * FROM \"app\".profiles, \"relink\".runs"
        );
        assert!(Names::new("same", "same").is_err());
    }
}

/// A bad command line found while checking it (exit 2, like clap's own).
#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
pub struct UsageError(pub anyhow::Error);

/// Wraps a configuration error as a [`UsageError`].
pub fn usage(err: anyhow::Error) -> anyhow::Error {
    UsageError(err).into()
}
