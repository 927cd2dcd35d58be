//! Joint training of all exits: the weighted sum of the five cross-entropy losses, Adam with
//! cosine learning-rate decay, light augmentation (shifts and flips) of the training images.

use std::time::Instant;

use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use datasets::{Batcher, DatasetError, Split, shuffled_indices};
use indicatif::{ProgressBar, ProgressStyle};
use runtime::{BranchyAlexNetConfig, WeightsError};

use crate::config::TrainConfig;
use crate::evaluation::evaluate;
use crate::export::{Metrics, write_outputs};

/// Why a training run failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The data could not be read.
    #[error(transparent)]
    Data(#[from] DatasetError),
    /// A setting is out of range.
    #[error("invalid setting: {0}")]
    Config(String),
    /// The outputs could not be written.
    #[error("cannot write {path}: {source}")]
    Output {
        /// The file or directory.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The weights could not be exported.
    #[error(transparent)]
    Weights(#[from] WeightsError),
}

fn check(config: &TrainConfig) -> Result<(), TrainError> {
    let bad = |what: String| Err(TrainError::Config(what));
    if config.epochs == 0 {
        return bad("--epochs must be at least 1".into());
    }
    if config.batch_size == 0 {
        return bad("--batch-size must be at least 1".into());
    }
    if !(config.lr.is_finite() && config.lr > 0.0) {
        return bad(format!("--lr must be a positive number, got {}", config.lr));
    }
    if config.limit == Some(0) {
        return bad("--limit must be at least 1".into());
    }
    if config
        .exit_weights
        .iter()
        .any(|w| !w.is_finite() || *w < 0.0)
    {
        return bad("exit weights must be finite and non-negative".into());
    }
    Ok(())
}

fn bar(len: u64, visible: bool, template: &str) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}

/// Trains B-AlexNet on `config.dataset`, evaluates every exit on the test set and writes
/// `model.safetensors`, the burn record, `config.json` and `metrics.json` to `config.out`.
///
/// burn's random number generator is process-wide (burn 0.22 gives neither parameter
/// initialisation nor dropout a generator of their own): a run holds it
/// ([`runtime::model::lock_rng`]) from its seed to its last step, and so does every model
/// creation in the process ([`BranchyAlexNetConfig::init`]), so a run sees only its own
/// seed's stream and the same settings give the same weights.
pub fn train(config: &TrainConfig) -> Result<Metrics, TrainError> {
    check(config)?;
    let rng = runtime::model::lock_rng();
    let started = Instant::now();
    let dir = config.data_dir.as_deref();
    let mut train_set = datasets::load(config.dataset, dir, Split::Train)?;
    let mut test_set = datasets::load(config.dataset, dir, Split::Test)?;
    if let Some(limit) = config.limit {
        train_set.truncate(limit);
    }
    if let Some(limit) = config.test_limit {
        test_set.truncate(limit);
    }

    let device = config
        .backend
        .open()
        .map_err(|why| TrainError::Config(format!("backend {}: {why}", config.backend)))?
        .autodiff();
    device.seed(config.seed);
    let model_config = BranchyAlexNetConfig::new().with_channels(train_set.channels);
    // Weights drawn at the first forward pass, between its dropout masks, as always: the
    // same seed gives the same weights as before the lock existed.
    let mut model = model_config.init_lazy(&device, &rng);
    let mut optimizer = AdamConfig::new().init();
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let normalization = config.dataset.normalization();
    let batcher = Batcher::new(normalization.clone(), device.clone());

    let steps_per_epoch = train_set.len().div_ceil(config.batch_size);
    let total_steps = (steps_per_epoch * config.epochs) as f64;
    let mut step = 0usize;
    let train_started = Instant::now();
    for epoch in 0..config.epochs {
        let progress = bar(
            train_set.len() as u64,
            config.progress,
            &format!(
                "epoch {}/{} [{{bar:30}}] {{pos}}/{{len}} {{per_sec}} eta {{eta}} {{msg}}",
                epoch + 1,
                config.epochs
            ),
        );
        let order = shuffled_indices(train_set.len(), config.seed, epoch);
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
        for chunk in order.chunks(config.batch_size) {
            let batch =
                batcher.augmented_batch(&train_set, chunk, config.augmentation, config.seed, epoch);
            let logits = model.forward_all(batch.images);
            let last = logits[logits.len() - 1].clone();
            let loss = logits
                .into_iter()
                .zip(config.exit_weights)
                .map(|(l, w)| loss_fn.forward(l, batch.targets.clone()).mul_scalar(w))
                .reduce(|a, b| a + b)
                .expect("five exits");
            let predicted = last.argmax(1).squeeze_dim::<1>(1);
            correct += predicted
                .equal(batch.targets.clone())
                .int()
                .sum()
                .into_scalar::<i64>() as usize;
            seen += chunk.len();
            loss_sum += f64::from(loss.clone().into_scalar::<f32>());
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            let lr =
                config.lr * 0.5 * (1.0 + (std::f64::consts::PI * step as f64 / total_steps).cos());
            model = optimizer.step(lr, model, grads);
            step += 1;
            progress.inc(chunk.len() as u64);
            progress.set_message(format!(
                "loss {:.3} acc(exit 5) {:.3}",
                loss_sum / (seen as f64 / config.batch_size as f64),
                correct as f64 / seen as f64
            ));
        }
        progress.finish();
    }
    let train_seconds = train_started.elapsed().as_secs_f64();

    let model = model.valid();
    let eval_device = config.backend.device();
    let eval_batcher = Batcher::new(normalization.clone(), eval_device);
    let progress = bar(
        test_set.len() as u64,
        config.progress,
        "evaluate [{bar:30}] {pos}/{len} {per_sec}",
    );
    let evaluation = evaluate(
        &model,
        &test_set,
        &eval_batcher,
        256,
        &config.entropy_thresholds,
        &progress,
    );
    progress.finish_and_clear();

    let metrics = Metrics::new(
        config,
        evaluation,
        model.weights().digest(),
        train_set.len(),
        test_set.len(),
        train_seconds,
        started.elapsed().as_secs_f64(),
    );
    write_outputs(config, &model_config, model, &metrics)?;
    Ok(metrics)
}
