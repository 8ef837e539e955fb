//! The memory budget of chunks on their way (SPEC §11: peak memory flat in
//! the number of profiles). A chunk holds room in the budget from before
//! its page is read until it is dropped (committed, or planned in a dry
//! run), so what the feed may read ahead is bounded in bytes, not in chunks.
//! Under `--chunk-size auto` no chunk is larger than its share either, so
//! memory does not follow the sizes the server's speed allows (without
//! that cap, peak memory differed by more than SPEC §11's 10% between 100k
//! and 1M profiles; `make bench` reports both).
//!
//! The feed reserves room for the page it is about to read, estimated from
//! the pages read so far, and settles the reservation on what the page
//! weighs once read. One chunk reserves at most a share of the budget that
//! leaves room for every consumer's chunk and one more, so consumers never
//! starve: chunks larger than their share (a large fixed `--chunk-size`)
//! hold more memory than the budget, and say so in their size.

use std::sync::Arc;

use tokio::sync::Semaphore;

/// Bytes that chunks on their way may weigh in all.
pub const IN_FLIGHT_BYTES: usize = 4 << 20;

/// Chunks on their way, at most: a backstop for the channel that carries
/// them. The budget binds first unless chunks are tiny (sized down to a few
/// profiles after timeouts), and then a bound in chunks is what matters.
pub const QUEUE_BOUND: usize = 256;

/// What one profile is taken to weigh before any page was read.
const FIRST_GUESS: f64 = 1024.0;
/// Weight of the newest page in the moving average of bytes per profile.
const WEIGHT: f64 = 0.3;

/// Room for chunks on their way: the feed reserves it, the chunks' holds give
/// it back.
#[derive(Debug)]
pub struct Budget {
    room: Arc<Semaphore>,
    /// Most KiB one chunk reserves.
    share: u32,
    /// Moving average of bytes per profile, once a page was read.
    per_profile: Option<f64>,
}

/// A chunk's room in the [`Budget`], given back when dropped.
#[derive(Debug)]
pub struct Held {
    room: Arc<Semaphore>,
    kib: u32,
}

impl Budget {
    /// `bytes` in all, for chunks going to `consumers` parallel consumers.
    pub fn new(bytes: usize, consumers: usize) -> Self {
        let kib = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX >> 4)
            .max(1);
        let share = (kib / u32::try_from(consumers + 1).unwrap_or(u32::MAX)).max(1);
        Self {
            room: Arc::new(Semaphore::new(kib as usize)),
            share,
            per_profile: None,
        }
    }

    /// Waits for room for a page of `profiles`, as much as pages read so far
    /// suggest it weighs.
    pub async fn reserve(&mut self, profiles: usize) -> Held {
        let per_profile = self.per_profile.unwrap_or(FIRST_GUESS);
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss
        )]
        let estimate = (per_profile * profiles as f64) as usize;
        let mut held = Held {
            room: self.room.clone(),
            kib: 0,
        };
        self.resize(&mut held, estimate).await;
        held
    }

    /// The profiles that fit one chunk's share, as much as pages read so
    /// far suggest they weigh: under `--chunk-size auto` no chunk is larger,
    /// so memory does not follow the sizes the server's speed allows.
    pub fn most_profiles(&self) -> usize {
        let per_profile = self.per_profile.unwrap_or(FIRST_GUESS).max(1.0);
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss
        )]
        let most = (f64::from(self.share) * 1024.0 / per_profile) as usize;
        most
    }

    /// The page read under `held` holds `profiles` weighing `bytes`: learns
    /// from it, and holds what it weighs (waiting for more room if the
    /// estimate fell short, giving back what it overshot).
    pub async fn settle(&mut self, held: &mut Held, profiles: usize, bytes: usize) {
        if profiles > 0 {
            #[allow(clippy::cast_precision_loss)]
            let page = bytes as f64 / profiles as f64;
            self.per_profile = Some(self.per_profile.map_or(page, |a| a + WEIGHT * (page - a)));
        }
        self.resize(held, bytes).await;
    }

    async fn resize(&self, held: &mut Held, bytes: usize) {
        let kib = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .min(self.share);
        if kib > held.kib {
            // The semaphore is never closed: acquiring fails only if it
            // were, and then there is nothing to wait for.
            if let Ok(more) = self.room.acquire_many(kib - held.kib).await {
                more.forget();
                held.kib = kib;
            }
        } else if kib < held.kib {
            self.room.add_permits((held.kib - kib) as usize);
            held.kib = kib;
        }
    }
}

