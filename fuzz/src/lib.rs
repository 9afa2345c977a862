//! What several fuzz targets share: blocks framed in one input, and a check that every block of a
//! proof is covered by what verifies it.

use bytes::Bytes;

/// The blocks framed in `data`, each after its length (2 bytes, little-endian), as
/// `ledger/tests/fuzz_seeds.rs` writes them; a last, cut-off block is taken as it is.
pub fn framed_blocks(mut data: &[u8]) -> Vec<Bytes> {
    let mut blocks = Vec::new();
    while let Some((length, tail)) = data.split_first_chunk::<2>() {
        let length = usize::from(u16::from_le_bytes(*length)).min(tail.len());
        blocks.push(Bytes::copy_from_slice(&tail[..length]));
        data = &tail[length..];
    }
    blocks
}

/// Asserts that `verifies` refuses `blocks` with any one of their blocks changed at its first,
/// middle or last byte: nothing in a proof goes unchecked.
pub fn every_change_fails(blocks: &[Bytes], verifies: impl Fn(&[Bytes]) -> bool) {
    for (index, block) in blocks.iter().enumerate() {
        for at in [0, block.len() / 2, block.len().saturating_sub(1)] {
            let Some(&byte) = block.get(at) else {
                continue;
            };
            let mut changed = blocks.to_vec();
            let mut bytes = block.to_vec();
            bytes[at] = byte ^ 0x01;
            changed[index] = Bytes::from(bytes);
            assert!(
                !verifies(&changed),
                "block {index} changed at byte {at} still verifies"
            );
        }
    }
}
