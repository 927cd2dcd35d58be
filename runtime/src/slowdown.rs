//! The emulated slow device (DESIGN.md §8) and the timing it rests on: a slice of an exit's
//! chain run layer by layer, each layer stretched by (K − 1) × its warm time on this machine.
//! The deployed device runs this way with `--slowdown K`, and the offline profiler times
//! the device role the same way, so the latency models describe the device the planner plans for.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::engine::{Activation, Engine};
use crate::model::ModelError;
use crate::model::layers::{ExitSpec, LayerSpec};

/// How many times slower than this machine the emulated device is (DESIGN.md §8; the
/// per-layer wait is [`Slowdown::stretch`], driven by [`LayerClock`]).
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
    /// Exactly `runs` timed runs after a tenth as many (at least 3) untimed ones: a
    /// benchmark's fixed count, whatever the time it takes.
    pub fn exactly(runs: usize) -> Self {
        Self {
            warmup: (runs / 10).max(3),
            min: runs,
            max: runs,
            budget: Duration::ZERO,
        }
    }

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

/// A deterministic input for `layer`, batch 1: values spread over [−1, 1), for timing.
pub fn probe_input(layer: &LayerSpec) -> Activation {
    let len = layer.input_len();
    let values: Vec<f32> = (0..len)
        .map(|i| ((i * 7919 % 2003) as f32 / 1001.5) - 1.0)
        .collect();
    let mut dims = vec![1];
    dims.extend(&layer.input);
    Activation::from_values(values, &dims).expect("shape from the spec")
}

/// Times layers `[start, end)` of `exit` on `engine` on this machine as the edge runs them
/// ([`Engine::forward_slice`]: input upload and result read-back included). Returns the
/// output and the total time.
pub fn run_slice(
    engine: &dyn Engine,
    exit: usize,
    range: Range<usize>,
    x: &Activation,
) -> Result<(Activation, Duration), ModelError> {
    run_slice_clocked(engine, exit, range, x, Emulation::default())
}

/// How a timed slice run emulates the slow device.
#[derive(Debug, Default, Clone, Copy)]
pub struct Emulation<'a> {
    /// The emulated device's clock; `None` runs at this machine's speed.
    pub clock: Option<&'a LayerClock>,
    /// When set, the run stops at the next layer (or inside the emulated wait) with
    /// [`ModelError::Cancelled`].
    pub cancel: Option<&'a AtomicBool>,
}

/// [`run_slice`] on the emulated device: each layer stretched by the clock, and a flag
/// that cancels the run.
pub fn run_slice_clocked(
    engine: &dyn Engine,
    exit: usize,
    range: Range<usize>,
    x: &Activation,
    emulation: Emulation<'_>,
) -> Result<(Activation, Duration), ModelError> {
    let Emulation { clock, cancel } = emulation;
    let cancelled = || cancel.is_some_and(|c| c.load(Ordering::Relaxed));
    if cancelled() {
        return Err(ModelError::Cancelled);
    }
    if clock.is_none() && cancel.is_none() {
        // Nothing to do between layers: the engine runs the slice its fastest way.
        let started = Instant::now();
        let y = engine.forward_slice(exit, range, x)?;
        return Ok((y, started.elapsed()));
    }
    let mut total = Duration::ZERO;
    let mut last = Instant::now();
    let y = engine.run(exit, range, x, &mut |index| {
        let took = last.elapsed();
        total += match clock {
            Some(clock) => clock.stretch(exit, index, took, cancel),
            None => took,
        };
        if cancelled() {
            return Err(ModelError::Cancelled);
        }
        last = Instant::now();
        Ok(())
    })?;
    Ok((y, total))
}

/// Each layer's time in one run of `range` of `exit` on `engine`, as the run reports them
/// (a ReLU fused into the layer before it takes no time of its own), in ms.
pub fn layer_times(
    engine: &dyn Engine,
    exit: usize,
    range: Range<usize>,
    x: &Activation,
) -> Result<Vec<f64>, ModelError> {
    let mut times = Vec::with_capacity(range.len());
    let mut last = Instant::now();
    engine.run(exit, range, x, &mut |_| {
        times.push(last.elapsed().as_secs_f64() * 1e3);
        last = Instant::now();
        Ok(())
    })?;
    Ok(times)
}

/// The emulated slow device (DESIGN.md §8): layer `index` of exit `exit` takes the time it
/// takes on this machine plus (K − 1) × its **warm** time here — measured once, back to
/// back, when the clock is made. Stretching by the warm time rather than by each run's own
/// time keeps this machine's jitter and its wake-up cost after an idle gap (several times
/// a small layer's warm time on a VM) from being multiplied by K; the profiler times the
/// device role the same way (K × the warm time), so the latency models describe this device.
#[derive(Debug, Clone)]
pub struct LayerClock {
    slowdown: Slowdown,
    warm: HashMap<(usize, usize), Duration>,
}

impl LayerClock {
    /// Rounds over all layers when measuring the warm times.
    pub const ROUNDS: usize = 7;

