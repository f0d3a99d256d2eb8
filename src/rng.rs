//! Seeded randomness, reproducible across platforms and versions of this crate's dependencies:
//! [`Rng`] (SplitMix64) on the host for initialisation and shuffling, and [`hash_u32`], the
//! counter-based hash that the dropout shader computes identically on the GPU, so a mask needs no
//! storage and the CPU reference can reproduce it bit for bit.

/// SplitMix64 (Steele, Lea & Flood, 2014): tiny, fast, and its output is fixed forever.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng { state: seed }
    }

    /// An independent stream for a named purpose ("init", "shuffle", ...), so that adding a use
    /// of randomness in one place does not shift every other stream.
    pub fn stream(seed: u64, purpose: &str) -> Self {
        let salt =
            purpose.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        Rng::new(seed ^ salt)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 bits of precision.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [low, high).
    pub fn uniform(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.next_f64()
    }

    /// Uniform integer in 0..n (n > 0), without modulo bias (Lemire's method).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0) has no values to pick from");
        loop {
            let m = u128::from(self.next_u64()) * u128::from(n);
            let low = m as u64;
            if low >= n.wrapping_neg() % n {
                return (m >> 64) as u64;
            }
        }
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// PCG-based integer hash (Jarzynski & Olano, "Hash Functions for GPU Rendering", 2020), the
/// same as `hash_u32` in the WGSL shaders: wrapping u32 arithmetic only.
pub fn hash_u32(v: u32) -> u32 {
    let state = v.wrapping_mul(747_796_405).wrapping_add(2_891_336_453);
    let word = ((state >> ((state >> 28) + 4)) ^ state).wrapping_mul(277_803_737);
    (word >> 22) ^ word
}

/// A uniform number in [0, 1) for element `index` of the mask drawn from `key`, with 24 bits of
/// precision so that it is exact in f32 on both sides.
pub fn uniform_at(key: u32, index: u32) -> f32 {
    (hash_u32(index ^ hash_u32(key)) >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// The key of one dropout mask: different for every seed, training step and layer.
pub fn dropout_key(seed: u32, step: u32, layer: u32) -> u32 {
    hash_u32(seed ^ hash_u32(step ^ hash_u32(layer.wrapping_mul(0x9E37_79B9))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_gives_its_published_first_outputs() {
        // Reference values of SplitMix64 seeded with 1234567 (from the original C code).
        let mut rng = Rng::new(1_234_567);
        assert_eq!(rng.next_u64(), 6_457_827_717_110_365_317);
        assert_eq!(rng.next_u64(), 3_203_168_211_198_807_973);
    }

    #[test]
    fn below_and_shuffle_stay_in_range_and_permute() {
        let mut rng = Rng::new(9);
        let mut seen = [0u32; 7];
        for _ in 0..7000 {
            seen[rng.below(7) as usize] += 1;
        }
        assert!(seen.iter().all(|&c| (800..1200).contains(&c)), "{seen:?}");
        let mut items: Vec<u32> = (0..100).collect();
        rng.shuffle(&mut items);
        assert_ne!(items, (0..100).collect::<Vec<_>>());
        items.sort_unstable();
        assert_eq!(items, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn uniform_at_is_roughly_uniform() {
        let key = dropout_key(1, 2, 3);
        let kept = (0..100_000).filter(|&i| uniform_at(key, i) >= 0.5).count();
        assert!((48_500..51_500).contains(&kept), "{kept}");
    }
}
