//! The proposer: when a validator's next block is due, which round it is for, what it links, and
//! re-broadcasting the latest one. It reads the DAG and signs; what goes into a block (the pool) and
//! what happens to it (the block manager) are the core's business.

use std::time::Duration;

use bytes::Bytes;
use comms::Cid;

use super::CoreConfig;
use crate::{
    codec::{cid_of, encode},
    committee::Committee,
    consensus::stake_where,
    dag::Dag,
    types::{Block, Checkpoint, Payload, SignedBlock},
    Keypair,
};

/// Our latest block: re-broadcast while it is the latest, and linked by our next one.
#[derive(Clone, Debug)]
pub(crate) struct OwnBlock {
    pub(crate) cid: Cid,
    pub(crate) round: u64,
    pub(crate) bytes: Bytes,
    /// When we proposed it (0 when it came from disk or a peer).
    pub(crate) at_ms: u64,
}

fn ms(duration: Duration) -> u64 {
    duration.as_millis() as u64
}

/// A validator's proposing state.
pub(crate) struct Proposer {
    author: u32,
    key: Keypair,
    chain: Cid,
    leader_timeout_ms: u64,
    min_interval_ms: u64,
    idle_interval_ms: u64,
    rebroadcast_ms: u64,
    /// The round of our next block.
    round: u64,
    last_own: Option<OwnBlock>,
    /// When our next block may be proposed, if only time stands in its way.
    propose_at: Option<u64>,
    /// When a quorum of the round before ours was first seen.
    quorum_since: Option<u64>,
    last_rebroadcast: u64,
    leader_timeouts: u64,
}

impl Proposer {
    /// Validator `author`, signing with `key` for chain `chain`, about to propose round 0.
    pub(crate) fn new(author: u32, key: Keypair, chain: Cid, config: &CoreConfig) -> Proposer {
        Proposer {
            author,
            key,
            chain,
            leader_timeout_ms: ms(config.leader_timeout),
            min_interval_ms: ms(config.min_block_interval),
            idle_interval_ms: ms(config.idle_block_interval),
            rebroadcast_ms: ms(config.rebroadcast_interval),
            round: 0,
            last_own: None,
            propose_at: None,
            quorum_since: None,
            last_rebroadcast: 0,
            leader_timeouts: 0,
        }
    }

    pub(crate) fn author(&self) -> u32 {
        self.author
    }

    /// The round of our next block.
    #[cfg(test)]
    pub(crate) fn round(&self) -> u64 {
        self.round
    }

    /// Our blocks proposed without the previous round's first leader.
    pub(crate) fn leader_timeouts(&self) -> u64 {
        self.leader_timeouts
    }

    /// Our store recorded that we signed `round`: we never sign it or an earlier one again, even
    /// where the block itself was lost.
    pub(crate) fn signed_up_to(&mut self, round: u64) {
        self.round = self.round.max(round + 1);
    }

    /// A block of ours was accepted from elsewhere (our store after a restart, a peer): we never
    /// sign another for its round or an earlier one.
    /// It becomes our latest block if it is later than the one we have, even where the signing
    /// record already took our round past it.
    pub(crate) fn observed(&mut self, own: OwnBlock) {
        if self
            .last_own
            .as_ref()
            .is_none_or(|last| last.round < own.round)
        {
            self.round = self.round.max(own.round + 1);
            self.last_own = Some(own);
        }
    }

    /// Whether our next block is due at `now_ms`, given the DAG: returns its round if so. If only
    /// time stands in its way, [`Proposer::next_wake`] says when. `busy`: there is work
    /// (transactions waiting for a block, or in blocks not yet ordered), so blocks follow each
    /// other at `min_block_interval` rather than `idle_block_interval`.
    pub(crate) fn due(
        &mut self,
        dag: &Dag,
        committee: &Committee,
        now_ms: u64,
        busy: bool,
    ) -> Option<u64> {
        let quorum_of = |round| stake_where(dag, committee, round, |_| true) >= committee.quorum();
        // Catch up: skip rounds the others completed without us, but not one we lead while the
        // others may still wait for our block (until a quorum of the next round forms without it).
        while self.round > 0 && self.round <= dag.highest_round() && quorum_of(self.round) {
            if committee.leads(self.round, self.author) && !quorum_of(self.round + 1) {
                break;
            }
            self.round += 1;
        }
        self.propose_at = None;
        let round = self.round;
        let (mut due, mut leader_here) = (0, true);
        if round > 0 {
            if !quorum_of(round - 1) {
                return None;
            }
            leader_here = has_leader(dag, committee, round - 1);
            let since = *self.quorum_since.get_or_insert(now_ms);
            if !leader_here {
                due = since + self.leader_timeout_ms;
            } else if stragglers(dag, committee, round - 1) {
                due = since + self.straggler_wait(round - 1, since);
            }
        }
        if let Some(own) = &self.last_own {
            let interval = match busy {
                true => self.min_interval_ms,
                false => self.idle_interval_ms,
            };
            due = due.max(own.at_ms + interval);
        }
        if now_ms < due {
            self.propose_at = Some(due);
            return None;
        }
        if !leader_here {
            self.leader_timeouts += 1;
            tracing::debug!(
                round,
                leader = committee.leader(round - 1),
                "proposing without the leader"
            );
        }
        Some(round)
    }

