//! Small, stable hashing: every router must place a model at the same ring point, so no
//! per-process random seeds (`RandomState`) here. [`combine`] and the deterministic
//! [`Rng`] are public for the simulator (`wasmesh-sim`), whose runs replay from a seed.

use std::hash::{BuildHasher, Hasher};

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The splitmix64 finalizer: a bijective mix with good avalanche, cheap enough per request.
pub(crate) const fn mix64(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// FNV-1a over the bytes, then [`mix64`] (FNV alone mixes the high bits poorly).
pub(crate) fn hash_str(s: &str) -> u64 {
    let mut h = FNV_OFFSET;
    for b in s.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(FNV_PRIME);
    }
    mix64(h)
}

/// Two values into one hash (a ring point from a node id and a replica number, a probe start
/// from a request key and a model).
pub const fn combine(a: u64, b: u64) -> u64 {
    mix64(a ^ b.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(17))
}

/// `hash` mapped onto `0..n` without a division (Lemire's multiply-shift).
pub(crate) fn reduce(hash: u64, n: usize) -> usize {
    ((u128::from(hash) * n as u128) >> 64) as usize
}

/// Hasher for the snapshot's string maps: stable and quick on short keys.
#[derive(Clone, Copy, Default)]
pub(crate) struct StableHasher(u64);

impl Hasher for StableHasher {
    fn finish(&self) -> u64 {
        mix64(self.0)
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 { FNV_OFFSET } else { self.0 };
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(FNV_PRIME);
        }
        self.0 = h;
    }
}

/// [`BuildHasher`] for [`StableHasher`].
#[derive(Clone, Copy, Default)]
pub(crate) struct StableState;

impl BuildHasher for StableState {
    type Hasher = StableHasher;
    fn build_hasher(&self) -> StableHasher {
        StableHasher::default()
    }
}

/// A small deterministic PRNG (xorshift64*, seeded through splitmix64), so the tests' and
/// the simulator's runs replay exactly. Not for anything that must be unpredictable.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator whose sequence depends only on `seed`.
    pub fn new(seed: u64) -> Self {
        Self(mix64(seed ^ 0x6a09_e667_f3bc_c909) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        reduce(self.next_u64(), n)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `lo..=hi`.
    pub fn range_u32(&mut self, lo: u32, hi: u32) -> u32 {
        lo + self.below((hi - lo) as usize + 1) as u32
    }
}
