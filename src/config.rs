//! One checked configuration, built from the command line before anything
//! connects: parsed durations, bounded sizes, quoted schema names, and a
//! database target whose display never shows the password.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};

use crate::cli::{
    GateArgs, GenerateArgs, GlobalArgs, Ids, MetricsArgs, Mix, OutputFormat, PurgeArgs, RepairArgs,
    RunArgs, StatusArgs, TimeoutArgs, VerifyArgs,
};
use crate::db::connect::{ConnInfo, Env};
use crate::sizing::{ChunkSize, MAX_CHUNK_SIZE};
use crate::throttle::Watched;

/// Where to connect: libpq's parameters, environment and defaults,
/// resolved once (see `db::connect`). `Display` is redacted (no password),
/// so it is safe in logs and error messages.
#[derive(Clone)]
pub struct Database {
    pub info: ConnInfo,
}

impl Database {
    /// Resolves a URL or key=value string, or with none libpq's environment
    /// (`PGHOST`, `PGUSER`, …), as `psql` would. `connect_timeout` applies
    /// unless the string or `PGCONNECT_TIMEOUT` sets one.
    ///
    /// # Errors
    /// When the parameters cannot be used; the message names the parameter
    /// and never repeats the password.
    pub fn resolve(text: Option<&str>, connect_timeout: Duration) -> Result<Self> {
        let text = text.filter(|t| !t.trim().is_empty());
        let info = ConnInfo::resolve(text, &Env::from_process())
            .map_err(anyhow::Error::new)?
            .with_default_connect_timeout(connect_timeout);
        Ok(Self { info })
    }
}

impl Database {
    /// `host:port/dbname` (hosts comma-separated when several are listed),
    /// for the `database` label of metrics: which database a series is
    /// about, never who connected (no user, no password).
    pub fn label(&self) -> String {
        let hosts: Vec<String> = self.info.targets.iter().map(ToString::to_string).collect();
        format!("{}/{}", hosts.join(","), self.info.dbname)
    }
}

impl fmt::Display for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.info.fmt(f)
    }
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Database({self})")
    }
}

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

/// Settings shared by every command.
#[derive(Debug, Clone)]
pub struct Common {
    pub database: Database,
    pub names: Names,
    pub quiet: bool,
    pub connect_timeout: Duration,
    /// `idle_in_transaction_session_timeout` of every session (SPEC §12).
    pub idle_timeout: Duration,
}

