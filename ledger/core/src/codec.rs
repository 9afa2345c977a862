//! Canonical DAG-CBOR: one value, one encoding, one CID.
//!
//! Encoding uses `serde_ipld_dagcbor`, which writes map keys in DAG-CBOR's canonical order (shorter
//! first, then bytewise), integers in their shortest form, definite lengths only, and CIDs as tag 42
//! links. Decoding is strict twice over: the decoder refuses what DAG-CBOR forbids, and the value is
//! re-encoded and compared byte for byte, so any second encoding of a value (unsorted keys,
//! non-minimal integers, duplicate keys, trailing bytes) is refused.

use comms::{cid_for, Cid, Codec};
use serde::{de::DeserializeOwned, Serialize};

use crate::Error;

/// The canonical bytes of `value`.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_ipld_dagcbor::to_vec(value)
        .expect("ledger types always encode: no floats, string keys only")
}

/// Decodes canonical bytes, refusing anything but the one encoding of the value.
pub fn decode<T: Serialize + DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let value: T = serde_ipld_dagcbor::from_slice(bytes).map_err(|e| Error::Malformed {
        reason: e.to_string(),
    })?;
    if encode(&value) != bytes {
        return Err(Error::NonCanonical);
    }
    Ok(value)
}

/// The CID of canonical bytes: CIDv1, dag-cbor, sha2-256, as an IPFS node computes it.
pub fn cid_of(bytes: &[u8]) -> Cid {
    cid_for(Codec::DagCbor, bytes)
}
