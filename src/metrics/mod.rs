//! Metrics for watching scheduled runs (SPEC §14): what `run` and `purge`
//! export in the Prometheus text format, and the task that writes them to
//! `--metrics-file` when the run starts, every `--metrics-interval` (10 s)
//! and at the end, whatever the end (completed, partial, failed,
//! interrupted): the file node_exporter's textfile collector reads, or a
//! job pushes to a Pushgateway.
//!
//! Every series carries `database` (`host:port/dbname` of the connection,
//! never the user or password; added by the exposition writer to every
//! sample of every family) and `mode` (`run` or `purge`), so the files of
//! runs and purges against several databases can sit side by side in one
//! textfile directory without two files exporting the same series. Counters count this invocation (they
//! start at 0, as a process's counters do), the same figures as its
//! `--format json` summary; `relink_last_success_timestamp_seconds` comes
//! from the state schema and so spans invocations.
//!
//! The command keeps its figures as before; at each write the exporter asks
//! it for a [`Snapshot`] through [`Gather`], and the final write uses the
//! summary's own figures, so the last file and the summary agree exactly.

pub mod exposition;
pub mod textfile;

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result};
use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tokio_postgres::GenericClient;

use self::exposition::{Family, Histogram, Kind, Labels, Sample};
use crate::config::{MetricsConfig, Names};
use crate::plan::{Counters, RejectReason};
use crate::removal::PurgeCounters;
use crate::report::Summary;
use crate::source::Order;
use crate::state::{self, Mode, RunStatus};
use crate::throttle::{Cause, Throttled};

/// Upper bounds of the chunk duration histogram, in seconds: fine around
/// the half second a chunk transaction should take, up to the default
/// statement timeout (a minute).
const CHUNK_BOUNDS: [f64; 12] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// What a command has done so far: the figures its summary reports.
#[derive(Debug, Clone)]
pub enum Work {
    Run {
        counters: Counters,
        /// Profiles with a legacy value in the key range covered.
        scanned: u64,
        /// Of those, skipped because unchanged since migrated.
        unchanged: u64,
    },
    Purge(PurgeCounters),
}

/// The figures of one write.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub work: Work,
    /// Seconds waited before chunks, by cause.
    pub throttled: Throttled,
    /// WAL the server wrote since the invocation started (SPEC §11).
    pub wal_bytes: Option<u64>,
}

impl Snapshot {
    /// The figures of a run's summary.
    pub fn of_summary(summary: &Summary) -> Self {
        Self {
            work: Work::Run {
                counters: summary.counters.clone(),
                scanned: summary.profiles_scanned,
                unchanged: summary.profiles_unchanged,
            },
            throttled: summary.throttled_seconds.clone(),
            wal_bytes: summary.wal_bytes,
        }
    }

    fn empty(mode: Mode) -> Self {
        Self {
            work: match mode {
                Mode::Run => Work::Run {
                    counters: Counters::default(),
                    scanned: 0,
                    unchanged: 0,
                },
                // `repair` writes no metrics file; its mode has a run record.
                Mode::Purge | Mode::Repair => Work::Purge(PurgeCounters::default()),
            },
            throttled: Throttled::new(),
            wal_bytes: None,
        }
    }
}

/// How the exporter asks a command for its figures before each write.
pub trait Gather: Send + 'static {
    fn gather(&mut self) -> impl Future<Output = Snapshot> + Send;
}

/// Figures a command has at hand (`purge`'s).
impl<F: FnMut() -> Snapshot + Send + 'static> Gather for F {
    fn gather(&mut self) -> impl Future<Output = Snapshot> + Send {
        std::future::ready(self())
    }
}

/// The handle a command records into: cheap to clone, and does nothing at
/// all without `--metrics-file`.
#[derive(Clone, Default)]
pub struct Metrics {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    path: PathBuf,
    interval: Duration,
    /// The `database` label of every series.
    database: String,
    mode: Mode,
    run_id: i64,
    /// Unix time this invocation started.
    started: f64,
    state: Mutex<State>,
    /// Held while a file is rendered and written: one write at a time, each
    /// rendering the latest state (so no earlier write can land after the
    /// final one).
    file: Mutex<()>,
    /// The last write failed (warn once, then once more when it works).
    failing: AtomicBool,
}

struct State {
    status: RunStatus,
    last_success: Option<f64>,
    chunks: Histogram,
    /// The longest chunk transaction so far, in seconds: the histogram's
    /// buckets only bound it, and SPEC §11 sets a limit on it.
    longest_chunk: f64,
    snapshot: Snapshot,
}