    /// How long after a quorum of `round` formed (at `since`) we wait for its other leaders: as long
    /// again as that quorum took to form after our own block of `round`, so the wait follows the
    /// network's delay, at most `leader_timeout`. Nothing when we did not propose in `round`.
    fn straggler_wait(&self, round: u64, since: u64) -> u64 {
        match &self.last_own {
            Some(own) if own.round == round && own.at_ms > 0 => {
                since.saturating_sub(own.at_ms).min(self.leader_timeout_ms)
            }
            _ => 0,
        }
    }

    /// Signs our block of `round` (which [`Proposer::due`] returned) carrying `payload`, linking
    /// one block of each author in the round before (and our previous block, after skipped
    /// rounds). Returns it encoded; it is our latest block from now on.
    pub(crate) fn sign(
        &mut self,
        dag: &Dag,
        round: u64,
        payload: Payload,
        checkpoint: Option<Checkpoint>,
        now_ms: u64,
    ) -> (Cid, SignedBlock, Bytes) {
        let mut parents = Vec::new();
        if round > 0 {
            let mut last_author = None;
            for block in dag.round(round - 1) {
                if last_author != Some(block.author()) {
                    last_author = Some(block.author());
                    parents.push(block.cid);
                }
            }
            // After skipping rounds, link our previous block anyway: our blocks stay a chain, so
            // one that nobody else referenced commits before our later ones, in order.
            if let Some(own) = self.last_own.as_ref().filter(|own| own.round + 1 < round) {
                parents.push(own.cid);
            }
            parents.sort_by_key(|c| c.to_bytes());
        }
        let block = Block {
            chain: self.chain,
            author: self.author,
            round,
            parents,
            payload,
            timestamp_ms: now_ms,
            checkpoint,
        };
        let signed = SignedBlock::sign(block, &self.key);
        let bytes = Bytes::from(encode(&signed));
        let cid = cid_of(&bytes);
        self.round = round + 1;
        self.quorum_since = None;
        self.last_own = Some(OwnBlock {
            cid,
            round,
            bytes: bytes.clone(),
            at_ms: now_ms,
        });
        self.last_rebroadcast = now_ms;
        tracing::debug!(round, %cid, "proposed");
        (cid, signed, bytes)
    }

    /// Our latest block, if it is time to send it again, so that lost messages heal.
    pub(crate) fn rebroadcast(&mut self, now_ms: u64) -> Option<Bytes> {
        let own = self.last_own.as_ref()?;
        if now_ms < self.last_rebroadcast + self.rebroadcast_ms {
            return None;
        }
        self.last_rebroadcast = now_ms;
        Some(own.bytes.clone())
    }

    /// The earliest time at which a block is due or a re-broadcast, unless an input comes first.
    pub(crate) fn next_wake(&self) -> Option<u64> {
        let rebroadcast =
            (self.last_own.as_ref()).map(|_| self.last_rebroadcast + self.rebroadcast_ms);
        [self.propose_at, rebroadcast].into_iter().flatten().min()
    }
}

/// Whether the first leader of `round` has a block in `dag`.
fn has_leader(dag: &Dag, committee: &Committee, round: u64) -> bool {
    let leader = committee.leader(round);
    dag.slot(round, leader).next().is_some()
}

