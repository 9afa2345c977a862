//! Content addressing: CIDv1 with a sha2-256 multihash, codecs `raw` and `dag-cbor`.

use std::fmt;

use cid::Cid;
use multihash::Multihash;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Error;

/// Multihash code of sha2-256.
pub const SHA2_256: u64 = 0x12;

/// The codecs a block can be stored under. The numbers are the multicodec table's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Codec {
    /// Opaque bytes (`0x55`).
    Raw,
    /// Canonical DAG-CBOR (`0x71`), whose links an IPFS node can walk.
    DagCbor,
}

impl Codec {
    /// The multicodec code.
    pub const fn code(self) -> u64 {
        match self {
            Codec::Raw => 0x55,
            Codec::DagCbor => 0x71,
        }
    }

    /// The codec for a multicodec code, if it is one we store.
    pub const fn from_code(code: u64) -> Option<Codec> {
        match code {
            0x55 => Some(Codec::Raw),
            0x71 => Some(Codec::DagCbor),
            _ => None,
        }
    }

    /// The name IPFS uses for the codec (`raw`, `dag-cbor`).
    pub const fn name(self) -> &'static str {
        match self {
            Codec::Raw => "raw",
            Codec::DagCbor => "dag-cbor",
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The CIDv1 of `data` under `codec`, hashed with sha2-256.
pub fn cid_for(codec: Codec, data: &[u8]) -> Cid {
    let digest = Sha256::digest(data);
    let hash = Multihash::<64>::wrap(SHA2_256, &digest)
        .expect("a 32-byte digest fits a 64-byte multihash");
    Cid::new_v1(codec.code(), hash)
}

/// Checks that a CID is one this contract can verify: version 1, a known codec, sha2-256.
pub fn check_supported(cid: &Cid) -> Result<Codec, Error> {
    let codec = Codec::from_code(cid.codec());
    match codec {
        Some(codec) if cid.version() == cid::Version::V1 && cid.hash().code() == SHA2_256 => {
            Ok(codec)
        }
        _ => Err(Error::UnsupportedCid {
            cid: Box::new(*cid),
        }),
    }
}

/// Verifies that `data` hashes to `expected`; the error names the CID the bytes really have.
pub fn verify(expected: &Cid, data: &[u8]) -> Result<(), Error> {
    let codec = check_supported(expected)?;
    let actual = cid_for(codec, data);
    if actual == *expected {
        Ok(())
    } else {
        Err(Error::CidMismatch {
            expected: Box::new(*expected),
            actual: Box::new(actual),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn matches_the_cid_ipfs_computes() {
        // `echo -n hello | ipfs block put --cid-codec raw` (CIDv1, sha2-256) gives this CID.
        let cid = cid_for(Codec::Raw, b"hello");
        assert_eq!(
            cid.to_string(),
            "bafkreibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4yeq"
        );
    }

    #[test]
    fn unsupported_hash_is_refused() {
        let other = Cid::new_v1(0x55, Multihash::<64>::wrap(0x13, &[0; 64]).unwrap());
        assert!(matches!(
            verify(&other, b"x"),
            Err(Error::UnsupportedCid { .. })
        ));
    }

    proptest! {
        #[test]
        fn verify_accepts_only_the_hashed_bytes(data in proptest::collection::vec(any::<u8>(), 0..512), flip in any::<usize>()) {
            let cid = cid_for(Codec::DagCbor, &data);
            prop_assert!(verify(&cid, &data).is_ok());
            prop_assert_eq!(cid.to_string().parse::<Cid>().unwrap(), cid);
            if !data.is_empty() {
                let mut bad = data.clone();
                bad[flip % data.len()] ^= 1;
                let mismatch = matches!(verify(&cid, &bad), Err(Error::CidMismatch { .. }));
                prop_assert!(mismatch);
            }
        }
    }
}