impl Metrics {
    /// Metrics of run record `run_id` of `mode` (none without a config),
    /// labelled with `database` (`db::Database::label`). `last_success`:
    /// when the latest completed run of `mode` finished.
    pub fn new(
        config: Option<&MetricsConfig>,
        database: &str,
        mode: Mode,
        run_id: i64,
        last_success: Option<f64>,
    ) -> Self {
        let inner = config.map(|config| {
            Arc::new(Inner {
                path: config.path.clone(),
                interval: config.interval,
                database: database.to_owned(),
                mode,
                run_id,
                started: unix_now(),
                state: Mutex::new(State {
                    status: RunStatus::Running,
                    last_success,
                    chunks: Histogram::new(&CHUNK_BOUNDS),
                    longest_chunk: 0.0,
                    snapshot: Snapshot::empty(mode),
                }),
                file: Mutex::new(()),
                failing: AtomicBool::new(false),
            })
        });
        Self { inner }
    }

    /// A chunk's transaction committed after `duration`.
    pub fn observe_chunk(&self, duration: Duration) {
        if let Some(inner) = &self.inner {
            let mut state = inner.state.lock();
            let seconds = duration.as_secs_f64();
            state.chunks.observe(seconds);
            state.longest_chunk = state.longest_chunk.max(seconds);
        }
    }

    /// Writes the file now, then every interval until [`Exporter::finish`],
    /// each time with the figures `gather` gives.
    pub async fn start(&self, mut gather: impl Gather) -> Exporter {
        let Some(inner) = &self.inner else {
            return Exporter {
                metrics: self.clone(),
                task: None,
            };
        };
        inner.update(gather.gather().await);
        write(inner.clone()).await;
        let task = tokio::spawn({
            let inner = inner.clone();
            async move {
                loop {
                    tokio::time::sleep(inner.interval).await;
                    inner.update(gather.gather().await);
                    write(inner.clone()).await;
                }
            }
        });
        Exporter {
            metrics: self.clone(),
            task: Some(task),
        }
    }
}

/// The periodic writer of one command; [`Exporter::finish`] writes the last
/// file. Dropped without it (an error cut the command short), it writes the
/// last file with status `failed`.
pub struct Exporter {
    metrics: Metrics,
    task: Option<JoinHandle<()>>,
}

impl Exporter {
    /// Stops the periodic writes and writes the final file: how the run
    /// ended, its final figures, and the refreshed last success time.
    pub async fn finish(
        mut self,
        status: RunStatus,
        snapshot: Snapshot,
        last_success: Option<f64>,
    ) {
        self.stop_periodic().await;
        let Some(inner) = self.metrics.inner.take() else {
            return;
        };
        {
            let mut state = inner.state.lock();
            state.status = status;
            state.last_success = last_success.or(state.last_success);
            state.snapshot = snapshot;
        }
        write(inner).await;
    }

    /// Stops the periodic writes, leaving the last file as it is until
    /// [`Exporter::finish`]. A command calls it before it reads its final
    /// figures, so no periodic file can carry a later reading (a WAL
    /// position) than the final file does.
    pub async fn stop_periodic(&mut self) {
        if let Some(task) = self.task.take() {
            // Cancels a gather in flight (its query is abandoned); a write
            // in flight completes first, under the file lock.
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let Some(inner) = self.metrics.inner.take() else {
            return;
        };
        if let Some(task) = self.task.take() {
            task.abort();
        }
        inner.state.lock().status = RunStatus::Failed;
        // Synchronous: a drop cannot wait for a blocking task.
        inner.write_file();
    }
}

impl Inner {
    fn update(&self, snapshot: Snapshot) {
        self.state.lock().snapshot = snapshot;
    }

    /// Renders the latest state and replaces the file; a failure is logged,
    /// never fatal (monitoring must not stop a migration).
    fn write_file(&self) {
        let _one_at_a_time = self.file.lock();
        let text = self.render(&self.state.lock());
        match textfile::replace(&self.path, &text) {
            Ok(()) => {
                if self.failing.swap(false, Ordering::SeqCst) {
                    tracing::info!("metrics file {} written again", self.path.display());
                }
            }
            Err(err) => {
                if !self.failing.swap(true, Ordering::SeqCst) {
                    tracing::warn!(
                        "cannot write the metrics file {}: {err} (the run goes on; retried at the next write)",
                        self.path.display()
                    );
                }
            }
        }
    }

