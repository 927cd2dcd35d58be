//! `cargo xtask bench`: forward latency at batch 1 for each exit, every CPU backend, printed
//! as milliseconds and as a ratio to the default backend measured in the same run.

use std::time::Instant;

use burn::prelude::*;
use clap::Args;
use runtime::{Backend, BranchyAlexNetConfig, NUM_EXITS};

/// Flags of `cargo xtask bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Timed repetitions per exit and backend (the median is reported).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    repeats: u32,
    /// Input channels (1: Fashion-MNIST, 3: CIFAR-10).
    #[arg(long, default_value_t = 1)]
    channels: usize,
}

/// Median milliseconds of `repeats` runs of `f`, after a warm-up.
pub fn median_ms(repeats: u32, mut f: impl FnMut()) -> f64 {
    for _ in 0..repeats.div_ceil(10).max(3) {
        f();
    }
    let mut times: Vec<f64> = (0..repeats)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let config = BranchyAlexNetConfig::new().with_channels(args.channels);
    let mut table = [[0.0f64; 2]; NUM_EXITS];
    for (b, backend) in Backend::ALL.into_iter().enumerate() {
        let device = backend.device();
        device.seed(0);
        let model = config.init(&device).valid();
        let input = Tensor::<4>::random(
            [1, args.channels, 32, 32],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        );
        for exit in 1..=NUM_EXITS {
            table[exit - 1][b] = median_ms(args.repeats, || {
                let logits = model.forward_exit(exit, input.clone()).expect("valid exit");
                // Read the result back so that lazy backends finish the work.
                let _ = logits.into_data();
            });
        }
    }
    let [base, other] = Backend::ALL;
    println!(
        "forward latency, batch 1, median of {} runs (ms)",
        args.repeats
    );
    println!(
        "{:<6} {:>10} {:>10} {:>16}",
        "exit",
        base.name(),
        other.name(),
        format!("{}/{}", other.name(), base.name())
    );
    for (i, [a, b]) in table.iter().enumerate() {
        println!("{:<6} {:>10.3} {:>10.3} {:>15.2}x", i + 1, a, b, b / a);
    }
    Ok(())
}
