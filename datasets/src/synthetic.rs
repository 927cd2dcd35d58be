//! Deterministic synthetic images with learnable class structure, for fast tests.
//!
//! Each class has a prototype: a sum of a few smooth blobs placed by a fixed seed. An image
//! is its class prototype, shifted by up to two pixels, plus noise; a small CNN separates the
//! classes in an epoch or two, yet the task is not trivial for a linear model.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::image_set::{IMAGE_SIZE, ImageSet, NUM_CLASSES};

/// Images in the synthetic training split.
pub const TRAIN_LEN: usize = 6_000;
/// Images in the synthetic test split.
pub const TEST_LEN: usize = 1_000;

const PROTOTYPE_SEED: u64 = 0x00b1_a50f_ed6e;
const BLOBS_PER_CLASS: usize = 3;

fn prototypes() -> Vec<Vec<f32>> {
    let mut rng = ChaCha8Rng::seed_from_u64(PROTOTYPE_SEED);
    (0..NUM_CLASSES)
        .map(|_| {
            let blobs: Vec<(f32, f32, f32)> = (0..BLOBS_PER_CLASS)
                .map(|_| {
                    (
                        rng.random_range(6.0..26.0),
                        rng.random_range(6.0..26.0),
                        rng.random_range(2.0..5.0),
                    )
                })
                .collect();
            (0..IMAGE_SIZE * IMAGE_SIZE)
                .map(|i| {
                    let (y, x) = ((i / IMAGE_SIZE) as f32, (i % IMAGE_SIZE) as f32);
                    blobs
                        .iter()
                        .map(|&(cy, cx, r)| {
                            (-((y - cy).powi(2) + (x - cx).powi(2)) / (2.0 * r * r)).exp()
                        })
                        .sum::<f32>()
                        .min(1.0)
                })
                .collect()
        })
        .collect()
}

/// Generates `count` one-channel 32×32 images; the same `seed` gives the same images.
pub fn generate(count: usize, seed: u64) -> ImageSet {
    let protos = prototypes();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut pixels = Vec::with_capacity(count * IMAGE_SIZE * IMAGE_SIZE);
    let mut labels = Vec::with_capacity(count);
    for _ in 0..count {
        let label = rng.random_range(0..NUM_CLASSES);
        let (dy, dx): (i32, i32) = (rng.random_range(-2..=2), rng.random_range(-2..=2));
        let size = IMAGE_SIZE as i32;
        for y in 0..size {
            for x in 0..size {
                let (sy, sx) = (y - dy, x - dx);
                let base = if (0..size).contains(&sy) && (0..size).contains(&sx) {
                    protos[label][(sy * size + sx) as usize]
                } else {
                    0.0
                };
                let noisy = 0.75 * base + 0.25 * rng.random::<f32>();
                pixels.push((noisy * 255.0).round().clamp(0.0, 255.0) as u8);
            }
        }
        labels.push(label as u8);
    }
    ImageSet {
        channels: 1,
        pixels,
        labels,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_images_other_seed_other_images() {
        assert_eq!(generate(20, 1), generate(20, 1));
        assert_ne!(generate(20, 1).pixels, generate(20, 2).pixels);
    }

    #[test]
    fn all_classes_appear_and_differ() {
        let set = generate(500, 7);
        for class in 0..NUM_CLASSES as u8 {
            assert!(set.labels.contains(&class));
        }
        // Class means differ clearly: the structure is learnable.
        let mean = |c: u8| -> Vec<f32> {
            let idx: Vec<usize> = (0..set.len()).filter(|&i| set.labels[i] == c).collect();
            (0..1024)
                .map(|p| {
                    idx.iter().map(|&i| f32::from(set.image(i)[p])).sum::<f32>() / idx.len() as f32
                })
                .collect()
        };
        let (a, b) = (mean(0), mean(1));
        let dist: f32 = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).sum::<f32>() / 1024.0;
        assert!(dist > 5.0, "class means too close: {dist}");
    }
}
