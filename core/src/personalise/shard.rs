//! Which D1 database holds a profile's personalisation state (its state row and segment
//! memberships), when a deployment spreads them over several (`PROFILE_SHARDS`). That state is
//! the largest per-person share of D1 and its busiest writer: a refresh writes one profile's
//! rows and nothing else of theirs, so each profile's writes stay in one database.
//!
//! The choice is a jump consistent hash (Lamping and Veach, 2014) of the profile ID's SHA-256:
//! growing from `n` to `n + 1` shards moves only the profiles that land in the new one, about
//! `1 / (n + 1)` of them. Shard 0 is the shared database, so one shard is the layout of a
//! deployment that never sharded.

use sha2::{Digest, Sha256};

/// Most shards a deployment may name: each is a binding the Worker reads per request.
pub const MAX_SHARDS: u32 = 64;

/// The shard of `profile_id` among `shards` (0 when there is one, or none).
pub fn shard_of(profile_id: &str, shards: u32) -> u32 {
    if shards <= 1 {
        return 0;
    }
    let digest = Sha256::digest(profile_id.as_bytes());
    let mut key = [0u8; 8];
    key.copy_from_slice(&digest[..8]);
    jump(u64::from_be_bytes(key), shards)
}

/// The jump consistent hash: the bucket `key` lands in among `buckets` (at least 1).
fn jump(mut key: u64, buckets: u32) -> u32 {
    let (mut bucket, mut next) = (0i64, 0i64);
    while next < i64::from(buckets) {
        bucket = next;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        next = ((bucket + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    bucket as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("prof_{i:06}")).collect()
    }

    #[test]
    fn one_shard_is_the_shared_database() {
        assert_eq!(shard_of("prof_a", 1), 0);
        assert_eq!(shard_of("prof_a", 0), 0);
    }

    #[test]
    fn a_profile_always_lands_in_the_same_shard() {
        for id in ids(50) {
            let s = shard_of(&id, 7);
            assert!(s < 7);
            assert_eq!(shard_of(&id, 7), s);
        }
    }

    #[test]
    fn profiles_spread_evenly() {
        let mut counts = [0usize; 4];
        for id in ids(8_000) {
            counts[shard_of(&id, 4) as usize] += 1;
        }
        for c in counts {
            assert!((1_800..2_200).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn adding_a_shard_moves_only_profiles_into_it() {
        let (mut moved, all) = (0, ids(6_000));
        for id in &all {
            let (before, after) = (shard_of(id, 5), shard_of(id, 6));
            if before != after {
                assert_eq!(after, 5, "{id} moved between old shards");
                moved += 1;
            }
        }
        // About a sixth.
        assert!((800..1_200).contains(&moved), "{moved}");
    }

    #[test]
    fn the_hash_is_the_published_algorithm() {
        // Other implementations' published buckets (jump_consistent_hash, go-jump, the paper's
        // Python port): a tool outside the Worker computes the same shard.
        for (key, buckets, bucket) in [
            (0, 60, 0),
            (1, 60, 55),
            (2, 60, 46),
            (256, 1024, 520),
            (42, 57, 43),
            (0xDEAD_10CC, 666, 361),
            (0xDEAD_10CC, 1, 0),
        ] {
            assert_eq!(jump(key, buckets), bucket, "jump({key}, {buckets})");
        }
    }
}
