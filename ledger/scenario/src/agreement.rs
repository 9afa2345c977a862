//! The agreement check over honest validators' commit histories.

use std::sync::Arc;

use comms::Cid;
use ledger::Commit;

/// Honest validators that agree: what they committed, in short.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Agreement {
    /// Each validator's height (its number of commits).
    pub heights: Vec<u64>,
    /// The height every one of them reached.
    pub common: u64,
    /// The state root at height `common` (the same at every validator), unless that is 0.
    pub state_root: Option<Cid>,
}

/// How honest validators failed to agree.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Disagreement {
    /// Two validators committed different things at one height.
    #[error("validators {a} and {b} committed differently at height {height}")]
    Diverged { a: usize, b: usize, height: u64 },
    /// A validator's commits do not go 1, 2, 3, …
    #[error("validator {validator}'s commit #{index} has height {height}")]
    Gap {
        validator: usize,
        index: usize,
        height: u64,
    },
    /// A validator fell more than the allowed lag behind the highest one.
    #[error("validator {validator} is at height {height}, the highest at {highest} (lag allowed: {max_lag})")]
    Stalled {
        validator: usize,
        height: u64,
        highest: u64,
        max_lag: u64,
    },
}

/// Checks that every pair of `histories` (one per honest validator) is prefix-consistent, commit by
/// commit, that each goes up one height at a time from 1, and that none is more than `max_lag`
/// commits below the highest.
pub fn check(histories: &[Vec<Arc<Commit>>], max_lag: u64) -> Result<Agreement, Disagreement> {
    for (validator, history) in histories.iter().enumerate() {
        if let Some((index, commit)) =
            (history.iter().enumerate()).find(|(index, commit)| commit.height != *index as u64 + 1)
        {
            return Err(Disagreement::Gap {
                validator,
                index,
                height: commit.height,
            });
        }
    }
    for (a, first) in histories.iter().enumerate() {
        for (b, second) in histories.iter().enumerate().skip(a + 1) {
            if let Some((x, _)) = first.iter().zip(second).find(|(x, y)| x != y) {
                let height = x.height;
                return Err(Disagreement::Diverged { a, b, height });
            }
        }
    }
    let heights: Vec<u64> = histories.iter().map(|h| h.len() as u64).collect();
    let highest = heights.iter().copied().max().unwrap_or(0);
    if let Some((validator, height)) =
        (heights.iter().copied().enumerate()).find(|(_, height)| height + max_lag < highest)
    {
        return Err(Disagreement::Stalled {
            validator,
            height,
            highest,
            max_lag,
        });
    }
    let common = heights.iter().copied().min().unwrap_or(0);
    // Prefix-consistent: every validator has the same commit at `common`.
    let state_root = (common > 0).then(|| histories[0][common as usize - 1].state_root);
    Ok(Agreement {
        heights,
        common,
        state_root,
    })
}
