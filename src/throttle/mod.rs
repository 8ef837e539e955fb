//! The "before each chunk" seam (SPEC §6 "Gentle on production", §13): every
//! reason to hold the next chunk back is checked here, by every writer of
//! `run` and by `purge`, before a chunk's transaction begins, so a waiting
//! process holds no transaction and no row lock (it keeps its advisory lock
//! and checkpoint). Each wait is counted by its cause, logged with its
//! figures, shown on the progress line and, through the run record, by
//! `status`; a signal cuts every wait short.
//!
//! In order: the database gates of `watch` (an operator's `relink pause`,
//! replica lag, `--throttle-query`), then `--max-rate` (links per second
//! over the whole run) and `--pause` (a rest between a writer's chunks).

pub mod replica;
pub mod watch;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
// tokio's clock: the same as std's, and pausable in tests.
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::progress::Progress;
use crate::text_enum::text_enum;
pub use watch::{Hold, Watch};

/// How long a held chunk waits before the gates are asked again.
const RECHECK: Duration = Duration::from_secs(1);
/// How often a hold that lasts is logged again.
const LOG_AGAIN: Duration = Duration::from_secs(30);

/// Why a chunk waited: the keys of `throttled_seconds` (SPEC §13), in the
/// order the summary lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// A replica's lag over `--max-replica-lag`.
    ReplicaLag,
    /// `--throttle-query` answered true.
    ThrottleQuery,
    /// `relink pause` (an operator's hold) or `--pause` (a rest between
    /// chunks): both are pauses the operator asked for.
    Pause,
    /// `--max-rate`.
    MaxRate,
}

text_enum!(Cause "throttle cause" {
    ReplicaLag = "replica_lag",
    ThrottleQuery = "throttle_query",
    Pause = "pause",
    MaxRate = "max_rate",
});

/// Seconds waited, by cause; every cause present (0 when it never held).
pub type Throttled = BTreeMap<Cause, f64>;

/// What throttles a command.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    /// `--max-rate`: links created per second, over the whole run.
    pub max_rate: Option<u64>,
    /// `--pause`: rest between two chunks of one writer.
    pub pause: Option<Duration>,
}

/// The seam, shared by all writers of one command.
pub struct Throttle {
    limits: Limits,
    /// The database gates; one writer asks them at a time, so a hold is
    /// logged and counted once, not once per writer.
    watch: Option<tokio::sync::Mutex<Watch>>,
    started: Instant,
    /// Links committed so far (for `--max-rate`).
    links: AtomicU64,
    waited: Mutex<BTreeMap<Cause, Duration>>,
    /// Cuts every wait short (a signal, or the command stopping).
    stop: CancellationToken,
}

impl Throttle {
    pub fn new(limits: Limits, watch: Option<Watch>, stop: CancellationToken) -> Self {
        Self {
            limits,
            watch: watch.map(tokio::sync::Mutex::new),
            started: Instant::now(),
            links: AtomicU64::new(0),
            waited: Mutex::new(BTreeMap::new()),
            stop,
        }
    }

    /// Shows holds on run `id`'s record (for `status`).
    pub async fn show_on(&self, id: i64) {
        if let Some(watch) = &self.watch {
            watch.lock().await.show_on(id);
        }
    }

    /// A chunk committed `links` links.
    pub fn committed(&self, links: u64) {
        self.links.fetch_add(links, Ordering::SeqCst);
    }

    /// Waits until the next chunk may begin. `after_chunk`: this writer
    /// has just committed one (so `--pause` applies). Returns false when a
    /// signal cut the wait short: the caller stops instead of beginning.
    pub async fn before_chunk(&self, after_chunk: bool, progress: &Progress) -> bool {
        if !self.hold_while_gated(progress).await {
            return false;
        }
        if let Some(rate) = self.limits.max_rate {
            let links = self.links.load(Ordering::SeqCst);
            let due = Duration::from_secs_f64(links as f64 / rate as f64);
            let elapsed = self.started.elapsed();
            if due > elapsed && !self.wait(Cause::MaxRate, due - elapsed).await {
                return false;
            }
        }
        if let Some(pause) = self.limits.pause.filter(|_| after_chunk) {
            if !self.wait(Cause::Pause, pause).await {
                return false;
            }
        }
        !self.stop.is_cancelled()
    }

