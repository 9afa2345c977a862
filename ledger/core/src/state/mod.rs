//! Account state: balances and nonces, changed only by committed transactions; and the ordered
//! transactions that wait for an earlier nonce of their signer.
//!
//! A commit's transactions are executed in order ([`State::execute`]). One whose nonce is ahead of
//! its signer's next nonce, by less than [`WAIT_WINDOW`], does not fail: it **waits**, and takes
//! effect as soon as the transactions before it have, in this commit or a later one. One that
//! still waits [`WAIT_COMMITS`] commits later expires with [`Outcome::NonceGap`]. Everything here is
//! a function of the commits alone, so every node waits, applies and expires the same transactions
//! at the same commit (see DESIGN.md, "Nonces out of order").
//!
//! The accounts, and the waiting transactions, are kept in two state [`Tree`]s, and a state is
//! named by the CID of a root block linking both ([`StateRoot`]): see `stored` for how a state is
//! flushed to blocks, read back and proven.

mod stored;

use std::collections::{BTreeSet, HashMap};

use comms::Cid;
use ipld_core::ipld::Ipld;
use serde::{Deserialize, Serialize};

use crate::{
    crypto::PublicKey,
    tree::{self, Tree, TreeBlock, TreeValue},
    types::{Genesis, SignedTransaction, Transaction},
};

pub use stored::{prove_stored_account, verify_account, AccountProof, StateRoot, WaitKey};

/// How far ahead of its signer's next nonce an ordered transaction may be and wait, rather than fail.
pub const WAIT_WINDOW: u64 = 4096;

/// Commits an ordered transaction waits for the ones before it, at most.
pub const WAIT_COMMITS: u64 = 256;

/// Ordered transactions waiting, at most, over all signers; beyond it one ahead of its nonce fails.
pub const MAX_WAITING: usize = 65_536;

/// One account.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Its balance.
    pub balance: u64,
    /// Transactions it signed that took effect; the next one must carry this nonce.
    pub nonce: u64,
}

impl TreeValue for Account {
    /// `[balance, nonce]`.
    fn encode(&self, out: &mut Vec<u8>) {
        tree::array(out, 2);
        tree::unsigned(out, self.balance);
        tree::unsigned(out, self.nonce);
    }

    fn decode(item: &Ipld) -> Option<Account> {
        let (balance, nonce) = tree::pair(item)?;
        Some(Account {
            balance: u64::decode(balance)?,
            nonce: u64::decode(nonce)?,
        })
    }
}

/// What a committed transaction did. Invalid ones are ordered but change nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It took effect.
    Applied,
    /// Its nonce was not the signer's next one (a replay, or out of order).
    BadNonce { expected: u64, got: u64 },
    /// The sender's balance was lower than the amount.
    InsufficientFunds { balance: u64, amount: u64 },
    /// It waited [`WAIT_COMMITS`] commits for the signer's nonce `expected`, which never came.
    NonceGap { expected: u64, got: u64 },
}

/// An ordered transaction waiting for the ones before it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiting {
    tx: SignedTransaction,
    /// Its ID (not stored: the transaction's CID).
    id: Cid,
    /// The height of the commit at which it expires.
    expires: u64,
}

/// What executing one commit's transactions did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Executed {
    /// The transactions that took effect or failed, in the order they did: the commit's own, and
    /// earlier commits' waiting ones that applied or expired now.
    pub transactions: Vec<(Cid, Outcome)>,
    /// The accounts changed, sorted.
    pub changed: Vec<PublicKey>,
    /// The commit's transactions that now wait for an earlier nonce.
    pub waiting: Vec<Cid>,
}

/// All accounts, and the ordered transactions waiting. The total of the balances never changes.
/// Two states are equal when their contents and roots are, whatever blocks they hold back.
#[derive(Clone, Debug)]
pub struct State {
    accounts: Tree<PublicKey, Account>,
    /// By signer and nonce.
    waiting: Tree<WaitKey, Waiting>,
    /// The waiting transactions by expiry height, then signer and nonce.
    expiry: BTreeSet<(u64, PublicKey, u64)>,
    /// The waiting transactions by ID (looked up, never iterated).
    waiting_ids: HashMap<Cid, (PublicKey, u64)>,
    /// The root block's CID as of the last flush.
    root: Cid,
    /// Blocks flushed but not yet handed out: the genesis state's, which go with the first
    /// commit's.
    unsaved: Vec<TreeBlock>,
    /// Root blocks that a flush replaced (and tree blocks dropped before the genesis blocks were
    /// handed out), not yet handed out (see [`State::take_dropped`]).
    replaced_roots: Vec<Cid>,
}

impl PartialEq for State {
    fn eq(&self, other: &State) -> bool {
        (&self.accounts, &self.waiting, self.root) == (&other.accounts, &other.waiting, other.root)
    }
}

impl Eq for State {}

impl State {
    /// The state at genesis.
    pub fn genesis(genesis: &Genesis) -> State {
        let mut accounts = Tree::default();
        for allocation in &genesis.balances {
            let account = Account {
                balance: allocation.balance,
                nonce: 0,
            };
            accounts.insert(allocation.account, account);
        }
        State::from_trees(accounts, Tree::default())
    }

    /// An account (all zero if never seen).
    pub fn account(&self, key: &PublicKey) -> Account {
        self.accounts.get(key).copied().unwrap_or_default()
    }

