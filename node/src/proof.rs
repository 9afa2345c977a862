//! What `ledger-node query balance --verify` checks: a node's proof of an account, against the
//! genesis alone. The certificate's blocks must be signed by validators of the genesis holding a
//! quorum of stake, all naming one checkpoint; the state blocks must lead, hash by hash, from that
//! checkpoint's root to the account (or show there is none). Nothing else the node says is
//! trusted.

use anyhow::{bail, Context};
use bytes::Bytes;
use ledger::{
    checkpoint::verify_certificate, verify_account, Account, Committee, Genesis, PublicKey,
};
use serde::Serialize;

use crate::wire::{AccountReply, ProofView};

/// An account as a proof showed it.
#[derive(Debug, PartialEq, Serialize)]
pub struct Verified {
    pub account: PublicKey,
    /// At the checkpoint; zero for an account the state does not hold.
    pub balance: u64,
    pub nonce: u64,
    /// Whether the state holds the account at all.
    pub present: bool,
    /// The certified checkpoint: its height and state root.
    pub height: u64,
    pub state_root: String,
    /// The validators whose blocks certified it, and their stake against the quorum.
    pub validators: Vec<u32>,
    pub stake: u64,
    pub quorum: u64,
}

/// Checks `reply`'s proof of its account against `genesis`.
pub fn verify(reply: &AccountReply, genesis: &Genesis) -> anyhow::Result<Verified> {
    let proof = (reply.proof.as_ref()).context("the node sent no proof (ask with ?proof=true)")?;
    let (chain, committee) = (genesis.encode().1, Committee::new(genesis));
    let certificate = blocks(&proof.certificate).context("the certificate")?;
    let certified = verify_certificate(&certificate, &chain, &committee)
        .context("the certificate does not hold")?;
    let checkpoint = certified.checkpoint;
    let claimed = &proof.checkpoint;
    if (checkpoint.height, checkpoint.state_root) != (claimed.height, claimed.state_root) {
        bail!(
            "the certificate is for height {}, not the {} the node says",
            checkpoint.height,
            claimed.height
        );
    }
    let path = blocks(&proof.blocks).context("the state blocks")?;
    let account = verify_account(&checkpoint.state_root, &reply.account, &path)
        .context("the state blocks do not lead from the certified root to the account")?;
    check_claim(proof, account)?;
    let Account { balance, nonce } = account.unwrap_or_default();
    Ok(Verified {
        account: reply.account,
        balance,
        nonce,
        present: account.is_some(),
        height: checkpoint.height,
        state_root: checkpoint.state_root.to_string(),
        stake: certified.stake,
        quorum: committee.quorum(),
        validators: certified.authors,
    })
}

/// The account the proof shows must be the one the node claims.
fn check_claim(proof: &ProofView, shown: Option<Account>) -> anyhow::Result<()> {
    if proof.account != shown {
        bail!(
            "the node says the account is {:?}, and its proof shows {:?}",
            proof.account,
            shown
        );
    }
    Ok(())
}