    fn render(&self, state: &State) -> String {
        exposition::render(
            &families(self, state),
            &vec![("database", self.database.clone())],
        )
    }
}

/// Writes off the async runtime's threads (a disk sync may take a while).
async fn write(inner: Arc<Inner>) {
    let _ = tokio::task::spawn_blocking(move || inner.write_file()).await;
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Every family relink exports, in the order written. Help texts do not
/// depend on the mode: node_exporter rejects one name with two help texts.
fn families(inner: &Inner, state: &State) -> Vec<Family> {
    let mode = || -> Labels { vec![("mode", inner.mode.as_str().to_owned())] };
    let with = |name: &'static str, value: &str| -> Labels {
        let mut labels = mode();
        labels.push((name, value.to_owned()));
        labels
    };
    let one = |value: exposition::Value| {
        vec![Sample {
            suffix: "",
            labels: mode(),
            value,
        }]
    };
    let mut families = vec![
        Family {
            name: "relink_run_id",
            help: "Id of the run record (see relink status) this invocation works on; a resumed run keeps its id.",
            kind: Kind::Gauge,
            samples: one(inner.run_id.into()),
        },
        Family {
            name: "relink_run_status",
            help: "1 for the status of this invocation's run record, 0 for the others: running until it ends, then completed, partial (stopped at --limit), interrupted (signal, exit 130) or failed (exit 1).",
            kind: Kind::Gauge,
            samples: RunStatus::ALL
                .iter()
                .map(|s| Sample::new(with("status", s.as_str()), u64::from(*s == state.status)))
                .collect(),
        },
        Family {
            name: "relink_start_time_seconds",
            help: "Unix time this invocation started.",
            kind: Kind::Gauge,
            samples: one(inner.started.into()),
        },
        Family {
            name: "relink_last_success_timestamp_seconds",
            help: "Unix time the most recent completed run of this mode finished, from relink's state schema (0: none has completed yet).",
            kind: Kind::Gauge,
            samples: one(state.last_success.unwrap_or(0.0).into()),
        },
        Family {
            name: "relink_chunk_duration_seconds",
            help: "Duration of each committed chunk transaction.",
            kind: Kind::Histogram,
            samples: state.chunks.samples(&mode()),
        },
        Family {
            name: "relink_chunk_duration_max_seconds",
            help: "Duration of the longest committed chunk transaction of this invocation (0: none yet).",
            kind: Kind::Gauge,
            samples: one(state.longest_chunk.into()),
        },
        Family {
            name: "relink_throttled_seconds_total",
            help: "Seconds this invocation waited before chunks, by cause (replica_lag, throttle_query, pause, max_rate).",
            kind: Kind::Counter,
            samples: Cause::ALL
                .iter()
                .map(|cause| {
                    let seconds = state.snapshot.throttled.get(cause).copied().unwrap_or(0.0);
                    Sample::new(with("cause", cause.as_str()), seconds)
                })
                .collect(),
        },
    ];
    if let Some(bytes) = state.snapshot.wal_bytes {
        families.push(Family {
            name: "relink_wal_bytes",
            help: "Bytes of WAL the server wrote since this invocation started: its WAL position's advance, so other sessions' writes count too.",
            kind: Kind::Gauge,
            samples: one(bytes.into()),
        });
    }
    let counter = |name: &'static str, help: &'static str, n: u64| Family {
        name,
        help,
        kind: Kind::Counter,
        samples: one(n.into()),
    };
    match &state.snapshot.work {
        Work::Run {
            counters: c,
            scanned,
            unchanged,
        } => {
            families.extend([
                counter("relink_profiles_scanned_total", "Profiles with a legacy value in the key range this invocation covered (up to its checkpoint).", *scanned),
                counter("relink_profiles_planned_total", "Profiles planned: new, or changed since relink migrated them.", c.profiles_planned),
                counter("relink_profiles_migrated_total", "Planned profiles that got at least one new link.", c.profiles_migrated),
                counter("relink_profiles_unchanged_total", "Scanned profiles skipped because their legacy value is unchanged since relink migrated it.", *unchanged),
                counter("relink_profiles_already_present_total", "Planned profiles whose valid links were all present already.", c.profiles_already_present),
                counter("relink_profiles_without_valid_links_total", "Planned profiles without any valid link.", c.profiles_without_valid_links),
                counter("relink_profiles_gone_total", "Profiles deleted (or emptied) by the application after relink read them: skipped.", c.profiles_gone),
                counter("relink_profiles_drifted_total", "Profiles of the applied plan (run --plan) not written because they changed since the plan was made; 0 for a plain run.", c.profiles_drifted),
                counter("relink_links_created_total", "Links inserted into profile_links.", c.links_created),
                counter("relink_duplicates_total", "Legacy values skipped as duplicates: of the same profile, of a row the user has, or of a link relink created before.", c.duplicates),
                counter("relink_handles_expanded_total", "Bare handles expanded to profile URLs.", c.expanded),
                counter("relink_schemes_repaired_total", "Values that got https:// prefixed.", c.repaired),
            ]);
            let mut rejects: Vec<(String, u64)> = RejectReason::ALL
                .iter()
                .map(|r| {
                    (
                        r.as_str().to_owned(),
                        c.rejects.get(r.as_str()).copied().unwrap_or(0),
                    )
                })
                .collect();
            for (reason, n) in &c.rejects {
                if !rejects.iter().any(|(r, _)| r == reason) {
                    rejects.push((reason.clone(), *n));
                }
            }
            families.push(Family {
                name: "relink_rejects_total",
                help: "Legacy values rejected, by reason.",
                kind: Kind::Counter,
                samples: rejects
                    .iter()
                    .map(|(reason, n)| Sample::new(with("reason", reason), *n))
                    .collect(),
            });
        }
        Work::Purge(c) => families.extend([
            counter(
                "relink_purge_profiles_total",
                "Profiles whose ledger rows this purge went through.",
                c.profiles,
            ),
            counter(
                "relink_links_deleted_total",
                "Links relink created that this purge deleted.",
                c.links_deleted,
            ),
            counter(
                "relink_links_kept_edited_total",
                "Links relink created that this purge kept because users edited them since.",
                c.kept_edited,
            ),
            counter(
                "relink_links_already_gone_total",
                "Links relink created that users had deleted already.",
                c.already_gone,
            ),
        ]),
    }
    families
}

/// A run's "scanned" figure for its periodic writes: profiles with a legacy
/// value from where this invocation started up to the run's checkpoint,
/// counted stretch by stretch as the checkpoint moves (so each write costs
/// a count of what is new, not of everything so far). "Unchanged" is
/// scanned less planned, as in the summary; planned is read after the
/// checkpoint, so it errs low, and it never goes down between writes.
pub struct Scanned {
    order: Order,
    after: Option<String>,
    scanned: u64,
    unchanged: u64,
}

impl Scanned {
    /// From the key this invocation starts after (a resumed run's
    /// checkpoint), in the run's order.
    pub fn new(order: Order, start_after: Option<String>) -> Self {
        Self {
            order,
            after: start_after,
            scanned: 0,
            unchanged: 0,
        }
    }

