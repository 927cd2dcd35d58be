//! What a training run does.

use std::path::PathBuf;

use datasets::{Augmentation, DatasetKind};
use runtime::Backend;
use serde::{Deserialize, Serialize};

/// Settings of one training run; the same settings and seed give the same weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// The data set.
    pub dataset: DatasetKind,
    /// Directory of the data set's files (default: the data set's own, e.g. Debian's).
    pub data_dir: Option<PathBuf>,
    /// Passes over the training images.
    pub epochs: usize,
    /// Images per mini-batch.
    pub batch_size: usize,
    /// Peak learning rate of Adam (cosine decay to zero over the run).
    pub lr: f64,
    /// Seed of weight initialisation, dropout and shuffling.
    pub seed: u64,
    /// Use only the first N training images.
    pub limit: Option<usize>,
    /// Use only the first N test images.
    pub test_limit: Option<usize>,
    /// Weight of each exit's loss, exit 1 first (BranchyNet's weighted sum).
    pub exit_weights: [f32; 5],
    /// Training-time augmentation (runs from before it existed had none).
    #[serde(default)]
    pub augmentation: Augmentation,
    /// Entropy thresholds to evaluate BranchyNet's early-exit mode at.
    pub entropy_thresholds: Vec<f32>,
    /// The burn backend (autodiff is added for training).
    #[serde(skip, default)]
    pub backend: Backend,
    /// Output directory.
    pub out: PathBuf,
    /// Show progress bars.
    #[serde(skip, default)]
    pub progress: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            dataset: DatasetKind::FashionMnist,
            data_dir: None,
            epochs: 5,
            batch_size: 64,
            lr: 1e-3,
            seed: 42,
            limit: None,
            test_limit: None,
            exit_weights: [0.5, 0.5, 0.5, 0.5, 1.0],
            augmentation: Augmentation::LIGHT,
            entropy_thresholds: vec![0.05, 0.1, 0.2, 0.4, 0.8],
            backend: Backend::default(),
            out: PathBuf::from("runs/train"),
            progress: true,
        }
    }
}
