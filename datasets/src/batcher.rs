//! Turning images into model-ready tensors, and a reproducible epoch order.

use burn::prelude::*;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

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
        self.with_targets(images, set, indices)
    }

    /// The batch made of the images at `indices` of `set`, each augmented as
    /// `augmentation` draws for (`seed`, `epoch`, its index).
    pub fn augmented_batch(
        &self,
        set: &ImageSet,
        indices: &[usize],
        augmentation: Augmentation,
        seed: u64,
        epoch: usize,
    ) -> Batch {
        let augmented: Vec<Vec<u8>> = indices
            .iter()
            .map(|&i| augmentation.apply(set.image(i), set.channels, seed, epoch, i))
            .collect();
        let images = self.images(augmented.iter().map(Vec::as_slice));
        self.with_targets(images, set, indices)
    }

    fn with_targets(&self, images: Tensor<4>, set: &ImageSet, indices: &[usize]) -> Batch {
        let labels: Vec<i64> = indices.iter().map(|&i| i64::from(set.labels[i])).collect();
        let targets = Tensor::from_data(TensorData::new(labels, [indices.len()]), &self.device);
        Batch { images, targets }
    }
}

/// Light training-time augmentation: each image is shifted by up to `max_shift` pixels along
/// each axis (the uncovered border is 0, the padding Fashion-MNIST already has) and, if
/// `flip`, mirrored left–right with probability ½. The draw depends only on (seed, epoch,
/// image index), so a run is exactly as reproducible with it as without.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Augmentation {
    /// Largest shift in pixels along each axis (0: none).
    pub max_shift: usize,
    /// Mirror left–right at random.
    pub flip: bool,
}

impl Augmentation {
    /// No augmentation: images as they are.
    pub const NONE: Self = Self {
        max_shift: 0,
        flip: false,
    };
    /// The reference recipe: shifts of up to 2 pixels (Fashion-MNIST's padding) and flips.
    pub const LIGHT: Self = Self {
        max_shift: 2,
        flip: true,
    };

    /// Whether this changes any image.
    pub fn is_none(self) -> bool {
        self.max_shift == 0 && !self.flip
    }

    /// Image `index` (`channels` planes of 32×32) as drawn for `seed` and `epoch`.
    pub fn apply(
        self,
        image: &[u8],
        channels: usize,
        seed: u64,
        epoch: usize,
        index: usize,
    ) -> Vec<u8> {
        if self.is_none() {
            return image.to_vec();
        }
        let mut rng = ChaCha8Rng::seed_from_u64(
            seed ^ (epoch as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
                ^ (index as u64).wrapping_mul(0xc2b2_ae3d_27d4_eb4f)
                ^ 0x5851_f42d_4c95_7f2d,
        );
        let reach = self.max_shift.min(IMAGE_SIZE - 1) as i64;
        let dy = rng.random_range(-reach..=reach) as isize;
        let dx = rng.random_range(-reach..=reach) as isize;
        let flip = self.flip && rng.random_bool(0.5);
        let side = IMAGE_SIZE as isize;
        let mut out = vec![0u8; image.len()];
        for (plane_in, plane_out) in image
            .chunks_exact(IMAGE_SIZE * IMAGE_SIZE)
            .zip(out.chunks_exact_mut(IMAGE_SIZE * IMAGE_SIZE))
            .take(channels)
        {
            for y in 0..side {
                let sy = y - dy;
                if !(0..side).contains(&sy) {
                    continue;
                }
                for x in 0..side {
                    let mirrored = if flip { side - 1 - x } else { x };
                    let sx = mirrored - dx;
                    if (0..side).contains(&sx) {
                        plane_out[(y * side + x) as usize] = plane_in[(sy * side + sx) as usize];
                    }
                }
            }
        }
        out
    }
}

impl Default for Augmentation {
    fn default() -> Self {
        Self::NONE
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
    fn augmentation_is_reproducible_shifts_and_flips() {
        let set = crate::synthetic::generate(8, 3);
        let light = Augmentation::LIGHT;
        let image = set.image(5);
        assert_eq!(
            light.apply(image, 1, 42, 0, 5),
            light.apply(image, 1, 42, 0, 5)
        );
        assert_eq!(Augmentation::NONE.apply(image, 1, 42, 0, 5), image);
        // A single bright pixel lands within 2 pixels of where it was, or of its mirror.
        let mut dot = vec![0u8; IMAGE_SIZE * IMAGE_SIZE];
        dot[10 * IMAGE_SIZE + 7] = 255;
        let (mut moved, mut flipped) = (false, false);
        for epoch in 0..40 {
            let out = light.apply(&dot, 1, 1, epoch, 0);
            let at = out
                .iter()
                .position(|&p| p == 255)
                .expect("the dot stays inside");
            assert_eq!(out.iter().filter(|&&p| p != 0).count(), 1);
            let (y, x) = ((at / IMAGE_SIZE) as isize, (at % IMAGE_SIZE) as isize);
            let near = |cx: isize| (y - 10).abs() <= 2 && (x - cx).abs() <= 2;
            assert!(near(7) || near(24), "dot at ({y}, {x})");
            moved |= at != 10 * IMAGE_SIZE + 7;
            flipped |= x >= 22;
        }
        assert!(moved && flipped, "40 draws should both shift and flip");
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