fn blocks(hex: &[String]) -> anyhow::Result<Vec<Bytes>> {
    (hex.iter().enumerate())
        .map(|(i, text)| {
            let bytes = hex::decode(text).with_context(|| format!("block {i} is not hex"))?;
            Ok(Bytes::from(bytes))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use ledger::{
        checkpoint::CHECKPOINT_INTERVAL,
        devnet::{self, Role},
        Block, Checkpoint, Payload, SignedBlock, State,
    };

    use super::*;
    use crate::wire::CheckpointView;

    const SEED: u64 = 3;

    /// A genesis of 4 validators and 3 accounts, and a reply proving `key` at checkpoint 16 of its
    /// genesis state, certified by validators `signers`.
    fn reply(key: PublicKey, signers: &[u32]) -> (Genesis, AccountReply) {
        let genesis = devnet::genesis("proofs", SEED, 4, 3, 500);
        let mut state = State::genesis(&genesis);
        let root = state.flush(&mut Vec::new());
        let checkpoint = Checkpoint {
            height: CHECKPOINT_INTERVAL,
            round: 8,
            leader: root,
            state_root: root,
        };
        let certificate = (signers.iter())
            .map(|author| {
                let block = Block {
                    chain: genesis.encode().1,
                    author: *author,
                    round: 9,
                    parents: Vec::new(),
                    payload: Payload::Inline(Vec::new()),
                    timestamp_ms: 0,
                    checkpoint: Some(checkpoint),
                };
                let key = devnet::key(SEED, Role::Validator, *author as usize);
                ledger::hex(&SignedBlock::sign(block, &key).encode().0)
            })
            .collect();
        let proof = state.prove(&key).expect("flushed");
        let account = verify_account(&root, &key, &proof).expect("proves");
        let reply = AccountReply {
            account: key,
            balance: 0,
            nonce: 0,
            proof: Some(ProofView {
                checkpoint: CheckpointView {
                    height: checkpoint.height,
                    state_root: root,
                },
                account,
                blocks: proof.iter().map(|b| ledger::hex(b)).collect(),
                certificate,
            }),
        };
        (genesis, reply)
    }

    fn error(genesis: &Genesis, reply: &AccountReply) -> String {
        format!("{:#}", verify(reply, genesis).expect_err("refused"))
    }

    #[test]
    fn a_proof_shows_the_account_or_its_absence() {
        let holder = devnet::key(SEED, Role::Account, 1).public();
        let (genesis, good) = reply(holder, &[0, 2, 3]);
        let verified = verify(&good, &genesis).expect("holds");
        assert_eq!((verified.balance, verified.present), (500, true));
        assert_eq!(
            (verified.height, verified.validators.clone()),
            (16, vec![0, 2, 3])
        );
        assert_eq!((verified.stake, verified.quorum), (3, 3));

        let stranger = devnet::key(SEED + 1, Role::Account, 1).public();
        let (genesis, absent) = reply(stranger, &[0, 1, 2]);
        let verified = verify(&absent, &genesis).expect("holds");
        assert_eq!((verified.balance, verified.present), (0, false));
    }

    #[test]
    fn a_tampered_proof_fails_with_a_clear_error() {
        let holder = devnet::key(SEED, Role::Account, 1).public();
        let (genesis, good) = reply(holder, &[0, 1, 2]);
        let with = |change: &dyn Fn(&mut ProofView)| {
            let mut reply = AccountReply {
                proof: good.proof.clone(),
                ..good
            };
            change(reply.proof.as_mut().expect("a proof"));
            reply
        };

        let short = with(&|p| drop(p.certificate.pop()));
        assert!(error(&genesis, &short).contains("hold 2 of stake, and a quorum is 3"));
        let richer = with(&|p| {
            p.account = Some(Account {
                balance: 10_000,
                nonce: 0,
            })
        });
        assert!(error(&genesis, &richer).contains("its proof shows"));
        let flipped = with(&|p| {
            let last = p.blocks.len() - 1;
            let mut bytes = hex::decode(&p.blocks[last]).expect("hex");
            let end = bytes.len() - 1;
            bytes[end] ^= 1;
            p.blocks[last] = hex::encode(bytes);
        });
        assert!(error(&genesis, &flipped).contains("do not lead from the certified root"));
        let higher = with(&|p| p.checkpoint.height += CHECKPOINT_INTERVAL);
        assert!(error(&genesis, &higher).contains("not the 32 the node says"));
        let forged = with(&|p| {
            let mut bytes = hex::decode(&p.certificate[1]).expect("hex");
            let end = bytes.len() - 1;
            bytes[end] ^= 1;
            p.certificate[1] = hex::encode(bytes);
        });
        assert!(error(&genesis, &forged).contains("certificate block 1"));
        let other = devnet::genesis("another chain", SEED, 4, 3, 500);
        assert!(error(&other, &good).contains("block of chain"));
        let none = AccountReply {
            proof: None,
            ..good
        };
        assert!(error(&genesis, &none).contains("no proof"));
    }
}