    /// The clock of a device `slowdown` times slower than this machine: times every layer
    /// of every exit chain on `engine` warm (nothing to time without a slowdown).
    pub fn measure(engine: &dyn Engine, slowdown: Slowdown) -> Result<Self, ModelError> {
        let mut warm = HashMap::new();
        if slowdown == Slowdown::NONE {
            return Ok(Self { slowdown, warm });
        }
        // Every exit's whole chain, run as the device runs it, in rounds; each layer's time
        // in a round is the median of the round's runs, and its warm time the fastest
        // round's. On this kind of machine a run is sometimes slowed by a busy or sleeping
        // core: the fastest round is the steady one, and the one the profiler's long
        // back-to-back series mostly sees. The trunk's layers are the same whichever exit
        // runs them: a trunk layer's warm time is the fastest over the exits.
        let table = engine.table().clone();
        let runs = 9;
        let mut by_key: HashMap<(usize, usize), f64> = HashMap::new();
        for _ in 0..Self::ROUNDS {
            for spec in &table.exits {
                let input = probe_input(&spec.layers[0]);
                for _ in 0..3 {
                    layer_times(engine, spec.exit, 0..spec.len(), &input)?;
                }
                let mut samples = vec![Vec::with_capacity(runs); spec.len()];
                for _ in 0..runs {
                    let times = layer_times(engine, spec.exit, 0..spec.len(), &input)?;
                    for (s, t) in samples.iter_mut().zip(times) {
                        s.push(t);
                    }
                }
                for (index, mut s) in samples.into_iter().enumerate() {
                    let m = median(&mut s);
                    let best = by_key
                        .entry(Self::key(spec, index))
                        .or_insert(f64::INFINITY);
                    *best = best.min(m);
                }
            }
        }
        for spec in &table.exits {
            for index in 0..spec.len() {
                let ms = by_key[&Self::key(spec, index)];
                warm.insert((spec.exit, index), Duration::from_secs_f64(ms / 1e3));
            }
        }
        Ok(Self { slowdown, warm })
    }

    /// Layer `index` of an exit chain, as it is timed: the trunk's layers under exit 0.
    fn key(spec: &ExitSpec, index: usize) -> (usize, usize) {
        if index < spec.trunk_layers {
            (0, index)
        } else {
            (spec.exit, index)
        }
    }

    /// The warm time on this machine of layer `index` of exit `exit`'s chain, if timed.
    pub fn warm(&self, exit: usize, index: usize) -> Option<Duration> {
        self.warm.get(&(exit, index)).copied()
    }

    /// Waits (K − 1) × the warm time of layer `index` of `exit` (or of `took`, for a layer
    /// the clock has not timed), or until `cancel` is set; returns the emulated duration.
    pub fn stretch(
        &self,
        exit: usize,
        index: usize,
        took: Duration,
        cancel: Option<&AtomicBool>,
    ) -> Duration {
        let warm = self.warm(exit, index).unwrap_or(took);
        self.slowdown.stretch(took, warm, cancel)
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

    /// The generated engine's kernels on a one-channel (Fashion-MNIST) model with fresh
    /// weights.
    fn fashion_engine() -> crate::PackedNetwork {
        let device = crate::Backend::Flex.device();
        let model = crate::BranchyAlexNetConfig::new()
            .with_channels(1)
            .init(&device);
        crate::PackedNetwork::new(model.layer_table(), &model.weights(), crate::Isa::Portable)
            .expect("fresh weights fit")
    }

    #[test]
    fn a_cancelled_run_stops_inside_the_emulated_wait() {
        let engine = fashion_engine();
        let layers = engine.table().exit(5).expect("exit 5").layers.clone();
        // 10,000× slower: the first convolution alone would wait for a second or more.
        let clock = LayerClock::measure(&engine, Slowdown::new(10_000.0).unwrap()).expect("clock");
        let cancel = std::sync::Arc::new(AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&cancel);
        let setter = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            flag.store(true, Ordering::Relaxed);
        });
        let emulation = Emulation {
            clock: Some(&clock),
            cancel: Some(&cancel),
        };
        let out = run_slice_clocked(
            &engine,
            5,
            0..layers.len(),
            &probe_input(&layers[0]),
            emulation,
        );
        setter.join().unwrap();
        assert!(matches!(out, Err(ModelError::Cancelled)));
    }

    #[test]
    fn the_clock_stretches_every_layer_by_its_warm_time() {
        let engine = fashion_engine();
        let k = 20.0;
        let clock = LayerClock::measure(&engine, Slowdown::new(k).unwrap()).unwrap();
        let table = engine.table().clone();
        for spec in &table.exits {
            for index in 0..spec.len() {
                assert!(
                    clock.warm(spec.exit, index).is_some(),
                    "exit {} layer {index}",
                    spec.exit
                );
            }
            // The first convolution takes time; the trunk is timed once, whichever exit
            // runs it.
            assert!(clock.warm(spec.exit, 0).unwrap() > Duration::ZERO);
            assert_eq!(clock.warm(spec.exit, 0), clock.warm(5, 0));
        }
        let layers = &table.exit(1).unwrap().layers;
        let emulation = Emulation {
            clock: Some(&clock),
            cancel: None,
        };
        let input = probe_input(&layers[0]);
        let (_, took) = run_slice_clocked(&engine, 1, 0..layers.len(), &input, emulation).unwrap();
        let ms = took.as_secs_f64() * 1e3;
        let warm: Duration = (0..layers.len()).map(|i| clock.warm(1, i).unwrap()).sum();
        let warm_chain = k * warm.as_secs_f64() * 1e3;
        // took + (K − 1) × warm per layer: at least (K − 1) / K of K × the warm chain.
        assert!(
            ms >= warm_chain * (k - 1.0) / k,
            "{ms} ms vs {warm_chain} ms"
        );
        assert!(
            LayerClock::measure(&engine, Slowdown::NONE)
                .unwrap()
                .warm(1, 0)
                .is_none()
        );
    }
}
