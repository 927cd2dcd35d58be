//! How the edge's time grows with batch size (DESIGN.md §11).
//!
//! A batching edge runs the requests waiting for one (exit, partition) together, so a
//! request waits for its whole batch. [`measure`] times every suffix `[p, N)` of every exit
//! on the edge's engine at several batch sizes; per suffix, the least-squares line through
//! (batch, ms) gives the time each further request adds. The plan keeps that slope as a
//! fraction of the batch-1 time ([`BatchProfile::per_image_ratio`]), applied to its own
//! (calibrated) batch-1 prediction: `edge_ms(b) = edge_ms + (b − 1)·edge_ms_per_image`.

use serde::{Deserialize, Serialize};

use runtime::slowdown::median;

use crate::profile::{ProfileSettings, Role, slices_with_inputs};

/// One suffix's measured times.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SuffixTimes {
    /// Exit, 1 to 5.
    pub exit: usize,
    /// Partition point: the suffix is `[partition, N)`.
    pub partition: usize,
    /// Median ms of the whole batch, one per [`BatchProfile::batches`] entry.
    pub ms: Vec<f64>,
}

/// Edge times of every suffix at every batch size: `cargo xtask profile-batches`'s output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchProfile {
    /// Engine measured (`generated` or `burn`).
    pub engine: String,
    /// Backend measured (`kernels` for the generated engine).
    pub backend: String,
    /// CPU threads the suffixes ran on (0: one per core).
    pub threads: usize,
    /// Input channels of the model measured (1: Fashion-MNIST, 3: CIFAR-10).
    pub channels: usize,
    /// Batch sizes, ascending, 1 first.
    pub batches: Vec<usize>,
    /// Every suffix of every exit.
    pub suffixes: Vec<SuffixTimes>,
}

/// The least-squares line `ms = a + slope·b` through `(batches, ms)`: `(a, slope)`.
pub fn line(batches: &[usize], ms: &[f64]) -> (f64, f64) {
    let points: Vec<(f64, f64)> = batches
        .iter()
        .map(|&b| b as f64)
        .zip(ms.iter().copied())
        .collect();
    let n = points.len().max(1) as f64;
    let mean_b = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_t = points.iter().map(|p| p.1).sum::<f64>() / n;
    let (mut cov, mut var) = (0.0, 0.0);
    for &(b, t) in &points {
        cov += (b - mean_b) * (t - mean_t);
        var += (b - mean_b).powi(2);
    }
    let slope = if var > 0.0 { cov / var } else { 0.0 };
    (mean_t - slope * mean_b, slope)
}

impl SuffixTimes {
    /// ms each further request adds (the line's slope, at least 0).
    pub fn per_image_ms(&self, batches: &[usize]) -> f64 {
        line(batches, &self.ms).1.max(0.0)
    }

    /// The worst relative error of `edge_ms(b) = ms(1) + (b − 1)·per_image_ms` against the
    /// measured times: how well the plan's model fits this suffix.
    pub fn worst_error(&self, batches: &[usize]) -> f64 {
        let slope = self.per_image_ms(batches);
        batches
            .iter()
            .zip(&self.ms)
            .map(|(&b, &t)| {
                let predicted = self.ms[0] + (b as f64 - 1.0) * slope;
                (predicted - t).abs() / t.max(1e-9)
            })
            .fold(0.0, f64::max)
    }
}

impl BatchProfile {
    /// The time each further request adds to a batch of exit `exit`'s suffix `[p, N)`, as a
    /// fraction of that suffix's batch-1 time; `None` when it was not measured.
    pub fn per_image_ratio(&self, exit: usize, p: usize) -> Option<f64> {
        let s = self
            .suffixes
            .iter()
            .find(|s| s.exit == exit && s.partition == p)?;
        let single = *s.ms.first()?;
        (single > 0.0).then(|| s.per_image_ms(&self.batches) / single)
    }

    /// Checks that the profile is usable: batches ascending from 1, one time per batch,
    /// every time positive and finite.
    pub fn check(&self) -> Result<(), String> {
        if self.batches.first() != Some(&1) || self.batches.windows(2).any(|w| w[0] >= w[1]) {
            return Err(format!(
                "batches must rise from 1, got {:?}: measure again with `cargo xtask profile-batches`",
                self.batches
            ));
        }
        for s in &self.suffixes {
            if s.ms.len() != self.batches.len() || s.ms.iter().any(|t| !(t.is_finite() && *t > 0.0))
            {
                return Err(format!(
                    "exit {} partition {}: {} times for {} batches, or a time that is not a positive number",
                    s.exit,
                    s.partition,
                    s.ms.len(),
                    self.batches.len()
                ));
            }
        }
        Ok(())
    }
}