    /// Counts up to the checkpoint run `run_id` has saved by now; on a
    /// database error the figure stays as it was (logged at debug level).
    pub async fn refresh(&mut self, client: &impl GenericClient, names: &Names, run_id: i64) {
        if let Err(err) = self.count(client, names, run_id).await {
            tracing::debug!("metrics: {err:#}");
        }
    }

    async fn count(
        &mut self,
        client: &impl GenericClient,
        names: &Names,
        run_id: i64,
    ) -> Result<()> {
        let checkpoint = state::load_run(client, names, run_id)
            .await?
            .and_then(|r| r.checkpoint)
            .context("no checkpoint yet")?;
        if self.after.as_deref() == Some(checkpoint.as_str()) {
            return Ok(());
        }
        self.scanned += crate::source::count_with_legacy(
            client,
            names,
            self.order,
            self.after.as_deref(),
            Some(&checkpoint),
        )
        .await?;
        self.after = Some(checkpoint);
        Ok(())
    }

    /// The snapshot with the run's counters and WAL so far at hand.
    pub fn snapshot(
        &mut self,
        counters: Counters,
        throttled: Throttled,
        wal_bytes: Option<u64>,
    ) -> Snapshot {
        self.unchanged = self.unchanged.max(
            self.scanned
                .saturating_sub(counters.profiles_planned)
                .saturating_sub(counters.profiles_gone),
        );
        Snapshot {
            work: Work::Run {
                counters,
                scanned: self.scanned,
                unchanged: self.unchanged,
            },
            throttled,
            wal_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Metrics of run record 42 that are never written to their file.
    fn enabled(mode: Mode) -> (Metrics, Arc<Inner>) {
        let metrics = Metrics::new(
            Some(&MetricsConfig {
                path: PathBuf::from("unused.prom"),
                interval: Duration::from_secs(10),
            }),
            // Empty: left out, so the series below read as written.
            "",
            mode,
            42,
            Some(1_700_000_000.5),
        );
        let inner = metrics.inner.clone().expect("enabled");
        (metrics, inner)
    }

    fn rendered(mode: Mode, snapshot: Snapshot, status: RunStatus) -> String {
        let (metrics, inner) = enabled(mode);
        let mut state = inner.state.lock();
        state.snapshot = snapshot;
        state.status = status;
        drop(state);
        metrics.observe_chunk(Duration::from_millis(300));
        let state = inner.state.lock();
        inner.render(&state)
    }

    fn value_of<'a>(text: &'a str, series: &str) -> &'a str {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
    }

