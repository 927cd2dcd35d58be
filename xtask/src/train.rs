//! `cargo xtask train`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use datasets::{Augmentation, DatasetKind};
use runtime::Backend;
use trainer::TrainConfig;

/// Flags of `cargo xtask train`; defaults are the reference Fashion-MNIST run.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Data set: fashion-mnist, cifar10 or synthetic.
    #[arg(long, default_value = "fashion-mnist")]
    pub(crate) dataset: DatasetKind,
    /// Directory holding the data set's files (Fashion-MNIST defaults to Debian's).
    #[arg(long)]
    pub(crate) data_dir: Option<PathBuf>,
    /// Passes over the training set.
    #[arg(long, default_value_t = TrainConfig::default().epochs, value_parser = positive)]
    pub(crate) epochs: usize,
    /// Images per mini-batch.
    #[arg(long, default_value_t = TrainConfig::default().batch_size, value_parser = positive)]
    pub(crate) batch_size: usize,
    /// Peak learning rate of Adam (cosine decay over the run).
    #[arg(long, default_value_t = TrainConfig::default().lr)]
    pub(crate) lr: f64,
    /// Seed of initialisation, dropout and shuffling.
    #[arg(long, default_value_t = TrainConfig::default().seed)]
    pub(crate) seed: u64,
    /// Train on the first N training images only.
    #[arg(long, value_parser = positive)]
    pub(crate) limit: Option<usize>,
    /// Evaluate on the first N test images only.
    #[arg(long, value_parser = positive)]
    pub(crate) test_limit: Option<usize>,
    /// Weight of each exit's loss, exit 1 first, comma-separated [default: 0.5,0.5,0.5,0.5,1].
    #[arg(long, value_parser = exit_weights)]
    pub(crate) exit_weights: Option<[f32; 5]>,
    /// Train on the images as they are: no random shifts or flips.
    #[arg(long)]
    pub(crate) no_augment: bool,
    /// Burn backend: flex, ndarray or wgpu (a GPU, or Mesa's CPU Vulkan driver).
    #[arg(long, default_value = "flex")]
    pub(crate) backend: Backend,
    /// Output directory for weights, config and metrics.
    #[arg(long, default_value = "runs/train")]
    pub(crate) out: PathBuf,
    /// No progress bars.
    #[arg(long)]
    pub(crate) quiet: bool,
}

/// Parses a whole number of at least 1.
pub fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("`{s}` is not a whole number of at least 1")),
    }
}

/// Parses five comma-separated loss weights, exit 1 first.
fn exit_weights(s: &str) -> Result<[f32; 5], String> {
    let weights: Vec<f32> = s
        .split(',')
        .map(|w| w.trim().parse::<f32>())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("`{s}`: {e}; give five numbers such as 0.5,0.5,0.5,0.5,1"))?;
    match <[f32; 5]>::try_from(weights) {
        Ok(w) if w.iter().all(|w| w.is_finite() && *w >= 0.0) => Ok(w),
        Ok(_) => Err(format!("`{s}`: weights must be finite and at least 0")),
        Err(w) => Err(format!(
            "`{s}` has {} weights; give one per exit, five",
            w.len()
        )),
    }
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let config = TrainConfig {
        dataset: args.dataset,
        data_dir: args.data_dir,
        epochs: args.epochs,
        batch_size: args.batch_size,
        lr: args.lr,
        seed: args.seed,
        limit: args.limit,
        test_limit: args.test_limit,
        exit_weights: args
            .exit_weights
            .unwrap_or(TrainConfig::default().exit_weights),
        augmentation: if args.no_augment {
            Augmentation::NONE
        } else {
            Augmentation::LIGHT
        },
        backend: args.backend,
        out: args.out,
        progress: !args.quiet,
        ..TrainConfig::default()
    };
    let metrics = trainer::train(&config).context("training failed")?;
    println!("{:<6} {:>9}", "exit", "accuracy");
    for exit in &metrics.exits {
        println!("{:<6} {:>8.2}%", exit.exit, 100.0 * exit.accuracy);
    }
    println!("entropy mode (threshold: accuracy, fraction leaving at exits 1..5):");
    for point in &metrics.entropy {
        let fractions: Vec<String> = point
            .exit_fraction
            .iter()
            .map(|f| format!("{:.2}", f))
            .collect();
        println!(
            "  {:>5.2}: {:>6.2}%  [{}]",
            point.threshold,
            100.0 * point.accuracy,
            fractions.join(" ")
        );
    }
    println!(
        "{} epochs on {} images in {:.0} s ({:.0} images/s, {}); weights digest {}",
        metrics.epochs,
        metrics.train_images,
        metrics.train_seconds,
        metrics.images_per_second,
        metrics.backend,
        metrics.digest
    );
    let png = config.out.join("accuracy.png");
    let accuracies: Vec<f64> = metrics.exits.iter().map(|e| e.accuracy).collect();
    match crate::plot::exit_accuracy(&metrics.dataset, &accuracies, &png) {
        Ok(()) => println!("plot → {}", png.display()),
        Err(e) => eprintln!("warning: no plot: {e}"),
    }
    println!("outputs in {}", config.out.display());
    Ok(())
}
