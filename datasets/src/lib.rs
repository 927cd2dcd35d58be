//! Image data sets for the Edgent toolchain.
//!
//! Every reader produces an [`ImageSet`]: `u8` pixels in `[N, C, 32, 32]` row-major order plus
//! labels in `0..10`. Fashion-MNIST's 28×28 images are zero-padded to 32×32 so that every data
//! set fits the same B-AlexNet input. [`Normalization`] and [`Batcher`] turn pixels into the
//! float tensors the model takes; [`shuffled_indices`] gives a reproducible order per epoch.

pub mod batcher;
pub mod cifar10;
pub mod error;
pub mod fashion_mnist;
pub mod image_set;
pub mod synthetic;

pub use batcher::{Augmentation, Batch, Batcher, shuffled_indices};
pub use error::DatasetError;
pub use image_set::{DatasetKind, ImageSet, Normalization, Split, load};
