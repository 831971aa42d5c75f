//! The simulator's randomness: a small deterministic PRNG ([`Rng`]) and the hash that seeds one
//! per tick ([`combine`]), so a run replays exactly from its seed. The same functions as the
//! policy's own (private) hashing, copied so that the policy need not make them public.

/// The splitmix64 finalizer: a bijective mix with good avalanche.
const fn mix64(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Two values into one hash (a tick's seed from the run's seed and the tick).
pub(crate) const fn combine(a: u64, b: u64) -> u64 {
    mix64(a ^ b.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(17))
}

/// `hash` mapped onto `0..n` without a division (Lemire's multiply-shift).
fn reduce(hash: u64, n: usize) -> usize {
    ((u128::from(hash) * n as u128) >> 64) as usize
}

/// A small deterministic PRNG (xorshift64*, seeded through splitmix64), so runs replay exactly.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(mix64(seed ^ 0x6a09_e667_f3bc_c909) | 1)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        reduce(self.next_u64(), n)
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `lo..=hi`.
    pub(crate) fn range_u32(&mut self, lo: u32, hi: u32) -> u32 {
        lo + self.below((hi - lo) as usize + 1) as u32
    }
}
