//! Small statistics for the benchmarks' same-run ratios (pure, no I/O): the median and a
//! percentile bootstrap interval of it, driven by a seeded generator so that a report can be
//! reproduced from its runs.
//!
//! The datapath bench (`e2e/benches/datapath.rs`) pairs each pod↔pod run with the node↔node
//! runs around it and gets one ratio per pair; with ten pairs and a baseline that moves by a
//! third within one run, the median ratio alone cannot say whether a target such as 0.95 is
//! met, so the bench prints [`bootstrap_median`]'s interval next to it.

/// The median of `v` (the mean of the middle two for an even count); NaN when `v` is empty.
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): a tiny generator that is good enough for resampling
/// and gives the same sequence for the same seed on every machine.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform index below `n` (`n` > 0; the modulo bias is below 2⁻⁵⁰ for the small `n`
    /// of a bench).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// The seed the benches use, so that the same runs always give the same interval.
pub const SEED: u64 = 0x00ca_05e0_da7a_9a7d;

/// Percentile bootstrap interval of the median of `samples` at `confidence` (e.g. 0.95):
/// `resamples` times, draw `samples.len()` values with replacement, take their median; the
/// interval is the (1 − confidence)/2 and (1 + confidence)/2 quantiles of those medians
/// (nearest rank). `None` for fewer than two samples, where there is no spread to resample.
pub fn bootstrap_median(
    samples: &[f64],
    resamples: usize,
    confidence: f64,
    seed: u64,
) -> Option<(f64, f64)> {
    if samples.len() < 2 || resamples == 0 {
        return None;
    }
    let mut rng = SplitMix64::new(seed);
    let mut draw = vec![0.0; samples.len()];
    let mut medians: Vec<f64> = (0..resamples)
        .map(|_| {
            for d in &mut draw {
                *d = samples[rng.below(samples.len())];
            }
            median(&draw)
        })
        .collect();
    medians.sort_by(f64::total_cmp);
    let tail = (1.0 - confidence.clamp(0.0, 1.0)) / 2.0;
    let rank = |q: f64| ((q * resamples as f64).ceil() as usize).clamp(1, resamples) - 1;
    Some((medians[rank(tail)], medians[rank(1.0 - tail)]))
}

/// Whether an interval says a ratio meets `target`: `Some(true)` when all of it is at or
/// above, `Some(false)` when all of it is below, `None` when it straddles the target (the
/// runs cannot tell).
pub fn meets(interval: (f64, f64), target: f64) -> Option<bool> {
    match interval {
        (lo, _) if lo >= target => Some(true),
        (_, hi) if hi < target => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts_and_of_nothing() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn splitmix64_gives_the_reference_sequence_for_seed_zero() {
        // The first outputs of SplitMix64 seeded with 0 (as in the reference C code).
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(rng.next_u64(), 0x6e78_9e6a_a1b9_65f4);
    }

    #[test]
    fn bootstrap_interval_holds_the_median_and_stays_within_the_samples() {
        let ratios = [0.91, 0.97, 0.88, 1.02, 0.95, 0.93, 0.99, 0.90, 0.96, 0.94];
        let (lo, hi) = bootstrap_median(&ratios, 2000, 0.95, SEED).expect("ten ratios");
        let m = median(&ratios);
        assert!(lo <= m && m <= hi, "{lo} ≤ {m} ≤ {hi}");
        assert!(lo >= 0.88 && hi <= 1.02, "[{lo}, {hi}] outside the samples");
        assert!(
            hi - lo > 0.0,
            "ten different ratios give an interval of some width"
        );
    }

    #[test]
    fn bootstrap_is_reproducible_from_its_seed() {
        let ratios = [0.8, 0.85, 0.9, 0.95, 1.0, 1.05];
        assert_eq!(
            bootstrap_median(&ratios, 500, 0.95, 7),
            bootstrap_median(&ratios, 500, 0.95, 7)
        );
    }

    #[test]
    fn identical_samples_give_a_point_and_one_sample_gives_no_interval() {
        assert_eq!(
            bootstrap_median(&[0.9; 10], 100, 0.95, SEED),
            Some((0.9, 0.9))
        );
        assert_eq!(bootstrap_median(&[0.9], 100, 0.95, SEED), None);
    }

    #[test]
    fn a_wider_confidence_gives_a_wider_interval() {
        let ratios = [0.83, 0.9, 0.97, 1.03, 0.88, 0.95, 0.92, 0.99, 0.86, 1.0];
        let (lo50, hi50) = bootstrap_median(&ratios, 2000, 0.5, SEED).expect("ten ratios");
        let (lo95, hi95) = bootstrap_median(&ratios, 2000, 0.95, SEED).expect("ten ratios");
        assert!(lo95 <= lo50 && hi50 <= hi95);
    }

    #[test]
    fn meets_says_yes_no_or_cannot_tell() {
        assert_eq!(meets((0.96, 1.01), 0.95), Some(true));
        assert_eq!(meets((0.80, 0.90), 0.95), Some(false));
        assert_eq!(meets((0.90, 0.99), 0.95), None);
    }
}
