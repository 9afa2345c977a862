//! The state as blocks: the root block ([`StateRoot`]) links the accounts tree and the waiting
//! transactions tree; [`State::flush`] hands out what changed, [`State::load`] reads a state back
//! from its root, and [`State::prove`] gives what [`verify_account`] needs to check an account
//! against a root CID alone.

use std::collections::{BTreeSet, HashMap, HashSet};

use bytes::Bytes;
use comms::Cid;
use ipld_core::ipld::Ipld;
use serde::{Deserialize, Serialize};

use super::{Account, State, Waiting};
use crate::{
    codec::{cid_of, decode, encode},
    crypto::PublicKey,
    tree::{self, ReadBlock, Tree, TreeBlock, TreeError, TreeKey, TreeValue},
    types::SignedTransaction,
};

/// A state's root block: `{"accounts": <tree>, "waiting": <tree>}`. Its CID names the state, and
/// every commit records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateRoot {
    /// The accounts tree: public key to `[balance, nonce]`.
    pub accounts: Cid,
    /// The ordered transactions waiting for an earlier nonce: signer and nonce (big-endian) to
    /// `[transaction, expiry height]`.
    pub waiting: Cid,
}

/// A waiting transaction's key: its signer's 32 bytes, then its nonce, big-endian, so that the
/// keys of one signer sort by nonce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct WaitKey([u8; 40]);

impl WaitKey {
    /// The key of `signer`'s transaction of nonce `nonce`.
    pub fn new((signer, nonce): &(PublicKey, u64)) -> WaitKey {
        let mut bytes = [0; 40];
        bytes[..32].copy_from_slice(&signer.0);
        bytes[32..].copy_from_slice(&nonce.to_be_bytes());
        WaitKey(bytes)
    }

    /// Its signer and nonce.
    pub fn parts(&self) -> (PublicKey, u64) {
        let (signer, nonce) = self.0.split_at(32);
        let signer = PublicKey(signer.try_into().expect("32 bytes"));
        (
            signer,
            u64::from_be_bytes(nonce.try_into().expect("8 bytes")),
        )
    }
}

impl TreeKey for WaitKey {
    fn bytes(&self) -> &[u8] {
        &self.0
    }

    fn from_bytes(bytes: &[u8]) -> Option<WaitKey> {
        Some(WaitKey(bytes.try_into().ok()?))
    }
}

impl TreeValue for Waiting {
    /// `[transaction, expiry height]`.
    fn encode(&self, out: &mut Vec<u8>) {
        tree::array(out, 2);
        out.extend(encode(&self.tx));
        tree::unsigned(out, self.expires);
    }

    fn decode(item: &Ipld) -> Option<Waiting> {
        let (tx, expires) = tree::pair(item)?;
        let tx: SignedTransaction = ipld_core::serde::from_ipld(tx.clone()).ok()?;
        let id = tx.id();
        let expires = u64::decode(expires)?;
        Some(Waiting { tx, id, expires })
    }
}

/// What shows an account's value in a state: the state's root block, then the accounts tree's
/// blocks from its root to the account's bucket (or to where it would be).
pub type AccountProof = Vec<Bytes>;

impl State {
    /// A state of these trees, flushed, its blocks held for the next [`State::flush`].
    pub(super) fn from_trees(
        accounts: Tree<PublicKey, Account>,
        waiting: Tree<WaitKey, Waiting>,
    ) -> State {
        let mut state = State::assemble(accounts, waiting, Cid::default());
        let mut blocks = Vec::new();
        state.root = state.flush(&mut blocks);
        state.unsaved = blocks;
        state
    }

    /// Encodes what changed since the last flush into `out`, children before parents, and the
    /// root block last when it changed; returns the root block's CID.
    pub fn flush(&mut self, out: &mut Vec<TreeBlock>) -> Cid {
        let unsaved = std::mem::take(&mut self.unsaved);
        let root = self.flush_trees(out);
        if !unsaved.is_empty() {
            // The genesis state's blocks were never handed out: those that changes since dropped
            // are neither to be stored nor to be deleted (one that came back is in `out` anyway).
            let mut dropped = self.take_dropped();
            let genesis: HashSet<Cid> = unsaved.iter().map(|(cid, _)| *cid).collect();
            let gone: HashSet<Cid> = (dropped.iter().copied())
                .filter(|cid| genesis.contains(cid))
                .collect();
            dropped.retain(|cid| !genesis.contains(cid));
            self.replaced_roots = dropped;
            out.extend(unsaved.into_iter().filter(|(cid, _)| !gone.contains(cid)));
        }
        root
    }

