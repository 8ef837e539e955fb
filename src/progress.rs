//! Progress on stderr: an indicatif bar with rate and ETA on a terminal,
//! periodic log lines otherwise (cron, CI, `--log-format json`).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often a log line reports progress when there is no terminal.
const LOG_EVERY: Duration = Duration::from_secs(10);

pub struct Progress {
    bar: Option<ProgressBar>,
    what: &'static str,
    total: AtomicU64,
    done: AtomicU64,
    links: AtomicU64,
    started: Instant,
    last_log: Mutex<Instant>,
}

impl Progress {
    /// `total`: an estimate of the profiles to do (the bar grows if exceeded).
    pub fn new(what: &'static str, total: u64, show_bar: bool) -> Self {
        let bar = (show_bar && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} {msg} [{bar:30}] {pos}/{len} profiles · {per_sec} · ETA {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_message(what);
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Self {
            bar,
            what,
            total: AtomicU64::new(total),
            done: AtomicU64::new(0),
            links: AtomicU64::new(0),
            started: Instant::now(),
            last_log: Mutex::new(Instant::now()),
        }
    }

    /// Records a finished chunk.
    pub fn advance(&self, profiles: u64, links: u64) {
        let done = self.done.fetch_add(profiles, Ordering::Relaxed) + profiles;
        let links = self.links.fetch_add(links, Ordering::Relaxed) + links;
        let total = self.total.fetch_max(done, Ordering::Relaxed).max(done);
        if let Some(bar) = &self.bar {
            bar.set_length(total);
            bar.set_position(done);
            return;
        }
        let Ok(mut last) = self.last_log.lock() else {
            return;
        };
        if last.elapsed() >= LOG_EVERY {
            *last = Instant::now();
            let secs = self.started.elapsed().as_secs_f64().max(0.001);
            tracing::info!(
                "{}: {done}/{total} profiles, {links} links, {:.0} profiles/s",
                self.what,
                done as f64 / secs
            );
        }
    }

    /// Shows what the work waits for (`None`: it carries on). On a
    /// terminal the bar's message says it; off one, the throttle's log
    /// lines already do.
    pub fn waiting(&self, reason: Option<&str>) {
        if let Some(bar) = &self.bar {
            match reason {
                Some(reason) => bar.set_message(format!("{} (waiting: {reason})", self.what)),
                None => bar.set_message(self.what),
            }
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
