//! The core's fetches of missing dependencies: each charged to the author of the block that needs
//! it, at most a budget of them in flight per author and the rest queued, so that one author's
//! flood of unknown links never holds up another author's blocks.

use std::collections::{HashMap, VecDeque};

use comms::Cid;

/// A dependency being fetched or queued for it: whether it is a batch, which author's budget the
/// fetch is charged to, and whether it is in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Want {
    pub(crate) batch: bool,
    pub(crate) author: u32,
    pub(crate) in_flight: bool,
}

/// Fetches in flight and queued, per author.
#[derive(Debug)]
pub(crate) struct Fetches {
    /// Fetches one author may have in flight.
    budget: usize,
    wanted: HashMap<Cid, Want>,
    in_flight: Vec<usize>,
    queued: Vec<VecDeque<Cid>>,
}

impl Fetches {
    /// No fetches, for `authors` validators with `budget` fetches in flight each (at least 1).
    pub(crate) fn new(authors: usize, budget: usize) -> Fetches {
        Fetches {
            budget: budget.max(1),
            wanted: HashMap::new(),
            in_flight: vec![0; authors],
            queued: vec![VecDeque::new(); authors],
        }
    }

    /// Asks for `dependency` on behalf of a block by `author`: returns it if it is to be fetched now
    /// (that author has budget), or else queues it for that author. A dependency queued under
    /// another author starts now if this author has budget. Asking again for one in flight does
    /// nothing.
    pub(crate) fn want(&mut self, dependency: Cid, batch: bool, author: u32) -> Option<Cid> {
        if self.wanted.get(&dependency).is_some_and(|w| w.in_flight) {
            return None;
        }
        let slot = author as usize;
        let in_flight = self.in_flight[slot] < self.budget;
        if in_flight {
            self.in_flight[slot] += 1;
        } else if !self.wanted.contains_key(&dependency) {
            self.queued[slot].push_back(dependency);
        } else {
            return None;
        }
        let want = Want {
            batch,
            author,
            in_flight,
        };
        self.wanted.insert(dependency, want);
        in_flight.then_some(dependency)
    }

    /// `cid` is no longer wanted (it arrived, or its fetch failed for good): what it was wanted
    /// as, and the next of its author's queued dependencies to fetch now, if its turn freed one.
    pub(crate) fn unwant(&mut self, cid: &Cid) -> (Option<Want>, Option<Cid>) {
        let Some(want) = self.wanted.remove(cid) else {
            return (None, None);
        };
        if !want.in_flight {
            return (Some(want), None);
        }
        let slot = want.author as usize;
        self.in_flight[slot] -= 1;
        while let Some(next) = self.queued[slot].pop_front() {
            // Started since under another author's budget, or no longer wanted: skipped.
            let Some(queued) = self.wanted.get_mut(&next).filter(|w| !w.in_flight) else {
                continue;
            };
            *queued = Want {
                author: want.author,
                in_flight: true,
                ..*queued
            };
            self.in_flight[slot] += 1;
            return (Some(want), Some(next));
        }
        (Some(want), None)
    }

    /// Whether `cid` is being fetched or queued.
    pub(crate) fn contains(&self, cid: &Cid) -> bool {
        self.wanted.contains_key(cid)
    }

    /// How many more fetches `author` may start now.
    pub(crate) fn room(&self, author: u32) -> usize {
        self.budget.saturating_sub(self.in_flight[author as usize])
    }

    /// How many dependencies wait in `author`'s queue (some perhaps started under another's).
    pub(crate) fn queued(&self, author: u32) -> usize {
        self.queued[author as usize].len()
    }

    /// Dependencies wanted, in flight or queued.
    pub(crate) fn len(&self) -> usize {
        self.wanted.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cid(i: u8) -> Cid {
        comms::cid_for(comms::Codec::Raw, &[i])
    }

    #[test]
    fn an_author_has_its_budget_in_flight_and_the_rest_start_as_its_fetches_end() {
        let mut fetches = Fetches::new(2, 2);
        let started: Vec<_> = (0..5)
            .filter_map(|i| fetches.want(cid(i), false, 0))
            .collect();
        assert_eq!(started, [cid(0), cid(1)]);
        assert_eq!(
            (fetches.room(0), fetches.queued(0), fetches.len()),
            (0, 3, 5)
        );
        assert_eq!(fetches.want(cid(0), false, 0), None, "in flight already");
        let (done, next) = fetches.unwant(&cid(0));
        assert_eq!(done.map(|w| w.in_flight), Some(true));
        assert_eq!(next, Some(cid(2)), "the first queued starts");
        assert_eq!(
            fetches.unwant(&cid(3)),
            (
                Some(Want {
                    batch: false,
                    author: 0,
                    in_flight: false
                }),
                None
            )
        );
        assert_eq!(
            fetches.unwant(&cid(1)).1,
            Some(cid(4)),
            "a dropped one is skipped"
        );
        assert_eq!(fetches.unwant(&cid(9)), (None, None));
    }

    #[test]
    fn one_authors_queue_never_holds_up_another_authors_fetch() {
        let mut fetches = Fetches::new(2, 1);
        assert_eq!(fetches.want(cid(0), false, 0), Some(cid(0)));
        assert_eq!(
            fetches.want(cid(1), true, 0),
            None,
            "queued behind author 0's budget"
        );
        assert_eq!(
            fetches.want(cid(1), true, 1),
            Some(cid(1)),
            "author 1 has budget: now"
        );
        // Author 0's turn frees; its queued entry started already, so nothing more starts.
        assert_eq!(fetches.unwant(&cid(0)).1, None);
        let (want, next) = fetches.unwant(&cid(1));
        assert_eq!(
            want,
            Some(Want {
                batch: true,
                author: 1,
                in_flight: true
            })
        );
        assert_eq!(
            (next, fetches.len(), fetches.room(0), fetches.room(1)),
            (None, 0, 1, 1)
        );
    }
}