    #[test]
    fn a_run_exports_its_summary_figures_status_and_every_reason_and_cause() {
        let mut counters = Counters {
            profiles_planned: 5,
            profiles_migrated: 4,
            links_created: 9,
            duplicates: 2,
            ..Counters::default()
        };
        counters.rejects.insert("scheme".into(), 3);
        let mut throttled = Throttled::new();
        throttled.insert(Cause::Pause, 1.5);
        let text = rendered(
            Mode::Run,
            Snapshot {
                work: Work::Run {
                    counters,
                    scanned: 8,
                    unchanged: 3,
                },
                throttled,
                wal_bytes: Some(123_456),
            },
            RunStatus::Interrupted,
        );
        for (series, expected) in [
            ("relink_run_id{mode=\"run\"}", "42"),
            ("relink_links_created_total{mode=\"run\"}", "9"),
            ("relink_profiles_unchanged_total{mode=\"run\"}", "3"),
            ("relink_rejects_total{mode=\"run\",reason=\"scheme\"}", "3"),
            ("relink_wal_bytes{mode=\"run\"}", "123456"),
            (
                "relink_rejects_total{mode=\"run\",reason=\"too_long\"}",
                "0",
            ),
            (
                "relink_throttled_seconds_total{mode=\"run\",cause=\"pause\"}",
                "1.5",
            ),
            (
                "relink_throttled_seconds_total{mode=\"run\",cause=\"replica_lag\"}",
                "0",
            ),
            (
                "relink_run_status{mode=\"run\",status=\"interrupted\"}",
                "1",
            ),
            ("relink_run_status{mode=\"run\",status=\"running\"}", "0"),
            (
                "relink_last_success_timestamp_seconds{mode=\"run\"}",
                "1700000000.5",
            ),
            (
                "relink_chunk_duration_seconds_bucket{mode=\"run\",le=\"0.25\"}",
                "0",
            ),
            (
                "relink_chunk_duration_seconds_bucket{mode=\"run\",le=\"0.5\"}",
                "1",
            ),
            ("relink_chunk_duration_seconds_count{mode=\"run\"}", "1"),
            ("relink_chunk_duration_max_seconds{mode=\"run\"}", "0.3"),
        ] {
            assert_eq!(value_of(&text, series), expected, "{series}");
        }
        let statuses = text
            .lines()
            .filter(|l| l.starts_with("relink_run_status{"))
            .count();
        assert_eq!(statuses, RunStatus::ALL.len());
        assert!(!text.contains("relink_links_deleted_total"));
    }

    #[test]
    fn a_purge_exports_its_own_figures() {
        let text = rendered(
            Mode::Purge,
            Snapshot {
                work: Work::Purge(PurgeCounters {
                    profiles: 2,
                    links_deleted: 5,
                    kept_edited: 1,
                    already_gone: 0,
                }),
                throttled: Throttled::new(),
                wal_bytes: None,
            },
            RunStatus::Completed,
        );
        assert_eq!(
            value_of(&text, "relink_links_deleted_total{mode=\"purge\"}"),
            "5"
        );
        assert_eq!(
            value_of(&text, "relink_links_kept_edited_total{mode=\"purge\"}"),
            "1"
        );
        assert_eq!(
            value_of(&text, "relink_purge_profiles_total{mode=\"purge\"}"),
            "2"
        );
        assert_eq!(
            value_of(
                &text,
                "relink_run_status{mode=\"purge\",status=\"completed\"}"
            ),
            "1"
        );
        assert!(!text.contains("relink_links_created_total"));
    }

