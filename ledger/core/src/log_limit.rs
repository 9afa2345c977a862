//! At most one log line per source and interval, so that a faulty validator (equivocating, sending
//! invalid blocks) cannot flood the log of every node. The counters keep the full count; each line
//! says how many were left out since the one before.

use std::collections::BTreeMap;

/// One line per key (an author, an error kind) every `interval_ms`, at most.
#[derive(Debug)]
pub struct LogLimit<K> {
    interval_ms: u64,
    /// Per key: when its last line was logged, and how many were left out since.
    last: BTreeMap<K, (u64, u64)>,
}

impl<K: Ord> LogLimit<K> {
    /// A limit of one line per key every `interval_ms` milliseconds.
    pub fn new(interval_ms: u64) -> LogLimit<K> {
        LogLimit {
            interval_ms,
            last: BTreeMap::new(),
        }
    }

    /// An event of `key` at `now_ms`: `Some(left out since the last line)` when it is to be logged,
    /// `None` when it is to be left out. The keys must be few (authors, kinds): each is remembered.
    pub fn admit(&mut self, key: K, now_ms: u64) -> Option<u64> {
        match self.last.get_mut(&key) {
            Some((at, left_out)) if now_ms < *at + self.interval_ms => {
                *left_out += 1;
                None
            }
            Some((at, left_out)) => {
                *at = now_ms;
                Some(std::mem::take(left_out))
            }
            None => {
                self.last.insert(key, (now_ms, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::LogLimit;

    #[test]
    fn one_line_per_key_and_interval_counting_the_rest() {
        let mut limit = LogLimit::new(10_000);
        assert_eq!(limit.admit(1u32, 0), Some(0));
        assert_eq!(limit.admit(2, 1), Some(0), "another key has its own budget");
        for t in 1..100 {
            assert_eq!(limit.admit(1, t * 100), None);
        }
        assert_eq!(limit.admit(1, 10_000), Some(99));
        assert_eq!(limit.admit(1, 10_001), None);
        assert_eq!(limit.admit(1, 20_000), Some(1));
    }
}
