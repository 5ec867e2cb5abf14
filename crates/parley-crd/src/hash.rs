//! A stable 64-bit hash: the same on every node, build and version (the ring and the slot
//! map depend on it). FNV-1a, then the splitmix64 finalizer for an even spread.

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn finalize(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Hash of arbitrary bytes.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h = FNV_OFFSET;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    finalize(h)
}

/// Hash of an ID (its 8 little-endian bytes).
pub fn hash_id(id: u64) -> u64 {
    hash_bytes(&id.to_le_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_pinned() {
        // These must never change: they place every channel on its shard and owner. (The
        // values were computed independently, from the algorithm's definition.)
        assert_eq!(hash_id(0), 0x813f_0174_a236_7c13);
        assert_eq!(hash_id(42), 0xe15f_07fe_f55b_9454);
        assert_eq!(hash_bytes(b"n1#0"), 0xe73b_9b96_754f_50a4);
        assert_eq!(crate::slot_of(382_890_893_356_564_480), 1478);
    }
}
