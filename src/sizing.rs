//! Chunk sizes (SPEC §13 "Chunk time"): a fixed `--chunk-size N`, or `auto`
//! (the default), which sizes chunks so that one chunk's transaction takes
//! about `--target-chunk-time`. The feed asks for the next size; writers
//! report how long each chunk took, and a lock or statement timeout.
//!
//! Auto sizing learns the seconds one profile costs (a moving average of
//! recent chunks, so it follows the server getting busier or quieter and
//! the data getting heavier or lighter) and divides the target by it. It
//! starts small, grows at most twofold per chunk (a burst of light profiles
//! must not commit it to a huge chunk), shrinks at once when chunks run
//! long, and quarters the size after a timeout, before it has learnt
//! anything from the failed chunk. Pure: no I/O, no clock of its own.

use std::time::Duration;

use parking_lot::Mutex;

use crate::config::{ChunkSize, MAX_CHUNK_SIZE};

/// First chunk under `auto`: small, so a heavy start stays short.
const AUTO_START: usize = 100;
/// Never smaller: a chunk of a few profiles is all overhead.
const AUTO_MIN: usize = 10;
/// Never larger (the same cap as a fixed size, [`MAX_CHUNK_SIZE`]).
const AUTO_MAX: usize = MAX_CHUNK_SIZE;
/// Weight of the newest chunk in the moving average of seconds per profile.
const WEIGHT: f64 = 0.3;
/// Chunks are sized for this share of the target: the average chunk then
/// leaves room for the one that runs long (a server checkpoint, a cluster
/// of heavy profiles, the other writer's commit) before the next
/// measurement shrinks the size.
const AIM: f64 = 2.0 / 3.0;

#[derive(Debug)]
struct State {
    size: usize,
    /// Moving average of seconds per profile, once a chunk was measured.
    per_profile: Option<f64>,
}

/// Shared by the feed and the writers of one run.
#[derive(Debug)]
pub struct Sizer {
    mode: ChunkSize,
    state: Mutex<State>,
}

impl Sizer {
    pub fn new(mode: ChunkSize) -> Self {
        let size = match mode {
            ChunkSize::Fixed(n) => n,
            ChunkSize::Auto { .. } => AUTO_START,
        };
        Self {
            mode,
            state: Mutex::new(State {
                size,
                per_profile: None,
            }),
        }
    }

    /// Profiles in the next chunk.
    pub fn next(&self) -> usize {
        self.state.lock().size
    }

    /// Profiles in the next chunk, at most `most` under `auto` (what fits
    /// the memory a chunk may hold); a fixed size is the operator's.
    pub fn next_within(&self, most: usize) -> usize {
        let size = self.next();
        match self.mode {
            ChunkSize::Fixed(_) => size,
            ChunkSize::Auto { .. } => size.min(most.max(AUTO_MIN)),
        }
    }

    /// A chunk of `profiles` committed in `took`.
    pub fn observed(&self, profiles: usize, took: Duration) {
        let ChunkSize::Auto { target } = self.mode else {
            return;
        };
        if profiles == 0 {
            return;
        }
        let mut state = self.state.lock();
        let sample = took.as_secs_f64() / profiles as f64;
        let per_profile = match state.per_profile {
            None => sample,
            // A chunk that ran long counts at once: shrinking must not wait
            // for the average to catch up.
            Some(avg) if sample > avg => sample,
            Some(avg) => avg + WEIGHT * (sample - avg),
        };
        state.per_profile = Some(per_profile);
        let ideal = AIM * target.as_secs_f64() / per_profile.max(1e-9);
        let grown = state.size.saturating_mul(2);
        state.size = clamp(ideal).min(grown);
        tracing::debug!("next chunks: {} profiles", state.size);
    }

    /// A chunk hit a lock or statement timeout: the next ones are a quarter
    /// of the size, and the average forgets what made them big.
    pub fn timed_out(&self) {
        if let ChunkSize::Auto { .. } = self.mode {
            let mut state = self.state.lock();
            let before = state.size;
            state.size = (before / 4).max(AUTO_MIN);
            state.per_profile = None;
            tracing::info!(
                "a chunk timed out: chunks shrink from {before} to {} profiles",
                state.size
            );
        }
    }
}

