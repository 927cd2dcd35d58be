//! Timing layers, and emulating a slower device.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use burn::prelude::Device;

/// How many times slower than this machine the emulated device is (DESIGN.md §8; the
/// per-layer wait is [`Slowdown::stretch`], driven by [`crate::profile::LayerClock`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Slowdown(f64);

impl Default for Slowdown {
    fn default() -> Self {
        Self::NONE
    }
}

impl Slowdown {
    /// No emulation: factor 1.
    pub const NONE: Slowdown = Slowdown(1.0);

    /// A slowdown by `factor`, which must be a finite number ≥ 1.
    pub fn new(factor: f64) -> Result<Self, String> {
        if factor.is_finite() && factor >= 1.0 {
            Ok(Self(factor))
        } else {
            Err(format!("slowdown must be a number ≥ 1, got {factor}"))
        }
    }

    /// The factor.
    pub fn factor(self) -> f64 {
        self.0
    }

    /// Waits (factor − 1) × `typical`, this layer's usual time on this machine; returns the
    /// emulated duration `took + (factor − 1) × typical`, so that this machine's jitter (a
    /// preemption, a cache miss) is not multiplied by the factor. The wait spins, as a busy
    /// slow processor would, and ends early, as does the emulated time, once `cancel` is set.
    pub fn stretch(
        self,
        took: Duration,
        typical: Duration,
        cancel: Option<&AtomicBool>,
    ) -> Duration {
        if self.0 <= 1.0 {
            return took;
        }
        took + spin(typical.mul_f64(self.0 - 1.0), cancel)
    }
}

/// Busy-waits for `extra`, as a busy slow processor would, or until `cancel` is set;
/// returns how long it waited.
fn spin(extra: Duration, cancel: Option<&AtomicBool>) -> Duration {
    let start = Instant::now();
    let until = start + extra;
    while Instant::now() < until {
        if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return start.elapsed();
        }
        std::hint::spin_loop();
    }
    extra
}

impl std::str::FromStr for Slowdown {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let factor: f64 = s
            .trim_end_matches('x')
            .parse()
            .map_err(|_| format!("slowdown `{s}` is not a number (e.g. 4 or 4x)"))?;
        Self::new(factor)
    }
}

/// Runs `work`, waits for the device to finish it, and returns how long that took.
pub fn timed<T>(device: &Device, work: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = work();
    let _ = device.sync();
    (out, start.elapsed())
}

/// Median of `values` (0 for an empty slice).
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        0.5 * (values[mid - 1] + values[mid])
    }
}

/// How many times to repeat a measurement: until `budget` is spent, between `min` and `max`.
#[derive(Debug, Clone, Copy)]
pub struct Repeats {
    /// Untimed runs first.
    pub warmup: usize,
    /// At least this many timed runs.
    pub min: usize,
    /// At most this many timed runs.
    pub max: usize,
    /// Stop after `min` runs once this much time is spent.
    pub budget: Duration,
}

impl Default for Repeats {
    fn default() -> Self {
        Self {
            warmup: 5,
            min: 25,
            max: 201,
            budget: Duration::from_millis(400),
        }
    }
}

impl Repeats {
    /// One of `rounds` rounds' share of these repeats (a measurement spread over rounds).
    pub fn share(&self, rounds: usize) -> Self {
        let rounds = rounds.max(1);
        Self {
            warmup: self.warmup.div_ceil(rounds),
            min: self.min.div_ceil(rounds),
            max: self.max.div_ceil(rounds),
            budget: self.budget / rounds as u32,
        }
    }

    /// Median milliseconds of `run`, which returns the duration of one run.
    pub fn median_ms(self, mut run: impl FnMut() -> Duration) -> f64 {
        for _ in 0..self.warmup {
            run();
        }
        let start = Instant::now();
        let mut samples = Vec::with_capacity(self.max);
        while samples.len() < self.min
            || (samples.len() < self.max && start.elapsed() < self.budget)
        {
            samples.push(run().as_secs_f64() * 1e3);
        }
        median(&mut samples)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_takes_its_share_of_the_repeats() {
        let share = Repeats::default().share(3);
        assert_eq!((share.warmup, share.min, share.max), (2, 9, 67));
        assert_eq!(share.budget, Duration::from_millis(400) / 3);
        assert_eq!(Repeats::default().share(0).min, Repeats::default().min);
    }

    #[test]
    fn slowdown_stretches_time() {
        let s: Slowdown = "3x".parse().unwrap();
        let start = Instant::now();
        let emulated = s.stretch(Duration::from_millis(3), Duration::from_millis(2), None);
        assert_eq!(emulated, Duration::from_millis(7));
        assert!(start.elapsed() >= Duration::from_millis(4));
        let cancel = AtomicBool::new(true);
        assert!(
            s.stretch(Duration::ZERO, Duration::from_secs(5), Some(&cancel))
                < Duration::from_secs(1)
        );
        assert!("0.5".parse::<Slowdown>().is_err());
        assert!(
            "fast"
                .parse::<Slowdown>()
                .unwrap_err()
                .contains("not a number")
        );
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
