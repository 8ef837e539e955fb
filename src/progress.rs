//! Progress on stderr: an indicatif bar with rate and ETA on a terminal,
//! periodic log lines otherwise (cron, CI, `--log-format json`). Figures
//! are rounded for people and each names its unit (`12,345 profiles/s`,
//! `1,234 links`), SPEC §14.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use parking_lot::Mutex;

/// How often a log line reports progress when there is no terminal.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// What a progress counts: the bar's unit (its position, total and rate),
/// and a second running figure shown beside it.
#[derive(Debug, Clone, Copy)]
pub struct Units {
    /// E.g. `profiles`.
    pub bar: &'static str,
    /// E.g. `links`.
    pub also: &'static str,
}

/// A migration (or its dry run): profiles, and the links they yield.
pub const PROFILES_AND_LINKS: Units = Units {
    bar: "profiles",
    also: "links",
};

pub struct Progress {
    bar: Option<ProgressBar>,
    what: &'static str,
    units: Units,
    total: AtomicU64,
    done: AtomicU64,
    also: AtomicU64,
    started: Instant,
    last_log: Mutex<Instant>,
}

impl Progress {
    /// `total`: an estimate of what is to do, in `units.bar` (the bar grows
    /// if it is exceeded).
    pub fn new(what: &'static str, units: Units, total: u64, show_bar: bool) -> Self {
        let bar = (show_bar && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            bar.set_prefix(what);
            bar.set_message(format!("0 {}", units.also));
            bar.set_style(bar_style(units));
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Self {
            bar,
            what,
            units,
            total: AtomicU64::new(total),
            done: AtomicU64::new(0),
            also: AtomicU64::new(0),
            started: Instant::now(),
            last_log: Mutex::new(Instant::now()),
        }
    }

    /// Records a finished chunk: `done` more in the bar's unit, `also` more
    /// of the second figure.
    pub fn advance(&self, done: u64, also: u64) {
        let done = self.done.fetch_add(done, Ordering::Relaxed) + done;
        let also = self.also.fetch_add(also, Ordering::Relaxed) + also;
        let total = self.total.fetch_max(done, Ordering::Relaxed).max(done);
        if let Some(bar) = &self.bar {
            bar.set_length(total);
            bar.set_position(done);
            bar.set_message(format!("{} {}", grouped(also), self.units.also));
            return;
        }
        let mut last = self.last_log.lock();
        if last.elapsed() >= LOG_EVERY {
            *last = Instant::now();
            let line = log_line(
                self.what,
                self.units,
                Figures {
                    done,
                    total,
                    also,
                    elapsed: self.started.elapsed(),
                },
            );
            tracing::info!("{line}");
        }
    }

    /// Shows what the work waits for (`None`: it carries on). On a
    /// terminal the bar's prefix says it; off one, the throttle's log
    /// lines already do.
    pub fn waiting(&self, reason: Option<&str>) {
        if let Some(bar) = &self.bar {
            match reason {
                Some(reason) => bar.set_prefix(format!("{} (waiting: {reason})", self.what)),
                None => bar.set_prefix(self.what),
            }
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// `{prefix} [=====>   ] 12,345/100,000 profiles · 1,234 profiles/s · 23,456 links · ETA 1m`
fn bar_style(units: Units) -> ProgressStyle {
    let template = format!(
        "{{spinner}} {{prefix}} [{{bar:30}}] {{human_pos}}/{{human_len}} {} · {{rate}} · {{msg}} · ETA {{eta}}",
        units.bar
    );
    let unit = units.bar;
    ProgressStyle::with_template(&template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key(
            "rate",
            move |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{}/s", rate(state.per_sec(), unit));
            },
        )
        .progress_chars("=> ")
}

/// The figures of one progress line.
#[derive(Debug, Clone, Copy)]
struct Figures {
    done: u64,
    total: u64,
    also: u64,
    elapsed: Duration,
}

/// `migrating: 12,345/100,000 profiles (12%), 1,234 profiles/s, 23,456 links, ETA 1m 13s`
fn log_line(what: &str, units: Units, f: Figures) -> String {
    let seconds = f.elapsed.as_secs_f64().max(0.001);
    let per_second = f.done as f64 / seconds;
    let percent = if f.total == 0 {
        100.0
    } else {
        (f.done as f64 * 100.0 / f.total as f64).min(100.0)
    };
    let mut line = format!(
        "{what}: {}/{} {} ({percent:.0}%), {}/s, {} {}",
        grouped(f.done),
        grouped(f.total),
        units.bar,
        rate(per_second, units.bar),
        grouped(f.also),
        units.also,
    );
    if per_second > 0.0 && f.total > f.done {
        let left = (f.total - f.done) as f64 / per_second;
        let _ = write!(line, ", ETA {}", human_duration(left));
    }
    line
}

/// A rate for people: whole numbers with thousands separators, one decimal
/// below 10 (`0.4 profiles` rather than `0 profiles`).
fn rate(per_second: f64, unit: &str) -> String {
    if !per_second.is_finite() || per_second < 0.0 {
        return format!("0 {unit}");
    }
    if per_second < 9.95 {
        return format!("{per_second:.1} {unit}");
    }
    // Rounded and non-negative; rates beyond u64 do not occur.
    let whole = format!("{per_second:.0}")
        .parse::<u64>()
        .unwrap_or(u64::MAX);
    format!("{} {unit}", grouped(whole))
}

/// `12345678` → `12,345,678`.
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `45s`, `12m 5s`, `3h 12m`.
fn human_duration(seconds: f64) -> String {
    let seconds = format!("{:.0}", seconds.max(0.0))
        .parse::<u64>()
        .unwrap_or(u64::MAX);
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s => format!("{}h {}m", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(12_345), "12,345");
        assert_eq!(grouped(1_234_567_890), "1,234,567,890");
    }

    #[test]
    fn rates_are_rounded_and_name_their_unit() {
        assert_eq!(rate(19_037.206_5, "profiles"), "19,037 profiles");
        assert_eq!(rate(12.6, "links"), "13 links");
        assert_eq!(rate(0.44, "links"), "0.4 links");
        assert_eq!(rate(f64::NAN, "links"), "0 links");
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(human_duration(44.6), "45s");
        assert_eq!(human_duration(725.0), "12m 5s");
        assert_eq!(human_duration(11_520.0), "3h 12m");
    }

    #[test]
    fn a_log_line_has_rounded_figures_each_with_its_unit() {
        let line = log_line(
            "migrating",
            PROFILES_AND_LINKS,
            Figures {
                done: 12_345,
                total: 100_000,
                also: 23_456,
                elapsed: Duration::from_secs(10),
            },
        );
        assert_eq!(
            line,
            "migrating: 12,345/100,000 profiles (12%), 1,234 profiles/s, 23,456 links, ETA 1m 11s"
        );
        let purge = log_line(
            "purging",
            Units {
                bar: "links",
                also: "links deleted",
            },
            Figures {
                done: 3_000,
                total: 3_000,
                also: 2_900,
                elapsed: Duration::from_secs(2),
            },
        );
        assert_eq!(
            purge,
            "purging: 3,000/3,000 links (100%), 1,500 links/s, 2,900 links deleted"
        );
    }
}