impl Common {
    /// # Errors
    /// On a missing or invalid database URL or schema name.
    pub fn from_args(args: &GlobalArgs) -> Result<Self> {
        if args.connect_timeout == 0 {
            bail!("--connect-timeout must be at least 1 second");
        }
        let connect_timeout = Duration::from_secs(args.connect_timeout);
        let idle_timeout = parse_duration(&args.idle_timeout).context("invalid --idle-timeout")?;
        if idle_timeout < Duration::from_secs(1) {
            // Zero would mean no guard at all; under a second would cut
            // relink's own chunks off between two statements.
            bail!("--idle-timeout must be at least 1s");
        }
        Ok(Self {
            database: Database::resolve(args.database_url.as_deref(), connect_timeout)?,
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
        let lock = parse_duration(&args.lock_timeout).context("invalid --lock-timeout")?;
        let statement =
            parse_duration(&args.statement_timeout).context("invalid --statement-timeout")?;
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
    /// The `database` label of every series: [`Database::label`].
    pub database: String,
}

impl MetricsConfig {
    /// `None` without `--metrics-file`.
    fn from_args(args: &MetricsArgs, dry_run: bool, database: &Database) -> Result<Option<Self>> {
        let interval =
            parse_duration(&args.metrics_interval).context("invalid --metrics-interval")?;
        if interval < Duration::from_millis(10) {
            bail!("--metrics-interval must be at least 10ms");
        }
        let Some(path) = &args.metrics_file else {
            return Ok(None);
        };
        if dry_run {
            bail!("--metrics-file is for live runs and purges: a dry run records nothing (drop --dry-run or --metrics-file)");
        }
        crate::metrics::textfile::check(path)?;
        Ok(Some(Self {
            path: path.clone(),
            interval,
            database: database.label(),
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
    pub watched: Watched,
    pub metrics: Option<MetricsConfig>,
}

impl RunConfig {
    /// # Errors
    /// On out-of-range sizes or unparsable durations.
    pub fn from_args(args: &RunArgs, common: &Common) -> Result<Self> {
        let chunk_size = match args.chunk_size.trim() {
            "auto" => {
                let target = parse_duration(&args.target_chunk_time)
                    .context("invalid --target-chunk-time")?;
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
            pause: args
                .pause
                .as_deref()
                .map(parse_duration)
                .transpose()
                .context("invalid --pause")?,
            restart: args.restart,
            replan: args.replan,
            format: args.format,
            writers: args.writers,
            timeouts: Timeouts::from_args(&args.timeouts)?,
            watched: watched(&args.gates, common)?,
            metrics: MetricsConfig::from_args(&args.metrics, args.dry_run, &common.database)?,
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
    pub format: OutputFormat,
    pub timeouts: Timeouts,
    pub watched: Watched,
    pub metrics: Option<MetricsConfig>,
}

impl PurgeConfig {
    /// # Errors
    /// On out-of-range sizes or unparsable durations.
    pub fn from_args(args: &PurgeArgs, common: &Common) -> Result<Self> {
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
            format: args.format,
            timeouts: Timeouts::from_args(&args.timeouts)?,
            watched: watched(&args.gates, common)?,
            metrics: MetricsConfig::from_args(&args.metrics, args.dry_run, &common.database)?,
        })
    }
}

/// `relink repair`, checked.
#[derive(Debug, Clone)]
pub struct RepairConfig {
    pub dry_run: bool,
    pub yes: bool,
    pub chunk_size: usize,
    pub format: OutputFormat,
    pub timeouts: Timeouts,
    pub watched: Watched,
}

impl RepairConfig {
    /// # Errors
    /// On out-of-range sizes or unparsable durations.
    pub fn from_args(args: &RepairArgs, common: &Common) -> Result<Self> {
        check_chunk_size(args.chunk_size)?;
        Ok(Self {
            dry_run: args.dry_run,
            yes: args.yes,
            chunk_size: args.chunk_size,
            format: args.format,
            timeouts: Timeouts::from_args(&args.timeouts)?,
            watched: watched(&args.gates, common)?,
        })
    }
}

/// The database gates of `run`, `purge` and `repair` (SPEC §13).
fn watched(args: &GateArgs, common: &Common) -> Result<Watched> {
    let max_replica_lag = match args.max_replica_lag.trim() {
        "off" => None,
        text => {
            let lag = parse_duration(text).context("invalid --max-replica-lag")?;
            if lag.is_zero() {
                bail!("--max-replica-lag must be greater than zero, or `off`");
            }
            Some(lag)
        }
    };
    if max_replica_lag.is_none() && !args.replicas.is_empty() {
        bail!("--replica needs --max-replica-lag (it is `off`): say how much lag to allow");
    }
    let replicas = args
        .replicas
        .iter()
        .map(|url| {
            Database::resolve(Some(url), common.connect_timeout).context("invalid --replica")
        })
        .collect::<Result<_>>()?;
    if args
        .throttle_query
        .as_deref()
        .is_some_and(|q| q.trim().is_empty())
    {
        bail!("--throttle-query is empty");
    }
    Ok(Watched {
        max_replica_lag,
        replicas,
        throttle_query: args.throttle_query.clone(),
    })
}

/// Largest `verify --page-size`.
pub const MAX_PAGE_SIZE: usize = 100_000;

/// `relink verify`, checked.
#[derive(Debug, Clone)]
pub struct VerifyConfig {
    pub strict: bool,
    pub format: OutputFormat,
    pub page_size: usize,
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

fn check_chunk_size(n: usize) -> Result<()> {
    if !(1..=MAX_CHUNK_SIZE).contains(&n) {
        bail!("--chunk-size must be between 1 and {MAX_CHUNK_SIZE}, got {n}");
    }
    Ok(())
}

/// Parses `250ms`, `2s`, `1.5s`, `5m`, `1h`; a bare number is seconds.
///
/// # Errors
/// On anything else.
pub fn parse_duration(text: &str) -> Result<Duration> {
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
    fn database_display_hides_the_password() {
        let db = Database::resolve(
            Some("postgres://alice:s3cret@db.example:6543/app?sslmode=disable"),
            Duration::from_secs(1),
        )
        .expect("parses");
        assert!(
            db.to_string()
                .starts_with("postgres://alice@db.example:6543/app"),
            "{db}"
        );
        assert!(!format!("{db:?}").contains("s3cret"));
        let db = Database::resolve(
            Some("host=h user=u password=s3cret dbname=d sslmode=disable"),
            Duration::from_secs(1),
        )
        .expect("parses");
        assert!(!db.to_string().contains("s3cret"));
    }

    #[test]
    fn the_database_label_names_hosts_ports_and_database_only() {
        let label = |url: &str| {
            Database::resolve(Some(url), Duration::from_secs(1))
                .expect("parses")
                .label()
        };
        assert_eq!(
            label("postgres://alice:s3cret@db.example:6543/app?sslmode=disable"),
            "db.example:6543/app"
        );
        assert_eq!(
            label("postgres://u@h1,h2:5433,[::1]/app?sslmode=disable"),
            "h1:5432,h2:5433,[::1]:5432/app"
        );
        assert_eq!(
            label("host=/var/run/pg port=5433 user=u password=s3cret dbname=d sslmode=disable"),
            "/var/run/pg:5433/d"
        );
    }

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