/// Measures every edge suffix of a `channels`-channel B-AlexNet (seeded weights: time does
/// not depend on them) at each of `batches` on `settings`' engine, backend and threads, in
/// `rounds` rounds whose medians are kept; `progress` is called after each suffix of each
/// round.
pub fn measure(
    settings: &ProfileSettings,
    channels: usize,
    batches: &[usize],
    rounds: usize,
    mut progress: impl FnMut(&SuffixTimes) + Send,
) -> Result<BatchProfile, String> {
    let mut batches: Vec<usize> = batches.iter().copied().filter(|&b| b > 0).collect();
    batches.sort_unstable();
    batches.dedup();
    if batches.first() != Some(&1) {
        batches.insert(0, 1);
    }
    let pool = runtime::model::backend::thread_pool(settings.threads)?;
    let settings = ProfileSettings {
        role: Role::Edge,
        ..settings.clone()
    };
    pool.install(|| {
        let (engine, _, slices) = slices_with_inputs(&settings, channels)?;
        let mut suffixes = Vec::new();
        for (exit, range, input) in slices {
            let inputs: Vec<_> = batches.iter().map(|&b| input.repeated(b)).collect();
            suffixes.push((exit, range, inputs, vec![Vec::new(); batches.len()]));
        }
        let repeats = settings.repeats.share(rounds.max(1));
        let mut out = Vec::new();
        for round in 0..rounds.max(1) {
            out.clear();
            for (exit, range, inputs, times) in &mut suffixes {
                for (x, times) in inputs.iter().zip(times.iter_mut()) {
                    times.push(repeats.median_ms(|| {
                        let x = x.clone();
                        let start = std::time::Instant::now();
                        let _ =
                            std::hint::black_box(engine.forward_slice(*exit, range.clone(), &x));
                        start.elapsed()
                    }));
                }
                let measured = SuffixTimes {
                    exit: *exit,
                    partition: range.start,
                    ms: times.iter().map(|t| median(&mut t.clone())).collect(),
                };
                if round + 1 == rounds.max(1) {
                    out.push(measured.clone());
                }
                progress(&measured);
            }
        }
        Ok(BatchProfile {
            engine: settings.engine.name().into(),
            backend: settings.backend_name().into(),
            threads: settings.threads,
            channels,
            batches,
            suffixes: out,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_recovers_fixed_and_per_image_time() {
        let batches = [1, 2, 4, 8, 16];
        let ms: Vec<f64> = batches.iter().map(|&b| 0.3 + 0.05 * b as f64).collect();
        let (a, slope) = line(&batches, &ms);
        assert!((a - 0.3).abs() < 1e-12 && (slope - 0.05).abs() < 1e-12);
        let s = SuffixTimes {
            exit: 1,
            partition: 0,
            ms,
        };
        assert!(s.worst_error(&batches) < 1e-9);
        let profile = BatchProfile {
            engine: "generated".into(),
            backend: "kernels".into(),
            threads: 1,
            channels: 1,
            batches: batches.to_vec(),
            suffixes: vec![s],
        };
        profile.check().unwrap();
        let ratio = profile.per_image_ratio(1, 0).unwrap();
        assert!((ratio - 0.05 / 0.35).abs() < 1e-12);
        assert_eq!(profile.per_image_ratio(1, 1), None);
    }

    #[test]
    fn a_malformed_profile_says_what_is_wrong() {
        let mut profile = BatchProfile {
            engine: "generated".into(),
            backend: "kernels".into(),
            threads: 1,
            channels: 1,
            batches: vec![2, 4],
            suffixes: Vec::new(),
        };
        assert!(profile.check().unwrap_err().contains("rise from 1"));
        profile.batches = vec![1, 4];
        profile.suffixes.push(SuffixTimes {
            exit: 3,
            partition: 2,
            ms: vec![1.0],
        });
        assert!(profile.check().unwrap_err().contains("exit 3 partition 2"));
    }
}