    /// Waits while a database gate holds.
    async fn hold_while_gated(&self, progress: &Progress) -> bool {
        let Some(watch) = &self.watch else {
            return true;
        };
        let mut watch = watch.lock().await;
        // The cause held for, since when, and when it was last logged.
        let mut held: Option<(Cause, Instant, Instant)> = None;
        loop {
            let Some(hold) = watch.check().await else {
                break;
            };
            let now = Instant::now();
            match &mut held {
                None => {
                    tracing::warn!("waiting before the next chunk: {}", hold.reason);
                    held = Some((hold.cause, now, now));
                }
                Some((cause, since, logged))
                    if *cause != hold.cause || now.duration_since(*logged) >= LOG_AGAIN =>
                {
                    tracing::warn!(
                        "waiting ({:.0} s so far): {}",
                        now.duration_since(*since).as_secs_f64(),
                        hold.reason
                    );
                    (*cause, *logged) = (hold.cause, now);
                }
                Some(_) => {}
            }
            progress.waiting(Some(&hold.reason));
            if !self.wait(hold.cause, RECHECK).await {
                progress.waiting(None);
                return false;
            }
        }
        if let Some((_, since, _)) = held {
            tracing::info!(
                "carrying on after waiting {:.1} s",
                since.elapsed().as_secs_f64()
            );
            progress.waiting(None);
        }
        true
    }

    /// Sleeps `duration` unless stopped first: whether it slept the whole
    /// time.
    async fn wait(&self, cause: Cause, duration: Duration) -> bool {
        let started = Instant::now();
        let slept = tokio::select! {
            () = tokio::time::sleep(duration) => !self.stop.is_cancelled(),
            () = self.stop.cancelled() => false,
        };
        *self.waited.lock().entry(cause).or_default() += started.elapsed();
        slept
    }

    /// Seconds spent waiting, by cause.
    pub fn throttled_seconds(&self) -> Throttled {
        let waited = self.waited.lock().clone();
        Cause::ALL
            .iter()
            .map(|c| (*c, waited.get(c).map_or(0.0, Duration::as_secs_f64)))
            .collect()
    }
}

/// The `throttled_seconds` of a command that never waits (a dry run).
pub fn none() -> Throttled {
    Cause::ALL.iter().map(|c| (*c, 0.0)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress() -> Progress {
        Progress::new("test", crate::progress::PROFILES_AND_LINKS, 0, false)
    }

    #[tokio::test(start_paused = true)]
    async fn max_rate_waits_until_the_links_are_due() {
        let throttle = Throttle::new(
            Limits {
                max_rate: Some(100),
                pause: None,
            },
            None,
            CancellationToken::new(),
        );
        throttle.committed(300);
        let before = Instant::now();
        assert!(throttle.before_chunk(true, &progress()).await);
        // 300 links at 100/s are due after 3 s.
        let waited = before.elapsed();
        assert!(
            waited >= Duration::from_millis(2990) && waited <= Duration::from_millis(3010),
            "{waited:?}"
        );
        let seconds = throttle.throttled_seconds()[&Cause::MaxRate];
        assert!((seconds - 3.0).abs() < 0.02, "{seconds}");
    }

    #[tokio::test(start_paused = true)]
    async fn pause_applies_between_chunks_only() {
        let throttle = Throttle::new(
            Limits {
                max_rate: None,
                pause: Some(Duration::from_millis(250)),
            },
            None,
            CancellationToken::new(),
        );
        let before = Instant::now();
        assert!(throttle.before_chunk(false, &progress()).await);
        assert_eq!(before.elapsed(), Duration::ZERO);
        assert!(throttle.before_chunk(true, &progress()).await);
        assert!(throttle.before_chunk(true, &progress()).await);
        assert_eq!(before.elapsed(), Duration::from_millis(500));
        let seconds = throttle.throttled_seconds()[&Cause::Pause];
        assert!((seconds - 0.5).abs() < 0.01, "{seconds}");
    }

    #[tokio::test]
    async fn no_limits_no_wait() {
        let throttle = Throttle::new(Limits::default(), None, CancellationToken::new());
        throttle.committed(1_000_000);
        assert!(throttle.before_chunk(true, &progress()).await);
        assert!(throttle.throttled_seconds().values().all(|s| *s == 0.0));
        assert_eq!(throttle.throttled_seconds().len(), Cause::ALL.len());
    }
}
