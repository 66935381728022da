//! The retry schedule: exponential backoff with jitter, never sooner than a destination's
//! `Retry-After`. Pure: the random draw arrives as a value.

use std::time::Duration;

/// Backoff bounds.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// The wait before the first retry (before jitter).
    pub initial: Duration,
    /// The longest wait between two attempts (before a `Retry-After`).
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { initial: Duration::from_secs(1), max: Duration::from_secs(600) }
    }
}

impl Backoff {
    /// The wait after `failures` failed attempts (1 after the first), with `unit` a draw
    /// uniform in `[0, 1)`: `initial × 2^(failures−1)`, capped at `max`, then scaled into
    /// `[½, 1]` of itself ("equal jitter", so waits never collapse to zero and concurrent
    /// workers drift apart). A destination's `retry_after` is a floor.
    pub fn delay(&self, failures: u32, unit: f64, retry_after: Option<Duration>) -> Duration {
        let exponent = failures.saturating_sub(1).min(30);
        let base = self.initial.saturating_mul(1u32 << exponent).min(self.max);
        let jittered = base.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0));
        retry_after.map_or(jittered, |after| jittered.max(after))
    }
}

/// A uniform draw in `[0, 1)` (splitmix64 over the clock and a counter): enough to spread
/// retries, no dependency needed.
pub(crate) fn unit_draw() -> f64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let mut z = nanos ^ COUNTER.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let b = Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(1) };
        assert_eq!(b.delay(1, 0.999_999, None).as_millis(), 99);
        assert_eq!(b.delay(1, 0.0, None), Duration::from_millis(50));
        assert_eq!(b.delay(2, 0.0, None), Duration::from_millis(100));
        assert_eq!(b.delay(3, 0.0, None), Duration::from_millis(200));
        assert_eq!(b.delay(5, 0.0, None), Duration::from_millis(500), "capped at max before jitter");
        assert_eq!(b.delay(60, 0.0, None), Duration::from_millis(500), "no overflow");
    }

    #[test]
    fn retry_after_is_a_floor() {
        let b = Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(1) };
        assert_eq!(b.delay(1, 0.0, Some(Duration::from_secs(30))), Duration::from_secs(30));
        assert_eq!(b.delay(3, 0.0, Some(Duration::from_millis(10))), Duration::from_millis(200));
    }

    #[test]
    fn draws_are_in_range_and_vary() {
        let draws: Vec<f64> = (0..1000).map(|_| unit_draw()).collect();
        assert!(draws.iter().all(|d| (0.0..1.0).contains(d)));
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        assert!((0.4..0.6).contains(&mean), "{mean}");
    }
}
