//! Ed25519 keys and signatures, with domain separation and batch verification.

use std::fmt;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Error;

/// What a signature is over; the tag is prefixed to the signed bytes, so a signature of one kind can
/// never pass as another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Domain {
    /// A block header.
    Block,
    /// A transaction.
    Transaction,
}

impl Domain {
    fn tag(self) -> &'static [u8] {
        match self {
            Domain::Block => b"ledger/block/v1\0",
            Domain::Transaction => b"ledger/tx/v1\0",
        }
    }

    fn message(self, bytes: &[u8]) -> Vec<u8> {
        [self.tag(), bytes].concat()
    }
}

/// An ed25519 public key: an account, or a validator's identity. Encoded as 32 CBOR bytes, and as
/// 64 lower-case hex digits in human-readable formats (JSON, TOML) and by [`PublicKey::to_hex`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; 32]);

/// An ed25519 signature. Encoded as 64 CBOR bytes (128 hex digits in human-readable formats).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; 64]);

/// A signing key (the secret half), kept out of `Debug` output.
#[derive(Clone)]
pub struct Keypair(SigningKey);

impl Keypair {
    /// A key from 32 secret bytes (a key file's content, or a test's fixed seed).
    pub fn from_secret(secret: [u8; 32]) -> Keypair {
        Keypair(SigningKey::from_bytes(&secret))
    }

    /// A fresh key from the operating system's randomness.
    pub fn generate() -> Result<Keypair, getrandom::Error> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret)?;
        Ok(Keypair::from_secret(secret))
    }

    /// The secret bytes, for writing a key file.
    pub fn secret(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }

    /// Signs `bytes` under `domain`.
    pub fn sign(&self, domain: Domain, bytes: &[u8]) -> Signature {
        Signature(self.0.sign(&domain.message(bytes)).to_bytes())
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keypair({:?})", self.public())
    }
}

impl PublicKey {
    /// Checks `signature` over `bytes` under `domain`.
    pub fn verify(&self, domain: Domain, bytes: &[u8], signature: &Signature) -> Result<(), Error> {
        let key = VerifyingKey::from_bytes(&self.0).map_err(|_| Error::BadSignature)?;
        let signature = ed25519_dalek::Signature::from_bytes(&signature.0);
        key.verify_strict(&domain.message(bytes), &signature)
            .map_err(|_| Error::BadSignature)
    }
}

/// Verifies many signatures at once (about twice as fast as one by one); on failure, the caller
/// learns only that one of them is bad.
pub fn verify_batch(
    domain: Domain,
    items: &[(&PublicKey, &[u8], &Signature)],
) -> Result<(), Error> {
    let messages: Vec<Vec<u8>> = items
        .iter()
        .map(|(_, bytes, _)| domain.message(bytes))
        .collect();
    let messages: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
    let signatures: Vec<_> = items
        .iter()
        .map(|(_, _, s)| ed25519_dalek::Signature::from_bytes(&s.0))
        .collect();
    let keys = items
        .iter()
        .map(|(k, _, _)| VerifyingKey::from_bytes(&k.0).map_err(|_| Error::BadSignature))
        .collect::<Result<Vec<_>, _>>()?;
    ed25519_dalek::verify_batch(&messages, &signatures, &keys).map_err(|_| Error::BadSignature)
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for PublicKey {
    /// The first 8 bytes in hex: enough to tell keys apart in a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0[..8].iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature(")?;
        self.0[..8].iter().try_for_each(|b| write!(f, "{b:02x}"))?;
        write!(f, "…)")
    }
}

/// Text that is not `len` bytes in hex.
#[derive(Debug, thiserror::Error)]
#[error("expected {len} bytes as {} hex digits", len * 2)]
pub struct HexError {
    /// The expected length in bytes.
    pub len: usize,
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    ::hex::encode(bytes)
}

/// Decodes exactly `N` bytes of hex (either case).
pub fn from_hex<const N: usize>(text: &str) -> Result<[u8; N], HexError> {
    let mut bytes = [0u8; N];
    ::hex::decode_to_slice(text, &mut bytes).map_err(|_| HexError { len: N })?;
    Ok(bytes)
}

/// Fixed-size byte arrays: CBOR byte strings of exactly that length, or hex text in human-readable
/// formats; plus `to_hex` and `FromStr` from hex.
macro_rules! fixed_bytes {
    ($type:ident, $len:literal) => {
        impl $type {
            /// All the bytes in lower-case hex.
            pub fn to_hex(&self) -> String {
                crate::crypto::hex(&self.0)
            }
        }

        impl std::str::FromStr for $type {
            type Err = HexError;

            fn from_str(text: &str) -> Result<$type, HexError> {
                from_hex(text.trim()).map($type)
            }
        }

        impl Serialize for $type {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                match s.is_human_readable() {
                    true => s.serialize_str(&self.to_hex()),
                    false => s.serialize_bytes(&self.0),
                }
            }
        }

        impl<'de> Deserialize<'de> for $type {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<$type, D::Error> {
                if d.is_human_readable() {
                    let text = String::deserialize(d)?;
                    return text.parse().map_err(serde::de::Error::custom);
                }
                let bytes = serde_bytes::ByteBuf::deserialize(d)?;
                let array: [u8; $len] = bytes.as_slice().try_into().map_err(|_| {
                    serde::de::Error::invalid_length(bytes.len(), &stringify!($len))
                })?;
                Ok($type(array))
            }
        }
    };
}

fixed_bytes!(PublicKey, 32);
fixed_bytes!(Signature, 64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_read_back_from_hex_and_json() {
        let key = Keypair::from_secret([7; 32]).public();
        let hex = key.to_hex();
        assert_eq!(hex.len(), 64);
        assert_eq!(hex.parse::<PublicKey>().expect("hex"), key);
        assert_eq!(hex.to_uppercase().parse::<PublicKey>().expect("hex"), key);
        let json = serde_json::to_string(&key).expect("json");
        assert_eq!(json, format!("\"{hex}\""));
        assert_eq!(serde_json::from_str::<PublicKey>(&json).expect("json"), key);
        for bad in [
            "",
            "00",
            &hex[1..],
            &format!("{}zz", &hex[2..]),
            &format!("{hex}00"),
        ] {
            assert!(bad.parse::<PublicKey>().is_err(), "{bad:?}");
        }
        // Multi-byte text of the right length is refused, not split inside a character.
        assert!(format!("é{}", &hex[2..]).parse::<PublicKey>().is_err());
    }
}
