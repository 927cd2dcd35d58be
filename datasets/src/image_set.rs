//! The in-memory image set every reader produces, and per-channel normalisation.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{DatasetError, cifar10, fashion_mnist, synthetic};

/// Side length of every image handed to the model (Fashion-MNIST is padded from 28).
pub const IMAGE_SIZE: usize = 32;
/// Number of classes of every supported data set.
pub const NUM_CLASSES: usize = 10;

/// Which data set to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetKind {
    /// Fashion-MNIST IDX files (gzip or plain); the default, shipped by Debian.
    FashionMnist,
    /// CIFAR-10 binary version (`data_batch_{1..5}.bin`, `test_batch.bin`).
    Cifar10,
    /// Deterministic generated images with learnable class structure.
    Synthetic,
}

impl DatasetKind {
    /// Colour channels of this data set's images.
    pub fn channels(self) -> usize {
        match self {
            Self::FashionMnist | Self::Synthetic => 1,
            Self::Cifar10 => 3,
        }
    }

    /// The name used on the command line and in artifacts.
    pub fn name(self) -> &'static str {
        match self {
            Self::FashionMnist => "fashion-mnist",
            Self::Cifar10 => "cifar10",
            Self::Synthetic => "synthetic",
        }
    }

    /// The per-channel mean and standard deviation used to normalise this data set.
    pub fn normalization(self) -> Normalization {
        match self {
            // Measured on the padded 32×32 training set.
            Self::FashionMnist => Normalization {
                mean: vec![0.2190],
                std: vec![0.3318],
            },
            Self::Cifar10 => Normalization {
                mean: vec![0.4914, 0.4822, 0.4465],
                std: vec![0.2470, 0.2435, 0.2616],
            },
            Self::Synthetic => Normalization {
                mean: vec![0.5],
                std: vec![0.25],
            },
        }
    }

    /// Where the data set lives when no directory is given.
    pub fn default_dir(self) -> Option<&'static str> {
        match self {
            Self::FashionMnist => Some(fashion_mnist::DEBIAN_DIR),
            Self::Cifar10 | Self::Synthetic => None,
        }
    }
}

impl std::str::FromStr for DatasetKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fashion-mnist" | "fashion_mnist" | "fmnist" => Ok(Self::FashionMnist),
            "cifar10" | "cifar-10" => Ok(Self::Cifar10),
            "synthetic" => Ok(Self::Synthetic),
            other => Err(format!(
                "unknown data set `{other}`: expected fashion-mnist, cifar10 or synthetic"
            )),
        }
    }
}

/// Training or test part of a data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// The training images.
    Train,
    /// The held-out test images.
    Test,
}

/// Images as `u8` pixels in `[N, C, 32, 32]` row-major order, with one label each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSet {
    /// Colour channels per image.
    pub channels: usize,
    /// Pixels of all images, `len() == labels.len() * channels * 32 * 32`.
    pub pixels: Vec<u8>,
    /// Class of each image, in `0..NUM_CLASSES`.
    pub labels: Vec<u8>,
}

impl ImageSet {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the set holds no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Bytes of one image.
    pub fn image_len(&self) -> usize {
        self.channels * IMAGE_SIZE * IMAGE_SIZE
    }

    /// Pixels of image `index`.
    pub fn image(&self, index: usize) -> &[u8] {
        let n = self.image_len();
        &self.pixels[index * n..(index + 1) * n]
    }

    /// Keeps only the first `limit` images (all of them when `limit` is larger).
    pub fn truncate(&mut self, limit: usize) {
        let limit = limit.min(self.len());
        self.labels.truncate(limit);
        self.pixels.truncate(limit * self.image_len());
    }
}

/// Per-channel normalisation `(x / 255 - mean) / std`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    /// Mean of each channel, on the 0..1 scale.
    pub mean: Vec<f32>,
    /// Standard deviation of each channel, on the 0..1 scale.
    pub std: Vec<f32>,
}

impl Normalization {
    /// Normalises one image of `u8` pixels (`[C, H, W]`) into `out`.
    pub fn apply(&self, pixels: &[u8], out: &mut Vec<f32>) {
        let plane = pixels.len() / self.mean.len().max(1);
        for (i, &p) in pixels.iter().enumerate() {
            let c = (i / plane.max(1)).min(self.mean.len() - 1);
            out.push((f32::from(p) / 255.0 - self.mean[c]) / self.std[c]);
        }
    }
}

/// Reads one split of a data set from `dir` (or the data set's default directory).
///
/// The synthetic set needs no directory; `dir` is ignored for it.
pub fn load(kind: DatasetKind, dir: Option<&Path>, split: Split) -> Result<ImageSet, DatasetError> {
    if kind == DatasetKind::Synthetic {
        let count = match split {
            Split::Train => synthetic::TRAIN_LEN,
            Split::Test => synthetic::TEST_LEN,
        };
        return Ok(synthetic::generate(count, split_seed(split)));
    }
    let dir = match (dir, kind.default_dir()) {
        (Some(dir), _) => dir.to_path_buf(),
        (None, Some(default)) => default.into(),
        (None, None) => {
            return Err(DatasetError::Invalid(format!(
                "the {} data set has no default location: pass --data-dir DIR",
                kind.name()
            )));
        }
    };
    if !dir.is_dir() {
        let hint = match kind {
            DatasetKind::FashionMnist => {
                "install Debian's `dataset-fashion-mnist` package (scripts/setup.sh does) or pass --data-dir"
            }
            _ => "pass --data-dir with the directory holding the data set's files",
        };
        return Err(DatasetError::MissingDirectory {
            dir,
            hint: hint.into(),
        });
    }
    match kind {
        DatasetKind::FashionMnist => fashion_mnist::load(&dir, split),
        DatasetKind::Cifar10 => cifar10::load(&dir, split),
        DatasetKind::Synthetic => unreachable!("handled above"),
    }
}

fn split_seed(split: Split) -> u64 {
    match split {
        Split::Train => 0x5eed_0001,
        Split::Test => 0x5eed_0002,
    }
}

/// Checks that every label is a valid class.
pub(crate) fn check_labels(path: &Path, labels: &[u8]) -> Result<(), DatasetError> {
    match labels.iter().position(|&l| usize::from(l) >= NUM_CLASSES) {
        Some(index) => Err(DatasetError::LabelOutOfRange {
            path: path.to_path_buf(),
            index,
            label: labels[index],
            classes: NUM_CLASSES,
        }),
        None => Ok(()),
    }
}