/// Whether a leader of `round` other than its first, which had a block in the round before, has
/// none in `round` yet. Its slot is likely to be certified if our block votes for it, and left
/// undecided (holding back every later slot until an anchor decides it) if we propose without.
fn stragglers(dag: &Dag, committee: &Committee, round: u64) -> bool {
    if round == 0 {
        return false;
    }
    let per_round = committee.leaders_per_round();
    (1..per_round).any(|k| {
        let (_, author) = committee.slot(round * per_round + k);
        dag.slot(round, author).next().is_none() && dag.slot(round - 1, author).next().is_some()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        dag_builder::DagBuilder,
        devnet::{self, Role},
    };

    const TIMEOUT: u64 = 100;
    const MIN: u64 = 5;
    const IDLE: u64 = 1000;
    const REBROADCAST: u64 = 2000;

    /// Validator `author` of the builder's committee.
    fn proposer(dag: &DagBuilder, author: u32) -> Proposer {
        let config = CoreConfig {
            leader_timeout: Duration::from_millis(TIMEOUT),
            min_block_interval: Duration::from_millis(MIN),
            idle_block_interval: Duration::from_millis(IDLE),
            rebroadcast_interval: Duration::from_millis(REBROADCAST),
            ..CoreConfig::default()
        };
        let key = devnet::key(1, Role::Validator, author as usize);
        Proposer::new(author, key, dag.genesis.encode().1, &config)
    }

    fn empty() -> Payload {
        Payload::Inline(Vec::new())
    }

    /// Whether `proposer`'s next block is due at `now`, with work waiting.
    fn due(proposer: &mut Proposer, dag: &DagBuilder, now: u64) -> Option<u64> {
        proposer.due(&dag.dag, &dag.committee, now, true)
    }

    /// `proposer` signs its first block at time 0.
    fn started(dag: &DagBuilder, author: u32) -> Proposer {
        let mut proposer = proposer(dag, author);
        assert_eq!(due(&mut proposer, dag, 0), Some(0), "round 0 needs nothing");
        proposer.sign(&dag.dag, 0, empty(), None, 0);
        assert_eq!(proposer.round(), 1);
        proposer
    }

    #[test]
    fn the_next_block_is_due_once_a_quorum_of_the_round_before_with_its_leader_is_here() {
        let mut dag = DagBuilder::new(4);
        let mut proposer = started(&dag, 1);
        dag.round(0, &[0, 1], &[]);
        assert_eq!(due(&mut proposer, &dag, 10), None, "no quorum");
        assert_eq!(
            proposer.next_wake(),
            Some(REBROADCAST),
            "only the re-broadcast"
        );
        dag.round(0, &[2], &[]);
        assert_eq!(due(&mut proposer, &dag, 10), Some(1));
        let (_, signed, _) = proposer.sign(&dag.dag, 1, empty(), None, 10);
        assert_eq!(signed.block.parents.len(), 3, "one block of each author");
        assert_eq!((proposer.round(), proposer.leader_timeouts()), (2, 0));
    }

    #[test]
    fn without_the_leader_it_waits_the_leader_timeout_from_the_quorum_and_counts_it() {
        let mut dag = DagBuilder::new(4);
        let mut proposer = started(&dag, 2);
        dag.round(0, &[1, 2, 3], &[]);
        assert_eq!(due(&mut proposer, &dag, 10), None);
        assert_eq!(proposer.next_wake(), Some(10 + TIMEOUT));
        assert_eq!(due(&mut proposer, &dag, 10 + TIMEOUT - 1), None);
        assert_eq!(due(&mut proposer, &dag, 10 + TIMEOUT), Some(1));
        assert_eq!(proposer.leader_timeouts(), 1);
    }

    #[test]
    fn busy_blocks_follow_each_other_at_the_minimum_interval_and_idle_ones_at_the_idle_one() {
        let mut dag = DagBuilder::new(4);
        dag.full(0..=0);
        let mut proposer = started(&dag, 1);
        assert_eq!(due(&mut proposer, &dag, MIN - 2), None);
        assert_eq!(proposer.next_wake(), Some(MIN));
        assert_eq!(proposer.due(&dag.dag, &dag.committee, MIN, false), None);
        assert_eq!(proposer.next_wake(), Some(IDLE));
        assert_eq!(due(&mut proposer, &dag, MIN), Some(1), "work arrived");
    }

    #[test]
    fn with_its_block_in_a_round_missing_a_second_leader_it_waits_as_long_as_the_quorum_took() {
        let mut dag = DagBuilder::new(4);
        dag.full(0..=0);
        let mut proposer = started(&dag, 0);
        assert_eq!(due(&mut proposer, &dag, MIN), Some(1));
        proposer.sign(&dag.dag, 1, empty(), None, MIN);
        // Round 1's leaders are 1 and 2; 2 had a block in round 0 but has none in round 1 yet.
        dag.round(1, &[0, 1, 3], &[0, 1, 2, 3]);
        let quorum_at = MIN + 20;
        assert_eq!(due(&mut proposer, &dag, quorum_at), None);
        assert_eq!(proposer.next_wake(), Some(quorum_at + 20));
        assert_eq!(due(&mut proposer, &dag, quorum_at + 20), Some(2));
        assert_eq!(proposer.leader_timeouts(), 0, "the first leader was here");
    }

    #[test]
    fn a_late_validator_skips_completed_rounds_and_still_links_its_previous_block() {
        let mut dag = DagBuilder::new(4);
        dag.full(0..=5);
        let mut proposer = proposer(&dag, 3);
        proposer.sign(&dag.dag, 0, empty(), None, 0);
        let own = proposer.last_own.as_ref().unwrap().cid;
        // Validator 3 leads rounds 2 and 3, but rounds 3 and 4 completed without it.
        assert_eq!(due(&mut proposer, &dag, 10), Some(6));
        let (_, signed, _) = proposer.sign(&dag.dag, 6, empty(), None, 10);
        let mut parents = dag.cids(5, &[0, 1, 2, 3]);
        parents.push(own);
        parents.sort_by_key(|c| c.to_bytes());
        assert_eq!(signed.block.parents, parents);
    }

    #[test]
    fn a_late_validator_does_not_skip_a_round_it_leads_while_the_next_lacks_a_quorum() {
        let mut dag = DagBuilder::new(4);
        dag.full(0..=2);
        dag.round(3, &[0, 1, 2], &[0, 1, 2, 3]);
        let mut proposer = started(&dag, 3);
        // Round 3 has a quorum without validator 3, but it leads round 3 and round 4 is empty.
        assert_eq!(due(&mut proposer, &dag, 10), Some(3));
        dag.round(4, &[0, 1, 2], &[0, 1, 2]);
        let mut proposer = started(&dag, 3);
        assert_eq!(
            due(&mut proposer, &dag, 10),
            Some(5),
            "round 4 formed without it"
        );
    }

    #[test]
    fn a_block_of_ours_seen_elsewhere_is_never_signed_for_again() {
        let mut dag = DagBuilder::new(4);
        dag.full(0..=7);
        let mut proposer = proposer(&dag, 1);
        let own = |round| OwnBlock {
            cid: dag.cid(round, 1),
            round,
            bytes: Bytes::new(),
            at_ms: 0,
        };
        proposer.observed(own(7));
        proposer.observed(own(3));
        assert_eq!(
            proposer.round(),
            8,
            "an older block does not lower the round"
        );
        assert_eq!(due(&mut proposer, &dag, 10), Some(8));
    }

    #[test]
    fn the_signing_record_holds_our_round_even_where_the_blocks_behind_it_were_lost() {
        let mut dag = DagBuilder::new(4);
        dag.full(0..=5);
        // Others' rounds 6 to 9; ours after round 5 were lost, but the record says we signed 9.
        for round in 6..=9 {
            let links = if round == 6 { dag.all() } else { vec![0, 2, 3] };
            dag.round(round, &[0, 2, 3], &links);
        }
        let mut proposer = proposer(&dag, 1);
        proposer.signed_up_to(9);
        proposer.observed(OwnBlock {
            cid: dag.cid(5, 1),
            round: 5,
            bytes: Bytes::new(),
            at_ms: 0,
        });
        assert_eq!(
            proposer.round(),
            10,
            "the record, not the blocks, sets the round"
        );
        // Round 9's leader may be the block we lost: then it waits the leader timeout first.
        let later = 10 * (TIMEOUT + IDLE);
        let next = due(&mut proposer, &dag, 10).or_else(|| due(&mut proposer, &dag, later));
        assert_eq!(next, Some(10), "the round after the record");
        let (_, block, _) = proposer.sign(&dag.dag, 10, empty(), None, later);
        assert!(
            block.block.parents.contains(&dag.cid(5, 1)),
            "still links its latest block it has"
        );
    }

    #[test]
    fn the_latest_block_is_sent_again_every_rebroadcast_interval() {
        let dag = DagBuilder::new(4);
        let mut proposer = proposer(&dag, 0);
        assert_eq!(
            proposer.rebroadcast(REBROADCAST),
            None,
            "nothing proposed yet"
        );
        let (_, _, bytes) = proposer.sign(&dag.dag, 0, empty(), None, 0);
        assert_eq!(proposer.rebroadcast(REBROADCAST - 1), None);
        assert_eq!(proposer.rebroadcast(REBROADCAST), Some(bytes));
        assert_eq!(proposer.rebroadcast(REBROADCAST + 1), None);
        assert_eq!(proposer.next_wake(), Some(2 * REBROADCAST));
    }
}
