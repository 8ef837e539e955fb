//! The checkpoint of a live run (SPEC §6 "Resumable"): chunks are numbered
//! in key order by the reader and committed by parallel writers in any
//! order; each chunk's transaction saves the furthest profile id below
//! which every chunk has committed, so a crash at any instant resumes
//! without skipping an uncommitted chunk. Pure bookkeeping, no I/O.

use std::collections::{BTreeMap, BTreeSet};

/// Which chunks have begun and committed.
#[derive(Debug, Default)]
pub struct Watermark {
    /// Lowest sequence number not yet committed.
    next: u64,
    committed: BTreeSet<u64>,
    /// Last profile id of each begun chunk not yet below the watermark.
    ends: BTreeMap<u64, String>,
}

impl Watermark {
    /// A writer starts chunk `seq`, whose last profile is `last_id`.
    pub fn begin(&mut self, seq: u64, last_id: &str) {
        self.ends.insert(seq, last_id.to_owned());
    }

    /// The checkpoint to save in chunk `seq`'s transaction: the end of the
    /// longest run of chunks from the watermark that are committed or are
    /// `seq` itself. `None` while an earlier chunk is still uncommitted.
    pub fn checkpoint_for(&self, seq: u64) -> Option<String> {
        let mut last = None;
        let mut s = self.next;
        while s == seq || self.committed.contains(&s) {
            last = Some(s);
            s += 1;
        }
        last.and_then(|s| self.ends.get(&s).cloned())
    }

    /// Chunk `seq` committed.
    pub fn commit(&mut self, seq: u64) {
        self.committed.insert(seq);
        while self.committed.remove(&self.next) {
            self.ends.remove(&self.next);
            self.next += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn begun(n: u64) -> Watermark {
        let mut wm = Watermark::default();
        for seq in 0..n {
            wm.begin(seq, &format!("p{seq}"));
        }
        wm
    }

    #[test]
    fn in_order_commits_move_the_checkpoint_with_each_chunk() {
        let mut wm = begun(3);
        for seq in 0..3 {
            assert_eq!(wm.checkpoint_for(seq), Some(format!("p{seq}")));
            wm.commit(seq);
        }
    }

    #[test]
    fn a_chunk_committing_before_an_earlier_one_saves_no_checkpoint() {
        let mut wm = begun(3);
        // Chunk 1 commits while chunk 0 is still in flight: saving p1 would
        // skip chunk 0 if the process died now.
        assert_eq!(wm.checkpoint_for(1), None);
        wm.commit(1);
        // Chunk 0 then covers itself and the committed chunk 1.
        assert_eq!(wm.checkpoint_for(0), Some("p1".to_owned()));
        wm.commit(0);
        assert_eq!(wm.checkpoint_for(2), Some("p2".to_owned()));
    }

    #[test]
    fn a_gap_stops_the_checkpoint_at_the_gap() {
        let mut wm = begun(5);
        wm.commit(0);
        wm.commit(2);
        wm.commit(4);
        // Chunk 1 covers 1 and 2, not 4 (3 is uncommitted).
        assert_eq!(wm.checkpoint_for(1), Some("p2".to_owned()));
        wm.commit(1);
        assert_eq!(wm.checkpoint_for(3), Some("p4".to_owned()));
    }

    #[test]
    fn a_failed_chunk_holds_the_checkpoint_back_for_good() {
        let mut wm = begun(4);
        wm.commit(0);
        // Chunk 1 rolled back (never committed); later chunks commit.
        assert_eq!(wm.checkpoint_for(2), None);
        wm.commit(2);
        assert_eq!(wm.checkpoint_for(3), None);
        wm.commit(3);
    }

    #[test]
    fn committed_chunks_are_forgotten_below_the_watermark() {
        let mut wm = begun(1000);
        for seq in (0..1000).rev() {
            wm.commit(seq);
        }
        assert!(wm.ends.is_empty() && wm.committed.is_empty());
        assert_eq!(wm.next, 1000);
    }
}