fn clamp(ideal: f64) -> usize {
    if ideal.is_nan() || ideal < AUTO_MIN as f64 {
        AUTO_MIN
    } else if ideal > AUTO_MAX as f64 {
        AUTO_MAX
    } else {
        // In range, so the conversion is exact enough and cannot wrap.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let size = ideal as usize;
        size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auto() -> Sizer {
        Sizer::new(ChunkSize::Auto {
            target: Duration::from_millis(500),
        })
    }

    /// Auto sizing after ten chunks at 0.1 ms a profile: 3,333 profiles,
    /// two thirds of the target.
    fn settled() -> Sizer {
        let sizer = auto();
        for _ in 0..10 {
            let n = sizer.next();
            sizer.observed(n, Duration::from_micros(100 * n as u64));
        }
        sizer
    }

    #[test]
    fn a_fixed_size_never_changes() {
        let sizer = Sizer::new(ChunkSize::Fixed(700));
        sizer.observed(700, Duration::from_secs(30));
        sizer.timed_out();
        assert_eq!(sizer.next(), 700);
    }

    #[test]
    fn auto_stays_within_what_memory_allows_and_a_fixed_size_does_not() {
        let sizer = settled();
        assert_eq!(sizer.next_within(2000), 2000);
        assert_eq!(sizer.next_within(5000), 3333);
        assert_eq!(sizer.next_within(0), AUTO_MIN, "never below the floor");
        let fixed = Sizer::new(ChunkSize::Fixed(700));
        assert_eq!(fixed.next_within(10), 700, "the operator's size");
    }

    #[test]
    fn auto_grows_at_most_twofold_towards_the_target() {
        let sizer = auto();
        assert_eq!(sizer.next(), 100);
        // 0.1 ms per profile: two thirds of the target allow 3,333.
        let mut sizes = Vec::new();
        for _ in 0..8 {
            let n = sizer.next();
            sizer.observed(n, Duration::from_micros(100 * n as u64));
            sizes.push(sizer.next());
        }
        assert_eq!(sizes, [200, 400, 800, 1600, 3200, 3333, 3333, 3333]);
    }

    #[test]
    fn auto_shrinks_at_once_when_profiles_get_heavy() {
        let sizer = settled();
        assert_eq!(sizer.next(), 3333);
        // Heavy profiles: 10 ms each. One long chunk is enough to cut.
        sizer.observed(3333, Duration::from_millis(33_330));
        assert_eq!(sizer.next(), 33);
    }

    #[test]
    fn a_timeout_quarters_the_size_at_once() {
        let sizer = settled();
        sizer.timed_out();
        assert_eq!(sizer.next(), 833);
        sizer.timed_out();
        sizer.timed_out();
        sizer.timed_out();
        sizer.timed_out();
        assert_eq!(sizer.next(), AUTO_MIN);
    }

    #[test]
    fn sizes_stay_in_bounds() {
        let sizer = auto();
        for _ in 0..40 {
            let n = sizer.next();
            sizer.observed(n, Duration::from_nanos(1));
        }
        assert_eq!(sizer.next(), AUTO_MAX);
        sizer.observed(AUTO_MAX, Duration::from_secs(3600));
        assert_eq!(sizer.next(), AUTO_MIN);
        sizer.observed(0, Duration::from_secs(1));
        assert_eq!(sizer.next(), AUTO_MIN);
    }

    #[test]
    fn the_average_follows_lighter_profiles_gradually() {
        let sizer = auto();
        sizer.observed(100, Duration::from_millis(100)); // 1 ms each
        assert_eq!(sizer.next(), 200);
        // Ten times lighter: the average moves by 30% of the gap.
        sizer.observed(200, Duration::from_millis(20));
        let avg = 0.001 + 0.3 * (0.0001 - 0.001);
        let expected = clamp(AIM * 0.5 / avg).min(400);
        assert_eq!(sizer.next(), expected);
    }
}