    /// Executes one commit's transactions, in order, at commit `height`: each takes effect, fails,
    /// or waits for an earlier nonce (see the module doc); then the waiting ones due expire.
    pub fn execute<'a>(
        &mut self,
        height: u64,
        txs: impl IntoIterator<Item = &'a SignedTransaction>,
    ) -> Executed {
        let mut done = Executed::default();
        for tx in txs {
            let id = tx.id();
            if self.waiting_ids.contains_key(&id) {
                // A second copy of a waiting transaction: the first decides.
                continue;
            }
            let key = (*tx.tx.signer(), tx.tx.nonce());
            if self.can_wait(&key) {
                self.wait(key, tx, id, height + WAIT_COMMITS);
                done.waiting.push(id);
                continue;
            }
            self.run(&tx.tx, id, &mut done);
        }
        self.expire(height, &mut done);
        done.changed.sort_unstable();
        done.changed.dedup();
        done
    }

    /// Whether a transaction of signer and nonce `key` may wait: its nonce is ahead, within the
    /// window, no other transaction waits for that nonce, and there is room.
    fn can_wait(&self, key: &(PublicKey, u64)) -> bool {
        let next = self.account(&key.0).nonce;
        key.1 > next
            && key.1 - next < WAIT_WINDOW
            && self.waiting.len() < MAX_WAITING
            && self.waiting.get(&WaitKey::new(key)).is_none()
    }

    fn wait(&mut self, key: (PublicKey, u64), tx: &SignedTransaction, id: Cid, expires: u64) {
        self.expiry.insert((expires, key.0, key.1));
        self.waiting_ids.insert(id, key);
        let tx = tx.clone();
        (self.waiting).insert(WaitKey::new(&key), Waiting { tx, id, expires });
    }

    fn unwait(&mut self, key: &(PublicKey, u64)) -> Option<Waiting> {
        let waiting = self.waiting.remove(&WaitKey::new(key))?;
        self.expiry.remove(&(waiting.expires, key.0, key.1));
        self.waiting_ids.remove(&waiting.id);
        Some(waiting)
    }

    /// Applies `tx` and records it; once it took effect, so do the waiting ones it unblocks.
    fn run(&mut self, tx: &Transaction, id: Cid, done: &mut Executed) {
        let signer = *tx.signer();
        let mut outcome = self.record(tx, id, done);
        while outcome == Outcome::Applied {
            let next = (signer, self.account(&signer).nonce);
            let Some(waiting) = self.unwait(&next) else {
                return;
            };
            outcome = self.record(&waiting.tx.tx, waiting.id, done);
        }
    }

    fn record(&mut self, tx: &Transaction, id: Cid, done: &mut Executed) -> Outcome {
        let outcome = self.apply(tx);
        done.transactions.push((id, outcome));
        if outcome == Outcome::Applied {
            done.changed.push(*tx.signer());
            if let Transaction::Transfer { to, .. } = tx {
                done.changed.push(*to);
            }
        }
        outcome
    }

    /// The waiting transactions that expire at `height` fail.
    fn expire(&mut self, height: u64, done: &mut Executed) {
        while let Some(&(expires, signer, nonce)) = self.expiry.first() {
            if expires > height {
                return;
            }
            if let Some(waiting) = self.unwait(&(signer, nonce)) {
                let expected = self.account(&signer).nonce;
                let outcome = Outcome::NonceGap {
                    expected,
                    got: nonce,
                };
                done.transactions.push((waiting.id, outcome));
            }
        }
    }

    /// Whether ordered transaction `id` waits for an earlier nonce.
    pub fn is_waiting(&self, id: &Cid) -> bool {
        self.waiting_ids.contains_key(id)
    }

    /// Ordered transactions waiting for an earlier nonce.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Applies one transaction whose signature was verified, now (it never waits).
    pub fn apply(&mut self, tx: &Transaction) -> Outcome {
        let mut signer = self.account(tx.signer());
        if tx.nonce() != signer.nonce {
            return Outcome::BadNonce {
                expected: signer.nonce,
                got: tx.nonce(),
            };
        }
        let transfer = match tx {
            Transaction::Transfer { to, amount, .. } => Some((to, *amount)),
            Transaction::Record { .. } => None,
        };
        if let Some((_, amount)) = transfer {
            if signer.balance < amount {
                return Outcome::InsufficientFunds {
                    balance: signer.balance,
                    amount,
                };
            }
            signer.balance -= amount;
        }
        signer.nonce += 1;
        self.accounts.insert(*tx.signer(), signer);
        if let Some((to, amount)) = transfer {
            // Read after the signer's write, so that a transfer to oneself nets out. Cannot
            // overflow: the total of all balances is a u64 and does not change.
            let mut receiver = self.account(to);
            receiver.balance += amount;
            self.accounts.insert(*to, receiver);
        }
        Outcome::Applied
    }

    /// The sum of all balances (the total supply).
    pub fn supply(&self) -> u128 {
        let mut supply = 0;
        self.accounts.for_each(|_, a| supply += a.balance as u128);
        supply
    }

    /// The CID of the state's root block as of the last [`State::flush`]: equal roots mean equal
    /// states.
    pub fn root(&self) -> Cid {
        self.root
    }

    /// Number of accounts.
    pub fn len(&self) -> usize {
        self.accounts.len()
    }

    /// Whether there are no accounts.
    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
    }
}