/// Items on their way to the writers (a page of profiles, a run of plan
/// records), numbered in the reader's order, holding their room in the
/// [`Budget`] until dropped.
#[derive(Debug)]
pub struct Chunk<T> {
    pub seq: u64,
    pub items: Vec<T>,
    /// The last item's key in the reader's order: the checkpoint once this
    /// chunk and every one before it committed.
    pub last_key: String,
    held: Held,
}

impl<T> Chunk<T> {
    pub fn new(seq: u64, items: Vec<T>, last_key: String, held: Held) -> Self {
        Self {
            seq,
            items,
            last_key,
            held,
        }
    }

    /// Drops the items and keeps the chunk's room in the budget, for what
    /// was made of them (a dry run's rendered lines) until written.
    pub fn into_held(self) -> Held {
        self.held
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.room.add_permits(self.kib as usize);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn available(budget: &Budget) -> usize {
        budget.room.available_permits()
    }

    /// Holds for `pages` pages of one profile weighing `bytes` each.
    async fn hold_pages(budget: &mut Budget, pages: usize, bytes: usize) -> Vec<Held> {
        let mut holds = Vec::new();
        for _ in 0..pages {
            let mut held = budget.reserve(1).await;
            budget.settle(&mut held, 1, bytes).await;
            holds.push(held);
        }
        holds
    }

    #[tokio::test]
    async fn holds_are_given_back_when_dropped() {
        let mut budget = Budget::new(64 << 10, 1);
        let mut held = budget.reserve(10).await;
        assert_eq!(available(&budget), 64 - 10);
        budget.settle(&mut held, 10, 4 << 10).await;
        assert_eq!(
            available(&budget),
            64 - 4,
            "an overshot estimate is given back"
        );
        drop(held);
        assert_eq!(available(&budget), 64);
    }

    #[tokio::test]
    async fn estimates_follow_the_pages_read() {
        let mut budget = Budget::new(64 << 10, 1);
        let mut held = budget.reserve(4).await;
        budget.settle(&mut held, 4, 8 << 10).await;
        drop(held);
        let held = budget.reserve(2).await;
        assert_eq!(held.kib, 4, "2 profiles of 2 KiB each, as the last page");
    }

    #[tokio::test]
    async fn a_chunk_fits_its_share_by_the_pages_read() {
        let mut budget = Budget::new(30 << 10, 2);
        assert_eq!(budget.most_profiles(), 10, "10 KiB at 1 KiB each at first");
        drop(hold_pages(&mut budget, 1, 256).await);
        assert_eq!(budget.most_profiles(), 40, "pages of 256 bytes a profile");
    }

    #[tokio::test]
    async fn one_chunk_holds_at_most_its_share() {
        // Two consumers: a chunk holds at most a third, so three fit.
        let mut budget = Budget::new(30 << 10, 2);
        let holds = hold_pages(&mut budget, 3, 100 << 10).await;
        assert!(holds.iter().all(|held| held.kib == 10), "{holds:?}");
        assert_eq!(available(&budget), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn reading_ahead_waits_until_a_chunk_is_dropped() {
        let mut budget = Budget::new(30 << 10, 2);
        let mut holds = hold_pages(&mut budget, 3, 10 << 10).await;
        let waiting = tokio::spawn(async move { budget.reserve(10).await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiting.is_finished(), "no room: the feed waits");
        holds.pop();
        let held = tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("room given back: the feed goes on")
            .expect("no panic");
        assert_eq!(held.kib, 10);
    }
}
