//! Turning images into model-ready tensors, and a reproducible epoch order.

use burn::prelude::*;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::image_set::{IMAGE_SIZE, ImageSet, Normalization};

/// One mini-batch: normalised images `[N, C, 32, 32]` and their labels `[N]`.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Normalised images.
    pub images: Tensor<4>,
    /// Class of each image.
    pub targets: Tensor<1, Int>,
}

/// Builds [`Batch`]es from an [`ImageSet`] on a device.
#[derive(Debug, Clone)]
pub struct Batcher {
    normalization: Normalization,
    device: Device,
}

impl Batcher {
    /// A batcher normalising with `normalization` and placing tensors on `device`.
    pub fn new(normalization: Normalization, device: Device) -> Self {
        Self {
            normalization,
            device,
        }
    }

    /// Normalised images `[N, C, 32, 32]` for the given `u8` images (`[C, 32, 32]` each).
    pub fn images<'a>(&self, images: impl ExactSizeIterator<Item = &'a [u8]>) -> Tensor<4> {
        let n = images.len();
        let mut values = Vec::new();
        let mut channels = self.normalization.mean.len();
        for image in images {
            channels = image.len() / (IMAGE_SIZE * IMAGE_SIZE);
            self.normalization.apply(image, &mut values);
        }
        Tensor::from_data(
            TensorData::new(values, [n, channels, IMAGE_SIZE, IMAGE_SIZE]),
            &self.device,
        )
    }

    /// The batch made of the images at `indices` of `set`.
    pub fn batch(&self, set: &ImageSet, indices: &[usize]) -> Batch {
        let images = self.images(indices.iter().map(|&i| set.image(i)));
        let labels: Vec<i64> = indices.iter().map(|&i| i64::from(set.labels[i])).collect();
        let targets = Tensor::from_data(TensorData::new(labels, [indices.len()]), &self.device);
        Batch { images, targets }
    }
}

/// The order of `len` samples for `epoch` of a run seeded with `seed`: the same arguments
/// always give the same permutation.
pub fn shuffled_indices(len: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut indices: Vec<usize> = (0..len).collect();
    let mut rng =
        ChaCha8Rng::seed_from_u64(seed ^ (epoch as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    indices.shuffle(&mut rng);
    indices
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffling_is_a_reproducible_permutation() {
        let a = shuffled_indices(100, 42, 3);
        assert_eq!(a, shuffled_indices(100, 42, 3));
        assert_ne!(a, shuffled_indices(100, 42, 4));
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn batch_is_normalised_with_the_right_shape() {
        let set = crate::synthetic::generate(4, 1);
        let norm = Normalization {
            mean: vec![0.5],
            std: vec![0.5],
        };
        let batch = Batcher::new(norm, Device::flex()).batch(&set, &[2, 0]);
        assert_eq!(batch.images.dims(), [2, 1, 32, 32]);
        let values = batch.images.into_data().try_into_vec_as::<f32>().unwrap();
        let expected = (f32::from(set.image(2)[5]) / 255.0 - 0.5) / 0.5;
        assert!((values[5] - expected).abs() < 1e-6);
        let targets = batch.targets.into_data().try_into_vec_as::<i64>().unwrap();
        assert_eq!(
            targets,
            vec![i64::from(set.labels[2]), i64::from(set.labels[0])]
        );
    }
}