    /// Prometheus naming conventions: a `relink_` prefix, valid names,
    /// `_total` exactly on counters, base units (`_seconds`), every family
    /// with help and type once.
    #[test]
    fn names_follow_prometheus_conventions() {
        for mode in [Mode::Run, Mode::Purge] {
            let text = rendered(mode, Snapshot::empty(mode), RunStatus::Running);
            let mut kinds = std::collections::BTreeMap::new();
            for line in text.lines() {
                if let Some(rest) = line.strip_prefix("# TYPE ") {
                    let (name, kind) = rest.split_once(' ').expect("name and type");
                    assert!(
                        kinds.insert(name.to_owned(), kind.to_owned()).is_none(),
                        "{name} twice"
                    );
                }
            }
            assert!(kinds.len() >= 10, "{kinds:?}");
            for (name, kind) in &kinds {
                assert!(name.starts_with("relink_"), "{name}");
                assert!(
                    name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                    "{name}"
                );
                assert_eq!(
                    name.ends_with("_total"),
                    kind == "counter",
                    "{name} is a {kind}"
                );
                assert!(
                    text.contains(&format!("# HELP {name} ")),
                    "{name} has no help"
                );
                for unit in ["_ms", "_milliseconds", "_minutes"] {
                    assert!(!name.contains(unit), "{name}: use seconds");
                }
            }
            // Every series has the mode, so run and purge files never clash.
            for line in text.lines().filter(|l| !l.starts_with('#')) {
                assert!(
                    line.contains(&format!("mode=\"{}\"", mode.as_str())),
                    "{line}"
                );
            }
        }
    }

    #[test]
    fn the_longest_chunk_is_the_maximum_of_every_observation() {
        let (metrics, inner) = enabled(Mode::Run);
        let longest = || {
            let state = inner.state.lock();
            value_of(
                &inner.render(&state),
                "relink_chunk_duration_max_seconds{mode=\"run\"}",
            )
            .to_owned()
        };
        assert_eq!(longest(), "0", "no chunk yet");
        for ms in [120, 1750, 40, 900] {
            metrics.observe_chunk(Duration::from_millis(ms));
        }
        assert_eq!(longest(), "1.75");
    }

    #[tokio::test]
    async fn a_disabled_handle_does_nothing() {
        let metrics = Metrics::new(None, "", Mode::Run, 1, None);
        metrics.observe_chunk(Duration::from_millis(5));
        let exporter = metrics.start(|| Snapshot::empty(Mode::Run)).await;
        exporter
            .finish(RunStatus::Completed, Snapshot::empty(Mode::Run), None)
            .await;
    }

    #[tokio::test]
    async fn the_file_is_written_at_start_periodically_and_at_the_end_and_on_drop() {
        let dir = std::env::temp_dir().join(format!("relink-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch directory");
        let path = dir.join("relink.prom");
        let config = MetricsConfig {
            path: path.clone(),
            interval: Duration::from_millis(20),
        };
        let read = || std::fs::read_to_string(&path).expect("the file exists");
        let metrics = Metrics::new(Some(&config), "", Mode::Purge, 7, None);
        let deleted = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let gather = {
            let deleted = deleted.clone();
            move || Snapshot {
                work: Work::Purge(PurgeCounters {
                    links_deleted: deleted.load(Ordering::SeqCst),
                    ..PurgeCounters::default()
                }),
                throttled: Throttled::new(),
                wal_bytes: None,
            }
        };
        let exporter = metrics.start(gather.clone()).await;
        assert!(read().contains("relink_links_deleted_total{mode=\"purge\"} 0\n"));
        assert!(read().contains("relink_run_status{mode=\"purge\",status=\"running\"} 1\n"));
        deleted.store(12, Ordering::SeqCst);
        let started = std::time::Instant::now();
        while !read().contains("relink_links_deleted_total{mode=\"purge\"} 12\n") {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "no periodic write"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        exporter
            .finish(RunStatus::Completed, gather.clone()(), Some(1234.0))
            .await;
        let text = read();
        assert!(
            text.contains("relink_run_status{mode=\"purge\",status=\"completed\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("relink_last_success_timestamp_seconds{mode=\"purge\"} 1234\n"),
            "{text}"
        );
        // No periodic write comes after the final one.
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(read(), text);

        // Dropped without finish (an error returned early): failed.
        let exporter = metrics.start(gather).await;
        drop(exporter);
        assert!(read().contains("relink_run_status{mode=\"purge\",status=\"failed\"} 1\n"));
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
