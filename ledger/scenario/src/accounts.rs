//! The network's funded accounts, signing transfers with the nonces they have used.

use comms::Cid;
use ledger::{
    devnet::{self, Role},
    Keypair, NodeError, NodeHandle, PublicKey, SignedTransaction, SubmitError, Transaction,
};

/// The devnet accounts of a network's genesis, each with its next nonce.
pub struct Accounts {
    chain: Cid,
    keys: Vec<Keypair>,
    nonces: Vec<u64>,
}

impl Accounts {
    /// The first `count` accounts of `seed`'s devnet keys, on `chain`, none used yet.
    pub fn new(chain: Cid, seed: u64, count: usize) -> Accounts {
        Accounts {
            chain,
            keys: (0..count)
                .map(|i| devnet::key(seed, Role::Account, i))
                .collect(),
            nonces: vec![0; count],
        }
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Account `i`'s public key.
    pub fn key(&self, i: usize) -> PublicKey {
        self.keys[i].public()
    }

    /// A transfer of `amount` from account `from` to account `to`, with `from`'s next nonce.
    pub fn transfer(&self, from: usize, to: usize, amount: u64) -> SignedTransaction {
        let tx = Transaction::Transfer {
            from: self.keys[from].public(),
            to: self.keys[to].public(),
            amount,
            nonce: self.nonces[from],
        };
        SignedTransaction::sign(&self.chain, tx, &self.keys[from])
    }

    /// Submits `tx`, a transfer from account `from`, to `node`; when the node takes it, `from`'s
    /// next transfer gets the next nonce.
    pub async fn submit(
        &mut self,
        node: &NodeHandle,
        from: usize,
        tx: SignedTransaction,
    ) -> Result<Result<Cid, SubmitError>, NodeError> {
        let taken = node.submit(tx).await?;
        if taken.is_ok() {
            self.nonces[from] += 1;
        }
        Ok(taken)
    }
}
