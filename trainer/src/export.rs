//! What a training run leaves in its output directory.
//!
//! * `model.safetensors`: the weights (names and layout in `runtime::model::weights`), with the
//!   data set, digest and normalisation in the header metadata;
//! * `model.bpk`: the same weights as a burn record;
//! * `config.json`: the model configuration, the training settings and the normalisation;
//! * `metrics.json`: per-exit accuracy, the entropy mode, the digest and timings.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::Module;
use datasets::Normalization;
use runtime::{BranchyAlexNet, BranchyAlexNetConfig};
use serde::{Deserialize, Serialize};

use crate::config::TrainConfig;
use crate::evaluation::{EntropyPoint, Evaluation, ExitAccuracy};
use crate::training::TrainError;

/// The contents of `metrics.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Data set name.
    pub dataset: String,
    /// Test accuracy of every exit.
    pub exits: Vec<ExitAccuracy>,
    /// BranchyNet's entropy-threshold mode.
    pub entropy: Vec<EntropyPoint>,
    /// SHA-256 digest of the trained weights (see `runtime::model::weights`).
    pub digest: String,
    /// Epochs trained.
    pub epochs: usize,
    /// Seed.
    pub seed: u64,
    /// Training images used.
    pub train_images: usize,
    /// Test images evaluated.
    pub test_images: usize,
    /// Seconds spent in the training loop.
    pub train_seconds: f64,
    /// Training images processed per second.
    pub images_per_second: f64,
    /// Seconds for the whole run, loading and evaluation included.
    pub wall_seconds: f64,
    /// The burn backend used.
    pub backend: String,
}

impl Metrics {
    /// Collects the metrics of a finished run.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        config: &TrainConfig,
        evaluation: Evaluation,
        digest: String,
        train_images: usize,
        test_images: usize,
        train_seconds: f64,
        wall_seconds: f64,
    ) -> Self {
        Self {
            dataset: config.dataset.name().into(),
            exits: evaluation.exits,
            entropy: evaluation.entropy,
            digest,
            epochs: config.epochs,
            seed: config.seed,
            train_images,
            test_images,
            train_seconds,
            images_per_second: (train_images * config.epochs) as f64 / train_seconds.max(1e-9),
            wall_seconds,
            backend: config.backend.name().into(),
        }
    }
}

/// The contents of `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// The model's configuration.
    pub model: BranchyAlexNetConfig,
    /// How inputs were normalised; inference must do the same.
    pub normalization: Normalization,
    /// The training settings.
    pub training: TrainConfig,
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<(), TrainError> {
    let text = serde_json::to_string_pretty(value).expect("plain data serialises");
    std::fs::write(path, text + "\n").map_err(|source| TrainError::Output {
        path: path.display().to_string(),
        source,
    })
}

pub(crate) fn write_outputs(
    config: &TrainConfig,
    model_config: &BranchyAlexNetConfig,
    model: BranchyAlexNet,
    metrics: &Metrics,
) -> Result<(), TrainError> {
    let out = &config.out;
    std::fs::create_dir_all(out).map_err(|source| TrainError::Output {
        path: out.display().to_string(),
        source,
    })?;
    let normalization = config.dataset.normalization();
    let metadata = BTreeMap::from([
        ("dataset".to_string(), metrics.dataset.clone()),
        ("digest".to_string(), metrics.digest.clone()),
        (
            "normalization".to_string(),
            serde_json::to_string(&normalization).expect("plain data serialises"),
        ),
    ]);
    model
        .weights()
        .save(&out.join("model.safetensors"), metadata)?;
    let record_path = out.join("model.bpk");
    model
        .save_file(&record_path)
        .map_err(|e| TrainError::Output {
            path: record_path.display().to_string(),
            source: std::io::Error::other(e.to_string()),
        })?;
    write_json(
        &out.join("config.json"),
        &RunConfig {
            model: model_config.clone(),
            normalization,
            training: config.clone(),
        },
    )?;
    write_json(&out.join("metrics.json"), metrics)
}