    fn flush_trees(&mut self, out: &mut Vec<TreeBlock>) -> Cid {
        if let (Some(_), Some(_)) = (self.accounts.cid(), self.waiting.cid()) {
            return self.root;
        }
        let root = StateRoot {
            accounts: self.accounts.flush(out),
            waiting: self.waiting.flush(out),
        };
        let bytes = encode(&root);
        let replaced = std::mem::replace(&mut self.root, cid_of(&bytes));
        if replaced != Cid::default() && replaced != self.root {
            self.replaced_roots.push(replaced);
        }
        out.push((self.root, Bytes::from(bytes)));
        self.root
    }

    /// The CIDs of the stored blocks that the flushes since the last call replaced or removed:
    /// blocks the state before them needs and the state after them does not (though the same
    /// bytes may come back later, under the same CID). What a store may delete once it keeps no
    /// state from before.
    pub fn take_dropped(&mut self) -> Vec<Cid> {
        let mut dropped = self.accounts.take_dropped();
        dropped.extend(self.waiting.take_dropped());
        dropped.append(&mut self.replaced_roots);
        dropped
    }

    /// Reads the state of root block `root` back through `read`, checking every block against
    /// its CID.
    pub fn load<E: From<TreeError>>(root: &Cid, read: &mut ReadBlock<E>) -> Result<State, E> {
        let top = read_root(root, read)?;
        let accounts = Tree::load(&top.accounts, read)?;
        let waiting = Tree::load(&top.waiting, read)?;
        Ok(State::assemble(accounts, waiting, *root))
    }

    /// A state of these trees, whose root block is `root`, with the waiting transactions'
    /// indexes (by expiry, by ID) built from their tree.
    fn assemble(
        accounts: Tree<PublicKey, Account>,
        waiting: Tree<WaitKey, Waiting>,
        root: Cid,
    ) -> State {
        let (mut expiry, mut waiting_ids) = (BTreeSet::new(), HashMap::new());
        waiting.for_each(|key, entry| {
            let key = key.parts();
            expiry.insert((entry.expires, key.0, key.1));
            waiting_ids.insert(entry.id, key);
        });
        State {
            accounts,
            waiting,
            expiry,
            waiting_ids,
            root,
            unsaved: Vec::new(),
            replaced_roots: Vec::new(),
        }
    }

    /// The proof of account `key` as of the last flush; `None` if the state changed since.
    pub fn prove(&self, key: &PublicKey) -> Option<AccountProof> {
        let top = StateRoot {
            accounts: self.accounts.cid()?,
            waiting: self.waiting.cid()?,
        };
        let mut proof = vec![Bytes::from(encode(&top))];
        proof.extend(self.accounts.prove(key)?);
        Some(proof)
    }
}

/// The proof of account `key` in the stored state of root block `root`, read through `read`
/// (each block checked against its CID).
pub fn prove_stored_account<E: From<TreeError>>(
    root: &Cid,
    key: &PublicKey,
    read: &mut ReadBlock<E>,
) -> Result<AccountProof, E> {
    let bytes = tree::read_block(root, read)?;
    let top = decode_root(root, &bytes)?;
    let mut proof = vec![Bytes::from(bytes)];
    proof.extend(tree::prove_stored::<_, Account, _>(
        &top.accounts,
        key,
        read,
    )?);
    Ok(proof)
}

/// Reads and checks root block `root`.
fn read_root<E: From<TreeError>>(root: &Cid, read: &mut ReadBlock<E>) -> Result<StateRoot, E> {
    let bytes = tree::read_block(root, read)?;
    Ok(decode_root(root, &bytes)?)
}

/// Decodes the bytes of root block `root`, already checked against its CID.
fn decode_root(root: &Cid, bytes: &[u8]) -> Result<StateRoot, TreeError> {
    decode(bytes).map_err(|error| TreeError::Malformed {
        cid: Box::new(*root),
        reason: error.to_string(),
    })
}

/// Checks `proof` for account `key` against state root `root`: the account, or `None` if the
/// proof shows the state has none.
pub fn verify_account(
    root: &Cid,
    key: &PublicKey,
    proof: &[Bytes],
) -> Result<Option<Account>, TreeError> {
    let (top, path) = proof.split_first().ok_or(TreeError::ProofTooShort)?;
    tree::check_block(root, top)?;
    let top = decode_root(root, top)?;
    tree::verify(&top.accounts, key, path)
}
